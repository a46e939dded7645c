//! Access tokens: HS256 JWTs with `sub`, `role`, `scopes`, `jti`, `iat`,
//! `exp`, `iss: "kiln"`, `aud: "kiln-api"` and `sid` (the login session, so
//! logout can end them). The algorithm is pinned: a token that names any
//! other (`none` included) is refused before its signature is looked at.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Role, Scope};

pub const ISSUER: &str = "kiln";
pub const AUDIENCE: &str = "kiln-api";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub scopes: Vec<Scope>,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    pub sid: String,
}

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(HS256)")
    }
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The claims of a token this server signed that is still in date.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn claims(exp_from_now: i64) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub: "u1".into(),
            role: Role::Admin,
            scopes: vec![Scope::Admin],
            jti: "j1".into(),
            iat: now,
            exp: now.saturating_add_signed(exp_from_now),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sid: "s1".into(),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_signed_token_verifies_and_forgeries_do_not() {
        let signer = Signer::new(&[7; 32]);
        let good = signer.sign(&claims(3600)).unwrap();
        assert_eq!(signer.verify(&good).unwrap(), claims(3600));

        assert!(Signer::new(&[8; 32]).verify(&good).is_err(), "wrong secret");
        assert!(
            signer.verify(&signer.sign(&claims(-120)).unwrap()).is_err(),
            "expired"
        );
        let mut other = claims(3600);
        other.aud = "someone-else".into();
        assert!(
            signer.verify(&signer.sign(&other).unwrap()).is_err(),
            "audience"
        );
        let mut other = claims(3600);
        other.iss = "evil".into();
        assert!(
            signer.verify(&signer.sign(&other).unwrap()).is_err(),
            "issuer"
        );

        let body = serde_json::to_vec(&claims(3600)).unwrap();
        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(&body));
        assert!(signer.verify(&none).is_err(), "alg none");
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(3600),
            &EncodingKey::from_secret(&[7; 32]),
        )
        .unwrap();
        assert!(signer.verify(&hs512).is_err(), "another algorithm");

        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut escalated = claims(3600);
        escalated.sub = "u2".into();
        parts[1] = b64(&serde_json::to_vec(&escalated).unwrap());
        assert!(signer.verify(&parts.join(".")).is_err(), "tampered payload");
    }
}

//! Authentication (login, tokens, forgeries, the first admin), driven the
//! way a client (or an attacker) would. `access.rs` has what callers may do.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, Kiln, error_body};

pub fn json_of(response: reqwest::blocking::Response, status: u16) -> Value {
    let code = response.status();
    let text = response.text().unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn login_refresh_rotation_reuse_and_logout() {
    let (kiln, _dir) = Kiln::start(&[]);
    // The same answer for a wrong password and for nobody.
    let wrong = error_body(
        kiln.login("admin", "not the password"),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    let nobody = error_body(
        kiln.login("nobody", ADMIN_PASSWORD),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(wrong["error"]["message"], nobody["error"]["message"]);
    error_body(
        kiln.anonymous(Method::GET, "/v1/scripts").send().unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        kiln.anonymous(Method::GET, "/v1/scripts")
            .header("authorization", "Basic YWRtaW46eA==")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(
        kiln.anonymous(Method::GET, "/healthz")
            .send()
            .unwrap()
            .status(),
        200
    );

    let login = json_of(kiln.login("admin", ADMIN_PASSWORD), 200);
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 3600);
    assert_eq!(login["user"]["username"], "admin");
    assert_eq!(login["user"]["role"], "admin");
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    let me = json_of(
        kiln.with_token(access, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(me["username"], "admin");
    assert!(me["last_login_at"].is_string());

    // Rotation: the pair changes and the old refresh token is used up.
    let refresh_once = |token: &str| {
        kiln.anonymous(Method::POST, "/v1/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
            .unwrap()
    };
    let rotated = json_of(refresh_once(refresh), 200);
    let (access2, refresh2) = (
        rotated["access_token"].as_str().unwrap(),
        rotated["refresh_token"].as_str().unwrap(),
    );
    assert_ne!(refresh2, refresh);
    assert_eq!(
        kiln.with_token(access2, Method::GET, "/v1/users/me")
            .send()
            .unwrap()
            .status(),
        200
    );
    // Reuse of the used token revokes the whole family, access tokens too.
    error_body(refresh_once(refresh), 401, "AUTHENTICATION_REQUIRED");
    error_body(refresh_once(refresh2), 401, "AUTHENTICATION_REQUIRED");
    error_body(
        kiln.with_token(access2, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        refresh_once("kilnrt_made_up"),
        401,
        "AUTHENTICATION_REQUIRED",
    );

    // Logout ends the access token and the refresh family at once, and no
    // other session.
    let login = json_of(kiln.login("admin", ADMIN_PASSWORD), 200);
    let access = login["access_token"].as_str().unwrap();
    let out = json_of(
        kiln.with_token(access, Method::POST, "/v1/auth/logout")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(out["status"], "logged out");
    error_body(
        kiln.with_token(access, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        refresh_once(login["refresh_token"].as_str().unwrap()),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(kiln.get("/v1/users/me").send().unwrap().status(), 200);

    let audit = json_of(kiln.get("/v1/audit?size=100").send().unwrap(), 200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "login.failed",
        "login.succeeded",
        "refresh.reused",
        "logout",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn forged_tokens_are_refused() {
    const SECRET: &str = "an e2e secret of at least 32 characters";
    let (kiln, _dir) = Kiln::start(&[("KILN_AUTH_JWT_SECRET", SECRET)]);
    let real = payload(&kiln.token);
    let sign = |claims: &Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let status = |token: &str| {
        kiln.with_token(token, Method::GET, "/v1/users/me")
            .send()
            .unwrap()
            .status()
    };
    // The control: what the server signs, the test can sign too.
    assert_eq!(status(&sign(&real, SECRET)), 200);

    let with = |field: &str, value: Value| {
        let mut claims = real.clone();
        claims[field] = value;
        claims
    };
    let now = real["iat"].as_u64().unwrap();
    let forgeries = [
        (
            "wrong secret",
            sign(&real, "another secret of at least 32 chars!"),
        ),
        (
            "wrong audience",
            sign(&with("aud", json!("someone-else")), SECRET),
        ),
        ("wrong issuer", sign(&with("iss", json!("evil")), SECRET)),
        ("expired", sign(&with("exp", json!(now - 3600)), SECRET)),
        (
            "unknown session",
            sign(&with("sid", json!("no-such-session")), SECRET),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(real.to_string().as_bytes())
            ),
        ),
        (
            "HS512",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
                &real,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        ),
        ("tampered", {
            // The real signature over someone else's claims.
            let mut parts: Vec<String> = kiln.token.split('.').map(String::from).collect();
            let mut escalated = with("role", json!("admin"));
            escalated["sub"] = json!("someone");
            parts[1] = b64(escalated.to_string().as_bytes());
            parts.join(".")
        }),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in forgeries {
        assert_eq!(status(&token), 401, "{what} was accepted");
    }
    error_body(
        kiln.with_token("x.y.z", Method::GET, "/v1/scripts")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
}

#[test]
fn the_first_start_makes_an_admin_with_a_random_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("first.log");
    let data = dir.path().join("data");
    let kiln = Kiln::launch(
        &data,
        &[("KILN_ADMIN_PASSWORD", "")],
        std::fs::File::create(&log_path).unwrap().into(),
    );
    let file = data.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(password.len(), 24);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(kiln.login("admin", &password).status(), 200);
    assert_eq!(kiln.login("admin", ADMIN_PASSWORD).status(), 401);
    drop(kiln);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.matches(&password).count(), 1, "printed once: {log}");

    // A restart does not make another admin or print the password again.
    let log_path = dir.path().join("second.log");
    let kiln = Kiln::launch(
        &data,
        &[("KILN_ADMIN_PASSWORD", "")],
        std::fs::File::create(&log_path).unwrap().into(),
    );
    assert_eq!(kiln.login("admin", &password).status(), 200);
    drop(kiln);
    assert!(
        !std::fs::read_to_string(&log_path)
            .unwrap()
            .contains(&password)
    );
}

#[test]
fn the_openapi_document_shows_the_security_schemes() {
    let (kiln, _dir) = Kiln::start(&[]);
    let document = json_of(
        kiln.anonymous(Method::GET, "/openapi.json").send().unwrap(),
        200,
    );
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    let needs = |path: &str, method: &str| document["paths"][path][method]["security"].clone();
    assert_eq!(
        needs("/v1/scripts", "get"),
        json!([{"bearer": ["read:scripts"]}, {"api_key": ["read:scripts"]}])
    );
    assert_eq!(needs("/v1/users", "post")[0]["bearer"], json!(["admin"]));
    assert_eq!(needs("/v1/users/me", "get")[0]["bearer"], json!([]));
    assert!(needs("/v1/auth/login", "post").is_null());
    // A method a route lacks is 405 with what it has, credential or not.
    for request in [
        kiln.request(Method::PATCH, "/v1/scripts"),
        kiln.anonymous(Method::PATCH, "/v1/scripts"),
    ] {
        let response = request.send().unwrap();
        assert_eq!(response.headers()["allow"], "GET, POST");
        error_body(response, 405, "METHOD_NOT_ALLOWED");
    }
    assert!(needs("/healthz", "get").is_null());
}

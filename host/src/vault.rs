//! Values sealed at rest: scripts' config values (their secrets) and the
//! `env` of a request, stored as XChaCha20-Poly1305 ciphertext under a key
//! kept outside the database: `auth.master_key` (`KILN_MASTER_KEY`), else
//! `<data_dir>/master-key`, made at first start with mode 0600. Each value is
//! bound to where it belongs (its script and key), so a sealed value copied
//! to another slot does not open.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::auth::secrets;
use crate::config::Secret;

/// What a sealed value starts with; a stored value without it is plain
/// text from a store older than sealing, and is read as it is.
const SEALED: &str = "sealed:v1:";
const NONCE_BYTES: usize = 24;
/// The shortest master key accepted (random keys made here are 43).
pub const MIN_MASTER_KEY_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key: {0}")]
    Key(#[from] secrets::SecretError),
    #[error("the master key must be at least {MIN_MASTER_KEY_CHARS} characters")]
    ShortKey,
    #[error(
        "a sealed value does not open with this master key (was the key changed, or the value moved?)"
    )]
    Unopenable,
}

pub struct Vault {
    cipher: XChaCha20Poly1305,
    /// The key of [`Vault::keyed_hash`], derived apart from the cipher's.
    hash_key: [u8; 32],
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault")
    }
}

impl Vault {
    /// The vault of `master_key`, else of the key file in `data_dir`
    /// (made now if there is none).
    pub fn open(master_key: Option<&Secret>, data_dir: &Path) -> Result<Self, VaultError> {
        let text = match master_key {
            Some(key) => key.0.clone(),
            None => {
                let path = data_dir.join("master-key");
                secrets::load_or_create(&path, MIN_MASTER_KEY_CHARS, || secrets::random_base62(43))?
                    .0
            }
        };
        Self::from_text(&text)
    }

    fn from_text(text: &str) -> Result<Self, VaultError> {
        if text.trim().chars().count() < MIN_MASTER_KEY_CHARS {
            return Err(VaultError::ShortKey);
        }
        // Any text of enough length is a key: it is stretched to 32 bytes
        // for this one purpose.
        let key = blake3::derive_key("kiln 2026-12 sealed values", text.trim().as_bytes());
        Ok(Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            hash_key: blake3::derive_key("kiln 2026-12 keyed hashes", text.trim().as_bytes()),
        })
    }

    /// A hash of `value` for the slot `context` that only this master key
    /// makes, hex: for short secrets kept to be recognised, not read back
    /// (recovery codes), so a copy of the database cannot be searched for
    /// them offline.
    pub fn keyed_hash(&self, context: &str, value: &str) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.hash_key);
        hasher.update(context.as_bytes());
        hasher.update(&[0]);
        hasher.update(value.as_bytes());
        hasher.finalize().to_hex().to_string()
    }

    /// `value` sealed for the slot `context` (e.g. `config:<script>:<key>`).
    pub fn seal(&self, context: &str, value: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: value.as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption fails only past the cipher's length limit (256 GiB).
        let sealed = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        )
    }

    /// The value `stored` for the slot `context`: opened if sealed, as it
    /// is if it was stored before sealing.
    pub fn open_value(&self, context: &str, stored: &str) -> Result<String, VaultError> {
        let Some(encoded) = stored.strip_prefix(SEALED) else {
            return Ok(stored.to_owned());
        };
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| VaultError::Unopenable)?;
        if bytes.len() < NONCE_BYTES {
            return Err(VaultError::Unopenable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        let opened = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| VaultError::Unopenable)?;
        String::from_utf8(opened).map_err(|_| VaultError::Unopenable)
    }
}

/// The slot of a script's config value.
pub fn config_slot(script_id: &str, key: &str) -> String {
    format!("config:{script_id}:{key}")
}

/// The slot of a shared secret's value (`api/secrets.rs`).
pub fn shared_slot(name: &str) -> String {
    format!("shared:{name}")
}

/// The slot of a webhook's signing secret.
pub fn webhook_slot(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

/// The slot of an execution's request `env` value.
pub fn env_slot(execution_id: &str, name: &str) -> String {
    format!("env:{execution_id}:{name}")
}

/// Replaces every occurrence of each secret (of 4 characters or more:
/// shorter ones would mask ordinary text) in `text` with `****`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut masked = text.to_owned();
    // Longest first: a secret that contains another is masked whole.
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.chars().count() >= 4).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        if masked.contains(secret.as_str()) {
            masked = masked.replace(secret.as_str(), "****");
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::from_text("a master key of at least thirty-two characters").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_slot_and_with_its_key() {
        let sealed = vault().seal("config:s1:token", "s3cr3t");
        assert!(sealed.starts_with(SEALED) && !sealed.contains("s3cr3t"));
        assert_eq!(
            vault().open_value("config:s1:token", &sealed).unwrap(),
            "s3cr3t"
        );
        assert!(vault().open_value("config:s2:token", &sealed).is_err());
        let other = Vault::from_text("another master key, just as long as the other").unwrap();
        assert!(other.open_value("config:s1:token", &sealed).is_err());
        // Sealing twice gives two ciphertexts (a fresh nonce each time).
        assert_ne!(sealed, vault().seal("config:s1:token", "s3cr3t"));
        // A value stored before sealing reads as it is.
        assert_eq!(
            vault().open_value("config:s1:token", "plain").unwrap(),
            "plain"
        );
        assert!(Vault::from_text("short").is_err());
    }

    #[test]
    fn keyed_hashes_depend_on_the_key_the_slot_and_the_value() {
        let hash = vault().keyed_hash("recovery:u1", "abcde-fghij");
        assert_eq!(hash, vault().keyed_hash("recovery:u1", "abcde-fghij"));
        assert_ne!(hash, vault().keyed_hash("recovery:u2", "abcde-fghij"));
        assert_ne!(hash, vault().keyed_hash("recovery:u1", "abcde-fghik"));
        let other = Vault::from_text("another master key, just as long as the other").unwrap();
        assert_ne!(hash, other.keyed_hash("recovery:u1", "abcde-fghij"));
        assert_ne!(hash, blake3::hash(b"abcde-fghij").to_hex().to_string());
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = Vault::open(None, dir.path()).unwrap().seal("x", "v");
        let reopened = Vault::open(None, dir.path()).unwrap();
        assert_eq!(reopened.open_value("x", &sealed).unwrap(), "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("master-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn masking_hides_every_occurrence_of_long_enough_secrets() {
        let secrets = vec!["hunter22".to_owned(), "ab".to_owned()];
        assert_eq!(
            mask("pw=hunter22, again hunter22; ab stays", &secrets),
            "pw=****, again ****; ab stays"
        );
        let nested = vec!["abcd1234".to_owned(), "abcd1234XYZ".to_owned()];
        assert_eq!(mask("k=abcd1234XYZ", &nested), "k=****");
    }
}

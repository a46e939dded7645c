//! Randomness and one-way hashes for credentials: passwords (Argon2id),
//! API keys and refresh tokens (BLAKE3 of 190+ random bits, so a fast hash
//! is enough), and files that hold a secret (mode 0600).

use std::io::Write as _;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("cannot hash a password: {0}")]
    Hash(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} holds fewer than {min_chars} characters; it is damaged (delete it to make a new one)"
    )]
    Damaged { path: String, min_chars: usize },
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(bytes)
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters drawn uniformly from [0-9A-Za-z].
pub fn random_base62(len: usize) -> Result<String, SecretError> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes::<64>()? {
            // 248 = 4 × 62: dropping larger bytes keeps every digit equally likely.
            if byte < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(byte % 62)]));
            }
        }
    }
    Ok(out)
}

/// How API keys and refresh tokens are looked up: hex BLAKE3 of the text.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches a stored PHC string; an unreadable one never does.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// The contents of a secret file (trimmed), creating it with `make()`
/// (mode 0600) on first use. The file appears whole or not at all (written
/// aside, then linked into place), and a value shorter than `min_chars` is
/// refused rather than used. Two processes racing both end up with the
/// first one's value.
pub fn load_or_create(
    path: &Path,
    min_chars: usize,
    make: impl FnOnce() -> Result<String, SecretError>,
) -> Result<(String, bool), SecretError> {
    let io = |source| SecretError::File {
        path: path.display().to_string(),
        source,
    };
    let checked = |value: String| {
        let value = value.trim().to_owned();
        if value.chars().count() < min_chars {
            return Err(SecretError::Damaged {
                path: path.display().to_string(),
                min_chars,
            });
        }
        Ok(value)
    };
    match std::fs::read_to_string(path) {
        Ok(value) => return Ok((checked(value)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let value = checked(make()?)?;
    let aside = path.with_extension(format!("new-{}", uuid::Uuid::now_v7().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&aside).and_then(|mut file| {
        file.write_all(value.as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&aside);
        return Err(io(e));
    }
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok((value, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let value = std::fs::read_to_string(path).map_err(io)?;
            Ok((checked(value)?, false))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let stored = hash_password("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify_password("correct horse", &stored));
        assert!(!verify_password("correct horsf", &stored));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(stored, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn base62_is_of_the_asked_length_and_alphabet() {
        let text = random_base62(32).unwrap();
        assert_eq!(text.len(), 32);
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(text, random_base62(32).unwrap());
    }

    #[test]
    fn secret_files_are_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let (first, created) = load_or_create(&path, 3, || Ok("abc\n".into())).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&path, 3, || Ok("other".into())).unwrap();
        assert_eq!(
            (first.as_str(), again.as_str(), created),
            ("abc", "abc", false)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // An empty file (a crash of an older build, a bad copy) is refused.
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            load_or_create(&path, 3, || Ok("new".into())),
            Err(SecretError::Damaged { .. })
        ));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left aside"
        );
    }
}

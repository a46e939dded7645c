//! The optional second factor of a password login: time-based one-time
//! codes (RFC 6238 with the parameters every authenticator app takes:
//! HMAC-SHA1, 6 digits, 30-second steps), and one-use recovery codes for a
//! lost device. The arithmetic is the `totp-rs` crate's; what is Kiln's is
//! which steps count, that a code is good once, and how guesses are bounded.

use totp_rs::{Algorithm, Secret, TOTP};

use super::secrets;
use crate::store::auth::TotpRecord;

pub const DIGITS: usize = 6;
pub const STEP_SECS: u64 = 30;
/// Recovery codes made at once; each works one time.
pub const RECOVERY_CODES: usize = 10;
/// Wrong codes in a row, after which the user's logins pause ([`pause_ms`]).
pub const MAX_FAILURES: u32 = 5;
/// The first pause; each one after it, with no right code between, is
/// twice as long, up to [`MAX_LOCKOUT_MS`]. Someone who has the password
/// then gets about 190 guesses a month, each right with a chance of 3 in a
/// million (a code and one step either side count): about 0.06 %.
pub const LOCKOUT_MS: u64 = 5 * 60 * 1000;
pub const MAX_LOCKOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// How long the `lockouts`-th pause in a row lasts (from 1).
pub fn pause_ms(lockouts: u32) -> u64 {
    let doubled = LOCKOUT_MS.saturating_mul(1 << lockouts.saturating_sub(1).min(16));
    doubled.min(MAX_LOCKOUT_MS)
}

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("no randomness: {0}")]
    Random(#[from] secrets::SecretError),
    #[error("a one-time code secret is unusable: {0}")]
    Secret(String),
}

/// A new shared secret, as the base32 text authenticator apps take.
///
/// # Errors
///
/// The system's random source failed.
pub fn new_secret() -> Result<String, TotpError> {
    // 160 bits, the size of SHA-1's output, as RFC 4226 recommends.
    let raw = secrets::random_bytes::<20>()?;
    match Secret::Raw(raw.to_vec()).to_encoded() {
        Secret::Encoded(text) => Ok(text),
        Secret::Raw(_) => Err(TotpError::Secret("it did not encode".into())),
    }
}

/// The `otpauth://` URI an authenticator app reads (from a QR code or
/// pasted): Kiln as the issuer, the username as the account.
pub fn uri(secret: &str, username: &str) -> String {
    // Usernames are `[A-Za-z0-9_.-]` and base32 is `[A-Z2-7]`: nothing to
    // escape.
    format!(
        "otpauth://totp/Kiln:{username}?secret={secret}&issuer=Kiln&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}"
    )
}

fn generator(secret: &str) -> Result<TOTP, TotpError> {
    let bytes = Secret::Encoded(secret.to_owned())
        .to_bytes()
        .map_err(|e| TotpError::Secret(format!("{e:?}")))?;
    TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP_SECS, bytes)
        .map_err(|e| TotpError::Secret(format!("{e:?}")))
}

/// The code of `time` (Unix seconds), as an app shows it: what tests type.
///
/// # Errors
///
/// The secret does not decode.
#[cfg(test)]
pub fn code_at(secret: &str, time: u64) -> Result<String, TotpError> {
    Ok(generator(secret)?.generate(time))
}

/// The time step `code` is right for, among the current step and one on
/// either side (a phone's clock a little off), if any.
///
/// # Errors
///
/// The secret does not decode.
pub fn matching_step(secret: &str, code: &str, now_secs: u64) -> Result<Option<u64>, TotpError> {
    let totp = generator(secret)?;
    let now = now_secs / STEP_SECS;
    let code = code.trim();
    let steps = [now.saturating_sub(1), now, now + 1];
    // Every candidate is compared, in constant time, whichever matches.
    let mut found = None;
    for step in steps {
        let expected = totp.generate(step * STEP_SECS);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `code` has the shape of a time code (rather than a recovery one).
pub fn is_time_code(code: &str) -> bool {
    let code = code.trim();
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// New recovery codes: `xxxxx-xxxxx` of `[a-z0-9]`, about 50 bits each.
///
/// # Errors
///
/// The system's random source failed.
pub fn new_recovery_codes() -> Result<Vec<String>, TotpError> {
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let text = secrets::random_base62(10)?.to_lowercase();
        codes.push(format!("{}-{}", &text[..5], &text[5..]));
    }
    Ok(codes)
}

/// A recovery code as it is kept (hashed by the vault's key): case, spaces
/// and dashes ignored, as people type them.
pub fn normal_recovery_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether a user's logins are paused by too many wrong codes; how many ms
/// are left if so.
pub fn locked_for(record: &TotpRecord, now_ms: u64) -> Option<u64> {
    (record.locked_until_ms > now_ms).then(|| record.locked_until_ms - now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 seed, in base32.
    const RFC_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn codes_follow_rfc_6238_and_a_step_either_side_counts() {
        // RFC 6238 appendix B, SHA-1, time 59: 94287082 (8 digits); its
        // last six are the 6-digit code.
        assert_eq!(matching_step(RFC_SEED, "287082", 59).unwrap(), Some(1));
        assert_eq!(matching_step(RFC_SEED, "287082", 89).unwrap(), Some(1));
        assert_eq!(matching_step(RFC_SEED, "287082", 0).unwrap(), Some(1));
        assert_eq!(matching_step(RFC_SEED, "287082", 90).unwrap(), None);
        // 1111111109 → 07081804.
        assert_eq!(
            matching_step(RFC_SEED, " 081804 ", 1_111_111_109).unwrap(),
            Some(1_111_111_109 / 30)
        );
        assert_eq!(
            matching_step(RFC_SEED, "081805", 1_111_111_109).unwrap(),
            None
        );
        assert_eq!(matching_step(RFC_SEED, "", 59).unwrap(), None);
    }

    #[test]
    fn secrets_are_160_bits_and_their_uri_names_kiln_and_the_user() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), 32);
        assert_ne!(secret, new_secret().unwrap());
        let uri = uri(&secret, "ada");
        assert!(uri.starts_with("otpauth://totp/Kiln:ada?secret="), "{uri}");
        assert!(uri.contains("&digits=6&period=30"), "{uri}");
        // A code made from it is found.
        let totp = generator(&secret).unwrap();
        let code = totp.generate(1_000_000);
        assert_eq!(
            matching_step(&secret, &code, 1_000_000).unwrap(),
            Some(1_000_000 / 30)
        );
        assert!(is_time_code(&code) && !is_time_code("abcde-fghij"));
    }

    #[test]
    fn recovery_codes_are_distinct_and_typed_loosely() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let first = &codes[0];
        assert_eq!(first.len(), 11);
        assert_eq!(
            normal_recovery_code(&first.to_uppercase().replace('-', " ")),
            first.replace('-', "")
        );
    }

    #[test]
    fn pauses_double_up_to_a_day() {
        assert_eq!(pause_ms(1), LOCKOUT_MS);
        assert_eq!(pause_ms(2), 2 * LOCKOUT_MS);
        assert_eq!(pause_ms(4), 8 * LOCKOUT_MS);
        assert_eq!(pause_ms(9), 256 * LOCKOUT_MS);
        assert_eq!(pause_ms(10), MAX_LOCKOUT_MS);
        assert_eq!(pause_ms(u32::MAX), MAX_LOCKOUT_MS);
    }
}

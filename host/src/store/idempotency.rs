//! Idempotency keys: a claim per key, then the response kept for replays.

use super::StoreError;

#[async_trait::async_trait]
pub trait IdempotencyStore {
    /// Claims an idempotency key for a request whose method, path and body
    /// hash to `fingerprint`, or says what an earlier claim left.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Claim, StoreError>;
    /// Ends a claim: keeps the response for replays, or (given `None`)
    /// releases the key so a retry runs again.
    async fn settle_idempotency_key(
        &self,
        key: &str,
        response: Option<&StoredResponse>,
    ) -> Result<(), StoreError>;
    /// Forgets idempotency keys claimed before `before_ms`; returns how many.
    async fn expire_idempotency_keys(&self, before_ms: u64) -> Result<usize, StoreError>;
}

/// A response kept for replay under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or expired, or abandoned by a crash): run the request.
    Claimed,
    /// The same request ran before: answer this again.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
    /// The same request is running now.
    InFlight,
}

/// Idempotency keys live this long (API.md: 24 h).
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// A claim with no response after this long was left by a crash; the longest
/// request (a 300 s wait) is well inside it.
pub const IDEMPOTENCY_ABANDONED_MS: u64 = 10 * 60 * 1000;

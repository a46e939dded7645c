//! The sled side of [`IdempotencyStore`]: `idempotency` by key, each entry
//! a claim in flight or the response it ended with.

use super::{Change, SledStore, backend, decode, swap, swap_entry};
use crate::store::StoreError;
use crate::store::idempotency::{
    Claim, IDEMPOTENCY_ABANDONED_MS, IDEMPOTENCY_TTL_MS, IdempotencyStore, StoredResponse,
};

#[derive(serde::Serialize, serde::Deserialize)]
enum IdempotencyEntry {
    InFlight {
        fingerprint: String,
        claimed_ms: u64,
    },
    Done {
        fingerprint: String,
        claimed_ms: u64,
        response: StoredResponse,
    },
}

impl IdempotencyEntry {
    fn claimed_ms(&self) -> u64 {
        match self {
            Self::InFlight { claimed_ms, .. } | Self::Done { claimed_ms, .. } => *claimed_ms,
        }
    }

    /// Whether the entry still answers for its key at `now_ms`: a response
    /// for the TTL, a claim until it looks abandoned by a crash.
    fn live(&self, now_ms: u64) -> bool {
        let age = now_ms.saturating_sub(self.claimed_ms());
        match self {
            Self::InFlight { .. } => age < IDEMPOTENCY_ABANDONED_MS,
            Self::Done { .. } => age < IDEMPOTENCY_TTL_MS,
        }
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for SledStore {
    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        // Compare-and-swap: of two concurrent first uses, one claims.
        let (before, after) = swap_entry(
            &self.idempotency,
            key.as_bytes(),
            |current: Option<&IdempotencyEntry>| {
                Ok(match current {
                    Some(entry) if entry.live(now_ms) => Change::Keep,
                    _ => Change::Put(IdempotencyEntry::InFlight {
                        fingerprint: fingerprint.to_string(),
                        claimed_ms: now_ms,
                    }),
                })
            },
        )?;
        let live = before.filter(|_| matches!(after, Change::Keep));
        Ok(match live {
            None => Claim::Claimed,
            Some(
                IdempotencyEntry::InFlight { fingerprint: f, .. }
                | IdempotencyEntry::Done { fingerprint: f, .. },
            ) if f != fingerprint => Claim::Mismatch,
            Some(IdempotencyEntry::InFlight { .. }) => Claim::InFlight,
            Some(IdempotencyEntry::Done { response, .. }) => Claim::Replay(response),
        })
    }

    async fn settle_idempotency_key(
        &self,
        key: &str,
        response: Option<&StoredResponse>,
    ) -> Result<(), StoreError> {
        let Some(response) = response else {
            self.idempotency.remove(key).map_err(backend)?;
            return Ok(());
        };
        swap(&self.idempotency, key.as_bytes(), |entry| {
            Ok(match entry {
                IdempotencyEntry::InFlight {
                    fingerprint,
                    claimed_ms,
                } => Change::Put(IdempotencyEntry::Done {
                    fingerprint: fingerprint.clone(),
                    claimed_ms: *claimed_ms,
                    response: response.clone(),
                }),
                IdempotencyEntry::Done { .. } => Change::Keep,
            })
        })?;
        Ok(())
    }

    async fn expire_idempotency_keys(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut expired = 0;
        for entry in self.idempotency.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            let stale = decode::<IdempotencyEntry>(&bytes)
                .map_or(true, |entry| entry.claimed_ms() < before_ms);
            if stale {
                // Only if unchanged: a fresh claim of the key stays.
                let _ = self
                    .idempotency
                    .compare_and_swap(&key, Some(&bytes), None as Option<&[u8]>)
                    .map_err(backend)?;
                expired += 1;
            }
        }
        Ok(expired)
    }
}

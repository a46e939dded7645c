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

#[cfg(test)]
mod tests {
    use super::super::tests::TEST_CACHE_BYTES;
    use super::*;

    #[tokio::test]
    async fn idempotency_keys_claim_replay_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "f", 1_000).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_idempotency_key("k", "f", 1_001).await.unwrap(),
            Claim::InFlight
        );
        assert_eq!(
            store.claim_idempotency_key("k", "g", 1_001).await.unwrap(),
            Claim::Mismatch
        );
        let response = StoredResponse {
            status: 201,
            headers: vec![("location".into(), "/x".into())],
            body: b"{}".to_vec(),
        };
        store
            .settle_idempotency_key("k", Some(&response))
            .await
            .unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "f", 2_000).await.unwrap(),
            Claim::Replay(response)
        );
        // After the TTL the key is new again.
        let later = 1_000 + IDEMPOTENCY_TTL_MS;
        assert_eq!(
            store.claim_idempotency_key("k", "g", later).await.unwrap(),
            Claim::Claimed
        );
        // A released claim can be taken at once; an abandoned one after a while.
        store.settle_idempotency_key("k", None).await.unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "h", later).await.unwrap(),
            Claim::Claimed
        );
        let abandoned = later + IDEMPOTENCY_ABANDONED_MS;
        assert_eq!(
            store
                .claim_idempotency_key("k", "h", abandoned)
                .await
                .unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.expire_idempotency_keys(abandoned + 1).await.unwrap(),
            1
        );
        assert_eq!(
            store
                .claim_idempotency_key("k", "f", abandoned)
                .await
                .unwrap(),
            Claim::Claimed
        );
    }
}

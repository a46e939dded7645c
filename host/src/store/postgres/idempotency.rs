//! The PostgreSQL side of [`IdempotencyStore`]: `idempotency_keys`, a claim
//! taken by one `INSERT … ON CONFLICT` so of two first uses on any nodes
//! one claims.

use sqlx::Row as _;

use super::{PgStore, backend, decode, encode, ms};
use crate::store::StoreError;
use crate::store::idempotency::{
    Claim, IDEMPOTENCY_ABANDONED_MS, IDEMPOTENCY_TTL_MS, IdempotencyStore, StoredResponse,
};

impl PgStore {
    /// One claim: `None` when the key went between the upsert and the read.
    async fn try_claim(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Option<Claim>, StoreError> {
        // A key still live (a response within the TTL, a claim not yet
        // abandoned) is kept; anything else is claimed anew.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys AS k (key, fingerprint, claimed_ms, response)
             VALUES ($1, $2, $3, NULL)
             ON CONFLICT (key) DO UPDATE
                SET fingerprint = EXCLUDED.fingerprint,
                    claimed_ms = EXCLUDED.claimed_ms,
                    response = NULL
              WHERE (k.response IS NULL AND $3 - k.claimed_ms >= $4)
                 OR (k.response IS NOT NULL AND $3 - k.claimed_ms >= $5)
             RETURNING key",
        )
        .bind(key)
        .bind(fingerprint)
        .bind(ms(now_ms))
        .bind(ms(IDEMPOTENCY_ABANDONED_MS))
        .bind(ms(IDEMPOTENCY_TTL_MS))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if claimed.is_some() {
            return Ok(Some(Claim::Claimed));
        }
        let Some(row) =
            sqlx::query("SELECT fingerprint, response FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
        else {
            return Ok(None);
        };
        let theirs: String = row.get("fingerprint");
        let response: Option<serde_json::Value> = row.get("response");
        Ok(Some(match response {
            _ if theirs != fingerprint => Claim::Mismatch,
            None => Claim::InFlight,
            Some(response) => Claim::Replay(decode(response)?),
        }))
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for PgStore {
    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        // A key released between `try_claim`'s two statements is claimed
        // again (three tries; then it is busy enough to call in flight).
        for _ in 0..3 {
            if let Some(claim) = self.try_claim(key, fingerprint, now_ms).await? {
                return Ok(claim);
            }
        }
        Ok(Claim::InFlight)
    }

    async fn settle_idempotency_key(
        &self,
        key: &str,
        response: Option<&StoredResponse>,
    ) -> Result<(), StoreError> {
        let query = match response {
            None => sqlx::query("DELETE FROM idempotency_keys WHERE key = $1").bind(key),
            Some(response) => sqlx::query(
                "UPDATE idempotency_keys SET response = $2 WHERE key = $1 AND response IS NULL",
            )
            .bind(key)
            .bind(encode(response)?),
        };
        query.execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }

    async fn expire_idempotency_keys(&self, before_ms: u64) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE claimed_ms < $1")
            .bind(ms(before_ms))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
}

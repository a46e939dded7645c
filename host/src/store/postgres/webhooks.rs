//! The PostgreSQL side of [`WebhookStore`]: `webhooks`, the outbox
//! (`webhook_outbox`, read by due time) and the attempt log
//! (`webhook_attempts`, by webhook and UUIDv7 id).

use sqlx::Row as _;

use super::{PgStore, all, backend, bigint, decode, encode, insert_record, ms, one, update_record};
use crate::store::StoreError;
use crate::store::webhooks::{AttemptRecord, DeliveryRecord, WebhookRecord, WebhookStore};

/// Due deliveries read per query while skipping those in flight.
const DUE_PAGE: i64 = 64;

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

#[async_trait::async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        insert_record(&self.pool, "webhooks", &webhook.id, webhook).await
    }

    async fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        one(&self.pool, "SELECT record FROM webhooks WHERE id = $1", id).await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        all(&self.pool, "SELECT record FROM webhooks ORDER BY id").await
    }

    async fn update_webhook(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r WebhookRecord) -> Result<WebhookRecord, StoreError> + Send + Sync
         ),
    ) -> Result<Option<WebhookRecord>, StoreError> {
        update_record(&self.pool, "webhooks", id, change).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = one(
            &mut *tx,
            "DELETE FROM webhooks WHERE id = $1 RETURNING record",
            id,
        )
        .await?;
        if deleted.is_none() {
            return Ok(None);
        }
        for table in ["webhook_outbox", "webhook_attempts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE webhook_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn put_delivery(&self, delivery: &DeliveryRecord) -> Result<(), StoreError> {
        put_delivery(&self.pool, delivery).await
    }

    async fn claim_delivery(
        &self,
        seen: &DeliveryRecord,
        until_ms: u64,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let claimed = DeliveryRecord {
            next_attempt_ms: until_ms,
            ..seen.clone()
        };
        // As `seen`: the same due time and attempts (every change of a
        // delivery moves one or the other).
        let done = sqlx::query(
            "UPDATE webhook_outbox SET next_attempt_ms = $2, record = $3
             WHERE id = $1 AND next_attempt_ms = $4
               AND (record->>'attempts')::bigint = $5",
        )
        .bind(&seen.id)
        .bind(ms(until_ms))
        .bind(encode(&claimed)?)
        .bind(ms(seen.next_attempt_ms))
        .bind(i64::from(seen.attempts))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok((done.rows_affected() == 1).then_some(claimed))
    }

    async fn pending_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        all(&self.pool, "SELECT record FROM webhook_outbox ORDER BY id").await
    }

    async fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &(dyn for<'r> Fn(&'r str) -> bool + Send + Sync),
    ) -> Result<(Vec<DeliveryRecord>, Option<u64>), StoreError> {
        let now = ms(now_ms);
        let mut due = Vec::new();
        // Pages in due order, after the last row read, until enough that
        // `skip` lets through or no more are due.
        let mut after: (i64, String) = (i64::MIN, String::new());
        while due.len() < limit {
            let rows = sqlx::query(
                "SELECT id, next_attempt_ms, record FROM webhook_outbox
                  WHERE next_attempt_ms <= $1 AND (next_attempt_ms, id) > ($2, $3)
                  ORDER BY next_attempt_ms, id LIMIT $4",
            )
            .bind(now)
            .bind(after.0)
            .bind(&after.1)
            .bind(DUE_PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            let last_page = rows.len() < usize::try_from(DUE_PAGE).unwrap_or(usize::MAX);
            for row in rows {
                let id: String = row.get("id");
                after = (row.get("next_attempt_ms"), id.clone());
                if due.len() < limit && !skip(&id) {
                    due.push(decode(row.get("record"))?);
                }
            }
            if last_page {
                break;
            }
        }
        let next: Option<i64> = sqlx::query(
            "SELECT min(next_attempt_ms) AS next FROM webhook_outbox WHERE next_attempt_ms > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?
        .get("next");
        Ok((due, next.and_then(|n| u64::try_from(n).ok())))
    }

    async fn remove_delivery(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_outbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn append_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_attempts (webhook_id, id, record) VALUES ($1, $2, $3)
             ON CONFLICT (webhook_id, id) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(&attempt.webhook_id)
        .bind(&attempt.id)
        .bind(encode(attempt)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn remove_attempts_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_attempts WHERE (webhook_id, id) IN (
                SELECT webhook_id, id FROM webhook_attempts WHERE id < $1 ORDER BY id LIMIT $2)",
        )
        .bind(crate::store::lowest_id_at(before_ms))
        .bind(bigint(limit))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn attempts(
        &self,
        webhook_id: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AttemptRecord>, usize), StoreError> {
        let rows = sqlx::query(
            "SELECT record FROM webhook_attempts WHERE webhook_id = $1
              ORDER BY id DESC OFFSET $2 LIMIT $3",
        )
        .bind(webhook_id)
        .bind(i64::try_from(skip).unwrap_or(i64::MAX))
        .bind(i64::try_from(take).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let total: i64 =
            sqlx::query("SELECT count(*) AS n FROM webhook_attempts WHERE webhook_id = $1")
                .bind(webhook_id)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?
                .get("n");
        let page = rows
            .into_iter()
            .map(|row| decode(row.get("record")))
            .collect::<Result<_, _>>()?;
        Ok((page, count(total)))
    }
}

/// Stores (or replaces) `delivery` through `executor` (the pool, or a
/// transaction the caller commits).
pub(super) async fn put_delivery<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    delivery: &DeliveryRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_outbox (id, webhook_id, next_attempt_ms, record)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE
            SET next_attempt_ms = EXCLUDED.next_attempt_ms, record = EXCLUDED.record",
    )
    .bind(&delivery.id)
    .bind(&delivery.webhook_id)
    .bind(ms(delivery.next_attempt_ms))
    .bind(encode(delivery)?)
    .execute(executor)
    .await
    .map_err(backend)?;
    Ok(())
}

//! The PostgreSQL side of [`UsageStore`]: `usage_rollups`, a row per kind
//! (`pending_usage::kind`), bucket, organization and script ('' for none).
//! Each node adds what ended on it to its rows in memory and merges that
//! into the table at every flush (`PgStore::write_usage`), each row locked
//! while it merges, so nodes add to a row one after the other.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row as _};

use super::{PgStore, backend, decode, encode};
use crate::store::StoreError;
use crate::store::orgs::org_of;
use crate::store::pending_usage::{RowKey, kind, merge_into_rows, selection};
use crate::store::usage::{Grain, Scope, UsageRollup, UsageRow, UsageStore};

/// A row key's organization and script columns.
fn columns((_, _, org, script): &RowKey) -> (&str, &str) {
    (org_of(org), script.as_deref().unwrap_or(""))
}

impl PgStore {
    /// Merges the pending rollup changes into the table, in one
    /// transaction; put back if it fails, for the next flush.
    pub(super) async fn write_usage(&self) -> Result<(), StoreError> {
        let _moving = self.usage_moving.write().await;
        let changes = self.pending_usage.take();
        if changes.is_empty() {
            return Ok(());
        }
        match self.merge_usage(&changes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending_usage.restore(changes);
                Err(e)
            }
        }
    }

    async fn merge_usage(&self, changes: &HashMap<RowKey, UsageRollup>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // In key order, so two nodes merging the same rows never deadlock.
        let mut keys: Vec<&RowKey> = changes.keys().collect();
        keys.sort();
        for key in keys {
            let (org, script) = columns(key);
            let (row_kind, bucket) = (key.0 as i8, key.1.as_str());
            let current = sqlx::query(
                "SELECT record FROM usage_rollups
                 WHERE kind = $1 AND bucket = $2 AND org = $3 AND script = $4 FOR UPDATE",
            )
            .bind(row_kind)
            .bind(bucket)
            .bind(org)
            .bind(script)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            let mut usage: UsageRollup = match current {
                Some(row) => decode(row.get("record"))?,
                None => UsageRollup::default(),
            };
            usage.merge(&changes[key]);
            sqlx::query(
                "INSERT INTO usage_rollups (kind, bucket, org, script, record)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kind, bucket, org, script) DO UPDATE SET record = EXCLUDED.record",
            )
            .bind(row_kind)
            .bind(bucket)
            .bind(org)
            .bind(script)
            .bind(encode(&usage)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }
}

#[async_trait::async_trait]
impl UsageStore for PgStore {
    async fn usage(
        &self,
        grain: Grain,
        from_ms: u64,
        to_ms: u64,
        scope: Scope<'_>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let (first, last) = (grain.bucket_at(from_ms), grain.bucket_at(to_ms));
        let (row_kind, org) = selection(grain, scope);
        let _moving = self.usage_moving.read().await;
        let mut query = QueryBuilder::new("SELECT bucket, script, record FROM usage_rollups");
        query
            .push(" WHERE kind = ")
            .push_bind(row_kind as i8)
            .push(" AND org = ")
            .push_bind(org_of(&org).to_owned())
            .push(" AND bucket BETWEEN ")
            .push_bind(first.clone())
            .push(" AND ")
            .push_bind(last.clone());
        match scope {
            Scope::Script(_, script) => {
                query
                    .push(" AND script = ")
                    .push_bind(script.unwrap_or("").to_owned());
            }
            Scope::Total(_) => {
                query.push(" AND script = ''");
            }
            Scope::PerScript(_) => {}
        }
        let rows = query.build().fetch_all(&self.pool).await.map_err(backend)?;
        let mut usage = rows
            .into_iter()
            .map(|row| {
                let script: String = row.get("script");
                Ok(UsageRow {
                    bucket: row.get("bucket"),
                    script_id: (!script.is_empty()).then_some(script),
                    usage: decode(row.get("record"))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        merge_into_rows(
            &mut usage,
            self.pending_usage.snapshot(),
            grain,
            (&first, &last),
            scope,
        );
        Ok(usage)
    }

    async fn remove_usage_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        for grain in Grain::ALL {
            // The bucket `before_ms` falls in has not ended: kept.
            let bucket = grain.bucket_at(before_ms);
            for per_script in [false, true] {
                let left = i64::try_from(limit - removed).unwrap_or(i64::MAX);
                let done = sqlx::query(
                    "DELETE FROM usage_rollups WHERE ctid IN (
                        SELECT ctid FROM usage_rollups
                        WHERE kind = $1 AND bucket < $2 LIMIT $3)",
                )
                .bind(kind(grain, per_script) as i8)
                .bind(&bucket)
                .bind(left)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
                removed += usize::try_from(done.rows_affected()).unwrap_or(0);
                if removed >= limit {
                    return Ok(removed);
                }
            }
        }
        Ok(removed)
    }
}

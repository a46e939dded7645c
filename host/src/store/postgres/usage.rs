//! The PostgreSQL side of [`UsageStore`]: `usage_rollups`, a row per kind
//! (`pending_usage::kind`), bucket, organization and script ('' for none).
//! Each node adds what ended on it to its rows in memory and merges that
//! into the table every second ([`Rollups::write`]), each row locked while
//! it merges, so nodes add to a row one after the other.

use std::collections::HashMap;
use std::sync::Weak;

use sqlx::postgres::PgPool;
use sqlx::{QueryBuilder, Row as _};

use super::{PgStore, backend, decode, encode};
use crate::store::StoreError;
use crate::store::orgs::org_of;
use crate::store::pending_usage::{PendingUsage, RowKey, kind, merge_into_rows, selection};
use crate::store::usage::{Grain, Scope, UsageRollup, UsageRow, UsageStore};

/// A row key's organization and script columns.
fn columns((_, _, org, script): &RowKey) -> (&str, &str) {
    (org_of(org), script.as_deref().unwrap_or(""))
}

/// How often a node merges the rollup changes of what ended on it.
pub(super) const USAGE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Rollup changes of what ended on this node and not yet merged into the
/// table, and what keeps a reader from seeing a change twice or not at
/// all: written while changes move into the table, read while a reader
/// merges both.
#[derive(Default)]
pub(super) struct Rollups {
    pub(super) pending: PendingUsage,
    moving: tokio::sync::RwLock<()>,
}

impl Rollups {
    /// Merges the pending changes into the table, in one transaction; put
    /// back if it fails, for the next time.
    pub(super) async fn write(&self, pool: &PgPool) -> Result<(), StoreError> {
        let _moving = self.moving.write().await;
        let changes = self.pending.take();
        if changes.is_empty() {
            return Ok(());
        }
        match merge(pool, &changes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending.restore(changes);
                Err(e)
            }
        }
    }
}

/// Writes `rollups` every [`USAGE_EVERY`] until the store is dropped.
pub(super) fn write_every_second(pool: PgPool, rollups: Weak<Rollups>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(USAGE_EVERY).await;
            let Some(rollups) = rollups.upgrade() else {
                return;
            };
            if let Err(e) = rollups.write(&pool).await {
                tracing::warn!(error = %e, "merging the usage rollups failed; kept for the next time");
            }
        }
    });
}

async fn merge(pool: &PgPool, changes: &HashMap<RowKey, UsageRollup>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    // In key order, so two nodes merging the same rows never deadlock.
    let mut keys: Vec<&RowKey> = changes.keys().collect();
    keys.sort();
    for key in keys {
        let (org, script) = columns(key);
        let (row_kind, bucket) = (key.0 as i8, key.1.as_str());
        let keyed = |sql| {
            sqlx::query(sql)
                .bind(row_kind)
                .bind(bucket)
                .bind(org)
                .bind(script)
        };
        // Made if missing and locked in one statement (an upsert locks the
        // row it meets): two nodes making one new row would otherwise each
        // write their own change over the other's.
        let current = keyed(
            "INSERT INTO usage_rollups AS r (kind, bucket, org, script, record)
             VALUES ($1, $2, $3, $4, '{}')
             ON CONFLICT (kind, bucket, org, script) DO UPDATE SET record = r.record
             RETURNING record",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let mut usage: UsageRollup = decode(current.get("record"))?;
        usage.merge(&changes[key]);
        keyed(
            "UPDATE usage_rollups SET record = $5
             WHERE kind = $1 AND bucket = $2 AND org = $3 AND script = $4",
        )
        .bind(encode(&usage)?)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
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
        let _moving = self.rollups.moving.read().await;
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
            self.rollups.pending.snapshot(),
            grain,
            (&first, &last),
            scope,
        );
        Ok(usage)
    }

    async fn remove_usage_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        // What ended so far is in the table first, so it goes too.
        self.rollups.write(&self.pool).await?;
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

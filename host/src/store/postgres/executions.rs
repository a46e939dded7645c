//! The PostgreSQL side of [`ExecutionStore`]: `executions` by UUIDv7 id,
//! with an index per walk (script slot, status, organization). Walks read
//! a page at a time from where the last page ended, so a visitor that stops
//! early reads no more.
//!
//! Nothing is held in memory: [`ExecutionStore::hold_execution`] writes at
//! once, so every node sees every execution. The counters
//! [`ExecutionStore::count_executions`] reads are in memory (it is called
//! where nothing can wait); this node's writes move them, and they are read
//! again from the table every [`COUNTS_REFRESH`], for the other nodes'.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{QueryBuilder, Row as _};

use super::{PgStore, backend, bigint, decode, encode, one, records};
use crate::store::executions::{
    Claimed, ExecutionIndex, ExecutionStore, ExecutionWalk, IndexCounts, Indexed, Removal,
};
use crate::store::orgs::{InOrg as _, org_field};
use crate::store::{ExecutionRecord, ExecutionStatus, StoreError, lowest_id_at};

/// Records read per query of a walk.
const WALK_PAGE: i64 = 256;

/// How often the counters are read again from the table.
pub(super) const COUNTS_REFRESH: Duration = Duration::from_secs(10);

/// How long a node's claim on a running execution holds unless renewed
/// (`jobs::leases` renews every second).
pub const LEASE: Duration = Duration::from_secs(15);

/// The database's clock in Unix ms: every node's leases are measured by
/// one clock.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The counters, and what keeps a reading of them from the table from
/// crossing this node's writes: every write of an execution holds `writes`
/// (shared) from its statement to its counters' move, and a reading holds
/// it alone from its query to its replacing the counters, so no write is
/// counted twice or lost. Read again only while other nodes write too
/// (`alone` unset: `PgStore::claim_node` sets it).
#[derive(Default)]
pub(super) struct Counts {
    counts: Mutex<IndexCounts>,
    pub(super) writes: tokio::sync::RwLock<()>,
    pub(super) alone: std::sync::atomic::AtomicBool,
}

impl Counts {
    pub(super) fn new(counts: IndexCounts) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(counts),
            ..Self::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexCounts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the counters again from the table, unless this node is the
    /// only one writing.
    pub(super) async fn reload(&self, pool: &PgPool) -> Result<(), StoreError> {
        if self.alone.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let _no_writes = self.writes.write().await;
        let fresh = load_counts(pool).await?;
        *self.lock() = fresh;
        Ok(())
    }
}

/// The script slot column of an index entry (`Indexed::script_slot`, with
/// '' for none).
fn slot(indexed: &Indexed) -> String {
    indexed.script_slot().unwrap_or_default()
}

fn status_of(name: &str) -> Result<ExecutionStatus, StoreError> {
    ExecutionStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown execution status {name:?}")))
}

/// Every counter, read from the table (one group per organization, script
/// and status: bounded by the scripts, not the executions).
pub(super) async fn load_counts(pool: &PgPool) -> Result<IndexCounts, StoreError> {
    let rows = sqlx::query(
        "SELECT org, script_slot, status, count(*) AS n FROM executions
         GROUP BY org, script_slot, status",
    )
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    let mut counts = IndexCounts::default();
    for row in rows {
        let org = org_field(row.get("org"));
        let slot: String = row.get("script_slot");
        // An ad-hoc slot names no script: `~<org>` is the slot itself.
        let script_id = (!slot.is_empty() && !slot.starts_with('~')).then_some(slot);
        let indexed = Indexed {
            org,
            script_id,
            status: status_of(row.get("status"))?,
        };
        counts.add_n(&indexed, u64::try_from(row.get::<i64, _>("n")).unwrap_or(0));
    }
    Ok(counts)
}

/// Adds `walk`'s index to a query's conditions.
fn push_index(query: &mut QueryBuilder<'_, sqlx::Postgres>, index: &ExecutionIndex) {
    match index {
        ExecutionIndex::All => {}
        ExecutionIndex::Org(org) => {
            query.push(" AND org = ").push_bind(org.clone());
        }
        ExecutionIndex::Script(script) => {
            query
                .push(" AND script_slot = ")
                .push_bind(script.clone().unwrap_or_default());
        }
        ExecutionIndex::Status(status) => {
            query.push(" AND status = ").push_bind(status.as_str());
        }
    }
}

/// The statement that writes an execution (`$1`..`$6`: id, organization,
/// script slot, status, node, record), between `before` and `after`; a
/// running one gets a fresh lease.
fn upsert(before: &str, after: &str) -> String {
    let lease_ms = LEASE.as_millis();
    format!(
        "{before}INSERT INTO executions (id, org, script_slot, status, node, lease_ms, record)
         VALUES ($1, $2, $3, $4, $5,
                 CASE WHEN $4 = 'running' THEN {DB_NOW_MS} + {lease_ms} END, $6)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, node = EXCLUDED.node,
            lease_ms = EXCLUDED.lease_ms, record = EXCLUDED.record{after}"
    )
}

/// Writes `execution` through `executor` (the pool, or a transaction the
/// caller commits); the state it had, from the same statement's snapshot,
/// for [`PgStore::written`] once it is committed. The caller holds the
/// counters' `writes` lock.
pub(super) async fn write<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    execution: &ExecutionRecord,
) -> Result<Option<ExecutionStatus>, StoreError> {
    let row = sqlx::query(&upsert(
        "WITH before AS (SELECT status FROM executions WHERE id = $1) ",
        " RETURNING (SELECT status FROM before) AS before",
    ))
    .bind(&execution.id)
    .bind(execution.org())
    .bind(slot(&Indexed::of(execution)))
    .bind(execution.status.as_str())
    .bind(&execution.node)
    .bind(encode(execution)?)
    .fetch_one(executor)
    .await
    .map_err(backend)?;
    row.get::<Option<String>, _>("before")
        .map(|name| status_of(&name))
        .transpose()
}

impl PgStore {
    fn counts(&self) -> std::sync::MutexGuard<'_, IndexCounts> {
        self.execution_counts.lock()
    }

    /// After a write of `record` over a record in state `before`: the
    /// counters move, and a record that just became final is added to its
    /// usage rollups once.
    pub(super) fn written(&self, before: Option<ExecutionStatus>, record: &ExecutionRecord) {
        let after = Indexed::of(record);
        if after.status.is_final() && before.is_none_or(|s| !s.is_final()) {
            self.rollups.pending.add(record);
        }
        if before != Some(after.status) {
            let mut counts = self.counts();
            if let Some(status) = before {
                // Its organization and script never change.
                counts.remove(&Indexed {
                    status,
                    ..after.clone()
                });
            }
            counts.add(&after);
        }
    }

    /// One page of `walk` after `from` (an id) in its order.
    async fn walk_page(
        &self,
        walk: &ExecutionWalk,
        from: Option<&str>,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let mut query = QueryBuilder::new("SELECT record FROM executions WHERE true");
        push_index(&mut query, &walk.index);
        if let Some(ms) = walk.created_from_ms {
            query.push(" AND id >= ").push_bind(lowest_id_at(ms));
        }
        if let Some(ms) = walk.created_until_ms {
            query.push(" AND id < ").push_bind(lowest_id_at(ms));
        }
        let beyond = if walk.newest_first {
            " AND id < "
        } else {
            " AND id > "
        };
        for after in [walk.after.as_deref(), from].into_iter().flatten() {
            query.push(beyond).push_bind(after.to_owned());
        }
        query.push(if walk.newest_first {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id"
        });
        query.push(" LIMIT ").push_bind(WALK_PAGE);
        let rows = query.build().fetch_all(&self.pool).await.map_err(backend)?;
        records(rows)
    }
}

#[async_trait::async_trait]
impl ExecutionStore for PgStore {
    async fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let _counted = self.execution_counts.writes.read().await;
        let before = write(&self.pool, execution).await?;
        self.written(before, execution);
        Ok(())
    }

    async fn hold_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        // Written at once: another node may claim it.
        self.put_execution(execution).await
    }

    async fn keep_execution(&self, _id: &str) -> Result<(), StoreError> {
        // Nothing is held.
        Ok(())
    }

    async fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        one(
            &self.pool,
            "SELECT record FROM executions WHERE id = $1",
            id,
        )
        .await
    }

    async fn walk_executions(
        &self,
        walk: &ExecutionWalk,
        visit: &mut (dyn FnMut(ExecutionRecord) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        let mut from: Option<String> = None;
        loop {
            let page = self.walk_page(walk, from.as_deref()).await?;
            let full = page.len() as i64 == WALK_PAGE;
            for record in page {
                from = Some(record.id.clone());
                if visit(record).is_break() {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn count_executions(&self, index: &ExecutionIndex) -> u64 {
        self.counts().count(index)
    }

    fn executions_per_script(&self) -> Vec<(Option<String>, u64)> {
        self.counts().per_script()
    }

    async fn update_execution(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r ExecutionRecord) -> Option<ExecutionRecord> + Send + Sync),
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let _counted = self.execution_counts.writes.read().await;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(current) = super::locked::<ExecutionRecord>(&mut tx, "executions", id).await?
        else {
            return Ok(None);
        };
        let before = current.status;
        let Some(next) = change(&current) else {
            return Ok(None);
        };
        sqlx::query(&upsert("", ""))
            .bind(&next.id)
            .bind(next.org())
            .bind(slot(&Indexed::of(&next)))
            .bind(next.status.as_str())
            .bind(&next.node)
            .bind(encode(&next)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.written(Some(before), &next);
        Ok(Some(next))
    }

    async fn claim_execution(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r ExecutionRecord) -> Option<ExecutionRecord> + Send + Sync),
        org_cap: &(dyn for<'o> Fn(&'o str) -> Option<usize> + Send + Sync),
    ) -> Result<Claimed, StoreError> {
        let _counted = self.execution_counts.writes.read().await;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(current) = super::locked::<ExecutionRecord>(&mut tx, "executions", id).await?
        else {
            return Ok(Claimed::NotQueued);
        };
        let before = current.status;
        let Some(next) = change(&current) else {
            return Ok(Claimed::NotQueued);
        };
        if let Some(cap) = org_cap(current.org()) {
            // Held to the commit: the next claim of the organization counts
            // this one.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('kiln running ' || $1, 0))")
                .bind(current.org())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            let running: i64 = sqlx::query(
                "SELECT count(*) AS n FROM executions WHERE status = 'running' AND org = $1",
            )
            .bind(current.org())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?
            .get("n");
            if usize::try_from(running).unwrap_or(usize::MAX) >= cap {
                return Ok(Claimed::OrgAtCap(current));
            }
        }
        write(&mut *tx, &next).await?;
        tx.commit().await.map_err(backend)?;
        self.written(Some(before), &next);
        Ok(Claimed::Running(next))
    }

    async fn running_elsewhere(&self) -> Result<HashMap<String, usize>, StoreError> {
        let rows = sqlx::query(
            "SELECT org, count(*) AS n FROM executions
             WHERE status = 'running' AND node IS DISTINCT FROM $1 GROUP BY org",
        )
        .bind(&self.node)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let n: i64 = row.try_get("n").map_err(backend)?;
                Ok((
                    row.try_get("org").map_err(backend)?,
                    usize::try_from(n).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn finish_execution(
        &self,
        record: &ExecutionRecord,
        expect: Option<&(dyn for<'r> Fn(&'r ExecutionRecord) -> bool + Send + Sync)>,
        outbox: &[crate::store::webhooks::DeliveryRecord],
    ) -> Result<bool, StoreError> {
        let _counted = self.execution_counts.writes.read().await;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(expect) = expect {
            let current = super::locked(&mut tx, "executions", &record.id).await?;
            if !current.is_some_and(|current| expect(&current)) {
                return Ok(false);
            }
        }
        let before = write(&mut *tx, record).await?;
        for delivery in outbox {
            super::webhooks::put_delivery(&mut *tx, delivery).await?;
        }
        tx.commit().await.map_err(backend)?;
        self.written(before, record);
        Ok(true)
    }

    async fn renew_runs(&self, ids: &[String]) -> Result<(), StoreError> {
        let lease_ms = LEASE.as_millis();
        sqlx::query(&format!(
            "UPDATE executions SET lease_ms = {DB_NOW_MS} + {lease_ms}
             WHERE status = 'running' AND node = $1 AND id = ANY($2)"
        ))
        .bind(&self.node)
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn expired_runs(&self, limit: usize) -> Result<Vec<ExecutionRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT record FROM executions
             WHERE status = 'running' AND lease_ms < {DB_NOW_MS} AND node IS DISTINCT FROM $2
             ORDER BY id LIMIT $1"
        ))
        .bind(bigint(limit))
        .bind(&self.node)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        records(rows)
    }

    async fn stale_queued(
        &self,
        age_ms: u64,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let before = lowest_id_at(crate::now_ms().saturating_sub(age_ms));
        let rows = sqlx::query(
            "SELECT record FROM executions WHERE status = 'queued' AND id < $1
             ORDER BY id LIMIT $2",
        )
        .bind(before)
        .bind(bigint(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        records(rows)
    }

    async fn delete_execution(&self, id: &str) -> Result<Removal, StoreError> {
        let _counted = self.execution_counts.writes.read().await;
        let finals: Vec<&str> = ExecutionStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.as_str())
            .collect();
        let deleted = sqlx::query(
            "DELETE FROM executions WHERE id = $1 AND status = ANY($2) RETURNING record",
        )
        .bind(id)
        .bind(&finals)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if let Some(row) = deleted {
            let indexed: Indexed = decode(row.get("record"))?;
            self.counts().remove(&indexed);
            return Ok(Removal::Removed);
        }
        let left = sqlx::query("SELECT status FROM executions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match left {
            Some(row) => Ok(Removal::NotFinal(status_of(row.get("status"))?)),
            None => Ok(Removal::Missing),
        }
    }
}

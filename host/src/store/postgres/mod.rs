//! The PostgreSQL store (`store.url`): every record family, held to the
//! same conformance suite as sled (`store/conformance.rs`), so several
//! nodes can share one database (`store.shared`, `jobs/leases.rs`).
//!
//! Records are the sled store's JSON (`record json`, so a user's maps keep
//! their key order) with the columns that lookups, uniqueness and order
//! need beside it. A compare-and-swap of the sled store (`update_*`,
//! `delete_*` with a precondition) is a transaction that locks the row
//! (`SELECT … FOR UPDATE`), so `change` runs once.

mod auth;
mod executions;
pub use self::executions::LEASE;
mod idempotency;
mod orgs;
mod quota_uses;
mod schedules;
mod script_data;
mod scripts;
mod signals;
mod usage;
mod webhooks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection as _, Row as _};

use super::executions::{ExecutionIndex, ExecutionStore as _};
use super::{FlushFuture, RecordCounts, Store, StoreError, SyncStats};

/// The schema's migrations, in order: `(version, SQL)`. A migration is
/// applied once, in a transaction with the row that records it.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_records.sql")),
    (2, include_str!("migrations/0002_quota_uses.sql")),
];

/// Held (a session-level advisory lock) while a node migrates, so nodes
/// starting together migrate one after the other. Any fixed number: "kiln".
const MIGRATION_LOCK: i64 = 0x6b69_6c6e;

/// How long a health check waits for the database.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a health check's answer stands.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Held (a session-level advisory lock, on a connection of its own) by a
/// node that keeps the database to itself (`store.shared` off).
const NODE_LOCK: i64 = 0x6b69_6c6e_0001;

/// Connections one node keeps to the database.
const MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
    /// Audit records appended and not yet written (`auth.rs`).
    pending_audit: std::sync::Mutex<Vec<super::auth::AuditRecord>>,
    /// Held by the one write of them at a time.
    audit_writes: tokio::sync::Mutex<()>,
    /// How many executions each index holds (`executions.rs`).
    execution_counts: Arc<executions::Counts>,
    /// Rollup changes of what ended on this node, merged every second.
    rollups: Arc<usage::Rollups>,
    /// What `/metrics` and `/v1/status` read without waiting, refreshed
    /// with the execution counters.
    gauges: Arc<Gauges>,
    flushes: AtomicU64,
    /// The connection holding [`NODE_LOCK`], once taken.
    node_lock: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    /// This node's id (`<data_dir>/node-id`), on its claims and leases.
    node: String,
    /// The last health check's time and answer.
    last_check: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// Signals to and from the other nodes, once [`Self::share`] started
    /// them.
    signals: std::sync::OnceLock<signals::Signals>,
}

/// The database's size and the rows of the families that grow with use.
#[derive(Default)]
struct Gauges {
    size_bytes: AtomicU64,
    audit_entries: AtomicU64,
    webhook_attempts: AtomicU64,
    usage_rollups: AtomicU64,
}

impl Gauges {
    async fn load(&self, pool: &PgPool) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT pg_database_size(current_database()) AS size,
                    (SELECT count(*) FROM audit) AS audit,
                    (SELECT count(*) FROM webhook_attempts) AS attempts,
                    (SELECT count(*) FROM usage_rollups) AS rollups",
        )
        .fetch_one(pool)
        .await
        .map_err(backend)?;
        for (gauge, column) in [
            (&self.size_bytes, "size"),
            (&self.audit_entries, "audit"),
            (&self.webhook_attempts, "attempts"),
            (&self.usage_rollups, "rollups"),
        ] {
            let n: i64 = row.try_get(column).map_err(backend)?;
            gauge.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Reads the counters and gauges again every `COUNTS_REFRESH` (for what
/// the other nodes wrote) until the store is dropped.
fn refresh(pool: PgPool, counts: Weak<executions::Counts>, gauges: Weak<Gauges>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(executions::COUNTS_REFRESH).await;
            let (Some(counts), Some(gauges)) = (counts.upgrade(), gauges.upgrade()) else {
                return;
            };
            let read = async {
                counts.reload(&pool).await?;
                gauges.load(&pool).await
            };
            if let Err(e) = read.await {
                tracing::warn!(error = %e, "reading the store's counters failed");
            }
        }
    });
}

/// A database error as the store's: one of reaching the database (a
/// connection refused, lost or not to be had in time, the server shutting
/// down) is [`StoreError::Unavailable`], worth trying again.
fn backend(e: sqlx::Error) -> StoreError {
    let unreachable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P: the server is going away.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    };
    if unreachable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// A unique constraint on a name refused the write: the name is taken (a
/// clash of primary keys is not that).
fn name_taken(e: sqlx::Error, name: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db)
            if db.is_unique_violation()
                && db.constraint().is_some_and(|c| !c.ends_with("_pkey")) =>
        {
            StoreError::NameTaken(name.to_owned())
        }
        _ => backend(e),
    }
}

/// A record's JSON text, sent as PostgreSQL's `json` (kept as written, so
/// its maps keep their key order; `serde_json::Value` would be sent as
/// `jsonb`, which reorders them).
struct Json(String);

impl sqlx::Type<sqlx::Postgres> for Json {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(JSON_OID))
    }
}

/// `json`'s type id (fixed in every PostgreSQL, `pg_type.dat`).
const JSON_OID: u32 = 114;

impl sqlx::Encode<'_, sqlx::Postgres> for Json {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        // `json`'s binary form is its text.
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.0.as_str(), buf)
    }
}

fn encode<T: serde::Serialize>(record: &T) -> Result<Json, StoreError> {
    serde_json::to_string(record)
        .map(Json)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The record of the one row `sql` selects with `$1 = key`, if any.
/// (On the pool, or in a transaction: `&mut *tx`.)
async fn one<'e, T: serde::de::DeserializeOwned>(
    executor: impl sqlx::PgExecutor<'e>,
    sql: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let row = sqlx::query(sql)
        .bind(key)
        .fetch_optional(executor)
        .await
        .map_err(backend)?;
    row.map(|row| decode(row.get("record"))).transpose()
}

/// The records of the rows `sql` selects, in its order.
async fn all<T: serde::de::DeserializeOwned>(
    pool: &PgPool,
    sql: &str,
) -> Result<Vec<T>, StoreError> {
    records(sqlx::query(sql).fetch_all(pool).await.map_err(backend)?)
}

/// The `record` column of every row, decoded.
fn records<T: serde::de::DeserializeOwned>(
    rows: Vec<sqlx::postgres::PgRow>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter()
        .map(|row| decode(row.get("record")))
        .collect()
}

/// A count or limit as PostgreSQL's `bigint`.
fn bigint(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Adds row `id` of `table` (`id`, `record`).
async fn insert_record<T: serde::Serialize>(
    pool: &PgPool,
    table: &str,
    id: &str,
    record: &T,
) -> Result<(), StoreError> {
    sqlx::query(&format!("INSERT INTO {table} (id, record) VALUES ($1, $2)"))
        .bind(id)
        .bind(encode(record)?)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The record of row `id` of `table` (`id`, `record`), locked `FOR UPDATE`
/// until the transaction `tx` ends.
async fn locked<T: serde::de::DeserializeOwned>(
    tx: &mut sqlx::PgConnection,
    table: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT record FROM {table} WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(tx)
    .await
    .map_err(backend)?;
    row.map(|row| decode(row.get("record"))).transpose()
}

/// Replaces the record of row `id` of `table` (`id`, `record`) with what
/// `change` makes of it, in a transaction on the row locked `FOR UPDATE`;
/// `None` if there is no such row.
async fn update_record<T>(
    pool: &PgPool,
    table: &str,
    id: &str,
    change: &(dyn for<'r> Fn(&'r T) -> Result<T, StoreError> + Send + Sync),
) -> Result<Option<T>, StoreError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut tx = pool.begin().await.map_err(backend)?;
    let Some(current) = locked(&mut tx, table, id).await? else {
        return Ok(None);
    };
    let next = change(&current)?;
    sqlx::query(&format!("UPDATE {table} SET record = $2 WHERE id = $1"))
        .bind(id)
        .bind(encode(&next)?)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    Ok(Some(next))
}

/// Milliseconds as PostgreSQL's `bigint`.
fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects to `url`, migrates the schema forward under the migration
    /// lock and makes the default organization if there is none.
    ///
    /// # Errors
    ///
    /// The database cannot be reached, or a migration failed (then none of
    /// that migration is applied).
    #[cfg(test)]
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_as(url, &uuid::Uuid::now_v7().to_string()).await
    }

    /// [`Self::connect`] as node `node`: the id this node's claims and
    /// leases carry, kept across its restarts (`serve` keeps it in the
    /// data directory), so a restarted node knows its earlier runs ended
    /// with it.
    ///
    /// # Errors
    ///
    /// As [`Self::connect`].
    pub async fn connect_as(url: &str, node: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(backend)?;
        migrate(&pool).await?;
        let counts = executions::load_counts(&pool).await?;
        let gauges = Arc::new(Gauges::default());
        gauges.load(&pool).await?;
        let store = Self {
            pool,
            pending_audit: std::sync::Mutex::default(),
            audit_writes: tokio::sync::Mutex::const_new(()),
            execution_counts: executions::Counts::new(counts),
            rollups: Arc::default(),
            gauges,
            flushes: AtomicU64::new(0),
            node_lock: tokio::sync::Mutex::const_new(None),
            node: node.to_owned(),
            last_check: tokio::sync::Mutex::const_new(None),
            signals: std::sync::OnceLock::new(),
        };
        store.ensure_default_org().await?;
        refresh(
            store.pool.clone(),
            Arc::downgrade(&store.execution_counts),
            Arc::downgrade(&store.gauges),
        );
        usage::write_every_second(store.pool.clone(), Arc::downgrade(&store.rollups));
        Ok(store)
    }

    /// Makes this one of several nodes sharing the database: it sends and
    /// listens for signals (a connection of the pool stays listening).
    pub fn share(&self) {
        self.signals
            .get_or_init(|| signals::Signals::start(self.pool.clone(), self.node.clone()));
    }

    /// Makes this the one node using the database, or refuses if another
    /// is: without `store.shared` a node counts on being alone (its counters
    /// are never read again from the table, nobody ends its runs but its own
    /// restart).
    ///
    /// # Errors
    ///
    /// Another node holds the database, or it cannot be reached.
    pub async fn claim_node(&self) -> Result<(), StoreError> {
        let mut held = self.node_lock.lock().await;
        if held.is_some() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await.map_err(backend)?.detach();
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS taken")
            .bind(NODE_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(backend)?;
        if !row.try_get::<bool, _>("taken").map_err(backend)? {
            return Err(StoreError::Refused(
                "another Kiln node uses this database; set store.shared on every node \
                 to share it (docs/scaling.md)"
                    .into(),
            ));
        }
        *held = Some(conn);
        // Its own writes move the counters: no other node's to read.
        self.execution_counts
            .alone
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The schema version this database is at.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    #[cfg(test)]
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT coalesce(max(version), 0) AS v FROM kiln_schema")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        row.try_get("v").map_err(backend)
    }
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn signal(&self, signal: super::Signal) {
        if let Some(signals) = self.signals.get() {
            signals.send(signal);
        }
    }

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<super::Signal>> {
        self.signals.get().map(signals::Signals::subscribe)
    }

    fn shared_counts(&self) -> Option<&dyn super::shared_counts::SharedCounts> {
        Some(self)
    }

    /// A `SELECT 1` within 2 s, at most one a second: `/readyz` is open to
    /// anyone, and each call would otherwise take a connection.
    fn check(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            let mut last = self.last_check.lock().await;
            if let Some((at, answer)) = &*last
                && at.elapsed() < CHECK_EVERY
            {
                return answer.clone().map_err(StoreError::Unavailable);
            }
            let ping = sqlx::query("SELECT 1").execute(&self.pool);
            let answer = match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
                Ok(answer) => answer.map(|_| ()).map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
            };
            *last = Some((std::time::Instant::now(), answer.clone()));
            answer.map_err(StoreError::Unavailable)
        })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.gauges.size_bytes.load(Ordering::Relaxed))
    }

    /// Every write is committed when it returns; what waits in memory is
    /// the audit records, written here, and the usage rollup changes, which
    /// a task merges every second (`USAGE_EVERY`) rather than each answer's
    /// flush: a merge is a transaction over rows every node adds to, and
    /// once per answer it held every answer back. A crash loses at most
    /// that second of rollups, never a record.
    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.write_pending_audit().await?;
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    fn sync_stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.flushes.load(Ordering::Relaxed),
            blob_files: 0,
            journal_syncs: 0,
        }
    }

    fn record_counts(&self) -> RecordCounts {
        let gauge = |g: &AtomicU64| g.load(Ordering::Relaxed);
        RecordCounts {
            executions: self.count_executions(&ExecutionIndex::All),
            audit_entries: gauge(&self.gauges.audit_entries),
            webhook_attempts: gauge(&self.gauges.webhook_attempts),
            usage_rollups: gauge(&self.gauges.usage_rollups),
        }
    }

    fn close(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.flush().await?;
            self.rollups.write(&self.pool).await?;
            if let Some(conn) = self.node_lock.lock().await.take() {
                let _ = conn.close().await;
            }
            self.pool.close().await;
            Ok(())
        })
    }
}

/// Applies the migrations this database lacks, one transaction each, while
/// holding the migration lock on one connection.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    let migrated = apply_missing(&mut conn).await;
    // Unlocked whatever happened; a connection that cannot unlock is
    // closed, which releases the lock too.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        let _ = conn.detach().close().await;
    }
    migrated
}

async fn apply_missing(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS kiln_schema (
            version    bigint PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let row = sqlx::query("SELECT coalesce(max(version), 0) AS v FROM kiln_schema")
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    let at: i64 = row.try_get("v").map_err(backend)?;
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if at > newest {
        return Err(StoreError::Schema {
            found: u32::try_from(at).unwrap_or(u32::MAX),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > at) {
        let mut tx = conn.begin().await.map_err(backend)?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO kiln_schema (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database of the test process's throwaway cluster.
    fn database() -> String {
        kiln_testpg::shared().fresh_database()
    }

    async fn store() -> PgStore {
        PgStore::connect(&database()).await.unwrap()
    }

    #[tokio::test]
    async fn nodes_starting_together_migrate_once() {
        let url = database();
        let (a, b, c) = tokio::join!(
            PgStore::connect(&url),
            PgStore::connect(&url),
            PgStore::connect(&url),
        );
        let a = a.unwrap();
        let newest = MIGRATIONS.last().unwrap().0;
        assert_eq!(a.schema_version().await.unwrap(), newest);
        b.unwrap();
        c.unwrap();
        let rows = sqlx::query("SELECT count(*) AS n FROM kiln_schema")
            .fetch_one(&a.pool)
            .await
            .unwrap();
        assert_eq!(rows.get::<i64, _>("n"), newest, "each once");
        // One default organization, however many nodes made it.
        let orgs = sqlx::query("SELECT count(*) AS n FROM orgs")
            .fetch_one(&a.pool)
            .await
            .unwrap();
        assert_eq!(orgs.get::<i64, _>("n"), 1);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_kiln_is_refused() {
        let url = database();
        let store = PgStore::connect(&url).await.unwrap();
        sqlx::query("INSERT INTO kiln_schema (version) VALUES (99)")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            PgStore::connect(&url).await,
            Err(StoreError::Schema { found: 99 })
        ));
    }

    #[tokio::test]
    async fn an_audit_record_the_database_refuses_does_not_hold_back_the_others() {
        use crate::store::auth::{AuditRecord, AuthStore as _};
        let store = store().await;
        let record = |n: u8, detail: &str| AuditRecord {
            id: crate::store::testing::id_at(1_700_000_000_000, n),
            org: None,
            at: "2026-01-01T00:00:00.000Z".into(),
            action: "login".into(),
            outcome: "success".into(),
            actor_id: None,
            actor: None,
            ip: None,
            target: None,
            // jsonb refuses U+0000 in a string.
            detail: Some(detail.into()),
            request_id: None,
        };
        store.append_audit(&record(1, "a")).unwrap();
        store.append_audit(&record(2, "nul \0 inside")).unwrap();
        store.append_audit(&record(3, "b")).unwrap();
        let (page, total) = store
            .audit_page(crate::store::orgs::DEFAULT_ORG, 0, 10)
            .await
            .unwrap();
        assert_eq!(total, 2);
        assert_eq!(page[0].detail.as_deref(), Some("b"));
        // Nothing waits any more.
        assert_eq!(store.audit_page("default", 0, 10).await.unwrap().1, 2);
    }

    #[tokio::test]
    async fn audit_records_waiting_for_their_write_are_bounded() {
        use crate::store::auth::AuthStore as _;
        let store = store().await;
        let record = |n: usize| crate::store::auth::AuditRecord {
            id: format!("0190b5c4-0000-7000-8000-{n:012}"),
            org: None,
            at: "2026-01-01T00:00:00.000Z".into(),
            action: "login".into(),
            outcome: "success".into(),
            actor_id: None,
            actor: None,
            ip: None,
            target: None,
            detail: None,
            request_id: None,
        };
        for n in 0..auth::MAX_PENDING_AUDIT {
            store.append_audit(&record(n)).unwrap();
        }
        assert!(store.append_audit(&record(usize::MAX)).is_err());
        // Written, they make room again.
        let (_, total) = store.audit_page("default", 0, 1).await.unwrap();
        assert_eq!(total, auth::MAX_PENDING_AUDIT);
        store.append_audit(&record(usize::MAX)).unwrap();
    }

    macro_rules! conformance {
        ($($family:ident),*) => {$(
            #[tokio::test]
            async fn $family() {
                let store = store().await;
                crate::store::conformance::$family(&store).await;
            }
        )*};
    }

    mod conformance {
        use super::*;
        conformance!(
            orgs,
            scripts,
            executions,
            final_records,
            schedules,
            idempotency,
            webhooks,
            auth,
            script_data,
            usage
        );
    }
}

//! Durable state. Handlers and workers talk to the [`Store`] trait: sled,
//! embedded (`sled.rs` and `sled/`), by default, or PostgreSQL
//! (`postgres/`) when `store.url` names a database. One conformance suite
//! (`conformance.rs`) holds both to the same contract.

pub mod auth;
#[cfg(test)]
pub(crate) mod conformance;
mod disk_sync;
pub mod executions;
mod group_commit;
mod held;
pub mod idempotency;
mod journal;
pub mod orgs;
mod pending_usage;
mod postgres;
mod records;
pub mod schedules;
pub mod scopes;
pub mod script_data;
pub mod scripts;
pub mod shared_counts;
pub mod signals;
mod sled;
#[cfg(test)]
pub mod testing;
pub mod usage;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;

pub use self::disk_sync::{FileSyncer, Fsync};
pub use self::idempotency::{Claim, IDEMPOTENCY_TTL_MS, StoredResponse};
pub use self::postgres::{LEASE, PgStore};
pub use self::records::{
    ClampedLimit, ExecutionCode, ExecutionError, ExecutionRecord, ExecutionStatus, Language,
    LimitName, OutboundRequest, Overlap, Priority, ScheduleRecord, ScriptKind, ScriptLimits,
    ScriptRecord, ScriptStatus, Trigger, VersionRecord,
};
pub use self::signals::Signal;
pub use self::sled::SledStore;

/// Bumped when the layout changes; `open` migrates older data forward.
/// 1 → 2: each script version got a [`VersionRecord`] beside its content.
/// 2 → 3: executions got their indexes by script and by status.
/// 3 → 4: execution records leave out empty fields and hold ad-hoc code as
/// base64 (version 4 reads version 3's records as they are; version 3 could
/// not read version 4's); usage rollups, made from the records at open.
/// 4 → 5: organizations. Every record without an `org` is in the default
/// one, so only users change: their role becomes a membership of it, and
/// admins become node operators.
/// 5 → 6: an execution's large fields may be stored apart, by content
/// (`sled/contents.rs`), which version 5 would read as empty; version 6
/// reads version 5's records as they are.
/// 6 → 7: an execution of an organization but the default has two index
/// entries, as the default's do, not three: its final state's entry names
/// its organization (`sled/execution_keys.rs`); migrated in place.
/// 7 → 8: final records are journaled (`journal.rs`) and sled is flushed
/// in the background: version 7 would not replay the journal after a crash.
/// 8 → 9: execution records and usage rollups are stored packed
/// (`sled/packed.rs`), which version 8 cannot read; version 9 reads version
/// 8's JSON values as they are, so nothing is rewritten.
pub const SCHEMA_VERSION: u32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a script named {0:?} already exists")]
    NameTaken(String),
    #[error(
        "the data directory was written by schema version {found}; this build reads {SCHEMA_VERSION}"
    )]
    Schema { found: u32 },
    #[error("no such script")]
    NotFound,
    /// A caller's precondition on the current record did not hold.
    #[error("{0}")]
    Refused(String),
    #[error("storage failed: {0}")]
    Backend(String),
    /// The store did not answer (its database is down or unreachable):
    /// worth trying again later.
    #[error("the store does not answer: {0}")]
    Unavailable(String),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
    /// The caller may not change the record as it is now (not its owner).
    #[error("{0}")]
    Forbidden(String),
}

/// The smallest id a UUIDv7 made at `ms` can have: every such id below it
/// (in byte or text order) was made before `ms`.
pub(crate) fn lowest_id_at(ms: u64) -> String {
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10])
        .into_uuid()
        .to_string()
}

pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Typed access to Kiln's records: one trait per record family, and what
/// the whole database does.
pub trait Store:
    scripts::ScriptStore
    + script_data::ScriptDataStore
    + executions::ExecutionStore
    + idempotency::IdempotencyStore
    + schedules::ScheduleStore
    + auth::AuthStore
    + webhooks::WebhookStore
    + usage::UsageStore
    + orgs::OrgStore
    + Send
    + Sync
{
    /// Which store this is: `sled` or `postgres`.
    fn kind(&self) -> &'static str;
    /// This node's id in a store that nodes can share (it stamps the
    /// executions it claims); `None` for sled, which only one node opens.
    fn node(&self) -> Option<&str>;
    /// Whether the store answers now (`/readyz`, `/v1/status`).
    fn check(&self) -> FlushFuture<'_>;
    /// Sends `signal` to the other nodes sharing the store, in the order
    /// sent; never waits (a signal that finds the way full is dropped). A
    /// store with one node drops it.
    fn signal(&self, signal: Signal);
    /// The signals other nodes send from now on; `None` for a store with
    /// one node (or not yet shared).
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>>;
    /// Quota counts kept in the store, for every node that shares it
    /// (PostgreSQL, shared or not); `None` for sled, whose one node counts
    /// in memory.
    fn shared_counts(&self) -> Option<&dyn shared_counts::SharedCounts>;
    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Makes every change so far durable (a sled flush and a sync of its
    /// files: see `group_commit`). Concurrent callers share one.
    fn flush(&self) -> FlushFuture<'_>;
    /// Makes every final execution record stored so far durable, with the
    /// webhook deliveries stored with it; other changes may follow later.
    /// What an answer that reports a run's end waits for. sled's is its
    /// journal's sync (`journal.rs`); by default, [`Self::flush`].
    fn flush_finals(&self) -> FlushFuture<'_> {
        self.flush()
    }
    /// [`Self::flush_finals`] for an answer about to be sent: the final
    /// records are durable once it returns, but some may still be held in
    /// memory (readers see them) until
    /// [`executions::ExecutionStore::apply_deferred`] writes them, which
    /// the answer starts once it is sent. By default, `flush_finals`.
    fn flush_finals_deferring(&self) -> FlushFuture<'_> {
        self.flush_finals()
    }
    /// What the flushes have done since the store was opened.
    fn sync_stats(&self) -> SyncStats;
    /// How many records the families that grow with use hold, from
    /// counters kept as they are written and removed (not a scan).
    fn record_counts(&self) -> RecordCounts;
    /// Makes everything durable (held executions too, written) and notes
    /// that the store was closed, not
    /// crashed: the next open can skip the repairs a crash needs. Nothing
    /// is written after it. (sled's does its work before returning the
    /// future: call it where blocking is allowed.)
    fn close(&self) -> FlushFuture<'_>;
}

/// Records per family, for `/v1/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub executions: u64,
    pub audit_entries: u64,
    pub webhook_attempts: u64,
    pub usage_rollups: u64,
}

impl RecordCounts {
    /// Each family by the name `/v1/status` and `/metrics` give it.
    pub fn by_family(self) -> [(&'static str, u64); 4] {
        [
            ("executions", self.executions),
            ("audit_entries", self.audit_entries),
            ("webhook_attempts", self.webhook_attempts),
            ("usage_rollups", self.usage_rollups),
        ]
    }
}

/// Counters of [`Store::flush`]'s work, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Flushes that synced the store's files; one covers every change
    /// requested before it started, so fewer than flush calls under load.
    pub syncs: u64,
    /// Blob files (values sled keeps in files of their own) synced.
    pub blob_files: u64,
    /// Syncs of the journal of final records (sled's), each covering the
    /// final records stored before it started.
    pub journal_syncs: u64,
}

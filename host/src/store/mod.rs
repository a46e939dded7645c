//! Durable state. Handlers and workers talk to the [`Store`] trait; sled is
//! its one implementation today (`sled.rs`), so a replicated engine can take
//! its place later without touching them.

pub mod auth;
mod disk_sync;
mod group_commit;
mod records;
pub mod script_data;
mod sled;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;

pub use self::records::{
    ExecutionCode, ExecutionError, ExecutionRecord, ExecutionStatus, Language, Overlap, Priority,
    ScheduleRecord, ScriptKind, ScriptLimits, ScriptRecord, ScriptStatus, Trigger, VersionRecord,
};
pub use self::sled::SledStore;

/// Bumped when the layout changes; `open` migrates older data forward.
/// 1 → 2: each script version got a [`VersionRecord`] beside its content.
pub const SCHEMA_VERSION: u32 = 2;

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
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Typed access to Kiln's records.
pub trait Store:
    auth::AuthStore + webhooks::WebhookStore + script_data::ScriptDataStore + Send + Sync
{
    /// Stores a new script and its first version's content, refusing a taken name.
    fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError>;
    /// A script by id, or by name when no id matches.
    fn script(&self, id_or_name: &str) -> Result<Option<ScriptRecord>, StoreError>;
    /// The content of one version of a script.
    fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces a script with what `change` makes of the current record,
    /// atomically. When `content` is given it is stored as the new record's
    /// `version` (which `change` must have raised). A name change claims the
    /// new name. `change` may run more than once and refuses with
    /// [`StoreError::Refused`].
    fn update_script(
        &self,
        id: &str,
        change: &dyn Fn(&ScriptRecord) -> Result<ScriptRecord, StoreError>,
        content: Option<&[u8]>,
    ) -> Result<ScriptRecord, StoreError>;
    /// Deletes a script, its name and all its versions if `allow` accepts the
    /// current record. Executions are kept.
    fn delete_script(
        &self,
        id: &str,
        allow: &dyn Fn(&ScriptRecord) -> Result<(), StoreError>,
    ) -> Result<ScriptRecord, StoreError>;
    /// Every version of a script, oldest first.
    fn script_versions(&self, id: &str) -> Result<Vec<VersionRecord>, StoreError>;
    fn script_version(&self, id: &str, version: u32) -> Result<Option<VersionRecord>, StoreError>;
    /// Counts one more execution of a script.
    fn note_execution(&self, script_id: &str, at: &str) -> Result<(), StoreError>;
    /// Creates or replaces an execution record.
    fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError>;
    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Executions in the given states, oldest first (for recovery at start).
    fn executions_in(&self, states: &[ExecutionStatus])
    -> Result<Vec<ExecutionRecord>, StoreError>;
    /// Every script, in id (creation) order.
    fn scripts(&self) -> Result<Vec<ScriptRecord>, StoreError>;
    /// The executions `keep` accepts, newest first: the `take` after the first
    /// `skip`, and how many there are in all.
    fn executions_page(
        &self,
        keep: &dyn Fn(&ExecutionRecord) -> bool,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<ExecutionRecord>, usize), StoreError>;
    /// Visits every execution created at or after `since_ms` (Unix ms),
    /// oldest first, without reading older ones.
    fn visit_executions_since(
        &self,
        since_ms: u64,
        visit: &mut dyn FnMut(ExecutionRecord),
    ) -> Result<(), StoreError>;
    /// How many executions are in each state.
    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError>;
    /// Claims an idempotency key for a request whose method, path and body
    /// hash to `fingerprint`, or says what an earlier claim left.
    fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Claim, StoreError>;
    /// Ends a claim: keeps the response for replays, or (given `None`)
    /// releases the key so a retry runs again.
    fn settle_idempotency_key(
        &self,
        key: &str,
        response: Option<&StoredResponse>,
    ) -> Result<(), StoreError>;
    /// Forgets idempotency keys claimed before `before_ms`; returns how many.
    fn expire_idempotency_keys(&self, before_ms: u64) -> Result<usize, StoreError>;
    /// Stores a new schedule.
    fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError>;
    fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Every schedule, in id (creation) order.
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Replaces a schedule with what `change` makes of the current record,
    /// atomically (`change` may run more than once); `None` if there is no
    /// such schedule.
    fn update_schedule(
        &self,
        id: &str,
        change: &dyn Fn(&ScheduleRecord) -> Result<ScheduleRecord, StoreError>,
    ) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Deletes a schedule if `expect` accepts it as it is at the moment of
    /// the delete (atomically); returns it if there was one.
    fn delete_schedule(
        &self,
        id: &str,
        expect: &dyn Fn(&ScheduleRecord) -> Result<(), StoreError>,
    ) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Makes every change so far durable (a sled flush and a sync of its
    /// files: see `group_commit`). Concurrent callers share one.
    fn flush(&self) -> FlushFuture<'_>;
    /// What the flushes have done since the store was opened.
    fn sync_stats(&self) -> SyncStats;
}

/// Counters of [`Store::flush`]'s work, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Flushes that synced the store's files; one covers every change
    /// requested before it started, so fewer than flush calls under load.
    pub syncs: u64,
    /// Blob files (values sled keeps in files of their own) synced.
    pub blob_files: u64,
}

/// A response kept for replay under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What [`Store::claim_idempotency_key`] found.
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

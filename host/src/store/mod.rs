//! Durable state. Handlers and workers talk to the [`Store`] trait; sled is
//! its one implementation today (`sled.rs`), so a replicated engine can take
//! its place later without touching them.

mod records;
mod sled;

use std::future::Future;
use std::pin::Pin;

pub use self::records::{
    ExecutionError, ExecutionRecord, ExecutionStatus, Language, ScriptRecord, Trigger,
};
pub use self::sled::SledStore;

/// Bumped when a record's encoding changes incompatibly; checked at open.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a script named {0:?} already exists")]
    NameTaken(String),
    #[error(
        "the data directory was written by schema version {found}; this build reads {SCHEMA_VERSION}"
    )]
    Schema { found: u32 },
    #[error("storage failed: {0}")]
    Backend(String),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Typed access to Kiln's records.
pub trait Store: Send + Sync {
    /// Stores a new script and its first version's content, refusing a taken name.
    fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError>;
    /// A script by id, or by name when no id matches.
    fn script(&self, id_or_name: &str) -> Result<Option<ScriptRecord>, StoreError>;
    /// The content of one version of a script.
    fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError>;
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
    /// How many executions are in each state.
    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError>;
    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Makes every change so far durable. Concurrent callers share one fsync.
    fn flush(&self) -> FlushFuture<'_>;
}

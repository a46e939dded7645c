//! Execution records: one per run, keyed so that creation order is key order,
//! and found through an index (by script, by status) in O(what is read).

use std::ops::ControlFlow;

use super::{ExecutionRecord, ExecutionStatus, StoreError};

/// Which executions a walk follows: each is an index, so a walk reads only
/// the records it yields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecutionIndex {
    All,
    /// One script's executions; `None` is the default organization's
    /// ad-hoc ones (`POST /v1/execute`), `~<organization id>` another's.
    Script(Option<String>),
    Status(ExecutionStatus),
    /// One organization's executions.
    Org(String),
}

/// How far an execution's `created_at` may trail the time in its id (both
/// are taken when the record is made): walks bounded by creation time are
/// widened by this much and then compare `created_at` itself.
pub const ID_TIME_SLACK_MS: u64 = 1_000;

/// A walk over one index, within bounds on the executions' creation time.
#[derive(Debug, Clone)]
pub struct ExecutionWalk {
    pub index: ExecutionIndex,
    pub newest_first: bool,
    /// Only executions after this id in walk order (a cursor's position).
    pub after: Option<String>,
    /// Only executions created at or after this time (Unix ms).
    pub created_from_ms: Option<u64>,
    /// Only executions created before this time (Unix ms).
    pub created_until_ms: Option<u64>,
}

impl ExecutionWalk {
    pub fn new(index: ExecutionIndex, newest_first: bool) -> Self {
        Self {
            index,
            newest_first,
            after: None,
            created_from_ms: None,
            created_until_ms: None,
        }
    }
}

/// What [`ExecutionStore::delete_execution`] did.
#[derive(Debug)]
pub enum Removal {
    Removed,
    /// Queued or running executions are never removed.
    NotFinal(ExecutionStatus),
    Missing,
}

#[async_trait::async_trait]
pub trait ExecutionStore {
    /// Creates or replaces an execution record, and its index entries with
    /// it. A held execution (see [`ExecutionStore::hold_execution`]) stays
    /// held, in memory, until this writes it final.
    async fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError>;
    /// Takes a new queued execution whose client waits for its end: it is
    /// held in memory, seen by every reader, and written only when it is
    /// final or [`ExecutionStore::keep_execution`] asks (`store/held.rs`).
    /// A store that holds too much already writes it at once.
    async fn hold_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError>;
    /// Writes the execution `id` if it is held: someone is about to be told
    /// of it. Nothing for any other id.
    async fn keep_execution(&self, id: &str) -> Result<(), StoreError>;
    async fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Visits the executions `walk` selects, in its order, until `visit`
    /// breaks or they run out.
    async fn walk_executions(
        &self,
        walk: &ExecutionWalk,
        visit: &mut (dyn FnMut(ExecutionRecord) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError>;
    /// How many executions an index holds, from counters kept beside it
    /// (in memory: read where no await can be, as by `/metrics`).
    fn count_executions(&self, index: &ExecutionIndex) -> u64;
    /// The scripts that have stored executions (`None`: the default
    /// organization's ad-hoc ones; `~<organization id>`: another's, so
    /// retention keeps each organization's apart), with how many each has.
    fn executions_per_script(&self) -> Vec<(Option<String>, u64)>;
    /// Removes a final execution and its index entries, at once.
    async fn delete_execution(&self, id: &str) -> Result<Removal, StoreError>;

    /// Executions in the given states, oldest first (for recovery at start).
    async fn executions_in(
        &self,
        states: &[ExecutionStatus],
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let mut found = Vec::new();
        for status in states {
            let walk = ExecutionWalk::new(ExecutionIndex::Status(*status), false);
            self.walk_executions(&walk, &mut |record| {
                found.push(record);
                ControlFlow::Continue(())
            })
            .await?;
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// How many executions are in each state.
    fn execution_counts(&self) -> Vec<(ExecutionStatus, u64)> {
        ExecutionStatus::ALL
            .iter()
            .map(|s| (*s, self.count_executions(&ExecutionIndex::Status(*s))))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

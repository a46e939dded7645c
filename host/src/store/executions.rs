//! Execution records: one per run, keyed so that creation order is key order.

use super::{ExecutionRecord, ExecutionStatus, StoreError};

pub trait ExecutionStore {
    /// Creates or replaces an execution record.
    fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError>;
    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Executions in the given states, oldest first (for recovery at start).
    fn executions_in(&self, states: &[ExecutionStatus])
    -> Result<Vec<ExecutionRecord>, StoreError>;
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
}

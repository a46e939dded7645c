//! Counts of windowed quotas (an organization's requests per hour,
//! executions per day) that several nodes count against together: kept in
//! a store they share (PostgreSQL), taken one at a time under the limit, so
//! a quota holds across the nodes and not once per node. sled has one
//! node, which counts in memory (`quotas.rs`).

use super::StoreError;

/// What [`SharedCounts::take_use`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Counted: the uses now.
    Used(u64),
    /// At the limit already: not counted; the uses.
    Refused(u64),
    /// The window has no count yet: [`SharedCounts::start_uses`] first.
    Uncounted,
}

#[async_trait::async_trait]
pub trait SharedCounts: Send + Sync {
    /// One more use of `quota` by `org` in the window starting at
    /// `window_ms`, unless `limit` are used already.
    async fn take_use(
        &self,
        org: &str,
        quota: &str,
        window_ms: u64,
        limit: u64,
    ) -> Result<Taken, StoreError>;
    /// Starts the window's count at `used` unless another node started it
    /// first; forgets the organization's older windows of `quota`.
    async fn start_uses(
        &self,
        org: &str,
        quota: &str,
        window_ms: u64,
        used: u64,
    ) -> Result<(), StoreError>;
    /// Takes one use back (admitted, then nothing was stored of it).
    async fn give_back_use(&self, org: &str, quota: &str, window_ms: u64)
    -> Result<(), StoreError>;
    /// The uses counted in the window, if it has a count.
    async fn uses(&self, org: &str, quota: &str, window_ms: u64)
    -> Result<Option<u64>, StoreError>;
    /// Forgets every count of `org` (its quotas changed, or it is gone):
    /// the next use starts them again.
    async fn forget_uses(&self, org: &str) -> Result<(), StoreError>;
}

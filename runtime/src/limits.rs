//! Per-run resource limits and the `ResourceLimiter` that enforces the memory cap.

use std::time::Duration;

/// What one run may consume. Every field is enforced by the sandbox itself; the
/// host only chooses the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel budget (roughly one unit per WebAssembly instruction); `None` runs
    /// unmetered, still counting what was consumed.
    pub fuel: Option<u64>,
    /// Cap on the sum of all linear memories of the instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline measured from the start of instantiation.
    pub timeout: Duration,
    /// Bytes of stdout kept; the rest is dropped and the outcome flagged.
    pub stdout_bytes: usize,
    /// Bytes of stderr kept; the rest is dropped and the outcome flagged.
    pub stderr_bytes: usize,
    /// Bytes of JSON a script may return; past it the run fails with
    /// `RESULT_TOO_LARGE`.
    pub result_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: None,
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            stdout_bytes: 1 << 20,
            stderr_bytes: 1 << 20,
            result_bytes: 1 << 20,
        }
    }
}

/// Table growth beyond this many elements is refused: function tables of real
/// programs stay in the thousands, and each element costs host memory.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Core instances, tables and memories one component may create: a guest that
/// instantiates in a loop must not exhaust the shared pool.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

/// Tracks the memory of one store against its cap and remembers the peak and
/// whether the cap ever refused a request (so a later trap can be named).
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    current: u64,
    peak: u64,
    refused: Option<u64>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            current: 0,
            peak: 0,
            refused: None,
        }
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// The total the guest asked for when the cap first refused it, if ever.
    pub(crate) fn refused(&self) -> Option<u64> {
        self.refused
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether memory already granted (an instance made ahead of its run)
    /// is within `limit`.
    pub(crate) fn admits(&self, limit: u64) -> bool {
        self.current <= limit
    }

    /// Sets the cap for further growth.
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        let wanted = self.current.saturating_add(growth);
        if wanted > self.limit {
            self.refused.get_or_insert(wanted);
            return Ok(false);
        }
        self.current = wanted;
        self.peak = self.peak.max(wanted);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn growth_within_the_cap_is_granted_and_tracked() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(4 << 20, 10 << 20, None).unwrap());
        assert_eq!(limiter.peak(), 10 << 20);
        assert_eq!(limiter.refused(), None);
    }

    #[test]
    fn growth_past_the_cap_is_refused_and_remembered() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 8 << 20, None).unwrap());
        assert!(!limiter.memory_growing(8 << 20, 12 << 20, None).unwrap());
        assert_eq!(limiter.refused(), Some(12 << 20));
        assert_eq!(limiter.peak(), 8 << 20);
    }

    #[test]
    fn the_cap_counts_all_memories_together() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 6 << 20, None).unwrap());
        assert!(!limiter.memory_growing(0, 6 << 20, None).unwrap());
    }

    #[test]
    fn a_new_cap_applies_to_memory_already_granted() {
        let mut limiter = MemoryLimiter::new(u64::MAX);
        assert!(limiter.memory_growing(0, 8 << 20, None).unwrap());
        assert!(!limiter.admits(4 << 20));
        assert!(limiter.admits(10 << 20));
        limiter.set_limit(10 << 20);
        assert!(!limiter.memory_growing(8 << 20, 12 << 20, None).unwrap());
        assert_eq!(limiter.refused(), Some(12 << 20));
    }

    #[test]
    fn huge_tables_are_refused() {
        let mut limiter = MemoryLimiter::new(1);
        assert!(limiter.table_growing(0, 1000, None).unwrap());
        assert!(
            !limiter
                .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
    }
}

//! Executions held in memory, not written: the queued and running states of
//! a run whose client waits for its end (`?wait=true`). Nobody has been told
//! of such a run, so a crash that loses it loses nothing anyone can ask for;
//! writing those states would cost two record writes per run and tell no
//! one anything. A held record is written when it becomes final, or as soon
//! as someone is told of it (`ExecutionStore::keep_execution`: a wait that
//! ran out, a GET, a listing, a closing store). Readers see held records
//! like stored ones.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::ExecutionRecord;

/// The most a store holds in memory, by the records' approximate size;
/// past it, runs are written as if no one waited. The count is bounded too:
/// each held record is queued or running, so the queue's capacity and the
/// workers bound them.
pub const HELD_BYTES: usize = 64 << 20;

#[derive(Default)]
pub struct HeldExecutions {
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    records: HashMap<String, (ExecutionRecord, usize)>,
    bytes: usize,
}

/// What a record costs to hold, roughly: its variable parts (a final
/// one's outputs too) and a fixed part for the rest.
fn approx_bytes(record: &ExecutionRecord) -> usize {
    let env: usize = record.env.iter().map(|(k, v)| k.len() + v.len()).sum();
    1024 + record.code.as_ref().map_or(0, Vec::len)
        + record.input.as_ref().map_or(0, String::len)
        + json_len(&record.parameters)
        + env
        + record.stdout.len()
        + record.stderr.len()
        + record.result.as_ref().map_or(0, json_len)
        + record.error.as_ref().map_or(0, json_len)
        + 256 * record.http_requests.len()
}

/// The length of `value` as JSON, counted without building it.
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A value that does not serialize is not stored either.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl HeldExecutions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds a new record; `false` (and nothing held) when that would pass
    /// [`HELD_BYTES`].
    pub fn hold(&self, record: &ExecutionRecord) -> bool {
        let size = approx_bytes(record);
        let mut held = self.lock();
        if held.bytes + size > HELD_BYTES {
            return false;
        }
        held.bytes += size;
        if let Some((_, old)) = held
            .records
            .insert(record.id.clone(), (record.clone(), size))
        {
            held.bytes -= old;
        }
        true
    }

    /// Replaces the held record of the same id; `false` if none is held.
    pub fn replace(&self, record: &ExecutionRecord) -> bool {
        self.swap_in(record, usize::MAX)
    }

    /// Replaces the held record of the same id with its final one, kept
    /// until it is written (`ExecutionStore::apply_deferred`); `false`,
    /// and nothing changed, if none is held or that would pass
    /// [`HELD_BYTES`].
    pub fn replace_within_bound(&self, record: &ExecutionRecord) -> bool {
        self.swap_in(record, HELD_BYTES)
    }

    /// Replaces the held record of the same id if the held bytes stay
    /// within `bound`, counting it at its new size.
    fn swap_in(&self, record: &ExecutionRecord, bound: usize) -> bool {
        let size = approx_bytes(record);
        let mut held = self.lock();
        let bytes = held.bytes;
        let Some((slot, old)) = held.records.get_mut(&record.id) else {
            return false;
        };
        let after = bytes - *old + size;
        if after > bound {
            return false;
        }
        slot.clone_from(record);
        *old = size;
        held.bytes = after;
        true
    }

    /// What `read` makes of the held record `id`, without a copy of it.
    pub fn read<T>(&self, id: &str, read: impl FnOnce(&ExecutionRecord) -> T) -> Option<T> {
        self.lock().records.get(id).map(|(r, _)| read(r))
    }

    pub fn get(&self, id: &str) -> Option<ExecutionRecord> {
        self.lock().records.get(id).map(|(r, _)| r.clone())
    }

    /// Stops holding a record (it was written); the record.
    pub fn release(&self, id: &str) -> Option<ExecutionRecord> {
        let mut held = self.lock();
        let (record, size) = held.records.remove(id)?;
        held.bytes -= size;
        Some(record)
    }

    /// The ids of every held record.
    pub fn ids(&self) -> Vec<String> {
        self.lock().records.keys().cloned().collect()
    }

    /// The ids of the held records `keep` selects, in id order (creation
    /// order); the records themselves are read as a walk reaches them.
    pub fn matching(&self, keep: impl Fn(&ExecutionRecord) -> bool) -> Vec<String> {
        let mut found: Vec<String> = self
            .lock()
            .records
            .values()
            .filter(|(r, _)| keep(r))
            .map(|(r, _)| r.id.clone())
            .collect();
        found.sort();
        found
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExecutionStatus;
    use crate::store::testing::{execution, id_at};

    #[test]
    fn holding_stops_at_the_byte_bound_and_release_gives_the_bytes_back() {
        let held = HeldExecutions::default();
        let mut big = execution(&id_at(1, 0), None, ExecutionStatus::Queued);
        big.code = Some(vec![b'x'; HELD_BYTES / 2]);
        assert!(held.hold(&big));
        let mut second = big.clone();
        second.id = id_at(2, 0);
        assert!(!held.hold(&second), "past the bound");
        assert!(held.get(&second.id).is_none());
        let mut running = big.clone();
        running.status = ExecutionStatus::Running;
        assert!(held.replace(&running));
        assert_eq!(
            held.get(&big.id).map(|r| r.status),
            Some(ExecutionStatus::Running)
        );
        assert!(!held.replace(&second), "only a held id is replaced");
        assert!(held.release(&big.id).is_some());
        assert_eq!(held.bytes(), 0);
        assert!(held.hold(&second));
    }

    #[test]
    fn a_final_record_is_held_only_within_the_bound_counting_its_outputs() {
        let held = HeldExecutions::default();
        let queued = execution(&id_at(1, 0), None, ExecutionStatus::Queued);
        assert!(held.hold(&queued));
        let mut done = queued.clone();
        done.status = ExecutionStatus::Completed;
        done.stdout = "x".repeat(HELD_BYTES);
        assert!(!held.replace_within_bound(&done), "past the bound");
        assert_eq!(
            held.get(&queued.id).map(|r| r.status),
            Some(ExecutionStatus::Queued)
        );
        done.stdout = "x".repeat(1000);
        done.result = Some(serde_json::json!("y".repeat(2000)));
        let before = held.bytes();
        assert!(held.replace_within_bound(&done));
        assert_eq!(held.bytes(), before + 1000 + 2002);
        let mut other = done.clone();
        other.id = id_at(2, 0);
        assert!(!held.replace_within_bound(&other), "only a held id");
    }

    #[test]
    fn a_replaced_record_is_counted_at_its_new_size() {
        let held = HeldExecutions::default();
        let small = execution(&id_at(1, 0), None, ExecutionStatus::Queued);
        assert!(held.hold(&small));
        let before = held.bytes();
        let mut bigger = small.clone();
        bigger.input = Some("x".repeat(10_000));
        assert!(held.replace(&bigger));
        assert_eq!(held.bytes(), before + 10_000);
        assert!(held.release(&small.id).is_some());
        assert_eq!(held.bytes(), 0);
    }
}

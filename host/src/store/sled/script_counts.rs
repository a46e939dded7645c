//! Runs counted on their scripts and not yet written. Counting each run
//! on its script's record at its end was a read, a decode, an encode and a
//! compare-and-swap per run; now a run adds to a map, readers add what the
//! map holds to what they read, and every full flush writes it (one
//! update per script that ran since the last). A crash loses the counts
//! since the last flush, as it lost sled's unflushed writes before: the
//! runs' own records are what is durable.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::update;
use crate::store::ScriptRecord;

/// Script id → runs not yet written and the latest one's end. Bounded by
/// the scripts that ran since the last flush.
#[derive(Default)]
pub(super) struct PendingCounts(Mutex<HashMap<String, (u64, String)>>);

impl PendingCounts {
    /// Held while a reader reads a script and adds to it, and while a
    /// flush moves the counts: a reader never sees a count in both places
    /// or in neither.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, String)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A run of `script_id` that ended at `at`.
    pub(super) fn add(&self, script_id: &str, at: &str) {
        let mut pending = self.lock();
        match pending.get_mut(script_id) {
            Some((runs, latest)) => {
                *runs += 1;
                if at > latest.as_str() {
                    at.clone_into(latest);
                }
            }
            None => {
                pending.insert(script_id.to_owned(), (1, at.to_owned()));
            }
        }
    }

    /// Writes every pending count into its script's record (a script
    /// deleted meanwhile stays deleted). A count that cannot be written is
    /// logged and dropped: a statistic does not fail the flush it rides on.
    pub(super) fn write(&self, scripts: &sled::Tree) {
        let mut pending = self.lock();
        for (id, (runs, latest)) in pending.drain() {
            let written = update(scripts, id.as_bytes(), |script: &ScriptRecord| {
                let mut script = script.clone();
                add_to(&mut script, runs, &latest);
                Ok(script)
            });
            if let Err(e) = written {
                tracing::error!(script = %id, runs, error = %e, "cannot count runs on a script");
            }
        }
    }
}

/// Adds what `pending` holds for `script` to it.
pub(super) fn merged(
    pending: &HashMap<String, (u64, String)>,
    mut script: ScriptRecord,
) -> ScriptRecord {
    if let Some((runs, latest)) = pending.get(&script.id) {
        add_to(&mut script, *runs, latest);
    }
    script
}

fn add_to(script: &mut ScriptRecord, runs: u64, latest: &str) {
    script.execution_count += runs;
    if script
        .last_executed_at
        .as_deref()
        .is_none_or(|last| latest > last)
    {
        script.last_executed_at = Some(latest.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::script;

    #[test]
    fn counts_add_up_and_a_write_moves_them_into_the_records() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let scripts = db.open_tree("scripts").unwrap();
        let a = script("a", "first", 1);
        super::super::put(&scripts, b"a", &a).unwrap();
        let pending = PendingCounts::default();
        pending.add("a", "2026-01-01T00:00:02Z");
        pending.add("a", "2026-01-01T00:00:01Z");
        pending.add("gone", "2026-01-01T00:00:03Z");
        // A record that does not decode: its count is dropped, the others
        // are written.
        scripts.insert(b"broken", b"not json".as_slice()).unwrap();
        pending.add("broken", "2026-01-01T00:00:03Z");
        let read = merged(&pending.lock(), a.clone());
        assert_eq!(read.execution_count, 2);
        assert_eq!(
            read.last_executed_at.as_deref(),
            Some("2026-01-01T00:00:02Z")
        );
        pending.write(&scripts);
        assert!(pending.lock().is_empty());
        let stored: ScriptRecord =
            super::super::decode(&scripts.get(b"a").unwrap().unwrap()).unwrap();
        assert_eq!(merged(&pending.lock(), stored), read);
        assert!(
            scripts.get(b"gone").unwrap().is_none(),
            "a deleted script stays deleted"
        );
    }
}

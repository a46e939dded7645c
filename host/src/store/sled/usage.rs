//! The sled side of [`UsageStore`]: the `usage` tree, `<hour> 0x00 <script
//! id>` → a [`UsageRollup`] (an empty script id: ad-hoc runs), hour-major so
//! a period is one key range. An execution that becomes final is added to a
//! rollup in memory; every flush first merges those into the tree, so a
//! rollup is written once per flush and hour and script, not once per
//! execution, and is as durable as the records it counts (a crash loses
//! only what the records it counts had not flushed either, give or take
//! the writes sled made on its own meanwhile).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{SledStore, backend, decode, encode};
use crate::store::usage::{UsageRollup, UsageRow, UsageStore, hour_of};
use crate::store::{ExecutionRecord, StoreError};

type Key = (String, Option<String>);

/// Rollup changes not yet in the tree. The map is bounded by the hours and
/// scripts of what ended since the last flush (each flush empties it).
#[derive(Default)]
pub(super) struct PendingUsage {
    changes: Mutex<HashMap<Key, UsageRollup>>,
    /// Held while changes move into the tree and while a reader merges
    /// both, so a reader never sees a change twice or not at all.
    moving: Mutex<()>,
}

impl PendingUsage {
    /// Counts a record that just became final.
    pub(super) fn add(&self, record: &ExecutionRecord) {
        let key = (
            hour_of(&record.created_at).to_owned(),
            record.script_id.clone(),
        );
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .add(record);
    }

    fn moving(&self) -> MutexGuard<'_, ()> {
        self.moving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> HashMap<Key, UsageRollup> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn key_of(hour: &str, script: Option<&str>) -> Vec<u8> {
    [hour.as_bytes(), &[0], script.unwrap_or("").as_bytes()].concat()
}

fn row_of(key: &[u8], usage: UsageRollup) -> Option<UsageRow> {
    let split = key.iter().position(|b| *b == 0)?;
    let script = String::from_utf8_lossy(&key[split + 1..]).into_owned();
    Some(UsageRow {
        hour: String::from_utf8_lossy(&key[..split]).into_owned(),
        script_id: (!script.is_empty()).then_some(script),
        usage,
    })
}

/// Merges `changes` into `tree`.
fn merge_into(tree: &sled::Tree, changes: HashMap<Key, UsageRollup>) -> Result<(), StoreError> {
    for ((hour, script), change) in changes {
        let key = key_of(&hour, script.as_deref());
        let mut usage: UsageRollup = match tree.get(&key).map_err(backend)? {
            Some(bytes) => decode(&bytes)?,
            None => UsageRollup::default(),
        };
        usage.merge(&change);
        tree.insert(key, encode(&usage)?).map_err(backend)?;
    }
    Ok(())
}

/// Rolls up every final record of `executions` into `usage`: what a store
/// of schema 3, which had no rollups, needs once.
pub(super) fn rollup_all(executions: &sled::Tree, usage: &sled::Tree) -> Result<(), StoreError> {
    let pending = PendingUsage::default();
    for entry in executions.range(super::executions::RECORDS) {
        let (_, bytes) = entry.map_err(backend)?;
        if let Ok(record) = decode::<ExecutionRecord>(&bytes)
            && record.status.is_final()
        {
            pending.add(&record);
        }
    }
    merge_into(usage, pending.take())
}

impl SledStore {
    /// Moves the rollup changes into the tree (before a flush).
    pub(super) fn write_usage(&self) -> Result<(), StoreError> {
        let _moving = self.pending_usage.moving();
        let changes = self.pending_usage.take();
        if changes.is_empty() {
            return Ok(());
        }
        merge_into(&self.usage, changes)
    }
}

impl UsageStore for SledStore {
    fn usage(
        &self,
        from_hour: &str,
        to_hour: &str,
        script: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let _moving = self.pending_usage.moving();
        let mut rows: Vec<UsageRow> = Vec::new();
        let end = [to_hour.as_bytes(), &[1]].concat();
        for entry in self.usage.range(from_hour.as_bytes()..end.as_slice()) {
            let (key, bytes) = entry.map_err(backend)?;
            let Some(row) = row_of(&key, decode(&bytes)?) else {
                continue;
            };
            if script.is_none_or(|s| row.script_id.as_deref() == Some(s)) {
                rows.push(row);
            }
        }
        let changes = self
            .pending_usage
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((hour, script_id), change) in changes {
            let wanted = (from_hour..=to_hour).contains(&hour.as_str())
                && script.is_none_or(|s| script_id.as_deref() == Some(s));
            if !wanted {
                continue;
            }
            match rows
                .iter_mut()
                .find(|r| r.hour == hour && r.script_id == script_id)
            {
                Some(row) => row.usage.merge(&change),
                None => rows.push(UsageRow {
                    hour,
                    script_id,
                    usage: change,
                }),
            }
        }
        rows.sort_by(|a, b| (&a.hour, &a.script_id).cmp(&(&b.hour, &b.script_id)));
        Ok(rows)
    }

    fn remove_usage_before(&self, hour: &str, limit: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.usage.range(..hour.as_bytes()).take(limit) {
            self.usage
                .remove(entry.map_err(backend)?.0)
                .map_err(backend)?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TEST_CACHE_BYTES, reopen};
    use super::*;
    use crate::store::executions::ExecutionStore;
    use crate::store::testing::{execution, id_at};
    use crate::store::{ExecutionStatus, Store};

    #[tokio::test]
    async fn finals_are_rolled_up_once_per_execution_and_survive_a_flush_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (a, b, c) = (id_at(1_000, 0), id_at(2_000, 0), id_at(3_000, 0));
        let mut first = execution(&a, Some("s"), ExecutionStatus::Queued);
        store.hold_execution(&first).unwrap();
        first.status = ExecutionStatus::Completed;
        first.duration_ms = Some(12);
        first.fuel_consumed = Some(100);
        store.put_execution(&first).unwrap();
        // A final record written again is not counted again.
        store.put_execution(&first).unwrap();
        store
            .put_execution(&execution(&b, Some("s"), ExecutionStatus::Failed))
            .unwrap();
        store
            .put_execution(&execution(&c, None, ExecutionStatus::Running))
            .unwrap();
        let hour = hour_of(&first.created_at).to_owned();
        let rows = store.usage(&hour, &hour, None).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].script_id.as_deref(), Some("s"));
        assert_eq!(rows[0].usage.executions(), 2);
        assert_eq!(rows[0].usage.failures(), 1);
        assert_eq!(rows[0].usage.fuel_total, 100);
        assert_eq!(rows[0].usage.durations.max(), Some(12));

        store.flush().await.unwrap();
        store
            .put_execution(&execution(&c, None, ExecutionStatus::Completed))
            .unwrap();
        let rows = store.usage(&hour, &hour, None).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(store.usage(&hour, &hour, Some("s")).unwrap().len(), 1);
        assert!(
            store
                .usage("2000-01-01T00", "2000-01-01T23", None)
                .unwrap()
                .is_empty()
        );
        store.close().unwrap();
        drop(store);

        let store = reopen(dir.path()).unwrap();
        let rows = store.usage(&hour, &hour, None).unwrap();
        let total: u64 = rows.iter().map(|r| r.usage.executions()).sum();
        assert_eq!(total, 3);
        assert_eq!(store.remove_usage_before("9999", 10).unwrap(), 2);
        assert!(store.usage(&hour, &hour, None).unwrap().is_empty());
    }
}

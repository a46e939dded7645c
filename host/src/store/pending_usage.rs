//! Usage rollup changes a store has not written yet, shared by both stores:
//! an execution that becomes final is added to its four rows (hour and day,
//! in total and for its script) in memory, and a flush merges them into the
//! stored rows, so a row is written once per flush, not once per execution.
//! Readers merge what is pending into what they read ([`merge_into_rows`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::ExecutionRecord;
use super::usage::{Grain, Scope, UsageRollup, UsageRow};

/// The kind of row, by grain and whether it is one script's.
pub(crate) fn kind(grain: Grain, per_script: bool) -> u8 {
    match (grain, per_script) {
        (Grain::Hour, false) => b'A',
        (Grain::Hour, true) => b'H',
        (Grain::Day, false) => b'E',
        (Grain::Day, true) => b'D',
    }
}

/// A row: kind, bucket, organization (`None`: the default), script
/// (`None` for totals and ad-hoc runs).
pub(crate) type RowKey = (u8, String, Option<String>, Option<String>);

/// Rollup changes not yet stored. The map is bounded by the buckets and
/// scripts of what ended since the last flush (each flush empties it).
#[derive(Default)]
pub(crate) struct PendingUsage {
    changes: Mutex<HashMap<RowKey, UsageRollup>>,
}

impl PendingUsage {
    fn changes(&self) -> std::sync::MutexGuard<'_, HashMap<RowKey, UsageRollup>> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a record that just became final, in each of its four rows.
    pub(crate) fn add(&self, record: &ExecutionRecord) {
        let mut changes = self.changes();
        for grain in Grain::ALL {
            let bucket = grain.bucket(&record.created_at);
            for per_script in [false, true] {
                let script = per_script.then(|| record.script_id.clone()).flatten();
                let key = (
                    kind(grain, per_script),
                    bucket.to_owned(),
                    record.org.clone(),
                    script,
                );
                changes.entry(key).or_default().add(record);
            }
        }
    }

    /// Takes every change, for a flush to write.
    pub(crate) fn take(&self) -> HashMap<RowKey, UsageRollup> {
        std::mem::take(&mut *self.changes())
    }

    /// Puts back changes a flush could not write.
    pub(crate) fn restore(&self, changes: HashMap<RowKey, UsageRollup>) {
        let mut pending = self.changes();
        for (key, change) in changes {
            pending.entry(key).or_default().merge(&change);
        }
    }

    pub(crate) fn snapshot(&self) -> HashMap<RowKey, UsageRollup> {
        self.changes().clone()
    }
}

/// What a read of `scope` at `grain` between buckets `first` and `last`
/// (inclusive) selects: its row kind and organization key.
pub(crate) fn selection(grain: Grain, scope: Scope<'_>) -> (u8, Option<String>) {
    let (org, per_script) = match scope {
        Scope::Total(org) => (org, false),
        Scope::PerScript(org) | Scope::Script(org, _) => (org, true),
    };
    (kind(grain, per_script), super::orgs::org_field(org))
}

/// Adds the pending changes of `snapshot` that `scope` selects to `rows`
/// (read from the store), then sorts them by bucket and script.
pub(crate) fn merge_into_rows(
    rows: &mut Vec<UsageRow>,
    snapshot: HashMap<RowKey, UsageRollup>,
    grain: Grain,
    (first, last): (&str, &str),
    scope: Scope<'_>,
) {
    let (kind, org) = selection(grain, scope);
    for ((row_kind, bucket, row_org, script_id), change) in snapshot {
        let wanted = row_kind == kind
            && row_org == org
            && (first..=last).contains(&bucket.as_str())
            && match scope {
                Scope::Script(_, script) => script_id.as_deref() == script,
                Scope::Total(_) | Scope::PerScript(_) => true,
            };
        if !wanted {
            continue;
        }
        match rows
            .iter_mut()
            .find(|r| r.bucket == bucket && r.script_id == script_id)
        {
            Some(row) => row.usage.merge(&change),
            None => rows.push(UsageRow {
                bucket,
                script_id,
                usage: change,
            }),
        }
    }
    rows.sort_by(|a, b| (&a.bucket, &a.script_id).cmp(&(&b.bucket, &b.script_id)));
}

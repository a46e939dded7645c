//! The sled side of [`UsageStore`]: the `usage` tree, `<tag> <bucket> 0x00
//! <organization> <script id>` → a [`UsageRollup`], the tag one of four
//! kinds of row: hourly and daily, each for an organization's executions
//! together (no script id) and for each script (an empty id: ad-hoc runs).
//! The organization is empty for the default one (so rows from before
//! organizations are its rows) and `~<id>/` for the others. Bucket-major, so a period of one
//! kind is one key range. An execution that becomes final is added to its
//! four rows in memory; every flush first merges those into the tree, so a
//! row is written once per flush, not once per execution, and is as
//! durable as the records it counts (a crash loses only what the records it
//! counts had not flushed either, give or take the writes sled made on its
//! own meanwhile).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::packed::{RECORD, ROLLUP};
use super::{SledStore, backend, encode};
use crate::store::pending_usage::{PendingUsage, RowKey as Key, kind, merge_into_rows, selection};
use crate::store::usage::{Grain, Scope, UsageRollup, UsageRow, UsageStore};
use crate::store::{ExecutionRecord, StoreError};

fn encode_key((tag, bucket, org, script): &Key) -> Vec<u8> {
    let org = org.as_deref().map(|org| format!("~{org}/"));
    [
        &[*tag][..],
        bucket.as_bytes(),
        &[0],
        org.as_deref().unwrap_or("").as_bytes(),
        script.as_deref().unwrap_or("").as_bytes(),
    ]
    .concat()
}

/// The bucket, organization and script of a stored key.
fn decode_key(key: &[u8]) -> Option<(String, Option<String>, Option<String>)> {
    let split = key.iter().position(|b| *b == 0)?;
    let rest = String::from_utf8_lossy(&key[split + 1..]).into_owned();
    let (org, script) = match rest.strip_prefix('~').and_then(|r| r.split_once('/')) {
        Some((org, script)) => (Some(org.to_owned()), script.to_owned()),
        None => (None, rest),
    };
    Some((
        String::from_utf8_lossy(key.get(1..split)?).into_owned(),
        org,
        (!script.is_empty()).then_some(script),
    ))
}

/// The pending rollups, and the lock held while they move into the tree
/// and while a reader merges both, so a reader never sees a change twice or
/// not at all.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) usage: PendingUsage,
    moving: Mutex<()>,
}

impl Pending {
    fn moving(&self) -> MutexGuard<'_, ()> {
        self.moving.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Merges `changes` into `tree`; how many rows are new.
fn merge_into(tree: &sled::Tree, changes: HashMap<Key, UsageRollup>) -> Result<usize, StoreError> {
    let mut new_rows = 0;
    for (key, change) in changes {
        let key = encode_key(&key);
        let mut usage: UsageRollup = match tree.get(&key).map_err(backend)? {
            Some(bytes) => ROLLUP.decode(&bytes)?,
            None => {
                new_rows += 1;
                UsageRollup::default()
            }
        };
        usage.merge(&change);
        tree.insert(key, ROLLUP.pack(encode(&usage)?))
            .map_err(backend)?;
    }
    Ok(new_rows)
}

/// Rolls up every final record of `executions` into `usage`: what a store
/// of schema 3, which had no rollups, needs once.
pub(super) fn rollup_all(executions: &sled::Tree, usage: &sled::Tree) -> Result<(), StoreError> {
    let pending = PendingUsage::default();
    for entry in executions.range(super::execution_keys::RECORDS) {
        let (_, bytes) = entry.map_err(backend)?;
        if let Ok(record) = RECORD.decode::<ExecutionRecord>(&bytes)
            && record.status.is_final()
        {
            pending.add(&record);
        }
    }
    merge_into(usage, pending.take()).map(|_| ())
}

/// Moves the rollup changes into the tree (before a flush).
pub(super) fn write(
    pending: &Pending,
    tree: &sled::Tree,
    counted: &super::Counted,
) -> Result<(), StoreError> {
    let _moving = pending.moving();
    let changes = pending.usage.take();
    if changes.is_empty() {
        return Ok(());
    }
    let new_rows = merge_into(tree, changes)?;
    super::Counted::add(&counted.usage, new_rows);
    Ok(())
}

#[async_trait::async_trait]
impl UsageStore for SledStore {
    async fn usage(
        &self,
        grain: Grain,
        from_ms: u64,
        to_ms: u64,
        scope: Scope<'_>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let (first, last) = (grain.bucket_at(from_ms), grain.bucket_at(to_ms));
        let (tag, org) = selection(grain, scope);
        // A final record held since it was journaled is rolled up when it is
        // written: written now, so every answered run is counted.
        self.apply_deferred_logged();
        let _moving = self.pending_usage.moving();
        let mut rows: Vec<UsageRow> = Vec::new();
        let mut push = |key: &[u8], bytes: &[u8]| -> Result<(), StoreError> {
            if let Some((bucket, row_org, script_id)) = decode_key(key)
                && row_org == org
            {
                rows.push(UsageRow {
                    bucket,
                    script_id,
                    usage: ROLLUP.decode(bytes)?,
                });
            }
            Ok(())
        };
        let point = match scope {
            Scope::Script(_, script) => Some(script),
            Scope::Total(_) => Some(None),
            Scope::PerScript(_) => None,
        };
        if let Some(script) = point {
            // One point read per bucket, not the range of every script's
            // (or every organization's).
            let mut at = from_ms - from_ms % grain.millis();
            while at <= to_ms {
                let key = (
                    tag,
                    grain.bucket_at(at),
                    org.clone(),
                    script.map(str::to_owned),
                );
                let key = encode_key(&key);
                if let Some(bytes) = self.usage.get(&key).map_err(backend)? {
                    push(&key, &bytes)?;
                }
                at += grain.millis();
            }
        } else {
            let start = [&[tag][..], first.as_bytes()].concat();
            let end = [&[tag][..], last.as_bytes(), &[1]].concat();
            for entry in self.usage.range(start..end) {
                let (key, bytes) = entry.map_err(backend)?;
                push(&key, &bytes)?;
            }
        }
        merge_into_rows(
            &mut rows,
            self.pending_usage.usage.snapshot(),
            grain,
            (&first, &last),
            scope,
        );
        Ok(rows)
    }

    async fn remove_usage_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        for grain in Grain::ALL {
            // The bucket `before_ms` falls in has not ended: kept.
            let bucket = grain.bucket_at(before_ms);
            for per_script in [false, true] {
                let tag = kind(grain, per_script);
                let end = [&[tag][..], bucket.as_bytes()].concat();
                for entry in self.usage.range([tag].as_slice()..end.as_slice()) {
                    if removed == limit {
                        super::Counted::remove(&self.counted.usage, removed);
                        return Ok(removed);
                    }
                    self.usage
                        .remove(entry.map_err(backend)?.0)
                        .map_err(backend)?;
                    removed += 1;
                }
            }
        }
        super::Counted::remove(&self.counted.usage, removed);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TEST_CACHE_BYTES, reopen};
    use super::*;
    use crate::store::executions::ExecutionStore;
    use crate::store::orgs::DEFAULT_ORG;
    use crate::store::testing::{execution, id_at};
    use crate::store::{ExecutionStatus, Store};

    #[tokio::test]
    async fn finals_are_rolled_up_once_by_hour_and_day_in_total_and_per_script() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let at = 1_000_000_000_000; // 2001-09-09T01:46:40Z
        let (a, b, c) = (id_at(at, 0), id_at(at + 1, 0), id_at(at + 2, 0));
        let mut first = execution(&a, Some("s"), ExecutionStatus::Queued);
        store.hold_execution(&first).await.unwrap();
        first.status = ExecutionStatus::Completed;
        first.duration_ms = Some(12);
        first.fuel_consumed = Some(100);
        store.put_execution(&first).await.unwrap();
        // A final record written again is not counted again.
        store.put_execution(&first).await.unwrap();
        store
            .put_execution(&execution(&b, Some("s"), ExecutionStatus::Failed))
            .await
            .unwrap();
        store
            .put_execution(&execution(&c, None, ExecutionStatus::Running))
            .await
            .unwrap();
        for grain in Grain::ALL {
            let rows = store
                .usage(grain, at, at, Scope::Total(DEFAULT_ORG))
                .await
                .unwrap();
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0].usage.executions(), 2);
            assert_eq!(rows[0].usage.failures(), 1);
            assert_eq!(rows[0].usage.fuel_total, 100);
            assert_eq!(rows[0].usage.durations.max(), Some(12));
        }
        assert_eq!(
            store
                .usage(Grain::Day, at, at, Scope::Total(DEFAULT_ORG))
                .await
                .unwrap()[0]
                .bucket,
            "2001-09-09"
        );

        store.flush().await.unwrap();
        store
            .put_execution(&execution(&c, None, ExecutionStatus::Completed))
            .await
            .unwrap();
        let per_script = store
            .usage(Grain::Hour, at, at, Scope::PerScript(DEFAULT_ORG))
            .await
            .unwrap();
        assert_eq!(per_script.len(), 2, "the script's and the ad-hoc runs'");
        let ad_hoc = store
            .usage(
                Grain::Day,
                at - 3 * 86_400_000,
                at,
                Scope::Script(DEFAULT_ORG, None),
            )
            .await
            .unwrap();
        assert_eq!(ad_hoc.len(), 1);
        assert_eq!(ad_hoc[0].usage.executions(), 1);
        let earlier = store
            .usage(
                Grain::Hour,
                at - 7_200_000,
                at - 3_600_000,
                Scope::Total(DEFAULT_ORG),
            )
            .await;
        assert!(earlier.unwrap().is_empty());
        store.close().await.unwrap();
        drop(store);

        let store = reopen(dir.path()).unwrap();
        let rows = store
            .usage(Grain::Hour, at, at, Scope::Total(DEFAULT_ORG))
            .await
            .unwrap();
        assert_eq!(rows[0].usage.executions(), 3);
        // Four kinds of row; the ad-hoc run adds a per-script row of each grain.
        assert_eq!(store.record_counts().usage_rollups, 6, "counted at open");
        // Only buckets that have ended go: this hour's rows stay until it has.
        assert_eq!(store.remove_usage_before(at, 100).await.unwrap(), 0);
        assert_eq!(
            store.remove_usage_before(at + 86_400_000, 2).await.unwrap(),
            2
        );
        assert_eq!(
            store
                .remove_usage_before(at + 86_400_000, 100)
                .await
                .unwrap(),
            4
        );
        assert_eq!(store.record_counts().usage_rollups, 0);
        assert!(
            store
                .usage(Grain::Day, at, at, Scope::PerScript(DEFAULT_ORG))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn each_organization_has_rows_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let at = 1_000_000_000_000;
        let mut theirs = execution(&id_at(at, 0), Some("s2"), ExecutionStatus::Completed);
        theirs.org = Some("acme".into());
        store.put_execution(&theirs).await.unwrap();
        let mut ad_hoc = execution(&id_at(at, 1), None, ExecutionStatus::Completed);
        ad_hoc.org = Some("acme".into());
        store.put_execution(&ad_hoc).await.unwrap();
        store
            .put_execution(&execution(
                &id_at(at, 2),
                Some("s1"),
                ExecutionStatus::Failed,
            ))
            .await
            .unwrap();
        write(&store.pending_usage, &store.usage, &store.counted).unwrap();
        let total = async |org| {
            store
                .usage(Grain::Day, at, at, Scope::Total(org))
                .await
                .unwrap()
        };
        assert_eq!(total("acme").await[0].usage.executions(), 2);
        assert_eq!(total(DEFAULT_ORG).await[0].usage.executions(), 1);
        assert!(total("other").await.is_empty());
        let scripts = async |org| -> Vec<Option<String>> {
            store
                .usage(Grain::Hour, at, at, Scope::PerScript(org))
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.script_id)
                .collect()
        };
        assert_eq!(scripts("acme").await, [None, Some("s2".to_owned())]);
        assert_eq!(scripts(DEFAULT_ORG).await, [Some("s1".to_owned())]);
        let one = store
            .usage(Grain::Hour, at, at, Scope::Script("acme", None))
            .await
            .unwrap();
        assert_eq!(one[0].usage.executions(), 1);
        assert!(
            store
                .usage(Grain::Hour, at, at, Scope::Script(DEFAULT_ORG, Some("s2")))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

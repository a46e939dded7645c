//! Final records through the journal (`store/journal.rs`): each write of a
//! final record, and each set of webhook deliveries an end stores, is
//! appended to it after its writes to sled; an answer waits for the
//! journal's sync, not for a flush of sled. `open` replays the entries past
//! what the last full flush covered: a record sled lost is written again
//! (its usage rollups and counts with it), a delivery the outbox lost is
//! put back. Replaying twice changes nothing.
//!
//! What a replay cannot tell: a record deleted within the second between
//! its end and the next full flush, by retention's sweeper (which does not
//! flush), comes back after a crash, and is swept again. A delete through
//! the API flushes before it answers, so it stays.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{SledStore, backend, packed};
use crate::store::executions::Indexed;
use crate::store::journal::{Found, Reserved, Synced};
use crate::store::webhooks::DeliveryRecord;
use crate::store::{ExecutionRecord, FlushFuture, Store as _, StoreError};

#[derive(Serialize)]
enum EntryRef<'a> {
    Final(&'a ExecutionRecord),
    Deliveries(&'a [DeliveryRecord]),
}

#[derive(Deserialize)]
enum Entry {
    Final(Box<ExecutionRecord>),
    Deliveries(Vec<DeliveryRecord>),
}

/// An entry's payload; `None` (logged) leaves it to a full flush.
fn payload(entry: &EntryRef<'_>) -> Option<Vec<u8>> {
    serde_json::to_vec(entry)
        .inspect_err(|e| {
            tracing::error!(error = %e, "cannot journal a final record; flushing the store instead");
        })
        .ok()
}

impl SledStore {
    /// The journal entry of a final record.
    pub(super) fn journal_payload(&self, record: &ExecutionRecord) -> Option<Vec<u8>> {
        payload(&EntryRef::Final(record))
    }

    /// Journals the deliveries an end just stored under `entry`.
    pub(super) fn journal_deliveries(&self, entry: Reserved<'_>, deliveries: &[DeliveryRecord]) {
        entry.fill(payload(&EntryRef::Deliveries(deliveries)).as_deref());
    }

    /// [`crate::store::Store::flush_finals`]: the journal's sync, and a
    /// full flush in the background within a second of it (at once when a
    /// file is a quarter full), so what the journal holds is in sled soon
    /// and its files are free again before they fill.
    pub(super) fn sync_finals(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            // Runs still queued or running need this thread more than
            // this answer needs to skip a hand-over.
            let busy = || self.any_unfinished();
            if self.journal.sync_among(&busy).await? == Synced::NeedsFlush {
                return self.flush().await;
            }
            if let Some(delay) = self.journal.checkpoint_due() {
                // Held weakly: a store dropped meanwhile lets go of sled.
                let (commit, journal) = (Arc::downgrade(&self.commit), self.journal.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(commit) = commit.upgrade()
                        && let Err(e) = commit.flush().await
                    {
                        tracing::error!(error = %e, "the store's background flush failed");
                    }
                    journal.checkpoint_done();
                });
            }
            Ok(())
        })
    }

    /// Applies what `open` found in the journal, in order; how many
    /// records and deliveries were written again.
    pub(super) fn replay_journal(&self, found: Vec<Found>) -> Result<usize, StoreError> {
        let mut applied = 0;
        for Found { seq, payload } in found {
            let entry: Entry = serde_json::from_slice(&payload)
                .map_err(|e| StoreError::Corrupt(format!("journal entry {seq}: {e}")))?;
            match entry {
                Entry::Final(record) => {
                    let stored_final = match self.executions.get(&record.id).map_err(backend)? {
                        Some(bytes) => packed::RECORD
                            .decode::<Indexed>(&bytes)
                            .is_ok_and(|i| i.status.is_final()),
                        None => false,
                    };
                    if !stored_final {
                        self.put_replayed(&record)?;
                        applied += 1;
                    }
                }
                Entry::Deliveries(deliveries) => {
                    for delivery in &deliveries {
                        if self.put_delivery_if_missing(delivery)? {
                            applied += 1;
                        }
                    }
                }
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TEST_CACHE_BYTES;
    use super::*;
    use crate::store::executions::ExecutionStore;
    use crate::store::testing::{execution, id_at};
    use crate::store::webhooks::WebhookStore;
    use crate::store::{ExecutionStatus, Store};

    fn delivery(id: &str) -> DeliveryRecord {
        DeliveryRecord {
            id: id.into(),
            webhook_id: "w1".into(),
            msg_id: format!("msg_{id}"),
            event_type: "execution.completed".into(),
            body: "{}".into(),
            created_ms: 1,
            attempts: 0,
            next_attempt_ms: 1,
        }
    }

    /// A store in `dir` with one run ended and journaled.
    async fn finished_store(dir: &std::path::Path) -> (SledStore, ExecutionRecord) {
        let store = SledStore::open(dir, TEST_CACHE_BYTES).unwrap();
        let done = execution(&id_at(10, 1), Some("s1"), ExecutionStatus::Completed);
        store.finish_execution(&done, None, &[]).await.unwrap();
        store.flush_finals().await.unwrap();
        (store, done)
    }

    /// What sled lost and the journal kept comes back at open: a store
    /// is opened on an empty sled beside another store's journal, as a
    /// crash that lost all of sled's unflushed writes would leave it.
    #[tokio::test]
    async fn final_records_and_deliveries_only_in_the_journal_are_written_again_at_open() {
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = SledStore::open(first.path(), TEST_CACHE_BYTES).unwrap();
        let mut done = execution(&id_at(10, 1), Some("s1"), ExecutionStatus::Completed);
        done.result = Some(serde_json::json!("kept"));
        let queued = execution(&id_at(11, 2), Some("s1"), ExecutionStatus::Queued);
        store.put_execution(&queued).await.unwrap();
        store
            .finish_execution(&done, None, &[delivery(&id_at(12, 3))])
            .await
            .unwrap();
        store.flush_finals().await.unwrap();
        for name in ["journal-0", "journal-1"] {
            std::fs::copy(first.path().join(name), second.path().join(name)).unwrap();
        }
        drop(store);
        for _ in 0..2 {
            let store = super::super::tests::reopen(second.path()).unwrap();
            let read = store.execution(&done.id).await.unwrap().unwrap();
            assert_eq!(read.result, done.result);
            assert_eq!(store.record_counts().executions, 1);
            // Its rollups (hour and day, total and the script's) are stored
            // by the open's flush, which covers the entry.
            assert_eq!(store.record_counts().usage_rollups, 4);
            // Only final records are journaled: a queued one is flushed
            // before it is answered.
            assert!(store.execution(&queued.id).await.unwrap().is_none());
            let outbox = store.pending_deliveries().await.unwrap();
            assert_eq!(outbox.len(), 1, "{outbox:?}");
            store.close().await.unwrap();
        }
    }

    /// A waited run's final record, held in memory with its write deferred,
    /// is durable once its entry is synced: a crash before the write finds
    /// it through the journal, and no full flush covers the entry before
    /// the write is made.
    #[tokio::test]
    async fn a_final_record_whose_write_was_deferred_is_in_the_journal_and_not_covered() {
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = SledStore::open(first.path(), TEST_CACHE_BYTES).unwrap();
        let mut run = execution(&id_at(10, 1), Some("s1"), ExecutionStatus::Queued);
        store.hold_execution(&run).await.unwrap();
        run.status = ExecutionStatus::Completed;
        run.result = Some(serde_json::json!("kept"));
        store.finish_execution(&run, None, &[]).await.unwrap();
        store.flush_finals_deferring().await.unwrap();
        assert!(store.executions.get(&run.id).unwrap().is_none(), "deferred");
        store.commit.flush_blocking().unwrap();
        assert_eq!(store.journal.covered(), 0, "not covered before its write");
        for name in ["journal-0", "journal-1"] {
            std::fs::copy(first.path().join(name), second.path().join(name)).unwrap();
        }
        store.apply_deferred().await.unwrap();
        assert!(store.executions.get(&run.id).unwrap().is_some());
        store.commit.flush_blocking().unwrap();
        assert_eq!(store.journal.covered(), 1);
        drop(store);
        let crashed = super::super::tests::reopen(second.path()).unwrap();
        let read = crashed.execution(&run.id).await.unwrap().unwrap();
        assert_eq!(read.result, run.result);
        assert_eq!(crashed.record_counts().executions, 1);
    }

    /// A final record that would take the held records past their bound
    /// is written at once, not held: what is deferred stays bounded.
    #[tokio::test]
    async fn a_final_record_past_the_held_bound_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        // Another held run takes nearly all of the bound.
        let mut big = execution(&id_at(9, 1), Some("s1"), ExecutionStatus::Queued);
        big.code = Some(vec![b'x'; crate::store::held::HELD_BYTES - 60_000]);
        store.hold_execution(&big).await.unwrap();
        let mut run = execution(&id_at(10, 1), Some("s1"), ExecutionStatus::Queued);
        store.hold_execution(&run).await.unwrap();
        run.status = ExecutionStatus::Completed;
        run.stdout = "x".repeat(100_000);
        store.finish_execution(&run, None, &[]).await.unwrap();
        assert!(store.executions.get(&run.id).unwrap().is_some(), "written");
        assert!(store.execution_indexes.deferred().is_empty());
        store.flush_finals().await.unwrap();
        assert_eq!(store.journal.coverable(), store.journal.appended());
    }

    /// A deferred record is rolled up when it is written, not before: a
    /// flush that stores rollups while it is deferred stores none of its,
    /// and the replay after a crash counts it once.
    #[tokio::test]
    async fn a_deferred_record_is_rolled_up_once_across_a_crash() {
        use crate::store::usage::{Grain, Scope, UsageStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let at = 1_000_000_000_000;
        let mut run = execution(&id_at(at, 1), Some("s1"), ExecutionStatus::Queued);
        store.hold_execution(&run).await.unwrap();
        run.status = ExecutionStatus::Completed;
        store.finish_execution(&run, None, &[]).await.unwrap();
        store.flush_finals_deferring().await.unwrap();
        store.commit.flush_blocking().unwrap();
        assert_eq!(
            store.record_counts().usage_rollups,
            0,
            "none stored for it yet"
        );
        drop(store);
        let store = super::super::tests::reopen(dir.path()).unwrap();
        let rows = store
            .usage(
                Grain::Day,
                at,
                at,
                Scope::Total(crate::store::orgs::DEFAULT_ORG),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].usage.executions(), 1);
    }

    /// A deferred record can be deleted like a written one, and a flush
    /// writes the others first, so it covers their entries.
    #[tokio::test]
    async fn a_deferred_record_can_be_deleted_and_a_flush_writes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let mut ids = Vec::new();
        for i in 0..2u8 {
            let mut run = execution(
                &id_at(10 + u64::from(i), i),
                Some("s1"),
                ExecutionStatus::Queued,
            );
            store.hold_execution(&run).await.unwrap();
            run.status = ExecutionStatus::Completed;
            store.finish_execution(&run, None, &[]).await.unwrap();
            ids.push(run.id);
        }
        assert!(matches!(
            store.delete_execution(&ids[0]).await.unwrap(),
            crate::store::executions::Removal::Removed
        ));
        assert!(store.execution(&ids[0]).await.unwrap().is_none());
        store.flush().await.unwrap();
        assert!(store.executions.get(&ids[1]).unwrap().is_some());
        assert_eq!(store.journal.covered(), 2);
        assert_eq!(store.record_counts().executions, 1);
        drop(store);
        let store = super::super::tests::reopen(dir.path()).unwrap();
        assert!(
            store.execution(&ids[0]).await.unwrap().is_none(),
            "stays deleted"
        );
        assert!(store.execution(&ids[1]).await.unwrap().is_some());
    }

    /// An entry a full flush covered is not applied again: a record
    /// deleted (and flushed) after it stays deleted.
    #[tokio::test]
    async fn entries_a_full_flush_covered_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, done) = finished_store(dir.path()).await;
        store.delete_execution(&done.id).await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = super::super::tests::reopen(dir.path()).unwrap();
        assert!(store.execution(&done.id).await.unwrap().is_none());
    }

    /// A record sled holds final already is left as it is.
    #[tokio::test]
    async fn a_record_sled_holds_final_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, done) = finished_store(dir.path()).await;
        let found = vec![Found {
            seq: store.journal.appended() + 1,
            payload: serde_json::to_vec(&EntryRef::Final(&done)).unwrap(),
        }];
        assert_eq!(store.replay_journal(found).unwrap(), 0);
        let unreadable = vec![Found {
            seq: 99,
            payload: b"{}".to_vec(),
        }];
        assert!(matches!(
            store.replay_journal(unreadable),
            Err(StoreError::Corrupt(_))
        ));
    }
}

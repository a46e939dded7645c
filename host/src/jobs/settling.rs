//! How an execution's waiters hear that it is final, and who makes its
//! final record durable before they do. A run's end is settled once its
//! record is synced: by a task the worker spawns, or, when a `?wait=true`
//! handler waits on it ([`SyncingWaiter`]), by that handler, which syncs
//! before it answers anyway (or, should the handler go without settling
//! it, by a task its waiter's drop starts). So a waited run costs no task,
//! and no wake of an idle worker thread to steal one, between its end and
//! its answer.

use std::sync::Arc;

use tokio::sync::watch;

use super::Jobs;
use crate::store::{ExecutionRecord, Store, StoreError};

/// Where a queued execution stands for those waiting on it.
#[derive(Debug, Clone, Default)]
pub enum Settled {
    /// Queued or running.
    #[default]
    Pending,
    /// Its final record is on disk; here it is, so a waiter need not read it.
    Flushed(Arc<ExecutionRecord>),
    /// Its final record is stored, not yet synced, and handed to the
    /// [`SyncingWaiter`]s, which sync it before they report it and then
    /// settle it. Not settled: [`Settled::Flushed`] (or [`Settled::Lost`])
    /// follows.
    Ended(Arc<ExecutionRecord>),
    /// Its final record is stored but may not be flushed yet (a cancel while
    /// queued, whose handler flushes, or a run a worker found no longer
    /// queued): a waiter flushes and reads it.
    Stored,
    /// Its final record could not be stored or flushed.
    Lost(String),
}

impl Settled {
    /// Whether it is final and on disk (or lost).
    pub fn is_settled(&self) -> bool {
        !matches!(self, Self::Pending | Self::Ended(_))
    }

    /// Whether it is final, on disk or not.
    pub fn has_ended(&self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// One execution's completion signal, and who will settle it. Its end
/// was handed to the syncing waiters when the signal says
/// [`Settled::Ended`]: the last of them to go without settling it starts
/// its sync.
pub(super) struct Waiting {
    pub(super) sender: watch::Sender<Settled>,
    /// Waiters that sync and settle a final record handed to them.
    syncing: usize,
}

impl Waiting {
    pub(super) fn new() -> Self {
        Self {
            sender: watch::channel(Settled::Pending).0,
            syncing: 0,
        }
    }
}

/// A waiter that syncs a final record handed to it ([`Settled::Ended`])
/// and then settles it ([`Jobs::settle`]) before it is dropped; dropped
/// without settling a record it was handed (its wait ran out, its client
/// left), it starts the sync that settles it.
pub struct SyncingWaiter {
    jobs: Arc<Jobs>,
    store: Arc<dyn Store>,
    id: String,
}

impl Drop for SyncingWaiter {
    fn drop(&mut self) {
        let orphaned = {
            let mut done = self.jobs.lock();
            done.get_mut(&self.id).and_then(|waiting| {
                waiting.syncing = waiting.syncing.saturating_sub(1);
                match &*waiting.sender.borrow() {
                    Settled::Ended(record) if waiting.syncing == 0 => Some(record.clone()),
                    _ => None,
                }
            })
        };
        if let Some(record) = orphaned {
            self.jobs
                .settle_after_sync(self.store.clone(), &self.id, record);
        }
    }
}

impl Jobs {
    /// Registers a waiter that will sync and settle execution `id`'s final
    /// record if the run's end is handed to it; `None` once `id` settled.
    pub fn syncing_waiter(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        id: &str,
    ) -> Option<SyncingWaiter> {
        self.lock().get_mut(id)?.syncing += 1;
        Some(SyncingWaiter {
            jobs: self.clone(),
            store,
            id: id.to_owned(),
        })
    }

    /// Writes the final records the store holds in memory after journaling
    /// them (`ExecutionStore::apply_deferred`), in a task spawned now unless
    /// one is spawned and has not started: it drains them all. Called by a
    /// handler just before its answer, the task takes its thread's
    /// next-task slot and runs once the answer is written.
    pub fn apply_deferred_soon(self: &Arc<Self>, store: &Arc<dyn Store>) {
        if self
            .applying
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let (jobs, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            // Cleared first: what is deferred after it gets a task of its own.
            jobs.applying
                .store(false, std::sync::atomic::Ordering::Release);
            if let Err(e) = store.apply_deferred().await {
                tracing::error!(error = %e, "cannot write final records held in memory");
            }
        });
    }

    /// A run's final record is stored: handed to its syncing waiters if it
    /// has any, else synced by a task of its own, which settles it.
    pub fn ended(self: &Arc<Self>, store: &Arc<dyn Store>, id: &str, record: ExecutionRecord) {
        let record = Arc::new(record);
        if let Some(waiting) = self.lock().get_mut(id)
            && waiting.syncing > 0
        {
            // The handler waits in this worker thread's next-task slot
            // and runs here once the worker yields: no hop between the
            // disk and the answer.
            waiting.sender.send_replace(Settled::Ended(record));
            return;
        }
        // The sync runs while this worker takes its next execution, so one
        // sync covers what every worker finished meanwhile.
        self.settle_after_sync(store.clone(), id, record);
    }

    /// Syncs the final records stored so far, then settles `id` with
    /// `record` (or as lost), in a task of its own.
    fn settle_after_sync(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        id: &str,
        record: Arc<ExecutionRecord>,
    ) {
        let (jobs, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            let settled = match store.flush_finals().await {
                Ok(()) => Settled::Flushed(record),
                Err(e) => lost(&id, &e),
            };
            jobs.settle(&id, settled);
        });
    }
}

/// An execution whose final record could not be stored or synced, logged.
pub fn lost(id: &str, error: &StoreError) -> Settled {
    tracing::error!(execution = id, error = %error, "execution could not be recorded");
    Settled::Lost(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::tests::{jobs, queued, store};

    /// Waits for `receiver` to settle, for at most 5 s.
    async fn settled(receiver: &mut watch::Receiver<Settled>) -> Settled {
        tokio::time::timeout(
            Duration::from_secs(5),
            receiver.wait_for(Settled::is_settled),
        )
        .await
        .expect("settled within 5 s")
        .unwrap()
        .clone()
    }

    /// A queued execution, queued in `jobs`, and its completion signal.
    async fn enqueued(
        store: &Arc<dyn Store>,
        jobs: &Jobs,
    ) -> (ExecutionRecord, watch::Receiver<Settled>) {
        let record = queued(store.as_ref()).await;
        let done = jobs.enqueue(&record).unwrap();
        (record, done)
    }

    /// One task drains what is deferred: a call while one is spawned and
    /// not started spawns none; once it started, the next call spawns again.
    #[tokio::test]
    async fn deferred_writes_are_drained_by_one_task_at_a_time() {
        use std::sync::atomic::Ordering;
        let (store, _dir) = store();
        let jobs = jobs(10);
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        jobs.apply_deferred_soon(&store);
        jobs.apply_deferred_soon(&store);
        assert!(jobs.applying.load(Ordering::Acquire));
        assert_eq!(tasks(), 1, "the second call spawned none");
        // The current-thread runtime runs the one task at this yield.
        tokio::task::yield_now().await;
        assert!(!jobs.applying.load(Ordering::Acquire));
        jobs.apply_deferred_soon(&store);
        assert_eq!(tasks(), 1, "started: the next call spawns again");
    }

    #[tokio::test]
    async fn a_run_with_a_syncing_waiter_is_handed_to_it_and_settled_by_it() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let (record, mut done) = enqueued(&store, &jobs).await;
        let waiter = jobs.syncing_waiter(store.clone(), &record.id).unwrap();
        jobs.ended(&store, &record.id, record.clone());
        assert!(matches!(&*done.borrow_and_update(), Settled::Ended(_)));
        // Nothing else syncs it: it stays handed to the waiter.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(&*done.borrow(), Settled::Ended(_)));
        assert!(jobs.is_settling(&record.id));
        jobs.settle(&record.id, Settled::Flushed(Arc::new(record.clone())));
        drop(waiter);
        assert!(matches!(settled(&mut done).await, Settled::Flushed(_)));
        assert!(!jobs.is_settling(&record.id));
    }

    #[tokio::test]
    async fn a_syncing_waiter_that_leaves_after_the_hand_over_starts_the_sync() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let (record, mut done) = enqueued(&store, &jobs).await;
        let waiter = jobs.syncing_waiter(store.clone(), &record.id).unwrap();
        let second = jobs.syncing_waiter(store.clone(), &record.id).unwrap();
        jobs.ended(&store, &record.id, record.clone());
        drop(waiter);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            matches!(&*done.borrow(), Settled::Ended(_)),
            "another waiter still holds it"
        );
        // Its client left, say: the last one starts the sync.
        drop(second);
        assert!(matches!(settled(&mut done).await, Settled::Flushed(_)));
        assert!(!jobs.is_settling(&record.id));
    }

    #[tokio::test]
    async fn a_run_without_a_syncing_waiter_is_settled_by_a_sync_of_its_own() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        for waited_and_left in [false, true] {
            let (record, mut done) = enqueued(&store, &jobs).await;
            if waited_and_left {
                // Its wait ran out before the run ended.
                drop(jobs.syncing_waiter(store.clone(), &record.id).unwrap());
            }
            jobs.ended(&store, &record.id, record.clone());
            assert!(matches!(settled(&mut done).await, Settled::Flushed(_)));
            assert!(!jobs.is_settling(&record.id));
            assert!(jobs.syncing_waiter(store.clone(), &record.id).is_none());
        }
    }
}

//! What a waited run leaves for after its answer: the drop of its used
//! store (the pool slot's reset, about as costly as an instantiation) and
//! the write of its final record to the store's tables (held in memory,
//! journaled, until `ExecutionStore::apply_deferred`). The `?wait=true`
//! handler spawns [`Jobs::after_answer`] just before it answers: the task
//! takes its thread's next-task slot, so it runs once the answer is
//! written, on the same thread, and no idle thread is woken for it.

use std::sync::{Arc, Mutex, PoisonError};

use kiln_runtime::{RetireLater, UsedStore};

use super::Jobs;
use crate::store::Store;

/// Used stores kept for a later drop at most; past it a run drops its own.
/// Each holds a pool slot and the memory its run wrote.
pub const MAX_USED_STORES: usize = 8;

/// Used stores of waited runs, dropped after their answers.
#[derive(Default)]
pub struct UsedStores(Mutex<Vec<UsedStore>>);

impl UsedStores {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UsedStore>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `store` for [`Self::drop_all`], or drops it now past
    /// [`MAX_USED_STORES`].
    fn keep(&self, store: UsedStore) {
        let mut used = self.lock();
        if used.len() < MAX_USED_STORES {
            used.push(store);
        } else {
            drop(used);
            drop(store);
        }
    }

    /// Drops every store kept.
    pub fn drop_all(&self) {
        let used = std::mem::take(&mut *self.lock());
        drop(used);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Jobs {
    /// Where a run whose end a `?wait=true` handler syncs hands its used
    /// store ([`kiln_runtime::Invocation::retire_later`]); `None` for any
    /// other run, which drops its own (nobody would drop it soon).
    pub fn retire_later(self: &Arc<Self>, id: &str) -> Option<RetireLater> {
        if !self.has_syncing_waiter(id) {
            return None;
        }
        let jobs = Arc::downgrade(self);
        Some(Arc::new(move |store| match jobs.upgrade() {
            Some(jobs) => jobs.used_stores.keep(store),
            None => drop(store),
        }))
    }

    /// Drops the used stores kept for answers (a worker does, before each
    /// run: a waiter that left never spawned [`Self::after_answer`]).
    pub fn drop_used_stores(&self) {
        self.used_stores.drop_all();
    }

    /// Spawns what waits for an answer: the used stores' drop and the
    /// deferred writes of final records. Spawned by a handler just before
    /// its answer, it runs after it (see the module's doc).
    pub fn after_answer(self: &Arc<Self>, store: Arc<dyn Store>) {
        let jobs = self.clone();
        tokio::spawn(async move {
            jobs.used_stores.drop_all();
            if let Err(e) = store.apply_deferred().await {
                tracing::error!(error = %e, "cannot write final records held in memory");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::jobs::tests::{jobs, queued, store};

    /// Only a run a `?wait=true` handler syncs keeps its used store for
    /// later: any other run would hold it until someone else's answer.
    #[tokio::test]
    async fn only_a_run_with_a_syncing_waiter_keeps_its_store_for_later() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let record = queued(store.as_ref()).await;
        let _done = jobs.enqueue(&record).unwrap();
        assert!(jobs.retire_later(&record.id).is_none(), "nobody waits");
        let waiter = jobs.syncing_waiter(store.clone(), &record.id).unwrap();
        assert!(jobs.retire_later(&record.id).is_some());
        drop(waiter);
        assert!(jobs.retire_later(&record.id).is_none(), "its waiter left");
        assert_eq!(jobs.used_stores.len(), 0);
    }
}

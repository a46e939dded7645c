//! Language runtimes kept one instance ahead of their runs.
//!
//! Instantiating CPython (a dozen core modules, thousands of function
//! references built per instance by wasmtime 48) is about half of a warm Python
//! run. A language runtime whose instantiation measures at least
//! [`EngineOptions::prewarm_above`](crate::EngineOptions::prewarm_above) is
//! prewarmed: when its runs come apart, the `kiln-warm` thread makes the next
//! instance as soon as a run ends, then drops the used store (its pool slot's
//! reset), and the next run binds its own WASI context, memory cap and fuel to
//! that instance and only calls. Every run still gets a fresh instance: an
//! instance is made for one run and never reused.
//!
//! Runs that come back to back instantiate inline: on a machine whose cores
//! slow each other down, an instance made while a run executes costs that run
//! more than it saves. Runtimes that instantiate fast (QuickJS: tens of µs)
//! are never prewarmed: a thread hop would cost more than it saves.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::Store;

use crate::artifact::ArtifactKey;
use crate::bindings::{LanguageRuntime, LanguageRuntimePre};
use crate::wasi::State;

/// Instantiations measured before a runtime is judged slow or fast to
/// instantiate; the fastest of them counts, so a cold first one does not.
const OBSERVATIONS: u32 = 4;
/// How long a run waits for an instance already being made before it makes
/// its own: an instantiation takes about a millisecond, so this only bites
/// when the warm thread is starved.
const WAIT_FOR_REFILL: Duration = Duration::from_millis(20);
/// Language runtimes kept warm at once; each holds one pool slot (see
/// `engine::build_engine`, which reserves them).
pub(crate) const MAX_WARM: usize = 4;
/// Used stores waiting for the warm thread to drop them, each still holding
/// its pool slot (reserved beside `MAX_WARM`). Past it a run drops its store
/// itself: a warm thread starved of CPU must not let retired instances pile
/// up until runs find the pool full.
pub(crate) const MAX_RETIRING: usize = 2;

/// An instance made ahead, with the store it lives in.
pub(crate) struct Prepared {
    pub(crate) store: Store<State>,
    pub(crate) runtime: LanguageRuntime,
}

/// Makes a store for an instance made ahead (no run's inputs yet).
pub(crate) type StoreMaker = Box<dyn Fn() -> Store<State> + Send>;

enum Job {
    Refill {
        key: ArtifactKey,
        pre: LanguageRuntimePre<State>,
    },
    Retire(Store<State>),
}

#[derive(Default)]
struct Slot {
    observed: u32,
    fastest: Option<Duration>,
    warm: bool,
    ready: Option<Prepared>,
    refilling: bool,
    /// A run waits for the instance being made.
    claimed: bool,
    /// When the last run of this runtime ended, and whether the one before
    /// it started at least two instantiations later (so an instance made
    /// after a run is likely ready for the next).
    last_retired: Option<Instant>,
    paced: bool,
    refilled: Arc<Notify>,
}

#[derive(Default)]
struct Slots {
    by_key: HashMap<ArtifactKey, Slot>,
    hits: u64,
    /// Stores sent to the warm thread and not yet dropped.
    retiring: usize,
}

/// The warm instances of one sandbox and the thread that makes them.
pub(crate) struct Warm {
    slots: Arc<Mutex<Slots>>,
    jobs: Option<mpsc::Sender<Job>>,
    threshold: Option<Duration>,
}

impl Warm {
    /// Starts the `kiln-warm` thread unless `threshold` is `None` (never
    /// prewarm). `new_store` makes the store an instance is made in.
    pub(crate) fn start(
        threshold: Option<Duration>,
        new_store: StoreMaker,
    ) -> std::io::Result<Self> {
        let slots = Arc::new(Mutex::new(Slots::default()));
        let jobs = match threshold {
            None => None,
            Some(_) => {
                let (sender, receiver) = mpsc::channel();
                let thread_slots = slots.clone();
                std::thread::Builder::new()
                    .name("kiln-warm".into())
                    .spawn(move || work(&receiver, &thread_slots, &new_store))?;
                Some(sender)
            }
        };
        Ok(Self {
            slots,
            jobs,
            threshold,
        })
    }

    /// Runs that found their runtime already instantiated.
    pub(crate) fn hits(&self) -> u64 {
        lock(&self.slots).hits
    }

    /// An instance made ahead for `key`, else the one being made if no other
    /// run waits for it yet. `None`: instantiate inline (under load, runs do
    /// not queue behind one thread).
    pub(crate) async fn take(&self, key: &ArtifactKey) -> Option<Prepared> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_REFILL;
        let mut claimed = false;
        loop {
            let refilled = {
                let mut guard = lock(&self.slots);
                let slots = &mut *guard;
                let slot = slots.by_key.get_mut(key).filter(|slot| slot.warm)?;
                if !claimed {
                    let apart = slot.fastest.unwrap_or_default().saturating_mul(2);
                    slot.paced = slot.last_retired.is_none_or(|t| t.elapsed() >= apart);
                }
                if let Some(prepared) = slot.ready.take() {
                    slots.hits += 1;
                    return Some(prepared);
                }
                if !slot.refilling || (slot.claimed && !claimed) {
                    return None;
                }
                slot.claimed = true;
                claimed = true;
                slot.refilled.clone()
            };
            // `notify_one` keeps a permit when nobody waits yet, so a refill
            // finishing between the check above and this wait is not missed.
            if tokio::time::timeout_at(deadline, refilled.notified())
                .await
                .is_err()
            {
                if let Some(slot) = lock(&self.slots).by_key.get_mut(key) {
                    slot.claimed = false;
                }
                return None;
            }
        }
    }

    /// Records how long an inline instantiation of `key` took; a runtime
    /// found slow to instantiate starts being prewarmed.
    pub(crate) fn observe(
        &self,
        key: &ArtifactKey,
        pre: &LanguageRuntimePre<State>,
        took: Duration,
    ) {
        let Some(threshold) = self.threshold else {
            return;
        };
        let mut slots = lock(&self.slots);
        let warm_count = slots.by_key.values().filter(|slot| slot.warm).count();
        let slot = slots.by_key.entry(*key).or_default();
        if slot.warm || slot.observed >= OBSERVATIONS {
            return;
        }
        slot.observed += 1;
        let fastest = slot.fastest.map_or(took, |fastest| fastest.min(took));
        slot.fastest = Some(fastest);
        if slot.observed == OBSERVATIONS && fastest >= threshold && warm_count < MAX_WARM {
            slot.warm = true;
            tracing::debug!(key = %key, ?fastest, "language runtime prewarmed from now on");
            drop(slots);
            self.refill(key, pre);
        }
    }

    /// Ends a run of a language runtime; one not prewarmed drops its store
    /// here. For a prewarmed one, when runs come apart, the warm
    /// thread makes the next instance and then drops this store (its pool
    /// slot's reset), both off the runs' path. When they come back to back,
    /// the store is dropped here and the next run instantiates inline: on a
    /// machine whose cores slow each other down, an instance made while a
    /// run executes makes that run slower than instantiating inline, and a
    /// run waiting for one made after it gains nothing.
    pub(crate) fn retire(
        &self,
        key: &ArtifactKey,
        pre: &LanguageRuntimePre<State>,
        store: Store<State>,
    ) {
        let handed_over = {
            let mut slots = lock(&self.slots);
            let paced = match slots.by_key.get_mut(key) {
                Some(slot) if slot.warm => {
                    slot.last_retired = Some(Instant::now());
                    slot.paced
                }
                _ => false,
            };
            paced && self.jobs.is_some() && slots.take_retiring_place()
        };
        match &self.jobs {
            Some(jobs) if handed_over => {
                self.refill(key, pre);
                // The thread lives as long as `self`; if it is gone the
                // store is dropped here instead.
                if let Err(mpsc::SendError(Job::Retire(store))) = jobs.send(Job::Retire(store)) {
                    lock(&self.slots).retired();
                    drop(store);
                }
            }
            _ => drop(store),
        }
    }

    fn refill(&self, key: &ArtifactKey, pre: &LanguageRuntimePre<State>) {
        let Some(jobs) = &self.jobs else {
            return;
        };
        {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.by_key.get_mut(key) else {
                return;
            };
            if !slot.warm || slot.refilling || slot.ready.is_some() {
                return;
            }
            slot.refilling = true;
        }
        let job = Job::Refill {
            key: *key,
            pre: pre.clone(),
        };
        if jobs.send(job).is_err()
            && let Some(slot) = lock(&self.slots).by_key.get_mut(key)
        {
            slot.refilling = false;
        }
    }
}

impl Slots {
    /// A place in the warm thread's queue of stores to drop, if one is free.
    fn take_retiring_place(&mut self) -> bool {
        let room = self.retiring < MAX_RETIRING;
        if room {
            self.retiring += 1;
        }
        room
    }

    /// The warm thread dropped one.
    fn retired(&mut self) {
        self.retiring = self.retiring.saturating_sub(1);
    }
}

fn lock(slots: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `kiln-warm` thread: drops retired stores and makes instances ahead,
/// until the sandbox is dropped.
fn work(jobs: &mpsc::Receiver<Job>, slots: &Mutex<Slots>, new_store: &StoreMaker) {
    // Instantiation is async only in name here (no host call can run during
    // it), so a single-threaded runtime drives it.
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        tracing::error!("the warm thread cannot start; runtimes are instantiated inline");
        return;
    };
    for job in jobs {
        match job {
            Job::Retire(store) => {
                drop(store);
                lock(slots).retired();
            }
            Job::Refill { key, pre } => {
                let started = Instant::now();
                let mut store = new_store();
                let made = runtime.block_on(pre.instantiate_async(&mut store));
                let mut slots = lock(slots);
                let Some(slot) = slots.by_key.get_mut(&key) else {
                    continue;
                };
                slot.refilling = false;
                slot.claimed = false;
                match made {
                    Ok(runtime) => {
                        slot.ready = Some(Prepared { store, runtime });
                        tracing::trace!(took = ?started.elapsed(), "runtime instance made ahead");
                    }
                    // Runs fall back to instantiating inline, where the same
                    // failure reaches the caller.
                    Err(e) => {
                        slot.warm = false;
                        tracing::warn!(error = %e, "cannot make a runtime instance ahead");
                    }
                }
                slot.refilled.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_stores_wait_for_the_warm_thread_only_up_to_their_bound() {
        let mut slots = Slots::default();
        for _ in 0..MAX_RETIRING {
            assert!(slots.take_retiring_place());
        }
        // A starved warm thread: the next run drops its store itself.
        assert!(!slots.take_retiring_place());
        slots.retired();
        assert!(slots.take_retiring_place());
        assert!(!slots.take_retiring_place());
    }
}

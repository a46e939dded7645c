//! The thread that writes the final records a store deferred
//! ([`crate::store::ExecutionStore::apply_deferred`]) once their answers
//! are on their way. On its own thread, not a task of the answering worker:
//! the workers go straight on to the next request, and one drain writes
//! every record deferred meanwhile, so at 32 connections a drain writes
//! many at once (+10 % waited runs a second against a task per answer; at
//! one connection the same, within the rounds' spread: benches/README.md).
//!
//! One thread per [`super::Jobs`], started at its first nudge and ended
//! when the `Jobs` goes (its sender with it). At most one drain waits
//! to start: a nudge while one waits is already served by it.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock, Weak};

use crate::store::Store;

/// The nudges of one [`super::Jobs`] to its applier thread.
#[derive(Default)]
pub(super) struct Applier {
    /// `None` if the thread could not be started: then each nudge drains
    /// in a task of its own.
    sender: OnceLock<Option<SyncSender<Weak<dyn Store>>>>,
}

impl Applier {
    /// Has `store`'s deferred records written soon, by the thread.
    pub(super) fn nudge(&self, store: &Arc<dyn Store>) {
        let sender = self.sender.get_or_init(|| {
            // The thread runs the store's future in the runtime's context.
            let handle = tokio::runtime::Handle::try_current().ok()?;
            start("kiln-apply", move |store: Arc<dyn Store>| {
                if let Err(e) = handle.block_on(store.apply_deferred()) {
                    tracing::error!(error = %e, "cannot write final records held in memory");
                }
            })
        });
        let refused = match sender {
            Some(sender) => match sender.try_send(Arc::downgrade(store)) {
                // A drain that has not started yet takes this one's records.
                Ok(()) | Err(TrySendError::Full(_)) => false,
                Err(TrySendError::Disconnected(_)) => true,
            },
            None => true,
        };
        if refused {
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.apply_deferred().await {
                    tracing::error!(error = %e, "cannot write final records held in memory");
                }
            });
        }
    }
}

/// Starts a thread named `name` that calls `drain` once per message whose
/// target is still alive; it ends when the sender is dropped. `None` (and
/// logged) if the thread cannot be started.
fn start<T: ?Sized + Send + Sync + 'static>(
    name: &str,
    drain: impl Fn(Arc<T>) + Send + 'static,
) -> Option<SyncSender<Weak<T>>> {
    let (sender, receiver) = sync_channel(1);
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || drain_each(&receiver, drain));
    match started {
        Ok(_) => Some(sender),
        Err(e) => {
            tracing::error!(error = %e, thread = name, "cannot start a thread; its work goes to tasks");
            None
        }
    }
}

fn drain_each<T: ?Sized>(receiver: &Receiver<Weak<T>>, drain: impl Fn(Arc<T>)) {
    // Taking the message empties the channel first: what is deferred after
    // this drain takes its records gets a drain of its own.
    while let Ok(target) = receiver.recv() {
        if let Some(target) = target.upgrade() {
            drain(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    fn eventually(what: &str, done: impl Fn() -> bool) {
        let began = Instant::now();
        while !done() {
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "{what} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Nudges while a drain waits to start coalesce into it; a nudge once
    /// it started gets another; a target that is gone is not drained; the
    /// thread ends with its sender.
    #[test]
    fn nudges_coalesce_into_the_drain_that_has_not_started() {
        let drains = Arc::new(AtomicUsize::new(0));
        // The first drain blocks until the test lets it go.
        let gate = Arc::new(Barrier::new(2));
        // Held by the thread's drain: gone when the thread ends.
        let alive = Arc::new(());
        let sender = {
            let (drains, gate, alive) = (drains.clone(), gate.clone(), alive.clone());
            start("test-apply", move |target: Arc<String>| {
                let _alive = &alive;
                if drains.fetch_add(1, Ordering::SeqCst) == 0 {
                    gate.wait();
                }
                assert_eq!(*target, "store");
            })
            .unwrap()
        };
        let target = Arc::new("store".to_owned());
        sender.try_send(Arc::downgrade(&target)).unwrap();
        eventually("the first drain to start", || {
            drains.load(Ordering::SeqCst) == 1
        });
        // Started: the next nudge waits; the ones after it join it.
        sender.try_send(Arc::downgrade(&target)).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                sender.try_send(Arc::downgrade(&target)),
                Err(TrySendError::Full(_))
            ));
        }
        gate.wait();
        eventually("the second drain", || drains.load(Ordering::SeqCst) == 2);
        // A target gone before its drain is skipped.
        let gone = Arc::downgrade(&Arc::new("gone".to_owned()));
        sender.try_send(gone).unwrap();
        eventually("the skipped one taken", || {
            sender.try_send(Arc::downgrade(&target)).is_ok()
        });
        eventually("the drain after the skipped one", || {
            drains.load(Ordering::SeqCst) == 3
        });
        drop(sender);
        eventually("the thread to end with its sender", || {
            Arc::strong_count(&alive) == 1
        });
        assert_eq!(
            drains.load(Ordering::SeqCst),
            3,
            "the joined nudges drained once"
        );
    }
}

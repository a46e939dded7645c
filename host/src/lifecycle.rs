//! Where a node is in its life, as `/readyz` and waiting requests see it:
//! starting (its language runtimes loading), ready, or draining after
//! SIGTERM. Draining is what a load balancer must see before connections
//! are refused, so `serve` keeps accepting for `server.drain_delay_ms`
//! after `/readyz` turns 503; once the workers have drained, requests still
//! waiting for an execution that will not finish are released with a 202.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use tokio::sync::watch;

/// The phase `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Draining,
}

#[derive(Debug)]
pub struct Lifecycle {
    phase: AtomicU8,
    /// True once no queued or running execution will end before the
    /// process does: a request waiting for one answers 202.
    released: watch::Sender<bool>,
    /// What a starting node is loading, and since when.
    loading: Mutex<Option<(String, Instant)>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Starting as u8),
            released: watch::Sender::new(false),
            loading: Mutex::new(None),
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Starting → ready; a node already draining stays so.
    pub fn ready(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Starting as u8,
            Phase::Ready as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// What the node now waits for before it is ready (`/readyz` says).
    pub fn loading(&self, what: String) {
        *self.lock_loading() = Some((what, Instant::now()));
    }

    /// Why a starting node is not ready yet, for `/readyz`.
    pub fn starting_detail(&self) -> String {
        match &*self.lock_loading() {
            Some((what, since)) => format!(
                "starting: loading {what}, {} s so far (a first start compiles it for this \
                 machine; later starts read it from the compile cache)",
                since.elapsed().as_secs()
            ),
            None => "starting".into(),
        }
    }

    fn lock_loading(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        self.loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn drain(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::Release);
    }

    /// Lets every request still waiting for an execution answer.
    pub fn release_waiters(&self) {
        self.released.send_replace(true);
    }

    /// Resolves once [`release_waiters`](Self::release_waiters) was called.
    pub async fn waiters_released(&self) {
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_then_is_ready_then_drains_for_good() {
        let life = Lifecycle::default();
        assert_eq!(life.phase(), Phase::Starting);
        assert_eq!(life.starting_detail(), "starting");
        life.loading("the Python runtime".into());
        let detail = life.starting_detail();
        assert!(
            detail.starts_with("starting: loading the Python runtime, ")
                && detail.contains(" s so far"),
            "{detail}"
        );
        life.ready();
        assert_eq!(life.phase(), Phase::Ready);
        life.drain();
        life.ready();
        assert_eq!(life.phase(), Phase::Draining, "draining is final");
    }

    #[tokio::test]
    async fn waiters_are_released_even_if_they_come_late() {
        let life = std::sync::Arc::new(Lifecycle::default());
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.waiters_released().await }
        });
        life.release_waiters();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // One that starts waiting after the release does not wait.
        tokio::time::timeout(std::time::Duration::from_secs(5), life.waiters_released())
            .await
            .unwrap();
    }
}

//! A handle that stops a running guest from another task or thread.

use std::sync::Arc;

use tokio::sync::watch;

/// Cancels the runs it was given to. Clones share one flag; cancelling is
/// permanent. A busy guest notices at its next epoch tick (a few ms), a guest
/// blocked in a host call (sleeping, reading) at once.
#[derive(Clone, Debug)]
pub struct CancelHandle(Arc<watch::Sender<bool>>);

impl Default for CancelHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelHandle {
    /// A handle that has not been cancelled.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    /// Stops every run using this handle; runs started later stop at once.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the handle is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn cancelled_resolves_after_cancel_from_another_task() {
        let handle = CancelHandle::new();
        let remote = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            remote.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), handle.cancelled())
            .await
            .unwrap();
        assert!(handle.is_cancelled());
    }

    #[tokio::test]
    async fn cancelled_resolves_at_once_when_already_cancelled() {
        let handle = CancelHandle::new();
        handle.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle.cancelled())
            .await
            .unwrap();
    }
}

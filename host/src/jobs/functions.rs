//! Turns for HTTP function requests. They run on their own connection's
//! task, not through the queue (a request is answered, not queued): as many
//! at once as there are workers, and at most `capacity` more waiting.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct FunctionSlots {
    slots: Semaphore,
    waiting: AtomicUsize,
    capacity: usize,
}

/// Every slot is taken and `capacity` requests already wait.
#[derive(Debug)]
pub struct Busy;

impl FunctionSlots {
    pub fn new(workers: usize, capacity: usize) -> Self {
        Self {
            slots: Semaphore::new(workers.max(1)),
            waiting: AtomicUsize::new(0),
            capacity,
        }
    }

    /// A slot, waiting for one while as many run as there are workers.
    ///
    /// # Errors
    ///
    /// [`Busy`] when `capacity` requests already wait.
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, Busy> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let waiting = Waiting::enter(&self.waiting);
        if waiting.ahead >= self.capacity {
            return Err(Busy);
        }
        // The semaphore is never closed.
        self.slots.acquire().await.map_err(|_| Busy)
    }
}

/// One request counted among those waiting for a slot while it exists (a
/// client that hangs up stops counting).
struct Waiting<'a> {
    count: &'a AtomicUsize,
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::AcqRel);
        Self { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Polls a future once: `Some` if it finished.
    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn as_many_run_as_there_are_workers_and_capacity_more_wait() {
        let slots = FunctionSlots::new(2, 1);
        let first = slots.acquire().await.unwrap();
        let _second = slots.acquire().await.unwrap();
        let mut waiting = pin!(slots.acquire());
        assert!(poll_once(waiting.as_mut()).is_none(), "the third waits");
        assert!(
            matches!(slots.acquire().await, Err(Busy)),
            "the fourth is one waiter past capacity"
        );
        drop(first);
        assert!(
            matches!(poll_once(waiting.as_mut()), Some(Ok(_))),
            "a freed slot goes to the waiter"
        );
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_stops_counting() {
        let slots = FunctionSlots::new(1, 1);
        let _running = slots.acquire().await.unwrap();
        {
            let mut waiting = pin!(slots.acquire());
            assert!(poll_once(waiting.as_mut()).is_none());
            assert!(matches!(slots.acquire().await, Err(Busy)));
        }
        // The client hung up: its place in the line is free again.
        let mut waiting = pin!(slots.acquire());
        assert!(poll_once(waiting.as_mut()).is_none());
    }

    #[tokio::test]
    async fn no_waiting_room_means_busy_at_once_when_every_slot_is_taken() {
        let slots = FunctionSlots::new(1, 0);
        let held = slots.acquire().await.unwrap();
        assert!(matches!(slots.acquire().await, Err(Busy)));
        drop(held);
        assert!(slots.acquire().await.is_ok());
    }
}

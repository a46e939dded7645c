//! The execution queue: one FIFO lane per priority, bounded in total. A
//! semaphore counts the queued ids, so a worker that gets a permit always
//! finds one, and closing it stops the workers.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::store::Priority;

pub struct Queue {
    /// Lanes in priority order: high, normal, low.
    lanes: Mutex<[VecDeque<String>; 3]>,
    capacity: usize,
    queued: Semaphore,
}

/// The queue is at capacity.
#[derive(Debug)]
pub struct Full;

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self {
            lanes: Mutex::new(Default::default()),
            capacity,
            queued: Semaphore::new(0),
        }
    }

    /// Adds an id unless the queue is full.
    pub fn push(&self, id: String, priority: Priority) -> Result<(), Full> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if lanes.iter().map(VecDeque::len).sum::<usize>() >= self.capacity {
            return Err(Full);
        }
        lanes[lane(priority)].push_back(id);
        // Under the lock, so `remove` always finds the permit of an id it sees.
        self.queued.add_permits(1);
        Ok(())
    }

    /// Adds an id even past capacity: for executions accepted before a
    /// restart, which must not be refused now.
    pub fn push_accepted(&self, id: String, priority: Priority) {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes[lane(priority)].push_back(id);
        self.queued.add_permits(1);
    }

    /// The next id by priority, waiting for one; `None` once closed.
    pub async fn pop(&self) -> Option<String> {
        loop {
            self.queued.acquire().await.ok()?.forget();
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            // Permits never outnumber ids, so this finds one; the loop is
            // only a guard.
            if let Some(id) = lanes.iter_mut().find_map(VecDeque::pop_front) {
                return Some(id);
            }
        }
    }

    /// Removes a queued id (a cancelled execution), freeing its place.
    pub fn remove(&self, id: &str) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        for lane in lanes.iter_mut() {
            if let Some(at) = lane.iter().position(|queued| queued == id) {
                // Take back a permit: ids = permits + pops that hold one and
                // wait for this lock, so none left means a pop takes this id.
                if let Ok(permit) = self.queued.try_acquire() {
                    permit.forget();
                    lane.remove(at);
                    return true;
                }
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(VecDeque::len)
            .sum()
    }

    /// Wakes every waiting worker with `None`.
    pub fn close(&self) {
        self.queued.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn higher_priorities_go_first_and_each_lane_is_fifo() {
        let queue = Queue::new(10);
        for (id, priority) in [
            ("n1", Priority::Normal),
            ("l1", Priority::Low),
            ("h1", Priority::High),
            ("n2", Priority::Normal),
            ("h2", Priority::High),
        ] {
            queue.push(id.into(), priority).unwrap();
        }
        let mut order = Vec::new();
        while queue.len() > 0 {
            order.push(queue.pop().await.unwrap());
        }
        assert_eq!(order, ["h1", "h2", "n1", "n2", "l1"]);
    }

    #[tokio::test]
    async fn capacity_counts_every_lane_and_removal_frees_a_place() {
        let queue = Queue::new(2);
        queue.push("a".into(), Priority::Low).unwrap();
        queue.push("b".into(), Priority::High).unwrap();
        assert!(queue.push("c".into(), Priority::High).is_err());
        assert!(queue.remove("a"));
        assert!(!queue.remove("a"));
        queue.push("c".into(), Priority::Normal).unwrap();
        queue.push_accepted("d".into(), Priority::Low);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop().await.as_deref(), Some("b"));
        assert_eq!(queue.pop().await.as_deref(), Some("c"));
        assert_eq!(queue.pop().await.as_deref(), Some("d"));
    }

    #[tokio::test]
    async fn closing_releases_waiting_workers() {
        let queue = std::sync::Arc::new(Queue::new(1));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiting.await.unwrap(), None);
    }
}

//! The execution queue: one lane per priority, bounded in total. Within a
//! lane each tenant (whoever an execution's turn is charged to: its
//! creator) has a FIFO of its own, and the lane serves tenants in turn, one
//! execution each: a tenant with 10 000 queued runs delays another's single
//! run by at most one run per tenant ahead of it, not by 10 000. A semaphore
//! counts the queued ids, so a worker that gets a permit always finds one,
//! and closing it stops the workers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::store::Priority;

pub struct Queue {
    /// Lanes in priority order: high, normal, low.
    lanes: Mutex<[Lane; 3]>,
    capacity: usize,
    queued: Semaphore,
}

/// One priority's queued ids, by tenant.
#[derive(Default)]
struct Lane {
    /// Tenants with queued ids, the next to be served first.
    turns: VecDeque<String>,
    ids: HashMap<String, VecDeque<String>>,
    len: usize,
}

impl Lane {
    fn push(&mut self, id: String, tenant: &str) {
        match self.ids.get_mut(tenant) {
            Some(queued) => queued.push_back(id),
            None => {
                self.ids.insert(tenant.to_owned(), VecDeque::from([id]));
                self.turns.push_back(tenant.to_owned());
            }
        }
        self.len += 1;
    }

    /// The first id of the tenant whose turn it is; the tenant goes to the
    /// back of the line if it has more.
    fn pop(&mut self) -> Option<String> {
        let tenant = self.turns.pop_front()?;
        let queued = self.ids.get_mut(&tenant)?;
        let id = queued.pop_front();
        if queued.is_empty() {
            self.ids.remove(&tenant);
        } else {
            self.turns.push_back(tenant);
        }
        self.len -= usize::from(id.is_some());
        id
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some((tenant, at)) = self.ids.iter().find_map(|(tenant, queued)| {
            Some((tenant.clone(), queued.iter().position(|q| q == id)?))
        }) else {
            return false;
        };
        if let Some(queued) = self.ids.get_mut(&tenant) {
            queued.remove(at);
            if queued.is_empty() {
                self.ids.remove(&tenant);
                self.turns.retain(|t| *t != tenant);
            }
        }
        self.len -= 1;
        true
    }

    fn contains(&self, id: &str) -> bool {
        self.ids
            .values()
            .any(|queued| queued.iter().any(|q| q == id))
    }
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

    fn lanes(&self) -> std::sync::MutexGuard<'_, [Lane; 3]> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an id of `tenant` unless the queue is full.
    pub fn push(&self, id: String, priority: Priority, tenant: &str) -> Result<(), Full> {
        let mut lanes = self.lanes();
        if lanes.iter().map(|l| l.len).sum::<usize>() >= self.capacity {
            return Err(Full);
        }
        lanes[lane(priority)].push(id, tenant);
        // Under the lock, so `remove` always finds the permit of an id it sees.
        self.queued.add_permits(1);
        Ok(())
    }

    /// Adds an id even past capacity: for executions accepted before a
    /// restart, which must not be refused now.
    pub fn push_accepted(&self, id: String, priority: Priority, tenant: &str) {
        let mut lanes = self.lanes();
        lanes[lane(priority)].push(id, tenant);
        self.queued.add_permits(1);
    }

    /// The next id by priority, then by tenants' turns, waiting for one;
    /// `None` once closed.
    pub async fn pop(&self) -> Option<String> {
        loop {
            self.queued.acquire().await.ok()?.forget();
            let mut lanes = self.lanes();
            // Permits never outnumber ids, so this finds one; the loop is
            // only a guard.
            if let Some(id) = lanes.iter_mut().find_map(Lane::pop) {
                return Some(id);
            }
        }
    }

    /// Removes a queued id (a cancelled execution), freeing its place.
    pub fn remove(&self, id: &str) -> bool {
        let mut lanes = self.lanes();
        let Some(lane) = lanes.iter_mut().find(|lane| lane.contains(id)) else {
            return false;
        };
        // Take back a permit: ids = permits + pops that hold one and wait
        // for this lock, so none left means a pop takes this id.
        match self.queued.try_acquire() {
            Ok(permit) => {
                permit.forget();
                lane.remove(id)
            }
            Err(_) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lanes().iter().map(|l| l.len).sum()
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
            queue.push(id.into(), priority, "t").unwrap();
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
        queue.push("a".into(), Priority::Low, "t").unwrap();
        queue.push("b".into(), Priority::High, "t").unwrap();
        assert!(queue.push("c".into(), Priority::High, "u").is_err());
        assert!(queue.remove("a"));
        assert!(!queue.remove("a"));
        queue.push("c".into(), Priority::Normal, "t").unwrap();
        queue.push_accepted("d".into(), Priority::Low, "u");
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop().await.as_deref(), Some("b"));
        assert_eq!(queue.pop().await.as_deref(), Some("c"));
        assert_eq!(queue.pop().await.as_deref(), Some("d"));
    }

    #[tokio::test]
    async fn tenants_take_turns_within_a_priority() {
        let queue = Queue::new(10_000);
        for i in 0..5_000 {
            queue
                .push(format!("a{i}"), Priority::Normal, "flooder")
                .unwrap();
        }
        queue.push("b0".into(), Priority::Normal, "other").unwrap();
        queue.push("b1".into(), Priority::Normal, "other").unwrap();
        queue.push("c0".into(), Priority::Low, "third").unwrap();
        queue.push("h0".into(), Priority::High, "flooder").unwrap();
        let mut first = Vec::new();
        for _ in 0..6 {
            first.push(queue.pop().await.unwrap());
        }
        // Priority first; then one each in turn, whoever queued more.
        assert_eq!(first, ["h0", "a0", "b0", "a1", "b1", "a2"]);
        // A cancelled id leaves its tenant's line; an emptied line leaves
        // the turns.
        queue.push("b2".into(), Priority::Normal, "other").unwrap();
        assert!(queue.remove("b2"));
        assert!(!queue.remove("b2"));
        assert_eq!(queue.pop().await.as_deref(), Some("a3"));
        assert_eq!(queue.pop().await.as_deref(), Some("a4"));
        assert_eq!(queue.len(), 4_995 + 1);
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

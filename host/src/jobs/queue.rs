//! The execution queue, bounded in all and per tenant (whoever an
//! execution's turn is charged to: its creator). Tenants take turns, one
//! execution each; within a tenant, higher priorities go first, then the
//! oldest. So a tenant with 10 000 queued runs delays another's single run
//! by at most one run per tenant ahead of it in the turn, whatever
//! priorities it asks for: priority orders a tenant's own runs, never one
//! tenant's over another's. A semaphore counts the queued ids, so a worker
//! that gets a permit always finds one, and closing it stops the workers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::store::Priority;

pub struct Queue {
    state: Mutex<Queued>,
    capacity: usize,
    per_tenant: usize,
    queued: Semaphore,
}

#[derive(Default)]
struct Queued {
    /// Tenants with queued ids, the next to be served first.
    turns: VecDeque<String>,
    tenants: HashMap<String, Lanes>,
    /// Which tenant each queued id is of, so a removal looks at one tenant.
    tenant_of: HashMap<String, String>,
}

/// One tenant's queued ids, a FIFO per priority: high, normal, low.
#[derive(Default)]
struct Lanes([VecDeque<String>; 3]);

impl Lanes {
    fn len(&self) -> usize {
        self.0.iter().map(VecDeque::len).sum()
    }
}

/// Why an id was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at capacity.
    Full,
    /// The tenant has as many queued as it may.
    TenantFull,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

impl Queued {
    fn push(&mut self, id: String, priority: Priority, tenant: &str) {
        let lanes = self.tenants.entry(tenant.to_owned()).or_insert_with(|| {
            self.turns.push_back(tenant.to_owned());
            Lanes::default()
        });
        lanes.0[lane(priority)].push_back(id.clone());
        self.tenant_of.insert(id, tenant.to_owned());
    }

    /// The first id of the tenant whose turn it is; the tenant goes to the
    /// back of the line if it has more.
    fn pop(&mut self) -> Option<String> {
        let tenant = self.turns.pop_front()?;
        let lanes = self.tenants.get_mut(&tenant)?;
        let id = lanes.0.iter_mut().find_map(VecDeque::pop_front);
        if lanes.len() == 0 {
            self.tenants.remove(&tenant);
        } else {
            self.turns.push_back(tenant);
        }
        if let Some(id) = &id {
            self.tenant_of.remove(id);
        }
        id
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(tenant) = self.tenant_of.remove(id) else {
            return false;
        };
        if let Some(lanes) = self.tenants.get_mut(&tenant) {
            for lane in &mut lanes.0 {
                lane.retain(|queued| queued != id);
            }
            if lanes.len() == 0 {
                self.tenants.remove(&tenant);
                self.turns.retain(|t| *t != tenant);
            }
        }
        true
    }
}

impl Queue {
    /// A queue of at most `capacity` ids, at most `per_tenant` of one tenant.
    pub fn new(capacity: usize, per_tenant: usize) -> Self {
        Self {
            state: Mutex::new(Queued::default()),
            capacity,
            per_tenant,
            queued: Semaphore::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an id of `tenant` unless the queue, or the tenant's share of
    /// it, is full.
    pub fn push(&self, id: String, priority: Priority, tenant: &str) -> Result<(), Refused> {
        let mut state = self.state();
        if state.tenant_of.len() >= self.capacity {
            return Err(Refused::Full);
        }
        if state.tenants.get(tenant).map_or(0, Lanes::len) >= self.per_tenant {
            return Err(Refused::TenantFull);
        }
        state.push(id, priority, tenant);
        // Under the lock, so `remove` always finds the permit of an id it sees.
        self.queued.add_permits(1);
        Ok(())
    }

    /// Adds an id even past the bounds: for executions accepted before a
    /// restart, which must not be refused now.
    pub fn push_accepted(&self, id: String, priority: Priority, tenant: &str) {
        self.state().push(id, priority, tenant);
        self.queued.add_permits(1);
    }

    /// The next id by tenants' turns, then priority, waiting for one; `None`
    /// once closed.
    pub async fn pop(&self) -> Option<String> {
        loop {
            self.queued.acquire().await.ok()?.forget();
            // Permits never outnumber ids, so this finds one; the loop is
            // only a guard.
            if let Some(id) = self.state().pop() {
                return Some(id);
            }
        }
    }

    /// Removes a queued id (a cancelled execution), freeing its place.
    pub fn remove(&self, id: &str) -> bool {
        let mut state = self.state();
        if !state.tenant_of.contains_key(id) {
            return false;
        }
        // Take back a permit: ids = permits + pops that hold one and wait
        // for this lock, so none left means a pop takes this id.
        match self.queued.try_acquire() {
            Ok(permit) => {
                permit.forget();
                state.remove(id)
            }
            Err(_) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.state().tenant_of.len()
    }

    /// How many ids one tenant may have queued.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
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
        let queue = Queue::new(10, 10);
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
        let queue = Queue::new(2, 2);
        queue.push("a".into(), Priority::Low, "t").unwrap();
        queue.push("b".into(), Priority::High, "t").unwrap();
        assert!(queue.push("c".into(), Priority::High, "u").is_err());
        assert!(queue.remove("a"));
        assert!(!queue.remove("a"));
        queue.push("c".into(), Priority::Normal, "t").unwrap();
        queue.push_accepted("d".into(), Priority::Low, "u");
        assert_eq!(queue.len(), 3);
        // t's turn (its high first), then u's, then t's again.
        assert_eq!(queue.pop().await.as_deref(), Some("b"));
        assert_eq!(queue.pop().await.as_deref(), Some("d"));
        assert_eq!(queue.pop().await.as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn tenants_take_turns_whatever_priorities_they_ask_for() {
        let queue = Queue::new(10_000, 10_000);
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
        // One each in turn, whoever queued more or asked for high; a
        // tenant's own high run goes before its normal ones.
        assert_eq!(first, ["h0", "b0", "c0", "a0", "b1", "a1"]);
        // A cancelled id leaves its tenant's line; an emptied line leaves
        // the turns.
        queue.push("b2".into(), Priority::Normal, "other").unwrap();
        assert!(queue.remove("b2"));
        assert!(!queue.remove("b2"));
        assert_eq!(queue.pop().await.as_deref(), Some("a2"));
        assert_eq!(queue.pop().await.as_deref(), Some("a3"));
        assert_eq!(queue.len(), 4_996);
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_of_the_queue() {
        let queue = Queue::new(5, 3);
        for i in 0..3 {
            queue.push(format!("a{i}"), Priority::High, "a").unwrap();
        }
        assert_eq!(
            queue.push("a3".into(), Priority::Low, "a"),
            Err(Refused::TenantFull)
        );
        queue.push("b0".into(), Priority::Normal, "b").unwrap();
        queue.push("c0".into(), Priority::Normal, "c").unwrap();
        assert_eq!(
            queue.push("d0".into(), Priority::Normal, "d"),
            Err(Refused::Full)
        );
        // A run taken frees the tenant's place.
        assert_eq!(queue.pop().await.as_deref(), Some("a0"));
        queue.push("a3".into(), Priority::Low, "a").unwrap();
    }

    #[tokio::test]
    async fn closing_releases_waiting_workers() {
        let queue = std::sync::Arc::new(Queue::new(1, 1));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiting.await.unwrap(), None);
    }
}

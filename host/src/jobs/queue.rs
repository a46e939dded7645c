//! The execution queue, bounded in all and per tenant (whoever an
//! execution's turn is charged to: its creator). Tenants take turns, one
//! execution each; within a tenant, higher priorities go first, then the
//! oldest. So a tenant with 10 000 queued runs delays another's single run
//! by at most one run per tenant ahead of it in the turn, whatever
//! priorities it asks for: priority orders a tenant's own runs, never one
//! tenant's over another's. A tenant may also be held to a number of
//! running executions: its turn is skipped while it has that many, so the
//! other workers stay free for others. A semaphore counts the queued ids;
//! closing it stops the workers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::{Notify, Semaphore};

use crate::store::Priority;

pub struct Queue {
    state: Mutex<Queued>,
    capacity: usize,
    per_tenant: usize,
    /// Running executions one tenant may have; 0: no bound.
    running_per_tenant: usize,
    queued: Semaphore,
    /// Told when a run ends or an id comes, for workers that found only
    /// tenants at their running bound.
    finished: Notify,
}

/// An id a worker took, and its tenant's running turn, given back when
/// this is dropped (however the run ended).
pub struct Taken<'a> {
    pub id: String,
    tenant: String,
    queue: &'a Queue,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.state();
        if let Some(running) = state.running.get_mut(&self.tenant) {
            *running -= 1;
            if *running == 0 {
                state.running.remove(&self.tenant);
            }
        }
        drop(state);
        self.queue.finished.notify_waiters();
    }
}

#[derive(Default)]
struct Queued {
    /// Tenants with queued ids, the next to be served first.
    turns: VecDeque<String>,
    tenants: HashMap<String, Lanes>,
    /// Which tenant each queued id is of, so a removal looks at one tenant.
    tenant_of: HashMap<String, String>,
    /// Tenants' executions taken and not yet finished.
    running: HashMap<String, usize>,
    /// Permits of ids removed while a worker held the permit (a removal
    /// could not take one back): the next pops drop them.
    owed: usize,
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

    /// The first id of the first tenant in turn with fewer than `cap`
    /// running (0: any), and the tenant; it goes to the back of the line if
    /// it has more. Tenants skipped keep their place.
    fn pop(&mut self, cap: usize) -> Option<(String, String)> {
        let at = self.turns.iter().position(|t| {
            cap == 0 || t.is_empty() || self.running.get(t).copied().unwrap_or(0) < cap
        })?;
        let tenant = self.turns.remove(at)?;
        let lanes = self.tenants.get_mut(&tenant)?;
        let id = lanes.0.iter_mut().find_map(VecDeque::pop_front)?;
        if lanes.len() == 0 {
            self.tenants.remove(&tenant);
        } else {
            self.turns.push_back(tenant.clone());
        }
        self.tenant_of.remove(&id);
        *self.running.entry(tenant.clone()).or_default() += 1;
        Some((id, tenant))
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
    /// A queue of at most `capacity` ids, at most `per_tenant` of one
    /// tenant, whose tenants run at most `running_per_tenant` at once (0: no
    /// bound).
    pub fn new(capacity: usize, per_tenant: usize, running_per_tenant: usize) -> Self {
        Self {
            state: Mutex::new(Queued::default()),
            capacity,
            per_tenant,
            running_per_tenant,
            queued: Semaphore::new(0),
            finished: Notify::new(),
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
        // The empty tenant is everyone when no one is known (authentication
        // off): the queue's own bound is its only one.
        if !tenant.is_empty() && state.tenants.get(tenant).map_or(0, Lanes::len) >= self.per_tenant
        {
            return Err(Refused::TenantFull);
        }
        state.push(id, priority, tenant);
        // Under the lock, so `remove` always finds the permit of an id it sees.
        self.queued.add_permits(1);
        drop(state);
        // A worker waiting out capped tenants may take this one.
        self.finished.notify_waiters();
        Ok(())
    }

    /// Adds an id even past the bounds: for executions accepted before a
    /// restart, which must not be refused now.
    pub fn push_accepted(&self, id: String, priority: Priority, tenant: &str) {
        self.state().push(id, priority, tenant);
        self.queued.add_permits(1);
        self.finished.notify_waiters();
    }

    /// The next id by tenants' turns, then priority, waiting for one that
    /// a tenant under its running bound has; `None` once closed.
    pub async fn pop(&self) -> Option<Taken<'_>> {
        loop {
            let permit = self.queued.acquire().await.ok()?;
            let finished = self.finished.notified();
            tokio::pin!(finished);
            {
                let mut state = self.state();
                if state.owed > 0 {
                    state.owed -= 1;
                    permit.forget();
                    continue;
                }
                if let Some((id, tenant)) = state.pop(self.running_per_tenant) {
                    permit.forget();
                    return Some(Taken {
                        id,
                        tenant,
                        queue: self,
                    });
                }
                // Every queued id is of a tenant at its bound: the permit
                // goes back, and this worker waits for a run to end. Asked
                // for before the lock is let go, so an end in between is
                // not missed.
                finished.as_mut().enable();
            }
            drop(permit);
            finished.await;
        }
    }

    /// Removes a queued id (a cancelled execution), freeing its place.
    pub fn remove(&self, id: &str) -> bool {
        let mut state = self.state();
        if !state.remove(id) {
            return false;
        }
        // Its permit goes too: taken back now, or, when a worker holds it
        // (waiting for this lock, or about to give it back because every
        // tenant was at its running bound), dropped by the next pop.
        match self.queued.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => state.owed += 1,
        }
        true
    }

    pub fn len(&self) -> usize {
        self.state().tenant_of.len()
    }

    /// Whether `tenant` has room for another id.
    pub fn admits(&self, tenant: &str) -> bool {
        tenant.is_empty()
            || self.state().tenants.get(tenant).map_or(0, Lanes::len) < self.per_tenant
    }

    /// How many ids one tenant may have queued.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// Wakes every waiting worker with `None`.
    pub fn close(&self) {
        self.queued.close();
        self.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn higher_priorities_go_first_and_each_lane_is_fifo() {
        let queue = Queue::new(10, 10, 0);
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
            order.push(queue.pop().await.unwrap().id.clone());
        }
        assert_eq!(order, ["h1", "h2", "n1", "n2", "l1"]);
    }

    #[tokio::test]
    async fn capacity_counts_every_lane_and_removal_frees_a_place() {
        let queue = Queue::new(2, 2, 0);
        queue.push("a".into(), Priority::Low, "t").unwrap();
        queue.push("b".into(), Priority::High, "t").unwrap();
        assert!(queue.push("c".into(), Priority::High, "u").is_err());
        assert!(queue.remove("a"));
        assert!(!queue.remove("a"));
        queue.push("c".into(), Priority::Normal, "t").unwrap();
        queue.push_accepted("d".into(), Priority::Low, "u");
        assert_eq!(queue.len(), 3);
        // t's turn (its high first), then u's, then t's again.
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("b")
        );
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("d")
        );
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("c")
        );
    }

    #[tokio::test]
    async fn tenants_take_turns_whatever_priorities_they_ask_for() {
        let queue = Queue::new(10_000, 10_000, 0);
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
            first.push(queue.pop().await.unwrap().id.clone());
        }
        // One each in turn, whoever queued more or asked for high; a
        // tenant's own high run goes before its normal ones.
        assert_eq!(first, ["h0", "b0", "c0", "a0", "b1", "a1"]);
        // A cancelled id leaves its tenant's line; an emptied line leaves
        // the turns.
        queue.push("b2".into(), Priority::Normal, "other").unwrap();
        assert!(queue.remove("b2"));
        assert!(!queue.remove("b2"));
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("a2")
        );
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("a3")
        );
        assert_eq!(queue.len(), 4_996);
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_of_the_queue() {
        let queue = Queue::new(5, 3, 0);
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
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("a0")
        );
        queue.push("a3".into(), Priority::Low, "a").unwrap();
    }

    #[tokio::test]
    async fn a_tenant_at_its_running_bound_waits_while_others_run() {
        let queue = std::sync::Arc::new(Queue::new(10, 10, 1));
        queue.push("a0".into(), Priority::Normal, "a").unwrap();
        queue.push("a1".into(), Priority::Normal, "a").unwrap();
        queue.push("b0".into(), Priority::Normal, "b").unwrap();
        let a0 = queue.pop().await.unwrap();
        assert_eq!(a0.id, "a0");
        // a is at its bound: b goes, though a's turn came first.
        let b0 = queue.pop().await.unwrap();
        assert_eq!(b0.id, "b0");
        // Only a's run is left and a is at its bound: a worker waits...
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.map(|t| t.id.clone()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // ...until a's run ends (b's ending did not free a), or another
        // tenant's run comes.
        queue.push("c0".into(), Priority::Low, "c").unwrap();
        assert_eq!(waiting.await.unwrap().as_deref(), Some("c0"));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.map(|t| t.id.clone()) }
        });
        drop(b0);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(a0);
        assert_eq!(waiting.await.unwrap().as_deref(), Some("a1"));
        assert_eq!(queue.len(), 0);
    }

    #[tokio::test]
    async fn a_removal_while_a_worker_holds_the_permit_is_not_lost() {
        let queue = std::sync::Arc::new(Queue::new(10, 10, 1));
        queue.push("a0".into(), Priority::Normal, "a").unwrap();
        let a0 = queue.pop().await.unwrap();
        queue.push("a1".into(), Priority::Normal, "a").unwrap();
        // A worker holds a1's permit (as one does between its wake-up and
        // giving the permit back): the removal cannot take it back.
        let held = queue.queued.try_acquire().unwrap();
        assert!(queue.remove("a1"));
        assert_eq!(queue.len(), 0);
        drop(held);
        drop(a0);
        // The permit is dropped by the next pop, which then waits for a
        // real id instead of finding none.
        queue.push("b0".into(), Priority::Normal, "b").unwrap();
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("b0")
        );
        assert_eq!(queue.queued.available_permits(), 0);
    }

    #[tokio::test]
    async fn no_one_known_is_one_tenant_without_per_tenant_bounds() {
        let queue = Queue::new(3, 1, 1);
        for i in 0..3 {
            queue.push(format!("x{i}"), Priority::Normal, "").unwrap();
        }
        assert_eq!(
            queue.push("x3".into(), Priority::Normal, ""),
            Err(Refused::Full)
        );
        let (x0, x1) = (queue.pop().await.unwrap(), queue.pop().await.unwrap());
        assert_eq!((x0.id.as_str(), x1.id.as_str()), ("x0", "x1"));
    }

    #[tokio::test]
    async fn closing_releases_waiting_workers() {
        let queue = std::sync::Arc::new(Queue::new(1, 1, 0));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.map(|t| t.id.clone()) }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(waiting.await.unwrap().is_none());
    }
}

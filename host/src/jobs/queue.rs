//! The execution queue, bounded in all and per tenant. A tenant is an
//! organization and, within it, a user (an execution's creator). Turns are
//! two-level: organizations take turns, one execution each, and within an
//! organization its users take turns; within a user, higher priorities go
//! first, then the oldest. So an organization with 10 000 queued runs
//! delays another's single run by at most one run per organization ahead
//! of it, however many users it has and whatever priorities they ask for.
//! A user, and an organization, may also be held to a number of running
//! executions: their turn is skipped while they have that many, so the
//! other workers stay free for others. A semaphore counts the queued ids;
//! closing it stops the workers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::{Notify, Semaphore};

use crate::store::Priority;

/// Whose turn an execution takes: its organization's, then its user's
/// there. An empty user is everyone when no one is known (authentication
/// off), with no per-user bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub org: String,
    pub user: String,
}

/// How much one user and one organization may hold: queued ids, and
/// running ones (0: no bound).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub queued_per_user: usize,
    /// Queued ids of one organization, whatever its users (0: none).
    pub queued_per_org: usize,
    pub running_per_user: usize,
    pub running_per_org: usize,
}

pub struct Queue {
    state: Mutex<Queued>,
    capacity: usize,
    bounds: Bounds,
    queued: Semaphore,
    /// Told when a run ends or an id comes, for workers that found only
    /// tenants at their running bound.
    finished: Notify,
}

/// An id a worker took, and its tenant's running turn, given back when
/// this is dropped (however the run ended).
pub struct Taken<'a> {
    pub id: String,
    tenant: Tenant,
    queue: &'a Queue,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.state();
        let Queued {
            running,
            running_orgs,
            ..
        } = &mut *state;
        less(running, &self.tenant);
        less(running_orgs, &self.tenant.org);
        drop(state);
        self.queue.finished.notify_waiters();
    }
}

/// One fewer of `key`, forgotten at none.
fn less<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[derive(Default)]
struct Queued {
    /// Organizations with queued ids, the next to be served first.
    orgs: VecDeque<String>,
    /// Per organization in `orgs`: its users with queued ids, in turn.
    turns: HashMap<String, VecDeque<String>>,
    tenants: HashMap<Tenant, Lanes>,
    /// Which tenant each queued id is of, so a removal looks at one tenant.
    tenant_of: HashMap<String, Tenant>,
    /// Tenants' and organizations' executions taken and not yet finished.
    running: HashMap<Tenant, usize>,
    running_orgs: HashMap<String, usize>,
    /// Queued ids per organization.
    queued_orgs: HashMap<String, usize>,
    /// Organizations' own running bounds (their quotas), under the
    /// queue's; bounded by the organizations.
    org_caps: HashMap<String, usize>,
    /// Organizations' executions running on the other nodes of a shared
    /// store, as last read (each second), which count against their own
    /// bounds; bounded by the organizations.
    elsewhere: HashMap<String, usize>,
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
    /// The tenant's organization has as many queued as it may.
    OrgFull,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// Under a bound of `cap` (0: none), holding `held`.
fn under(cap: usize, held: Option<&usize>) -> bool {
    cap == 0 || held.copied().unwrap_or(0) < cap
}

impl Queued {
    fn push(&mut self, id: String, priority: Priority, tenant: &Tenant) {
        let lanes = self.tenants.entry(tenant.clone()).or_insert_with(|| {
            let users = self.turns.entry(tenant.org.clone()).or_insert_with(|| {
                self.orgs.push_back(tenant.org.clone());
                VecDeque::new()
            });
            users.push_back(tenant.user.clone());
            Lanes::default()
        });
        lanes.0[lane(priority)].push_back(id.clone());
        self.tenant_of.insert(id, tenant.clone());
        *self.queued_orgs.entry(tenant.org.clone()).or_default() += 1;
    }

    /// Whether `org` may start one more run here: under the queue's bound
    /// of runs per organization on this node, and under its own bound (its
    /// quota) counting its runs on the other nodes too.
    fn org_under(&self, org: &str, bounds: &Bounds) -> bool {
        let here = self.running_orgs.get(org).copied().unwrap_or(0);
        let everywhere = here + self.elsewhere.get(org).copied().unwrap_or(0);
        under(bounds.running_per_org, Some(&here))
            && under(
                self.org_caps.get(org).copied().unwrap_or(0),
                Some(&everywhere),
            )
    }

    /// The first id of the first user in turn, of the first organization
    /// in turn, each under its running bound (`bounds`), and its tenant;
    /// both go to the back of their lines if they have more. Those skipped
    /// keep their places.
    fn pop(&mut self, bounds: &Bounds) -> Option<(String, Tenant)> {
        let (at_org, at_user) = self.orgs.iter().enumerate().find_map(|(i, org)| {
            if !self.org_under(org, bounds) {
                return None;
            }
            let users = self.turns.get(org)?;
            let j = users.iter().position(|user| {
                let tenant = Tenant {
                    org: org.clone(),
                    user: user.clone(),
                };
                user.is_empty() || under(bounds.running_per_user, self.running.get(&tenant))
            })?;
            Some((i, j))
        })?;
        let org = self.orgs.remove(at_org)?;
        let users = self.turns.get_mut(&org)?;
        let user = users.remove(at_user)?;
        let tenant = Tenant { org, user };
        let lanes = self.tenants.get_mut(&tenant)?;
        let id = lanes.0.iter_mut().find_map(VecDeque::pop_front)?;
        if lanes.len() == 0 {
            self.tenants.remove(&tenant);
        } else {
            users.push_back(tenant.user.clone());
        }
        if users.is_empty() {
            self.turns.remove(&tenant.org);
        } else {
            self.orgs.push_back(tenant.org.clone());
        }
        self.tenant_of.remove(&id);
        less(&mut self.queued_orgs, &tenant.org);
        *self.running.entry(tenant.clone()).or_default() += 1;
        *self.running_orgs.entry(tenant.org.clone()).or_default() += 1;
        Some((id, tenant))
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(tenant) = self.tenant_of.remove(id) else {
            return false;
        };
        less(&mut self.queued_orgs, &tenant.org);
        if let Some(lanes) = self.tenants.get_mut(&tenant) {
            for lane in &mut lanes.0 {
                lane.retain(|queued| queued != id);
            }
            if lanes.len() == 0 {
                self.tenants.remove(&tenant);
                if let Some(users) = self.turns.get_mut(&tenant.org) {
                    users.retain(|u| *u != tenant.user);
                    if users.is_empty() {
                        self.turns.remove(&tenant.org);
                        self.orgs.retain(|o| *o != tenant.org);
                    }
                }
            }
        }
        true
    }

    fn queued_of(&self, tenant: &Tenant) -> usize {
        self.tenants.get(tenant).map_or(0, Lanes::len)
    }
}

impl Queue {
    /// A queue of at most `capacity` ids, whose users and organizations
    /// hold at most what `bounds` says.
    pub fn new(capacity: usize, bounds: Bounds) -> Self {
        Self {
            state: Mutex::new(Queued::default()),
            capacity,
            bounds,
            queued: Semaphore::new(0),
            finished: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an id of `tenant` unless the queue, or the tenant's share of
    /// it, is full.
    pub fn push(&self, id: String, priority: Priority, tenant: &Tenant) -> Result<(), Refused> {
        let mut state = self.state();
        if state.tenant_of.len() >= self.capacity {
            return Err(Refused::Full);
        }
        self.within_shares(&state, tenant)?;
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
    pub fn push_accepted(&self, id: String, priority: Priority, tenant: &Tenant) {
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
                if let Some((id, tenant)) = state.pop(&self.bounds) {
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

    /// Whether `id` waits in this queue.
    pub fn contains(&self, id: &str) -> bool {
        self.state().tenant_of.contains_key(id)
    }

    /// Places left before the queue is at capacity.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Whether `tenant` has room for another id; `Err` says whose share
    /// is full.
    pub fn admits(&self, tenant: &Tenant) -> Result<(), Refused> {
        self.within_shares(&self.state(), tenant)
    }

    /// Whether `tenant`'s user and organization have room for another id.
    /// The empty user is everyone when no one is known (authentication
    /// off): the queue's own bound is its only one.
    fn within_shares(&self, state: &Queued, tenant: &Tenant) -> Result<(), Refused> {
        if tenant.user.is_empty() {
            return Ok(());
        }
        if state.queued_of(tenant) >= self.bounds.queued_per_user {
            return Err(Refused::TenantFull);
        }
        if !under(
            self.bounds.queued_per_org,
            state.queued_orgs.get(&tenant.org),
        ) {
            return Err(Refused::OrgFull);
        }
        Ok(())
    }

    /// How many ids one organization may have queued (0: no bound).
    pub fn per_org(&self) -> usize {
        self.bounds.queued_per_org
    }

    /// How many executions of `org` are queued or running.
    pub fn live_of(&self, org: &str) -> usize {
        let state = self.state();
        state.queued_orgs.get(org).copied().unwrap_or(0)
            + state.running_orgs.get(org).copied().unwrap_or(0)
    }

    /// Holds `org` to `cap` running executions (`None`: only the queue's
    /// bound), as its quota says.
    pub fn set_org_cap(&self, org: &str, cap: Option<usize>) {
        let mut state = self.state();
        match cap {
            Some(cap) => state.org_caps.insert(org.to_owned(), cap.max(1)),
            None => state.org_caps.remove(org),
        };
        drop(state);
        // A raised bound may let a waiting worker take a run.
        self.finished.notify_waiters();
    }

    /// `org`'s own running bound (its quota), if it has one.
    pub fn quota_cap(&self, org: &str) -> Option<usize> {
        self.state().org_caps.get(org).copied()
    }

    /// The executions each organization runs on the other nodes, as just
    /// read from the store.
    pub fn set_elsewhere(&self, running: HashMap<String, usize>) {
        self.state().elsewhere = running;
        // Fewer elsewhere may let a waiting worker take a run.
        self.finished.notify_waiters();
    }

    /// Holds `org` at its own bound until the next [`Self::set_elsewhere`]:
    /// the store found it running as many as it may on all the nodes.
    pub fn hold_org(&self, org: &str) {
        let mut state = self.state();
        if let Some(cap) = state.org_caps.get(org).copied() {
            state.elsewhere.insert(org.to_owned(), cap);
        }
    }

    /// How many ids one user may have queued.
    pub fn per_tenant(&self) -> usize {
        self.bounds.queued_per_user
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

    fn bounds(queued_per_user: usize, running_per_user: usize, running_per_org: usize) -> Bounds {
        Bounds {
            queued_per_user,
            queued_per_org: 0,
            running_per_user,
            running_per_org,
        }
    }

    #[tokio::test]
    async fn one_organization_holds_at_most_its_share_of_the_queue() {
        let queue = Queue::new(
            10,
            Bounds {
                queued_per_org: 3,
                ..bounds(2, 0, 0)
            },
        );
        for (id, name) in [("a1", "u1"), ("a2", "u1"), ("a3", "u2")] {
            queue
                .push(id.into(), Priority::Normal, &member("a", name))
                .unwrap();
        }
        // Another user of a is refused, though under its own share...
        assert_eq!(
            queue.push("a4".into(), Priority::Normal, &member("a", "u3")),
            Err(Refused::OrgFull)
        );
        assert_eq!(queue.admits(&member("a", "u3")), Err(Refused::OrgFull));
        // ...and another organization is not.
        queue
            .push("b1".into(), Priority::Normal, &member("b", "u1"))
            .unwrap();
        assert_eq!(queue.admits(&member("b", "u1")), Ok(()));
        let taken = queue.pop().await.unwrap();
        assert_eq!(taken.id, "a1");
        assert_eq!(queue.admits(&member("a", "u3")), Ok(()));
    }

    /// A user of one organization.
    fn user(name: &str) -> Tenant {
        member("o", name)
    }

    fn member(org: &str, name: &str) -> Tenant {
        Tenant {
            org: org.into(),
            user: name.into(),
        }
    }

    #[tokio::test]
    async fn organizations_take_turns_then_their_users() {
        let queue = Queue::new(10_000, bounds(10_000, 0, 0));
        // Organization a floods with three users; b has one run.
        for i in 0..1_000 {
            for name in ["a1", "a2", "a3"] {
                queue
                    .push(format!("{name}-{i}"), Priority::High, &member("a", name))
                    .unwrap();
            }
        }
        queue
            .push("b".into(), Priority::Low, &member("b", "b1"))
            .unwrap();
        let mut first = Vec::new();
        for _ in 0..5 {
            first.push(queue.pop().await.unwrap().id.clone());
        }
        // b's run goes second, however many users a has; a's users take
        // turns among themselves.
        assert_eq!(first, ["a1-0", "b", "a2-0", "a3-0", "a1-1"]);
    }

    #[tokio::test]
    async fn an_organization_s_own_bound_and_its_live_count() {
        let queue = Queue::new(100, bounds(100, 0, 0));
        queue.set_org_cap("a", Some(1));
        for name in ["a1", "a2"] {
            queue
                .push(name.into(), Priority::Normal, &member("a", name))
                .unwrap();
        }
        queue
            .push("b1".into(), Priority::Normal, &member("b", "b1"))
            .unwrap();
        assert_eq!((queue.live_of("a"), queue.live_of("b")), (2, 1));
        let a1 = queue.pop().await.unwrap();
        let b1 = queue.pop().await.unwrap();
        assert_eq!((a1.id.as_str(), b1.id.as_str()), ("a1", "b1"));
        assert_eq!(queue.live_of("a"), 2, "one running, one queued");
        drop(b1);
        assert_eq!(queue.live_of("b"), 0);
        // Raised, a's second goes though its first still runs.
        queue.set_org_cap("a", Some(2));
        assert_eq!(queue.pop().await.unwrap().id, "a2");
        drop(a1);
        assert!(!queue.remove("none"));
    }

    #[tokio::test]
    async fn an_organization_at_its_running_bound_leaves_workers_to_others() {
        let queue = std::sync::Arc::new(Queue::new(100, bounds(100, 0, 2)));
        for name in ["a1", "a2", "a3"] {
            queue
                .push(name.into(), Priority::Normal, &member("a", name))
                .unwrap();
        }
        queue
            .push("b1".into(), Priority::Normal, &member("b", "b1"))
            .unwrap();
        let (first, second) = (queue.pop().await.unwrap(), queue.pop().await.unwrap());
        assert_eq!((first.id.as_str(), second.id.as_str()), ("a1", "b1"));
        let third = queue.pop().await.unwrap();
        assert_eq!(third.id, "a2");
        // a runs two: its third waits though workers are free...
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.map(|t| t.id.clone()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(second);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "b's end frees none of a's places");
        // ...until one of a's ends.
        drop(first);
        assert_eq!(waiting.await.unwrap().as_deref(), Some("a3"));
        drop(third);
    }

    #[tokio::test]
    async fn higher_priorities_go_first_and_each_lane_is_fifo() {
        let queue = Queue::new(10, bounds(10, 0, 0));
        for (id, priority) in [
            ("n1", Priority::Normal),
            ("l1", Priority::Low),
            ("h1", Priority::High),
            ("n2", Priority::Normal),
            ("h2", Priority::High),
        ] {
            queue.push(id.into(), priority, &user("t")).unwrap();
        }
        let mut order = Vec::new();
        while queue.len() > 0 {
            order.push(queue.pop().await.unwrap().id.clone());
        }
        assert_eq!(order, ["h1", "h2", "n1", "n2", "l1"]);
    }

    #[tokio::test]
    async fn capacity_counts_every_lane_and_removal_frees_a_place() {
        let queue = Queue::new(2, bounds(2, 0, 0));
        queue.push("a".into(), Priority::Low, &user("t")).unwrap();
        queue.push("b".into(), Priority::High, &user("t")).unwrap();
        assert!(queue.push("c".into(), Priority::High, &user("u")).is_err());
        assert!(queue.remove("a"));
        assert!(!queue.remove("a"));
        queue
            .push("c".into(), Priority::Normal, &user("t"))
            .unwrap();
        queue.push_accepted("d".into(), Priority::Low, &user("u"));
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
        let queue = Queue::new(10_000, bounds(10_000, 0, 0));
        for i in 0..5_000 {
            queue
                .push(format!("a{i}"), Priority::Normal, &user("flooder"))
                .unwrap();
        }
        queue
            .push("b0".into(), Priority::Normal, &user("other"))
            .unwrap();
        queue
            .push("b1".into(), Priority::Normal, &user("other"))
            .unwrap();
        queue
            .push("c0".into(), Priority::Low, &user("third"))
            .unwrap();
        queue
            .push("h0".into(), Priority::High, &user("flooder"))
            .unwrap();
        let mut first = Vec::new();
        for _ in 0..6 {
            first.push(queue.pop().await.unwrap().id.clone());
        }
        // One each in turn, whoever queued more or asked for high; a
        // tenant's own high run goes before its normal ones.
        assert_eq!(first, ["h0", "b0", "c0", "a0", "b1", "a1"]);
        // A cancelled id leaves its tenant's line; an emptied line leaves
        // the turns.
        queue
            .push("b2".into(), Priority::Normal, &user("other"))
            .unwrap();
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
        let queue = Queue::new(5, bounds(3, 0, 0));
        for i in 0..3 {
            queue
                .push(format!("a{i}"), Priority::High, &user("a"))
                .unwrap();
        }
        assert_eq!(
            queue.push("a3".into(), Priority::Low, &user("a")),
            Err(Refused::TenantFull)
        );
        queue
            .push("b0".into(), Priority::Normal, &user("b"))
            .unwrap();
        queue
            .push("c0".into(), Priority::Normal, &user("c"))
            .unwrap();
        assert_eq!(
            queue.push("d0".into(), Priority::Normal, &user("d")),
            Err(Refused::Full)
        );
        // A run taken frees the tenant's place.
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("a0")
        );
        queue.push("a3".into(), Priority::Low, &user("a")).unwrap();
    }

    #[tokio::test]
    async fn a_tenant_at_its_running_bound_waits_while_others_run() {
        let queue = std::sync::Arc::new(Queue::new(10, bounds(10, 1, 0)));
        queue
            .push("a0".into(), Priority::Normal, &user("a"))
            .unwrap();
        queue
            .push("a1".into(), Priority::Normal, &user("a"))
            .unwrap();
        queue
            .push("b0".into(), Priority::Normal, &user("b"))
            .unwrap();
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
        queue.push("c0".into(), Priority::Low, &user("c")).unwrap();
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
        let queue = std::sync::Arc::new(Queue::new(10, bounds(10, 1, 0)));
        queue
            .push("a0".into(), Priority::Normal, &user("a"))
            .unwrap();
        let a0 = queue.pop().await.unwrap();
        queue
            .push("a1".into(), Priority::Normal, &user("a"))
            .unwrap();
        // A worker holds a1's permit (as one does between its wake-up and
        // giving the permit back): the removal cannot take it back.
        let held = queue.queued.try_acquire().unwrap();
        assert!(queue.remove("a1"));
        assert_eq!(queue.len(), 0);
        drop(held);
        drop(a0);
        // The permit is dropped by the next pop, which then waits for a
        // real id instead of finding none.
        queue
            .push("b0".into(), Priority::Normal, &user("b"))
            .unwrap();
        assert_eq!(
            queue.pop().await.map(|t| t.id.clone()).as_deref(),
            Some("b0")
        );
        assert_eq!(queue.queued.available_permits(), 0);
    }

    #[tokio::test]
    async fn no_one_known_is_one_tenant_without_per_tenant_bounds() {
        let queue = Queue::new(3, bounds(1, 1, 0));
        for i in 0..3 {
            queue
                .push(format!("x{i}"), Priority::Normal, &user(""))
                .unwrap();
        }
        assert_eq!(
            queue.push("x3".into(), Priority::Normal, &user("")),
            Err(Refused::Full)
        );
        let (x0, x1) = (queue.pop().await.unwrap(), queue.pop().await.unwrap());
        assert_eq!((x0.id.as_str(), x1.id.as_str()), ("x0", "x1"));
    }

    #[tokio::test]
    async fn closing_releases_waiting_workers() {
        let queue = std::sync::Arc::new(Queue::new(1, bounds(1, 0, 0)));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.map(|t| t.id.clone()) }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(waiting.await.unwrap().is_none());
    }
}

//! The execution queue, its workers' turns and the state they share:
//! completion signals, the running executions' cancel handles, live output,
//! the HTTP function slots (`functions.rs`) and draining. Handlers store an execution as
//! `queued`, flush, then [`Jobs::enqueue`] it; a worker (an [`Execute`],
//! `executions::Worker`) claims it, runs it and stores the final record.
//! Nothing runs guest code on an HTTP task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_runtime::CancelHandle;
use tokio::sync::watch;

use self::functions::FunctionSlots;
use self::queue::Queue;
use crate::contract;
use crate::metrics::{ExecutionLoad, ExecutionMetrics};
use crate::store::executions::Claimed;
use crate::store::webhooks::DeliveryRecord;
use crate::store::{ExecutionCode, ExecutionRecord, ExecutionStatus, Store, StoreError};

mod functions;
pub mod leases;
pub mod live;
mod queue;
mod settling;
pub mod signals;

use self::settling::Waiting;
pub use self::settling::{Settled, lost};

use self::live::LiveOutputs;

/// Why an execution could not be queued or run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the execution queue is full")]
    QueueFull,
    /// The caller's share of the queue is full (`workers.queued_per_user`).
    #[error(
        "{0} of your executions are queued already, as many as one user may have; retry when some have run"
    )]
    TenantFull(usize),
    #[error(
        "{0} of your organization's executions are queued already, as many as one organization may have; retry when some have run"
    )]
    OrgFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The queue's sending side plus the completion signals of queued executions.
pub struct Jobs {
    queue: Queue,
    metrics: ExecutionMetrics,
    /// Completion signals of executions queued here, and of runs on other
    /// nodes that a request here waits for, until they settle.
    done: Mutex<HashMap<String, Waiting>>,
    /// Cancel handles of executions running here (registered before their
    /// claim is written, so a cancel that finds a record running here finds
    /// its handle) and of HTTP function requests.
    running: Mutex<HashMap<String, CancelHandle>>,
    /// Live output of executions not yet final, for `/events` subscribers.
    pub output: LiveOutputs,
    /// Set on shutdown: workers take no new executions (they stay queued in
    /// the store for the next start).
    draining: AtomicBool,
    /// The store is shared with other nodes (`store.shared`).
    shared: AtomicBool,
    /// Set when the drain timeout passed: runs stopped now are INTERRUPTED.
    interrupting: AtomicBool,
    /// Told of every execution that became final, before it is flushed
    /// (webhook events go into the outbox with the same flush).
    on_final: std::sync::OnceLock<Arc<dyn FinalEvents>>,
    /// Executions that became final since start (crate::memory watches it).
    finished_count: std::sync::atomic::AtomicU64,
    /// Turns for HTTP function requests, which do not queue.
    functions: FunctionSlots,
    /// A task that writes deferred final records is spawned and has not
    /// started ([`Jobs::apply_deferred_soon`]).
    applying: AtomicBool,
}

/// What a record that becomes final makes besides itself: the webhook
/// deliveries of its end, stored with it (`ExecutionStore::finish_execution`),
/// and a nudge to their deliverer once they are.
pub trait FinalEvents: Send + Sync {
    /// The deliveries `record`'s end makes (none when nobody subscribes);
    /// an error leaves the record unstored too.
    fn deliveries<'a>(
        &'a self,
        record: &'a ExecutionRecord,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<DeliveryRecord>, StoreError>>;
    /// Deliveries were stored.
    fn stored(&self);
}

/// What runs a queued execution (`executions::Worker`): it claims the
/// record ([`Jobs::claim`]), runs it, stores the final record
/// ([`Jobs::record_final`]) and settles its waiters ([`Jobs::settle`]).
pub trait Execute: Send + Sync + 'static {
    fn execute(&self, id: &str) -> impl std::future::Future<Output = ()> + Send;
}

/// What one user may hold of the queue: executions queued, and running
/// (0: as many as there are workers); and what one organization may run.
#[derive(Debug, Clone, Copy)]
pub struct QueueShare {
    pub queued: usize,
    pub running: usize,
    pub queued_per_org: usize,
    pub running_per_org: usize,
}

impl QueueShare {
    /// No bound below the queue's own (for tests).
    #[cfg(test)]
    pub fn whole(capacity: usize) -> Self {
        Self {
            queued: capacity,
            running: 0,
            queued_per_org: 0,
            running_per_org: 0,
        }
    }
}

/// What [`Jobs::cancel`] did.
pub enum Cancelled {
    /// It was queued, or its record read running here with nothing
    /// running it any more (its run's end could not be stored); it is now
    /// stored as cancelled.
    Recorded(Box<ExecutionRecord>),
    /// It was running; the receiver settles when the worker has stored it.
    WhileRunning(watch::Receiver<Settled>),
    /// It had already finished.
    AlreadyFinal,
}

impl Jobs {
    /// A queue of `capacity`, of which one user holds `per_user`, and
    /// turns for as many HTTP function requests at once as there are
    /// `workers`; [`Jobs::spawn_workers`] starts them.
    pub fn new(
        workers: usize,
        capacity: usize,
        per_user: QueueShare,
        metrics: ExecutionMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue: Queue::new(
                capacity,
                queue::Bounds {
                    queued_per_user: per_user.queued,
                    queued_per_org: per_user.queued_per_org,
                    running_per_user: per_user.running,
                    running_per_org: per_user.running_per_org,
                },
            ),
            metrics,
            done: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            output: LiveOutputs::default(),
            draining: AtomicBool::new(false),
            shared: AtomicBool::new(false),
            interrupting: AtomicBool::new(false),
            on_final: std::sync::OnceLock::new(),
            finished_count: std::sync::atomic::AtomicU64::new(0),
            functions: FunctionSlots::new(workers, capacity),
            applying: AtomicBool::new(false),
        })
    }

    /// Starts `count` workers that take executions off the queue, in its
    /// order (`queue.rs`), and hand each to `executor` until it closes.
    pub fn spawn_workers<E: Execute>(self: &Arc<Self>, count: usize, executor: Arc<E>) {
        for _ in 0..count.max(1) {
            let (jobs, executor) = (self.clone(), executor.clone());
            tokio::spawn(async move {
                while let Some(taken) = jobs.queue.pop().await {
                    if !jobs.draining.load(Ordering::Acquire) {
                        executor.execute(&taken.id).await;
                    }
                    // Dropping `taken` ends its tenant's running turn.
                }
            });
        }
    }

    /// Notes that other nodes share the store: organizations' running
    /// bounds then count their runs on every node.
    pub fn set_shared(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// Sets what every final execution makes (once; later calls are
    /// ignored).
    pub fn on_final(&self, events: Arc<dyn FinalEvents>) {
        let _ = self.on_final.set(events);
    }

    /// A turn to run an HTTP function request, waiting while as many run as
    /// there are workers.
    ///
    /// # Errors
    ///
    /// [`JobError::QueueFull`] when `capacity` requests already wait,
    /// [`JobError::ShuttingDown`] while draining.
    pub async fn function_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, JobError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(JobError::ShuttingDown);
        }
        self.functions
            .acquire()
            .await
            .map_err(|functions::Busy| JobError::QueueFull)
    }

    /// Counts a run that is not a queued execution (an HTTP function
    /// request) among the running ones until the guard is dropped, so that
    /// draining waits for it and then stops it.
    pub fn track(&self, id: &str, cancel: CancelHandle) -> Tracked<'_> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), cancel);
        Tracked {
            jobs: self,
            id: id.to_string(),
        }
    }

    /// Moves a queued execution to running (stored, not flushed) and
    /// returns it with the handle that cancels it; `None` if it is no
    /// longer queued, or if its organization runs as many as it may on
    /// all the nodes (then it is back in this queue). A compare-and-swap of
    /// the store, as a cancel of a queued execution is, so a cancel and a
    /// worker never both win.
    ///
    /// # Errors
    ///
    /// The record could not be read or stored.
    pub async fn claim(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<(ExecutionRecord, CancelHandle)>, StoreError> {
        let cancel = CancelHandle::new();
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.contains_key(id) {
                // Claimed here already (or being claimed).
                return Ok(None);
            }
            running.insert(id.to_string(), cancel.clone());
        }
        // Written only over a queued record: of the nodes (and the cancel)
        // that race for it, one wins.
        let (started_at, node) = (crate::now(), store.node().map(str::to_owned));
        // On a shared store an organization's quota bounds its runs on all
        // the nodes: the store counts them.
        let shared = self.shared.load(Ordering::Relaxed);
        let org_cap = |org: &str| shared.then(|| self.queue.quota_cap(org)).flatten();
        let claimed = store
            .claim_execution(
                id,
                &|current| {
                    (current.status == ExecutionStatus::Queued).then(|| ExecutionRecord {
                        status: ExecutionStatus::Running,
                        started_at: Some(started_at.clone()),
                        node: node.clone(),
                        ..current.clone()
                    })
                },
                &org_cap,
            )
            .await;
        match claimed {
            Ok(Claimed::Running(record)) => Ok(Some((record, cancel))),
            Ok(Claimed::OrgAtCap(queued)) => {
                // Back in the queue, its organization held until the next
                // count of what runs elsewhere (`leases::keep`).
                self.release(id);
                self.queue.hold_org(crate::store::orgs::InOrg::org(&queued));
                // Not if a cancel settled it meanwhile.
                if self.is_settling(id) {
                    self.queue
                        .push_accepted(id.to_owned(), queued.priority, &tenant(&queued));
                }
                Ok(None)
            }
            lost => {
                self.release(id);
                lost.map(|_| None)
            }
        }
    }

    /// Whether execution `id` runs on this node (claimed here, not yet
    /// released).
    pub fn runs_here(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Whether execution `id` waits in this node's queue.
    pub fn is_queued(&self, id: &str) -> bool {
        self.queue.contains(id)
    }

    /// Whether execution `id` is queued or runs on this node.
    pub fn is_here(&self, id: &str) -> bool {
        self.queue.contains(id) || self.runs_here(id)
    }

    /// Stops execution `id` if it runs here (a cancel asked elsewhere).
    pub fn cancel_here(&self, id: &str) {
        if let Some(handle) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            handle.cancel();
        }
    }

    /// A claimed execution is no longer running.
    pub fn release(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Whether runs stopped now are the server's doing (the drain's
    /// timeout passed), to be recorded as INTERRUPTED.
    pub fn interrupting(&self) -> bool {
        self.interrupting.load(Ordering::Acquire)
    }

    /// Stores a record that just became final (not flushed), counts it,
    /// tells the hook, and counts it on its script if it ran: the one end of
    /// every execution, whatever its trigger and however it ended.
    ///
    /// # Errors
    ///
    /// The record could not be stored.
    pub(crate) async fn record_final(
        &self,
        store: &dyn Store,
        record: &ExecutionRecord,
    ) -> Result<(), StoreError> {
        self.end(store, record, None).await.map(|_| ())
    }

    /// Stores the final record of a run this node claimed, unless the run
    /// was taken from it meanwhile (another node ended it INTERRUPTED when
    /// this one's lease ran out): then nothing is written and it is `false`.
    ///
    /// # Errors
    ///
    /// The record could not be stored.
    pub(crate) async fn record_run_final(
        &self,
        store: &dyn Store,
        record: &ExecutionRecord,
    ) -> Result<bool, StoreError> {
        let mine = |current: &ExecutionRecord| {
            current.status == ExecutionStatus::Running && current.node == record.node
        };
        if self.end(store, record, Some(&mine)).await? {
            return Ok(true);
        }
        // Written already: a try whose commit reached the store but whose
        // answer did not (then tried again).
        let ours = |stored: &ExecutionRecord| {
            stored.status == record.status
                && stored.node == record.node
                && stored.completed_at == record.completed_at
        };
        if store
            .execution(&record.id)
            .await?
            .as_ref()
            .is_some_and(ours)
        {
            self.finished(store, record).await;
            return Ok(true);
        }
        tracing::warn!(execution = %record.id,
            "a run ended after it was taken from this node; its outcome is dropped");
        Ok(false)
    }

    /// The one end of every execution: stores `record`, just final, with
    /// the webhook deliveries its end makes (with `expect`, only over a
    /// current record it accepts: `false`, nothing written, if not), then
    /// what follows ([`Self::finished`]).
    ///
    /// # Errors
    ///
    /// The record could not be stored.
    pub(crate) async fn end(
        &self,
        store: &dyn Store,
        record: &ExecutionRecord,
        expect: Option<&(dyn for<'r> Fn(&'r ExecutionRecord) -> bool + Send + Sync)>,
    ) -> Result<bool, StoreError> {
        let events = self.on_final.get();
        let outbox = match events {
            Some(events) => events.deliveries(record).await?,
            None => Vec::new(),
        };
        if !store.finish_execution(record, expect, &outbox).await? {
            return Ok(false);
        }
        if let Some(events) = events.filter(|_| !outbox.is_empty()) {
            events.stored();
        }
        self.finished(store, record).await;
        Ok(true)
    }

    /// What follows a record becoming final and stored: it is counted, and
    /// its script counts it if it ran.
    async fn finished(&self, store: &dyn Store, record: &ExecutionRecord) {
        self.finished_count.fetch_add(1, Ordering::Relaxed);
        self.metrics.record(record);
        let ran = record.started_at.is_some();
        if let Some(script_id) = record.script_id.as_ref().filter(|_| ran) {
            // The run and its record stand without the script's counters.
            if let Err(e) = store
                .note_execution(
                    script_id,
                    record.completed_at.as_deref().unwrap_or_default(),
                )
                .await
            {
                tracing::error!(execution = %record.id, error = %e,
                    "cannot count an execution on its script");
            }
        }
    }

    /// Whether the queue would take `record` as far as its creator's share
    /// goes (the queue's own capacity is checked when it is queued).
    ///
    /// # Errors
    ///
    /// [`JobError::TenantFull`] when its creator has its share queued,
    /// [`JobError::OrgFull`] when its organization has.
    pub fn admits(&self, record: &ExecutionRecord) -> Result<(), JobError> {
        self.queue
            .admits(&tenant(record))
            .map_err(|refused| self.refusal(refused))
    }

    fn refusal(&self, refused: queue::Refused) -> JobError {
        match refused {
            queue::Refused::Full => JobError::QueueFull,
            queue::Refused::TenantFull => JobError::TenantFull(self.queue.per_tenant()),
            queue::Refused::OrgFull => JobError::OrgFull(self.queue.per_org()),
        }
    }

    /// How many executions of organization `org` are queued or running.
    pub fn live_of(&self, org: &str) -> usize {
        self.queue.live_of(org)
    }

    /// Holds organization `org` to `cap` running executions (its quota);
    /// `None`: only `workers.running_per_org`.
    pub fn set_org_cap(&self, org: &str, cap: Option<usize>) {
        self.queue.set_org_cap(org, cap);
    }

    /// Queues a stored execution; the receiver settles when it is final.
    ///
    /// # Errors
    ///
    /// [`JobError::QueueFull`] when the queue is at capacity.
    pub fn enqueue(&self, record: &ExecutionRecord) -> Result<watch::Receiver<Settled>, JobError> {
        let (id, priority) = (record.id.as_str(), record.priority);
        if self.draining.load(Ordering::Acquire) {
            return Err(JobError::ShuttingDown);
        }
        let receiver = {
            let mut done = self.lock();
            if let Some(queued) = done.get(id) {
                // Queued here already (taken as stale work before the
                // request that made it queued it): one entry, one signal.
                return Ok(queued.sender.subscribe());
            }
            let waiting = Waiting::new();
            let receiver = waiting.sender.subscribe();
            done.insert(id.to_string(), waiting);
            receiver
        };
        match self.queue.push(id.to_string(), priority, &tenant(record)) {
            Ok(()) => Ok(receiver),
            Err(refused) => {
                self.lock().remove(id);
                Err(self.refusal(refused))
            }
        }
    }

    /// Queues an execution found `queued` at start-up (it was accepted
    /// before, so capacity does not refuse it).
    pub fn requeue(&self, record: &ExecutionRecord) {
        {
            // A signal as `enqueue` makes, so `is_settling` holds for it
            // too; one queued already is not queued twice.
            let mut done = self.lock();
            if done.contains_key(&record.id) {
                return;
            }
            done.insert(record.id.clone(), Waiting::new());
        }
        self.queue
            .push_accepted(record.id.clone(), record.priority, &tenant(record));
    }

    /// Cancels a queued or running execution.
    ///
    /// # Errors
    ///
    /// Store failures; `Ok(None)` when there is no such execution.
    pub async fn cancel(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<Cancelled>, StoreError> {
        let Some(mut record) = store.execution(id).await? else {
            return Ok(None);
        };
        if record.status == ExecutionStatus::Queued {
            let mut cancelled = record.clone();
            contract::end_unrun(
                &mut cancelled,
                ExecutionStatus::Cancelled,
                ExecutionCode::CANCELLED,
                "the execution was cancelled before it started",
            );
            // Written only over a queued record, so a claim (on any node)
            // and this cancel never both win.
            let queued = |current: &ExecutionRecord| current.status == ExecutionStatus::Queued;
            if self.end(store, &cancelled, Some(&queued)).await? {
                self.queue.remove(id);
                self.settle(id, Settled::Stored);
                return Ok(Some(Cancelled::Recorded(Box::new(cancelled))));
            }
            // Claimed meanwhile.
            let Some(now) = store.execution(id).await? else {
                return Ok(None);
            };
            record = now;
        }
        match record.status {
            ExecutionStatus::Running => {
                let done = if record.node.as_deref() == store.node() {
                    // Claimed here: its signal was made when it was queued
                    // and is gone once it settled; one made again would
                    // never be settled.
                    let Some(done) = self.waiting_on(id) else {
                        return self.cancel_settled(store, id).await;
                    };
                    // Its handle was registered when it was claimed.
                    self.cancel_here(id);
                    done
                } else {
                    // Another node runs it: asked by a signal, and through
                    // its record, which that node reads within a second
                    // (`leases::follow`) should the signal be lost. Its end
                    // comes back the same ways and settles this signal.
                    let done = self.subscribe(id);
                    // The signal only once the record asks for it: a cancel
                    // answered as failed must not have happened.
                    store
                        .update_execution(id, &|current| {
                            (current.status == ExecutionStatus::Running
                                && !current.cancel_requested)
                                .then(|| ExecutionRecord {
                                    cancel_requested: true,
                                    ..current.clone()
                                })
                        })
                        .await?;
                    store.signal(crate::store::Signal::Cancel { id: id.to_owned() });
                    signals::watch(store, self, id);
                    done
                };
                Ok(Some(Cancelled::WhileRunning(done)))
            }
            _ => Ok(Some(Cancelled::AlreadyFinal)),
        }
    }

    /// The cancel of a run claimed here whose completion signal is gone:
    /// it settled since its record was read (final now), or its end could
    /// not be stored and its record still reads running, with nothing
    /// running it: that record is ended cancelled.
    async fn cancel_settled(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<Cancelled>, StoreError> {
        let Some(record) = store.execution(id).await? else {
            return Ok(None);
        };
        if record.status.is_final() || self.runs_here(id) {
            return Ok(Some(Cancelled::AlreadyFinal));
        }
        let mut cancelled = record.clone();
        contract::end_unrun(
            &mut cancelled,
            ExecutionStatus::Cancelled,
            ExecutionCode::CANCELLED,
            "the execution was cancelled; nothing was running it any more",
        );
        let node = record.node.clone();
        let unrun = |current: &ExecutionRecord| {
            current.status == ExecutionStatus::Running && current.node == node
        };
        if self.end(store, &cancelled, Some(&unrun)).await? {
            return Ok(Some(Cancelled::Recorded(Box::new(cancelled))));
        }
        // Ended meanwhile, by another node's reaper say.
        Ok(Some(Cancelled::AlreadyFinal))
    }

    /// Stops taking executions, lets running ones finish for up to `grace`,
    /// then stops the rest, which are recorded as INTERRUPTED.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Release);
        // Idle workers stop; what is still queued runs after the next start.
        self.queue.close();
        let deadline = tokio::time::Instant::now() + grace;
        while !self.running_is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.running_is_empty() {
            return;
        }
        self.interrupting.store(true, Ordering::Release);
        for handle in self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            handle.cancel();
        }
        // Stopped guests return within milliseconds; give the workers a
        // moment to store their records.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.running_is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `id` was queued and its waiters have not been told it is
    /// final: a final record of it may not be on disk yet.
    pub fn is_settling(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// How many executions became final since start.
    pub fn finished_count(&self) -> u64 {
        self.finished_count.load(Ordering::Relaxed)
    }

    /// Executions waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Executions running now.
    pub fn running(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn running_is_empty(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// A completion signal for an execution, made if none exists yet: one
    /// that runs on another node, which nothing here queued.
    fn subscribe(&self, id: &str) -> watch::Receiver<Settled> {
        self.lock()
            .entry(id.to_string())
            .or_insert_with(Waiting::new)
            .sender
            .subscribe()
    }

    /// The completion signal of an execution still settling here, if it is.
    fn waiting_on(&self, id: &str) -> Option<watch::Receiver<Settled>> {
        self.lock()
            .get(id)
            .map(|waiting| waiting.sender.subscribe())
    }

    /// Tells an execution's waiters where it stands, ending its live output;
    /// it is no longer settling.
    pub fn settle(&self, id: &str, settled: Settled) {
        self.output.finish(id);
        if let Some(waiting) = self.lock().remove(id) {
            waiting.sender.send_replace(settled);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ExecutionLoad for Jobs {
    fn queued(&self) -> usize {
        Jobs::queued(self)
    }

    fn running(&self) -> usize {
        Jobs::running(self)
    }
}

/// A run counted by [`Jobs::track`].
pub struct Tracked<'a> {
    jobs: &'a Jobs,
    id: String,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.jobs
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Whose turn in the queue an execution takes (`queue.rs`): its
/// organization's, and there its creator's, so one organization's flood of
/// runs waits behind every other organization's next one, and one user's
/// behind their colleagues'.
fn tenant(record: &ExecutionRecord) -> queue::Tenant {
    queue::Tenant {
        org: crate::store::orgs::InOrg::org(record).to_owned(),
        user: record.created_by.clone().unwrap_or_default(),
    }
}

/// At start-up: executions a crash left `running` are failed as INTERRUPTED;
/// `queued` ones are queued again. In a store several nodes share, only
/// this node's runs are ended (another's end when its lease runs out,
/// `leases.rs`), and the queued ones are queued here as far as the queue
/// has room (whichever node claims one first runs it).
pub async fn recover(store: &dyn Store, jobs: &Jobs) -> Result<(), StoreError> {
    let node = store.node().map(str::to_owned);
    for running in store.executions_in(&[ExecutionStatus::Running]).await? {
        if running.node != node {
            continue;
        }
        let mut ended = running.clone();
        contract::end_unrun(
            &mut ended,
            ExecutionStatus::Failed,
            ExecutionCode::INTERRUPTED,
            "the server stopped while this execution ran",
        );
        // Over the record as read: on a shared store, only this node's.
        let still = |current: &ExecutionRecord| {
            current.status == ExecutionStatus::Running && current.node == node
        };
        jobs.end(store, &ended, Some(&still)).await?;
    }
    store.flush().await?;
    let queued = if node.is_some() {
        store.stale_queued(0, jobs.queue.room()).await?
    } else {
        store.executions_in(&[ExecutionStatus::Queued]).await?
    };
    for record in queued {
        jobs.requeue(&record);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn jobs(capacity: usize) -> Arc<Jobs> {
        Jobs::new(
            1,
            capacity,
            QueueShare::whole(capacity),
            crate::metrics::Metrics::new().executions(),
        )
    }

    pub(super) fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path(), 8 << 20).unwrap();
        (Arc::new(store), dir)
    }

    /// A queued record stored in `store`.
    pub(super) async fn queued(store: &dyn Store) -> ExecutionRecord {
        let record = crate::executions::new_record(
            &crate::config::Config::default().limits,
            crate::executions::RunRequest::default(),
            crate::executions::Target {
                org: crate::store::orgs::DEFAULT_ORG.into(),
                language: crate::store::Language::Javascript,
                script: None,
                defaults: crate::store::ScriptLimits::default(),
                code: Some(b"1".to_vec()),
            },
            crate::store::Trigger::Api,
            None,
        )
        .unwrap();
        store.put_execution(&record).await.unwrap();
        record
    }

    /// A record queued and then claimed, as a worker would, with its
    /// cancel handle.
    async fn claimed(store: &dyn Store, jobs: &Jobs) -> (ExecutionRecord, CancelHandle) {
        let record = queued(store).await;
        jobs.enqueue(&record).unwrap();
        jobs.claim(store, &record.id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn the_queue_refuses_past_its_capacity_and_both_it_and_functions_refuse_while_draining() {
        let (store, _dir) = store();
        let jobs = jobs(1);
        let first = queued(store.as_ref()).await;
        jobs.enqueue(&first).unwrap();
        let second = queued(store.as_ref()).await;
        assert!(matches!(jobs.enqueue(&second), Err(JobError::QueueFull)));
        assert!(jobs.function_slot().await.is_ok());
        jobs.drain(Duration::ZERO).await;
        assert!(matches!(jobs.enqueue(&second), Err(JobError::ShuttingDown)));
        assert!(matches!(
            jobs.function_slot().await,
            Err(JobError::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn a_cancel_while_queued_wins_over_a_later_claim_and_settles_the_waiter() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let record = queued(store.as_ref()).await;
        let mut done = jobs.enqueue(&record).unwrap();
        let cancelled = jobs.cancel(store.as_ref(), &record.id).await.unwrap();
        assert!(matches!(cancelled, Some(Cancelled::Recorded(_))));
        assert!(
            jobs.claim(store.as_ref(), &record.id)
                .await
                .unwrap()
                .is_none()
        );
        let settled = done.wait_for(Settled::is_settled).await.unwrap().clone();
        assert!(matches!(settled, Settled::Stored));
        let stored = store.execution(&record.id).await.unwrap().unwrap();
        assert_eq!(stored.status, ExecutionStatus::Cancelled);
        assert_eq!(jobs.finished_count(), 1);
    }

    #[tokio::test]
    async fn a_cancel_while_running_stops_the_run_through_its_handle() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let (record, cancel) = claimed(store.as_ref(), &jobs).await;
        assert_eq!(record.status, ExecutionStatus::Running);
        assert_eq!(jobs.running(), 1);
        assert!(
            jobs.claim(store.as_ref(), &record.id)
                .await
                .unwrap()
                .is_none(),
            "claimed once"
        );
        let cancelled = jobs.cancel(store.as_ref(), &record.id).await.unwrap();
        assert!(matches!(cancelled, Some(Cancelled::WhileRunning(_))));
        assert!(cancel.is_cancelled());
        jobs.release(&record.id);
        assert_eq!(jobs.running(), 0);
    }

    /// A run claimed here that settled before the cancel looked for its
    /// signal: no signal is made again, which nothing would settle (the id
    /// would stay settling, the cancel would wait its 5 s, and retention
    /// would never remove the run). Here its end could not be stored, so
    /// its record still reads running with nothing running it.
    #[tokio::test]
    async fn a_cancel_of_a_settled_run_makes_no_signal_and_ends_a_record_nothing_runs() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let (record, cancel) = claimed(store.as_ref(), &jobs).await;
        // Its end settles it; the record on disk still reads running, as
        // the cancel's read before the end did (a lost final record stays
        // so too).
        jobs.release(&record.id);
        jobs.settle(&record.id, Settled::Lost("gone".into()));
        let cancelled = jobs.cancel(store.as_ref(), &record.id).await.unwrap();
        assert!(!jobs.is_settling(&record.id), "no signal made again");
        assert!(!cancel.is_cancelled(), "nothing of it runs to stop");
        // Nothing runs it: its record, still running, is ended cancelled.
        let Some(Cancelled::Recorded(ended)) = cancelled else {
            panic!("recorded as cancelled");
        };
        assert_eq!(ended.status, ExecutionStatus::Cancelled);
        let stored = store.execution(&record.id).await.unwrap().unwrap();
        assert_eq!(stored.status, ExecutionStatus::Cancelled);
        // Final now: a second cancel finds it so.
        let again = jobs.cancel(store.as_ref(), &record.id).await.unwrap();
        assert!(matches!(again, Some(Cancelled::AlreadyFinal)));
        assert!(!jobs.is_settling(&record.id));
    }

    /// The other ends of a cancel whose run's signal is gone: a record
    /// final by now, one still run here, one gone.
    #[tokio::test]
    async fn a_cancel_whose_signal_is_gone_reports_a_final_or_running_record_as_final() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let (record, _cancel) = claimed(store.as_ref(), &jobs).await;
        let cancel = async |id: &str| jobs.cancel_settled(store.as_ref(), id).await.unwrap();
        let status = async || {
            let stored = store.execution(&record.id).await.unwrap().unwrap();
            stored.status
        };
        // Still run here (its handle registered): not taken from its worker.
        assert!(matches!(
            cancel(&record.id).await,
            Some(Cancelled::AlreadyFinal)
        ));
        assert_eq!(status().await, ExecutionStatus::Running);
        let stored = store.execution(&record.id).await.unwrap().unwrap();
        // Its end stored: final, reported as such.
        let mut done = stored.clone();
        done.status = ExecutionStatus::Completed;
        done.completed_at = Some(crate::now());
        assert!(jobs.record_run_final(store.as_ref(), &done).await.unwrap());
        jobs.release(&record.id);
        assert!(matches!(
            cancel(&record.id).await,
            Some(Cancelled::AlreadyFinal)
        ));
        assert_eq!(status().await, ExecutionStatus::Completed);
        // Deleted meanwhile: no such execution.
        assert!(cancel("no-such-id").await.is_none());
    }

    #[tokio::test]
    async fn a_drain_waits_its_grace_then_interrupts_what_still_runs() {
        let (store, _dir) = store();
        let jobs = jobs(10);
        let (record, cancel) = claimed(store.as_ref(), &jobs).await;
        let releaser = {
            let (jobs, cancel, id) = (jobs.clone(), cancel.clone(), record.id.clone());
            // The run notices its cancel and ends, as a guest would.
            tokio::spawn(async move {
                while !cancel.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                jobs.release(&id);
            })
        };
        jobs.drain(Duration::from_millis(50)).await;
        assert!(
            jobs.interrupting(),
            "past the grace, stops are the server's"
        );
        assert!(cancel.is_cancelled());
        releaser.await.unwrap();
        assert_eq!(jobs.running(), 0);
    }
}

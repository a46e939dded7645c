//! The execution queue and its workers. Handlers store an execution as
//! `queued`, flush, then [`Jobs::enqueue`] it; a worker runs it in the sandbox
//! and stores the final record. Nothing runs guest code on an HTTP task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_runtime::{Artifact, Call, CancelHandle, Invocation};
use tokio::sync::watch;

use self::queue::Queue;
use self::script_host::StoredScript;
use crate::config::LimitsConfig;
use crate::contract::{self, Ran};
use crate::metrics::ExecutionMetrics;
use crate::runtimes::Runtimes;
use crate::store::{
    ExecutionCode, ExecutionError, ExecutionRecord, ExecutionStatus, Language, Priority, Store,
    StoreError,
};

pub mod live;
mod queue;
mod script_host;

use self::live::LiveOutputs;

/// Why an execution could not be queued or run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the execution queue is full")]
    QueueFull,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The queue's sending side plus the completion signals of queued executions.
pub struct Jobs {
    queue: Queue,
    metrics: ExecutionMetrics,
    done: Mutex<HashMap<String, watch::Sender<Settled>>>,
    /// Cancel handles of running executions. Its lock also orders the
    /// queued → running and queued → cancelled transitions, so a worker and a
    /// cancel request never both win.
    running: Mutex<HashMap<String, CancelHandle>>,
    /// Live output of executions not yet final, for `/events` subscribers.
    pub output: LiveOutputs,
    /// Set on shutdown: workers take no new executions (they stay queued in
    /// the store for the next start).
    draining: AtomicBool,
    /// Set when the drain timeout passed: runs stopped now are INTERRUPTED.
    interrupting: AtomicBool,
    /// Told of every execution that became final, before it is flushed
    /// (webhook events go into the outbox with the same flush).
    on_final: std::sync::OnceLock<FinalHook>,
    /// Executions that became final since start (crate::memory watches it).
    finished_count: std::sync::atomic::AtomicU64,
    /// HTTP function requests run on their own connection's task, not through
    /// the queue (a request is answered, not queued): as many at once as
    /// there are workers, and at most `capacity` more waiting.
    functions: tokio::sync::Semaphore,
    functions_waiting: AtomicUsize,
    capacity: usize,
}

pub type FinalHook = Box<dyn Fn(&ExecutionRecord) + Send + Sync>;

/// Where a queued execution stands for those waiting on it.
#[derive(Debug, Clone, Default)]
pub enum Settled {
    /// Queued or running.
    #[default]
    Pending,
    /// Its final record is on disk; here it is, so a waiter need not read it.
    Flushed(Arc<ExecutionRecord>),
    /// Its final record is stored but may not be flushed yet (a cancel while
    /// queued, whose handler flushes, or a run a worker found no longer
    /// queued): a waiter flushes and reads it.
    Stored,
    /// Its final record could not be stored or flushed.
    Lost(String),
}

impl Settled {
    pub fn is_settled(&self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// What [`Jobs::cancel`] did.
pub enum Cancelled {
    /// It was queued; it is now stored as cancelled.
    WhileQueued(Box<ExecutionRecord>),
    /// It was running; the receiver settles when the worker has stored it.
    WhileRunning(watch::Receiver<Settled>),
    /// It had already finished.
    AlreadyFinal,
}

impl Jobs {
    /// Starts `workers` workers that run executions from a queue of `capacity`.
    pub fn start(
        workers: usize,
        capacity: usize,
        store: Arc<dyn Store>,
        runtimes: Arc<Runtimes>,
        limits: LimitsConfig,
        metrics: ExecutionMetrics,
    ) -> Arc<Self> {
        let jobs = Arc::new(Self {
            queue: Queue::new(capacity),
            metrics,
            done: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            output: LiveOutputs::default(),
            draining: AtomicBool::new(false),
            interrupting: AtomicBool::new(false),
            on_final: std::sync::OnceLock::new(),
            finished_count: std::sync::atomic::AtomicU64::new(0),
            functions: tokio::sync::Semaphore::new(workers.max(1)),
            functions_waiting: AtomicUsize::new(0),
            capacity,
        });
        for _ in 0..workers.max(1) {
            let worker = Worker {
                store: store.clone(),
                runtimes: runtimes.clone(),
                jobs: jobs.clone(),
                limits: limits.clone(),
            };
            tokio::spawn(async move {
                loop {
                    let Some(id) = worker.jobs.queue.pop().await else {
                        break;
                    };
                    if worker.jobs.draining.load(Ordering::Acquire) {
                        continue;
                    }
                    worker.execute(&id).await;
                }
            });
        }
        jobs
    }

    /// Sets what is told of every final execution (once; later calls are ignored).
    pub fn on_final(&self, hook: FinalHook) {
        let _ = self.on_final.set(hook);
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
        if let Ok(permit) = self.functions.try_acquire() {
            return Ok(permit);
        }
        let waiting = Waiting::enter(&self.functions_waiting);
        if waiting.ahead >= self.capacity {
            return Err(JobError::QueueFull);
        }
        self.functions
            .acquire()
            .await
            .map_err(|_| JobError::ShuttingDown)
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

    /// Stores a record that just became final (not flushed), counts it,
    /// tells the hook, and counts the run on its script, the same for every
    /// trigger.
    ///
    /// # Errors
    ///
    /// The record could not be stored.
    pub(crate) fn record_final(
        &self,
        store: &dyn Store,
        record: &ExecutionRecord,
    ) -> Result<(), StoreError> {
        store.put_execution(record)?;
        self.finalized(record);
        if let Some(script_id) = &record.script_id {
            // The run and its record stand without the script's counters.
            if let Err(e) = store.note_execution(
                script_id,
                record.completed_at.as_deref().unwrap_or_default(),
            ) {
                tracing::error!(execution = %record.id, error = %e,
                    "cannot count an execution on its script");
            }
        }
        Ok(())
    }

    /// Counts a record that just became final and tells the hook.
    fn finalized(&self, record: &ExecutionRecord) {
        self.finished_count.fetch_add(1, Ordering::Relaxed);
        self.metrics.record(record);
        if let Some(hook) = self.on_final.get() {
            hook(record);
        }
    }

    /// Queues a stored execution; the receiver settles when it is final.
    ///
    /// # Errors
    ///
    /// [`JobError::QueueFull`] when the queue is at capacity.
    pub fn enqueue(
        &self,
        id: &str,
        priority: Priority,
    ) -> Result<watch::Receiver<Settled>, JobError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(JobError::ShuttingDown);
        }
        let (sender, receiver) = watch::channel(Settled::Pending);
        self.lock().insert(id.to_string(), sender);
        match self.queue.push(id.to_string(), priority) {
            Ok(()) => Ok(receiver),
            Err(queue::Full) => {
                self.lock().remove(id);
                Err(JobError::QueueFull)
            }
        }
    }

    /// Queues an execution found `queued` at start-up (it was accepted
    /// before, so capacity does not refuse it).
    pub fn requeue(&self, id: String, priority: Priority) {
        // A signal as `enqueue` makes, so `is_settling` holds for it too.
        self.subscribe(&id);
        self.queue.push_accepted(id, priority);
    }

    /// Cancels a queued or running execution.
    ///
    /// # Errors
    ///
    /// Store failures; `Ok(None)` when there is no such execution.
    pub fn cancel(&self, store: &dyn Store, id: &str) -> Result<Option<Cancelled>, StoreError> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut record) = store.execution(id)? else {
            return Ok(None);
        };
        match record.status {
            ExecutionStatus::Queued => {
                record.status = ExecutionStatus::Cancelled;
                record.error = Some(ExecutionError::new(
                    ExecutionCode::CANCELLED,
                    "the execution was cancelled before it started",
                ));
                record.completed_at = Some(crate::now());
                store.put_execution(&record)?;
                self.finalized(&record);
                self.queue.remove(id);
                drop(running);
                self.finished(id, Settled::Stored);
                Ok(Some(Cancelled::WhileQueued(Box::new(record))))
            }
            ExecutionStatus::Running => {
                let done = self.subscribe(id);
                if let Some(handle) = running.get(id) {
                    handle.cancel();
                }
                Ok(Some(Cancelled::WhileRunning(done)))
            }
            _ => Ok(Some(Cancelled::AlreadyFinal)),
        }
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

    /// A completion signal for an execution, made if none exists yet (after a
    /// restart, requeued executions have none).
    fn subscribe(&self, id: &str) -> watch::Receiver<Settled> {
        self.lock()
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(Settled::Pending).0)
            .subscribe()
    }

    fn finished(&self, id: &str, settled: Settled) {
        self.output.finish(id);
        if let Some(sender) = self.lock().remove(id) {
            sender.send_replace(settled);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Settled>>> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner)
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

/// One request counted among those waiting for a function slot while it
/// exists (a client that hangs up stops counting).
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

struct Worker {
    store: Arc<dyn Store>,
    runtimes: Arc<Runtimes>,
    jobs: Arc<Jobs>,
    limits: LimitsConfig,
}

impl Worker {
    async fn execute(&self, id: &str) {
        let settled = match self.try_execute(id).await {
            Ok(Some(record)) => {
                // The flush runs while this worker takes its next execution,
                // so one flush covers what every worker finished meanwhile;
                // waiters hear of the record only once it is on disk.
                let (store, jobs, id) = (self.store.clone(), self.jobs.clone(), id.to_string());
                tokio::spawn(async move {
                    let settled = match store.flush().await {
                        Ok(()) => Settled::Flushed(Arc::new(record)),
                        Err(e) => lost(&id, &e),
                    };
                    jobs.finished(&id, settled);
                });
                return;
            }
            // Not queued any more: whoever ended it stored its record (and
            // has normally settled it already).
            Ok(None) => Settled::Stored,
            Err(e) => lost(id, &e),
        };
        self.jobs.finished(id, settled);
    }

    /// Runs a queued execution and stores its final record (not flushed);
    /// `None` if it was no longer queued.
    async fn try_execute(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        let cancel = CancelHandle::new();
        let mut record = {
            let mut running = self
                .jobs
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(mut record) = self.store.execution(id)? else {
                return Ok(None);
            };
            if record.status != ExecutionStatus::Queued {
                return Ok(None);
            }
            record.status = ExecutionStatus::Running;
            record.started_at = Some(crate::now());
            self.store.put_execution(&record)?;
            running.insert(id.to_string(), cancel.clone());
            record
        };
        let result = self.run(&mut record, cancel).await;
        self.jobs
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        result.map(|()| Some(record))
    }

    async fn run(
        &self,
        record: &mut ExecutionRecord,
        cancel: CancelHandle,
    ) -> Result<(), StoreError> {
        // `running` is not flushed here: readers flush before they report a
        // record that is not final, and the final record is flushed (by
        // `execute`) before any waiter hears of it.
        // A crash before then finds it running (INTERRUPTED) or, if sled had
        // not written it yet, queued (run again).
        match self.prepare(record).await {
            Ok((artifact, call, name)) => {
                let mut invocation = self.invocation(record, call, name);
                invocation.cancel = Some(cancel);
                // A kiln:script component of a stored script reaches that
                // script's key-value store and config; an ad-hoc one none.
                if let (Call::Json { .. }, Some(script_id)) = (&invocation.call, &record.script_id)
                {
                    // Without its config the run still goes ahead; its
                    // key-value calls then answer "unavailable".
                    match StoredScript::new(self.store.clone(), script_id, &self.limits) {
                        Ok(host) => invocation.script_host = Some(Arc::new(host)),
                        Err(e) => tracing::error!(error = %e, script = %script_id,
                            "cannot read a script's config; its run has no store"),
                    }
                }
                let live = self.jobs.output.publisher(&record.id);
                invocation.on_output = Some(Arc::new(move |kind, bytes: &[u8]| {
                    live.publish(kind, &String::from_utf8_lossy(bytes));
                }));
                let ran = match self.runtimes.sandbox().run(&artifact, invocation).await {
                    Ok(outcome) => Ran::Outcome {
                        outcome,
                        interrupted: self.jobs.interrupting.load(Ordering::Acquire),
                    },
                    Err(e) => Ran::Failed(format!("the sandbox failed: {e}")),
                };
                contract::finish(record, ran);
            }
            Err(message) => contract::finish(record, Ran::Failed(message)),
        }
        self.jobs.record_final(self.store.as_ref(), record)?;
        Ok(())
    }

    /// The artifact to run and what to call in it.
    async fn prepare(
        &self,
        record: &ExecutionRecord,
    ) -> Result<(Arc<Artifact>, Call, String), String> {
        let deleted = || "the script was deleted before it ran".to_string();
        match (&record.script_id, record.script_version, &record.code) {
            (Some(script_id), Some(version), _) => {
                let script = self
                    .store
                    .script(script_id)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(deleted)?;
                let content = || {
                    self.store
                        .script_content(script_id, version)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(deleted)
                };
                let (artifact, call) = if record.language == Language::Wasm {
                    let owner = crate::runtimes::caller_of(script.created_by.as_deref());
                    let component = self
                        .runtimes
                        .component(script_id, version, content, &owner)
                        .await
                        .map_err(|e| e.to_string())?;
                    let call =
                        contract::component_call(component.shape(), &record.parameters.to_string());
                    (component, call)
                } else {
                    self.script_call(record, content()?).await?
                };
                Ok((artifact, call, script.name))
            }
            (None, _, Some(code)) if record.language == Language::Wasm => {
                // Compiled when it was submitted; found in the cache here.
                let caller = crate::runtimes::caller_of(record.created_by.as_deref());
                let component = self
                    .runtimes
                    .load(code.clone(), Some(&caller))
                    .await
                    .map_err(|e| e.to_string())?;
                let call =
                    contract::component_call(component.shape(), &record.parameters.to_string());
                Ok((component, call, "ad-hoc".into()))
            }
            (None, _, Some(code)) => {
                let (runtime, call) = self.script_call(record, code.clone()).await?;
                Ok((runtime, call, "ad-hoc".into()))
            }
            _ => Err("the execution names no script and carries no code".into()),
        }
    }

    /// The language runtime and the call that runs `source` on it.
    async fn script_call(
        &self,
        record: &ExecutionRecord,
        source: Vec<u8>,
    ) -> Result<(Arc<Artifact>, Call), String> {
        let source =
            String::from_utf8(source).map_err(|_| "the stored source is not UTF-8".to_string())?;
        let runtime = self
            .runtimes
            .get(record.language)
            .await
            .map_err(|e| e.to_string())?;
        let call = Call::Script {
            source: source.into(),
            params: record.parameters.to_string(),
        };
        Ok((runtime, call))
    }

    fn invocation(&self, record: &ExecutionRecord, call: Call, name: String) -> Invocation {
        let parameters = record.parameters.to_string();
        let (env, stdin) = contract::environment(
            &record.env,
            &record.id,
            &name,
            Some(&parameters),
            record.input.as_deref(),
            &call,
        );
        Invocation {
            call,
            args: vec![name],
            env,
            stdin,
            limits: contract::limits_of(record, self.limits.output_bytes),
            cancel: None,
            on_output: None,
            script_host: None,
        }
    }
}

fn lost(id: &str, error: &StoreError) -> Settled {
    tracing::error!(execution = id, error = %error, "execution could not be recorded");
    Settled::Lost(error.to_string())
}

/// At start-up: executions a crash left `running` are failed as INTERRUPTED;
/// `queued` ones are queued again.
pub async fn recover(store: &dyn Store, jobs: &Jobs) -> Result<(), StoreError> {
    for mut record in store.executions_in(&[ExecutionStatus::Running])? {
        contract::fail(
            &mut record,
            ExecutionCode::INTERRUPTED,
            "the server stopped while this execution ran",
        );
        record.completed_at = Some(crate::now());
        store.put_execution(&record)?;
        jobs.finalized(&record);
    }
    store.flush().await?;
    for record in store.executions_in(&[ExecutionStatus::Queued])? {
        jobs.requeue(record.id, record.priority);
    }
    Ok(())
}

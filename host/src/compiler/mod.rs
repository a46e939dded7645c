//! Compiles as a bounded resource. Cranelift's time and memory can grow
//! much faster than its input, so every compile of bytes Kiln did not make
//! itself runs in a child process of this same binary (`kiln
//! compile-artifact`, in `child.rs`) under an address-space cap, a CPU-time
//! limit and a wall-clock deadline, and is killed when nobody waits for it
//! any more. The child writes the artifact into the cache, where the
//! sandbox verifies and loads it. Compiles wait in one queue sized to the
//! cores; concurrent loads of the same bytes share one compile; and each
//! caller has a few in flight at most.

pub mod child;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_runtime::{Artifact, ArtifactKey, LoadSource, Sandbox};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, watch};

use crate::config::LimitsConfig;

/// How compiles are bounded (`limits.compile_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileBounds {
    /// The child's address space.
    pub memory_mb: u64,
    /// The child's CPU time, all threads together.
    pub cpu_secs: u64,
    /// From the start of the child to its artifact.
    pub timeout: Duration,
    /// Compiles one caller may have in flight (waiting included).
    pub per_caller: usize,
    /// Compiles at once; the rest wait.
    pub parallel: usize,
    /// Compiles waiting for their turn; past it, 503.
    pub waiting: usize,
    /// Whether one compile may use every core (Kiln's own runtimes); a
    /// tenant's compile gets one thread, so the queue's turns are cores.
    pub parallel_threads: bool,
}

impl CompileBounds {
    /// The bounds of a tenant's bytes under `limits`, with a turn per core.
    pub fn for_tenants(limits: &LimitsConfig) -> Self {
        let cores = crate::config::cores();
        Self {
            memory_mb: limits.compile_memory_mb,
            cpu_secs: limits.compile_cpu_secs,
            timeout: Duration::from_millis(limits.compile_timeout_ms),
            per_caller: limits.compiles_per_user,
            parallel: cores,
            // Enough for every worker and a burst of uploads; past it, 503.
            waiting: cores.saturating_mul(16).max(64),
            parallel_threads: false,
        }
    }

    /// The bounds of Kiln's own bytes (the embedded runtimes): at least
    /// generous defaults whatever tenants are held to, and every core, so an
    /// operator's tight `limits.compile_*` cannot make a runtime unloadable.
    pub fn for_kiln(&self) -> Self {
        Self {
            memory_mb: self.memory_mb.max(8 << 10),
            cpu_secs: self.cpu_secs.max(1_800),
            timeout: self.timeout.max(Duration::from_secs(1_800)),
            parallel_threads: true,
            ..self.clone()
        }
    }
}

/// Why bytes could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// What the sandbox says of them: not wasm, past a compile limit, does
    /// not compile, cannot link.
    #[error("{0}")]
    Sandbox(String),
    /// The compile passed `limits.compile_*`.
    #[error("compile limit {limit} exceeded: {what}")]
    Bounds { limit: &'static str, what: String },
    /// The caller already has `limits.compiles_per_user` compiles in flight.
    #[error(
        "{0} compiles of yours are already in flight (limits.compiles_per_user); retry when one is done"
    )]
    Busy(usize),
    /// Too many compiles wait already.
    #[error("the compile queue is full; retry shortly")]
    QueueFull,
    /// The child could not be started or failed for a reason of the host's.
    #[error("the compiler failed: {0}")]
    Internal(String),
    /// Every load waiting for the compile went away, so it was stopped; a
    /// load that joined it just then starts it again.
    #[error("the compile was stopped: nobody waits for it any more")]
    Abandoned,
}

impl LoadError {
    fn sandbox(e: &kiln_runtime::Error) -> Self {
        match e {
            kiln_runtime::Error::Cache(_)
            | kiln_runtime::Error::Engine(_)
            | kiln_runtime::Error::Internal(_) => Self::Internal(e.to_string()),
            other => Self::Sandbox(other.to_string()),
        }
    }
}

type Outcome = Option<Result<(), LoadError>>;

pub struct Compiler {
    /// This binary, to start children from; `None` compiles in this
    /// process (no cache directory to meet the child in).
    program: Option<PathBuf>,
    bounds: CompileBounds,
    turns: Arc<Semaphore>,
    waiting: Mutex<usize>,
    /// The compile of each key in flight, for later loads of the same bytes
    /// to subscribe to. A sender, not a receiver: the compile is abandoned
    /// when its last receiver is gone.
    in_flight: Mutex<HashMap<ArtifactKey, watch::Sender<Outcome>>>,
    per_caller: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("program", &self.program)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl Compiler {
    /// Children are started from `program` (see [`this_program`]); with
    /// `None`, compiles run in this process, unbounded but for the
    /// sandbox's validation limits.
    pub fn new(program: Option<PathBuf>, bounds: CompileBounds) -> Arc<Self> {
        Arc::new(Self {
            program,
            turns: Arc::new(Semaphore::new(bounds.parallel.max(1))),
            bounds,
            waiting: Mutex::new(0),
            in_flight: Mutex::new(HashMap::new()),
            per_caller: Mutex::new(HashMap::new()),
        })
    }

    /// Compiles running or waiting for a turn.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The artifact for `bytes`: from the sandbox's caches, else compiled
    /// in a child process on `caller`'s account (`None`: Kiln's own bytes,
    /// the embedded runtimes, which no per-caller cap holds back and which
    /// compile under [`CompileBounds::for_kiln`]).
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub async fn load(
        self: &Arc<Self>,
        sandbox: &Arc<Sandbox>,
        bytes: Arc<[u8]>,
        caller: Option<&str>,
    ) -> Result<Arc<Artifact>, LoadError> {
        self.load_from(sandbox, bytes, caller)
            .await
            .map(|(artifact, _)| artifact)
    }

    /// [`load`](Self::load), and where the artifact came from: memory, the
    /// disk cache, or a compile (one this call started or joined).
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub async fn load_from(
        self: &Arc<Self>,
        sandbox: &Arc<Sandbox>,
        bytes: Arc<[u8]>,
        caller: Option<&str>,
    ) -> Result<(Arc<Artifact>, LoadSource), LoadError> {
        let cached = {
            let (sandbox, bytes) = (sandbox.clone(), bytes.clone());
            blocking(move || sandbox.load_cached(&bytes)).await?
        };
        if let Some(found) = cached {
            return Ok(found);
        }
        let program = match (&self.program, sandbox.cache_dir()) {
            (Some(program), Some(dir)) => (program.clone(), dir.to_path_buf()),
            _ => {
                let (sandbox, bytes) = (sandbox.clone(), bytes.clone());
                return blocking(move || sandbox.load(&bytes)).await;
            }
        };
        let (key, component) = {
            let (sandbox, bytes) = (sandbox.clone(), bytes.clone());
            blocking(move || sandbox.compile_input(&bytes)).await?
        };
        let component: Arc<[u8]> = component.into();
        // Twice at most: a load may join a compile in the instant its last
        // waiter left, and then starts it again.
        let mut settled = Err(LoadError::Abandoned);
        for _ in 0..2 {
            let (mut outcome, _turn) =
                self.compile(key, component.clone(), program.clone(), caller)?;
            settled = outcome
                .wait_for(Option::is_some)
                .await
                .map_err(|_| LoadError::Internal("the compile task ended".into()))?
                .clone()
                .unwrap_or(Err(LoadError::Abandoned));
            if !matches!(settled, Err(LoadError::Abandoned)) {
                break;
            }
        }
        settled?;
        let sandbox = sandbox.clone();
        let artifact = blocking(move || sandbox.load_compiled(&bytes)).await?;
        Ok((artifact, LoadSource::Compiled))
    }

    /// The outcome of the compile of `key`: the one in flight (joined at no
    /// cost to the caller), or a new one, which takes one of the caller's
    /// turns for as long as the caller waits.
    fn compile(
        self: &Arc<Self>,
        key: ArtifactKey,
        component: Arc<[u8]>,
        (program, dir): (PathBuf, PathBuf),
        caller: Option<&str>,
    ) -> Result<(watch::Receiver<Outcome>, Option<CallerTurn<'_>>), LoadError> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tell) = in_flight.get(&key) {
            return Ok((tell.subscribe(), None));
        }
        let turn = caller
            .map(|caller| CallerTurn::take(self, caller))
            .transpose()?;
        let bounds = match caller {
            Some(_) => self.bounds.clone(),
            None => self.bounds.for_kiln(),
        };
        let (tell, outcome) = watch::channel(None);
        in_flight.insert(key, tell.clone());
        let settle = Settle {
            compiler: self.clone(),
            key,
            tell,
        };
        tokio::spawn(async move {
            let result = settle
                .compiler
                .run_child(&program, &dir, key, &component, &bounds, &settle.tell)
                .await;
            settle.answer(result);
        });
        Ok((outcome, turn))
    }

    /// One compile in a child, once a turn is free; abandoned (the child
    /// killed) as soon as nobody waits for it.
    async fn run_child(
        &self,
        program: &Path,
        dir: &Path,
        key: ArtifactKey,
        component: &[u8],
        bounds: &CompileBounds,
        tell: &watch::Sender<Outcome>,
    ) -> Result<(), LoadError> {
        let turn = {
            let _waiting = Waiting::enter(self)?;
            tokio::select! {
                turn = self.turns.clone().acquire_owned() => turn
                    .map_err(|_| LoadError::Internal("the compile queue is closed".into()))?,
                () = tell.closed() => return Err(LoadError::Abandoned),
            }
        };
        let mut command = tokio::process::Command::new(program);
        command.arg(child::SUBCOMMAND);
        if bounds.parallel_threads {
            command.arg("--parallel");
        }
        let mut child = command
            // Nothing of the server's environment (its secrets, its log
            // settings) reaches a process that parses hostile bytes.
            .env_clear()
            .arg("--cache-dir")
            .arg(dir)
            .arg("--key")
            .arg(key.to_hex())
            .arg("--memory-mb")
            .arg(bounds.memory_mb.to_string())
            .arg("--cpu-secs")
            .arg(bounds.cpu_secs.to_string())
            .stdin(Stdio::piped())
            // Not /dev/null: a bare chroot has no /dev. The child writes
            // nothing there; the pipe is closed at once.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LoadError::Internal(format!("cannot start {}: {e}", program.display())))?;
        drop(child.stdout.take());
        let mut stdin = child.stdin.take();
        let feed = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A child that dies early closes the pipe: its status says why.
                let _ = stdin.write_all(component).await;
            }
            drop(stdin);
        };
        let mut stderr = child.stderr.take();
        let read_errors = async move {
            let mut message = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr
                    .take(child::MAX_MESSAGE_BYTES)
                    .read_to_end(&mut message)
                    .await;
                // The rest is read and dropped: a closed pipe would make
                // the child's last words fail.
                let _ = tokio::io::copy(stderr, &mut tokio::io::sink()).await;
            }
            String::from_utf8_lossy(&message).trim().to_owned()
        };
        let started = std::time::Instant::now();
        let waited = async {
            let ((), message, status) = tokio::join!(feed, read_errors, child.wait());
            (message, status)
        };
        let (message, status) = tokio::select! {
            done = waited => done,
            () = tokio::time::sleep(bounds.timeout) => {
                return Err(LoadError::Bounds {
                    limit: "limits.compile_timeout_ms",
                    what: format!("the compile ran past {} ms", bounds.timeout.as_millis()),
                });
            }
            () = tell.closed() => return Err(LoadError::Abandoned),
        };
        drop(turn);
        let status = status.map_err(|e| LoadError::Internal(format!("waiting for it: {e}")))?;
        tracing::debug!(%key, ms = started.elapsed().as_millis(), ?status, "compiled in a child");
        child::outcome(status, message, bounds)
    }
}

/// A compile's entry in the map of those in flight: taken out, and its
/// answer given (an error if the task ended without one), however the task
/// ends.
struct Settle {
    compiler: Arc<Compiler>,
    key: ArtifactKey,
    tell: watch::Sender<Outcome>,
}

impl Settle {
    fn answer(self, result: Result<(), LoadError>) {
        self.tell.send_replace(Some(result));
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        // Out of the map before a waiter can look again: a later load either
        // has this answer or finds the artifact in the cache.
        self.compiler
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        if self.tell.borrow().is_none() {
            self.tell.send_replace(Some(Err(LoadError::Internal(
                "the compile task ended without an answer".into(),
            ))));
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, kiln_runtime::Error> + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LoadError::Internal(format!("the loading task failed: {e}")))?
        .map_err(|e| LoadError::sandbox(&e))
}

/// A caller's place among its compiles in flight.
struct CallerTurn<'a> {
    compiler: &'a Compiler,
    caller: String,
}

impl<'a> CallerTurn<'a> {
    fn take(compiler: &'a Compiler, caller: &str) -> Result<Self, LoadError> {
        let mut counts = compiler
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(caller.to_owned()).or_insert(0);
        if *count >= compiler.bounds.per_caller {
            return Err(LoadError::Busy(*count));
        }
        *count += 1;
        Ok(Self {
            compiler,
            caller: caller.to_owned(),
        })
    }
}

impl Drop for CallerTurn<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .compiler
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// A compile's place in the queue, while it waits for a turn.
struct Waiting<'a>(&'a Compiler);

impl<'a> Waiting<'a> {
    fn enter(compiler: &'a Compiler) -> Result<Self, LoadError> {
        let mut waiting = compiler
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *waiting >= compiler.bounds.waiting {
            return Err(LoadError::QueueFull);
        }
        *waiting += 1;
        Ok(Self(compiler))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self
            .0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *waiting = waiting.saturating_sub(1);
    }
}

/// This binary, to start compile children from: `/proc/self/exe` where
/// `/proc` is mounted (the running file, even if a new one was installed at
/// its path since), else the path it was started by (made absolute now, as
/// Kiln never changes directory), as in a bare chroot.
pub fn this_program() -> Option<PathBuf> {
    let exe = PathBuf::from("/proc/self/exe");
    if exe.is_file() {
        return Some(exe);
    }
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.components().count() < 2 {
        // A bare name was found on PATH, which cannot be read back.
        return None;
    }
    let path = if argv0.is_absolute() {
        argv0
    } else {
        std::env::current_dir().ok()?.join(argv0)
    };
    path.is_file().then_some(path)
}

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

use kiln_runtime::{Artifact, ArtifactKey, Sandbox};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, watch};

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

    /// The artifact for `bytes`: from the sandbox's caches, else compiled
    /// in a child process on `caller`'s account (`None`: Kiln's own, as the
    /// embedded runtimes, which no per-caller cap holds back).
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
        let cached = {
            let (sandbox, bytes) = (sandbox.clone(), bytes.clone());
            blocking(move || sandbox.load_cached(&bytes)).await?
        };
        if let Some((artifact, _)) = cached {
            return Ok(artifact);
        }
        let program = match (&self.program, sandbox.cache_dir()) {
            (Some(program), Some(dir)) => (program.clone(), dir.to_path_buf()),
            _ => {
                let (sandbox, bytes) = (sandbox.clone(), bytes.clone());
                return blocking(move || sandbox.load(&bytes).map(|(a, _)| a)).await;
            }
        };
        let _turn = caller
            .map(|caller| CallerTurn::take(self, caller))
            .transpose()?;
        let (key, component) = {
            let (sandbox, bytes) = (sandbox.clone(), bytes.clone());
            blocking(move || sandbox.compile_input(&bytes)).await?
        };
        let mut outcome = self.compile(key, component, program);
        let settled = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| LoadError::Internal("the compile task ended without an answer".into()))?
            .clone();
        settled.unwrap_or_else(|| Err(LoadError::Internal("no answer".into())))?;
        let sandbox = sandbox.clone();
        blocking(move || sandbox.load_compiled(&bytes)).await
    }

    /// The outcome of the compile of `key`: the one in flight, or a new one.
    fn compile(
        self: &Arc<Self>,
        key: ArtifactKey,
        component: Vec<u8>,
        (program, dir): (PathBuf, PathBuf),
    ) -> watch::Receiver<Outcome> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tell) = in_flight.get(&key) {
            return tell.subscribe();
        }
        let (tell, outcome) = watch::channel(None);
        in_flight.insert(key, tell.clone());
        let compiler = self.clone();
        tokio::spawn(async move {
            let result = compiler
                .run_child(&program, &dir, key, component, &tell)
                .await;
            // Out of the map before the answer: a later load either sees
            // this answer or finds the artifact in the cache.
            compiler
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            tell.send_replace(Some(result));
        });
        outcome
    }

    /// One compile in a child, once a turn is free; abandoned (the child
    /// killed) as soon as nobody waits for it.
    async fn run_child(
        &self,
        program: &Path,
        dir: &Path,
        key: ArtifactKey,
        component: Vec<u8>,
        tell: &watch::Sender<Outcome>,
    ) -> Result<(), LoadError> {
        let turn = {
            let _waiting = Waiting::enter(self)?;
            tokio::select! {
                turn = self.turns.clone().acquire_owned() => turn
                    .map_err(|_| LoadError::Internal("the compile queue is closed".into()))?,
                () = tell.closed() => return Err(abandoned()),
            }
        };
        let mut child = tokio::process::Command::new(program)
            .arg(child::SUBCOMMAND)
            .arg("--cache-dir")
            .arg(dir)
            .arg("--key")
            .arg(key.to_hex())
            .arg("--memory-mb")
            .arg(self.bounds.memory_mb.to_string())
            .arg("--cpu-secs")
            .arg(self.bounds.cpu_secs.to_string())
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
                let _ = stdin.write_all(&component).await;
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
            () = tokio::time::sleep(self.bounds.timeout) => {
                return Err(LoadError::Bounds {
                    limit: "limits.compile_timeout_ms",
                    what: format!("the compile ran past {} ms", self.bounds.timeout.as_millis()),
                });
            }
            () = tell.closed() => return Err(abandoned()),
        };
        drop(turn);
        let status = status.map_err(|e| LoadError::Internal(format!("waiting for it: {e}")))?;
        tracing::debug!(%key, ms = started.elapsed().as_millis(), ?status, "compiled in a child");
        child::outcome(status, message, &self.bounds)
    }
}

fn abandoned() -> LoadError {
    LoadError::Internal("nobody waits for this compile any more".into())
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

/// This binary's path, to start compile children from: the kernel's link
/// where `/proc` is mounted, else the path it was started by (made absolute
/// now, as Kiln never changes directory), as in a bare chroot.
pub fn this_program() -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && exe.is_file()
    {
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

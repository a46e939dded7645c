//! [`Sandbox`]: load components and run them under limits.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::artifact::{self, Artifact, ArtifactKey, Entry, LoadSource};
use crate::bindings::exports::kiln::language::script::{Guest as LanguageScript, SourceFile};
use crate::bindings::script::ScriptPre;
use crate::bindings::{Failure, FailureKind, LanguageRuntimePre};
use crate::cache::{ArtifactCache, CacheStats};
use crate::cancel::CancelHandle;
use crate::capture::{CapturePipe, OutputSink};
use crate::code::{CodeCache, CodeKey};
use crate::egress::Egress;
use crate::engine::{self, EngineOptions, EpochTicker, FUEL_YIELD_INTERVAL};
use crate::error::{Error, chain};
use crate::limits::Limits;
use crate::outcome::{self, Ending, Evidence, GuestError, Outcome, Verdict};
use crate::script_host::ScriptHost;
use crate::source::Source;
use crate::stdin::Stdin;
use crate::warm::{Prepared, Warm};
use crate::wasi::{self, State, WasiSetup};

/// What to call in the artifact.
#[derive(Debug, Clone, Default)]
pub enum Call {
    /// A command's `wasi:cli/run`.
    #[default]
    Main,
    /// A `kiln:script` component's `run`, with the parameters as a JSON
    /// object.
    Json {
        /// The parameters, a JSON object.
        params: String,
    },
    /// A language runtime's `run`: the script's source and its parameters as
    /// a JSON object.
    Script {
        /// The script's source: one file or a bundle.
        source: Arc<Source>,
        /// The parameters, a JSON object.
        params: String,
    },
}

/// One run's inputs.
#[derive(Default)]
pub struct Invocation {
    /// What to call; must fit the artifact's [`Shape`].
    pub call: Call,
    /// `argv`, program name first.
    pub args: Vec<String>,
    /// The complete environment the guest sees.
    pub env: Vec<(String, String)>,
    /// Bytes the guest reads from stdin.
    pub stdin: Vec<u8>,
    /// What the guest reads on stdin after `stdin`, chunk by chunk as it
    /// arrives, until every sender is gone; without it stdin ends after
    /// `stdin`.
    pub live_stdin: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    /// Resource limits for this run.
    pub limits: Limits,
    /// Stops the run when cancelled.
    pub cancel: Option<CancelHandle>,
    /// Receives stdout/stderr chunks as they are written.
    pub on_output: Option<OutputSink>,
    /// What a `kiln:script` component's key-value and config imports reach;
    /// without one they answer "unavailable" and "not set".
    pub script_host: Option<Arc<dyn ScriptHost>>,
    /// Where the run's outgoing HTTP requests go (`wasi:http` from a
    /// component, `fetch` from a script); without one they are refused.
    pub egress: Option<Arc<dyn Egress>>,
}

/// The sandbox: one engine, its linkers, its artifact cache and its epoch
/// ticker. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Sandbox {
    engine: wasmtime::Engine,
    /// WASI, `wasi:http`, `kiln:script` and `kiln:language/http`: what every
    /// component may import. What `wasi:http`'s constructors make the host
    /// hold is capped per run (`wasi.rs`).
    linker: Linker<State>,
    engine_digest: [u8; 32],
    cache: ArtifactCache,
    code: CodeCache,
    warm: Warm,
    compile_limits: crate::CompileLimits,
    _ticker: EpochTicker,
}

/// The memory kept for scripts' compiled code (see `code.rs`).
const SCRIPT_CODE_CACHE_BYTES: usize = 64 << 20;

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("cache", &self.cache.stats())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine, the WASI linker and the cache, and starts the epoch
    /// ticker.
    ///
    /// # Errors
    ///
    /// [`Error::Engine`] if wasmtime refuses the configuration,
    /// [`Error::Cache`] if the cache directory cannot be created.
    pub fn new(options: EngineOptions) -> Result<Self, Error> {
        let engine = engine::build_engine(&options)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| Error::Engine(chain(&e)))?;
        // kiln:script's log, key-value and config (see `script_host.rs`).
        crate::bindings::script::Script::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| Error::Engine(chain(&e)))?;
        // A script runtime's `fetch` (see `egress.rs`).
        crate::bindings::kiln::language::http::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| Error::Engine(chain(&e)))?;
        // wasi:http: HTTP functions answer requests with it, and any
        // component may send them through the run's egress (see `egress.rs`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| Error::Engine(chain(&e)))?;
        let engine_digest = engine::compatibility_digest(&engine);
        let cache = ArtifactCache::new(options.cache_dir.clone(), options.artifact_cache_entries)?;
        let ticker = EpochTicker::start(&engine, options.epoch_tick)?;
        let ahead = engine.clone();
        let warm = Warm::start(
            options.prewarm_above,
            Box::new(move || {
                let mut store = new_store(&ahead, WasiSetup::none());
                // The run sets its own; these only let instantiation proceed.
                let _ = arm(&mut store, None);
                store
            }),
        )
        .map_err(|e| Error::Internal(format!("cannot start the warm thread: {e}")))?;
        Ok(Self {
            engine,
            linker,
            engine_digest,
            cache,
            code: CodeCache::new(SCRIPT_CODE_CACHE_BYTES),
            warm,
            compile_limits: options.compile_limits.clone(),
            _ticker: ticker,
        })
    }

    /// The key `bytes` are cached under by this sandbox.
    pub fn key_of(&self, bytes: &[u8]) -> ArtifactKey {
        ArtifactKey::new(bytes, &self.engine_digest)
    }

    /// How artifacts were obtained so far.
    pub fn cache_stats(&self) -> CacheStats {
        let (script_code_hits, script_compiles) = self.code.counts();
        CacheStats {
            script_code_hits,
            script_compiles,
            prewarmed_runs: self.warm.hits(),
            ..self.cache.stats()
        }
    }

    /// Returns a runnable artifact for a component or core wasip1 module: from
    /// memory, else from the disk cache, else compiled in this process (and
    /// cached). Compiling takes from milliseconds to seconds of CPU: call it
    /// off async tasks. A server compiles in a child process instead:
    /// [`load_cached`](Self::load_cached), [`compile_input`](Self::compile_input),
    /// [`compile_into_cache`](crate::compile_into_cache) there, then
    /// [`load_compiled`](Self::load_compiled).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidComponent`], [`Error::TooComplex`], [`Error::Compile`]
    /// or [`Error::Link`] for bytes that cannot run here; [`Error::Cache`] or [`Error::Internal`]
    /// when writing the cache fails.
    pub fn load(&self, bytes: &[u8]) -> Result<(Arc<Artifact>, LoadSource), Error> {
        if let Some(found) = self.load_cached(bytes)? {
            return Ok(found);
        }
        let (key, component_bytes) = self.compile_input(bytes)?;
        self.cache.count_compile();
        let component = artifact::compile(&self.engine, &component_bytes)?;
        let artifact = self.link(key, &component, LoadSource::Compiled)?;
        self.cache.write_disk(&key, &component)?;
        Ok((artifact, LoadSource::Compiled))
    }

    /// The artifact for `bytes` if it is in memory or in the disk cache;
    /// `None` when it must be compiled.
    ///
    /// # Errors
    ///
    /// [`Error::Link`] for a cached component that cannot be linked here.
    pub fn load_cached(&self, bytes: &[u8]) -> Result<Option<(Arc<Artifact>, LoadSource)>, Error> {
        let key = self.key_of(bytes);
        if let Some(ready) = self.cache.ready(&key) {
            return Ok(Some((ready, LoadSource::Memory)));
        }
        let Some(component) = self.cache.read_disk(&self.engine, &key) else {
            return Ok(None);
        };
        self.cache.count_disk_hit();
        Ok(Some((
            self.link(key, &component, LoadSource::Disk)?,
            LoadSource::Disk,
        )))
    }

    /// What compiling `bytes` takes: their key and the component to hand to
    /// [`compile_into_cache`](crate::compile_into_cache), checked against
    /// the compile limits (a core module adapted, text assembled first).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidComponent`], [`Error::TooComplex`], [`Error::Compile`]
    /// or [`Error::Link`] for bytes that cannot be compiled.
    pub fn compile_input(&self, bytes: &[u8]) -> Result<(ArtifactKey, Vec<u8>), Error> {
        let key = self.key_of(bytes);
        let component = artifact::component_bytes(bytes, &self.compile_limits)?;
        Ok((key, component.into_owned()))
    }

    /// Loads what [`compile_into_cache`](crate::compile_into_cache) left
    /// in this sandbox's cache directory for `bytes`, verified as every
    /// disk cache entry is.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] when there is no artifact; [`Error::Compile`]
    /// when the one there does not load into this engine (it does not fit
    /// the instance pool); [`Error::Link`] when it cannot be linked here.
    pub fn load_compiled(&self, bytes: &[u8]) -> Result<Arc<Artifact>, Error> {
        let key = self.key_of(bytes);
        // Another load of the same compile may have linked it already.
        if let Some(ready) = self.cache.ready(&key) {
            return Ok(ready);
        }
        let component = self
            .cache
            .read_disk_checked(&self.engine, &key)
            .map_err(Error::Compile)?
            .ok_or_else(|| {
                Error::Internal(format!("the compile of {key} left no usable artifact"))
            })?;
        self.cache.count_compile();
        self.link(key, &component, LoadSource::Compiled)
    }

    /// The directory compiled artifacts are cached in, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.dir()
    }

    /// Keeps the compiled artifacts on disk to `max_bytes`, least recently
    /// used first, never removing one loaded in memory (in use or ready).
    ///
    /// # Errors
    ///
    /// The cache directory cannot be listed.
    pub fn trim_disk_cache(&self, max_bytes: u64) -> Result<crate::Trimmed, Error> {
        Ok(self.cache.trim_disk(max_bytes)?)
    }

    /// Links a compiled component with the imports its shape may have, and
    /// keeps it ready in memory.
    fn link(
        &self,
        key: ArtifactKey,
        component: &wasmtime::component::Component,
        source: LoadSource,
    ) -> Result<Arc<Artifact>, Error> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| Error::Link(chain(&e)))?;
        let entry = Entry::new(pre)?;
        tracing::debug!(key = %key, ?source, "artifact loaded");
        let artifact = Arc::new(Artifact { key, entry });
        self.cache.insert(artifact.clone());
        Ok(artifact)
    }

    /// Compiles a script with a language runtime artifact without running it,
    /// and keeps the compiled code for its runs. `Ok(None)` means it parses;
    /// `Ok(Some(error))` is a `COMPILE_ERROR` with the position, or whatever
    /// stopped the parser (a limit).
    ///
    /// # Errors
    ///
    /// [`Error::Link`] if the artifact is not a language runtime; host
    /// failures as in [`run`](Self::run).
    pub async fn check(
        &self,
        artifact: &Artifact,
        source: &Source,
        limits: Limits,
    ) -> Result<Option<GuestError>, Error> {
        let Entry::LanguageRuntime(pre) = &artifact.entry else {
            return Err(Error::Link(
                "only a language runtime can check a script".into(),
            ));
        };
        let (mut store, _, _) =
            self.store(Stdin::Fixed(Vec::new()), &[], &[], &limits, None, None)?;
        let call = async {
            let runtime = pre.instantiate_async(&mut store).await?;
            compile(runtime.kiln_language_script(), &mut store, source).await
        };
        let ending = match tokio::time::timeout(limits.timeout, call).await {
            Ok(Ok(Ok(code))) => {
                self.code
                    .insert(CodeKey::new(&artifact.key, source), code.into());
                return Ok(None);
            }
            Ok(Ok(Err(failure))) => Ending::Script(Err(failure)),
            Ok(Err(trap)) => Ending::Trapped(trap),
            Err(_) => Ending::TimedOut(limits.timeout),
        };
        Ok(outcome::classify(ending, &evidence(&store)).error)
    }

    /// Runs an artifact to its end, or until a limit stops it.
    ///
    /// # Errors
    ///
    /// [`Error::Link`] when `invocation.call` does not fit the artifact's
    /// shape, otherwise only host failures ([`Error::Internal`]); everything
    /// the guest does, including trapping, is in the [`Outcome`].
    pub async fn run(&self, artifact: &Artifact, invocation: Invocation) -> Result<Outcome, Error> {
        let started = Instant::now();
        let Invocation {
            call,
            args,
            env,
            stdin,
            live_stdin,
            limits,
            cancel,
            on_output,
            script_host,
            egress,
        } = invocation;
        let entrypoint = Entrypoint::of(&artifact.entry, &call)?;
        let stdin = Stdin::new(stdin, live_stdin);
        let setup =
            WasiSetup::new(&args, &env, stdin, &limits, on_output, script_host).with_egress(egress);
        let (stdout, stderr) = (setup.stdout.clone(), setup.stderr.clone());
        let prepared = match entrypoint {
            Entrypoint::Script { .. } => self.warm.take(&artifact.key).await,
            _ => None,
        };
        let (mut store, mut made_ahead) = match prepared {
            Some(Prepared { mut store, runtime }) if store.data().admits(limits.memory_bytes) => {
                store.data_mut().rebind(setup);
                (store, Some(runtime))
            }
            // Over this run's cap before it starts: instantiating inline
            // reports that as the run's failure.
            Some(Prepared { store, .. }) => {
                drop(store);
                (self.store_for(setup), None)
            }
            None => (self.store_for(setup), None),
        };
        arm(&mut store, limits.fuel)?;
        let internal = |e: wasmtime::Error| Error::Internal(chain(&e));
        let fuel_start = store.get_fuel().map_err(internal)?;

        let cancel = cancel.unwrap_or_default();
        let ending = {
            let calling = async {
                match entrypoint {
                    Entrypoint::Command(pre) => {
                        let command = pre.instantiate_async(&mut store).await?;
                        command
                            .wasi_cli_run()
                            .call_run(&mut store)
                            .await
                            .map(Ending::Exited)
                    }
                    Entrypoint::Script {
                        pre,
                        source,
                        params,
                    } => {
                        let runtime = match made_ahead.take() {
                            Some(runtime) => runtime,
                            None => {
                                let instantiating = Instant::now();
                                let runtime = pre.instantiate_async(&mut store).await?;
                                self.warm
                                    .observe(&artifact.key, pre, instantiating.elapsed());
                                runtime
                            }
                        };
                        let script = runtime.kiln_language_script();
                        let key = CodeKey::new(&artifact.key, source);
                        // A first run compiles in the instance it then runs
                        // in, so it costs one instantiation, not two.
                        let code = match self.code.get(&key) {
                            Some(code) => code,
                            None => match compile(script, &mut store, source).await? {
                                Ok(code) => {
                                    let code: Arc<[u8]> = code.into();
                                    self.code.insert(key, code.clone());
                                    code
                                }
                                Err(failure) => return Ok(Ending::Script(Err(failure))),
                            },
                        };
                        // The script's environment is the run's, passed
                        // explicitly (see `run` in language.wit).
                        script
                            .call_run(&mut store, &code, params, &env)
                            .await
                            .map(Ending::Script)
                    }
                    Entrypoint::Json { pre, params } => {
                        let script = pre.instantiate_async(&mut store).await?;
                        script.call_run(&mut store, params).await.map(|returned| {
                            Ending::Script(returned.map_err(|message| Failure {
                                kind: FailureKind::Runtime,
                                message,
                                stack: None,
                                line: None,
                                column: None,
                            }))
                        })
                    }
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => Ending::Cancelled,
                () = tokio::time::sleep(limits.timeout) => Ending::TimedOut(limits.timeout),
                returned = calling => returned.unwrap_or_else(Ending::Trapped),
            }
        };
        let usage = Usage::of(&store, fuel_start, started);
        let mut verdict = outcome::classify(ending, &evidence(&store));
        verdict.cap_result(limits.result_bytes);
        match &artifact.entry {
            Entry::LanguageRuntime(pre) => self.warm.retire(&artifact.key, pre, store),
            _ => drop(store),
        }
        Ok(usage.outcome(verdict, &stdout, &stderr))
    }

    /// A store for one run: WASI context, limiter, fuel, epoch yields.
    pub(crate) fn store(
        &self,
        stdin: Stdin,
        args: &[String],
        env: &[(String, String)],
        limits: &Limits,
        on_output: Option<OutputSink>,
        script_host: Option<Arc<dyn ScriptHost>>,
    ) -> Result<(Store<State>, CapturePipe, CapturePipe), Error> {
        let setup = WasiSetup::new(args, env, stdin, limits, on_output, script_host);
        let (stdout, stderr) = (setup.stdout.clone(), setup.stderr.clone());
        let mut store = self.store_for(setup);
        arm(&mut store, limits.fuel)?;
        Ok((store, stdout, stderr))
    }

    fn store_for(&self, setup: WasiSetup<'_>) -> Store<State> {
        new_store(&self.engine, setup)
    }
}

/// A language runtime's `compile` of one file, or its `compile-bundle`.
async fn compile(
    script: &LanguageScript,
    store: &mut Store<State>,
    source: &Source,
) -> wasmtime::Result<Result<Vec<u8>, Failure>> {
    match source {
        Source::File(text) => script.call_compile(store, text).await,
        Source::Bundle(bundle) => {
            let files: Vec<SourceFile> = bundle
                .files
                .iter()
                .map(|(path, text)| SourceFile {
                    path: path.clone(),
                    text: text.clone(),
                })
                .collect();
            script
                .call_compile_bundle(store, &bundle.entry, &files)
                .await
        }
    }
}

/// What a run calls: an artifact's entry and a [`Call`] that fit each
/// other, checked once before anything is set up.
#[derive(Clone, Copy)]
enum Entrypoint<'a> {
    Command(&'a CommandPre<State>),
    Script {
        pre: &'a LanguageRuntimePre<State>,
        source: &'a Source,
        params: &'a str,
    },
    Json {
        pre: &'a ScriptPre<State>,
        params: &'a str,
    },
}

impl<'a> Entrypoint<'a> {
    fn of(entry: &'a Entry, call: &'a Call) -> Result<Self, Error> {
        match (entry, call) {
            (Entry::Command(pre), Call::Main) => Ok(Self::Command(pre)),
            (Entry::LanguageRuntime(pre), Call::Script { source, params }) => Ok(Self::Script {
                pre,
                source,
                params,
            }),
            (Entry::Script(pre), Call::Json { params }) => Ok(Self::Json { pre, params }),
            (Entry::Http(_), _) => Err(Error::Link(
                "an HTTP function answers requests (Sandbox::handle), it is not run".into(),
            )),
            (entry, call) => Err(Error::Link(format!(
                "cannot make a {call:?} call into a {:?} component",
                entry.shape()
            ))),
        }
    }
}

fn new_store(engine: &wasmtime::Engine, setup: WasiSetup<'_>) -> Store<State> {
    let mut store = Store::new(engine, wasi::state(setup));
    store.limiter(|state| &mut state.limiter);
    store
}

/// Gives a store its fuel (`None`: unmetered) and its epoch yields, counted
/// from now.
fn arm(store: &mut Store<State>, fuel: Option<u64>) -> Result<(), Error> {
    let internal = |e: wasmtime::Error| Error::Internal(chain(&e));
    store.set_fuel(fuel.unwrap_or(u64::MAX)).map_err(internal)?;
    store
        .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
        .map_err(internal)?;
    // Yield to tokio at every epoch tick: that is where the deadline and
    // cancellation get polled while a guest computes.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    Ok(())
}

/// What a run consumed, read from its store before the store goes.
pub(crate) struct Usage {
    fuel_consumed: u64,
    peak_memory_bytes: u64,
    duration: std::time::Duration,
}

impl Usage {
    pub(crate) fn of(store: &Store<State>, fuel_start: u64, started: Instant) -> Self {
        Self {
            fuel_consumed: fuel_start.saturating_sub(store.get_fuel().unwrap_or(0)),
            peak_memory_bytes: store.data().limiter.peak(),
            duration: started.elapsed(),
        }
    }

    /// The run's [`Outcome`]: its verdict, its captured output, this usage.
    pub(crate) fn outcome(
        self,
        verdict: Verdict,
        stdout: &CapturePipe,
        stderr: &CapturePipe,
    ) -> Outcome {
        let (stdout, stdout_truncated) = stdout.take();
        let (stderr, stderr_truncated) = stderr.take();
        Outcome {
            status: verdict.status,
            exit_code: verdict.exit_code,
            result: verdict.result,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            error: verdict.error,
            fuel_consumed: self.fuel_consumed,
            peak_memory_bytes: self.peak_memory_bytes,
            duration: self.duration,
        }
    }
}

pub(crate) fn evidence(store: &Store<State>) -> Evidence {
    let limiter = &store.data().limiter;
    Evidence {
        memory_refused: limiter.refused(),
        memory_limit: limiter.limit(),
    }
}

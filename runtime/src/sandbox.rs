//! [`Sandbox`]: load components and run them under limits.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::artifact::{self, Artifact, ArtifactKey, LoadSource};
use crate::cache::{ArtifactCache, CacheStats};
use crate::cancel::CancelHandle;
use crate::capture::{CapturePipe, OutputKind, OutputSink};
use crate::engine::{self, EngineOptions, EpochTicker, FUEL_YIELD_INTERVAL};
use crate::error::{Error, chain};
use crate::limits::{Limits, MemoryLimiter};
use crate::outcome::{self, Ending, Evidence, Outcome};
use crate::wasi::{self, State};

/// One run's inputs.
#[derive(Default)]
pub struct Invocation {
    /// `argv`, program name first.
    pub args: Vec<String>,
    /// The complete environment the guest sees.
    pub env: Vec<(String, String)>,
    /// Bytes the guest reads from stdin.
    pub stdin: Vec<u8>,
    /// Resource limits for this run.
    pub limits: Limits,
    /// Stops the run when cancelled.
    pub cancel: Option<CancelHandle>,
    /// Receives stdout/stderr chunks as they are written.
    pub on_output: Option<OutputSink>,
}

/// The sandbox: one engine, its linker, its artifact cache and its epoch
/// ticker. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Sandbox {
    engine: wasmtime::Engine,
    linker: Linker<State>,
    engine_digest: [u8; 32],
    cache: ArtifactCache,
    _ticker: EpochTicker,
}

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
        let engine_digest = engine::compatibility_digest(&engine);
        let cache = ArtifactCache::new(options.cache_dir.clone(), options.artifact_cache_entries)?;
        let ticker = EpochTicker::start(&engine, options.epoch_tick)?;
        Ok(Self {
            engine,
            linker,
            engine_digest,
            cache,
            _ticker: ticker,
        })
    }

    /// The key `bytes` are cached under by this sandbox.
    pub fn key_of(&self, bytes: &[u8]) -> ArtifactKey {
        ArtifactKey::new(bytes, &self.engine_digest)
    }

    /// How artifacts were obtained so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Returns a runnable artifact for a component or core wasip1 module: from
    /// memory, else from the disk cache, else compiled (and cached). Compiling
    /// takes from milliseconds to seconds of CPU: call it off async tasks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidComponent`], [`Error::Compile`] or [`Error::Link`] for
    /// bytes that cannot run here; [`Error::Cache`] or [`Error::Internal`]
    /// when writing the cache fails.
    pub fn load(&self, bytes: &[u8]) -> Result<(Arc<Artifact>, LoadSource), Error> {
        let key = self.key_of(bytes);
        if let Some(ready) = self.cache.ready(&key) {
            return Ok((ready, LoadSource::Memory));
        }
        let (component, source) = match self.cache.read_disk(&self.engine, &key) {
            Some(component) => (component, LoadSource::Disk),
            None => {
                let component_bytes = artifact::component_bytes(bytes)?;
                self.cache.count_compile();
                (
                    artifact::compile(&self.engine, &component_bytes)?,
                    LoadSource::Compiled,
                )
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Link(chain(&e)))?;
        let command = CommandPre::new(pre)
            .map_err(|e| Error::Link(format!("not a wasi:cli/command component: {}", chain(&e))))?;
        if source == LoadSource::Compiled {
            self.cache.write_disk(&key, &component)?;
        }
        tracing::debug!(key = %key, ?source, "artifact loaded");
        let artifact = Arc::new(Artifact { key, command });
        self.cache.insert(artifact.clone());
        Ok((artifact, source))
    }

    /// Runs a `wasi:cli/command` artifact to its end, or until a limit stops it.
    ///
    /// # Errors
    ///
    /// Only host failures ([`Error::Internal`]); everything the guest does,
    /// including trapping, is in the [`Outcome`].
    pub async fn run(&self, artifact: &Artifact, invocation: Invocation) -> Result<Outcome, Error> {
        let started = Instant::now();
        let Invocation {
            args,
            env,
            stdin,
            limits,
            cancel,
            on_output,
        } = invocation;
        let stdout = CapturePipe::new(OutputKind::Stdout, limits.stdout_bytes, on_output.clone());
        let stderr = CapturePipe::new(OutputKind::Stderr, limits.stderr_bytes, on_output);
        let setup = wasi::WasiSetup {
            args: &args,
            env: &env,
            stdin,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        };
        let mut store = Store::new(
            &self.engine,
            wasi::state(setup, MemoryLimiter::new(limits.memory_bytes)),
        );
        store.limiter(|state| &mut state.limiter);
        let internal = |e: wasmtime::Error| Error::Internal(chain(&e));
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .map_err(internal)?;
        let fuel_start = store.get_fuel().map_err(internal)?;
        store
            .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
            .map_err(internal)?;
        // Yield to tokio at every epoch tick: that is where the deadline and
        // cancellation below get polled while a guest computes.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let cancel = cancel.unwrap_or_default();
        let ending = {
            let call = async {
                let command = artifact.command.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => Ending::Cancelled,
                () = tokio::time::sleep(limits.timeout) => Ending::TimedOut(limits.timeout),
                returned = call => Ending::Returned(returned),
            }
        };
        let duration = started.elapsed();
        let fuel_left = store.get_fuel().unwrap_or(0);
        let limiter = &store.data().limiter;
        let evidence = Evidence {
            memory_refused: limiter.refused(),
            memory_limit: limiter.limit(),
        };
        let peak_memory_bytes = limiter.peak();
        let (status, exit_code, error) = outcome::classify(ending, &evidence);
        drop(store);
        let (stdout, stdout_truncated) = stdout.take();
        let (stderr, stderr_truncated) = stderr.take();
        Ok(Outcome {
            status,
            exit_code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            error,
            fuel_consumed: fuel_start.saturating_sub(fuel_left),
            peak_memory_bytes,
            duration,
        })
    }
}

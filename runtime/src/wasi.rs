//! The per-run store state and its WASI context, deny-all by default.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use std::sync::Arc;

use crate::capture::{CapturePipe, OutputKind, OutputSink};
use crate::egress::{Egress, OutgoingHooks};
use crate::limits::{Limits, MemoryLimiter};
use crate::script_host::{ScriptEnv, ScriptHost};
use crate::stdin::Stdin;

/// What a `Store` holds for one run.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) hooks: OutgoingHooks,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) script: ScriptEnv,
}

/// What one run may make the host hold on its behalf, beyond its own
/// memory (which `memory_mb` caps): resources (streams, pollables, header
/// fields, bodies) at once, the bytes of one set of header fields, and the
/// bytes an outgoing body buffers. At most ~`MAX_RESOURCES` × the larger of
/// the two byte caps, 16 MiB, and far less in practice (ARCHITECTURE.md,
/// "Limits").
pub(crate) const MAX_RESOURCES: usize = 256;
pub(crate) const MAX_FIELDS_BYTES: usize = 16 << 10;
pub(crate) const OUTGOING_BODY_CHUNK_BYTES: usize = 64 << 10;

fn resource_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    table
}

impl State {
    /// Drops every resource the guest still holds (streams, bodies, an
    /// unset response): anything on the host waiting on them ends.
    pub(crate) fn drop_resources(&mut self) {
        self.table = resource_table();
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The WASI surface one run sees: only the arguments and environment the caller
/// passed, stdin (from memory, or fed while it runs), captured stdout/stderr, the host's clocks and
/// randomness. No preopened directories, no sockets, no name lookup, nothing
/// inherited from the host process.
pub(crate) struct WasiSetup<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Stdin,
    pub stdout: CapturePipe,
    pub stderr: CapturePipe,
    /// What a `kiln:script` component's key-value and config imports reach.
    pub script_host: Option<Arc<dyn ScriptHost>>,
    /// The run's memory cap.
    pub memory_bytes: u64,
    /// Where its outgoing HTTP requests go; none refuses them all.
    pub egress: Option<Arc<dyn Egress>>,
}

impl<'a> WasiSetup<'a> {
    /// One run's surface: output captured within `limits`.
    pub(crate) fn new(
        args: &'a [String],
        env: &'a [(String, String)],
        stdin: Stdin,
        limits: &Limits,
        on_output: Option<OutputSink>,
        script_host: Option<Arc<dyn ScriptHost>>,
    ) -> Self {
        Self {
            args,
            env,
            stdin,
            stdout: CapturePipe::new(OutputKind::Stdout, limits.stdout_bytes, on_output.clone()),
            stderr: CapturePipe::new(OutputKind::Stderr, limits.stderr_bytes, on_output),
            script_host,
            memory_bytes: limits.memory_bytes,
            egress: None,
        }
    }

    /// The same surface, its outgoing requests sent through `egress`.
    pub(crate) fn with_egress(mut self, egress: Option<Arc<dyn Egress>>) -> Self {
        self.egress = egress;
        self
    }

    /// Nothing at all: the surface of an instance made ahead, replaced by
    /// its run's (`State::rebind`) before any guest code runs.
    pub(crate) fn none() -> WasiSetup<'static> {
        WasiSetup {
            args: &[],
            env: &[],
            stdin: Stdin::Fixed(Vec::new()),
            stdout: CapturePipe::new(OutputKind::Stdout, 0, None),
            stderr: CapturePipe::new(OutputKind::Stderr, 0, None),
            script_host: None,
            memory_bytes: u64::MAX,
            egress: None,
        }
    }
}

pub(crate) fn state(setup: WasiSetup<'_>) -> State {
    let limiter = MemoryLimiter::new(setup.memory_bytes);
    let hooks = OutgoingHooks {
        egress: setup.egress.clone(),
    };
    let (wasi, script) = surface(setup);
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(MAX_FIELDS_BYTES);
    State {
        wasi,
        http,
        hooks,
        table: resource_table(),
        limiter,
        script,
    }
}

impl State {
    /// Whether an instance made ahead (see `warm.rs`) fits a run's memory
    /// cap: it may already hold more.
    pub(crate) fn admits(&self, memory_limit: u64) -> bool {
        self.limiter.admits(memory_limit)
    }

    /// Gives a store whose instance was made ahead the run's own WASI
    /// surface and memory cap (which it must [`admit`](Self::admits)).
    pub(crate) fn rebind(&mut self, setup: WasiSetup<'_>) {
        self.limiter.set_limit(setup.memory_bytes);
        self.hooks.egress = setup.egress.clone();
        (self.wasi, self.script) = surface(setup);
    }
}

fn surface(setup: WasiSetup<'_>) -> (WasiCtx, ScriptEnv) {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(setup.args)
        .envs(setup.env)
        .stdout(setup.stdout)
        .stderr(setup.stderr.clone())
        // The defaults already deny every address; refusing the socket
        // interfaces outright makes that independent of future defaults.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    setup.stdin.give(&mut builder);
    let script = ScriptEnv {
        host: setup.script_host,
        stderr: setup.stderr,
        traced: 0,
    };
    (builder.build(), script)
}

//! The per-run store state and its WASI context, deny-all by default.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capture::CapturePipe;
use crate::limits::MemoryLimiter;

/// What a `Store` holds for one run.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
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
/// passed, stdin from memory, captured stdout/stderr, the host's clocks and
/// randomness. No preopened directories, no sockets, no name lookup, nothing
/// inherited from the host process.
pub(crate) struct WasiSetup<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    pub stdout: CapturePipe,
    pub stderr: CapturePipe,
}

pub(crate) fn state(setup: WasiSetup<'_>, limiter: MemoryLimiter) -> State {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(setup.args)
        .envs(setup.env)
        .stdin(MemoryInputPipe::new(setup.stdin))
        .stdout(setup.stdout)
        .stderr(setup.stderr)
        // The defaults already deny every address; refusing the socket
        // interfaces outright makes that independent of future defaults.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    State {
        wasi: builder.build(),
        table: ResourceTable::new(),
        limiter,
    }
}

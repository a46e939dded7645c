//! The per-run store state and its WASI context, deny-all by default.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use std::sync::Arc;

use crate::capture::CapturePipe;
use crate::limits::MemoryLimiter;
use crate::script_host::{ScriptEnv, ScriptHost};

/// What a `Store` holds for one run.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: RefuseOutgoing,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) script: ScriptEnv,
}

impl State {
    /// Drops every resource the guest still holds (streams, bodies, an
    /// unset response): anything on the host waiting on them ends.
    pub(crate) fn drop_resources(&mut self) {
        self.table = ResourceTable::new();
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

/// `wasi:http` as Kiln offers it: a component may build and answer requests,
/// but every outgoing request is refused with `HTTP-request-denied` before
/// any connection is made (guests get no network, DESIGN.md).
struct RefuseOutgoing;

type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for RefuseOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Sent {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
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
/// passed, stdin from memory, captured stdout/stderr, the host's clocks and
/// randomness. No preopened directories, no sockets, no name lookup, nothing
/// inherited from the host process.
pub(crate) struct WasiSetup<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    pub stdout: CapturePipe,
    pub stderr: CapturePipe,
    /// What a `kiln:script` component's key-value and config imports reach.
    pub script_host: Option<Arc<dyn ScriptHost>>,
}

pub(crate) fn state(setup: WasiSetup<'_>, limiter: MemoryLimiter) -> State {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(setup.args)
        .envs(setup.env)
        .stdin(MemoryInputPipe::new(setup.stdin))
        .stdout(setup.stdout)
        .stderr(setup.stderr.clone())
        // The defaults already deny every address; refusing the socket
        // interfaces outright makes that independent of future defaults.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    State {
        wasi: builder.build(),
        http: WasiHttpCtx::new(),
        hooks: RefuseOutgoing,
        table: ResourceTable::new(),
        limiter,
        script: ScriptEnv {
            host: setup.script_host,
            stderr: setup.stderr,
            traced: 0,
        },
    }
}

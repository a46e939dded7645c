//! Kiln's JavaScript runtime: QuickJS (through rquickjs) exporting
//! `kiln:language/script`. A script either defines `function main(params)` at
//! the top level or is an ES module with a default export (or a `main` export);
//! main's value, awaited if it is a promise, is returned as JSON. A script
//! with neither fails as a compile error that says what to define.

mod bundle;
mod code;
mod console;
mod failure;
mod fetch;
mod random;
mod timers;
mod url;
mod web;

use std::cell::RefCell;

use rquickjs::{CatchResultExt, Context, Ctx, Runtime, Value};

use crate::failure::{Failure, FailureKind};

wit_bindgen::generate!({
    world: "kiln:js-runtime/js-runtime",
    path: ["../../runtime/wit", "wit"],
    // The language package's own import (`kiln:language/http`) too.
    generate_all,
});

use exports::kiln::language::script;

/// The name scripts see in stack traces.
pub(crate) const SCRIPT_NAME: &str = "script.js";
/// QuickJS's recursion guard. On WASI it cannot see the stack pointer, so the
/// engine's wasm stack limit is what actually stops runaway recursion (a trap).
const MAX_STACK_BYTES: usize = 256 << 10;

struct JsRuntime;

thread_local! {
    /// The runtime and context made by `wizer-initialize`, with the console
    /// installed: the build snapshots the component right after, so every
    /// instance starts with them ready. Taken by the first run of an
    /// instance; anything later (or a build without the snapshot) makes its own.
    static PREPARED: RefCell<Option<(Runtime, Context)>> = const { RefCell::new(None) };
}

impl Guest for JsRuntime {
    fn wizer_initialize() {
        match new_context() {
            Ok(prepared) => PREPARED.with(|slot| *slot.borrow_mut() = Some(prepared)),
            // A trap here fails the build (components/artifacts/preinit.rs)
            // instead of shipping a runtime that quietly makes a context per run.
            Err(failure) => panic!("cannot prepare a QuickJS context: {}", failure.message()),
        }
    }
}

impl script::Guest for JsRuntime {
    fn compile(source: String) -> Result<Vec<u8>, script::Failure> {
        // A context of its own: compiling declares the module, which must not
        // be seen by a run in the same instance.
        let (runtime, context) = new_context()?;
        let compiled = context.with(|ctx| code::compile(&ctx, &source));
        abandon(runtime, context);
        compiled.map_err(Into::into)
    }

    fn compile_bundle(
        entry: String,
        files: Vec<script::SourceFile>,
    ) -> Result<Vec<u8>, script::Failure> {
        let files = files.into_iter().map(|f| (f.path, f.text)).collect();
        let (runtime, context) = new_context()?;
        let compiled = bundle::compile(&runtime, &context, &entry, files);
        abandon(runtime, context);
        compiled.map_err(Into::into)
    }

    fn run(
        code: Vec<u8>,
        params: String,
        env: Vec<(String, String)>,
    ) -> Result<String, script::Failure> {
        let (runtime, context) = match PREPARED.with(|slot| slot.borrow_mut().take()) {
            Some(prepared) => prepared,
            None => new_context()?,
        };
        let code = bundle::install(&runtime, code)?;
        let result = context.with(|ctx| run_script(&ctx, &code, &params, &env));
        console::flush();
        abandon(runtime, context);
        // `code` is never freed either: `Module::load` asks that its bytes
        // outlive the context, which now lives as long as the instance (a
        // bundle's other modules are owned by the runtime's loader).
        std::mem::forget(code);
        result.map_err(Into::into)
    }
}

export!(JsRuntime);

/// Leaves a runtime and its context to the instance's end instead of freeing
/// them. Kiln makes a fresh instance for every call and throws it away after,
/// so QuickJS's teardown (a final GC, then every object, shape and atom freed
/// one by one) is work nobody sees: under load it was 13 % of the server's
/// CPU, more than running the script.
fn abandon(runtime: Runtime, context: Context) {
    std::mem::forget(context);
    std::mem::forget(runtime);
}

/// `process.env`, as in Node: the execution's environment as strings.
fn install_process_env(ctx: &Ctx<'_>, env: &[(String, String)]) -> rquickjs::Result<()> {
    let vars = rquickjs::Object::new(ctx.clone())?;
    for (key, value) in env {
        vars.set(key.as_str(), value.as_str())?;
    }
    let process = rquickjs::Object::new(ctx.clone())?;
    process.set("env", vars)?;
    ctx.globals().set("process", process)
}

/// A QuickJS runtime and a full context with Kiln's console and
/// `Math.random` installed: everything a run needs that does not depend on
/// the run.
fn new_context() -> Result<(Runtime, Context), Failure> {
    let runtime =
        Runtime::new().map_err(|e| Failure::internal(format!("cannot start QuickJS: {e}")))?;
    runtime.set_max_stack_size(MAX_STACK_BYTES);
    let context = Context::full(&runtime)
        .map_err(|e| Failure::internal(format!("cannot create a context: {e}")))?;
    context.with(|ctx| {
        console::install(&ctx)
            .map_err(|e| Failure::internal(format!("cannot install console: {e}")))?;
        random::install(&ctx)
            .map_err(|e| Failure::internal(format!("cannot install Math.random: {e}")))?;
        fetch::install(&ctx)
            .map_err(|e| Failure::internal(format!("cannot install fetch: {e}")))?;
        timers::install(&ctx)
            .map_err(|e| Failure::internal(format!("cannot install timers: {e}")))?;
        web::install(&ctx)
            .map_err(|e| Failure::internal(format!("cannot install web APIs: {e}")))?;
        // After fetch: URLs use its TextEncoder and TextDecoder.
        url::install(&ctx).map_err(|e| Failure::internal(format!("cannot install URL: {e}")))
    })?;
    Ok((runtime, context))
}

fn run_script(
    ctx: &Ctx<'_>,
    code: &[u8],
    params: &str,
    env: &[(String, String)],
) -> Result<String, Failure> {
    install_process_env(ctx, env)
        .map_err(|e| Failure::internal(format!("cannot install process.env: {e}")))?;
    // `performance.timeOrigin` is taken when the context is made, which for
    // a snapshotted context was at build time: start it again with this run.
    // SAFETY: `ctx` is a live context.
    if unsafe { rquickjs::qjs::JS_AddPerformance(ctx.as_raw().as_ptr()) } != 0 {
        return Err(Failure::internal("cannot install performance"));
    }
    let main = code::load(ctx, code)?;
    let params = ctx
        .json_parse(params)
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))?;
    let Some(main) = main else {
        return Err(Failure::no_entry_point());
    };
    let value: Value = main
        .call((params,))
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))?;
    let value = settle(ctx, value)?;
    let json = ctx
        .json_stringify(value)
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))?;
    Ok(json
        .map(|s| s.to_string().unwrap_or_else(|_| "null".into()))
        .unwrap_or_else(|| "null".into()))
}

/// Awaits a promise: QuickJS's job queue and the script's timers run until
/// it settles.
fn settle<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> Result<Value<'js>, Failure> {
    match value.as_promise() {
        Some(promise) => timers::drive(ctx, promise, "main returned a promise that"),
        None => Ok(value),
    }
}

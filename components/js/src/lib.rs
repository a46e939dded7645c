//! Kiln's JavaScript runtime: QuickJS (through rquickjs) exporting
//! `kiln:language/script`. A script either defines `function main(params)` at
//! the top level or is an ES module with a default export (or a `main` export);
//! main's value, awaited if it is a promise, is returned as JSON.

mod code;
mod console;
mod failure;

use rquickjs::{CatchResultExt, Context, Ctx, Runtime, Value};

use crate::failure::{Failure, FailureKind};

wit_bindgen::generate!({
    world: "language-runtime",
    path: "../../runtime/wit",
});

use exports::kiln::language::script::{self, Guest};

/// The name scripts see in stack traces.
pub(crate) const SCRIPT_NAME: &str = "script.js";
/// QuickJS's recursion guard. On WASI it cannot see the stack pointer, so the
/// engine's wasm stack limit is what actually stops runaway recursion (a trap).
const MAX_STACK_BYTES: usize = 256 << 10;

struct JsRuntime;

impl Guest for JsRuntime {
    fn compile(source: String) -> Result<Vec<u8>, script::Failure> {
        with_context(|ctx| code::compile(&ctx, &source)).map_err(Into::into)
    }

    fn run(
        code: Vec<u8>,
        params: String,
        env: Vec<(String, String)>,
    ) -> Result<String, script::Failure> {
        // `code` outlives the context, as `Module::load` asks of its bytes.
        let result = with_context(|ctx| run_script(&ctx, &code, &params, &env));
        console::flush();
        result.map_err(Into::into)
    }
}

export!(JsRuntime);

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

fn with_context<T>(f: impl FnOnce(Ctx<'_>) -> Result<T, Failure>) -> Result<T, Failure> {
    let runtime =
        Runtime::new().map_err(|e| Failure::internal(format!("cannot start QuickJS: {e}")))?;
    runtime.set_max_stack_size(MAX_STACK_BYTES);
    let context = Context::full(&runtime)
        .map_err(|e| Failure::internal(format!("cannot create a context: {e}")))?;
    context.with(f)
}

fn run_script(
    ctx: &Ctx<'_>,
    code: &[u8],
    params: &str,
    env: &[(String, String)],
) -> Result<String, Failure> {
    console::install(ctx).map_err(|e| Failure::internal(format!("cannot install console: {e}")))?;
    install_process_env(ctx, env)
        .map_err(|e| Failure::internal(format!("cannot install process.env: {e}")))?;
    let main = code::load(ctx, code)?;
    let params = ctx
        .json_parse(params)
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))?;
    let value: Value = match main {
        Some(main) => main
            .call((params,))
            .catch(ctx)
            .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))?,
        None => Value::new_undefined(ctx.clone()),
    };
    let value = settle(ctx, value)?;
    let json = ctx
        .json_stringify(value)
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))?;
    Ok(json
        .map(|s| s.to_string().unwrap_or_else(|_| "null".into()))
        .unwrap_or_else(|| "null".into()))
}

/// Awaits a promise by running QuickJS's job queue until it settles.
fn settle<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> Result<Value<'js>, Failure> {
    let Some(promise) = value.as_promise() else {
        return Ok(value);
    };
    match promise.finish::<Value>() {
        Err(rquickjs::Error::WouldBlock) => Err(Failure::runtime(
            "Error: main returned a promise that never settles (nothing left to run)",
        )),
        other => other
            .catch(ctx)
            .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime)),
    }
}

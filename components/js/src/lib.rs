//! Kiln's JavaScript runtime: QuickJS (through rquickjs) exporting
//! `kiln:language/script`. A script either defines `function main(params)` at
//! the top level or is an ES module with a default export (or a `main` export);
//! main's value, awaited if it is a promise, is returned as JSON.

mod console;
mod failure;

use rquickjs::{CatchResultExt, Context, Ctx, Function, Module, Runtime, Value};

use crate::failure::{Failure, FailureKind, compile_only, detect_module};

wit_bindgen::generate!({
    world: "language-runtime",
    path: "../../runtime/wit",
});

use exports::kiln::language::script::{self, Guest};

/// The name scripts see in stack traces.
const SCRIPT_NAME: &str = "script.js";
/// QuickJS's recursion guard. On WASI it cannot see the stack pointer, so the
/// engine's wasm stack limit is what actually stops runaway recursion (a trap).
const MAX_STACK_BYTES: usize = 256 << 10;

struct JsRuntime;

impl Guest for JsRuntime {
    fn check(source: String) -> Result<(), script::Failure> {
        with_context(|ctx| compile_only(&ctx, &source, detect_module(&source))).map_err(Into::into)
    }

    fn run(
        source: String,
        params: String,
        env: Vec<(String, String)>,
    ) -> Result<String, script::Failure> {
        let result = with_context(|ctx| run_script(&ctx, &source, &params, &env));
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
    source: &str,
    params: &str,
    env: &[(String, String)],
) -> Result<String, Failure> {
    console::install(ctx).map_err(|e| Failure::internal(format!("cannot install console: {e}")))?;
    install_process_env(ctx, env)
        .map_err(|e| Failure::internal(format!("cannot install process.env: {e}")))?;
    let module = detect_module(source);
    // Parse first, so a syntax error is reported as one (with its position)
    // before any of the script runs.
    compile_only(ctx, source, module)?;
    let main = if module {
        load_module(ctx, source)?
    } else {
        load_script(ctx, source)?
    };
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

/// Runs a classic script and finds its `main`. The lookup is appended to the
/// source so it sees the script's own top-level scope, and it goes last so
/// line numbers in errors stay those of the user's file.
fn load_script<'js>(ctx: &Ctx<'js>, source: &str) -> Result<Option<Function<'js>>, Failure> {
    let mut options = rquickjs::context::EvalOptions::default();
    options.strict = false;
    options.filename = Some(SCRIPT_NAME.into());
    let program = format!("{source}\n;typeof main === 'function' ? main : undefined");
    ctx.eval_with_options::<Option<Function>, _>(program, options)
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Runtime))
}

/// Evaluates an ES module (awaiting top-level await) and finds its default
/// export, else its `main` export.
fn load_module<'js>(ctx: &Ctx<'js>, source: &str) -> Result<Option<Function<'js>>, Failure> {
    let runtime_error = |e| Failure::from_caught(ctx, e, FailureKind::Runtime);
    let declared = Module::declare(ctx.clone(), SCRIPT_NAME, source)
        .catch(ctx)
        .map_err(|e| Failure::from_caught(ctx, e, FailureKind::Syntax))?;
    let (module, evaluation) = declared.eval().catch(ctx).map_err(runtime_error)?;
    evaluation
        .finish::<()>()
        .catch(ctx)
        .map_err(runtime_error)?;
    let namespace = module.namespace().catch(ctx).map_err(runtime_error)?;
    for name in ["default", "main"] {
        if let Ok(Some(main)) = namespace.get::<_, Option<Function>>(name) {
            return Ok(Some(main));
        }
    }
    Ok(None)
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

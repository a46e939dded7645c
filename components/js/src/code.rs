//! The compiled form of a script: what `compile` returns and `run` takes. One
//! tag byte says how to load the rest, which is QuickJS bytecode.

use rquickjs::{CatchResultExt, Ctx, Function, Module, Value, WriteOptions, qjs};

use crate::SCRIPT_NAME;
use crate::failure::{Failure, FailureKind, compile_only, compile_with, detect_module, pending};

/// A classic script, compiled together with the lookup of its `main`.
const CLASSIC: u8 = b'c';
/// An ES module.
pub(crate) const MODULE: u8 = b'm';
/// A bundle of ES modules (see `bundle.rs`).
pub(crate) const BUNDLE: u8 = b'b';

/// Appended to a classic script so its value is the script's own top-level
/// `main`; it goes last so line numbers stay those of the user's file.
const FIND_MAIN: &str = "\n;typeof main === 'function' ? main : undefined";

/// Parses `source` (reporting a syntax error with its position) and returns
/// its bytecode.
pub(crate) fn compile(ctx: &Ctx<'_>, source: &str) -> Result<Vec<u8>, Failure> {
    let module = detect_module(source);
    compile_only(ctx, SCRIPT_NAME, source, module)?;
    let syntax = |e| Failure::from_caught(ctx, e, FailureKind::Syntax);
    let mut code = vec![if module { MODULE } else { CLASSIC }];
    if module {
        let declared = Module::declare(ctx.clone(), SCRIPT_NAME, source)
            .catch(ctx)
            .map_err(syntax)?;
        code.extend(
            declared
                .write(WriteOptions::default())
                .catch(ctx)
                .map_err(syntax)?,
        );
    } else {
        code.extend(compile_classic(ctx, &format!("{source}{FIND_MAIN}"))?);
    }
    Ok(code)
}

/// Runs the top level of compiled code and returns its `main`: a classic
/// script's top-level function, else a module's default export, else its
/// `main` export.
pub(crate) fn load<'js>(ctx: &Ctx<'js>, code: &[u8]) -> Result<Option<Function<'js>>, Failure> {
    match code.split_first() {
        Some((&CLASSIC, bytecode)) => run_classic(ctx, bytecode),
        Some((&MODULE, bytecode)) => run_module(ctx, bytecode),
        _ => Err(Failure::runtime(
            "Error: the code was not compiled by this runtime",
        )),
    }
}

fn compile_classic(ctx: &Ctx<'_>, program: &str) -> Result<Vec<u8>, Failure> {
    compile_with(ctx, SCRIPT_NAME, program, false, |function| {
        write_bytecode(ctx, function)
    })
}

/// The bytecode of a compiled script or module.
pub(crate) fn write_bytecode(ctx: &Ctx<'_>, compiled: qjs::JSValue) -> Result<Vec<u8>, Failure> {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context of `ctx` and `compiled` a live value
    // it owns; the written buffer is copied before QuickJS frees it.
    unsafe {
        let mut len = 0;
        let buffer =
            qjs::JS_WriteObject(raw, &mut len, compiled, qjs::JS_WRITE_OBJ_BYTECODE as i32);
        if buffer.is_null() {
            return Err(pending(ctx, FailureKind::Runtime));
        }
        let bytes = std::slice::from_raw_parts(buffer, len as usize).to_vec();
        qjs::js_free(raw, buffer.cast());
        Ok(bytes)
    }
}

fn run_classic<'js>(ctx: &Ctx<'js>, bytecode: &[u8]) -> Result<Option<Function<'js>>, Failure> {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context of `ctx`; QuickJS copies what it needs
    // from `bytecode` (no ROM flag); `JS_EvalFunction` takes ownership of the
    // function object and the value it returns is handed to rquickjs, which
    // frees it once.
    let value = unsafe {
        let function = qjs::JS_ReadObject(
            raw,
            bytecode.as_ptr(),
            bytecode.len() as _,
            qjs::JS_READ_OBJ_BYTECODE as i32,
        );
        if qjs::JS_IsException(function) {
            return Err(pending(ctx, FailureKind::Runtime));
        }
        let value = qjs::JS_EvalFunction(raw, function);
        if qjs::JS_IsException(value) {
            return Err(pending(ctx, FailureKind::Runtime));
        }
        Value::from_raw(ctx.clone(), value)
    };
    Ok(value.into_function())
}

fn run_module<'js>(ctx: &Ctx<'js>, bytecode: &[u8]) -> Result<Option<Function<'js>>, Failure> {
    let runtime_error = |e| Failure::from_caught(ctx, e, FailureKind::Runtime);
    // SAFETY: the bytes are what `compile` wrote in this same runtime (the
    // host keys its cache by the runtime's hash). They also outlive the
    // context, which `JS_READ_OBJ_ROM_DATA` would require (quickjs-ng copies
    // them anyway).
    let declared = unsafe { Module::load(ctx.clone(), bytecode) }
        .catch(ctx)
        .map_err(runtime_error)?;
    let (module, evaluation) = declared.eval().catch(ctx).map_err(runtime_error)?;
    // A top-level `await` may wait for jobs and timers.
    crate::timers::drive(ctx, &evaluation, "the module's top level")?;
    let namespace = module.namespace().catch(ctx).map_err(runtime_error)?;
    for name in ["default", "main"] {
        if let Ok(Some(main)) = namespace.get::<_, Option<Function>>(name) {
            return Ok(Some(main));
        }
    }
    Ok(None)
}

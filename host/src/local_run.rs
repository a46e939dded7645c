//! `kiln run`: load one file into a fresh sandbox, run it once, report.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kiln_runtime::{
    Call, EngineOptions, ErrorCode, Invocation, Limits, MemoryScriptHost, Outcome, OutputKind,
    OutputSink, Sandbox, ScriptHost, Shape, Status,
};
use serde::Serialize;

use crate::cli::{Lang, RunArgs, exit_status};
use crate::compiler::Compiler;

/// Runs the file and returns the exit status DESIGN.md's CLI section gives:
/// the guest's own, 124 on timeout, 125 on other failures, 2 on bad usage.
pub(crate) fn run(args: RunArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(outcome) => report(&args, &outcome),
        Err(Failure::Usage(message)) => {
            eprintln!("kiln: {message}");
            ExitCode::from(exit_status::USAGE)
        }
        Err(Failure::Host(message)) => {
            eprintln!("kiln: {message}");
            ExitCode::from(exit_status::FAILURE)
        }
    }
}

enum Failure {
    Usage(String),
    Host(String),
}

fn run_inner(args: &RunArgs) -> Result<Outcome, Failure> {
    let lang = match args.lang {
        Some(lang) => lang,
        None => lang_of(&args.file)?,
    };
    let params = match &args.params {
        Some(raw) => {
            let value: serde_json::Value = serde_json::from_str(raw)
                .map_err(|e| Failure::Usage(format!("--params is not valid JSON: {e}")))?;
            if !value.is_object() {
                return Err(Failure::Usage("--params must be a JSON object".into()));
            }
            Some(value.to_string())
        }
        None => None,
    };
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;

    let memory_bytes = args.memory_mb.saturating_mul(1 << 20);
    let options = EngineOptions {
        cache_dir: args
            .cache_dir
            .clone()
            .or_else(crate::config::default_cache_dir),
        max_instances: 4,
        max_memory_bytes: memory_bytes.max(EngineOptions::default().max_memory_bytes),
        artifact_cache_entries: 1,
        // One run: nothing to make ahead for.
        prewarm_above: None,
        ..EngineOptions::default()
    };
    let sandbox = Arc::new(Sandbox::new(options).map_err(|e| Failure::Host(e.to_string()))?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Host(format!("cannot start the async runtime: {e}")))?;
    let (call, component) = match lang {
        Lang::Wasm => (Call::Main, std::borrow::Cow::Borrowed(bytes.as_slice())),
        Lang::Javascript | Lang::Python => {
            let source = std::str::from_utf8(&bytes).map_err(|_| {
                Failure::Usage(format!("{} is not UTF-8 text", args.file.display()))
            })?;
            let params = params.clone().unwrap_or_else(|| "{}".into());
            let runtime = match lang {
                Lang::Python => kiln_components::PY_RUNTIME,
                _ => kiln_components::JS_RUNTIME,
            };
            let runtime = runtime
                .decompress()
                .map_err(|e| Failure::Host(format!("the embedded runtime is damaged: {e}")))?;
            let call = Call::Script {
                source: source.into(),
                params,
            };
            (call, std::borrow::Cow::Owned(runtime))
        }
    };
    // Compiled in a child process under the server's default bounds, as
    // `kiln serve` does (in this process when there is no cache directory
    // to meet the child in).
    let compiler = Compiler::new(
        crate::compiler::this_program(),
        crate::config::compile_bounds(&crate::config::Config::default()),
    );
    let artifact = runtime
        .block_on(compiler.load(&sandbox, component.into_owned().into(), None))
        .map_err(|e| Failure::Host(e.to_string()))?;
    // A kiln:script component gets the parameters as run's argument, and a
    // key-value store and config that live for this run only.
    let (call, script_host) = match artifact.shape() {
        Shape::Script => {
            let host: Arc<dyn ScriptHost> =
                Arc::new(MemoryScriptHost::new(config_pairs(&args.config)?));
            let params = params.clone().unwrap_or_else(|| "{}".into());
            (Call::Json { params }, Some(host))
        }
        Shape::Http => {
            return Err(Failure::Usage(format!(
                "{} is an HTTP function (wasi:http/proxy): upload it to `kiln serve` and call it at /fn/",
                args.file.display()
            )));
        }
        Shape::Command | Shape::LanguageRuntime => (call, None),
    };

    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    let id = uuid::Uuid::now_v7().to_string();
    let (env, stdin) = crate::contract::environment(
        Vec::new(),
        &id,
        &name,
        params.as_deref(),
        args.input.as_deref(),
        &call,
    );
    let invocation = Invocation {
        call,
        args: vec![name],
        env,
        stdin,
        limits: Limits {
            fuel: args.fuel,
            memory_bytes,
            timeout: Duration::from_millis(args.timeout_ms),
            stdout_bytes: args.output_bytes,
            stderr_bytes: args.output_bytes,
        },
        cancel: None,
        on_output: (!args.json).then(stream_to_terminal),
        script_host,
    };
    runtime
        .block_on(sandbox.run(&artifact, invocation))
        .map_err(|e| Failure::Host(e.to_string()))
}

/// `--config KEY=VALUE` pairs.
fn config_pairs(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>, Failure> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Failure::Usage(format!("--config {pair:?} is not KEY=VALUE")))
        })
        .collect()
}

fn lang_of(file: &std::path::Path) -> Result<Lang, Failure> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("wasm" | "wat") => Ok(Lang::Wasm),
        Some("js" | "mjs") => Ok(Lang::Javascript),
        Some("py") => Ok(Lang::Python),
        other => Err(Failure::Usage(format!(
            "cannot tell the language of {} (extension {:?}); pass --lang",
            file.display(),
            other.unwrap_or("")
        ))),
    }
}

/// Writes guest output straight through as it arrives: the CLI's own stdout
/// and stderr are the subscribers here.
fn stream_to_terminal() -> OutputSink {
    Arc::new(|kind, bytes| {
        let _ = match kind {
            OutputKind::Stdout => std::io::stdout().lock().write_all(bytes),
            OutputKind::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    })
}

/// The execution fields of API.md, as `kiln run --json` prints them.
#[derive(Serialize)]
struct ExecutionReport<'a> {
    status: Status,
    exit_code: Option<i32>,
    result: Option<serde_json::Value>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    error: Option<&'a kiln_runtime::GuestError>,
    fuel_consumed: u64,
    peak_memory_bytes: u64,
    duration_ms: u64,
}

fn report(args: &RunArgs, outcome: &Outcome) -> ExitCode {
    if args.json {
        let report = ExecutionReport {
            status: outcome.status,
            exit_code: outcome.exit_code,
            result: outcome
                .result
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok()),
            stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            error: outcome.error.as_ref(),
            fuel_consumed: outcome.fuel_consumed,
            peak_memory_bytes: outcome.peak_memory_bytes,
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        };
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("kiln: cannot encode the report: {e}"),
        }
    } else {
        let _ = std::io::stdout().flush();
        if let Some(error) = &outcome.error {
            let position = match (error.line, error.column) {
                (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
                (Some(line), None) => format!(" (line {line})"),
                _ => String::new(),
            };
            eprintln!("kiln: {}: {}{position}", error.code.as_str(), error.message);
            if let Some(stack) = &error.stack {
                eprintln!("{}", stack.trim_end());
            }
        }
        if let Some(result) = outcome.result.as_deref().filter(|r| *r != "null") {
            println!("{result}");
        }
        for (flag, stream) in [
            (outcome.stdout_truncated, "stdout"),
            (outcome.stderr_truncated, "stderr"),
        ] {
            if flag {
                eprintln!(
                    "kiln: {stream} was truncated at {} bytes",
                    args.output_bytes
                );
            }
        }
    }
    ExitCode::from(exit_code_for(outcome))
}

fn exit_code_for(outcome: &Outcome) -> u8 {
    match outcome.status {
        Status::Completed => 0,
        Status::Timeout => exit_status::TIMEOUT,
        Status::Failed if outcome.error_code() == Some(ErrorCode::ExitCode) => outcome
            .exit_code
            .and_then(|c| u8::try_from(c).ok())
            .filter(|c| *c != 0)
            .unwrap_or(exit_status::FAILURE),
        Status::Failed | Status::Cancelled => exit_status::FAILURE,
    }
}

//! `kiln run`: load one file into a fresh sandbox, run it once, report.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kiln_runtime::{
    EngineOptions, ErrorCode, MemoryScriptHost, OutputKind, OutputSink, Sandbox, ScriptHost, Shape,
};

use crate::api::scripts::bundle;
use crate::compiler::Compiler;
use crate::config::{Config, LimitsConfig};
use crate::contract;
use crate::executions::run::{self, Hooks, Prepared};
use crate::executions::{RunRequest, SubmitError, Target, new_record};
use crate::exit_status;
use crate::script_files::{self, Lang};
use crate::store::{ExecutionCode, ExecutionRecord, ExecutionStatus, Trigger};

/// Arguments of `kiln run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The script or component to run: .js (JavaScript), .py (Python), .wasm or .wat (a
    /// wasi:cli/command component or a wasip1 core module); or a bundle of
    /// JavaScript or Python files, as a directory or a zip / tar / tar.gz;
    /// `-` reads it from stdin (with --lang, unless it is a component).
    pub file: PathBuf,
    /// The language, when the file's extension (or a bundle's entry) does
    /// not say it.
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
    /// A bundle's file that runs [default: main.js, index.js, main.py or
    /// __main__.py, whichever it has].
    #[arg(long)]
    pub entry: Option<String>,
    /// Parameters as a JSON object: a script's main gets them as its argument;
    /// a component sees them in KILN_PARAMETERS and, unless --input is given,
    /// on stdin.
    #[arg(long)]
    pub params: Option<String>,
    /// Text for the guest's stdin.
    #[arg(long)]
    pub input: Option<String>,
    /// Fuel budget (about one unit per WebAssembly instruction); unmetered if absent.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory cap in MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=16384))]
    pub memory_mb: u64,
    /// Wall-clock deadline in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Bytes of stdout and of stderr kept (the rest is dropped and flagged).
    #[arg(long, default_value_t = 1 << 20)]
    pub output_bytes: usize,
    /// Print one JSON object with the execution's fields instead of streaming
    /// the guest's output.
    #[arg(long)]
    pub json: bool,
    /// Where compiled artifacts are cached [default: $XDG_CACHE_HOME/kiln or
    /// ~/.cache/kiln].
    #[arg(long, env = "KILN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A config value for a kiln:script component, KEY=VALUE (repeatable).
    /// Its key-value store lives in memory for this run.
    #[arg(long, value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// A host the run may send HTTP requests to, as a script's
    /// `allowed_hosts` (`api.example.com`, `*.example.org:8443`, `host:*`;
    /// repeatable). None by default: every request is refused.
    #[arg(long, value_name = "PATTERN")]
    pub allow_host: Vec<String>,
    /// A host, as written in URLs, that may resolve to a loopback or
    /// private address (repeatable); others are refused there after DNS.
    #[arg(long, value_name = "HOST")]
    pub allow_private_host: Vec<String>,
}

/// Runs the file and returns the exit status DESIGN.md's CLI section gives:
/// the guest's own, 124 on timeout, 125 on other failures, 2 on bad usage.
pub(crate) fn run(args: RunArgs) -> ExitCode {
    let (code, message, details, status) = match run_inner(&args) {
        Ok(record) => return report(&args, &record),
        Err(Failure::Usage(message)) => {
            ("VALIDATION_ERROR", message, Vec::new(), exit_status::USAGE)
        }
        Err(Failure::Host(message)) => {
            ("INTERNAL_ERROR", message, Vec::new(), exit_status::FAILURE)
        }
        Err(Failure::Load {
            code,
            message,
            details,
        }) => (code, message, details, exit_status::FAILURE),
    };
    if args.json {
        // What a program reading stdout gets instead of an execution: the
        // API's error shape.
        let error = serde_json::json!({
            "error": { "code": code, "message": message, "details": details }
        });
        println!("{error:#}");
    }
    eprintln!("kiln: {message}");
    ExitCode::from(status)
}

enum Failure {
    Usage(String),
    Host(String),
    /// The file does not load, as the API would say it (`COMPILE_ERROR`
    /// for the guest's faults).
    Load {
        code: &'static str,
        message: String,
        details: Vec<crate::api::Detail>,
    },
}

/// Runs the file as the server runs an ad-hoc execution: a record under
/// the flags' limits, the script contract's invocation, the final record.
fn run_inner(args: &RunArgs) -> Result<ExecutionRecord, Failure> {
    let (lang, bytes) = read_script(args)?;
    let parameters = match &args.params {
        Some(raw) => Some(
            serde_json::from_str::<serde_json::Value>(raw)
                .map_err(|e| Failure::Usage(format!("--params is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    let mut record = new_record(
        &flag_limits(args),
        RunRequest {
            parameters,
            input: args.input.clone(),
            ..RunRequest::default()
        },
        Target {
            org: crate::store::orgs::DEFAULT_ORG.into(),
            language: lang.language(),
            script: None,
            defaults: Default::default(),
            code: None,
        },
        Trigger::Cli,
        None,
    )
    .map_err(|e| match e {
        SubmitError::Invalid { field, message } => {
            let flag = match field {
                "parameters" => "params".to_string(),
                field => field.replace('_', "-"),
            };
            Failure::Usage(format!("--{flag} {message}"))
        }
        other => Failure::Host(other.to_string()),
    })?;
    let parameters = record.parameters.to_string();

    let options = EngineOptions {
        cache_dir: args
            .cache_dir
            .clone()
            .or_else(crate::config::default_cache_dir),
        max_instances: 4,
        max_memory_bytes: (record.memory_mb << 20).max(EngineOptions::default().max_memory_bytes),
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
    let (script_call, component) = match lang {
        Lang::Wasm => (None, bytes),
        Lang::Javascript | Lang::Python => {
            let source = kiln_runtime::Source::decode(bytes)
                .map_err(|e| Failure::Usage(format!("{}: {e}", args.file.display())))?;
            let runtime = match lang {
                Lang::Python => kiln_components::PY_RUNTIME,
                _ => kiln_components::JS_RUNTIME,
            };
            let runtime = runtime
                .decompress()
                .map_err(|e| Failure::Host(format!("the embedded runtime is damaged: {e}")))?;
            (Some(contract::script_call(source, &parameters)), runtime)
        }
    };
    // Compiled in a child process under the server's default bounds, as
    // `kiln serve` does (in this process when there is no cache directory
    // to meet the child in).
    let compiler = Compiler::new(
        crate::compiler::this_program(),
        crate::compiler::CompileBounds::for_tenants(&Config::default().limits),
    );
    let artifact = runtime
        .block_on(compiler.load(&sandbox, component.into(), None))
        .map_err(|e| {
            let error = crate::api::ApiError::from(e);
            Failure::Load {
                code: error.code(),
                message: error.to_string(),
                details: error.details(),
            }
        })?;
    let shape = artifact.shape();
    if shape == Shape::Http {
        return Err(Failure::Usage(format!(
            "{} is an HTTP function (wasi:http/proxy): upload it to `kiln serve` and call it at /fn/",
            args.file.display()
        )));
    }
    // A kiln:script component gets a key-value store and config that live
    // for this run only.
    let script_host: Option<Arc<dyn ScriptHost>> = match shape {
        Shape::Script => Some(Arc::new(MemoryScriptHost::new(config_pairs(&args.config)?))),
        _ => None,
    };
    let call = script_call.unwrap_or_else(|| contract::component_call(shape, &parameters));
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    let prepared = Prepared {
        artifact,
        call,
        name,
    };
    let allowed = crate::egress::AllowedHosts::parse(&args.allow_host)
        .map_err(|e| Failure::Usage(format!("--allow-host: {e}")))?;
    let egress_config = crate::config::EgressConfig {
        allow_private_hosts: args.allow_private_host.clone(),
        ..crate::config::EgressConfig::default()
    };
    let gateway = runtime
        .block_on(async {
            crate::egress::Gateway::new(&egress_config, crate::metrics::EgressMetrics::default())
        })
        .map_err(Failure::Host)?;
    let hooks = Hooks {
        cancel: None,
        on_output: (!args.json).then(stream_to_terminal),
        script_host,
        egress: Some(gateway.for_run(allowed)),
        ..Hooks::default()
    };
    record.status = ExecutionStatus::Running;
    record.started_at = Some(crate::now());
    runtime.block_on(run::run(
        &sandbox,
        &mut record,
        &parameters,
        prepared,
        crate::contract::OutputCaps::of(&flag_limits(args)),
        hooks,
        || false,
    ));
    Ok(record)
}

/// The limits policy of a run whose limits are the flags: each is both
/// the default and the cap.
fn flag_limits(args: &RunArgs) -> LimitsConfig {
    LimitsConfig {
        default_timeout_ms: args.timeout_ms,
        max_timeout_ms: args.timeout_ms,
        default_memory_mb: args.memory_mb,
        max_memory_mb: args.memory_mb,
        default_fuel: args.fuel,
        max_fuel: args.fuel,
        output_bytes: args.output_bytes,
        ..Config::default().limits
    }
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

/// A script on stdin (`kiln run -`) is at most this big.
const MAX_STDIN_BYTES: u64 = 64 << 20;

/// The script on stdin: a component by its magic number, else source in
/// the language `--lang` names, or an archive of a bundle.
fn read_stdin(args: &RunArgs) -> Result<(Lang, Vec<u8>), Failure> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Usage(format!("cannot read the script from stdin: {e}")))?;
    if bytes.len() as u64 > MAX_STDIN_BYTES {
        return Err(Failure::Usage(format!(
            "a script on stdin is at most {MAX_STDIN_BYTES} bytes"
        )));
    }
    let lang = match args.lang {
        Some(lang) => lang,
        None if bytes.starts_with(b"\0asm") => Lang::Wasm,
        None => {
            return Err(Failure::Usage(
                "the script comes on stdin: say its language with --lang js, py or wasm".into(),
            ));
        }
    };
    one_file(args, lang, bytes, "stdin")
}

/// The language and content to run: a file as it is, or a directory's or
/// an archive's files as a bundle (bounded as an upload is).
fn read_script(args: &RunArgs) -> Result<(Lang, Vec<u8>), Failure> {
    let path = &args.file;
    let unreadable =
        |e: std::io::Error| Failure::Usage(format!("cannot read {}: {e}", path.display()));
    let as_bundle = |e: crate::api::ApiError| Failure::Usage(format!("{}: {e}", path.display()));
    if path.as_os_str() == "-" {
        return read_stdin(args);
    }
    if path.is_dir() {
        let mut files = std::collections::BTreeMap::new();
        script_files::read_dir_into(path, "", &mut files, &mut 0, 0).map_err(Failure::Usage)?;
        let lang = match (args.lang, &args.entry) {
            (Some(lang), _) => lang,
            (None, Some(entry)) => {
                script_files::lang_of(std::path::Path::new(entry)).map_err(Failure::Usage)?
            }
            (None, None) => script_files::bundle_lang(&files).ok_or_else(|| {
                Failure::Usage(format!(
                    "{} has none of main.js, index.js, main.py and __main__.py: pass --entry",
                    path.display()
                ))
            })?,
        };
        let bundle =
            bundle::from_map(lang.language(), args.entry.clone(), files).map_err(as_bundle)?;
        return Ok((lang, kiln_runtime::Source::Bundle(bundle).encode()));
    }
    let name = path.to_string_lossy();
    let archive = [".zip", ".tar", ".tgz", ".tar.gz"]
        .iter()
        .any(|extension| name.ends_with(extension));
    let lang = match args.lang {
        Some(lang) => lang,
        None if archive => match &args.entry {
            Some(entry) => {
                script_files::lang_of(std::path::Path::new(entry)).map_err(Failure::Usage)?
            }
            None => {
                return Err(Failure::Usage(format!(
                    "{} is an archive: pass --lang (or --entry)",
                    path.display()
                )));
            }
        },
        None => script_files::lang_of(path).map_err(Failure::Usage)?,
    };
    let bytes = std::fs::read(path).map_err(unreadable)?;
    one_file(args, lang, bytes, &path.display().to_string())
}

/// One file's bytes, from a path or stdin: an archive of a source
/// language unpacks as a bundle; anything else runs as it is.
fn one_file(
    args: &RunArgs,
    lang: Lang,
    bytes: Vec<u8>,
    origin: &str,
) -> Result<(Lang, Vec<u8>), Failure> {
    if lang != Lang::Wasm && bundle::is_archive(&bytes) {
        let bundle = bundle::from_archive(lang.language(), args.entry.clone(), &bytes)
            .map_err(|e| Failure::Usage(format!("{origin}: {e}")))?;
        return Ok((lang, kiln_runtime::Source::Bundle(bundle).encode()));
    }
    if args.entry.is_some() {
        return Err(Failure::Usage(
            "--entry is for a bundle (a directory or an archive)".into(),
        ));
    }
    Ok((lang, bytes))
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

fn report(args: &RunArgs, record: &ExecutionRecord) -> ExitCode {
    if args.json {
        // The execution as the API shows it (DESIGN.md, "kiln run").
        let view = crate::api::ExecutionView::from(record.clone());
        match serde_json::to_string_pretty(&view) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("kiln: cannot encode the report: {e}"),
        }
    } else {
        let _ = std::io::stdout().flush();
        if let Some(error) = &record.error {
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
        if let Some(result) = record.result.as_ref().filter(|r| !r.is_null()) {
            println!("{result}");
        }
        for (flag, stream) in [
            (record.stdout_truncated, "stdout"),
            (record.stderr_truncated, "stderr"),
        ] {
            if flag {
                eprintln!(
                    "kiln: {stream} was truncated at {} bytes",
                    args.output_bytes
                );
            }
        }
    }
    ExitCode::from(exit_code_for(record))
}

fn exit_code_for(record: &ExecutionRecord) -> u8 {
    let code = record.error.as_ref().map(|e| e.code);
    match record.status {
        ExecutionStatus::Completed => 0,
        ExecutionStatus::Timeout => exit_status::TIMEOUT,
        ExecutionStatus::Failed if code == Some(ExecutionCode::Run(ErrorCode::ExitCode)) => record
            .exit_code
            .and_then(|c| u8::try_from(c).ok())
            .filter(|c| *c != 0)
            .unwrap_or(exit_status::FAILURE),
        _ => exit_status::FAILURE,
    }
}

//! The command line: `kiln run FILE …`. Parsing and exit statuses live here;
//! the work is in the verb modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// What `kiln --version` prints: the version, the commit, the wasmtime it
/// embeds and the target it was built for.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KILN_GIT_COMMIT"),
    ", wasmtime ",
    env!("KILN_WASMTIME_VERSION"),
    ", ",
    env!("KILN_TARGET"),
    ")"
);

/// Kiln: run untrusted scripts and WebAssembly components in a sandbox.
#[derive(Debug, Parser)]
#[command(name = "kiln", version = VERSION, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one script or component locally, with no server.
    Run(RunArgs),
    /// Create a Rust crate for a kiln:script component (uses the guest SDK).
    New(NewArgs),
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Compile one component into the artifact cache, under resource
    /// limits: what `kiln serve` and `kiln run` start for each compile.
    #[command(hide = true, name = "compile-artifact")]
    CompileArtifact(crate::compiler::child::CompileArgs),
}

/// Arguments of `kiln serve`; everything else is in the configuration.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory [default: ./kiln-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A kiln.toml configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Any configuration key, over the file and the environment (repeatable),
    /// e.g. `--set workers.count=4`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

/// Arguments of `kiln new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The crate's name (also the folder's, unless --path is given).
    pub name: String,
    /// Where to create it (an empty or missing folder).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Depend on the guest SDK at this path instead of writing the copy
    /// built into kiln beside the crate.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The script or component to run: .js (JavaScript), .py (Python), .wasm or .wat (a
    /// wasi:cli/command component or a wasip1 core module).
    pub file: PathBuf,
    /// The language, when the file's extension does not say it.
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
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
}

/// Languages `kiln run` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// JavaScript (QuickJS): `function main(params)` or `export default`.
    #[value(alias = "js")]
    Javascript,
    /// Python (CPython 3.14): `def main(**params)`.
    #[value(alias = "py")]
    Python,
    /// A WebAssembly component or wasip1 core module, binary or text.
    Wasm,
}

/// Exit statuses of `kiln run` besides the guest's own.
pub mod exit_status {
    /// Bad usage (also what clap uses).
    pub const USAGE: u8 = 2;
    /// The guest hit its deadline.
    pub const TIMEOUT: u8 = 124;
    /// Any other failure: trap, memory cap, fuel, unloadable file.
    pub const FAILURE: u8 = 125;
}

/// Parses the command line, runs the verb and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A compile child logs nothing: its stderr is its answer to the server.
    if !matches!(cli.command, Command::CompileArtifact(_)) {
        init_logging();
    }
    match cli.command {
        Command::Run(args) => crate::local_run::run(args),
        Command::New(args) => crate::new::new(&args),
        Command::Serve(args) => serve(args),
        Command::CompileArtifact(args) => crate::compiler::child::run(&args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = crate::config::Overrides {
        listen: args.listen,
        data_dir: args.data,
        set: args.set,
    };
    let config = match crate::config::Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kiln: bad configuration: {e}");
            return ExitCode::from(exit_status::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::serve::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `KILN_LOG` (e.g. `KILN_LOG=kiln_runtime=debug`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

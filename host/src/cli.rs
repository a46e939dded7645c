//! The command line: `kiln run FILE …`, `kiln serve`, and the client verbs. Parsing and exit statuses live here;
//! the work is in the verb modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit_status;
use crate::local_run::RunArgs;
use crate::new::NewArgs;

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
    /// Log in to a server; the credential is kept in a profile.
    Login(crate::client::LoginArgs),
    /// End the session and forget the profile's credential.
    Logout(crate::client::Common),
    /// Show who the profile is logged in as, where.
    Whoami(crate::client::Common),
    /// Change your password (your other login sessions end).
    Passwd(crate::client::PasswdArgs),
    /// Create a script, or upload its content as a new version.
    Deploy(crate::client::DeployArgs),
    /// Run a deployed script, streaming its output; exits as `kiln run` does.
    Exec(crate::client::ExecArgs),
    /// Show an execution's output (`--follow` to stream it).
    Logs(crate::client::LogsArgs),
    /// Cancel a queued or running execution.
    Cancel(crate::client::CancelArgs),
    /// List scripts, executions, schedules, webhooks or API keys.
    Ls(crate::client::LsArgs),
    /// Delete scripts, executions, schedules or webhooks, or revoke keys.
    Rm(crate::client::RmArgs),
    /// Create API keys.
    Keys(crate::client::KeysArgs),
    /// The server's version, workers, queue and store.
    Status(crate::client::Common),
    /// Ask a server whether it is ready (`/readyz`): exit 0 if so, else 1.
    Health(crate::health::HealthArgs),
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

/// Parses the command line, runs the verb and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A compile child logs nothing: its stderr is its answer to the server.
    // `serve` starts logging once its configuration says how.
    if !matches!(cli.command, Command::CompileArtifact(_) | Command::Serve(_)) {
        init_logging(crate::config::LogFormat::Text);
    }
    match cli.command {
        Command::Run(args) => crate::local_run::run(args),
        Command::New(args) => crate::new::new(&args),
        Command::Serve(args) => serve(args),
        Command::Health(args) => crate::health::health(&args),
        Command::Login(args) => crate::client::run(crate::client::login::login(args)),
        Command::Logout(common) => crate::client::run(crate::client::login::logout(common)),
        Command::Whoami(common) => crate::client::run(crate::client::login::whoami(common)),
        Command::Passwd(args) => crate::client::run(crate::client::login::passwd(args)),
        Command::Deploy(args) => crate::client::run(crate::client::deploy::deploy(args)),
        Command::Exec(args) => crate::client::run(crate::client::exec::exec(args)),
        Command::Logs(args) => crate::client::run(crate::client::exec::logs(args)),
        Command::Cancel(args) => crate::client::run(crate::client::exec::cancel(args)),
        Command::Ls(args) => crate::client::run(crate::client::listing::ls(args)),
        Command::Rm(args) => crate::client::run(crate::client::listing::rm(args)),
        Command::Keys(args) => crate::client::run(crate::client::listing::keys(args)),
        Command::Status(common) => crate::client::run(crate::client::listing::status(common)),
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
    init_logging(config.log.format);
    let runtime = match server_runtime(&config.server) {
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

/// The runtime `kiln serve` runs on: `server.threads` threads, or one per
/// core (said outright, so tokio's own `TOKIO_WORKER_THREADS` is not read).
fn server_runtime(
    server: &crate::config::ServerConfig,
) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match server.threads {
        0 => crate::config::cores(),
        threads => threads,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

/// Logs go to stderr, filtered by `KILN_LOG` (e.g. `KILN_LOG=kiln_runtime=debug`).
fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        // One object per line, the span's fields (request id, route)
        // flattened into each, for log shippers.
        crate::config::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        crate::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_runtime_has_the_threads_asked_for_else_one_per_core() {
        let mut server = crate::config::Config::default().server;
        server.threads = 3;
        assert_eq!(server_runtime(&server).unwrap().metrics().num_workers(), 3);
        server.threads = 0;
        assert_eq!(
            server_runtime(&server).unwrap().metrics().num_workers(),
            crate::config::cores()
        );
    }
}

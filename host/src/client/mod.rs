//! The client verbs (`kiln login`, `deploy`, `exec`, `logs`, `ls`, …): the
//! same binary working against a server over its HTTP API, with the
//! credential `kiln login` kept in a profile ([`profile`]).
//!
//! Each verb prints for people by default (aligned tables, colour only on
//! a terminal without `NO_COLOR`) and the server's own JSON with `--json`.
//! A failure names the server's error code and request id.

mod api;
pub(crate) mod deploy;
pub(crate) mod exec;
mod interactive;
pub(crate) mod listing;
pub(crate) mod login;
mod output;
pub mod profile;

use std::process::ExitCode;

pub use deploy::DeployArgs;
pub use exec::{CancelArgs, ExecArgs, LogsArgs};
pub use listing::{KeysArgs, LsArgs, RmArgs};
pub use login::{LoginArgs, PasswdArgs};

/// Options every client verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The login profile to use.
    #[arg(long, env = "KILN_PROFILE", default_value = profile::DEFAULT_PROFILE, global = true)]
    pub profile: String,
    /// Print the server's JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// The organization (id or name) to act in, when the user belongs to
    /// several (sent as `X-Kiln-Organization`); else the user's first, or
    /// an API key's own.
    #[arg(long = "org", env = "KILN_ORG", global = true)]
    pub organization: Option<String>,
}

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its error envelope.
    #[error("{code}: {message}{details} (HTTP {status}, request {request_id})")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// `field: issue` lines, already formatted.
        details: String,
        request_id: String,
    },
    #[error("cannot reach {url}: {reason}; is `kiln serve` running there?")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Protocol(String),
    #[error("not logged in (profile {0:?}): run `kiln login URL` first")]
    NotLoggedIn(String),
    #[error(
        "the login session of profile {profile:?} has ended ({reason}): run `kiln login` again"
    )]
    SessionEnded { profile: String, reason: String },
    #[error("{0}")]
    Profile(String),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The server's error code, for the callers that act on one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Runs `verb` on a current-thread runtime and turns its error into the
/// message and exit status every client verb gives: 2 for bad usage, 1 for
/// anything else.
pub(crate) fn run<F>(verb: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, ClientError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(verb) {
        Ok(status) => status,
        Err(e) => {
            output::error(&e.to_string());
            match e {
                ClientError::Usage(_) => ExitCode::from(crate::exit_status::USAGE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

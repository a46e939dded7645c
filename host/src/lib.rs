//! Kiln, the host: the command line, the HTTP front door, the store and the
//! job queue around the `kiln-runtime` sandbox.

mod api;
mod auth;
pub mod cli;
mod compiler;
mod config;
mod http_server;
mod jobs;
mod local_run;
mod memory;
mod metrics;
mod new;
mod ratelimit;
mod runtimes;
mod schedules;
mod serve;
mod store;
mod webhooks;

/// The current time as RFC 3339 UTC with milliseconds, as the API writes it.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

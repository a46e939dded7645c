//! Kiln, the host: the command line, the HTTP front door, the store and the
//! job queue around the `kiln-runtime` sandbox.

mod api;
mod auth;
#[doc(hidden)]
pub mod bench;
pub mod cli;
mod client;
mod client_ip;
mod compiler;
mod config;
mod contract;
mod egress;
mod executions;
mod health;
mod http_server;
mod jobs;
#[cfg(test)]
mod layers;
mod lifecycle;
mod local_run;
mod memory;
mod metrics;
mod new;
mod quotas;
mod ratelimit;
mod retention;
mod runtimes;
mod schedules;
mod script_files;
mod serve;
mod store;
mod vault;
mod webhooks;

/// Exit statuses of `kiln run` besides the guest's own.
pub(crate) mod exit_status {
    /// Bad usage (also what clap uses).
    pub const USAGE: u8 = 2;
    /// The guest hit its deadline.
    pub const TIMEOUT: u8 = 124;
    /// Any other failure: trap, memory cap, fuel, unloadable file.
    pub const FAILURE: u8 = 125;
}

/// The current time as RFC 3339 UTC with milliseconds, as the API writes it.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A Unix time in ms as the API writes times (RFC 3339 UTC with
/// milliseconds), so stored times compare as strings.
pub(crate) fn time_of_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// A duration in whole milliseconds, as records keep them.
pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

//! End-to-end tests: a real `kiln serve` on 127.0.0.1 with a temporary data
//! directory, driven over HTTP, and `kiln run` as a user runs it
//! (`cli_run`). One binary, so its tests share the machine's cores rather
//! than wait for one another.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness fails loudly"
)]

mod access;
mod attacks;
mod auth;
mod bundles;
mod cli_run;
mod client;
mod console;
mod deploy;
mod egress;
mod executions;
mod functions;
mod generated_client;
mod harness;
mod lifecycle;
mod migration;
mod observability;
mod orgs;
mod retention;
mod schedules;
mod schemathesis;
mod scripts;
mod sdk;
mod secrets;
mod sockets;
mod webhooks;

/// Every server of this binary keeps its records in sled.
pub(crate) const STORE: harness::Store = harness::Store::Sled;

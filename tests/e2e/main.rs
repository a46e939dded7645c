//! End-to-end tests: a real `kiln serve` on 127.0.0.1 with a temporary data
//! directory, driven over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness fails loudly"
)]

mod access;
mod attacks;
mod auth;
mod executions;
mod functions;
mod harness;
mod lifecycle;
mod observability;
mod schedules;
mod scripts;
mod sdk;
mod webhooks;

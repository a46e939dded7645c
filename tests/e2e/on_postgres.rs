//! The end-to-end tests of executions, schedules, webhooks and
//! authentication again, every server keeping its records in PostgreSQL (a
//! database per data directory on a throwaway cluster of this test process,
//! `kiln-testpg`, which stops when the process ends); the store's
//! outage under a running node (`store_outage.rs`); three nodes on one
//! database (`multi_node.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness fails loudly"
)]

mod auth;
mod executions;
#[allow(
    dead_code,
    reason = "the whole suite's harness; this binary uses part of it"
)]
mod harness;
mod multi_node;
mod schedules;
mod store_outage;
mod webhooks;

pub(crate) const STORE: harness::Store = harness::Store::Postgres;

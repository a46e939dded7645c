//! What keeps executions moving when several nodes share a store
//! (PostgreSQL): a node claims an execution by a write only over its queued
//! record, stamping its id on it, and holds it under a lease the store
//! renews while the node lives (`store/postgres/executions.rs`). Every node
//! runs [`keep`], which ends the runs of nodes whose lease ran out (failed,
//! INTERRUPTED) and, when its own queue is empty, takes queued executions
//! that waited past [`STALE_QUEUED_MS`] (those of a node that went away, or
//! of one too busy to start them) into its queue: whichever node claims one
//! first runs it. It also carries what crosses nodes without a message of
//! its own ([`follow`]): a cancel asked for on another node, and the end of
//! a run elsewhere that a request here waits for or streams.

use std::sync::Arc;
use std::time::Duration;

use super::Jobs;
use crate::contract;
use crate::store::{ExecutionCode, ExecutionRecord, ExecutionStatus, Store, StoreError};

/// How often a node looks for expired leases, stale queued work, and
/// what other nodes did to the executions it runs or waits for.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long a queued execution waits on the node that took it before
/// another node with nothing queued may take it too.
pub const STALE_QUEUED_MS: u64 = 2_000;

/// How often a node reads every organization's running bound: one made
/// or changed through another node holds here within it, whether or not
/// requests of that organization reach this node.
const CAPS_EVERY: Duration = Duration::from_secs(5);

/// Expired runs ended per look.
const REAP_BATCH: usize = 100;

/// Runs until the process ends, on a node sharing its store: renews the
/// leases of its runs each second, then does the rest. After a time without
/// the database it renews for one whole lease before it ends other nodes'
/// runs: theirs ran out meanwhile too, and they must get to renew first.
pub async fn keep(store: Arc<dyn Store>, jobs: Arc<Jobs>) {
    let mut renewing_since: Option<std::time::Instant> = None;
    let mut caps_read: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(EVERY).await;
        if caps_read.is_none_or(|at| at.elapsed() >= CAPS_EVERY) {
            match read_caps(store.as_ref(), &jobs).await {
                Ok(()) => caps_read = Some(std::time::Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the organizations' running bounds failed")
                }
            }
        }
        let here: Vec<String> = jobs
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        if let Err(e) = store.renew_runs(&here).await {
            tracing::warn!(error = %e, "renewing this node's leases failed");
            renewing_since = None;
            continue;
        }
        match store.running_elsewhere().await {
            Ok(running) => jobs.queue.set_elsewhere(running),
            Err(e) => tracing::warn!(error = %e, "counting the runs of other nodes failed"),
        }
        let since = *renewing_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= crate::store::LEASE
            && let Err(e) = reap(store.as_ref(), &jobs).await
        {
            tracing::warn!(error = %e, "ending the runs of a node that went away failed");
        }
        if let Err(e) = take_stale(store.as_ref(), &jobs).await {
            tracing::warn!(error = %e, "looking for queued work left by other nodes failed");
        }
        if let Err(e) = follow(store.as_ref(), &jobs).await {
            tracing::warn!(error = %e, "looking for what other nodes did failed");
        }
    }
}

/// Sets the queue's running bound of every organization from its record.
async fn read_caps(store: &dyn Store, jobs: &Jobs) -> Result<(), StoreError> {
    for org in store.orgs().await? {
        jobs.set_org_cap(&org.id, org.limits().running_cap());
    }
    Ok(())
}

/// Ends, as failed / INTERRUPTED, the running executions whose node's
/// lease ran out; how many.
///
/// # Errors
///
/// The store could not be read or written.
pub async fn reap(store: &dyn Store, jobs: &Jobs) -> Result<usize, StoreError> {
    let mut ended = 0;
    for expired in store.expired_runs(REAP_BATCH).await? {
        // Only over the run as it was found: if its node came back and
        // finished it meanwhile, that outcome stands.
        let record = interrupted(&expired);
        let still = |current: &ExecutionRecord| {
            current.status == ExecutionStatus::Running && current.node == expired.node
        };
        if jobs.end(store, &record, Some(&still)).await? {
            jobs.settle(&record.id, super::Settled::Stored);
            ended += 1;
        }
    }
    if ended > 0 {
        store.flush().await?;
        tracing::warn!(
            ended,
            "ended the runs of a node that stopped renewing its lease"
        );
    }
    Ok(ended)
}

fn interrupted(running: &ExecutionRecord) -> ExecutionRecord {
    let mut record = running.clone();
    contract::end_unrun(
        &mut record,
        ExecutionStatus::Failed,
        ExecutionCode::INTERRUPTED,
        "the node running this execution stopped (its lease ran out)",
    );
    record
}

/// What reaches this node from the others through the store: a cancel
/// asked for elsewhere of a run here stops it; the end of a run elsewhere
/// that a request here waits for (a wait, a cancel's answer) or streams
/// (`/events`) settles it here, so the request answers with the record
/// (and each such execution is watched again: `signals::watch`).
/// Reads a record per run here (bounded by the workers) and per execution
/// waited for here but neither queued nor running here (bounded by the
/// requests open).
///
/// # Errors
///
/// The store could not be read.
pub async fn follow(store: &dyn Store, jobs: &Jobs) -> Result<(), StoreError> {
    let running: Vec<(String, kiln_runtime::CancelHandle)> = jobs
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(_, handle)| !handle.is_cancelled())
        .map(|(id, handle)| (id.clone(), handle.clone()))
        .collect();
    for (id, handle) in &running {
        // Asked to stop elsewhere, or no longer this node's to finish (ended
        // by another node when this one's lease ran out).
        // (A record still queued is one whose claim is being written.)
        let stop = store.execution(id).await?.is_some_and(|record| {
            record.cancel_requested
                || record.status.is_final()
                || (record.status == ExecutionStatus::Running
                    && record.node.as_deref() != store.node())
        });
        if stop {
            handle.cancel();
        }
    }
    let mut watched: std::collections::HashSet<String> = jobs.lock().keys().cloned().collect();
    watched.extend(jobs.output.ids());
    for id in watched {
        if jobs.is_here(&id) {
            continue;
        }
        // Asked again: the node that runs it now may not have heard.
        super::signals::watch(store, jobs, &id);
        if store
            .execution(&id)
            .await?
            .is_some_and(|record| record.status.is_final())
        {
            jobs.settle(&id, super::Settled::Stored);
        }
    }
    Ok(())
}

/// With nothing queued here, queues the executions that waited elsewhere
/// past [`STALE_QUEUED_MS`], as many as there are places; how many.
///
/// # Errors
///
/// The store could not be read.
pub async fn take_stale(store: &dyn Store, jobs: &Jobs) -> Result<usize, StoreError> {
    if jobs.queued() > 0 {
        return Ok(0);
    }
    let stale = store
        .stale_queued(STALE_QUEUED_MS, jobs.queue.room())
        .await?;
    if !stale.is_empty() {
        // Their organizations may be new here: their running bounds first.
        read_caps(store, jobs).await?;
    }
    let mut taken = 0;
    for record in stale {
        // One this node queued itself is in its queue already.
        if !jobs.is_settling(&record.id) {
            jobs.requeue(&record);
            taken += 1;
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::tests::{jobs, queued};
    use crate::store::PgStore;

    /// Two nodes on one fresh database.
    async fn two_nodes() -> (Arc<dyn Store>, Arc<dyn Store>, String) {
        let url = kiln_testpg::shared().fresh_database();
        let a = PgStore::connect(&url).await.unwrap();
        let b = PgStore::connect(&url).await.unwrap();
        (Arc::new(a), Arc::new(b), url)
    }

    #[tokio::test]
    async fn two_nodes_claim_each_execution_once_and_end_the_runs_of_one_that_vanished() {
        let (a, b, url) = two_nodes().await;
        let (jobs_a, jobs_b) = (jobs(100), jobs(100));
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(queued(a.as_ref()).await.id);
        }
        let claim_all = |store: Arc<dyn Store>, jobs: Arc<Jobs>, ids: Vec<String>| async move {
            let mut won = Vec::new();
            for id in ids {
                if let Some((record, _cancel)) = jobs.claim(store.as_ref(), &id).await.unwrap() {
                    won.push(record);
                }
            }
            won
        };
        let (won_a, won_b) = tokio::join!(
            tokio::spawn(claim_all(a.clone(), jobs_a.clone(), ids.clone())),
            tokio::spawn(claim_all(b.clone(), jobs_b.clone(), ids.clone())),
        );
        let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
        assert_eq!(won_a.len() + won_b.len(), ids.len(), "each claimed once");
        for record in &won_a {
            assert_eq!(record.node.as_deref(), a.node());
        }

        // Node A goes away: its leases run out (here, at once).
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("UPDATE executions SET lease_ms = 0 WHERE node = $1")
            .bind(a.node())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(reap(b.as_ref(), &jobs_b).await.unwrap(), won_a.len());
        for record in &won_a {
            let ended = b.execution(&record.id).await.unwrap().unwrap();
            assert_eq!(ended.status, ExecutionStatus::Failed);
            assert_eq!(ended.error.unwrap().code, ExecutionCode::INTERRUPTED);
        }
        // Its outcome, if it comes back with one, is dropped; B's stands.
        if let Some(late) = won_a.first() {
            let mut finished = late.clone();
            finished.status = ExecutionStatus::Completed;
            assert!(
                !jobs_a
                    .record_run_final(a.as_ref(), &finished)
                    .await
                    .unwrap()
            );
        }
        if let Some(running) = won_b.first() {
            let mut finished = running.clone();
            finished.status = ExecutionStatus::Completed;
            assert!(
                jobs_b
                    .record_run_final(b.as_ref(), &finished)
                    .await
                    .unwrap()
            );
        }
        assert_eq!(
            reap(b.as_ref(), &jobs_b).await.unwrap(),
            0,
            "B renews its own"
        );
    }

    #[tokio::test]
    async fn a_node_with_nothing_queued_takes_work_that_waited_elsewhere() {
        let (a, b, _url) = two_nodes().await;
        let jobs_b = jobs(100);
        let waited = crate::store::testing::execution(
            &crate::store::testing::id_at(crate::now_ms() - 60_000, 1),
            None,
            ExecutionStatus::Queued,
        );
        a.put_execution(&waited).await.unwrap();
        queued(a.as_ref()).await; // just queued: its node's, for now
        assert_eq!(take_stale(b.as_ref(), &jobs_b).await.unwrap(), 1);
        assert_eq!(jobs_b.queued(), 1);
        assert_eq!(
            take_stale(b.as_ref(), &jobs_b).await.unwrap(),
            0,
            "not while its own queue has work"
        );
    }

    #[tokio::test]
    async fn an_organization_runs_at_most_its_quota_on_all_the_nodes() {
        let (a, b, _url) = two_nodes().await;
        let (jobs_a, jobs_b) = (jobs(100), jobs(100));
        for jobs in [&jobs_a, &jobs_b] {
            jobs.set_shared();
            jobs.set_org_cap("acme", Some(1));
        }
        let mut ids = Vec::new();
        for n in 0..2 {
            let id = crate::store::testing::id_at(crate::now_ms(), n);
            let mut record = crate::store::testing::execution(&id, None, ExecutionStatus::Queued);
            record.org = crate::store::orgs::org_field("acme");
            a.put_execution(&record).await.unwrap();
            ids.push(record);
        }
        jobs_b.requeue(&ids[1]);
        let (first, _cancel) = jobs_a.claim(a.as_ref(), &ids[0].id).await.unwrap().unwrap();
        // B finds the organization's one place taken on A: the run goes back
        // into B's queue, held until B counts A's runs again.
        let popped = jobs_b.queue.pop().await.unwrap();
        assert_eq!(popped.id, ids[1].id);
        assert!(
            jobs_b
                .claim(b.as_ref(), &ids[1].id)
                .await
                .unwrap()
                .is_none()
        );
        drop(popped);
        assert!(jobs_b.queue.contains(&ids[1].id), "queued again");
        assert!(!jobs_b.runs_here(&ids[1].id));
        let held = tokio::time::timeout(std::time::Duration::from_millis(200), jobs_b.queue.pop());
        assert!(held.await.is_err(), "its organization is held");

        // A's run ends; B counts again and claims.
        let mut done = first.clone();
        done.status = ExecutionStatus::Completed;
        assert!(jobs_a.record_run_final(a.as_ref(), &done).await.unwrap());
        jobs_b
            .queue
            .set_elsewhere(b.running_elsewhere().await.unwrap());
        let (second, _cancel) = jobs_b.claim(b.as_ref(), &ids[1].id).await.unwrap().unwrap();
        assert_eq!(second.status, ExecutionStatus::Running);
    }
}

//! Retention: the sweeper that keeps the store to what `[retention]` allows
//! (executions by age and by count per script, audit entries and webhook
//! attempts by age, idempotency keys and sessions past their lifetime,
//! usage rollups past the longest usage period, compiled artifacts on disk
//! past their byte budget, script versions past each script's newest N),
//! and
//! the bulk delete behind `DELETE /v1/executions`.
//!
//! A sweep reads at most `retention.sweep_batch` records it may remove and
//! looks at no more than that many scripts (each costs one more read, of
//! its oldest execution), on a blocking thread; the only lock it takes is the store's per-record one, for one
//! removal at a time. An execution is never removed while it is queued or
//! running, nor within `executions_grace_secs` of finishing, nor when it is
//! one of its script's `executions_keep_last` newest.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use crate::config::RetentionConfig;
use crate::jobs::Jobs;
use crate::metrics::SweepMetrics;
use crate::store::executions::{ExecutionIndex, ExecutionWalk, ID_TIME_SLACK_MS, Removal};
use crate::store::orgs::InOrg as _;
use crate::store::{ExecutionRecord, ExecutionStatus, Store, StoreError};

/// How long the sweeper pauses between sweeps while it has a backlog.
const BACKLOG_PAUSE: Duration = Duration::from_millis(100);
/// How often idempotency keys and sessions are expired (their scan reads
/// every key, so not every sweep).
const EXPIRY_EVERY_MS: u64 = 3_600_000;
/// How often the disk cache of compiled artifacts is trimmed.
const TRIM_EVERY_MS: u64 = 60_000;

/// How long usage rollups are kept: the longest period usage analytics
/// answer for (`api/analytics.rs`, 366 days) and a day.
const USAGE_KEPT_MS: u64 = 367 * 86_400_000;

/// What one sweep removed, and whether it stopped at its budget.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub executions: usize,
    pub audit_entries: usize,
    pub webhook_attempts: usize,
    pub idempotency_keys: usize,
    /// Hourly usage rollups older than the longest usage period.
    pub usage_rollups: usize,
    /// Compiled artifacts removed from the disk cache.
    pub compiled_artifacts: usize,
    /// Script versions older than a script's newest `script_versions_keep`.
    pub script_versions: usize,
    /// It read all it may: more may be due now.
    pub more: bool,
}

impl Swept {
    /// How many of each kind it removed, in [`SweepMetrics::KINDS`]' order.
    pub fn counts(&self) -> [usize; SweepMetrics::KINDS.len()] {
        [
            self.executions,
            self.audit_entries,
            self.webhook_attempts,
            self.idempotency_keys,
            self.usage_rollups,
            self.compiled_artifacts,
            self.script_versions,
        ]
    }
}

pub struct Sweeper {
    store: Arc<dyn Store>,
    jobs: Arc<Jobs>,
    policy: RetentionConfig,
    metrics: SweepMetrics,
    /// Where the next sweep starts among the scripts, so one script's
    /// backlog does not keep the others' waiting.
    next_script: usize,
    last_expiry_ms: Option<u64>,
    /// Where compiled artifacts are kept on disk, once set.
    artifacts: Option<Arc<kiln_runtime::Sandbox>>,
    last_trim_ms: Option<u64>,
}

/// Whether an execution may be removed yet.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Ended before `settled_before`, and its record is durable.
    Now,
    /// Ended since `settled_before` (within its grace).
    InGrace,
    /// Queued, running, or ended and not yet synced (a waiter may be about
    /// to read it).
    Live,
}

fn due(e: &ExecutionRecord, jobs: &Jobs, settled_before: &str) -> Due {
    if !e.status.is_final() || jobs.is_settling(&e.id) {
        Due::Live
    } else if e.completed_at.as_deref().unwrap_or(&e.created_at) < settled_before {
        Due::Now
    } else {
        Due::InGrace
    }
}

impl Sweeper {
    pub fn new(
        store: Arc<dyn Store>,
        jobs: Arc<Jobs>,
        policy: RetentionConfig,
        metrics: SweepMetrics,
    ) -> Self {
        Self {
            store,
            jobs,
            policy,
            metrics,
            next_script: 0,
            last_expiry_ms: None,
            artifacts: None,
            last_trim_ms: None,
        }
    }

    /// Keeps `sandbox`'s compiled artifacts on disk to
    /// `retention.artifacts_max_mb` too.
    #[must_use]
    pub fn with_artifacts(mut self, sandbox: Arc<kiln_runtime::Sandbox>) -> Self {
        self.artifacts = Some(sandbox);
        self
    }

    /// Trims the disk cache of compiled artifacts, at most once a minute
    /// (it lists the cache directory); what it removed.
    fn trim_artifacts(&mut self, now_ms: u64) -> usize {
        let (Some(sandbox), max_mb) = (&self.artifacts, self.policy.artifacts_max_mb) else {
            return 0;
        };
        let due = self
            .last_trim_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= TRIM_EVERY_MS);
        if max_mb == 0 || !due {
            return 0;
        }
        self.last_trim_ms = Some(now_ms);
        match sandbox.trim_disk_cache(max_mb.saturating_mul(1 << 20)) {
            Ok(trimmed) => {
                if trimmed.files > 0 {
                    tracing::info!(
                        files = trimmed.files,
                        bytes = trimmed.bytes,
                        kept_bytes = trimmed.kept_bytes,
                        "compiled artifacts removed from the disk cache"
                    );
                }
                trimmed.files
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot trim the compiled artifact cache");
                0
            }
        }
    }

    /// One sweep as of `now_ms` (Unix ms).
    ///
    /// # Errors
    ///
    /// The store failed; what was removed before stays removed.
    pub async fn sweep(&mut self, now_ms: u64) -> Result<Swept, StoreError> {
        let mut budget = self.policy.sweep_batch;
        let mut swept = Swept {
            executions: self.sweep_executions(now_ms, &mut budget).await?,
            ..Swept::default()
        };
        let age = |secs: u64| (secs > 0).then(|| now_ms.saturating_sub(secs.saturating_mul(1000)));
        if let Some(before) = age(self.policy.audit_max_age_secs) {
            swept.audit_entries = self.store.remove_audit_before(before, budget).await?;
            budget -= swept.audit_entries;
        }
        if let Some(before) = age(self.policy.webhook_attempts_max_age_secs) {
            swept.webhook_attempts = self.store.remove_attempts_before(before, budget).await?;
            budget -= swept.webhook_attempts;
        }
        swept.usage_rollups = self
            .store
            .remove_usage_before(now_ms.saturating_sub(USAGE_KEPT_MS), budget)
            .await?;
        budget -= swept.usage_rollups;
        if self
            .last_expiry_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= EXPIRY_EVERY_MS)
        {
            self.last_expiry_ms = Some(now_ms);
            let before = now_ms.saturating_sub(crate::store::IDEMPOTENCY_TTL_MS);
            swept.idempotency_keys = self.store.expire_idempotency_keys(before).await?;
            swept.script_versions = self.sweep_versions(&mut budget).await?;
            let sessions = self.store.expire_sessions(now_ms).await?;
            if sessions > 0 {
                tracing::info!(
                    expired = sessions,
                    "login sessions and refresh tokens expired"
                );
            }
        }
        swept.compiled_artifacts = self.trim_artifacts(now_ms);
        // A budget spent on records not yet due (queued, running, within
        // their grace) is no backlog: sweeping again at once would read
        // them again, and again, until they are due.
        let counts = swept.counts();
        swept.more = budget == 0 && counts.iter().sum::<usize>() > 0;
        for (kind, n) in SweepMetrics::KINDS.into_iter().zip(counts) {
            self.metrics.removed(kind, n);
        }
        Ok(swept)
    }

    /// Removes each script's versions older than its newest
    /// `script_versions_keep`, but none a queued or running execution uses
    /// (bounded by the queue and the workers). Reads every script record,
    /// so it runs with the hourly expiries.
    async fn sweep_versions(&self, budget: &mut usize) -> Result<usize, StoreError> {
        let keep = self.policy.script_versions_keep;
        if keep == 0 {
            return Ok(0);
        }
        let mut used = std::collections::HashSet::new();
        for status in [ExecutionStatus::Queued, ExecutionStatus::Running] {
            let walk = ExecutionWalk::new(ExecutionIndex::Status(status), false);
            self.store
                .walk_executions(&walk, &mut |e| {
                    if let (Some(script), Some(version)) = (e.script_id, e.script_version) {
                        used.insert((script, version));
                    }
                    ControlFlow::Continue(())
                })
                .await?;
        }
        let mut removed = 0;
        for script in self.store.scripts().await? {
            if *budget == 0 {
                break;
            }
            let Some(below) = script.version.checked_sub(keep - 1).filter(|b| *b > 1) else {
                continue;
            };
            let in_use = |version: u32| used.contains(&(script.id.clone(), version));
            let n = self
                .store
                .remove_versions_below(&script.id, below, &in_use, *budget)
                .await?;
            *budget -= n;
            removed += n;
        }
        Ok(removed)
    }

    /// Walks each script's executions oldest first, removing those past the
    /// age or the count, until the rest are young and few enough.
    async fn sweep_executions(
        &mut self,
        now_ms: u64,
        budget: &mut usize,
    ) -> Result<usize, StoreError> {
        let p = &self.policy;
        let old_before = (p.executions_max_age_secs > 0).then(|| {
            crate::time_of_ms(now_ms.saturating_sub(p.executions_max_age_secs.saturating_mul(1000)))
        });
        let settled_before =
            crate::time_of_ms(now_ms.saturating_sub(p.executions_grace_secs.saturating_mul(1000)));
        let scripts = self.store.executions_per_script();
        let (store, jobs) = (self.store.as_ref(), self.jobs.as_ref());
        let mut removed = 0;
        // Each script looked at costs a read its budget does not count (its
        // oldest execution, to see that nothing is due): at most as many.
        let mut looks = p.sweep_batch;
        for k in 0..scripts.len() {
            if *budget == 0 || looks == 0 {
                self.next_script = (self.next_script + k) % scripts.len();
                break;
            }
            let (script, count) = &scripts[(self.next_script + k) % scripts.len()];
            let mut remaining = *count;
            if remaining <= p.executions_keep_last {
                continue;
            }
            looks -= 1;
            // Chosen in the walk, removed after it: the walk only reads.
            let mut doomed = Vec::new();
            let walk = ExecutionWalk::new(ExecutionIndex::Script(script.clone()), false);
            store
                .walk_executions(&walk, &mut |e| {
                    let too_many = remaining > p.executions_per_script;
                    let too_old = old_before.as_ref().is_some_and(|t| e.created_at < *t);
                    if remaining <= p.executions_keep_last || !(too_many || too_old) || *budget == 0
                    {
                        return ControlFlow::Break(());
                    }
                    *budget -= 1;
                    match due(&e, jobs, &settled_before) {
                        Due::Now => {
                            remaining -= 1;
                            doomed.push(e.id);
                        }
                        // So, in creation order, are nearly all after it:
                        // the next sweep looks again, rather than this one
                        // reading its whole budget of records it may not
                        // remove yet.
                        Due::InGrace => return ControlFlow::Break(()),
                        Due::Live => {}
                    }
                    ControlFlow::Continue(())
                })
                .await?;
            for id in doomed {
                if let Removal::Removed = store.delete_execution(&id).await? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Sweeps every `sweep_interval_ms`, or after a short pause while there is
/// a backlog, until `stopping` turns true.
pub async fn run(mut sweeper: Sweeper, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let interval = Duration::from_millis(sweeper.policy.sweep_interval_ms);
    loop {
        let (back, result) = match tokio::task::spawn_blocking(move || {
            // Off the async threads: a sweep deletes in batches.
            let result = tokio::runtime::Handle::current().block_on(sweeper.sweep(crate::now_ms()));
            (sweeper, result)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the retention sweeper stopped");
                return;
            }
        };
        sweeper = back;
        let pause = match result {
            Ok(swept) => {
                if swept != Swept::default() {
                    tracing::debug!(?swept, "retention sweep");
                }
                if swept.more { BACKLOG_PAUSE } else { interval }
            }
            Err(e) => {
                tracing::warn!(error = %e, "a retention sweep failed");
                interval
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Removes up to `limit` final executions created before `before_ms` (Unix
/// ms), of one script or of all of organization `org`, oldest first; how many it removed and
/// whether more may be due. Queued, running and unsettled ones are left.
///
/// # Errors
///
/// The store failed; what was removed before stays removed.
pub async fn delete_before(
    store: &dyn Store,
    jobs: &Jobs,
    org: &str,
    script_id: Option<String>,
    before_ms: u64,
    limit: usize,
) -> Result<(usize, bool), StoreError> {
    let index = script_id.map_or_else(
        || ExecutionIndex::Org(org.to_owned()),
        |id| ExecutionIndex::Script(Some(id)),
    );
    let mut walk = ExecutionWalk::new(index, false);
    walk.created_until_ms = Some(before_ms.saturating_add(ID_TIME_SLACK_MS));
    let before = crate::time_of_ms(before_ms);
    let now = crate::time_of_ms(crate::now_ms());
    let (mut doomed, mut more) = (Vec::new(), false);
    store
        .walk_executions(&walk, &mut |e| {
            // A deleted script's id may be another organization's.
            if e.org() != org || e.created_at >= before || due(&e, jobs, &now) != Due::Now {
                return ControlFlow::Continue(());
            }
            if doomed.len() == limit {
                more = true;
                return ControlFlow::Break(());
            }
            doomed.push(e.id);
            ControlFlow::Continue(())
        })
        .await?;
    let mut removed = 0;
    for id in doomed {
        if let Removal::Removed = store.delete_execution(&id).await? {
            removed += 1;
        }
    }
    Ok((removed, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExecutionStatus::{Completed, Failed, Queued, Running};
    use crate::store::SledStore;
    use crate::store::testing::{execution, id_at};

    const DAY_MS: u64 = 24 * 3_600_000;
    const NOW: u64 = 100 * DAY_MS;

    fn sweeper(configure: impl FnOnce(&mut RetentionConfig)) -> (Sweeper, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
        let metrics = crate::metrics::Metrics::new();
        let jobs = Jobs::new(
            1,
            10,
            crate::jobs::QueueShare::whole(10),
            metrics.executions(),
        );
        let mut policy = RetentionConfig {
            executions_max_age_secs: 10 * 24 * 3600,
            executions_per_script: 5,
            executions_keep_last: 2,
            executions_grace_secs: 60,
            ..RetentionConfig::default()
        };
        configure(&mut policy);
        (Sweeper::new(store, jobs, policy, metrics.swept()), dir)
    }

    async fn kept(sweeper: &Sweeper, script: Option<&str>) -> Vec<String> {
        let mut ids = Vec::new();
        let walk = ExecutionWalk::new(ExecutionIndex::Script(script.map(Into::into)), false);
        sweeper
            .store
            .walk_executions(&walk, &mut |e| {
                ids.push(e.id);
                ControlFlow::Continue(())
            })
            .await
            .unwrap();
        ids
    }

    #[tokio::test]
    async fn old_executions_go_but_each_scripts_newest_and_the_unfinished_stay() {
        let (mut sweeper, _dir) = sweeper(|_| {});
        let made = std::cell::Cell::new(0);
        let put = async |ms: u64, script: Option<&str>, status| {
            made.set(made.get() + 1);
            let id = id_at(ms, made.get());
            sweeper
                .store
                .put_execution(&execution(&id, script, status))
                .await
                .unwrap();
            id
        };
        // Script a: three old final ones, an old running one, two recent.
        let mut a_old: Vec<String> = Vec::new();
        for d in 1..=3 {
            a_old.push(put(d * DAY_MS, Some("a"), Completed).await);
        }
        let a_running = put(4 * DAY_MS, Some("a"), Running).await;
        let a_new = [
            put(95 * DAY_MS, Some("a"), Failed).await,
            put(96 * DAY_MS, Some("a"), Completed).await,
        ];
        // Script b: only old ones; its newest two are kept.
        let mut b: Vec<String> = Vec::new();
        for d in 1..=3 {
            b.push(put(d * DAY_MS, Some("b"), Completed).await);
        }
        // Ad-hoc: one old, one that finished within the grace period.
        let adhoc_old = put(DAY_MS, None, Completed).await;
        let adhoc_fresh = put(NOW - 1_000, None, Completed).await;
        let queued_old = put(2 * DAY_MS, None, Queued).await;

        let swept = sweeper.sweep(NOW).await.unwrap();
        assert_eq!(swept.executions, 3 + 1 + 1, "{swept:?}");
        assert!(!swept.more);
        assert_eq!(
            kept(&sweeper, Some("a")).await,
            [a_running.clone(), a_new[0].clone(), a_new[1].clone()]
        );
        assert_eq!(kept(&sweeper, Some("b")).await, b[1..]);
        assert_eq!(kept(&sweeper, None).await, [queued_old, adhoc_fresh]);
        assert!(sweeper.store.execution(&adhoc_old).await.unwrap().is_none());
        for id in &a_old {
            assert!(sweeper.store.execution(id).await.unwrap().is_none());
        }
        assert_eq!(sweeper.metrics.total("executions"), 5);
        // Nothing more is due.
        assert_eq!(sweeper.sweep(NOW).await.unwrap().executions, 0);
    }

    /// Stores an execution of script `s` made at `ms`; its id.
    async fn put_of_s(sweeper: &Sweeper, ms: u64, n: u8, status: ExecutionStatus) -> String {
        let id = id_at(ms, n);
        let record = execution(&id, Some("s"), status);
        sweeper.store.put_execution(&record).await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_script_past_its_count_loses_its_oldest_in_bounded_sweeps() {
        let (mut sweeper, _dir) = sweeper(|p| {
            p.executions_max_age_secs = 0;
            p.sweep_batch = 4;
        });
        let mut ids: Vec<String> = Vec::new();
        for i in 0..12 {
            ids.push(put_of_s(&sweeper, DAY_MS + i, 0, Completed).await);
        }
        let first = sweeper.sweep(NOW).await.unwrap();
        assert_eq!((first.executions, first.more), (4, true));
        let second = sweeper.sweep(NOW).await.unwrap();
        assert_eq!((second.executions, second.more), (3, false));
        // The newest `executions_per_script` (5) stay.
        assert_eq!(kept(&sweeper, Some("s")).await, ids[7..]);
    }

    #[tokio::test]
    async fn executions_not_yet_due_are_no_backlog() {
        let (mut sweeper, _dir) = sweeper(|p| {
            p.executions_max_age_secs = 0;
            p.sweep_batch = 4;
        });
        // Twelve past the script's count, every one finished within its
        // grace, and two old unfinished ones before them.
        for (n, status) in [(0, Queued), (1, Running)] {
            put_of_s(&sweeper, DAY_MS, n, status).await;
        }
        let mut ids: Vec<String> = Vec::new();
        for i in 0..12 {
            ids.push(put_of_s(&sweeper, NOW - 10_000 + i, 0, Completed).await);
        }
        // Nothing is removed, and the sweeper waits its interval instead of
        // reading the same records again at once.
        let swept = sweeper.sweep(NOW).await.unwrap();
        assert_eq!((swept.executions, swept.more), (0, false), "{swept:?}");
        // Once their grace has passed they go, oldest first, in bounded
        // sweeps (each reads the two unfinished ones too) until the script
        // is down to its count (5).
        let later = NOW + 61_000;
        let mut removed = Vec::new();
        loop {
            let swept = sweeper.sweep(later).await.unwrap();
            removed.push(swept.executions);
            if !swept.more {
                break;
            }
        }
        assert_eq!(removed, [2, 2, 2, 2, 1]);
        assert_eq!(kept(&sweeper, Some("s")).await.len(), 5);
        assert_eq!(kept(&sweeper, Some("s")).await[2..], ids[9..]);
    }

    #[tokio::test]
    async fn audit_entries_and_webhook_attempts_go_by_age() {
        let (mut sweeper, _dir) = sweeper(|p| {
            p.audit_max_age_secs = 24 * 3600;
        });
        for (ms, n) in [
            (NOW - 3 * DAY_MS, 0),
            (NOW - 2 * DAY_MS, 1),
            (NOW - 1_000, 2),
        ] {
            let record = crate::store::auth::AuditRecord {
                id: id_at(ms, n),
                org: None,
                at: String::new(),
                action: "test".into(),
                outcome: "success".into(),
                actor_id: None,
                actor: None,
                ip: None,
                target: None,
                detail: None,
                request_id: None,
            };
            sweeper.store.append_audit(&record).unwrap();
        }
        assert_eq!(sweeper.store.record_counts().audit_entries, 3);
        assert_eq!(sweeper.sweep(NOW).await.unwrap().audit_entries, 2);
        let (page, total) = sweeper
            .store
            .audit_page(crate::store::orgs::DEFAULT_ORG, 0, 10)
            .await
            .unwrap();
        assert_eq!((page.len(), total), (1, 1), "the total is the counter");
        assert_eq!(sweeper.store.record_counts().audit_entries, 1);
    }

    #[tokio::test]
    async fn a_sweep_looks_at_no_more_scripts_than_its_batch() {
        let (mut sweeper, _dir) = sweeper(|p| p.sweep_batch = 2);
        // Five scripts past their newest two, none of it due yet.
        for (n, script) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            for i in 0..3 {
                let id = id_at(NOW - 1_000 - i, u8::try_from(n).unwrap());
                sweeper
                    .store
                    .put_execution(&execution(&id, Some(script), Completed))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(sweeper.sweep(NOW).await.unwrap(), Swept::default());
        assert_eq!(
            sweeper.next_script, 2,
            "the next sweep goes on from the third"
        );
        sweeper.sweep(NOW).await.unwrap();
        assert_eq!(sweeper.next_script, 4);
    }

    #[tokio::test]
    async fn a_bulk_delete_stops_at_its_limit_and_says_more_is_due() {
        let (sweeper, _dir) = sweeper(|_| {});
        for i in 0..5 {
            let id = id_at(DAY_MS + i, 0);
            sweeper
                .store
                .put_execution(&execution(&id, Some("s"), Completed))
                .await
                .unwrap();
        }
        let young = id_at(NOW, 0);
        sweeper
            .store
            .put_execution(&execution(&young, Some("s"), Completed))
            .await
            .unwrap();
        let delete = async || {
            delete_before(
                sweeper.store.as_ref(),
                &sweeper.jobs,
                crate::store::orgs::DEFAULT_ORG,
                Some("s".into()),
                2 * DAY_MS,
                2,
            )
            .await
            .unwrap()
        };
        assert_eq!(delete().await, (2, true));
        assert_eq!(delete().await, (2, true));
        assert_eq!(delete().await, (1, false));
        assert_eq!(kept(&sweeper, Some("s")).await, [young]);
    }

    #[tokio::test]
    async fn compiled_artifacts_on_disk_are_kept_to_their_budget_once_a_minute() {
        let cache = tempfile::tempdir().unwrap();
        let sandbox = kiln_runtime::Sandbox::new(kiln_runtime::EngineOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..kiln_runtime::EngineOptions::default()
        })
        .unwrap();
        // Three artifacts of 1 MiB each, the first the least recently used.
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let code = cache.path().join(format!("{name}.cwasm"));
            std::fs::write(&code, vec![0u8; 1 << 20]).unwrap();
            let used = std::time::UNIX_EPOCH + Duration::from_secs(1 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&code)
                .unwrap()
                .set_modified(used)
                .unwrap();
        }
        let (sweeper, _dir) = sweeper(|p| p.artifacts_max_mb = 2);
        let mut sweeper = sweeper.with_artifacts(Arc::new(sandbox));
        let swept = sweeper.sweep(1_000_000).await.unwrap();
        assert_eq!(swept.compiled_artifacts, 1);
        assert!(!cache.path().join("old.cwasm").exists());
        assert!(cache.path().join("mid.cwasm").exists());
        // Not again within the minute, whatever is on disk.
        std::fs::write(cache.path().join("more.cwasm"), vec![0u8; 1 << 20]).unwrap();
        assert_eq!(
            sweeper.sweep(1_030_000).await.unwrap().compiled_artifacts,
            0
        );
        assert_eq!(
            sweeper.sweep(1_060_000).await.unwrap().compiled_artifacts,
            1
        );
    }

    #[tokio::test]
    async fn a_script_keeps_its_newest_versions_and_those_a_queued_run_uses() {
        let (mut sweeper, _dir) = sweeper(|p| p.script_versions_keep = 2);
        let store = sweeper.store.clone();
        store
            .create_script(&crate::store::testing::script("s", "versions", 1), b"v1")
            .await
            .unwrap();
        for version in 2..=5 {
            store
                .update_script(
                    "s",
                    &|old| {
                        let mut new = old.clone();
                        new.version = version;
                        Ok(new)
                    },
                    Some(format!("v{version}").as_bytes()),
                )
                .await
                .unwrap();
        }
        let mut queued = execution(&id_at(1_000, 0), Some("s"), Queued);
        queued.script_version = Some(2);
        store.put_execution(&queued).await.unwrap();
        let swept = sweeper.sweep(crate::now_ms()).await.unwrap();
        assert_eq!(swept.script_versions, 2);
        let left: Vec<u32> = store
            .script_versions("s")
            .await
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(left, [2, 4, 5]);
        assert!(store.script_content("s", 1).await.unwrap().is_none());
        assert_eq!(store.script_content("s", 2).await.unwrap().unwrap(), b"v2");
    }
}

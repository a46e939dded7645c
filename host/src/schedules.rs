//! Cron schedules: parsing a cron in its time zone, and the scheduler task
//! that turns due schedules into executions with `trigger: "schedule"`.
//!
//! A schedule stores the Unix-ms time of its next run. The scheduler sleeps
//! until the earliest one (or until the API says a schedule changed), fires
//! what is due and sets each fired schedule's next run to the first cron time
//! after now: after downtime a schedule that missed several times fires once,
//! not once per missed slot.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use tokio::sync::{Notify, watch};

use crate::config::LimitsConfig;
use crate::jobs::Jobs;
use crate::quotas::QuotaError;
use crate::store::orgs::InOrg as _;
use crate::store::schedules::Firing;
use crate::store::{
    ExecutionRecord, ExecutionStatus, Overlap, ScheduleRecord, ScriptStatus, Store, StoreError,
};

/// The longest the scheduler sleeps without looking (a safety net: changes
/// through the API wake it at once).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// After a store failure, try again this much later.
const RETRY: Duration = Duration::from_secs(1);
/// Bounds the search for a next time (see `Cron::next_after`).
const MAX_STEPS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("{0}")]
    Cron(String),
    #[error("{0:?} is not an IANA time zone")]
    Zone(String),
}

/// A parsed cron expression and the zone its fields are read in.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl Cron {
    /// 5 fields (minute first), 6 (seconds first), or a macro such as
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    ///
    /// # Errors
    ///
    /// [`CronError::Cron`] for a bad expression, [`CronError::Zone`] for an
    /// unknown zone.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CronError> {
        let zone =
            chrono_tz::Tz::from_str(timezone).map_err(|_| CronError::Zone(timezone.to_owned()))?;
        let cron = croner::Cron::new(expression.trim())
            .with_seconds_optional()
            .parse()
            .map_err(|e| CronError::Cron(format!("{expression:?} is not a valid cron: {e}")))?;
        Ok(Self { cron, zone })
    }

    /// The first time the cron matches strictly after `after_ms` (Unix ms),
    /// found in the schedule's zone (so daylight-saving changes move the UTC
    /// time, not the local one); none if it never matches again.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let mut from = Utc
            .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
            .single()?
            .with_timezone(&self.zone);
        // When clocks go back, croner maps a repeated local time to its first
        // instant, which during the hour's second pass lies before `after`.
        // Those local times have run once already: step on in local time
        // until the match is really later (bounded: a repeated hour of a
        // per-second cron is 3 600 steps).
        for _ in 0..MAX_STEPS {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let next_ms = u64::try_from(next.timestamp_millis()).ok()?;
            if next_ms > after_ms {
                return Some(next_ms);
            }
            from = next;
        }
        None
    }
}

/// Unix ms as the API writes times: RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: u64) -> Option<String> {
    let at = Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// What the scheduler reads schedules from and queues their runs on.
pub struct Scheduler {
    pub store: Arc<dyn Store>,
    pub jobs: Arc<Jobs>,
    pub quotas: Arc<crate::quotas::Quotas>,
    pub limits: LimitsConfig,
}

/// Fires due schedules until `stopping` turns true; `changed` wakes it when
/// a schedule is created, changed or deleted.
pub async fn run(state: Scheduler, changed: Arc<Notify>, mut stopping: watch::Receiver<bool>) {
    loop {
        if *stopping.borrow() {
            return;
        }
        let now = crate::now_ms();
        let sleep = match fire_due(&state, now, &stopping).await {
            Ok(Some(next)) => Duration::from_millis(next.saturating_sub(now)).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::warn!(error = %e, "the scheduler cannot read the store");
                RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = changed.notified() => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Fires every active schedule due at `now`; returns the earliest next run.
async fn fire_due(
    state: &Scheduler,
    now: u64,
    stopping: &watch::Receiver<bool>,
) -> Result<Option<u64>, StoreError> {
    let mut earliest: Option<u64> = None;
    for schedule in state.store.schedules().await? {
        if *stopping.borrow() {
            break;
        }
        let Some(due) = schedule.next_run_ms.filter(|_| schedule.active) else {
            continue;
        };
        let next = if due <= now {
            fire(state, &schedule, due, now).await?
        } else {
            Some(due)
        };
        if let Some(next) = next {
            earliest = Some(earliest.map_or(next, |e| e.min(next)));
        }
    }
    Ok(earliest)
}

/// Fires a schedule due at `due`: makes its run (unless its overlap
/// policy, its creator or its script says not to), then has the store fire
/// it, which moves its next time on and stores the run together, only if it
/// is still due and unchanged: of the nodes that find it due, one fires it,
/// and a pause, change or delete through the API that landed first wins.
/// The node that fired it then counts the run against its organization's
/// daily quota and queues it, or ends it failed (QUOTA_EXCEEDED) so the
/// skip shows. Returns the next time.
async fn fire(
    state: &Scheduler,
    schedule: &ScheduleRecord,
    due: u64,
    now: u64,
) -> Result<Option<u64>, StoreError> {
    let next = match Cron::parse(&schedule.cron, &schedule.timezone) {
        Ok(cron) => cron.next_after(now),
        // Validated at creation; only a record edited by hand gets here.
        Err(_) => None,
    };
    let run = if previous_still_running(state, schedule).await? {
        tracing::info!(schedule = %schedule.id, "skipped: the previous run has not finished");
        None
    } else {
        prepare(state, schedule).await
    };
    let at = crate::now();
    let firing = Firing {
        due,
        made_from: &schedule.updated_at,
        next,
        run: run.as_ref(),
        at: &at,
    };
    let Some(fired) = state.store.fire_schedule(&schedule.id, firing).await? else {
        // Fired elsewhere, or changed meanwhile: its time as it is now.
        let current = state.store.schedule(&schedule.id).await?;
        return Ok(current.filter(|s| s.active).and_then(|s| s.next_run_ms));
    };
    if fired.next_run_ms.is_none() {
        tracing::warn!(schedule = %schedule.id, "the cron has no future time; it will not run again");
    }
    // Fired: what fails from here is this run's, not the other schedules'.
    if let Some(run) = &run
        && let Err(e) = queue_fired(state, schedule, run, now).await
    {
        tracing::error!(schedule = %schedule.id, execution = %run.id, error = %e,
            "a fired schedule's run was stored queued but not queued here; \
             the next start (or another node) runs it");
    }
    Ok(fired.next_run_ms)
}

/// A fired schedule's run, stored queued: counted against its
/// organization's daily quota and queued, or ended failed when the quota
/// is spent.
async fn queue_fired(
    state: &Scheduler,
    schedule: &ScheduleRecord,
    run: &ExecutionRecord,
    now: u64,
) -> Result<(), StoreError> {
    match state.quotas.admit_execution(schedule.org(), now).await {
        Ok(admitted) => admitted.keep(),
        Err(QuotaError::Exceeded(spent)) => {
            tracing::warn!(schedule = %schedule.id, %spent, "skipped: a quota is spent");
            let skipped = crate::executions::quota_skipped(run, &spent);
            let queued = |current: &ExecutionRecord| current.status == ExecutionStatus::Queued;
            state
                .jobs
                .end(state.store.as_ref(), &skipped, Some(&queued))
                .await?;
            return state.store.flush().await;
        }
        // Accepted already: it runs, uncounted, rather than never.
        Err(QuotaError::Store(e)) => {
            tracing::warn!(schedule = %schedule.id, error = %e, "a run was not counted against the quota");
        }
    }
    // Durable before it is queued, as any accepted run; queued even if the
    // flush failed (it is stored, and runs once rather than never).
    if let Err(e) = state.store.flush().await {
        tracing::warn!(schedule = %schedule.id, error = %e, "flushing a fired schedule's run failed");
    }
    if let Err(e) = crate::executions::enqueue_stored(&state.store, &state.jobs, run).await {
        tracing::warn!(schedule = %schedule.id, error = %e, "the run was refused");
    }
    Ok(())
}

async fn previous_still_running(
    state: &Scheduler,
    schedule: &ScheduleRecord,
) -> Result<bool, StoreError> {
    if schedule.overlap == Overlap::Allow {
        return Ok(false);
    }
    let Some(id) = &schedule.last_execution_id else {
        return Ok(false);
    };
    Ok(state
        .store
        .execution(id)
        .await?
        .is_some_and(|e| matches!(e.status, ExecutionStatus::Queued | ExecutionStatus::Running)))
}

/// A run of the schedule's script, not yet stored; none when its creator
/// may no longer run scripts or the script is gone or archived (logged).
async fn prepare(state: &Scheduler, schedule: &ScheduleRecord) -> Option<ExecutionRecord> {
    // Runs are on the creator's behalf: a creator since disabled, deleted or
    // demoted below execute:scripts gets none (the schedule stays, for an
    // admin to see and delete).
    match crate::auth::creator_may(
        state.store.as_ref(),
        schedule.org(),
        schedule.created_by.as_deref(),
        crate::auth::Scope::ExecuteScripts,
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(schedule = %schedule.id, creator = ?schedule.created_by,
                "skipped: its creator may no longer run scripts");
            return None;
        }
        Err(e) => {
            tracing::warn!(schedule = %schedule.id, error = %e, "skipped: cannot read its creator");
            return None;
        }
    }
    let script = match state
        .store
        .script(schedule.org(), &schedule.script_id)
        .await
    {
        Ok(Some(script)) if script.status == ScriptStatus::Active => script,
        Ok(Some(_)) => {
            tracing::warn!(schedule = %schedule.id, script = %schedule.script_id,
                "skipped: the script is archived");
            return None;
        }
        Ok(None) => {
            // Deleting a script deletes its schedules; this one outlived it
            // only through a crash in between.
            tracing::info!(schedule = %schedule.id, script = %schedule.script_id,
                "schedule deleted: its script is gone");
            if let Err(e) = state.store.delete_schedule(&schedule.id, &|_| Ok(())).await {
                tracing::warn!(schedule = %schedule.id, error = %e, "cannot delete the schedule");
            }
            return None;
        }
        Err(e) => {
            tracing::warn!(schedule = %schedule.id, error = %e, "skipped: cannot read the script");
            return None;
        }
    };
    match crate::executions::scheduled_record(&state.limits, &script, schedule) {
        Ok(run) => Some(run),
        Err(e) => {
            tracing::warn!(schedule = %schedule.id, error = %e, "skipped: the run was refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        u64::try_from(
            chrono::DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
        )
        .unwrap()
    }

    #[test]
    fn a_berlin_daily_run_keeps_its_local_time_across_daylight_saving() {
        let cron = Cron::parse("0 9 * * *", "Europe/Berlin").unwrap();
        // CET (UTC+1) before 2026-03-29, CEST (UTC+2) from then on.
        let before = cron.next_after(ms("2026-03-27T12:00:00Z")).unwrap();
        assert_eq!(format_ms(before).unwrap(), "2026-03-28T08:00:00.000Z");
        let after = cron.next_after(before).unwrap();
        assert_eq!(format_ms(after).unwrap(), "2026-03-29T07:00:00.000Z");
        // And back in autumn (2026-10-25).
        let autumn = cron.next_after(ms("2026-10-25T06:00:00Z")).unwrap();
        assert_eq!(format_ms(autumn).unwrap(), "2026-10-25T08:00:00.000Z");
    }

    #[test]
    fn the_repeated_hour_in_autumn_never_gives_a_time_in_the_past() {
        // Berlin 2026-10-25: 02:00-03:00 local happens twice, 00:00-01:00Z
        // (CEST) and 01:00-02:00Z (CET).
        let every_minute = Cron::parse("* * * * *", "Europe/Berlin").unwrap();
        for after in [
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T01:59:59Z",
        ] {
            let next = every_minute.next_after(ms(after)).unwrap();
            assert!(next > ms(after), "{after}: {}", format_ms(next).unwrap());
            assert!(next <= ms(after) + 3_600_000, "{after}");
        }
        let every_second = Cron::parse("* * * * * *", "Europe/Berlin").unwrap();
        let after = ms("2026-10-25T01:00:00.500Z");
        let next = every_second.next_after(after).unwrap();
        assert!(next > after && next <= ms("2026-10-25T02:00:00Z"));
    }

    #[test]
    fn six_fields_have_seconds_and_macros_work() {
        let every_second = Cron::parse("* * * * * *", "UTC").unwrap();
        let start = ms("2026-12-01T10:00:00.250Z");
        assert_eq!(
            every_second.next_after(start),
            Some(ms("2026-12-01T10:00:01Z"))
        );
        let hourly = Cron::parse("@hourly", "UTC").unwrap();
        assert_eq!(hourly.next_after(start), Some(ms("2026-12-01T11:00:00Z")));
        let five = Cron::parse("*/15 * * * *", "America/New_York").unwrap();
        assert_eq!(five.next_after(start), Some(ms("2026-12-01T10:15:00Z")));
    }

    #[test]
    fn bad_crons_and_zones_are_refused() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "@sometimes",
            "a b c d e",
        ] {
            assert!(
                matches!(Cron::parse(bad, "UTC"), Err(CronError::Cron(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Cron::parse("* * * * *", "Mars/Olympus"),
            Err(CronError::Zone(_))
        ));
    }
}

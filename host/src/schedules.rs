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

use crate::api::AppState;
use crate::store::{ExecutionStatus, Overlap, ScheduleRecord, ScriptStatus, StoreError};

/// The longest the scheduler sleeps without looking (a safety net: changes
/// through the API wake it at once).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// After a store failure, try again this much later.
const RETRY: Duration = Duration::from_secs(1);

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
        let after = Utc
            .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
            .single()?
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

/// Unix ms as the API writes times: RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: u64) -> Option<String> {
    let at = Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Fires due schedules until `stopping` turns true; `changed` wakes it when
/// a schedule is created, changed or deleted.
pub async fn run(state: AppState, changed: Arc<Notify>, mut stopping: watch::Receiver<bool>) {
    loop {
        if *stopping.borrow() {
            return;
        }
        let now = crate::api::now_ms();
        let sleep = match fire_due(&state, now).await {
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
async fn fire_due(state: &AppState, now: u64) -> Result<Option<u64>, StoreError> {
    let mut earliest: Option<u64> = None;
    for schedule in state.store.schedules()? {
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

/// Runs one due schedule (unless its overlap policy or its script says not
/// to) and moves it to its next time; returns that time.
async fn fire(
    state: &AppState,
    schedule: &ScheduleRecord,
    due: u64,
    now: u64,
) -> Result<Option<u64>, StoreError> {
    let next = match Cron::parse(&schedule.cron, &schedule.timezone) {
        Ok(cron) => cron.next_after(now),
        Err(e) => {
            // Validated at creation; only a record edited by hand gets here.
            tracing::warn!(schedule = %schedule.id, error = %e, "schedule paused: bad cron");
            None
        }
    };
    let started = if previous_still_running(state, schedule)? {
        tracing::info!(schedule = %schedule.id, "skipped: the previous run has not finished");
        None
    } else {
        start(state, schedule).await
    };
    let fired_at = crate::now();
    state.store.update_schedule(&schedule.id, &|current| {
        // Changed through the API meanwhile: its new timing stands.
        if current.next_run_ms != Some(due) || !current.active {
            return Ok(current.clone());
        }
        let mut updated = current.clone();
        updated.next_run_ms = next;
        if let Some(execution) = &started {
            updated.last_run_at = Some(fired_at.clone());
            updated.last_execution_id = Some(execution.clone());
        }
        Ok(updated)
    })?;
    state.store.flush().await?;
    Ok(next)
}

fn previous_still_running(state: &AppState, schedule: &ScheduleRecord) -> Result<bool, StoreError> {
    if schedule.overlap == Overlap::Allow {
        return Ok(false);
    }
    let Some(id) = &schedule.last_execution_id else {
        return Ok(false);
    };
    Ok(state
        .store
        .execution(id)?
        .is_some_and(|e| matches!(e.status, ExecutionStatus::Queued | ExecutionStatus::Running)))
}

/// Queues a run of the schedule's script; the execution's id, or none when
/// the script is gone or archived or the queue refused it (logged).
async fn start(state: &AppState, schedule: &ScheduleRecord) -> Option<String> {
    let script = match state.store.script(&schedule.script_id) {
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
            if let Err(e) = state.store.delete_schedule(&schedule.id) {
                tracing::warn!(schedule = %schedule.id, error = %e, "cannot delete the schedule");
            }
            return None;
        }
        Err(e) => {
            tracing::warn!(schedule = %schedule.id, error = %e, "skipped: cannot read the script");
            return None;
        }
    };
    match crate::api::submit_scheduled(state, script, schedule).await {
        Ok(id) => Some(id),
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

//! `GET /v1/analytics/usage?period=30d`: executions per day and status,
//! duration percentiles, fuel totals and the busiest scripts, computed from
//! the execution records of the period (a range scan: ids are time-ordered).

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorEnvelope;
use super::{ApiError, ApiQuery, AppState};
use crate::store::executions::{ExecutionIndex, ExecutionWalk};
use crate::store::{ExecutionRecord, ExecutionStatus};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

const DAY: Duration = Duration::from_secs(86_400);
const MAX_DAYS: u64 = 366;
const TOP_SCRIPTS: usize = 10;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `Nd` or `Nh`, up to `366d` (default `30d`).
    period: Option<String>,
    /// Only this script's executions.
    script_id: Option<String>,
}

/// Executions of a period, summed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    period: String,
    from: String,
    to: String,
    executions: u64,
    by_status: BTreeMap<&'static str, u64>,
    daily: Vec<Day>,
    duration_ms: Percentiles,
    fuel: Fuel,
    top_scripts: Vec<ScriptUsage>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Day {
    date: String,
    executions: u64,
    by_status: BTreeMap<&'static str, u64>,
}

/// Nearest-rank percentiles of execution durations, in ms.
#[derive(Debug, Default, Serialize, ToSchema)]
struct Percentiles {
    p50: Option<u64>,
    p95: Option<u64>,
    p99: Option<u64>,
    max: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Fuel {
    total: u64,
    per_execution: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ScriptUsage {
    script_id: String,
    /// The script's name now; null once it is deleted.
    name: Option<String>,
    executions: u64,
    failures: u64,
    p50_duration_ms: Option<u64>,
}

/// `30d` or `12h`: a whole number of days (up to a year) or hours.
fn parse_period(period: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::invalid(
            "period",
            "a number of days or hours, like 30d or 12h, up to 366d",
        )
    };
    // By characters: the last byte may be inside a multi-byte character.
    let mut chars = period.chars();
    let unit = chars.next_back().ok_or_else(bad)?;
    let n: u64 = chars.as_str().parse().map_err(|_| bad())?;
    let length = match unit {
        'd' => DAY.saturating_mul(u32::try_from(n).map_err(|_| bad())?),
        'h' => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if n == 0 || length > DAY * MAX_DAYS as u32 {
        return Err(bad());
    }
    Ok(length)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

fn is_failure(status: ExecutionStatus) -> bool {
    matches!(status, ExecutionStatus::Failed | ExecutionStatus::Timeout)
}

#[derive(Default)]
struct Tally {
    executions: u64,
    failures: u64,
    durations: Vec<u64>,
}

/// Executions per day and status, duration percentiles, fuel and the
/// busiest scripts of a period.
#[utoipa::path(get, path = "/v1/analytics/usage", operation_id = "getUsage", tag = "system", params(UsageQuery),
    responses(
        (status = 200, description = "The period's usage", body = Usage),
        (status = 400, description = "Bad period", body = ErrorEnvelope),
    ))]
async fn usage(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<axum::Json<Usage>, ApiError> {
    let period = query.period.unwrap_or_else(|| "30d".into());
    let length = parse_period(&period)?;
    let now = SystemTime::now();
    let from = now.checked_sub(length).unwrap_or(SystemTime::UNIX_EPOCH);
    let since_ms = from
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let from_text = humantime::format_rfc3339_millis(from).to_string();

    let store = state.store.clone();
    let script_filter = query.script_id;
    let (records, scripts) = tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        let index = match &script_filter {
            Some(id) => ExecutionIndex::Script(Some(id.clone())),
            None => ExecutionIndex::All,
        };
        let mut walk = ExecutionWalk::new(index, false);
        walk.created_from_ms = Some(since_ms);
        store.walk_executions(&walk, &mut |e: ExecutionRecord| {
            // Only the fields the summary needs; outputs can be large.
            if e.created_at >= from_text {
                records.push((
                    e.created_at,
                    e.status,
                    e.script_id,
                    e.duration_ms,
                    e.fuel_consumed,
                ));
            }
            ControlFlow::Continue(())
        })?;
        let names: HashMap<String, String> = store
            .scripts()?
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect();
        Ok::<_, crate::store::StoreError>((records, names))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the usage scan failed: {e}")))??;

    // Every day of the period, quiet ones too, so charts have no gaps.
    let date_of = |t: SystemTime| humantime::format_rfc3339(t).to_string()[..10].to_string();
    let today = date_of(now);
    let mut days: BTreeMap<String, Day> = BTreeMap::new();
    let mut day = from;
    while date_of(day) <= today {
        let date = date_of(day);
        days.insert(
            date.clone(),
            Day {
                date,
                executions: 0,
                by_status: BTreeMap::new(),
            },
        );
        day += DAY;
    }
    let mut by_status = BTreeMap::new();
    let mut durations = Vec::new();
    let mut fuel_total = 0u64;
    let mut fueled = 0u64;
    let mut per_script: HashMap<String, Tally> = HashMap::new();
    for (created_at, status, script_id, duration, fuel) in &records {
        *by_status.entry(status.as_str()).or_insert(0) += 1;
        if let Some(day) = days.get_mut(created_at.get(..10).unwrap_or_default()) {
            day.executions += 1;
            *day.by_status.entry(status.as_str()).or_insert(0) += 1;
        }
        if let Some(ms) = duration {
            durations.push(*ms);
        }
        if let Some(fuel) = fuel {
            fuel_total = fuel_total.saturating_add(*fuel);
            fueled += 1;
        }
        if let Some(id) = script_id {
            let tally = per_script.entry(id.clone()).or_default();
            tally.executions += 1;
            tally.failures += u64::from(is_failure(*status));
            tally.durations.extend(*duration);
        }
    }
    durations.sort_unstable();
    let mut top: Vec<(String, Tally)> = per_script.into_iter().collect();
    top.sort_by(|a, b| {
        b.1.executions
            .cmp(&a.1.executions)
            .then_with(|| a.0.cmp(&b.0))
    });
    let top_scripts = top
        .into_iter()
        .take(TOP_SCRIPTS)
        .map(|(id, mut tally)| {
            tally.durations.sort_unstable();
            ScriptUsage {
                name: scripts.get(&id).cloned(),
                script_id: id,
                executions: tally.executions,
                failures: tally.failures,
                p50_duration_ms: percentile(&tally.durations, 0.50),
            }
        })
        .collect();
    Ok(axum::Json(Usage {
        period,
        from: humantime::format_rfc3339_millis(from).to_string(),
        to: humantime::format_rfc3339_millis(now).to_string(),
        executions: records.len() as u64,
        by_status,
        daily: days.into_values().collect(),
        duration_ms: Percentiles {
            p50: percentile(&durations, 0.50),
            p95: percentile(&durations, 0.95),
            p99: percentile(&durations, 0.99),
            max: durations.last().copied(),
        },
        fuel: Fuel {
            total: fuel_total,
            per_execution: fuel_total.checked_div(fueled),
        },
        top_scripts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_days_or_hours_within_a_year() {
        assert_eq!(parse_period("30d").unwrap(), DAY * 30);
        assert_eq!(parse_period("12h").unwrap(), Duration::from_secs(12 * 3600));
        for bad in [
            "",
            "d",
            "0d",
            "367d",
            "30",
            "30w",
            "-1d",
            "1.5d",
            "99999999999999999999d",
            "1\u{e9}",
            "\u{e9}",
            "1d\u{e9}",
            "\u{1F600}d",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.95), Some(95));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}

//! `GET /v1/analytics/usage?period=30d`: executions per day and status,
//! duration percentiles, fuel totals and the busiest scripts, summed from
//! the hourly usage rollups of the period (`store/usage.rs`; a row per hour
//! and script, however many executions) and the executions not yet ended.

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
use crate::store::executions::{ExecutionIndex, ExecutionWalk, ID_TIME_SLACK_MS};
use crate::store::usage::{UsageRollup, hour_of};
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

/// Nearest-rank percentiles of execution durations, in ms, from the
/// rollups' histograms: exact up to 15 ms, within 6.25 % (below) above.
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

    // Rollups are by hour: the period starts at the top of its first one.
    let from_text = crate::time_of_ms(since_ms - since_ms % 3_600_000);
    let to_text = humantime::format_rfc3339_millis(now).to_string();
    let store = state.store.clone();
    let script_filter = query.script_id;
    let (from_hour, to_hour) = (hour_of(&from_text).to_owned(), hour_of(&to_text).to_owned());
    let first_created = from_text.clone();
    let (rows, live, scripts) = tokio::task::spawn_blocking(move || {
        let rows = store.usage(&from_hour, &to_hour, script_filter.as_deref())?;
        // What has not ended is in no rollup; it is queued or running, so
        // bounded by the queue and the workers.
        let mut live = Vec::new();
        for status in [ExecutionStatus::Queued, ExecutionStatus::Running] {
            let mut walk = ExecutionWalk::new(ExecutionIndex::Status(status), false);
            walk.created_from_ms = Some(since_ms.saturating_sub(ID_TIME_SLACK_MS));
            store.walk_executions(&walk, &mut |e: ExecutionRecord| {
                let wanted = script_filter.is_none() || e.script_id == script_filter;
                if wanted && e.created_at >= first_created {
                    live.push((e.created_at, e.status));
                }
                ControlFlow::Continue(())
            })?;
        }
        let names: HashMap<String, String> = store
            .scripts()?
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect();
        Ok::<_, crate::store::StoreError>((rows, live, names))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the usage summary failed: {e}")))??;

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
    let mut total = UsageRollup::default();
    let mut per_script: HashMap<String, UsageRollup> = HashMap::new();
    for row in &rows {
        total.merge(&row.usage);
        if let Some(day) = days.get_mut(row.hour.get(..10).unwrap_or_default()) {
            for (status, n) in &row.usage.by_status {
                day.executions += n;
                *day.by_status.entry(status.as_str()).or_insert(0) += n;
            }
        }
        if let Some(id) = &row.script_id {
            per_script.entry(id.clone()).or_default().merge(&row.usage);
        }
    }
    for (created_at, status) in &live {
        *total.by_status.entry(*status).or_default() += 1;
        if let Some(day) = days.get_mut(created_at.get(..10).unwrap_or_default()) {
            day.executions += 1;
            *day.by_status.entry(status.as_str()).or_insert(0) += 1;
        }
    }
    let mut top: Vec<(String, UsageRollup)> = per_script.into_iter().collect();
    top.sort_by(|a, b| {
        b.1.executions()
            .cmp(&a.1.executions())
            .then_with(|| a.0.cmp(&b.0))
    });
    let top_scripts = top
        .into_iter()
        .take(TOP_SCRIPTS)
        .map(|(id, usage)| ScriptUsage {
            name: scripts.get(&id).cloned(),
            script_id: id,
            executions: usage.executions(),
            failures: usage.failures(),
            p50_duration_ms: usage.durations.percentile(0.50),
        })
        .collect();
    let durations = &total.durations;
    Ok(axum::Json(Usage {
        period,
        from: from_text,
        to: to_text,
        executions: total.executions(),
        by_status: total
            .by_status
            .iter()
            .map(|(status, n)| (status.as_str(), *n))
            .collect(),
        daily: days.into_values().collect(),
        duration_ms: Percentiles {
            p50: durations.percentile(0.50),
            p95: durations.percentile(0.95),
            p99: durations.percentile(0.99),
            max: durations.max(),
        },
        fuel: Fuel {
            total: total.fuel_total,
            per_execution: total.fuel_total.checked_div(total.fueled),
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
}

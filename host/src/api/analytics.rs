//! `GET /v1/analytics/usage?period=30d`: executions per day and status,
//! duration percentiles, fuel totals and the busiest scripts, summed from
//! the hourly usage rollups of the period (`store/usage.rs`; a row per hour
//! and script, however many executions) and the executions not yet ended.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorEnvelope;
use super::{ApiError, ApiQuery, AppState};
use crate::store::executions::{ExecutionIndex, ExecutionWalk, ID_TIME_SLACK_MS};
use crate::store::orgs::InOrg as _;
use crate::store::usage::{Grain, Scope, UsageRollup};
use crate::store::{ExecutionRecord, ExecutionStatus};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

const DAY_MS: u64 = 86_400_000;
const MAX_DAYS: u64 = 366;
const TOP_SCRIPTS: usize = 10;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `Nd` or `Nh`, up to `366d` or `8784h` (default `30d`).
    #[param(
        pattern = r"^((36[0-6]|3[0-5][0-9]|[12][0-9]{2}|[1-9][0-9]?)d|(878[0-4]|87[0-7][0-9]|8[0-6][0-9]{2}|[1-7][0-9]{3}|[1-9][0-9]{0,2})h)$"
    )]
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

/// `30d` or `12h`: a whole number of days (up to a year) or hours, and
/// the grain of the rollups that answer it.
fn parse_period(period: &str) -> Result<(u64, Grain), ApiError> {
    let bad = || {
        ApiError::invalid(
            "period",
            "a number of days or hours, like 30d or 12h, up to 366d",
        )
    };
    // By characters: the last byte may be inside a multi-byte character.
    let mut chars = period.chars();
    let unit = chars.next_back().ok_or_else(bad)?;
    // Digits only, no leading zero (`parse` would take `+5` and `05`).
    let digits = chars.as_str();
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let (grain, max) = match unit {
        'd' => (Grain::Day, MAX_DAYS),
        'h' => (Grain::Hour, MAX_DAYS * 24),
        _ => return Err(bad()),
    };
    if n == 0 || n > max {
        return Err(bad());
    }
    Ok((n, grain))
}

/// Executions per day and status, duration percentiles, fuel and the
/// busiest scripts of a period: `Nd` is today and the N-1 days before it
/// (UTC), `Nh` this hour and the N-1 before it.
#[utoipa::path(get, path = "/v1/analytics/usage", operation_id = "getUsage", tag = "system", params(UsageQuery),
    responses(
        (status = 200, description = "The period's usage", body = Usage),
        (status = 400, description = "Bad period", body = ErrorEnvelope),
    ))]
async fn usage(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<axum::Json<Usage>, ApiError> {
    let period = query.period.unwrap_or_else(|| "30d".into());
    let (buckets, grain) = parse_period(&period)?;
    let now_ms = crate::now_ms();
    let from_ms = (now_ms - now_ms % grain.millis())
        .saturating_sub((buckets - 1).saturating_mul(grain.millis()));
    let from_text = crate::time_of_ms(from_ms);
    let to_text = crate::time_of_ms(now_ms);

    let store = state.store.clone();
    let script_filter = query.script_id;
    let org = principal.org;
    let first_created = from_text.clone();
    // Off the async threads: the rollups and the live executions are read
    // in one pass each.
    let runtime = tokio::runtime::Handle::current();
    let (totals, per_script, live, scripts) = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            // One script's rows are both its total and its line among the busiest.
            let (totals, per_script) = match &script_filter {
                Some(id) => (
                    store
                        .usage(grain, from_ms, now_ms, Scope::Script(&org, Some(id)))
                        .await?,
                    None,
                ),
                None => (
                    store
                        .usage(grain, from_ms, now_ms, Scope::Total(&org))
                        .await?,
                    Some(
                        store
                            .usage(grain, from_ms, now_ms, Scope::PerScript(&org))
                            .await?,
                    ),
                ),
            };
            // What has not ended is in no rollup; it is queued or running, so
            // bounded by the queue and the workers.
            let mut live = Vec::new();
            for status in [ExecutionStatus::Queued, ExecutionStatus::Running] {
                let mut walk = ExecutionWalk::new(ExecutionIndex::Status(status), false);
                walk.created_from_ms = Some(from_ms.saturating_sub(ID_TIME_SLACK_MS));
                store
                    .walk_executions(&walk, &mut |e: ExecutionRecord| {
                        let wanted = e.org() == org
                            && (script_filter.is_none() || e.script_id == script_filter);
                        if wanted && e.created_at >= first_created {
                            live.push((e.created_at, e.status));
                        }
                        ControlFlow::Continue(())
                    })
                    .await?;
            }
            let names: HashMap<String, String> = store
                .scripts()
                .await?
                .into_iter()
                .filter(|s| s.org() == org)
                .map(|s| (s.id, s.name))
                .collect();
            Ok::<_, crate::store::StoreError>((totals, per_script, live, names))
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the usage summary failed: {e}")))??;

    // Every day of the period, quiet ones too, so charts have no gaps.
    let mut days: BTreeMap<String, Day> = BTreeMap::new();
    let mut day_ms = from_ms - from_ms % DAY_MS;
    while day_ms <= now_ms {
        let date = Grain::Day.bucket_at(day_ms);
        let day = Day {
            date: date.clone(),
            executions: 0,
            by_status: BTreeMap::new(),
        };
        days.insert(date, day);
        day_ms += DAY_MS;
    }
    let mut total = UsageRollup::default();
    let mut count_day = |date: &str, status: ExecutionStatus, n: u64| {
        if let Some(day) = days.get_mut(date) {
            day.executions += n;
            *day.by_status.entry(status.as_str()).or_insert(0) += n;
        }
    };
    for row in &totals {
        total.merge(&row.usage);
        for (status, n) in &row.usage.by_status {
            count_day(Grain::Day.bucket(&row.bucket), *status, *n);
        }
    }
    for (created_at, status) in &live {
        *total.by_status.entry(*status).or_default() += 1;
        count_day(Grain::Day.bucket(created_at), *status, 1);
    }
    let mut by_script: HashMap<String, UsageRollup> = HashMap::new();
    for row in per_script.as_ref().unwrap_or(&totals) {
        if let Some(id) = &row.script_id {
            by_script.entry(id.clone()).or_default().merge(&row.usage);
        }
    }
    let mut top: Vec<(String, UsageRollup)> = by_script.into_iter().collect();
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
        assert_eq!(parse_period("30d").unwrap(), (30, Grain::Day));
        assert_eq!(parse_period("12h").unwrap(), (12, Grain::Hour));
        assert_eq!(parse_period("8784h").unwrap(), (8784, Grain::Hour));
        for bad in [
            "",
            "d",
            "0d",
            "367d",
            "8785h",
            "30",
            "30w",
            "-1d",
            "1.5d",
            "99999999999999999999d",
            "1\u{e9}",
            "\u{e9}",
            "1d\u{e9}",
            "\u{1F600}d",
            "+5d",
            "05d",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

    /// The pattern the document gives `period` takes exactly what the
    /// server takes.
    #[test]
    fn the_documented_pattern_is_the_parser_s_rule() {
        let document = crate::api::rendered(crate::api::routes_and_document().1);
        let parameters = document["paths"]["/v1/analytics/usage"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let period = parameters.iter().find(|p| p["name"] == "period").unwrap();
        let pattern = jsonschema::draft202012::new(&period["schema"]).unwrap();
        let mut asked: Vec<String> = ["", "d", "+5d", "05d", "1.5d", "30w", "\u{e9}d"]
            .map(String::from)
            .to_vec();
        for n in 0..=9_000 {
            asked.push(format!("{n}d"));
            asked.push(format!("{n}h"));
        }
        for period in asked {
            assert_eq!(
                pattern.is_valid(&serde_json::json!(period)),
                parse_period(&period).is_ok(),
                "{period}"
            );
        }
    }
}

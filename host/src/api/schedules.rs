//! `/v1/schedules`: cron schedules that run a stored script (API.md
//! "Schedules"). The scheduler itself is `crate::schedules`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::error::ErrorEnvelope;
use super::owners::{audited, changed, creator_or_admin, fields_given};
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, etag};
use crate::auth::Principal;
use crate::schedules::{Cron, CronError, format_ms};
use crate::store::orgs::{InOrg as _, org_field};
use crate::store::{ExecutionStatus, Overlap, ScheduleRecord, StoreError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(preview))
        .routes(routes!(read, update, delete))
}

const MAX_NAME_CHARS: usize = 128;
const MAX_CRON_CHARS: usize = 256;
/// IANA names run to about 30 characters.
const MAX_TIMEZONE_CHARS: usize = 64;
/// Parameters are copied into every run's execution record.
const MAX_PARAMETERS_BYTES: usize = 64 << 10;

/// A cron schedule and what its last run did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Schedule)]
pub struct ScheduleView {
    id: String,
    name: String,
    script_id: String,
    cron: String,
    timezone: String,
    #[schema(value_type = Object)]
    parameters: serde_json::Value,
    active: bool,
    overlap: Overlap,
    /// When it runs next (RFC 3339 UTC); null while paused.
    next_run_at: Option<String>,
    /// The next five times it runs (RFC 3339 UTC), the first being
    /// `next_run_at`; empty while paused.
    next_runs: Vec<String>,
    last_run_at: Option<String>,
    last_execution_id: Option<String>,
    /// The status of the last run's execution.
    last_status: Option<ExecutionStatus>,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
}

async fn view(state: &AppState, record: ScheduleRecord) -> Result<ScheduleView, ApiError> {
    let last_status = match &record.last_execution_id {
        Some(id) => state.store.execution(id).await?.map(|e| e.status),
        None => None,
    };
    Ok(ScheduleView {
        next_run_at: record.next_run_ms.and_then(format_ms),
        next_runs: upcoming(&record),
        id: record.id,
        name: record.name,
        script_id: record.script_id,
        cron: record.cron,
        timezone: record.timezone,
        parameters: record.parameters,
        active: record.active,
        overlap: record.overlap,
        last_run_at: record.last_run_at,
        last_execution_id: record.last_execution_id,
        last_status,
        created_by: record.created_by,
        created_at: record.created_at,
        updated_at: record.updated_at,
    })
}

/// How many fire times a schedule's view lists.
const PREVIEW_RUNS: usize = 5;

/// The next fire times from `first` on (`PREVIEW_RUNS` of them).
fn fire_times(cron: &Cron, first: Option<u64>) -> Vec<String> {
    std::iter::successors(first, |&at| cron.next_after(at))
        .take(PREVIEW_RUNS)
        .filter_map(format_ms)
        .collect()
}

/// A schedule's next fire times, from its stored next run on.
fn upcoming(record: &ScheduleRecord) -> Vec<String> {
    match Cron::parse(&record.cron, &record.timezone) {
        Ok(cron) => fire_times(&cron, record.next_run_ms),
        Err(_) => Vec::new(),
    }
}

/// A new schedule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// 1–128 characters, not all blank.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    name: String,
    /// The script's id or name.
    script_id: String,
    /// 5 fields, 6 (seconds first), or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`.
    #[schema(example = "*/5 * * * *", min_length = 1, max_length = 256)]
    cron: String,
    /// IANA time zone the cron is read in (default UTC).
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
    /// A JSON object: the script's `main` argument.
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
    /// Default true; false creates it paused.
    active: Option<bool>,
    /// Default `skip`: no new run while the previous one is queued or running.
    overlap: Option<Overlap>,
}

/// Changes to a schedule; absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    name: Option<String>,
    script_id: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    cron: Option<String>,
    timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
    /// false pauses it; true resumes it from now (missed times are not run).
    active: Option<bool>,
    overlap: Option<Overlap>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_parameters(parameters: &serde_json::Value) -> Result<(), ApiError> {
    if !parameters.is_object() {
        return Err(ApiError::invalid("parameters", "must be a JSON object"));
    }
    let size = serde_json::to_vec(parameters).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(ApiError::invalid(
            "parameters",
            format!("must encode to at most {MAX_PARAMETERS_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

/// A cron and zone that will run: refused when either is malformed, or when
/// the cron matches no future time (`0 0 30 2 *`).
fn parse_cron(cron: &str, timezone: &str) -> Result<Cron, ApiError> {
    if cron.chars().count() > MAX_CRON_CHARS {
        return Err(ApiError::invalid(
            "cron",
            format!("must be at most {MAX_CRON_CHARS} characters"),
        ));
    }
    if timezone.chars().count() > MAX_TIMEZONE_CHARS {
        return Err(ApiError::invalid(
            "timezone",
            format!("must be at most {MAX_TIMEZONE_CHARS} characters"),
        ));
    }
    let parsed = Cron::parse(cron, timezone).map_err(|e| match e {
        CronError::Cron(message) => ApiError::invalid("cron", message),
        CronError::Zone(message) => ApiError::invalid("timezone", message),
    })?;
    if parsed.next_after(crate::now_ms()).is_none() {
        return Err(ApiError::invalid(
            "cron",
            format!("{cron:?} matches no future time"),
        ));
    }
    Ok(parsed)
}

/// The stored script's id for an id or name: a missing one is a 404 (as
/// the script's own routes answer), an HTTP function (it answers requests,
/// it is not run) a bad field.
async fn script_id(state: &AppState, org: &str, id_or_name: &str) -> Result<String, ApiError> {
    let script = state
        .store
        .script(org, id_or_name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("script_id: no script {id_or_name:?}")))?;
    if script.kind == crate::store::ScriptKind::Http {
        return Err(ApiError::invalid(
            "script_id",
            format!(
                "{:?} is an HTTP function; it answers requests at /fn/{}/ and is not scheduled",
                script.name, script.name
            ),
        ));
    }
    Ok(script.id)
}

/// Create a schedule; its first run is the cron's first time after now.
#[utoipa::path(post, path = "/v1/schedules", operation_id = "createSchedule", tag = "schedules",
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "Created", body = ScheduleView, headers(("Location" = String))),
        (status = 400, description = "A field is invalid: a bad cron or time zone, or an HTTP function", body = ErrorEnvelope),
        (status = 404, description = "`script_id` names no script", body = ErrorEnvelope),
        (status = 409, description = "The caller holds `limits.schedules_per_user` schedules", body = ErrorEnvelope),
    ))]
async fn create(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateSchedule>,
) -> Result<Response, ApiError> {
    check_name(&body.name)?;
    let timezone = body.timezone.unwrap_or_else(|| "UTC".into());
    let cron = parse_cron(&body.cron, &timezone)?;
    let parameters = body
        .parameters
        .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
    check_parameters(&parameters)?;
    let active = body.active.unwrap_or(true);
    let now = crate::now();
    let record = ScheduleRecord {
        id: uuid::Uuid::now_v7().to_string(),
        org: org_field(&principal.org),
        name: body.name,
        script_id: script_id(&state, &principal.org, &body.script_id).await?,
        cron: body.cron,
        timezone,
        parameters,
        active,
        overlap: body.overlap.unwrap_or_default(),
        created_at: now.clone(),
        updated_at: now,
        created_by: principal.user_id(),
        next_run_ms: if active {
            cron.next_after(crate::now_ms())
        } else {
            None
        },
        last_run_at: None,
        last_execution_id: None,
    };
    super::create_within_cap(
        record.created_by.as_deref(),
        state.config.limits.schedules_per_user,
        "limits.schedules_per_user",
        "schedules",
        async |owner| {
            Ok(super::count_by(state.store.schedules().await?, |s| {
                s.created_by.as_deref() == Some(owner)
            }))
        },
        async || {
            state
                .quotas
                .allow_more(&principal.org, crate::quotas::Quota::Schedules, 1)
                .await?;
            Ok(state.store.create_schedule(&record).await?)
        },
    )
    .await?;
    state.store.flush().await?;
    changed(
        &state,
        &principal,
        &ip,
        "schedule.created",
        format!("schedule:{}", record.id),
        format!("{}, of script:{}", record.name, record.script_id),
    );
    state.schedules_changed.notify_one();
    let location = format!("/v1/schedules/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view(&state, record).await?),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only active (true) or only paused (false) schedules.
    active: Option<bool>,
    page: Option<usize>,
    size: Option<usize>,
}

/// A cron and zone to try before saving them.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    /// As a schedule's `cron`.
    cron: String,
    /// IANA time zone (default UTC).
    timezone: Option<String>,
}

/// When a cron would fire.
#[derive(Debug, Serialize, ToSchema)]
struct CronPreview {
    cron: String,
    timezone: String,
    /// Its next five times after now (RFC 3339 UTC).
    next_runs: Vec<String>,
}

/// The next five times a cron fires in a time zone, as a schedule with them
/// would run; a bad cron or zone is the 400 that creating it would get.
#[utoipa::path(get, path = "/v1/schedules/preview", operation_id = "previewSchedule", tag = "schedules",
    params(PreviewQuery),
    responses(
        (status = 200, description = "Its next times", body = CronPreview),
        (status = 400, description = "A bad cron or time zone; `details` name which", body = ErrorEnvelope),
    ))]
async fn preview(
    ApiQuery(query): ApiQuery<PreviewQuery>,
) -> Result<axum::Json<CronPreview>, ApiError> {
    let timezone = query.timezone.unwrap_or_else(|| "UTC".into());
    let cron = parse_cron(&query.cron, &timezone)?;
    Ok(axum::Json(CronPreview {
        next_runs: fire_times(&cron, cron.next_after(crate::now_ms())),
        cron: query.cron,
        timezone,
    }))
}

/// List schedules, oldest first.
#[utoipa::path(get, path = "/v1/schedules", operation_id = "listSchedules", tag = "schedules",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of schedules", body = Listing<ScheduleView>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<Listing<ScheduleView>>, ApiError> {
    let page = Page::new(PageQuery {
        page: query.page,
        size: query.size,
    })?;
    let matching: Vec<_> = state
        .store
        .schedules()
        .await?
        .into_iter()
        .filter(|s| s.org() == principal.org)
        .filter(|s| query.active.is_none_or(|active| s.active == active))
        .collect();
    let total = matching.len();
    let mut data = Vec::with_capacity(page.size.min(total));
    for record in matching.into_iter().skip(page.skip()).take(page.size) {
        data.push(view(&state, record).await?);
    }
    Ok(axum::Json(page.envelope(data, total)))
}

/// The schedule `id` of organization `org`: another's is no schedule at all.
async fn find(state: &AppState, org: &str, id: &str) -> Result<ScheduleRecord, ApiError> {
    state
        .store
        .schedule(id)
        .await?
        .filter(|record| record.org() == org)
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {id:?}")))
}

/// Read a schedule.
#[utoipa::path(get, path = "/v1/schedules/{id}", operation_id = "getSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView,
            headers(("ETag" = String, description = "Strong ETag of this representation"))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 404, description = "No such schedule", body = ErrorEnvelope),
    ))]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = find(&state, &principal.org, &id).await?;
    etag::json(&headers, &view(&state, record).await?)
}

/// `If-Match` against the schedule as the client last saw it; no header, no
/// precondition (and no rendering to find the current tag).
async fn check_if_match(
    state: &AppState,
    headers: &HeaderMap,
    record: &ScheduleRecord,
) -> Result<(), ApiError> {
    if !headers.contains_key(header::IF_MATCH) {
        return Ok(());
    }
    let tag = etag::of_json(&view(state, record.clone()).await?)?;
    etag::check_if_match(headers, &tag)
}

/// Change a schedule: pause (`active: false`), resume, or change its cron,
/// zone, script, parameters or overlap policy. Its next run is recomputed
/// from now.
#[utoipa::path(put, path = "/v1/schedules/{id}", operation_id = "updateSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    request_body = UpdateSchedule,
    responses(
        (status = 200, description = "The updated schedule", body = ScheduleView),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "The caller neither made the schedule nor is an admin", body = ErrorEnvelope),
        (status = 404, description = "No such schedule, or `script_id` names no script", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
async fn update(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateSchedule>,
) -> Result<Response, ApiError> {
    let seen = find(&state, &principal.org, &id).await?;
    // Its creator never changes, so the record read answers for the write.
    creator_or_admin(&principal, seen.created_by.as_deref(), "schedule").map_err(|e| {
        audited(
            &state,
            &principal,
            &ip,
            "update",
            format!("schedule:{id}"),
            e.into(),
        )
    })?;
    check_if_match(&state, &headers, &seen).await?;
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(parameters) = &body.parameters {
        check_parameters(parameters)?;
    }
    // Validate what the schedule will be; the write below re-derives it from
    // the record it replaces, so a concurrent change is not undone.
    parse_cron(
        body.cron.as_deref().unwrap_or(&seen.cron),
        body.timezone.as_deref().unwrap_or(&seen.timezone),
    )?;
    let script = match &body.script_id {
        Some(id_or_name) => Some(script_id(&state, &principal.org, id_or_name).await?),
        None => None,
    };
    let now = crate::now();
    let now_ms = crate::now_ms();
    let checked = headers.contains_key(header::IF_MATCH).then_some(&seen);
    let updated = state
        .store
        .update_schedule(&id, &|current| {
            etag::unchanged(checked, current, "schedule")?;
            let mut record = current.clone();
            if let Some(name) = &body.name {
                record.name.clone_from(name);
            }
            if let Some(script) = &script {
                record.script_id.clone_from(script);
            }
            if let Some(parameters) = &body.parameters {
                record.parameters.clone_from(parameters);
            }
            if let Some(active) = body.active {
                record.active = active;
            }
            if let Some(overlap) = body.overlap {
                record.overlap = overlap;
            }
            if let Some(cron) = &body.cron {
                record.cron.clone_from(cron);
            }
            if let Some(timezone) = &body.timezone {
                record.timezone.clone_from(timezone);
            }
            let cron = Cron::parse(&record.cron, &record.timezone)
                .map_err(|e| StoreError::Refused(e.to_string()))?;
            record.next_run_ms = if record.active {
                cron.next_after(now_ms)
            } else {
                None
            };
            record.updated_at.clone_from(&now);
            Ok(record)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {id:?}")))?;
    state.store.flush().await?;
    let given = fields_given(&[
        ("name", body.name.is_some()),
        ("script", body.script_id.is_some()),
        ("parameters", body.parameters.is_some()),
        ("active", body.active.is_some()),
        ("overlap", body.overlap.is_some()),
        ("cron", body.cron.is_some()),
        ("timezone", body.timezone.is_some()),
    ]);
    changed(
        &state,
        &principal,
        &ip,
        "schedule.updated",
        format!("schedule:{id}"),
        given,
    );
    state.schedules_changed.notify_one();
    etag::json(&HeaderMap::new(), &view(&state, updated).await?)
}

/// Delete a schedule. Its past executions are kept.
#[utoipa::path(delete, path = "/v1/schedules/{id}", operation_id = "deleteSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller neither made the schedule nor is an admin", body = ErrorEnvelope),
        (status = 404, description = "No such schedule", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let found = find(&state, &principal.org, &id).await?;
    let name = found.name.clone();
    creator_or_admin(&principal, found.created_by.as_deref(), "schedule").map_err(|e| {
        audited(
            &state,
            &principal,
            &ip,
            "delete",
            format!("schedule:{id}"),
            e.into(),
        )
    })?;
    // The schedule the client's ETag was checked against is the one
    // deleted, or nothing is: the check is repeated inside the delete.
    let seen = if headers.contains_key(header::IF_MATCH) {
        check_if_match(&state, &headers, &found).await?;
        Some(found)
    } else {
        None
    };
    state
        .store
        .delete_schedule(&id, &|current| {
            etag::unchanged(seen.as_ref(), current, "schedule")
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {id:?}")))?;
    state.store.flush().await?;
    changed(
        &state,
        &principal,
        &ip,
        "schedule.deleted",
        format!("schedule:{id}"),
        name,
    );
    state.schedules_changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

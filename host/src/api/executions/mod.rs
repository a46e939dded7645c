//! Executions: run a stored script (`submit.rs`: queued, or waited for),
//! read, list and cancel them, and follow one live (`events.rs`).

mod events;
mod submit;

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorEnvelope;
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::jobs::Cancelled;
use crate::store::{ExecutionRecord, ExecutionStatus, Trigger};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit::execute))
        .routes(routes!(submit::execute_ad_hoc))
        .routes(routes!(list))
        .routes(routes!(read))
        .routes(routes!(cancel))
        .routes(routes!(events::events))
}

/// One run of a script or of ad-hoc code.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Execution)]
pub struct ExecutionView {
    id: String,
    script_id: Option<String>,
    script_version: Option<u32>,
    #[schema(value_type = String, example = "javascript")]
    language: &'static str,
    status: ExecutionStatus,
    trigger: Trigger,
    #[schema(value_type = Object)]
    parameters: serde_json::Value,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
    /// The JSON the script returned.
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    error: Option<crate::store::ExecutionError>,
    fuel_consumed: Option<u64>,
    peak_memory_bytes: Option<u64>,
    created_by: Option<String>,
}

impl From<ExecutionRecord> for ExecutionView {
    fn from(e: ExecutionRecord) -> Self {
        Self {
            language: e.language.as_str(),
            id: e.id,
            script_id: e.script_id,
            script_version: e.script_version,
            status: e.status,
            trigger: e.trigger,
            parameters: e.parameters,
            created_at: e.created_at,
            started_at: e.started_at,
            completed_at: e.completed_at,
            duration_ms: e.duration_ms,
            exit_code: e.exit_code,
            result: e.result,
            stdout: e.stdout,
            stderr: e.stderr,
            stdout_truncated: e.stdout_truncated,
            stderr_truncated: e.stderr_truncated,
            error: e.error,
            fuel_consumed: e.fuel_consumed,
            peak_memory_bytes: e.peak_memory_bytes,
            created_by: e.created_by,
        }
    }
}

/// Read an execution.
#[utoipa::path(get, path = "/v1/executions/{id}", operation_id = "getExecution", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionView, headers(("ETag" = String))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 404, description = "No such execution", body = ErrorEnvelope),
    ))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = state
        .store
        .execution(&id)?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id:?}")))?;
    durable_before_reporting(&state, [&record]).await?;
    crate::api::etag::json(&headers, &ExecutionView::from(record))
}

/// Workers do not flush the `running` state (nor waited requests their
/// `queued` one), and flush a final record while they run the next
/// execution: whoever reports such a record flushes first, so a client is
/// never told of a state a crash could take back.
async fn durable_before_reporting<'a>(
    state: &AppState,
    records: impl IntoIterator<Item = &'a ExecutionRecord>,
) -> Result<(), ApiError> {
    if records
        .into_iter()
        .any(|r| !events::is_final(r) || state.jobs.is_settling(&r.id))
    {
        state.store.flush().await?;
    }
    Ok(())
}

/// How long a cancel request waits for the worker to record the stop; the
/// sandbox stops a guest within milliseconds, so this is only a safety net.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Cancel a queued or running execution; a running guest stops within milliseconds.
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", operation_id = "cancelExecution", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Cancelled", body = ExecutionView),
        (status = 404, description = "No such execution", body = ErrorEnvelope),
        (status = 409, description = "It had already finished", body = ErrorEnvelope),
    ))]
async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<ExecutionView>, ApiError> {
    let cancelled = state
        .jobs
        .cancel(state.store.as_ref(), &id)?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id:?}")))?;
    match cancelled {
        Cancelled::WhileQueued(record) => {
            state.store.flush().await?;
            Ok(axum::Json((*record).into()))
        }
        Cancelled::WhileRunning(mut done) => {
            let settled =
                tokio::time::timeout(CANCEL_WAIT, done.wait_for(crate::jobs::Settled::is_settled))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|settled| settled.clone());
            if let Some(crate::jobs::Settled::Lost(e)) = settled {
                return Err(ApiError::Internal(format!(
                    "execution {id} stopped but its record could not be saved: {e}"
                )));
            }
            let record = state
                .store
                .execution(&id)?
                .ok_or_else(|| ApiError::Internal("a cancelled execution vanished".into()))?;
            durable_before_reporting(&state, [&record]).await?;
            Ok(axum::Json(record.into()))
        }
        Cancelled::AlreadyFinal => {
            if state.jobs.is_settling(&id) {
                state.store.flush().await?;
            }
            Err(ApiError::Conflict(format!(
                "execution {id} has already finished"
            )))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page number, from 1.
    page: Option<usize>,
    /// Page size, 1..=100 (default 20).
    size: Option<usize>,
    script_id: Option<String>,
    status: Option<ExecutionStatus>,
    trigger: Option<Trigger>,
    /// RFC 3339.
    created_after: Option<String>,
    /// RFC 3339.
    created_before: Option<String>,
}

/// An RFC 3339 time in the stored form (UTC, milliseconds), so stored
/// timestamps compare as strings.
fn normalized_time(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    value
        .map(|v| {
            humantime::parse_rfc3339_weak(&v)
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 time: {e}")))
        })
        .transpose()
}

/// List executions, newest first.
#[utoipa::path(get, path = "/v1/executions", operation_id = "listExecutions", tag = "executions", params(ListQuery),
    responses(
        (status = 200, description = "A page of executions", body = Listing<ExecutionView>),
        (status = 400, description = "Bad query parameter", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<Listing<ExecutionView>>, ApiError> {
    let page = Page::new(PageQuery {
        page: query.page,
        size: query.size,
    })?;
    let after = normalized_time("created_after", query.created_after)?;
    let before = normalized_time("created_before", query.created_before)?;
    let keep = |e: &ExecutionRecord| {
        query
            .script_id
            .as_ref()
            .is_none_or(|id| e.script_id.as_ref() == Some(id))
            && query.status.is_none_or(|s| e.status == s)
            && query.trigger.is_none_or(|t| e.trigger == t)
            && after.as_ref().is_none_or(|t| e.created_at > *t)
            && before.as_ref().is_none_or(|t| e.created_at < *t)
    };
    let (records, total) = state.store.executions_page(&keep, page.skip(), page.size)?;
    durable_before_reporting(&state, &records).await?;
    Ok(axum::Json(page.envelope(
        records.into_iter().map(ExecutionView::from).collect(),
        total,
    )))
}

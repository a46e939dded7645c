//! Executions: run a stored script (`submit.rs`: queued, or waited for),
//! read, list and cancel them, and follow one live (`events.rs`, and
//! `socket.rs` with an interactive execution's stdin).

mod events;
mod list;
mod socket;

pub(crate) use list::{Cursor, MAX_SKIP};
mod submit;

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::audit::{self, Entry};
use super::error::ErrorEnvelope;
use super::pagination::Listing;
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::auth::Principal;
use crate::jobs::Cancelled;
use crate::store::executions::Removal;
use crate::store::orgs::InOrg as _;
use crate::store::{ExecutionRecord, ExecutionStatus, Trigger};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit::execute))
        .routes(routes!(submit::execute_ad_hoc))
        .routes(routes!(list, delete_many))
        .routes(routes!(read, delete))
        .routes(routes!(cancel))
        .routes(routes!(events::events))
        .routes(routes!(socket::socket))
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
    /// Started with `interactive: true`: its stdin is what a socket on
    /// `/v1/executions/{id}/ws` sends while it runs.
    interactive: bool,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    duration_ms: Option<u64>,
    /// How long the run waited for its code to be compiled (or read from
    /// the compile cache) before it started, not counted in `duration_ms`:
    /// absent when its code was at hand.
    compile_wait_ms: Option<u64>,
    exit_code: Option<i32>,
    /// The JSON the script returned: any value (`42`, `"ok"`, `[1]`,
    /// an object), or null.
    result: Option<serde_json::Value>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    error: Option<crate::store::ExecutionError>,
    /// What the run was given: the request's, else the script's, else the
    /// server's defaults, each capped at the server's maximum (`clamped`
    /// names those that were).
    limits: RunLimits,
    fuel_consumed: Option<u64>,
    peak_memory_bytes: Option<u64>,
    created_by: Option<String>,
    /// The outbound HTTP requests the run made, in order (method, host,
    /// path without the query, status, bytes received, milliseconds, or the
    /// error that stopped it).
    http_requests: Vec<crate::store::OutboundRequest>,
}

/// The limits one execution runs under.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunLimits {
    timeout_ms: u64,
    memory_mb: u64,
    /// Fuel units; absent when only the deadline bounds the run.
    fuel: Option<u64>,
    /// The limits asked for above the server's maxima, each with what was
    /// asked and the maximum the run got instead; empty when none was.
    clamped: Vec<crate::store::ClampedLimit>,
}

impl From<ExecutionRecord> for ExecutionView {
    fn from(e: ExecutionRecord) -> Self {
        Self {
            limits: RunLimits {
                timeout_ms: e.timeout_ms,
                memory_mb: e.memory_mb,
                fuel: e.fuel,
                clamped: e.clamped,
            },
            language: e.language.as_str(),
            id: e.id,
            script_id: e.script_id,
            script_version: e.script_version,
            status: e.status,
            trigger: e.trigger,
            parameters: e.parameters,
            interactive: e.interactive,
            created_at: e.created_at,
            started_at: e.started_at,
            completed_at: e.completed_at,
            duration_ms: e.duration_ms,
            compile_wait_ms: e.compile_wait_ms,
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
            http_requests: e.http_requests,
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
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = find(&state, &principal.org, &id).await?;
    durable_before_reporting(&state, [&record]).await?;
    crate::api::etag::json(&headers, &ExecutionView::from(record))
}

/// The execution `id` of organization `org`: another's is no execution at all.
pub(super) async fn find(
    state: &AppState,
    org: &str,
    id: &str,
) -> Result<ExecutionRecord, ApiError> {
    state
        .store
        .execution(id)
        .await?
        .filter(|record| record.org() == org)
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id:?}")))
}

/// Workers do not flush the `running` state (and a waited run's `queued`
/// and `running` states are only held in memory), and flush a final record
/// while they run the next execution: whoever reports such a record writes
/// and flushes it first, so a client is never told of a state a crash could
/// take back.
async fn durable_before_reporting<'a>(
    state: &AppState,
    records: impl IntoIterator<Item = &'a ExecutionRecord>,
) -> Result<(), ApiError> {
    let (mut kept, mut settling) = (false, false);
    for record in records {
        if !record.status.is_final() {
            state.store.keep_execution(&record.id).await?;
            kept = true;
        }
        settling |= state.jobs.is_settling(&record.id);
    }
    if kept {
        state.store.flush().await?;
    } else if settling {
        // Final, and stored: the sync its worker awaits is enough.
        state.store.flush_finals().await?;
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
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<ExecutionView>, ApiError> {
    // The organization never changes: checked once, before.
    find(&state, &principal.org, &id).await?;
    let cancelled = state
        .jobs
        .cancel(state.store.as_ref(), &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id:?}")))?;
    match cancelled {
        Cancelled::Recorded(record) => {
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
                .execution(&id)
                .await?
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

/// List executions, newest first: by `page`/`size` or `offset`/`limit`
/// (with totals), or by `cursor`/`limit` (without; each page costs the same
/// however many executions are stored).
#[utoipa::path(get, path = "/v1/executions", operation_id = "listExecutions", tag = "executions", params(list::ListQuery),
    responses(
        (status = 200, description = "A page of executions", body = Listing<ExecutionView>),
        (status = 400, description = "Bad query parameter", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<list::ListQuery>,
) -> Result<axum::Json<Listing<ExecutionView>>, ApiError> {
    let store = state.store.clone();
    let listing = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(list::page(
            store.as_ref(),
            &principal.org,
            query,
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the listing failed: {e}")))??;
    durable_before_reporting(&state, &listing.data).await?;
    Ok(axum::Json(Listing {
        data: listing.data.into_iter().map(ExecutionView::from).collect(),
        pagination: listing.pagination,
    }))
}

/// Delete a finished execution: the caller's own, or any for an admin.
#[utoipa::path(delete, path = "/v1/executions/{id}", operation_id = "deleteExecution", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Another user's execution", body = ErrorEnvelope),
        (status = 404, description = "No such execution", body = ErrorEnvelope),
        (status = 409, description = "Still queued or running", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("no execution {id:?}"));
    let record = find(&state, &principal.org, &id).await?;
    if !principal.is_admin() && record.created_by != principal.user_id {
        return Err(ApiError::PermissionDenied(
            "only its creator or an admin may delete an execution".into(),
        ));
    }
    if state.jobs.is_settling(&id) {
        state.store.flush().await?;
    }
    match state.store.delete_execution(&id).await? {
        Removal::Removed => {}
        Removal::NotFinal(status) => {
            return Err(ApiError::Conflict(format!(
                "execution {id} is {}: cancel it first",
                status.as_str()
            )));
        }
        Removal::Missing => return Err(not_found()),
    }
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("execution.deleted", true)
            .actor(&principal)
            .ip(&ip)
            .target(&id),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Only this script's executions (its id or name).
    script: Option<String>,
    /// Executions created before this time (RFC 3339).
    #[param(required = true, format = DateTime)]
    before: Option<String>,
}

/// How many executions a bulk delete removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    deleted: usize,
    /// More matched than one request removes: send it again.
    more: bool,
}

/// The most executions one bulk delete removes.
const BULK_DELETE_LIMIT: usize = 10_000;

/// Delete finished executions created before a time, of one script or of
/// all, oldest first (admins). Removes at most 10 000 per request; `more`
/// says to send it again.
#[utoipa::path(delete, path = "/v1/executions", operation_id = "deleteExecutions", tag = "executions", params(DeleteQuery),
    responses(
        (status = 200, description = "What was removed", body = Deleted),
        (status = 400, description = "Bad query parameter", body = ErrorEnvelope),
        (status = 404, description = "No such script", body = ErrorEnvelope),
    ))]
async fn delete_many(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<axum::Json<Deleted>, ApiError> {
    let before = list::normalized_time("before", query.before)?
        .ok_or_else(|| ApiError::invalid("before", "is required"))?;
    // A time before 1970 is before every execution: nothing to delete.
    let before_ms = list::unix_ms(&before).unwrap_or(0);
    let script_id = match &query.script {
        Some(name) => match state.store.script(&principal.org, name).await? {
            Some(script) => Some(script.id),
            // A deleted script's executions stay until swept; its id still names them.
            None if uuid::Uuid::try_parse(name).is_ok() => Some(name.clone()),
            None => return Err(ApiError::NotFound(format!("no script {name:?}"))),
        },
        None => None,
    };
    let (store, jobs, target) = (state.store.clone(), state.jobs.clone(), script_id.clone());
    let org = principal.org.clone();
    // Off the async threads: up to a thousand deletes.
    let runtime = tokio::runtime::Handle::current();
    let (deleted, more) = tokio::task::spawn_blocking(move || {
        runtime.block_on(crate::retention::delete_before(
            store.as_ref(),
            &jobs,
            &org,
            target,
            before_ms,
            BULK_DELETE_LIMIT,
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the delete failed: {e}")))??;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("executions.deleted", true)
            .actor(&principal)
            .ip(&ip)
            .target(script_id.unwrap_or_else(|| "*".into()))
            .detail(format!("{deleted} created before {before}")),
    );
    Ok(axum::Json(Deleted { deleted, more }))
}

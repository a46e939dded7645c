//! Executions: run a stored script (queued, or waited for) and read results.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_runtime::OutputKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::auth::Principal;
use crate::jobs::Cancelled;
use crate::store::{
    ExecutionRecord, ExecutionStatus, Priority, ScriptLimits, ScriptStatus, Trigger,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/scripts/{id}/execute", post(execute))
        .route("/v1/execute", post(execute_ad_hoc))
        .route("/v1/executions", get(list))
        .route("/v1/executions/{id}", get(read))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/events", get(events))
}

/// The longest a client may wait for a result (API.md: `Prefer: wait=N`, max 300 s).
const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    parameters: Option<serde_json::Value>,
    input: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    fuel: Option<u64>,
    /// Run this version of the script rather than the current one.
    version: Option<u32>,
    #[serde(default)]
    priority: Priority,
}

#[derive(Debug, Default, Deserialize)]
pub struct ExecuteQuery {
    wait: Option<bool>,
}

/// The API's Execution.
#[derive(Debug, Serialize)]
pub struct ExecutionView {
    id: String,
    script_id: Option<String>,
    script_version: Option<u32>,
    language: &'static str,
    status: ExecutionStatus,
    trigger: Trigger,
    parameters: serde_json::Value,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
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

/// How long the client asked to wait: `?wait=true` (the maximum) or
/// `Prefer: wait=N` seconds.
fn wait_for(query: &ExecuteQuery, headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    if query.wait == Some(true) {
        return Ok(Some(MAX_WAIT));
    }
    let Some(prefer) = headers.get("prefer").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    for preference in prefer.split(',').map(str::trim) {
        if let Some(seconds) = preference.strip_prefix("wait=") {
            let seconds: u64 = seconds
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid("Prefer", "wait=N takes whole seconds"))?;
            return Ok(Some(Duration::from_secs(seconds).min(MAX_WAIT)));
        }
    }
    Ok(None)
}

async fn execute(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ExecuteQuery>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = wait_for(&query, &headers)?;
    let request = parse_body(body)?;
    let script = state
        .store
        .script(&id)?
        .ok_or_else(|| ApiError::NotFound(format!("no script {id:?}")))?;
    if script.status == ScriptStatus::Archived {
        return Err(ApiError::Conflict(format!(
            "script {:?} is archived; set its status to active to run it",
            script.name
        )));
    }
    let version = match request.version {
        None => script.version,
        Some(v) if state.store.script_version(&script.id, v)?.is_some() => v,
        Some(v) => {
            return Err(ApiError::invalid(
                "version",
                format!("script {:?} has no version {v}", script.name),
            ));
        }
    };
    let target = Target {
        language: script.language,
        script: Some((script.id, version)),
        defaults: script.limits.unwrap_or_default(),
        code: None,
    };
    let record = new_record(&state, request, target, &principal)?;
    submit(&state, record, wait).await
}

/// What an execution runs.
struct Target {
    language: crate::store::Language,
    /// A stored script's id and version, or none for ad-hoc code.
    script: Option<(String, u32)>,
    /// The script's own limits, used where the request sets none.
    defaults: ScriptLimits,
    code: Option<Vec<u8>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AdHocQuery {
    #[serde(rename = "async")]
    asynchronous: Option<bool>,
}

/// `POST /v1/execute`: run code that is not stored as a script. The body is
/// `language`, `code` or `code_base64`, and the fields of [`ExecuteRequest`].
async fn execute_ad_hoc(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AdHocQuery>,
    principal: Principal,
    super::ApiJson(mut body): super::ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    let mut text = |field: &str| match body.remove(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    };
    let language = text("language")?.ok_or_else(|| ApiError::invalid("language", "is required"))?;
    let (code, code_base64) = (text("code")?, text("code_base64")?);
    let language = super::scripts::parse_language(&language)?;
    let code = super::scripts::decode_content(code, code_base64, "code", true)?;
    // What is left must be an ExecuteRequest, which refuses unknown fields.
    let rest = serde_json::to_vec(&body)
        .map_err(|e| ApiError::Internal(format!("cannot re-encode a body: {e}")))?;
    let execution: ExecuteRequest = super::parse_json("the body", &rest)?;
    if execution.version.is_some() {
        return Err(ApiError::invalid("version", "ad-hoc code has no versions"));
    }
    let wait = (query.asynchronous != Some(true)).then_some(MAX_WAIT);
    let target = Target {
        language,
        script: None,
        defaults: ScriptLimits::default(),
        code,
    };
    let record = new_record(&state, execution, target, &principal)?;
    submit(&state, record, wait).await
}

/// A queued execution record for `request`, its limits capped by the
/// server's maxima (not refused).
fn new_record(
    state: &AppState,
    request: ExecuteRequest,
    target: Target,
    principal: &Principal,
) -> Result<ExecutionRecord, ApiError> {
    let parameters = request.parameters.unwrap_or_else(|| json!({}));
    if !parameters.is_object() {
        return Err(ApiError::invalid("parameters", "must be a JSON object"));
    }
    for (field, value) in [
        ("timeout_ms", request.timeout_ms),
        ("memory_mb", request.memory_mb),
        ("fuel", request.fuel),
    ] {
        if value == Some(0) {
            return Err(ApiError::invalid(field, "must be at least 1"));
        }
    }
    let limits = &state.config.limits;
    let defaults = target.defaults;
    let fuel = match (
        request.fuel.or(defaults.fuel).or(limits.default_fuel),
        limits.max_fuel,
    ) {
        (Some(fuel), Some(max)) => Some(fuel.min(max)),
        (None, Some(max)) => Some(max),
        (fuel, None) => fuel,
    };
    let (script_id, script_version) = target
        .script
        .map_or((None, None), |(id, version)| (Some(id), Some(version)));
    Ok(ExecutionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        script_id,
        script_version,
        language: target.language,
        status: ExecutionStatus::Queued,
        trigger: Trigger::Api,
        priority: request.priority,
        created_by: principal.user_id(),
        parameters,
        input: request.input,
        env: request.env.into_iter().collect(),
        code: target.code,
        timeout_ms: request
            .timeout_ms
            .or(defaults.timeout_ms)
            .unwrap_or(limits.default_timeout_ms)
            .min(limits.max_timeout_ms),
        memory_mb: request
            .memory_mb
            .or(defaults.memory_mb)
            .unwrap_or(limits.default_memory_mb)
            .min(limits.max_memory_mb),
        fuel,
        created_at: crate::now(),
        started_at: None,
        completed_at: None,
        duration_ms: None,
        exit_code: None,
        result: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        error: None,
        fuel_consumed: None,
        peak_memory_bytes: None,
    })
}

/// Stores the record (durable before the client hears of it), queues it, and
/// answers 200 with the finished execution if it ends within `wait`, else 202.
async fn submit(
    state: &AppState,
    record: ExecutionRecord,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    state.store.put_execution(&record)?;
    state.store.flush().await?;
    let mut done = match state.jobs.enqueue(&record.id, record.priority) {
        Ok(done) => done,
        Err(e) => {
            // Never leave a queued record behind that no worker will run.
            let mut refused = record.clone();
            refused.status = ExecutionStatus::Failed;
            refused.error = Some(crate::store::ExecutionError {
                code: match e {
                    crate::jobs::JobError::QueueFull => "QUEUE_FULL",
                    _ => "UNAVAILABLE",
                }
                .into(),
                message: e.to_string(),
                stack: None,
                line: None,
                column: None,
            });
            refused.completed_at = Some(crate::now());
            state.store.put_execution(&refused)?;
            return Err(e.into());
        }
    };
    if let Some(wait) = wait {
        let finished = tokio::time::timeout(wait, done.wait_for(|finished| *finished)).await;
        if matches!(finished, Ok(Ok(_))) {
            let record = state
                .store
                .execution(&record.id)?
                .ok_or_else(|| ApiError::Internal("a finished execution vanished".into()))?;
            return Ok((StatusCode::OK, axum::Json(ExecutionView::from(record))).into_response());
        }
    }
    Ok(accepted(&record.id))
}

/// The body is optional: none means all defaults.
fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<ExecuteRequest, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::Validation(rejection.body_text(), Vec::new()),
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExecuteRequest::default());
    }
    super::parse_json("the body", &body)
}

fn accepted(id: &str) -> Response {
    let location = format!("/v1/executions/{id}");
    let body = json!({
        "execution_id": id,
        "status": "queued",
        "links": {
            "self": location,
            "events": format!("{location}/events"),
            "cancel": format!("{location}/cancel"),
        },
    });
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response()
}

async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = state
        .store
        .execution(&id)?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id:?}")))?;
    super::etag::json(&headers, &ExecutionView::from(record))
}

/// How long a cancel request waits for the worker to record the stop; the
/// sandbox stops a guest within milliseconds, so this is only a safety net.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

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
            let _ = tokio::time::timeout(CANCEL_WAIT, done.wait_for(|finished| *finished)).await;
            let record = state
                .store
                .execution(&id)?
                .ok_or_else(|| ApiError::Internal("a cancelled execution vanished".into()))?;
            Ok(axum::Json(record.into()))
        }
        Cancelled::AlreadyFinal => Err(ApiError::Conflict(format!(
            "execution {id} has already finished"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    page: Option<usize>,
    size: Option<usize>,
    script_id: Option<String>,
    status: Option<ExecutionStatus>,
    trigger: Option<Trigger>,
    created_after: Option<String>,
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
    Ok(axum::Json(page.envelope(
        records.into_iter().map(ExecutionView::from).collect(),
        total,
    )))
}

/// Server-Sent Events: the current `status`, `stdout`/`stderr` chunks as they
/// are written, then one `done` with the final Execution, then the end. A
/// finished execution is replayed from its record.
async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::NotFound(format!("no execution {id:?}"));
    let record = state.store.execution(&id)?.ok_or_else(missing)?;
    if is_final(&record) {
        return Ok(sse(replay(record)));
    }
    let live = state.jobs.output(&id);
    // It may have finished between the read and the subscription.
    let record = state.store.execution(&id)?.ok_or_else(missing)?;
    if is_final(&record) {
        state.jobs.forget_output(&id);
        return Ok(sse(replay(record)));
    }
    let first = status_event(record.status);
    let rest =
        futures_util::stream::unfold(Some((live, state.store.clone(), id)), |open| async move {
            let (mut live, store, id) = open?;
            loop {
                match live.recv().await {
                    Ok(chunk) => {
                        let event = chunk_event(chunk.kind, &chunk.text);
                        return Some((event, Some((live, store, id))));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        let record = store.execution(&id).ok().flatten()?;
                        return Some((done_event(record), None));
                    }
                }
            }
        });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([first]), rest);
    Ok(sse(stream))
}

fn is_final(record: &ExecutionRecord) -> bool {
    !matches!(
        record.status,
        ExecutionStatus::Queued | ExecutionStatus::Running
    )
}

fn replay(record: ExecutionRecord) -> impl futures_util::Stream<Item = Event> {
    let mut events = vec![status_event(record.status)];
    if !record.stdout.is_empty() {
        events.push(chunk_event(OutputKind::Stdout, &record.stdout));
    }
    if !record.stderr.is_empty() {
        events.push(chunk_event(OutputKind::Stderr, &record.stderr));
    }
    events.push(done_event(record));
    futures_util::stream::iter(events)
}

fn sse(stream: impl futures_util::Stream<Item = Event> + Send + 'static) -> Response {
    let stream = futures_util::StreamExt::map(stream, Ok::<_, std::convert::Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn status_event(status: ExecutionStatus) -> Event {
    Event::default()
        .event("status")
        .data(json!({"status": status}).to_string())
}

fn chunk_event(kind: OutputKind, text: &str) -> Event {
    let name = match kind {
        OutputKind::Stdout => "stdout",
        OutputKind::Stderr => "stderr",
    };
    Event::default()
        .event(name)
        .data(json!({"data": text}).to_string())
}

fn done_event(record: ExecutionRecord) -> Event {
    let view = ExecutionView::from(record);
    Event::default()
        .event("done")
        .data(serde_json::to_string(&view).unwrap_or_default())
}

//! Starting executions: `POST /v1/scripts/{id_or_name}/execute` and the ad-hoc
//! `POST /v1/execute`. What a client is told is flushed before it is told,
//! so it never hears of an execution a crash could lose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ExecutionView;
use crate::api::error::ErrorEnvelope;
use crate::api::scripts::ownership::{audited, may_change};
use crate::api::{ApiError, ApiPath, ApiQuery, AppState};
use crate::auth::Principal;
use crate::executions::{RunRequest, Target};
use crate::jobs::Settled;
use crate::store::{
    ExecutionRecord, ExecutionStatus, Priority, ScriptKind, ScriptLimits, ScriptStatus, Trigger,
};

/// The longest a client may wait for a result (API.md: `Prefer: wait=N`, max 300 s).
const MAX_WAIT: Duration = Duration::from_secs(300);

/// How to run a script. Every field is optional; limits default to the
/// script's own, then the server's, and are capped by the server's maxima.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// A JSON object: the script's `main` argument (components read it on stdin).
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
    /// Text for the script's stdin.
    input: Option<String>,
    /// Keep stdin open after `input` (a component then finds its
    /// parameters only in `KILN_PARAMETERS`): what a socket on
    /// `/v1/executions/{id}/ws` sends is read as it arrives, until the
    /// socket sends `eof` or closes, or the run's deadline. Answered 202 at
    /// once: asking to wait as well is a 400.
    interactive: Option<bool>,
    /// Environment variables: a component's WASI environment, `process.env`
    /// in JavaScript, `os.environ` in Python (beside `KILN_EXECUTION_ID` and
    /// `KILN_SCRIPT_NAME`).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Above the server's maximum, cut to it (the record's `limits.clamped`
    /// says so).
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    #[schema(minimum = 1)]
    memory_mb: Option<u64>,
    #[schema(minimum = 1)]
    fuel: Option<u64>,
    /// Run this version of the script rather than the current one.
    #[schema(minimum = 1)]
    version: Option<u32>,
    #[serde(default)]
    priority: Priority,
}

/// Whether to wait for the result: the same rule on both execute routes,
/// which differ only in what they do when nothing is said.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExecuteQuery {
    /// `true`: answer with the finished execution (waiting up to 300 s);
    /// `false`: answer 202 at once.
    wait: Option<bool>,
    /// The opposite of `wait`: `true` answers 202 at once. Given with
    /// `wait`, the two must agree (`wait=true&async=true` is a 400).
    #[serde(rename = "async")]
    #[param(rename = "async")]
    asynchronous: Option<bool>,
}

/// How long to wait for the result: `?wait=` or `?async=` if given (they
/// must agree), else `Prefer: wait=N` (seconds) or `Prefer: respond-async`
/// (RFC 7240), else the route's default (`waits`: the maximum).
fn wait_for(
    query: &ExecuteQuery,
    headers: &HeaderMap,
    waits: bool,
) -> Result<Option<Duration>, ApiError> {
    let asked = match (query.wait, query.asynchronous.map(|a| !a)) {
        (Some(wait), Some(not_async)) if wait != not_async => {
            return Err(ApiError::invalid(
                "async",
                "?wait and ?async say opposite things; give one",
            ));
        }
        (Some(wait), _) | (None, Some(wait)) => Some(wait),
        (None, None) => None,
    };
    if let Some(wait) = asked {
        return Ok(wait.then_some(MAX_WAIT));
    }
    let prefer = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for preference in prefer {
        if preference.eq_ignore_ascii_case("respond-async") {
            return Ok(None);
        }
        if let Some(seconds) = preference.strip_prefix("wait=") {
            let seconds: u64 = seconds
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid("Prefer", "wait=N takes whole seconds"))?;
            return Ok(Some(Duration::from_secs(seconds).min(MAX_WAIT)));
        }
    }
    Ok(waits.then_some(MAX_WAIT))
}

/// `wait_for`, except that an interactive run is answered at once: its
/// stdin comes over its socket, which needs its id.
fn wait_unless_interactive(
    query: &ExecuteQuery,
    headers: &HeaderMap,
    waits: bool,
    request: &ExecuteRequest,
) -> Result<Option<Duration>, ApiError> {
    if request.interactive != Some(true) {
        return wait_for(query, headers, waits);
    }
    if wait_for(query, headers, false)?.is_some() {
        return Err(ApiError::invalid(
            "interactive",
            "an interactive run is answered at once (202), since its stdin comes over /v1/executions/{id}/ws: do not ask to wait",
        ));
    }
    Ok(None)
}

/// Run a script: queued (202) unless the caller waits for the result.
#[utoipa::path(post, path = "/v1/scripts/{id_or_name}/execute", operation_id = "executeScript", tag = "executions",
    params(("id_or_name" = String, Path, description = "The script's id or name"), ExecuteQuery,
        ("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds (max 300); `respond-async`: answer 202 at once"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters; retries with the same key and body run once")),
    request_body(content = Option<ExecuteRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Finished within the wait", body = ExecutionView),
        (status = 202, description = "Queued or still running", body = Accepted, headers(("Location" = String))),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "A `version` other than the current one, asked for by someone who may not change the script", body = ErrorEnvelope),
        (status = 404, description = "No such script", body = ErrorEnvelope),
        (status = 409, description = "The script is archived, or the Idempotency-Key was used for another request", body = ErrorEnvelope),
        (status = 429, description = "The caller has `workers.queued_per_user` executions queued", body = ErrorEnvelope,
            headers(("Retry-After" = String))),
        (status = 500, description = "A waited run ended but its record could not be saved (INTERNAL_ERROR)", body = ErrorEnvelope),
        (status = 503, description = "The queue is full (QUEUE_FULL) or the server is draining", body = ErrorEnvelope,
            headers(("Retry-After" = String))),
    ))]
pub(super) async fn execute(
    State(state): State<AppState>,
    axum::Extension(ip): axum::Extension<crate::api::access::ClientIp>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ExecuteQuery>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_body(&headers, body)?;
    let wait = wait_unless_interactive(&query, &headers, false, &request)?;
    let script = state
        .store
        .script(&principal.org, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no script {id:?}")))?;
    if script.status == ScriptStatus::Archived {
        return Err(ApiError::Conflict(format!(
            "script {:?} is archived; set its status to active to run it",
            script.name
        )));
    }
    if script.kind == ScriptKind::Http {
        return Err(ApiError::Validation(
            format!(
                "script {:?} is an HTTP function: send it requests at /fn/{}/",
                script.name, script.name
            ),
            Vec::new(),
        ));
    }
    let version = match request.version {
        None => script.version,
        // An old version runs with today's config and hosts: it may be code
        // someone who may no longer change the script wrote.
        Some(v) if v != script.version && !may_change(&principal, &script) => {
            let refused = ApiError::PermissionDenied(format!(
                "only the owner of script {:?}, its editors and admins run a version other than \
                 the current one ({})",
                script.name, script.version
            ));
            return Err(audited(
                &state, &principal, &ip, "execute", &script.id, refused,
            ));
        }
        Some(v) if state.store.script_version(&script.id, v).await?.is_some() => v,
        Some(v) => {
            return Err(ApiError::invalid(
                "version",
                format!("script {:?} has no version {v}", script.name),
            ));
        }
    };
    let target = Target::script(&script, version);
    let record = new_record(&state, request, target, &principal)?;
    submit(&state, record, wait).await
}

/// Code to run once without storing it: `language`, one of `code` and
/// `code_base64`, and any field of [`ExecuteRequest`] except `version`.
/// (The handler reads the body as a map; this type documents it.)
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documents the body for the OpenAPI document")]
pub struct AdHocExecution {
    #[schema(value_type = crate::api::scripts::LanguageName, example = "python")]
    language: String,
    code: Option<String>,
    code_base64: Option<String>,
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
    input: Option<String>,
    interactive: Option<bool>,
    env: Option<BTreeMap<String, String>>,
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    #[schema(minimum = 1)]
    memory_mb: Option<u64>,
    #[schema(minimum = 1)]
    fuel: Option<u64>,
    priority: Option<Priority>,
    /// The hosts this code may send HTTP requests to (as a script's
    /// `allowed_hosts`).
    allowed_hosts: Option<Vec<String>>,
}

/// `POST /v1/execute`: run code that is not stored as a script. The body is
/// `language`, `code` or `code_base64`, and the fields of [`ExecuteRequest`].
#[utoipa::path(post, path = "/v1/execute", operation_id = "executeCode", tag = "executions",
    params(ExecuteQuery,
        ("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds (max 300); `respond-async`: answer 202 at once"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters; retries with the same key and body run once")),
    request_body = AdHocExecution,
    responses(
        (status = 200, description = "Finished", body = ExecutionView),
        (status = 202, description = "Queued (`?async=true`) or still running", body = Accepted, headers(("Location" = String))),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 409, description = "The Idempotency-Key was used for another request", body = ErrorEnvelope),
        (status = 422, description = "A component that does not compile, or passes a compile limit", body = ErrorEnvelope),
        (status = 429, description = "The caller has `limits.compiles_per_user` compiles in flight, or `workers.queued_per_user` executions queued", body = ErrorEnvelope,
            headers(("Retry-After" = String))),
        (status = 500, description = "A waited run ended but its record could not be saved (INTERNAL_ERROR)", body = ErrorEnvelope),
        (status = 503, description = "The queue (or the compile queue) is full, or the server is draining", body = ErrorEnvelope),
    ))]
pub(super) async fn execute_ad_hoc(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExecuteQuery>,
    headers: HeaderMap,
    principal: Principal,
    crate::api::ApiJson(mut body): crate::api::ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    let mut text = |field: &str| match body.remove(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    };
    let language = text("language")?.ok_or_else(|| ApiError::invalid("language", "is required"))?;
    let (code, code_base64) = (text("code")?, text("code_base64")?);
    let allowed_hosts = match body.remove("allowed_hosts") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(hosts) => {
            let hosts: Vec<String> = serde_json::from_value(hosts)
                .map_err(|_| ApiError::invalid("allowed_hosts", "must be an array of strings"))?;
            crate::api::scripts::allowed_hosts(&hosts)?
        }
    };
    let language = crate::api::scripts::parse_language(&language)?;
    let code = crate::api::scripts::decode_content(code, code_base64, "code", true)?;
    // What is left must be an ExecuteRequest, which refuses unknown fields.
    let rest = serde_json::to_vec(&body)
        .map_err(|e| ApiError::Internal(format!("cannot re-encode a body: {e}")))?;
    let execution: ExecuteRequest = crate::api::parse_json("the body", &rest)?;
    if execution.version.is_some() {
        return Err(ApiError::invalid("version", "ad-hoc code has no versions"));
    }
    let wait = wait_unless_interactive(&query, &headers, true, &execution)?;
    // A component is compiled now, on the caller's account and while the
    // caller waits (a compile it leaves is stopped): not by a worker, which
    // other users' executions wait for.
    if language == crate::store::Language::Wasm
        && let Some(code) = &code
    {
        state
            .runtimes
            .load(code.as_slice(), Some(&principal.rate_key()))
            .await?;
    }
    let target = Target {
        org: principal.org.clone(),
        language,
        script: None,
        defaults: ScriptLimits::default(),
        code,
    };
    let mut record = new_record(&state, execution, target, &principal)?;
    record.allowed_hosts = allowed_hosts;
    submit(&state, record, wait).await
}

/// A queued execution record for an API request.
fn new_record(
    state: &AppState,
    request: ExecuteRequest,
    target: Target,
    principal: &Principal,
) -> Result<ExecutionRecord, ApiError> {
    let interactive = request.interactive.unwrap_or(false);
    let request = RunRequest {
        parameters: request.parameters,
        input: request.input,
        env: request.env.into_iter().collect(),
        timeout_ms: request.timeout_ms,
        memory_mb: request.memory_mb,
        fuel: request.fuel,
        priority: request.priority,
    };
    let mut record = crate::executions::new_record(
        &state.config.limits,
        request,
        target,
        Trigger::Api,
        principal.user_id(),
    )?;
    record.interactive = interactive;
    // Sealed from here on: the store never holds a request's values in clear.
    for (name, value) in &mut record.env {
        *value = state
            .vault
            .seal(&crate::vault::env_slot(&record.id, name), value);
    }
    Ok(record)
}

/// Stores the record, queues it, and answers 200 with the finished execution
/// if it ends within `wait`, else 202. Every answer follows a flush of what it
/// reports: a 202 the queued record, a 200 the final one (the worker's
/// signal comes once it is stored, and the handler syncs it, or once it is
/// flushed). A waited execution is held in memory until it is final
/// (or its wait runs out), so one that finishes in time costs one record
/// write and one fsync, shared with the others that finished meanwhile.
async fn submit(
    state: &AppState,
    record: ExecutionRecord,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    let mut done = crate::executions::queue(
        &state.store,
        &state.jobs,
        &state.quotas,
        &record,
        wait.is_none(),
    )
    .await?;
    if let Some(wait) = wait {
        // Its end is handed to this handler, which syncs before it answers:
        // then no task of the worker's syncs it too.
        let syncing = state.jobs.syncing_waiter(state.store.clone(), &record.id);
        // Until the wait runs out, or the node shuts down without running it.
        let waited = tokio::select! {
            waited = tokio::time::timeout(wait, done.wait_for(Settled::has_ended)) => match waited {
                Ok(Ok(settled)) => Some(settled.clone()),
                _ => Some(Settled::Pending),
            },
            () = state.lifecycle.waiters_released() => None,
        };
        let settled = waited.unwrap_or_else(|| done.borrow().clone());
        // The channel holds the record too: let go of it, so the record is
        // moved out below rather than copied.
        drop(done);
        // Only a handed end is this handler's to sync; any other leaves it
        // to the run's own sync at once, not after this handler's awaits.
        let syncing = syncing.filter(|_| matches!(settled, Settled::Ended(_)));
        let record = match settled {
            Settled::Pending => {
                // Most likely running by now: say what it is, not what it
                // was. A final state is told only once it is durable (a 200,
                // or a read), so one reached just now is still running here.
                let status = state
                    .store
                    .execution(&record.id)
                    .await?
                    .map_or(ExecutionStatus::Queued, |current| current.status);
                let status = if status.is_final() {
                    ExecutionStatus::Running
                } else {
                    status
                };
                // Held until now: the client is about to be told of it.
                state.store.keep_execution(&record.id).await?;
                state.store.flush().await?;
                return Ok(accepted(&record.id, status));
            }
            Settled::Flushed(record) => Arc::unwrap_or_clone(record),
            Settled::Ended(record) => {
                // Stored; on disk once this sync returns. Its writes to the
                // store's tables may wait until the answer is sent.
                let synced = state.store.flush_finals_deferring().await;
                let settled = match &synced {
                    Ok(()) => Settled::Flushed(record.clone()),
                    Err(e) => crate::jobs::lost(&record.id, e),
                };
                // Synced: settled here, and then its waiter may go.
                state.jobs.settle(&record.id, settled);
                drop(syncing);
                state.jobs.apply_deferred_soon(&state.store);
                if let Err(e) = synced {
                    return Err(ApiError::Internal(format!(
                        "execution {} ran but its record could not be saved: {e}",
                        record.id
                    )));
                }
                Arc::unwrap_or_clone(record)
            }
            Settled::Stored => {
                state.store.flush().await?;
                let stored =
                    state.store.execution(&record.id).await?.ok_or_else(|| {
                        ApiError::Internal("a finished execution vanished".into())
                    })?;
                if !stored.status.is_final() {
                    // Another node sharing the store claimed it: it runs
                    // there, and the client reads its end from any node.
                    return Ok(accepted(&stored.id, stored.status));
                }
                stored
            }
            Settled::Lost(e) => {
                return Err(ApiError::Internal(format!(
                    "execution {} ran but its record could not be saved: {e}",
                    record.id
                )));
            }
        };
        return Ok((StatusCode::OK, axum::Json(ExecutionView::from(record))).into_response());
    }
    Ok(accepted(&record.id, ExecutionStatus::Queued))
}

/// The body is optional: none means all defaults. One that says it is
/// not JSON (a form, as `curl -d` sends) is a 415; one without a
/// `Content-Type` is read as JSON.
fn parse_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExecuteRequest, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::Validation(rejection.body_text(), Vec::new()),
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExecuteRequest::default());
    }
    if headers.contains_key(axum::http::header::CONTENT_TYPE)
        && !crate::api::json_body::says_json(headers)
    {
        return Err(crate::api::json_body::not_json());
    }
    crate::api::parse_json("the body", &body)
}

/// The answer to an execution that is not finished yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    execution_id: String,
    status: ExecutionStatus,
    links: Links,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    own: String,
    events: String,
    cancel: String,
}

fn accepted(id: &str, status: ExecutionStatus) -> Response {
    let location = format!("/v1/executions/{id}");
    let body = Accepted {
        execution_id: id.to_owned(),
        status,
        links: Links {
            own: location.clone(),
            events: format!("{location}/events"),
            cancel: format!("{location}/cancel"),
        },
    };
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response()
}

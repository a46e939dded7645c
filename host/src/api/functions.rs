//! HTTP functions: `ANY /fn/{name}/{*path}` hands the request to a script of
//! kind `http` (a wasi:http/proxy component) and passes its response back
//! (API.md "HTTP functions"). `{name}` is a function of the default
//! organization, or `<organization name>:<function name>` of another; a
//! function that is not public answers only its own organization's callers
//! (others get the 404 of a function that does not exist).
//!
//! A request runs on its connection's task, not through the execution queue:
//! it is answered, not queued. It holds one of the worker-count slots of
//! [`Jobs::function_slot`](crate::jobs::Jobs::function_slot) while it runs
//! and gets the script's limits. Each request leaves an execution record
//! (`trigger: "http"`, stdout and stderr kept, bodies not). The record is
//! written once, final, and not waited on to reach the disk: sled writes it
//! within its flush interval (500 ms), so a crash can lose the records of the
//! last moments' requests, whose callers saw their answers or a broken
//! connection.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_runtime::{Call, CancelHandle, HttpInvocation, Status};

use crate::store::orgs::DEFAULT_ORG;

use super::access::ClientIp;
use super::error::ErrorEnvelope;
use super::{ApiError, AppState, audit};
use crate::auth::{Principal, Scope, Via};
use crate::contract::{self, Ran};
use crate::store::{ExecutionCode, ExecutionRecord, ScriptKind, ScriptRecord, ScriptStatus};

/// The header every answer of a function carries: its execution record.
const EXECUTION_ID: &str = "x-kiln-execution-id";

/// Connection-level headers, which belong to one hop and not to the function.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Send a request to an HTTP function. The function sees its own path (what
/// follows `/fn/{name}`), the query, the headers and the body; its status,
/// headers and body come back as they are, with `X-Kiln-Execution-Id`.
/// Public functions need no credential; the others need `execute:scripts`,
/// and the caller's credential is not passed to them.
#[utoipa::path(method(get, post, put, patch, delete, head, options),
    path = "/fn/{name}/{path}", tag = "functions",
    params(("name" = String, Path, description = "The function's script name or id"),
        ("path" = String, Path, description = "The path the function sees (may be empty)")),
    request_body(description = "Passed to the function as it is", content(("*/*"))),
    security((), ("bearer" = ["execute:scripts"]), ("api_key" = ["execute:scripts"])),
    responses(
        (status = "default", description = "The function's own response, with `X-Kiln-Execution-Id`"),
        (status = 401, description = "The function is not public and no credential was sent", body = ErrorEnvelope),
        (status = 403, description = "The credential lacks execute:scripts", body = ErrorEnvelope),
        (status = 404, description = "No HTTP function of that name", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit", body = ErrorEnvelope),
        (status = 429, description = "Over the execute rate limit (`X-RateLimit-*` and `Retry-After` say for how long)", body = ErrorEnvelope),
        (status = 502, description = "The function failed (trap, memory or fuel limit, no or oversized response); `error.code` says which", body = ErrorEnvelope),
        (status = 503, description = "Too many requests wait for a function slot (QUEUE_FULL), or the server is draining", body = ErrorEnvelope),
        (status = 504, description = "The function was still running at its deadline (TIMEOUT)", body = ErrorEnvelope),
    ))]
pub(super) async fn call(State(state): State<AppState>, request: Request) -> Response {
    serve(&state, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (name, path) = split_path(parts.uri.path());
    let principal = Principal::of(&parts);
    let missing = || ApiError::NotFound(format!("no HTTP function {name:?}"));
    let (org, function) = match name.split_once(':') {
        Some((org, function)) => (
            state.store.org(org).await?.ok_or_else(missing)?.id,
            function,
        ),
        None => (DEFAULT_ORG.to_owned(), name),
    };
    let script = state
        .store
        .script(&org, function)
        .await?
        .filter(|script| script.kind == ScriptKind::Http)
        // A function that is not public is only for its organization's
        // callers: another's is none (the anonymous are asked for a credential).
        .filter(|script| script.public || principal.as_ref().is_none_or(|p| p.org == org))
        .ok_or_else(missing)?;
    if script.status == ScriptStatus::Archived {
        return Err(ApiError::Conflict(format!(
            "function {:?} is archived; set its status to active to serve it",
            script.name
        )));
    }
    if !script.public {
        authorize(state, &parts, principal.as_ref(), &script)?;
    }
    // A request is an execution of the function's organization, counted
    // for good once its record is stored.
    let admitted = state.quotas.admit_execution(&org, crate::now_ms()).await?;
    let body = axum::body::to_bytes(body, state.config.server.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;

    let mut record = crate::executions::http_record(
        &state.config.limits,
        &script,
        // A caller of another organization is nobody here.
        principal
            .as_ref()
            .filter(|p| p.org == org)
            .and_then(Principal::user_id),
        parts.method.as_str(),
        &path,
    )?;
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    // A Kiln credential never reaches guest code; a public function's
    // callers may send it their own.
    let kiln_credential = principal
        .as_ref()
        .is_some_and(|p| matches!(p.via, Via::Session { .. } | Via::ApiKey { .. }));
    let guest_request = guest_request(&parts, &path, &query, body, kiln_credential)?;
    let loaded = state
        .runtimes
        .component(
            &script.id,
            script.version,
            async || {
                state
                    .store
                    .script_content(&script.id, script.version)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "the script was deleted".to_string())
            },
            &crate::runtimes::caller_of(script.created_by.as_deref()),
        )
        .await?;
    record.compile_wait_ms = loaded.waited_ms();
    let artifact = loaded.artifact;

    let _slot = state.jobs.function_slot().await?;
    let cancel = CancelHandle::new();
    let running = state.jobs.track(&record.id, cancel.clone());
    record.started_at = Some(crate::now());
    // An HTTP function reads the request, not parameters or stdin.
    let (env, _) = contract::environment(
        Vec::new(),
        &record.id,
        &script.name,
        None,
        None,
        false,
        &Call::Main,
    );
    let egress = state
        .egress
        .for_run(crate::egress::AllowedHosts::parse(&script.allowed_hosts).unwrap_or_default());
    let invocation = HttpInvocation {
        request: guest_request,
        env,
        limits: contract::limits_of(&record, contract::OutputCaps::of(&state.config.limits)),
        max_response_bytes: state.config.server.max_body_bytes,
        cancel: Some(cancel),
        egress: Some(std::sync::Arc::new(egress.clone())),
    };
    let handled = state.sandbox.handle(&artifact, invocation).await;
    drop(running);
    let (answer, ran) = match handled {
        // Only draining cancels a function request.
        Ok(handled) => {
            let interrupted = handled.outcome.status == Status::Cancelled;
            let ran = Ran::Outcome {
                outcome: handled.outcome,
                interrupted,
            };
            (handled.response, ran)
        }
        Err(e) => (None, Ran::Failed(format!("the sandbox failed: {e}"))),
    };
    contract::finish(&mut record, ran);
    record.http_requests = egress.take_log();
    state
        .jobs
        .record_final(state.store.as_ref(), &record)
        .await?;
    admitted.keep();
    Ok(respond(&record, answer))
}

/// Adds [`call`] to the OpenAPI document (it is routed by hand: any method,
/// a wildcard path).
pub(super) fn document(document: &mut utoipa::openapi::OpenApi) {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(call), tags((name = "functions", description = "HTTP functions: wasi:http components answering at /fn/{name}/")))]
    struct Functions;
    let mut functions = <Functions as utoipa::OpenApi>::openapi();
    // `/fn/{name}` (no path at all) is routed too: the same operations
    // without the `path` parameter; the function sees `/`.
    let with_path = functions.paths.paths.values().next().cloned();
    if let Some(mut root) = with_path {
        for operation in operations(&mut root) {
            if let Some(parameters) = &mut operation.parameters {
                parameters
                    .retain(|p| !matches!(p, utoipa::openapi::RefOr::T(p) if p.name == "path"));
            }
        }
        functions.paths.paths.insert("/fn/{name}".into(), root);
    }
    // Operation ids must be unique: one per method and path.
    for (path, item) in &mut functions.paths.paths {
        let root = if path.ends_with("{path}") { "" } else { "Root" };
        for operation in operations(item) {
            let method = operation.operation_id.take().unwrap_or_default();
            operation.operation_id = Some(format!("callFunction{method}{root}"));
            // The function's own answer: bytes of whatever media type it says.
            if let Some(utoipa::openapi::RefOr::T(own)) =
                operation.responses.responses.get_mut("default")
            {
                own.content.insert("*/*".into(), bytes().into());
            }
        }
    }
    document.merge(functions);
}

/// Content of any media type, as bytes.
fn bytes() -> utoipa::openapi::Content {
    let schema = utoipa::openapi::RefOr::T(super::document::bytes_schema().into());
    utoipa::openapi::ContentBuilder::new()
        .schema(Some(schema))
        .build()
}

/// The item's operations, each with its method's name in `operation_id`
/// (which [`document`] then makes unique).
fn operations(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        ("Get", &mut item.get),
        ("Post", &mut item.post),
        ("Put", &mut item.put),
        ("Patch", &mut item.patch),
        ("Delete", &mut item.delete),
        ("Head", &mut item.head),
        ("Options", &mut item.options),
    ]
    .into_iter()
    .filter_map(|(method, operation)| {
        let operation = operation.as_mut()?;
        operation.operation_id = Some(method.to_owned());
        Some(operation)
    })
}

/// `/fn/name/rest` → (`name`, `/rest`); `/fn/name` → (`name`, `/`). The
/// name is the function's in the default organization, or `<org>:<name>`
/// in another (names never hold a `:`).
fn split_path(uri_path: &str) -> (&str, String) {
    let rest = uri_path.strip_prefix("/fn/").unwrap_or_default();
    match rest.split_once('/') {
        Some((name, path)) => (name, format!("/{path}")),
        None => (rest, "/".into()),
    }
}

/// A function that is not public needs `execute:scripts`.
fn authorize(
    state: &AppState,
    parts: &axum::http::request::Parts,
    principal: Option<&Principal>,
    script: &ScriptRecord,
) -> Result<(), ApiError> {
    let Some(principal) = principal else {
        return Err(ApiError::Unauthenticated(format!(
            "function {:?} is not public: send Authorization: Bearer <access token> or \
             X-API-Key: <key> with the execute:scripts scope",
            script.name
        )));
    };
    if principal.scopes.allows(Scope::ExecuteScripts) {
        return Ok(());
    }
    let mut entry = audit::Entry::new("permission.denied", false)
        .actor(principal)
        .target(format!("{} /fn/{}", parts.method, script.name))
        .detail("needs execute:scripts");
    if let Some(ip) = parts.extensions.get::<ClientIp>() {
        entry = entry.ip(ip);
    }
    audit::record(state, entry);
    Err(ApiError::PermissionDenied(
        "calling a function that is not public needs the execute:scripts scope, which this \
         credential does not have"
            .into(),
    ))
}

/// The request as the function sees it: its own path (without `/fn/name`),
/// the query, and the headers but for hop-by-hop ones and, when the caller
/// authenticated with them, `Authorization` and `X-API-Key`.
fn guest_request(
    parts: &axum::http::request::Parts,
    path: &str,
    query: &str,
    body: Bytes,
    strip_credentials: bool,
) -> Result<axum::http::Request<Bytes>, ApiError> {
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| host.parse::<axum::http::uri::Authority>().is_ok())
        .unwrap_or("localhost");
    let uri = format!("http://{authority}{path}{query}");
    let mut request = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body)
        .map_err(|e| ApiError::invalid("path", format!("{uri:?} is not a valid URI: {e}")))?;
    let headers = request.headers_mut();
    for (name, value) in &parts.headers {
        let credential = name == header::AUTHORIZATION || name.as_str() == "x-api-key";
        if HOP_BY_HOP.contains(&name.as_str()) || (credential && strip_credentials) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    Ok(request)
}

/// The function's response with the execution id added, or the contract's
/// error shape with the run's error `code` saying why there is none.
fn respond(record: &ExecutionRecord, answer: Option<axum::http::Response<Bytes>>) -> Response {
    let mut response = match answer {
        Some(answer) => {
            let (parts, body) = answer.into_parts();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = parts.status;
            *response.headers_mut() = without_hop_by_hop(parts.headers);
            response
        }
        None => {
            // A run that ended without an error but also without a response
            // is Kiln's failure to relay it.
            let (code, message) = record.error.as_ref().map_or_else(
                || {
                    (
                        ExecutionCode::INTERNAL_ERROR,
                        "the function gave no response".to_string(),
                    )
                },
                |e| (e.code, e.message.clone()),
            );
            ApiError::Function(function_status(code), code.as_str(), message).into_response()
        }
    };
    if let Ok(id) = HeaderValue::from_str(&record.id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(EXECUTION_ID), id);
    }
    response
}

/// How a function that gave no response is answered, like a gateway whose
/// upstream failed: 504 when it ran out of time, 503 when the server stopped
/// it, 502 otherwise.
fn function_status(code: ExecutionCode) -> StatusCode {
    match code {
        ExecutionCode::Run(kiln_runtime::ErrorCode::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        ExecutionCode::INTERRUPTED | ExecutionCode::CANCELLED => StatusCode::SERVICE_UNAVAILABLE,
        ExecutionCode::INTERNAL_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// What a function may not send besides hop-by-hop headers: the one header
/// that would let a service worker it serves control paths past
/// `/fn/{name}/` on the node's origin, which the web console shares (a
/// worker scoped to `/` would see every console page and token).
const FUNCTION_MAY_NOT_SEND: [&str; 1] = ["service-worker-allowed"];

fn without_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    for name in HOP_BY_HOP.iter().chain(&FUNCTION_MAY_NOT_SEND) {
        headers.remove(*name);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_sees_its_own_path() {
        assert_eq!(split_path("/fn/hello/a/b"), ("hello", "/a/b".into()));
        assert_eq!(split_path("/fn/hello/"), ("hello", "/".into()));
        assert_eq!(split_path("/fn/hello"), ("hello", "/".into()));
    }

    #[test]
    fn kiln_credentials_and_hop_headers_do_not_reach_the_function() {
        let request = axum::http::Request::post("/fn/f/x")
            .header("host", "example.test:8080")
            .header("authorization", "Bearer secret")
            .header("x-api-key", "kiln_secret")
            .header("connection", "keep-alive")
            .header("x-custom", "1")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let private = guest_request(&parts, "/x", "?q=1", Bytes::new(), true).unwrap();
        assert_eq!(private.uri(), "http://example.test:8080/x?q=1");
        assert!(private.headers().get("authorization").is_none());
        assert!(private.headers().get("x-api-key").is_none());
        assert!(private.headers().get("connection").is_none());
        assert_eq!(private.headers()["x-custom"], "1");
        let public = guest_request(&parts, "/x", "", Bytes::new(), false).unwrap();
        assert_eq!(public.headers()["authorization"], "Bearer secret");
    }

    #[test]
    fn a_function_cannot_widen_a_service_worker_past_its_path() {
        let mut headers = HeaderMap::new();
        headers.insert("service-worker-allowed", "/".parse().unwrap());
        headers.insert("connection", "close".parse().unwrap());
        headers.insert("content-type", "text/javascript".parse().unwrap());
        let sent = without_hop_by_hop(headers);
        assert!(sent.get("service-worker-allowed").is_none());
        assert!(sent.get("connection").is_none());
        assert_eq!(sent["content-type"], "text/javascript");
    }

    #[test]
    fn failures_map_to_gateway_statuses() {
        assert_eq!(
            function_status(ExecutionCode::Run(kiln_runtime::ErrorCode::Timeout)),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            function_status(ExecutionCode::Run(kiln_runtime::ErrorCode::MemoryLimit)),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            function_status(ExecutionCode::INTERRUPTED),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

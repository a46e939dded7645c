//! The HTTP front door: `router` wires the resource modules and the layers.

mod access;
mod analytics;
mod api_keys;
mod audit;
mod auth;
mod console;
mod error;
mod etag;
mod executions;
pub(crate) use self::executions::{Cursor as ExecutionCursor, ExecutionView};
mod document;
mod functions;
mod idempotency;
mod json_body;
mod links;
mod owners;
pub use self::json_body::{ApiJson, parse_json};
mod orgs;
mod pagination;
mod schedules;
pub(crate) mod scripts;
mod secrets;
mod system;
mod totp;
mod users;
pub(crate) mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use kiln_runtime::Sandbox;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::{ApiError, Detail};
use crate::config::Config;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach. One `Arc`: axum clones the state for every
/// request and every layer that takes it.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub sandbox: Arc<Sandbox>,
    pub runtimes: Arc<crate::runtimes::Runtimes>,
    pub jobs: Arc<Jobs>,
    /// Organizations' quotas (`quotas.rs`).
    pub quotas: Arc<crate::quotas::Quotas>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// Starting, ready or draining (`/readyz`); releases waiting requests
    /// at shutdown.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    pub started: std::time::Instant,
    /// Wakes the scheduler when a schedule is created, changed or deleted.
    pub schedules_changed: Arc<tokio::sync::Notify>,
    pub auth: Arc<crate::auth::Auth>,
    pub limits: Arc<crate::ratelimit::RateLimits>,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Scripts' outbound HTTP (HTTP functions take theirs from here).
    pub egress: Arc<crate::egress::Gateway>,
    /// Seals config values and requests' `env` at rest.
    pub vault: Arc<crate::vault::Vault>,
    /// Whose forwarding headers name the client (`client_ip.rs`).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

impl AppState {
    /// Queues a webhook event of organization `org` about something this
    /// request changed; it is flushed with that change.
    pub async fn emit<T: serde::Serialize>(&self, org: &str, event: &str, data: &T) {
        if !self.webhooks.wants(event) {
            return;
        }
        match serde_json::to_value(data) {
            Ok(value) => webhooks::emit_all(&self.webhooks, org, &[(event, value)]).await,
            Err(e) => tracing::error!(error = %e, event, "cannot render a webhook event"),
        }
    }
}

/// Path extractor whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query extractor whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

const REQUEST_ID: &str = "x-request-id";

/// The OpenAPI document's frame; every operation comes from the
/// `#[utoipa::path]` of the handler that serves it.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Kiln",
        description = "Run untrusted JavaScript, Python and WebAssembly components in \
            wasmtime sandboxes. Errors always have the `ErrorEnvelope` shape; every response \
            carries `X-Request-Id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Login, tokens, users, API keys and the audit log"),
        (name = "scripts", description = "Named, versioned source or components"),
        (name = "executions", description = "Runs of scripts and of ad-hoc code"),
        (name = "schedules", description = "Cron schedules that run stored scripts"),
        (name = "webhooks", description = "Signed outgoing events (Standard Webhooks)"),
        (name = "system", description = "Health, status, metrics, usage and this document"),
    ),
)]
struct ApiDoc;

/// The rendered OpenAPI document, served at `/openapi.json`.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Arc<String>);

/// All routes and the OpenAPI document made from them, with the request-id
/// and error-shape layer around them.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let (routes, document) = routes_and_document();
    let document = serde_json::to_string_pretty(&rendered(document))
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the document: {e}\"}}"));
    // CORS sits in front of the API's access layers: a browser's preflight
    // carries no credential.
    let api = guarded(routes, &state);
    let api = match cors(&state.config.server.cors_origins) {
        Some(cors) => api.layer(cors),
        None => api,
    };
    // HTTP functions take any method and a wildcard path, which the
    // OpenAPI router cannot express (`document_functions` describes them),
    // and answer their own preflights.
    let functions = Router::new()
        .route("/fn/{name}", axum::routing::any(functions::call))
        .route("/fn/{name}/", axum::routing::any(functions::call))
        .route("/fn/{name}/{*path}", axum::routing::any(functions::call));
    let mut routes = api.merge(guarded(functions, &state));
    if state.config.server.console {
        routes = routes.merge(console::routes());
    }
    let routes = routes
        .layer(axum::Extension(OpenApiJson(Arc::new(document))))
        .fallback(|| async { ApiError::NotFound("no such resource".into()) })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        // A body that stalls between its pieces holds a connection as
        // surely as headers that never end.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_millis(state.config.server.header_read_timeout_ms),
        ));
    // Compression wraps the finished answer, error shape included; its
    // default predicate leaves event streams, images and small bodies alone.
    outermost(routes)
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// Route layers run after routing, innermost first added: the guard sees
/// the matched route and leaves the caller for idempotency and handlers.
fn guarded(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::guard))
        .route_layer(middleware::from_fn_with_state(state.clone(), measure))
}

/// The CORS answer for `server.cors_origins`, if it names any: the
/// methods and request headers the API reads, the response headers a
/// page needs (request id, ETag, Location, rate limits).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    let named = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                named("x-api-key"),
                named("idempotency-key"),
                named("prefer"),
                named("x-request-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                named("x-request-id"),
                named("x-ratelimit-limit"),
                named("x-ratelimit-remaining"),
                named("x-ratelimit-reset"),
                named("x-ratelimit-window"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// What wraps every answer, routed or not: a caught panic becomes a 500,
/// and every error body gets the contract's shape and the request id.
fn outermost<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(request_id_and_errors))
}

/// A handler's panic, carried on its 500 so the request's log line can
/// name it next to the request id.
#[derive(Debug, Clone)]
struct Panicked(String);

/// The answer to a request whose handler panicked: a plain 500, which
/// `request_id_and_errors` renders in the error shape; the connection and
/// the server go on.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let mut response = axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response.extensions_mut().insert(Panicked(message));
    response
}

/// Headers for a debug log line, credentials replaced by `***`.
fn masked(headers: &axum::http::HeaderMap) -> String {
    const SECRET: [&str; 4] = [
        "authorization",
        "x-api-key",
        "cookie",
        "proxy-authorization",
    ];
    headers
        .iter()
        .map(|(name, value)| {
            let value = if SECRET.contains(&name.as_str()) {
                "***"
            } else {
                value.to_str().unwrap_or("<binary>")
            };
            format!("{name}: {value}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every route, and the OpenAPI document made from their annotations and
/// the access rules.
fn routes_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut document) =
        OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
            .merge(system::routes())
            .merge(auth::routes())
            .merge(users::routes())
            .merge(orgs::routes())
            .merge(totp::routes())
            .merge(api_keys::routes())
            .merge(audit::routes())
            .merge(scripts::routes())
            .merge(secrets::routes())
            .merge(executions::routes())
            .merge(schedules::routes())
            .merge(webhooks::routes())
            .merge(analytics::routes())
            .split_for_parts();
    access::document_security(&mut document);
    error::document_input_refusals(&mut document);
    links::document(&mut document);
    pagination::document_bounds(&mut document);
    // After the passes above, which are about the /v1 routes; before the
    // raw bodies, so a function's gets its schema too.
    functions::document(&mut document);
    document::raw_bodies(&mut document);
    (routes, document)
}

/// The document as served: the annotations' and the passes', then the
/// rules across a body's fields that only JSON Schema can say.
fn rendered(document: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut document = serde_json::to_value(document).unwrap_or_else(
        |e| serde_json::json!({"error": format!("cannot render the document: {e}")}),
    );
    document::cross_field_rules(&mut document);
    document
}

/// Counts each routed request by its route template (not its path, which
/// would make a series per id) and records its latency.
async fn measure(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Echoes a sane client `X-Request-Id` (else makes one), puts it on the
/// response, and renders every error body in the contract's shape with it.
async fn request_id_and_errors(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    // Every line logged while the request is handled (an internal error's
    // cause among them) carries the id its client was told to quote.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("-", |route| route.as_str());
    let span = tracing::info_span!("request", request_id = %id, %method, route);
    span.in_scope(|| tracing::debug!(%path, headers = %masked(request.headers()), "request"));
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.in_scope(|| {
        if let Some(Panicked(panic)) = response.extensions().get::<Panicked>() {
            tracing::error!(%path, %panic, "the handler panicked");
        }
        tracing::info!(%path, status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64, "served");
    });
    let mut response = error::finish(response, &id);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Held while a user's records of some kind are counted against a cap and
/// one more is created, so parallel creates cannot pass the cap together.
static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `create` unless `owner` already holds `cap` records (`held` counts
/// them): 409 naming the configuration `key` then. No owner (authentication
/// off) has no cap.
pub(crate) async fn create_within_cap<T>(
    owner: Option<&str>,
    cap: usize,
    key: &str,
    what: &str,
    held: impl AsyncFnOnce(&str) -> Result<usize, crate::store::StoreError>,
    create: impl AsyncFnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let _creating = CREATING.lock().await;
    if let Some(owner) = owner
        && held(owner).await? >= cap
    {
        return Err(ApiError::Conflict(format!(
            "a user may hold at most {cap} {what} ({key}); delete one first"
        )));
    }
    create().await
}

/// How many of `records` match.
pub(crate) fn count_by<T>(records: Vec<T>, mine: impl Fn(&T) -> bool) -> usize {
    records.iter().filter(|r| mine(r)).count()
}

/// Names that appear in URLs and logs: `^[a-zA-Z0-9_.-]{1,max}$`, else a
/// 400 naming `field`.
pub fn check_identifier(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let ok = (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must match ^[a-zA-Z0-9_.-]{{1,{max}}}$"),
        ))
    }
}

#[cfg(test)]
mod suite;

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
    use tower::ServiceExt as _;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_a_request_id_and_the_router_goes_on() {
        let app = super::outermost::<()>(
            axum::Router::new()
                .route("/boom", axum::routing::get(boom))
                .route("/fine", axum::routing::get(|| async { "fine" })),
        );
        let request = |path: &str| {
            axum::http::Request::get(path)
                .header("x-request-id", "req-42")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let response = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-request-id"], "req-42");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"]["code"], "INTERNAL_ERROR", "{error}");
        assert_eq!(error["error"]["request_id"], "req-42", "{error}");
        assert!(
            !error.to_string().contains("boom"),
            "the panic message is for the log: {error}"
        );
        let response = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Everything logged by this test binary, as the server's log would
    /// have it. A global subscriber, not a scoped one: a callsite first hit
    /// on another test's thread, with no subscriber there, would otherwise
    /// stay disabled for this one.
    fn log() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
        static LOG: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
            std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
            let sink = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || Log(sink.clone()))
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            lines
        })
    }

    async fn logged<F: std::future::Future>(run: F) -> (F::Output, String) {
        let lines = log();
        let output = run.await;
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        (output, text)
    }

    struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_internal_error_is_logged_under_the_request_id_its_client_got() {
        let app = super::outermost::<()>(axum::Router::new().route(
            "/scripts/{id}",
            axum::routing::get(|| async {
                Err::<(), _>(super::ApiError::Internal("the disk is on fire".into()))
            }),
        ));
        let request = axum::http::Request::get("/scripts/abc")
            .header("x-request-id", "req-7")
            .body(axum::body::Body::empty())
            .unwrap();
        let (response, log) = logged(app.oneshot(request)).await;
        assert_eq!(
            response.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let line = log
            .lines()
            .find(|line| line.contains("the disk is on fire"))
            .unwrap_or_else(|| panic!("not logged: {log}"));
        assert!(
            line.contains("request_id=req-7") && line.contains(r#"route="/scripts/{id}""#),
            "{line}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("served") && l.contains("req-7")),
            "{log}"
        );
    }

    #[test]
    fn logged_headers_hide_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        headers.insert("x-api-key", HeaderValue::from_static("kiln_secret"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        let line = super::masked(&headers);
        assert!(
            !line.contains("abc.def") && !line.contains("kiln_secret"),
            "{line}"
        );
        assert!(
            line.contains("authorization: ***") && line.contains("user-agent: curl/8"),
            "{line}"
        );
    }

    #[test]
    fn every_operation_has_an_access_rule_and_every_rule_a_route() {
        let (_, document) = super::routes_and_document();
        let mut operations = Vec::new();
        for (path, item) in &document.paths.paths {
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ] {
                if operation.is_some() {
                    assert!(
                        super::access::rule(&method, &routed(path)).is_some(),
                        "{method} {path} has no access rule"
                    );
                    operations.push((method.to_string(), path.clone()));
                }
            }
        }
        for (method, route, _) in super::access::RULES {
            assert!(
                operations
                    .iter()
                    .any(|(m, p)| (m == method || *method == "ANY")
                        && (routed(p) == *route || documented(route) == *p)),
                "the rule for {method} {route} names no route"
            );
        }
    }

    /// HTTP functions are documented once, at `/fn/{name}/{path}` (the path
    /// may be empty), and routed three ways.
    const FUNCTION_DOC: &str = "/fn/{name}/{path}";

    fn routed(documented: &str) -> String {
        if documented == FUNCTION_DOC {
            "/fn/{name}/{*path}".into()
        } else {
            documented.into()
        }
    }

    fn documented(route: &str) -> String {
        if route.starts_with("/fn/") {
            FUNCTION_DOC.into()
        } else {
            route.into()
        }
    }
}

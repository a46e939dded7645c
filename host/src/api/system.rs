//! Liveness, readiness, the server's status and its metrics.

use crate::lifecycle::Phase;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorEnvelope;
use super::{ApiError, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    /// The store the node keeps its records in (`/readyz` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreHealth>,
}

/// Which store a node uses, and whether it answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// `sled` (embedded) or `postgres`.
    #[schema(example = "sled")]
    kind: &'static str,
    /// `ok`, or `unavailable` (then `error` says why).
    #[schema(example = "ok")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl StoreHealth {
    async fn of(store: &dyn crate::store::Store) -> Self {
        let checked = store.check().await;
        Self {
            kind: store.kind(),
            status: if checked.is_ok() { "ok" } else { "unavailable" },
            error: checked.err().map(|e| e.to_string()),
        }
    }
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "system",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        store: None,
    })
}

/// Readiness: the node has started (its store opened, its engine built,
/// both language runtimes loaded), is not draining, and its store answers
/// (PostgreSQL can go away and come back; sled always answers).
#[utoipa::path(get, path = "/readyz", operation_id = "readiness", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Starting (the message says which runtime it is loading, and for how long), draining, or its store does not answer", body = ErrorEnvelope),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    match state.lifecycle.phase() {
        Phase::Ready => {
            let store = StoreHealth::of(state.store.as_ref()).await;
            if let Some(error) = store.error {
                // The detail is the operator's (`/v1/status`, the log), not
                // an anonymous caller's.
                tracing::warn!(store = store.kind, %error, "not ready: the store does not answer");
                return Err(ApiError::Unavailable(format!(
                    "the store ({}) does not answer",
                    store.kind
                )));
            }
            Ok(axum::Json(Health {
                status: "ready",
                store: Some(store),
            }))
        }
        Phase::Starting => Err(ApiError::Unavailable(state.lifecycle.starting_detail())),
        Phase::Draining => Err(ApiError::Unavailable(
            "draining: this node is shutting down".into(),
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompileCache {
    memory_hits: u64,
    disk_hits: u64,
    compiles: u64,
    /// Script runs that found their script already compiled by its language
    /// runtime.
    script_code_hits: u64,
    /// Scripts compiled by a language runtime (at upload or a first run).
    script_compiles: u64,
    /// Script runs handed a language runtime instance made ahead of them.
    prewarmed_runs: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerStatus {
    version: &'static str,
    uptime_seconds: u64,
    workers: usize,
    queue_depth: usize,
    queue_capacity: usize,
    running: usize,
    store: StoreHealth,
    /// Stored executions by status.
    executions_by_status: BTreeMap<&'static str, u64>,
    /// Records of the families that grow with use (executions, audit
    /// entries, webhook attempts, usage rollups), from counters.
    records: BTreeMap<&'static str, u64>,
    store_size_bytes: u64,
    /// Records the retention sweeper removed since start, by kind.
    retention_removed: BTreeMap<&'static str, u64>,
    compile_cache: CompileCache,
}

/// Version, uptime, workers and queue, executions by status, store size and
/// the compile cache's counters. (Admin-only once auth exists.)
#[utoipa::path(get, path = "/v1/status", operation_id = "getStatus", tag = "system",
    responses((status = 200, description = "The server's status", body = ServerStatus)))]
async fn status(State(state): State<AppState>) -> Result<axum::Json<ServerStatus>, ApiError> {
    let executions_by_status = state
        .store
        .execution_counts()
        .into_iter()
        .map(|(status, n)| (status.as_str(), n))
        .collect();
    let cache = state.sandbox.cache_stats();
    Ok(axum::Json(ServerStatus {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        workers: state.config.workers.count,
        queue_depth: state.jobs.queued(),
        queue_capacity: state.config.workers.queue_capacity,
        running: state.jobs.running(),
        store: StoreHealth::of(state.store.as_ref()).await,
        executions_by_status,
        records: state
            .store
            .record_counts()
            .by_family()
            .into_iter()
            .collect(),
        store_size_bytes: state.store.size_on_disk()?,
        retention_removed: crate::metrics::SweepMetrics::KINDS
            .into_iter()
            .map(|kind| (kind, state.metrics.swept().total(kind)))
            .collect(),
        compile_cache: CompileCache {
            memory_hits: cache.memory_hits,
            disk_hits: cache.disk_hits,
            compiles: cache.compiles,
            script_code_hits: cache.script_code_hits,
            script_compiles: cache.script_compiles,
            prewarmed_runs: cache.prewarmed_runs,
        },
    }))
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "system",
    responses((status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Off the async threads: some gauges read the store.
    let metrics = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .map_err(|e| ApiError::Internal(format!("cannot render metrics: {e}")))?
        .map_err(|e| ApiError::Internal(format!("cannot render metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// This document: OpenAPI 3.1, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApi", tag = "system",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi(axum::Extension(document): axum::Extension<super::OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        document.0.as_str().to_owned(),
    )
        .into_response()
}

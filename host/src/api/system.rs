//! Liveness and readiness.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{ApiError, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(
    State(state): State<AppState>,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("starting or draining".into()));
    }
    Ok((StatusCode::OK, axum::Json(json!({"status": "ready"}))))
}

/// Version, uptime, workers and queue, executions by status, store size and
/// the compile cache's counters. (Admin-only once auth exists.)
async fn status(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let counts: serde_json::Map<String, serde_json::Value> = state
        .store
        .execution_counts()?
        .into_iter()
        .map(|(status, n)| (status.as_str().to_owned(), json!(n)))
        .collect();
    let cache = state.sandbox.cache_stats();
    Ok(axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "workers": state.config.workers.count,
        "queue_depth": state.jobs.queued(),
        "queue_capacity": state.config.workers.queue_capacity,
        "running": state.jobs.running(),
        "executions_by_status": counts,
        "store_size_bytes": state.store.size_on_disk()?,
        "compile_cache": {
            "memory_hits": cache.memory_hits,
            "disk_hits": cache.disk_hits,
            "compiles": cache.compiles,
        },
    })))
}

/// Prometheus metrics in the OpenMetrics text format.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render()
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

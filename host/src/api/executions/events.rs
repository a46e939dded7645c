//! `GET /v1/executions/{id}/events`: Server-Sent Events of one execution.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_runtime::OutputKind;
use serde_json::json;

use super::ExecutionView;
use crate::api::error::ErrorEnvelope;
use crate::api::{ApiError, ApiPath, AppState};
use crate::store::{ExecutionRecord, ExecutionStatus};

/// Server-Sent Events: the current `status`, `stdout`/`stderr` chunks as they
/// are written, then one `done` with the final Execution, then the end. A
/// finished execution is replayed from its record.
#[utoipa::path(get, path = "/v1/executions/{id}/events", operation_id = "streamExecutionEvents", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Server-Sent Events: `status` ({\"status\"}), `stdout` and `stderr` \
            ({\"data\"}) as written, then `done` (the final Execution), then the stream closes",
            content_type = "text/event-stream", body = String),
        (status = 404, description = "No such execution", body = ErrorEnvelope),
        (status = 429, description = "The execution already has 16 event streams open", body = ErrorEnvelope),
    ))]
pub(super) async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::NotFound(format!("no execution {id:?}"));
    let record = state.store.execution(&id)?.ok_or_else(missing)?;
    if is_final(&record) {
        super::durable_before_reporting(&state, [&record]).await?;
        return Ok(sse(replay(record)));
    }
    let (backlog, live) = state
        .jobs
        .output
        .subscribe(&id)
        .map_err(|e| ApiError::Busy(e.to_string()))?;
    // It may have finished between the read and the subscription.
    let record = state.store.execution(&id)?.ok_or_else(missing)?;
    if is_final(&record) {
        state.jobs.output.forget(&id);
        super::durable_before_reporting(&state, [&record]).await?;
        return Ok(sse(replay(record)));
    }
    super::durable_before_reporting(&state, [&record]).await?;
    let first = std::iter::once(status_event(record.status))
        .chain(
            backlog
                .iter()
                .map(|chunk| chunk_event(chunk.kind, &chunk.text)),
        )
        .collect::<Vec<_>>();
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
                        // The stream can close before the worker's flush
                        // (a late subscriber's `forget` above): `done` only
                        // once the record is on disk, else no `done`.
                        store.flush().await.ok()?;
                        let record = store.execution(&id).ok().flatten()?;
                        return Some((done_event(record), None));
                    }
                }
            }
        });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(first), rest);
    Ok(sse(stream))
}

pub(super) fn is_final(record: &ExecutionRecord) -> bool {
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

//! `GET /v1/executions/{id}/events`: Server-Sent Events of one execution.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use kiln_runtime::OutputKind;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::ExecutionView;
use crate::api::error::ErrorEnvelope;
use crate::api::{ApiError, ApiPath, AppState};
use crate::jobs::live::{self, Live, Subscription};
use crate::store::{ExecutionRecord, ExecutionStatus};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event of the stream, as a Server-Sent Events reader hands it over
/// (the document's schema of `text/event-stream` is that of each event).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documents the stream for the OpenAPI document")]
pub struct ExecutionEvent {
    event: ExecutionEventName,
    /// One line of JSON: `{"status"}` for `status`, `{"data": text}` for
    /// `stdout` and `stderr`, the final Execution for `done`.
    #[schema(content_media_type = "application/json")]
    data: String,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code, reason = "documents the stream for the OpenAPI document")]
enum ExecutionEventName {
    Status,
    Stdout,
    Stderr,
    Done,
}

/// Server-Sent Events: the current `status`, what each stream wrote so far
/// (`stdout`, then `stderr`, in pieces of at most 64 KiB), then chunks as
/// they are written, then one `done` with the final Execution, then the
/// end. A finished execution is replayed from its record the same way.
#[utoipa::path(get, path = "/v1/executions/{id}/events", operation_id = "streamExecutionEvents", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Server-Sent Events: `status` ({\"status\"}), `stdout` and `stderr` \
            ({\"data\"}): each stream so far, then as written, then `done` (the final Execution), then the stream closes",
            content_type = "text/event-stream", body = ExecutionEvent),
        (status = 404, description = "No such execution", body = ErrorEnvelope),
        (status = 429, description = "The execution already has 16 event streams open", body = ErrorEnvelope),
    ))]
pub(super) async fn events(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let stream = event_stream(&state, &principal.org, id).await?;
    Ok(sse(stream.frames))
}

/// One execution's events as Server-Sent Event frames (a `:` comment after
/// [`KEEP_ALIVE`] of quiet), for `/events` and `/ws`.
pub(super) struct EventStream {
    pub frames: BoxStream<'static, Bytes>,
    /// Its live entry while it is not final.
    pub live: Option<Arc<Live>>,
    pub interactive: bool,
    pub created_by: Option<String>,
}

/// The status, the output so far, the rest as written, then `done`; a
/// final execution replayed from its record. Only of organization `org`.
pub(super) async fn event_stream(
    state: &AppState,
    org: &str,
    id: String,
) -> Result<EventStream, ApiError> {
    let missing = || ApiError::NotFound(format!("no execution {id:?}"));
    let record = super::find(state, org, &id).await?;
    let replayed = |record: ExecutionRecord| EventStream {
        interactive: record.interactive,
        created_by: record.created_by.clone(),
        frames: replay(record).boxed(),
        live: None,
    };
    if record.status.is_final() {
        super::durable_before_reporting(state, [&record]).await?;
        return Ok(replayed(record));
    }
    let Subscription {
        backlog,
        rest,
        live,
    } = state
        .jobs
        .output
        .subscribe(&id)
        .map_err(|e| ApiError::Busy(e.to_string()))?;
    // It may have finished between the read and the subscription.
    let record = state.store.execution(&id).await?.ok_or_else(missing)?;
    if record.status.is_final() {
        state.jobs.output.finish(&id);
        super::durable_before_reporting(state, [&record]).await?;
        return Ok(replayed(record));
    }
    super::durable_before_reporting(state, [&record]).await?;
    // Run by another node: it sends its output here.
    crate::jobs::signals::watch(state.store.as_ref(), &state.jobs, &id);
    let first = std::iter::once(status_frame(record.status)).chain(backlog);
    let entry = live.clone();
    let open = Some((rest, live, state.store.clone(), id));
    let rest = futures_util::stream::unfold(open, |open| async move {
        let (mut rest, live, store, id) = open?;
        loop {
            match tokio::time::timeout(KEEP_ALIVE, rest.recv()).await {
                Err(_) => {
                    let keep_alive = Bytes::from_static(b":\n\n");
                    return Some((keep_alive, Some((rest, live, store, id))));
                }
                Ok(Ok(Some(frame))) => return Some((frame, Some((rest, live, store, id)))),
                Ok(Err(RecvError::Lagged(_))) => {}
                // The end: the final record is flushed. Every subscriber
                // sends the same `done`, made once.
                Ok(Ok(None) | Err(RecvError::Closed)) => {
                    let done = live
                        .done(|| async {
                            store.flush().await.ok()?;
                            let record = store.execution(&id).await.ok().flatten()?;
                            Some(done_frame(record))
                        })
                        .await?;
                    return Some((done, None));
                }
            }
        }
    });
    Ok(EventStream {
        frames: futures_util::stream::iter(first).chain(rest).boxed(),
        live: Some(entry),
        interactive: record.interactive,
        created_by: record.created_by,
    })
}

fn replay(record: ExecutionRecord) -> impl futures_util::Stream<Item = Bytes> + Send {
    let mut frames = vec![status_frame(record.status)];
    frames.extend(live::output_frames(OutputKind::Stdout, &record.stdout));
    frames.extend(live::output_frames(OutputKind::Stderr, &record.stderr));
    frames.push(done_frame(record));
    futures_util::stream::iter(frames)
}

fn sse(frames: BoxStream<'static, Bytes>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames.map(Ok::<_, Infallible>)),
    )
        .into_response()
}

fn status_frame(status: ExecutionStatus) -> Bytes {
    live::frame("status", &json!({"status": status}).to_string())
}

fn done_frame(record: ExecutionRecord) -> Bytes {
    let view = ExecutionView::from(record);
    live::frame("done", &serde_json::to_string(&view).unwrap_or_default())
}

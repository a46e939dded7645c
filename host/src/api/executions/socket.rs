//! `GET /v1/executions/{id}/ws`: an execution's events over a WebSocket, the
//! same as `/events` sends, and the other way an interactive execution's
//! stdin as its user types it.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::events::{EventStream, event_stream};
use crate::api::error::ErrorEnvelope;
use crate::api::{ApiError, ApiPath, AppState};
use crate::auth::Principal;
use crate::store::scopes::Scope;

/// The largest message a client may send (a frame too); a larger one
/// closes the socket (1009).
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// Stdin one socket may send in all; past it stdin is closed.
pub const MAX_STDIN_BYTES: usize = 16 << 20;

/// The same events as `/events`, each a text message
/// `{"event": NAME, "data": DATA}`: `status`, `stdout` and `stderr`
/// (`{"data": text}`), then `done` with the final Execution, then the socket
/// closes (1000). A client of an interactive execution (started with
/// `interactive: true`) that created it (or is an admin) and holds
/// `execute:scripts` sends its stdin: `{"event": "stdin", "data": text}` or
/// binary messages, then `{"event": "eof"}` (closing the socket closes stdin
/// too). One socket at a time holds an execution's stdin; anything refused
/// is answered `{"event": "error", "data": {"code", "message"}}`.
#[utoipa::path(get, path = "/v1/executions/{id}/ws", operation_id = "executionSocket", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 101, description = "Switched to a WebSocket: text messages `{\"event\", \"data\"}` with the \
            events of `/events` (`status`, `stdout`, `stderr`, `done`); an interactive execution's creator sends \
            `{\"event\": \"stdin\", \"data\": text}` (or binary messages) and `{\"event\": \"eof\"}`"),
        (status = 404, description = "No such execution", body = ErrorEnvelope),
        (status = 426, description = "Not a WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`, \
            `Sec-WebSocket-Version: 13`)", body = ErrorEnvelope),
        (status = 429, description = "The execution already has 16 event streams open", body = ErrorEnvelope),
    ))]
pub(super) async fn socket(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::UpgradeRequired(format!(
            "this route speaks WebSocket ({}); /v1/executions/{{id}}/events sends the same as Server-Sent Events",
            rejection.body_text()
        ))
    })?;
    let stream = event_stream(&state, id).await?;
    let stdin = Stdin::for_socket(&stream, &principal);
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| converse(socket, stream, stdin))
        .into_response())
}

/// What a socket may do with the execution's stdin.
enum Stdin {
    Open {
        sender: mpsc::Sender<Bytes>,
        /// Bytes it may still send.
        left: usize,
    },
    Refused(String),
}

impl Stdin {
    fn for_socket(stream: &EventStream, principal: &Principal) -> Self {
        let refused = |why: &str| Self::Refused(why.into());
        if !stream.interactive {
            return refused(
                "this execution is not interactive: its stdin was fixed when it started (run it with \"interactive\": true)",
            );
        }
        let Some(live) = &stream.live else {
            return refused("this execution is final: it reads no more input");
        };
        let own = principal.is_admin() || stream.created_by == principal.user_id;
        if !own || !principal.scopes.allows(Scope::ExecuteScripts) {
            return refused(
                "only the execution's creator (or an admin) holding execute:scripts sends its stdin",
            );
        }
        match live.stdin_sender() {
            Some(sender) => Self::Open {
                sender,
                left: MAX_STDIN_BYTES,
            },
            None => refused("another socket holds this execution's stdin (or closed it)"),
        }
    }

    /// Takes `chunk` to send, or says why not (closing stdin when it is
    /// past the bound).
    fn take(&mut self, chunk: Bytes) -> Result<Option<(mpsc::Sender<Bytes>, Bytes)>, String> {
        match self {
            Self::Refused(why) => Err(why.clone()),
            Self::Open { left, .. } if chunk.len() > *left => {
                *self = Self::Refused(format!(
                    "stdin is closed: a socket sends at most {MAX_STDIN_BYTES} bytes"
                ));
                Err(format!(
                    "more than {MAX_STDIN_BYTES} bytes of stdin: it is closed (the run reads end of file)"
                ))
            }
            Self::Open { sender, left } => {
                *left -= chunk.len();
                Ok((!chunk.is_empty()).then(|| (sender.clone(), chunk)))
            }
        }
    }

    fn close(&mut self) {
        *self = Self::Refused("stdin is closed: this socket sent eof".into());
    }
}

/// A client's text message.
#[derive(Deserialize)]
#[serde(
    tag = "event",
    content = "data",
    rename_all = "snake_case",
    deny_unknown_fields
)]
enum ClientMessage {
    Stdin(String),
    Eof,
}

/// Sends the events until the last, and feeds stdin from the client
/// meanwhile: a chunk the run has no room for yet waits (and the socket is
/// not read) while events still go out.
async fn converse(mut socket: WebSocket, stream: EventStream, mut stdin: Stdin) {
    let mut frames = stream.frames;
    let mut pending: Option<(mpsc::Sender<Bytes>, Bytes)> = None;
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(frame) = frame else { break };
                let message = match message_of(&frame) {
                    Some(text) => Message::Text(text.into()),
                    // `/events`' keep-alive comment.
                    None => Message::Ping(Bytes::new()),
                };
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            sent = async { pending.as_ref().map(|(sender, _)| sender.clone())?.reserve_owned().await.ok() },
                if pending.is_some() =>
            {
                let chunk = pending.take().map(|(_, chunk)| chunk).unwrap_or_default();
                match sent {
                    Some(permit) => { permit.send(chunk); }
                    // The run has ended; its `done` is on the way.
                    None => stdin = Stdin::Refused("the run has ended: it reads no more input".into()),
                }
            }
            incoming = socket.recv(), if pending.is_none() => {
                let chunk = match incoming {
                    // Gone: dropping the sender closes stdin.
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Err(e)) => {
                        let _ = socket.send(Message::Close(Some(close_for(e)))).await;
                        return;
                    }
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                        Ok(ClientMessage::Stdin(data)) => Bytes::from(data),
                        Ok(ClientMessage::Eof) => {
                            stdin.close();
                            continue;
                        }
                        Err(e) => {
                            let refusal = format!(
                                "a message is {{\"event\": \"stdin\", \"data\": text}}, {{\"event\": \"eof\"}} or binary stdin: {e}"
                            );
                            if socket.send(error_message("VALIDATION_ERROR", &refusal)).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                match stdin.take(chunk) {
                    Ok(next) => pending = next,
                    Err(why) => {
                        if socket.send(error_message("CONFLICT", &why)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "the execution is final".into(),
        })))
        .await;
}

/// An `/events` frame (`event: NAME\ndata: DATA\n\n`) as a text message
/// `{"event":"NAME","data":DATA}`; `None` for a comment.
fn message_of(frame: &[u8]) -> Option<String> {
    let (event, data) = std::str::from_utf8(frame)
        .ok()?
        .strip_prefix("event: ")?
        .strip_suffix("\n\n")?
        .split_once("\ndata: ")?;
    Some(format!("{{\"event\":\"{event}\",\"data\":{data}}}"))
}

/// The close a read error gets: 1009 for a message past
/// [`MAX_MESSAGE_BYTES`], 1002 for the rest.
fn close_for(error: axum::Error) -> CloseFrame {
    let error = error.into_inner();
    let too_big = matches!(
        error.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    );
    if too_big {
        CloseFrame {
            code: close_code::SIZE,
            reason: format!("a message is at most {MAX_MESSAGE_BYTES} bytes").into(),
        }
    } else {
        CloseFrame {
            code: close_code::PROTOCOL,
            reason: "not a WebSocket message".into(),
        }
    }
}

fn error_message(code: &str, message: &str) -> Message {
    let error = serde_json::json!({"event": "error", "data": {"code": code, "message": message}});
    Message::Text(error.to_string().into())
}

#[cfg(test)]
mod tests {
    use kiln_runtime::OutputKind;

    use super::*;
    use crate::jobs::live;

    #[test]
    fn an_event_frame_becomes_one_json_message_and_a_comment_none() {
        let frame = live::output_frame(OutputKind::Stdout, "a \"b\"\n");
        let message: serde_json::Value =
            serde_json::from_str(&message_of(&frame).unwrap()).unwrap();
        assert_eq!(
            message,
            serde_json::json!({"event": "stdout", "data": {"data": "a \"b\"\n"}})
        );
        assert_eq!(message_of(b":\n\n"), None);
    }

    #[test]
    fn client_messages_are_stdin_or_eof_and_nothing_else() {
        let parse = |text: &str| serde_json::from_str::<ClientMessage>(text);
        assert!(
            matches!(parse(r#"{"event":"stdin","data":"x"}"#), Ok(ClientMessage::Stdin(d)) if d == "x")
        );
        assert!(matches!(
            parse(r#"{"event":"eof"}"#),
            Ok(ClientMessage::Eof)
        ));
        assert!(parse(r#"{"event":"stdin"}"#).is_err());
        assert!(parse(r#"{"event":"cancel"}"#).is_err());
        assert!(parse(r#"{"event":"stdin","data":1}"#).is_err());
    }

    #[test]
    fn a_socket_sends_at_most_so_much_stdin_then_it_is_closed() {
        let (sender, _receiver) = mpsc::channel(1);
        let mut stdin = Stdin::Open { sender, left: 10 };
        assert!(matches!(
            stdin.take(Bytes::from_static(b"0123456789")),
            Ok(Some(_))
        ));
        assert!(matches!(stdin.take(Bytes::new()), Ok(None)));
        assert!(stdin.take(Bytes::from_static(b"x")).is_err());
        assert!(
            matches!(stdin, Stdin::Refused(_)),
            "closed: the sender is dropped"
        );
    }
}

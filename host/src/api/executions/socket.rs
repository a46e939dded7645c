//! `GET /v1/executions/{id}/ws`: an execution's events over a WebSocket, the
//! same as `/events` sends, and the other way an interactive execution's
//! stdin as its user types it.

use std::sync::Arc;
use std::time::Duration;

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
use crate::jobs::live::Live;
use crate::store::scopes::Scope;

/// The largest message a client may send (a frame too); a larger one
/// closes the socket (1009).
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// Stdin one socket may send in all; past it stdin is closed.
pub const MAX_STDIN_BYTES: usize = 16 << 20;

/// Stdin goes to the run in pieces of at most this many bytes, so what
/// waits for it (`jobs/live.rs`' 16 chunks) is at most 256 KiB.
const STDIN_PIECE_BYTES: usize = 16 << 10;

/// A client that takes no message for this long is gone: its socket is
/// closed rather than held.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The same events as `/events`, each a text message
/// `{"event": NAME, "data": DATA}`: `status`, `stdout` and `stderr`
/// (`{"data": text}`), then `done` with the final Execution, then the socket
/// closes (1000). A client of an interactive execution (started with
/// `interactive: true`) that created it (or is an admin) and holds
/// `execute:scripts` sends its stdin: `{"event": "stdin", "data": text}` or
/// binary messages, then `{"event": "eof"}`. The first such socket to send
/// holds the execution's stdin for good: its `eof` or its close is the end
/// of the run's stdin. Anything refused is answered
/// `{"event": "error", "data": {"code", "message"}}`.
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
    connection: Option<axum::Extension<crate::http_server::ConnectionSlot>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::UpgradeRequired(format!(
            "this route speaks WebSocket ({}); /v1/executions/{{id}}/events sends the same as Server-Sent Events",
            rejection.body_text()
        ))
    })?;
    let stream = event_stream(&state, &principal.org, id).await?;
    let stdin = Stdin::for_socket(&stream, &principal);
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            converse(socket, stream, stdin).await;
            // The socket held the connection's place until now.
            drop(connection);
        })
        .into_response())
}

/// Why a socket may not send stdin: an error code and a sentence.
type Refusal = (&'static str, String);

/// What a socket may do with the execution's stdin.
enum Stdin {
    /// May send; takes the execution's sender at its first message, so a
    /// socket that only watches leaves stdin to another.
    Allowed(Arc<Live>),
    Open {
        sender: mpsc::Sender<Bytes>,
        /// Bytes it may still send.
        left: usize,
    },
    Refused(&'static str, String),
}

impl Stdin {
    fn for_socket(stream: &EventStream, principal: &Principal) -> Self {
        let refused = |code, why: &str| Self::Refused(code, why.into());
        if !stream.interactive {
            return refused(
                "CONFLICT",
                "this execution is not interactive: its stdin was fixed when it started (run it with \"interactive\": true)",
            );
        }
        let Some(live) = &stream.live else {
            return refused(
                "CONFLICT",
                "this execution is final: it reads no more input",
            );
        };
        let own = principal.is_admin() || stream.created_by == principal.user_id;
        if !own || !principal.scopes.allows(Scope::ExecuteScripts) {
            return refused(
                "PERMISSION_DENIED",
                "only the execution's creator (or an admin) holding execute:scripts sends its stdin",
            );
        }
        Self::Allowed(live.clone())
    }

    /// Where stdin goes, while this socket holds it.
    fn sender(&self) -> Option<&mpsc::Sender<Bytes>> {
        match self {
            Self::Open { sender, .. } => Some(sender),
            _ => None,
        }
    }

    /// The sender, taken now if it was not yet.
    fn open(&mut self) -> Result<(&mpsc::Sender<Bytes>, &mut usize), Refusal> {
        if let Self::Allowed(live) = self {
            *self = match live.stdin_sender() {
                Some(sender) => Self::Open {
                    sender,
                    left: MAX_STDIN_BYTES,
                },
                None => Self::Refused(
                    "CONFLICT",
                    "another socket holds this execution's stdin (or closed it)".into(),
                ),
            };
        }
        match self {
            Self::Open { sender, left } => Ok((sender, left)),
            Self::Refused(code, why) => Err((code, why.clone())),
            Self::Allowed(_) => Err(("INTERNAL_ERROR", "stdin was not opened".into())),
        }
    }

    /// Takes `chunk` to send, or says why not (closing stdin when it is
    /// past the bound).
    fn take(&mut self, chunk: Bytes) -> Result<Option<Bytes>, Refusal> {
        let (_, left) = self.open()?;
        if chunk.len() > *left {
            *self = Self::Refused(
                "PAYLOAD_TOO_LARGE",
                format!("stdin is closed: a socket sends at most {MAX_STDIN_BYTES} bytes"),
            );
            return Err((
                "PAYLOAD_TOO_LARGE",
                format!(
                    "more than {MAX_STDIN_BYTES} bytes of stdin: it is closed (the run reads end of file)"
                ),
            ));
        }
        *left -= chunk.len();
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    /// `eof`: the run reads end of file.
    fn close(&mut self) -> Result<(), Refusal> {
        self.open()?;
        *self = Self::Refused("CONFLICT", "stdin is closed: this socket sent eof".into());
        Ok(())
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
    let mut pending: Option<Bytes> = None;
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(frame) = frame else { break };
                let message = match message_of(&frame) {
                    Some(text) => Message::Text(text.into()),
                    // `/events`' keep-alive comment.
                    None => Message::Ping(Bytes::new()),
                };
                if !send(&mut socket, message).await {
                    return;
                }
            }
            permit = async { stdin.sender()?.clone().reserve_owned().await.ok() },
                if pending.is_some() =>
            {
                let mut chunk = pending.take().unwrap_or_default();
                match permit {
                    Some(permit) => {
                        permit.send(chunk.split_to(chunk.len().min(STDIN_PIECE_BYTES)));
                        pending = (!chunk.is_empty()).then_some(chunk);
                    }
                    // The run has ended; its `done` is on the way.
                    None => {
                        stdin = Stdin::Refused("CONFLICT", "the run has ended: it reads no more input".into());
                    }
                }
            }
            incoming = socket.recv(), if pending.is_none() => {
                let message = match incoming {
                    // Gone: dropping the sender closes stdin.
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Err(e)) => {
                        let _ = send(&mut socket, Message::Close(Some(close_for(e)))).await;
                        return;
                    }
                    Some(Ok(message)) => message,
                };
                match heard(&mut stdin, message) {
                    Ok(next) => pending = next,
                    Err((code, why)) => {
                        if !send(&mut socket, error_message(code, &why)).await {
                            return;
                        }
                    }
                }
            }
        }
    }
    let close = Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: "the execution is final".into(),
    }));
    let _ = send(&mut socket, close).await;
}

/// What a client's message asks of stdin: bytes to send, nothing more
/// (`eof`, a ping), or a refusal to answer.
fn heard(stdin: &mut Stdin, message: Message) -> Result<Option<Bytes>, Refusal> {
    let chunk = match message {
        Message::Binary(bytes) => bytes,
        Message::Text(text) => match serde_json::from_str(text.as_str()) {
            Ok(ClientMessage::Stdin(data)) => Bytes::from(data),
            Ok(ClientMessage::Eof) => return stdin.close().map(|()| None),
            Err(e) => {
                return Err((
                    "VALIDATION_ERROR",
                    format!(
                        "a message is {{\"event\": \"stdin\", \"data\": text}}, {{\"event\": \"eof\"}} or binary stdin: {e}"
                    ),
                ));
            }
        },
        _ => return Ok(None),
    };
    stdin.take(chunk)
}

/// Sends one message; false when the client is gone or takes nothing for
/// [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
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

    #[tokio::test]
    async fn a_socket_sends_at_most_so_much_stdin_then_it_is_closed() {
        let (sender, mut receiver) = mpsc::channel(1);
        let mut stdin = Stdin::Open { sender, left: 10 };
        assert!(matches!(
            stdin.take(Bytes::from_static(b"0123456789")),
            Ok(Some(_))
        ));
        assert!(matches!(stdin.take(Bytes::new()), Ok(None)));
        assert!(matches!(
            stdin.take(Bytes::from_static(b"x")),
            Err(("PAYLOAD_TOO_LARGE", _))
        ));
        assert!(matches!(stdin, Stdin::Refused(..)));
        // Its sender is gone with it: the run reads end of file.
        assert_eq!(receiver.recv().await, None);
    }

    #[test]
    fn a_watching_socket_takes_stdin_only_when_it_first_sends() {
        let outputs = crate::jobs::live::LiveOutputs::default();
        let live = outputs.publisher("e");
        let mut watcher = Stdin::Allowed(live.clone());
        let mut typist = Stdin::Allowed(live.clone());
        drop(watcher);
        assert!(matches!(typist.take(Bytes::from_static(b"x")), Ok(Some(_))));
        watcher = Stdin::Allowed(live);
        assert!(matches!(
            watcher.take(Bytes::from_static(b"y")),
            Err(("CONFLICT", _))
        ));
        assert!(typist.close().is_ok());
        assert!(matches!(typist.close(), Err(("CONFLICT", _))));
    }
}

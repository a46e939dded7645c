//! `kiln exec -i`: an interactive run followed over its WebSocket
//! (`/v1/executions/{id}/ws`), this process's stdin sent to it as it is
//! read, its end closing the run's stdin.

use std::io::Read as _;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::api::{Api, Socket};
use super::exec::write_out;
use super::{ClientError, output};

/// Stdin is sent in messages of at most this much (the server takes 256 KiB).
const CHUNK_BYTES: usize = 16 << 10;

/// Follows execution `id` to its end over its socket and returns the final
/// execution; with `echo`, its output goes to stdout and stderr as it comes.
/// Output is read while stdin is sent, never after it: a run that writes
/// much while a send waits cannot stall both sides.
pub(super) async fn converse(api: &mut Api, id: &str, echo: bool) -> Result<Value, ClientError> {
    let broke = |e: tokio_tungstenite::tungstenite::Error| {
        ClientError::Protocol(format!("the execution's socket broke off: {e}"))
    };
    let (sink, mut stream) = api
        .socket(&format!("/v1/executions/{id}/ws"))
        .await?
        .split();
    // Never ends: it holds the sink open until the output has ended.
    let pump = send_stdin(sink, read_stdin());
    tokio::pin!(pump);
    loop {
        let message = tokio::select! {
            () = &mut pump => continue,
            message = stream.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => return Err(broke(e)),
            Some(Ok(_)) => continue,
        };
        let message: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        let data = &message["data"];
        match message["event"].as_str() {
            Some(event @ ("stdout" | "stderr")) if echo => {
                write_out(event == "stderr", data["data"].as_str().unwrap_or(""));
            }
            Some("error") => {
                output::error(
                    data["message"]
                        .as_str()
                        .unwrap_or("the server refused a message"),
                );
            }
            Some("done") => return Ok(data.clone()),
            _ => {}
        }
    }
    super::exec::ended_without_done(api, id, "the execution's socket").await
}

/// This process's stdin in chunks, then `None` at its end. Read on a
/// thread of its own: a read waiting on a terminal cannot be cancelled, and
/// the run may end first (the thread goes with the process).
fn read_stdin() -> mpsc::Receiver<Option<Bytes>> {
    let (typed, chunks) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0; CHUNK_BYTES];
        loop {
            let chunk = match stdin.read(&mut buffer) {
                Ok(n) if n > 0 => Some(Bytes::copy_from_slice(&buffer[..n])),
                // The end of our stdin (or a stdin that cannot be read)
                // is the end of the run's.
                _ => None,
            };
            let end = chunk.is_none();
            if typed.blocking_send(chunk).is_err() || end {
                return;
            }
        }
    });
    chunks
}

/// Sends the chunks as binary messages, then `eof`.
async fn send_stdin(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut chunks: mpsc::Receiver<Option<Bytes>>,
) {
    while let Some(chunk) = chunks.recv().await {
        let message = match chunk {
            Some(bytes) => Message::Binary(bytes),
            None => Message::Text(r#"{"event":"eof"}"#.into()),
        };
        let end = matches!(message, Message::Text(_));
        if sink.send(message).await.is_err() || end {
            break;
        }
    }
    // The sink stays open until the output is read to its end.
    std::future::pending::<()>().await;
}

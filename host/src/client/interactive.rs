//! `kiln exec -i`: an interactive run followed over its WebSocket
//! (`/v1/executions/{id}/ws`), this process's stdin sent to it as it is
//! read, its end closing the run's stdin.

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio_tungstenite::tungstenite::Message;

use super::api::Api;
use super::exec::write_out;
use super::{ClientError, output};

/// Stdin is sent in messages of at most this much (the server takes 256 KiB).
const CHUNK_BYTES: usize = 16 << 10;

/// Follows execution `id` to its end over its socket and returns the final
/// execution; with `echo`, its output goes to stdout and stderr as it comes.
pub(super) async fn converse(api: &mut Api, id: &str, echo: bool) -> Result<Value, ClientError> {
    let broke = |e: tokio_tungstenite::tungstenite::Error| {
        ClientError::Protocol(format!("the execution's socket broke off: {e}"))
    };
    let mut socket = api.socket(&format!("/v1/executions/{id}/ws")).await?;
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0; CHUNK_BYTES];
    let mut reading = true;
    loop {
        tokio::select! {
            read = stdin.read(&mut buffer), if reading => {
                let message = match read {
                    Ok(n) if n > 0 => Message::Binary(Bytes::copy_from_slice(&buffer[..n])),
                    // The end of our stdin (or a stdin that cannot be read)
                    // is the end of the run's.
                    _ => {
                        reading = false;
                        Message::Text(r#"{"event":"eof"}"#.into())
                    }
                };
                socket.send(message).await.map_err(broke)?;
            }
            message = socket.next() => {
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
                        output::error(data["message"].as_str().unwrap_or("the server refused a message"));
                    }
                    Some("done") => return Ok(data.clone()),
                    _ => {}
                }
            }
        }
    }
    super::exec::ended_without_done(api, id, "the execution's socket").await
}

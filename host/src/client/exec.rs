//! `kiln exec`, `kiln logs` and `kiln cancel`: start a run and follow its
//! event stream (`/v1/executions/{id}/events`, or its socket for `-i`:
//! `interactive.rs`), writing its stdout and stderr as they come and
//! exiting with its status, as `kiln run` does.

use std::io::Write;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{self, Api, path_segment};
use super::{ClientError, Common, output};
use crate::exit_status;

/// One event of the stream is at most this big (the `done` event carries
/// the whole execution, outputs included); a stream that sends more is
/// not a Kiln server's.
const MAX_EVENT_BYTES: usize = super::api::MAX_ANSWER_BYTES;

/// The exit status of a second Ctrl-C, which stops waiting for the cancel.
const INTERRUPTED: u8 = 130;

/// Arguments of `kiln exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The script's name or id.
    pub script: String,
    /// A parameter: `KEY=TEXT` (a string) or `KEY:=JSON` (any JSON value).
    /// Repeatable; applied over --params.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub param: Vec<String>,
    /// Parameters as a JSON object, or `@FILE` to read them from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub params: Option<String>,
    /// Text for the script's stdin.
    #[arg(long)]
    pub input: Option<String>,
    /// Deadline in milliseconds (the server caps it at its maximum).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Run this version instead of the current one.
    #[arg(long)]
    pub version: Option<u32>,
    /// Start the run and print its id without waiting for it.
    #[arg(long = "async")]
    pub detach: bool,
    /// Send this terminal's stdin to the run as it reads it (an
    /// interactive execution, over its WebSocket); its end is the run's.
    #[arg(short, long, conflicts_with = "detach")]
    pub interactive: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `kiln logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The execution's id.
    pub execution: String,
    /// Keep writing output as the run writes it, until it ends.
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `kiln cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The execution's id.
    pub execution: String,
    #[command(flatten)]
    pub common: Common,
}

pub(crate) async fn exec(args: ExecArgs) -> Result<ExitCode, ClientError> {
    let script = path_segment(&args.script, "script")?;
    let mut body = Map::new();
    body.insert("parameters".into(), parameters(&args)?);
    if let Some(input) = &args.input {
        body.insert("input".into(), json!(input));
    }
    if let Some(timeout) = args.timeout_ms {
        body.insert("timeout_ms".into(), json!(timeout));
    }
    if let Some(version) = args.version {
        body.insert("version".into(), json!(version));
    }
    if args.interactive {
        body.insert("interactive".into(), json!(true));
    }
    let mut api = Api::open(&args.common)?;
    let accepted = api
        .json(
            Method::POST,
            &format!("/v1/scripts/{script}/execute"),
            Some(&Value::Object(body)),
        )
        .await?;
    let id = accepted["execution_id"]
        .as_str()
        .ok_or_else(|| ClientError::Protocol("the server's answer has no execution_id".into()))?
        .to_owned();
    if args.detach {
        if args.common.json {
            output::json(&accepted);
        } else {
            println!("{id}");
            eprintln!("kiln: started; `kiln logs --follow {id}` shows its output");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let echo = !args.common.json;
    let view = {
        let followed = async {
            if args.interactive {
                super::interactive::converse(&mut api, &id, echo).await
            } else {
                follow(&mut api, &id, echo).await
            }
        };
        tokio::pin!(followed);
        tokio::select! {
            view = &mut followed => view?,
            _ = tokio::signal::ctrl_c() => {
                output::error(&format!("interrupted: cancelling {id}"));
                let cancelled = async {
                    let mut other = Api::open(&args.common)?;
                    let path = format!("/v1/executions/{id}/cancel");
                    match other.json(Method::POST, &path, None).await {
                        // 409: it finished first; the stream says how.
                        Ok(_) | Err(ClientError::Api { status: 409, .. }) => {}
                        Err(e) => return Err(e),
                    }
                    followed.await
                };
                tokio::select! {
                    view = cancelled => view?,
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(INTERRUPTED)),
                }
            }
        }
    };
    report(&view, args.common.json);
    Ok(ExitCode::from(exit_status_of(&view)))
}

pub(crate) async fn logs(args: LogsArgs) -> Result<ExitCode, ClientError> {
    let id = path_segment(&args.execution, "execution")?;
    let mut api = Api::open(&args.common)?;
    if args.follow {
        let view = follow(&mut api, id, !args.common.json).await?;
        if args.common.json {
            output::json(&view);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let view = api
        .json(Method::GET, &format!("/v1/executions/{id}"), None)
        .await?;
    if args.common.json {
        output::json(&view);
        return Ok(ExitCode::SUCCESS);
    }
    write_out(false, view["stdout"].as_str().unwrap_or(""));
    write_out(true, view["stderr"].as_str().unwrap_or(""));
    if let Some(status @ ("queued" | "running")) = view["status"].as_str() {
        output::error(&format!(
            "the execution is {status}: `kiln logs --follow {id}` shows the rest"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cancel(args: CancelArgs) -> Result<ExitCode, ClientError> {
    let id = path_segment(&args.execution, "execution")?;
    let mut api = Api::open(&args.common)?;
    let view = api
        .json(Method::POST, &format!("/v1/executions/{id}/cancel"), None)
        .await?;
    if args.common.json {
        output::json(&view);
    } else {
        println!("Cancelled {id} ({})", output::cell(&view["status"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows one execution's events to its end and returns the final
/// execution; with `echo`, its output goes to stdout and stderr as it comes.
async fn follow(api: &mut Api, id: &str, echo: bool) -> Result<Value, ClientError> {
    let path = format!("/v1/executions/{id}/events");
    let mut response = api
        .send(|http, base| {
            http.get(format!("{base}{path}"))
                .header("accept", "text/event-stream")
        })
        .await?;
    let status = response.status();
    if !status.is_success() {
        return Err(match api::read_json(response).await {
            Err(e) => e,
            Ok(_) => ClientError::Protocol(format!("the event stream answered {status}")),
        });
    }
    let mut events = EventParser::default();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                output::error(&format!("the event stream broke off: {e}"));
                break;
            }
        };
        for (event, data) in events.push(&chunk)? {
            match event.as_str() {
                "stdout" | "stderr" if echo => {
                    let text: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    write_out(event == "stderr", text["data"].as_str().unwrap_or(""));
                }
                "done" => {
                    return serde_json::from_str(&data).map_err(|e| {
                        ClientError::Protocol(format!("the done event is not an execution: {e}"))
                    });
                }
                _ => {}
            }
        }
    }
    ended_without_done(api, id, "the event stream").await
}

/// The final execution after `what` ended without its `done`: read from
/// the record, unless the run goes on.
pub(super) async fn ended_without_done(
    api: &mut Api,
    id: &str,
    what: &str,
) -> Result<Value, ClientError> {
    let view = api
        .json(Method::GET, &format!("/v1/executions/{id}"), None)
        .await?;
    match view["status"].as_str() {
        Some("queued" | "running") => Err(ClientError::Protocol(format!(
            "{what} ended before the execution did: `kiln logs --follow {id}` resumes"
        ))),
        _ => Ok(view),
    }
}

pub(super) fn write_out(to_stderr: bool, text: &str) {
    // A closed pipe (`| head`) is not an error of the run.
    let _ = if to_stderr {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
    };
}

/// What `kiln run` prints after a run: the error and its stack on stderr,
/// the result on stdout, which streams were cut.
fn report(view: &Value, json: bool) {
    if json {
        output::json(view);
        return;
    }
    let error = &view["error"];
    if let Some(code) = error["code"].as_str() {
        let position = match (error["line"].as_u64(), error["column"].as_u64()) {
            (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
            (Some(line), None) => format!(" (line {line})"),
            _ => String::new(),
        };
        output::error(&format!(
            "{code}: {}{position}",
            error["message"].as_str().unwrap_or("")
        ));
        if let Some(stack) = error["stack"].as_str() {
            eprintln!("{}", stack.trim_end());
        }
    }
    if !view["result"].is_null() {
        println!("{}", view["result"]);
    }
    for stream in ["stdout", "stderr"] {
        if view[format!("{stream}_truncated")] == json!(true) {
            output::error(&format!("{stream} was truncated at the server's limit"));
        }
    }
}

/// The exit status `kiln run` gives the same outcome: 0, the script's own
/// exit code, 124 for a timeout, 125 for any other failure.
fn exit_status_of(view: &Value) -> u8 {
    match view["status"].as_str() {
        Some("completed") => 0,
        Some("timeout") => exit_status::TIMEOUT,
        Some("failed") if view["error"]["code"] == "EXIT_CODE" => view["exit_code"]
            .as_i64()
            .and_then(|c| u8::try_from(c).ok())
            .filter(|c| *c != 0)
            .unwrap_or(exit_status::FAILURE),
        _ => exit_status::FAILURE,
    }
}

/// `--params` and then each `--param` over it.
fn parameters(args: &ExecArgs) -> Result<Value, ClientError> {
    let mut parameters = match &args.params {
        None => Map::new(),
        Some(raw) => {
            let text = match raw.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| ClientError::Usage(format!("--params {raw}: {e}")))?,
                None => raw.clone(),
            };
            match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(ClientError::Usage("--params must be a JSON object".into()));
                }
                Err(e) => {
                    return Err(ClientError::Usage(format!("--params is not JSON: {e}")));
                }
            }
        }
    };
    for param in &args.param {
        let Some((key, raw)) = param.split_once('=') else {
            return Err(ClientError::Usage(format!(
                "--param {param}: write KEY=TEXT or KEY:=JSON"
            )));
        };
        let (key, value) = match key.strip_suffix(':') {
            Some(key) => {
                let value = serde_json::from_str(raw).map_err(|e| {
                    ClientError::Usage(format!("--param {param}: the value is not JSON: {e}"))
                })?;
                (key, value)
            }
            None => (key, Value::String(raw.to_owned())),
        };
        if key.is_empty() {
            return Err(ClientError::Usage(format!(
                "--param {param}: the key is empty"
            )));
        }
        parameters.insert(key.to_owned(), value);
    }
    Ok(Value::Object(parameters))
}

/// Server-Sent Events from chunks that split them anywhere.
#[derive(Default)]
struct EventParser {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no event's end, so a big
    /// event arriving in many chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl EventParser {
    /// The complete events (name, data) the chunk finishes.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<(String, String)>, ClientError> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer[self.scanned..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|at| self.scanned + at)
        {
            self.scanned = 0;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let (mut event, mut data) = (String::from("message"), Vec::new());
            for line in text.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                events.push((event, data.join("\n")));
            }
        }
        // The last byte may be the first half of the next event's end.
        self.scanned = self.buffer.len().saturating_sub(1);
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err(ClientError::Protocol(format!(
                "an event of over {MAX_EVENT_BYTES} bytes: this is not a Kiln event stream"
            )));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole_and_comments_are_skipped() {
        let stream = ":\n\nevent: stdout\ndata: {\"data\":\"a\"}\n\nevent: done\ndata: {}\n\n";
        for cut in 0..stream.len() {
            let mut parser = EventParser::default();
            let mut events = parser.push(&stream.as_bytes()[..cut]).unwrap();
            events.extend(parser.push(&stream.as_bytes()[cut..]).unwrap());
            assert_eq!(
                events,
                [
                    ("stdout".to_owned(), "{\"data\":\"a\"}".to_owned()),
                    ("done".to_owned(), "{}".to_owned())
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut parser = EventParser::default();
        let chunk = vec![b'x'; 1 << 20];
        let mut result = Ok(Vec::new());
        for _ in 0..=64 {
            result = parser.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ClientError::Protocol(_))));
    }

    #[test]
    fn exit_statuses_are_those_of_kiln_run() {
        let status = |v: Value| exit_status_of(&v);
        assert_eq!(status(json!({"status": "completed"})), 0);
        assert_eq!(status(json!({"status": "timeout"})), 124);
        assert_eq!(
            status(json!({"status": "failed", "exit_code": 3, "error": {"code": "EXIT_CODE"}})),
            3
        );
        assert_eq!(
            status(json!({"status": "failed", "error": {"code": "RUNTIME_ERROR"}})),
            125
        );
        assert_eq!(status(json!({"status": "cancelled"})), 125);
    }

    fn exec_args(params: Option<&str>, param: &[&str]) -> ExecArgs {
        ExecArgs {
            script: "s".into(),
            param: param.iter().map(|p| (*p).to_owned()).collect(),
            params: params.map(str::to_owned),
            input: None,
            timeout_ms: None,
            version: None,
            detach: false,
            interactive: false,
            common: Common {
                profile: "default".into(),
                json: false,
                organization: None,
            },
        }
    }

    #[test]
    fn params_and_each_param_over_them() {
        let args = exec_args(
            Some(r#"{"n": 1, "keep": true}"#),
            &["n:=2", "name=ada", "s=a:=b"],
        );
        assert_eq!(
            parameters(&args).unwrap(),
            json!({"n": 2, "keep": true, "name": "ada", "s": "a:=b"})
        );
        for bad in [
            exec_args(Some("[1]"), &[]),
            exec_args(None, &["novalue"]),
            exec_args(None, &["n:=oops"]),
        ] {
            assert!(matches!(parameters(&bad), Err(ClientError::Usage(_))));
        }
    }

    #[test]
    fn only_names_and_ids_go_into_a_path() {
        assert!(path_segment("hello-1.2_x", "script").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b"] {
            assert!(path_segment(bad, "script").is_err(), "{bad:?}");
        }
    }
}

//! `GET /v1/executions/{id}/ws`: the events of `/events` over a WebSocket,
//! and an interactive execution's stdin sent over it while it runs.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::harness::{Kiln, error_body};

/// A client socket, driven one blocking step at a time as the rest of the
/// suite drives HTTP.
struct Socket {
    runtime: tokio::runtime::Runtime,
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What one read gave.
#[derive(Debug)]
enum Got {
    Event(String, Value),
    Closed(Option<CloseCode>),
}

impl Socket {
    fn open(kiln: &Kiln, id: &str, token: &str) -> Result<Self, tungstenite::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!(
            "{}/v1/executions/{id}/ws",
            kiln.base.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request()?;
        if !token.is_empty() {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (stream, _) = runtime.block_on(tokio_tungstenite::connect_async(request))?;
        Ok(Self { runtime, stream })
    }

    /// The next event or the close, skipping pings; at most a minute.
    fn next(&mut self) -> Got {
        self.runtime.block_on(async {
            loop {
                let message = tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                    .await
                    .expect("a message within a minute");
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let message: Value = serde_json::from_str(text.as_str()).unwrap();
                        let event = message["event"].as_str().unwrap().to_owned();
                        return Got::Event(event, message["data"].clone());
                    }
                    Some(Ok(Message::Close(frame))) => return Got::Closed(frame.map(|f| f.code)),
                    None | Some(Err(_)) => return Got::Closed(None),
                    Some(Ok(_)) => {}
                }
            }
        })
    }

    /// The next event that is not `status`.
    fn event(&mut self) -> (String, Value) {
        loop {
            match self.next() {
                Got::Event(event, _) if event == "status" => {}
                Got::Event(event, data) => return (event, data),
                Got::Closed(code) => panic!("closed ({code:?}) before the next event"),
            }
        }
    }

    /// Stdout events up to the end of a line (a write may come in pieces).
    fn stdout(&mut self) -> String {
        let mut text = String::new();
        while !text.ends_with('\n') {
            let (event, data) = self.event();
            assert_eq!(event, "stdout", "{data}");
            text.push_str(data["data"].as_str().unwrap());
        }
        text
    }

    fn send(&mut self, message: Message) {
        self.runtime.block_on(self.stream.send(message)).unwrap();
    }

    fn send_json(&mut self, message: Value) {
        self.send(Message::Text(message.to_string().into()));
    }

    /// The events left, up to and with `done`, and the close code after it.
    fn rest(&mut self) -> (Vec<(String, Value)>, Option<CloseCode>) {
        let mut events = Vec::new();
        loop {
            match self.next() {
                Got::Event(event, data) => events.push((event, data)),
                Got::Closed(code) => return (events, code),
            }
        }
    }
}

/// Cancels run `id` and checks that `socket`, watching it, hears the end
/// and closes normally.
fn cancelled_while_watched(kiln: &Kiln, id: &str, mut socket: Socket) {
    let cancelled = kiln
        .post(&format!("/v1/executions/{id}/cancel"))
        .send()
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let (events, close) = socket.rest();
    assert_eq!(
        events.last().unwrap().1["status"],
        "cancelled",
        "{events:?}"
    );
    assert_eq!(close, Some(CloseCode::Normal));
}

fn start_interactive(kiln: &Kiln, script: &str, body: Value) -> String {
    let response = kiln.execute(script, "", body);
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().unwrap();
    accepted["execution_id"].as_str().unwrap().to_owned()
}

/// Each line sent is answered while the run goes on (the guest reads them
/// one at a time), after the request's `input`; `eof` ends stdin, and the
/// socket gets `done` and a normal close. A second socket watches but
/// cannot send, and a message of neither shape is refused in words.
#[test]
fn an_interactive_execution_reads_its_socket_s_stdin_while_it_runs() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_component("echo", kiln_components::ECHO_LINES);
    let id = start_interactive(
        &kiln,
        "echo",
        json!({"interactive": true, "input": "first\n", "timeout_ms": 60_000}),
    );
    let mut socket = Socket::open(&kiln, &id, &kiln.token).unwrap();
    assert_eq!(socket.stdout(), "echo: first\n");
    socket.send_json(json!({"event": "stdin", "data": "second\n"}));
    assert_eq!(socket.stdout(), "echo: second\n");
    assert_eq!(kiln.execution(&id)["status"], "running");
    assert_eq!(kiln.execution(&id)["interactive"], true);
    socket.send(Message::Binary("thi".into()));
    socket.send(Message::Binary("rd\n".into()));
    assert_eq!(socket.stdout(), "echo: third\n");

    let mut watcher = Socket::open(&kiln, &id, &kiln.token).unwrap();
    assert_eq!(watcher.stdout(), "echo: first\necho: second\necho: third\n");
    watcher.send_json(json!({"event": "stdin", "data": "fourth\n"}));
    let (event, error) = watcher.event();
    assert_eq!(event, "error");
    assert_eq!(error["code"], "CONFLICT");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("another socket holds"),
        "{error}"
    );

    socket.send_json(json!({"event": "stdin", "data": 4}));
    let (event, error) = socket.event();
    assert_eq!(
        (event.as_str(), &error["code"]),
        ("error", &json!("VALIDATION_ERROR"))
    );
    socket.send_json(json!({"event": "eof"}));
    assert_eq!(socket.stdout(), "read 3 lines\n");
    let (rest, close) = socket.rest();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].0, "done");
    assert_eq!(rest[0].1["status"], "completed");
    assert_eq!(
        rest[0].1["stdout"],
        "echo: first\necho: second\necho: third\nread 3 lines\n"
    );
    assert_eq!(close, Some(CloseCode::Normal));
    let (rest, close) = watcher.rest();
    assert_eq!(rest.last().unwrap().0, "done");
    assert_eq!(close, Some(CloseCode::Normal));

    // A finished execution is replayed, as /events does, and reads nothing
    // (if the refusal comes before the socket closes, it says why).
    let mut late = Socket::open(&kiln, &id, &kiln.token).unwrap();
    late.send_json(json!({"event": "stdin", "data": "late\n"}));
    let (events, close) = late.rest();
    let (refusals, replay): (Vec<_>, Vec<_>) = events.iter().partition(|(e, _)| e == "error");
    let names: Vec<&str> = replay.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["status", "stdout", "done"], "{events:?}");
    for (_, refusal) in refusals {
        assert!(
            refusal["message"].as_str().unwrap().contains("final"),
            "{refusal}"
        );
    }
    assert_eq!(close, Some(CloseCode::Normal));
}

/// Closing the socket that holds stdin closes stdin: the run reads end of
/// file and finishes. Stdin is its creator's alone, and only an
/// interactive execution's.
#[test]
fn stdin_is_the_creator_s_and_ends_with_its_socket() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_component("echo", kiln_components::ECHO_LINES);
    let id = start_interactive(
        &kiln,
        "echo",
        json!({"interactive": true, "timeout_ms": 60_000}),
    );

    // Another user who may read executions watches, but cannot type.
    let (_, other) = kiln.create_user("watcher", "developer");
    let mut watcher = Socket::open(&kiln, &id, &other).unwrap();
    watcher.send_json(json!({"event": "stdin", "data": "x\n"}));
    let (event, error) = watcher.event();
    assert_eq!(event, "error");
    assert_eq!(error["code"], "PERMISSION_DENIED");
    assert!(
        error["message"].as_str().unwrap().contains("creator"),
        "{error}"
    );

    // The creator's socket that only watches leaves stdin to the next.
    let mut looking = Socket::open(&kiln, &id, &kiln.token).unwrap();
    let mut socket = Socket::open(&kiln, &id, &kiln.token).unwrap();
    socket.send_json(json!({"event": "stdin", "data": "only\n"}));
    assert_eq!(looking.stdout(), "echo: only\n");
    drop(looking);
    assert_eq!(socket.stdout(), "echo: only\n");
    drop(socket);
    let done = kiln.poll_until_final(&id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "echo: only\nread 1 lines\n");

    // Not interactive: its stdin was fixed when it started.
    kiln.create_component("sleeper", kiln_components::SLEEPER);
    let fixed = start_interactive(&kiln, "sleeper", json!({"timeout_ms": 60_000}));
    let mut socket = Socket::open(&kiln, &fixed, &kiln.token).unwrap();
    assert_eq!(socket.stdout(), "going to sleep\n");
    socket.send_json(json!({"event": "stdin", "data": "x"}));
    let (event, error) = socket.event();
    assert_eq!(event, "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not interactive"),
        "{error}"
    );
    cancelled_while_watched(&kiln, &fixed, socket);
}

/// No one waits forever on a socket: an interactive run nobody writes to
/// stops at its deadline, and a message past the socket's bound closes it
/// (before it took stdin, so another socket still can).
#[test]
fn an_interactive_run_keeps_its_deadline_and_a_huge_message_closes_the_socket() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_component("echo", kiln_components::ECHO_LINES);
    let id = start_interactive(
        &kiln,
        "echo",
        json!({"interactive": true, "timeout_ms": 1_000}),
    );
    let done = kiln.poll_until_final(&id);
    assert_eq!(done["status"], "timeout", "{done}");

    let id = start_interactive(
        &kiln,
        "echo",
        json!({"interactive": true, "timeout_ms": 60_000}),
    );
    let mut socket = Socket::open(&kiln, &id, &kiln.token).unwrap();
    socket.send(Message::Binary(vec![b'x'; 300 << 10].into()));
    let (_, close) = socket.rest();
    assert_eq!(close, Some(CloseCode::Size), "1009: the message is too big");
    // It sent nothing, so stdin is still there for the next socket.
    let mut next = Socket::open(&kiln, &id, &kiln.token).unwrap();
    next.send_json(json!({"event": "stdin", "data": "small\n"}));
    next.send_json(json!({"event": "eof"}));
    let (events, _) = next.rest();
    let done = &events.last().unwrap().1;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["stdout"], "echo: small\nread 1 lines\n");
}

/// The route answers a plain request, a missing execution and a missing
/// token in the API's error shape.
#[test]
fn the_socket_route_refuses_in_the_api_s_shape() {
    let (kiln, _dir) = Kiln::start(&[]);
    let plain = kiln.get("/v1/executions/nope/ws").send().unwrap();
    assert_eq!(plain.headers()["upgrade"], "websocket");
    error_body(plain, 426, "UPGRADE_REQUIRED");
    let status_of = |error: tungstenite::Error| match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("{other}"),
    };
    let missing = Socket::open(&kiln, "nope", &kiln.token).err().unwrap();
    assert_eq!(status_of(missing), 404);
    let anonymous = Socket::open(&kiln, "nope", "").err().unwrap();
    assert_eq!(status_of(anonymous), 401);
}

/// A Python script reads its socket's lines from `sys.stdin`, as a
/// program at a terminal would.
#[test]
fn a_python_script_reads_sys_stdin_from_its_socket() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_script(
        "shout",
        "python",
        "import sys\n\ndef main():\n    for line in sys.stdin:\n        print(line.strip().upper(), flush=True)\n    return 'bye'\n",
    );
    let id = start_interactive(
        &kiln,
        "shout",
        json!({"interactive": true, "timeout_ms": 120_000}),
    );
    let mut socket = Socket::open(&kiln, &id, &kiln.token).unwrap();
    socket.send_json(json!({"event": "stdin", "data": "hello\n"}));
    assert_eq!(socket.stdout(), "HELLO\n");
    socket.send_json(json!({"event": "stdin", "data": "again\n"}));
    assert_eq!(socket.stdout(), "AGAIN\n");
    socket.send_json(json!({"event": "eof"}));
    let (events, _) = socket.rest();
    assert_eq!(events.last().unwrap().1["result"], "bye", "{events:?}");
}

/// An interactive run is answered at once (its stdin needs its id), so
/// asking to wait for it is refused; a chunk the run never reads waits,
/// bounded, and a cancel still ends the run and the socket at once.
#[test]
fn an_interactive_run_is_not_waited_for_and_unread_stdin_does_not_hold_it() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_component("sleeper", kiln_components::SLEEPER);
    let waited = kiln.execute("sleeper", "?wait=true", json!({"interactive": true}));
    error_body(waited, 400, "VALIDATION_ERROR");
    let adhoc = kiln
        .post("/v1/execute")
        .json(&json!({"language": "javascript", "code": "function main() {}", "interactive": true}))
        .send()
        .unwrap();
    assert_eq!(adhoc.status(), 202, "the ad-hoc route answers at once too");

    let id = start_interactive(
        &kiln,
        "sleeper",
        json!({"interactive": true, "timeout_ms": 60_000}),
    );
    let mut socket = Socket::open(&kiln, &id, &kiln.token).unwrap();
    assert_eq!(socket.stdout(), "going to sleep\n");
    // 1 MiB the sleeping guest never reads: more than the run's buffer.
    for _ in 0..16 {
        socket.send(Message::Binary(vec![b'x'; 64 << 10].into()));
    }
    cancelled_while_watched(&kiln, &id, socket);
}

/// An open socket keeps its connection's place after the upgrade: the
/// per-address cap counts it, and the place is free again once it closes.
#[test]
fn open_sockets_count_against_the_connection_cap() {
    let (kiln, _dir) = Kiln::start(&[("KILN_SERVER_MAX_CONNECTIONS_PER_IP", "4")]);
    kiln.create_component("sleeper", kiln_components::SLEEPER);
    let id = start_interactive(
        &kiln,
        "sleeper",
        json!({"interactive": true, "timeout_ms": 60_000}),
    );
    // The suite's own client may hold one idle connection too.
    let mut sockets = Vec::new();
    while let Ok(socket) = Socket::open(&kiln, &id, &kiln.token) {
        sockets.push(socket);
        assert!(
            sockets.len() <= 4,
            "a fifth socket from one address was let in"
        );
    }
    assert!(sockets.len() >= 3, "only {} sockets", sockets.len());
    let fresh = reqwest::blocking::Client::new();
    let healthz = format!("{}/healthz", kiln.base);
    assert!(
        fresh.get(&healthz).send().is_err(),
        "refused while the sockets are open"
    );
    drop(sockets);
    crate::harness::eventually("a place once the sockets closed", || {
        let fresh = reqwest::blocking::Client::new();
        fresh
            .get(&healthz)
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
}

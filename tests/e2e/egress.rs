//! Scripts' outbound HTTP against an upstream server on 127.0.0.1 that the
//! test runs (allowed by `egress.allow_private_hosts`): JavaScript `fetch`,
//! Python `kiln.http` and a component's `wasi:http` request reach it; hosts
//! outside a script's list, redirects out of it, a private address reached
//! through DNS and an oversized answer are refused; every request is in the
//! execution record and in `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::harness::{Kiln, sample};

/// An upstream that answers a few fixed routes and keeps each request's
/// method and path.
pub(crate) struct Upstream {
    pub(crate) port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

/// The body `/big` answers with: past the 1 MiB cap the tests set.
const BIG_BYTES: usize = (1 << 20) + 1;

impl Upstream {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = log.clone();
                std::thread::spawn(move || answer(stream, port, &log));
            }
        });
        Self { port, seen }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(stream: std::net::TcpStream, port: u16, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut length = 0;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.trim().split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    log.lock().unwrap().push(format!("{method} {path}"));
    let (status, location, content_type, reply): (u16, Option<String>, &str, Vec<u8>) = match path
        .split('?')
        .next()
        .unwrap_or_default()
    {
        "/hello" => (
            200,
            None,
            "application/json",
            br#"{"hello":"world"}"#.to_vec(),
        ),
        "/echo" => {
            let echoed = json!({
                "method": method,
                "body": String::from_utf8_lossy(&body),
                "authorization": headers.iter().find(|(n, _)| n == "authorization").map(|(_, v)| v),
            });
            (
                200,
                None,
                "application/json",
                echoed.to_string().into_bytes(),
            )
        }
        "/redirect-in" => (302, Some("/hello".into()), "text/plain", Vec::new()),
        "/redirect-out" => (
            302,
            Some("http://elsewhere.invalid/hello".into()),
            "text/plain",
            Vec::new(),
        ),
        "/redirect-port" => (
            307,
            Some(format!("http://127.0.0.1:{}/hello", port.wrapping_add(1))),
            "text/plain",
            Vec::new(),
        ),
        "/big" => (200, None, "text/plain", vec![b'y'; BIG_BYTES]),
        _ => (404, None, "text/plain", b"no such route".to_vec()),
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.len()
    );
    if let Some(location) = location {
        head.push_str(&format!("location: {location}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply);
}

fn kiln() -> (Kiln, tempfile::TempDir) {
    Kiln::start(&[
        ("KILN_EGRESS_ALLOW_PRIVATE_HOSTS", "127.0.0.1"),
        ("KILN_EGRESS_MAX_RESPONSE_BYTES", "1048576"),
    ])
}

fn create(kiln: &Kiln, body: Value) -> Value {
    let response = kiln.post("/v1/scripts").json(&body).send().unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
    response.json().unwrap()
}

fn requests_of(execution: &Value) -> Vec<Value> {
    execution["http_requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn javascript_python_and_a_component_reach_an_allowed_host_and_every_request_is_recorded() {
    let upstream = Upstream::start();
    let (kiln, _data) = kiln();
    let base = upstream.base();
    let allowed = json!([format!("127.0.0.1:{}", upstream.port)]);
    let js = format!(
        r#"export default async function () {{
             const hello = await (await fetch("{base}/hello")).json();
             const echo = await fetch("{base}/echo", {{ method: "POST", body: "ping",
                                       headers: {{ authorization: "Bearer t" }} }});
             const moved = await fetch("{base}/redirect-in");
             return {{ hello, echo: await echo.json(), moved: moved.status, redirected: moved.redirected }};
           }}"#
    );
    let script = create(
        &kiln,
        json!({"name": "caller", "language": "javascript", "content": js, "allowed_hosts": allowed}),
    );
    assert_eq!(script["allowed_hosts"], allowed);
    let execution = kiln.run("caller", json!({}));
    assert_eq!(execution["status"], "completed", "{execution}");
    assert_eq!(
        execution["result"],
        json!({"hello": {"hello": "world"},
               "echo": {"method": "POST", "body": "ping", "authorization": "Bearer t"},
               "moved": 200, "redirected": true})
    );
    let requests = requests_of(&execution);
    let host = format!("127.0.0.1:{}", upstream.port);
    let summary: Vec<(String, String, String, u64)> = requests
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_owned(),
                r["host"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET".into(), host.clone(), "/hello".into(), 200),
            ("POST".into(), host.clone(), "/echo".into(), 200),
            ("GET".into(), host.clone(), "/hello".into(), 200),
        ]
    );
    assert_eq!(requests[0]["bytes"], 17);
    assert!(requests.iter().all(|r| r["ms"].is_u64()));

    let py = format!(
        "import kiln.http\n\ndef main():\n    r = kiln.http.get('{base}/hello', params={{'q': 'x'}})\n    return {{'status': r.status_code, 'body': r.json()}}\n"
    );
    create(
        &kiln,
        json!({"name": "py-caller", "language": "python", "content": py, "allowed_hosts": allowed}),
    );
    let execution = kiln.run("py-caller", json!({}));
    assert_eq!(
        execution["result"],
        json!({"status": 200, "body": {"hello": "world"}}),
        "{execution}"
    );
    assert_eq!(requests_of(&execution).len(), 1);

    let component = kiln.create_component("fetcher", kiln_components::FETCH);
    let response = kiln
        .request(
            reqwest::Method::PUT,
            &format!("/v1/scripts/{}", component["id"].as_str().unwrap()),
        )
        .json(&json!({"allowed_hosts": allowed}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let execution = kiln.run(
        "fetcher",
        json!({"env": {"FETCH_URL": format!("{base}/hello")}}),
    );
    assert_eq!(
        execution["stdout"], "status 200\nbody {\"hello\":\"world\"}\n",
        "{execution}"
    );
    assert_eq!(requests_of(&execution)[0]["path"], "/hello");

    // Ad-hoc code names its own hosts.
    let response = kiln
        .post("/v1/execute")
        .json(&json!({"language": "javascript", "allowed_hosts": allowed,
                      "code": format!("export default async () => (await fetch('{base}/hello')).status")}))
        .send()
        .unwrap();
    let execution: Value = response.json().unwrap();
    assert_eq!(execution["result"], 200, "{execution}");

    let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
    assert!(
        sample(&metrics, r#"kiln_egress_requests_total{outcome="ok"}"#).is_some_and(|n| n >= 6.0),
        "{metrics}"
    );
}

#[test]
fn hosts_outside_the_list_private_addresses_and_oversized_answers_are_refused() {
    let upstream = Upstream::start();
    let (kiln, _data) = kiln();
    let base = upstream.base();
    let port = upstream.port;
    // `localhost` is allowed by the script, but resolves to a loopback
    // address the operator did not allow by that name.
    let allowed = json!([format!("127.0.0.1:{port}"), format!("localhost:{port}")]);
    let js = format!(
        r#"export default async function () {{
             const tries = ["http://127.0.0.1:{other}/hello", "{base}/redirect-out",
                            "{base}/redirect-port", "http://localhost:{port}/hello", "{base}/big",
                            "http://169.254.169.254/latest/meta-data/", "ftp://127.0.0.1/"];
             const out = [];
             for (const url of tries) {{
               try {{ const r = await fetch(url); out.push("answered " + r.status); }}
               catch (e) {{ out.push(e.cause + ": " + e.message); }}
             }}
             return out;
           }}"#,
        other = port.wrapping_add(1),
    );
    create(
        &kiln,
        json!({"name": "prober", "language": "javascript", "content": js, "allowed_hosts": allowed}),
    );
    let execution = kiln.run("prober", json!({}));
    assert_eq!(execution["status"], "completed", "{execution}");
    let out: Vec<String> = serde_json::from_value(execution["result"].clone()).unwrap();
    let expect = [
        format!("denied: fetch http://127.0.0.1:{}/hello: 127.0.0.1:{} is not in this script's allowed hosts", port.wrapping_add(1), port.wrapping_add(1)),
        format!("denied: fetch {base}/redirect-out: elsewhere.invalid:80 is not in this script's allowed hosts"),
        format!("denied: fetch {base}/redirect-port: 127.0.0.1:{} is not in this script's allowed hosts", port.wrapping_add(1)),
        "denied: fetch http://localhost:".to_string(),
        format!("limit: fetch {base}/big: the response body is over 1048576 bytes (egress.max_response_bytes)"),
        "denied: fetch http://169.254.169.254/latest/meta-data/: 169.254.169.254:80 is not in this script's allowed hosts".to_string(),
        "invalid: fetch ftp://127.0.0.1/: ftp://127.0.0.1/: only http and https URLs can be reached".to_string(),
    ];
    assert_eq!(out.len(), expect.len(), "{out:?}");
    for (got, want) in out.iter().zip(&expect) {
        assert!(
            got.starts_with(want.as_str()),
            "{got:?} does not start with {want:?}"
        );
    }
    assert!(
        out[3].contains("a loopback address, where requests may not go"),
        "{}",
        out[3]
    );
    // Only what was allowed reached the upstream: the redirects' first
    // legs and the oversized answer.
    assert_eq!(
        upstream.seen(),
        ["GET /redirect-out", "GET /redirect-port", "GET /big"]
    );
    let requests = requests_of(&execution);
    assert_eq!(requests.len(), expect.len());
    assert!(
        requests
            .iter()
            .all(|r| r["error"].is_string() && r.get("status").is_none())
    );

    // A script that lists no hosts may reach none.
    kiln.create_script(
        "sealed",
        "javascript",
        &format!("export default async () => {{ try {{ await fetch('{base}/hello'); }} catch (e) {{ return e.message; }} }}"),
    );
    let sealed = kiln.run("sealed", json!({}));
    assert!(
        sealed["result"]
            .as_str()
            .is_some_and(|m| m.ends_with("(it allows none; set the script's allowed_hosts)")),
        "{sealed}"
    );

    let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
    assert!(
        sample(&metrics, r#"kiln_egress_requests_total{outcome="denied"}"#)
            .is_some_and(|n| n >= 5.0),
        "{metrics}"
    );
}

#[test]
fn a_bad_host_pattern_is_refused_at_upload() {
    let (kiln, _data) = Kiln::start(&[]);
    for (pattern, reason) in [
        ("https://api.example.com", "no scheme or path"),
        ("a.*.example.com", "a wildcard may only start the pattern"),
        ("api.example.com:http", "the port is not a number"),
    ] {
        let response = kiln
            .post("/v1/scripts")
            .json(&json!({"name": "bad", "language": "javascript",
                          "content": "function main() {}", "allowed_hosts": [pattern]}))
            .send()
            .unwrap();
        let body = crate::harness::error_body(response, 400, "VALIDATION_ERROR");
        assert!(body.to_string().contains(reason), "{pattern}: {body}");
    }
}

//! One tenant, or nobody at all, throwing what an attacker would at a real
//! `kiln serve`: each attack gets its 4xx or failed execution, the server's
//! memory stays under a bound while it runs, `/healthz` keeps answering, and
//! an ordinary user's upload and run still succeed.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::json;

use crate::harness::{Kiln, error_body, rss_bytes_of};

const MIB: u64 = 1 << 20;

/// Samples the server's RSS and `/healthz` latency every 50 ms until
/// dropped or read.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<Duration>)>>,
}

impl Watch {
    fn start(kiln: &Kiln) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, base, pid) = (stop.clone(), kiln.base.clone(), kiln.pid());
        let pid_rss = move || rss_bytes_of(pid);
        let thread = std::thread::spawn(move || {
            let client = Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let (mut peak, mut latencies) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(pid_rss());
                let asked = Instant::now();
                let answer = client.get(format!("{base}/healthz")).send();
                let status = answer.map(|a| a.status().as_u16());
                assert!(
                    matches!(status, Ok(200)),
                    "/healthz after {:?}: {status:?}",
                    asked.elapsed()
                );
                latencies.push(asked.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak.max(pid_rss()), latencies)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; asserts the peak RSS stayed under `base + extra`
    /// and `/healthz` answered in under 100 ms (nine in ten times; all in
    /// under two seconds, on a CI machine whose two cores the rest of the
    /// suite loads too).
    fn finish(mut self, base: u64, extra: u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (peak, mut latencies) = self.thread.take().unwrap().join().unwrap();
        assert!(
            peak < base + extra,
            "RSS peaked at {} MiB, over {} + {} MiB",
            peak / MIB,
            base / MIB,
            extra / MIB
        );
        assert!(!latencies.is_empty());
        latencies.sort();
        let p90 = latencies[latencies.len() * 9 / 10];
        let max = latencies[latencies.len() - 1];
        assert!(p90 < Duration::from_millis(100), "/healthz p90 {p90:?}");
        assert!(max < Duration::from_secs(2), "/healthz max {max:?}");
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An ordinary user's day: upload a script and run it.
fn ordinary_user_succeeds(kiln: &Kiln, name: &str) {
    kiln.create_script(
        name,
        "javascript",
        "function main(p) { return {sum: p.a + p.b}; }",
    );
    let done = kiln.run(name, json!({"parameters": {"a": 2, "b": 3}}));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["sum"], 5, "{done}");
}

/// A core module whose one function nests `depth` blocks: a minute and
/// ~20 GB of Cranelift before validation limits existed.
fn nested_blocks(depth: usize) -> Vec<u8> {
    let text = format!(
        "(module (func (export \"_start\") (result i32) {}i32.const 0{}))",
        "(block (result i32) ".repeat(depth),
        ")".repeat(depth)
    );
    wat::parse_str(text).unwrap()
}

/// A module within every validation limit that still keeps Cranelift's
/// register allocator busy for many seconds: `functions` functions with
/// `locals` locals each, every local live across the whole body.
fn slow_to_compile(functions: usize, locals: usize, salt: u32) -> Vec<u8> {
    let mut text =
        String::from("(module (memory (export \"memory\") 1) (func (export \"_start\"))");
    for f in 0..functions {
        text.push_str(&format!("(func (export \"f{f}\") (result i32) (local"));
        text.push_str(&" i32".repeat(locals));
        text.push(')');
        for i in 0..locals {
            let (a, b) = ((i * 7 + 3) % locals, (i * 13 + 5) % locals);
            text.push_str(&format!(
                "(local.set {i} (i32.add (local.get {a}) (i32.mul (local.get {b}) (i32.const {}))))",
                i as u32 ^ salt
            ));
        }
        text.push_str("(i32.const 0)");
        for i in 0..locals {
            text.push_str(&format!("(local.get {i}) i32.add "));
        }
        text.push(')');
    }
    text.push(')');
    wat::parse_str(text).unwrap()
}

fn upload_wasm(kiln: &Kiln, name: &str, bytes: Vec<u8>) -> reqwest::blocking::Response {
    kiln.post(&format!("/v1/scripts?name={name}"))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .unwrap()
}

#[test]
fn compile_bombs_are_refused_before_cranelift_and_the_node_keeps_serving() {
    let (kiln, _dir) = Kiln::start(&[]);
    ordinary_user_succeeds(&kiln, "before");
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    let bombs: Vec<_> = (0..3)
        .map(|i| {
            let (base_url, token) = (kiln.base.clone(), kiln.token.clone());
            std::thread::spawn(move || {
                Client::new()
                    .post(format!("{base_url}/v1/scripts?name=bomb{i}"))
                    .bearer_auth(token)
                    .header("content-type", "application/wasm")
                    .body(nested_blocks(100_000 + i))
                    .send()
                    .unwrap()
            })
        })
        .collect();
    for bomb in bombs {
        let body = error_body(bomb.join().unwrap(), 422, "COMPILE_ERROR");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("control_depth"), "{body}");
    }
    // Thousands of locals, each used: refused by count, before any compile.
    let locals = upload_wasm(&kiln, "locals", slow_to_compile(1, 4_000, 0));
    let body = error_body(locals, 422, "COMPILE_ERROR");
    assert!(body.to_string().contains("function_locals"), "{body}");
    ordinary_user_succeeds(&kiln, "after");
    watch.finish(base, 512 * MIB);
    // Nothing of them was kept.
    let listed: serde_json::Value = kiln.get("/v1/scripts").send().unwrap().json().unwrap();
    assert_eq!(listed["pagination"]["total_elements"], 2, "{listed}");
}

/// Bytes no earlier run compiled (test servers share a cache) that keep a
/// compile busy for about a second per 40 `functions`.
fn fresh_slow_module(functions: usize, salt: u32) -> Vec<u8> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    slow_to_compile(functions, 990, run ^ salt)
}

#[test]
fn a_compile_past_its_deadline_is_killed_and_named() {
    let (kiln, _dir) = Kiln::start(&[("KILN_LIMITS_COMPILE_TIMEOUT_MS", "200")]);
    ordinary_user_succeeds(&kiln, "before");
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    let started = Instant::now();
    let answer = upload_wasm(&kiln, "slow", fresh_slow_module(40, 0));
    let body = error_body(answer, 422, "COMPILE_ERROR");
    assert_eq!(
        body["error"]["details"][0]["field"], "limits.compile_timeout_ms",
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "killed late");
    ordinary_user_succeeds(&kiln, "after");
    watch.finish(base, 256 * MIB);
}

/// A new node (nothing in its artifact cache) compiles both language
/// runtimes in children, not held to the bounds of tenants' compiles. It
/// answers `/readyz` 503 until they are loaded, saying which and for how
/// long, and says so on stdout; a run that waited for a runtime says how
/// long in its record, and one after does not wait.
#[test]
fn a_first_start_compiles_the_runtimes_in_children_and_says_so() {
    let _alone = crate::harness::machine_to_myself();
    // An empty cache of its own, and bounds no runtime compile could meet.
    let (cache, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut kiln = Kiln::launch(
        data.path(),
        &[
            ("KILN_SERVER_CACHE_DIR", cache.path().to_str().unwrap()),
            ("KILN_LIMITS_COMPILE_TIMEOUT_MS", "200"),
            ("KILN_LIMITS_COMPILE_MEMORY_MB", "64"),
        ],
        std::process::Stdio::inherit(),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let readyz = |kiln: &Kiln| {
        let answer = kiln
            .anonymous(reqwest::Method::GET, "/readyz")
            .send()
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<serde_json::Value>().unwrap(),
        )
    };
    // `/readyz` names what it loads, and for how long; JavaScript first.
    let python = loop {
        let (status, body) = readyz(&kiln);
        assert_eq!(status, 503, "ready before Python was seen loading: {body}");
        let message = body["error"]["message"].as_str().unwrap().to_owned();
        if message.contains("the Python runtime") {
            break message;
        }
        // "starting" alone until the loading task has begun.
        assert!(
            message == "starting" || message.contains("loading the JavaScript runtime"),
            "{message}"
        );
        assert!(Instant::now() < deadline, "{message}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        python.starts_with("starting: loading the Python runtime, ")
            && python.contains(" s so far"),
        "{python}"
    );
    // A run submitted meanwhile waits for the runtime, and says how long.
    let login = loop {
        let login = kiln.login("admin", crate::harness::ADMIN_PASSWORD);
        if login.status() == 200 || Instant::now() > deadline {
            break login;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kiln.token = login.json::<serde_json::Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = json!({"language": "python", "code": "def main():\n    return 42\n"});
    let first = kiln
        .post("/v1/execute?async=true")
        .json(&code)
        .send()
        .unwrap();
    assert_eq!(first.status(), 202);
    let id = first.json::<serde_json::Value>().unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Python compiles for tens of seconds: the run was claimed while it did.
    assert_eq!(
        readyz(&kiln).0,
        503,
        "Python loaded before the run was queued"
    );
    kiln.wait_ready();
    let first = kiln.poll_until_final(&id);
    assert_eq!(first["result"], 42, "{first}");
    let waited = first["compile_wait_ms"].as_u64().expect("a wait recorded");
    let ran = first["duration_ms"].as_u64().unwrap();
    assert!(
        waited > ran,
        "the wait ({waited} ms) is not in duration_ms ({ran} ms)"
    );
    let again: serde_json::Value = kiln
        .post("/v1/execute?wait=true")
        .json(&code)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["result"], 42, "{again}");
    assert_eq!(again["compile_wait_ms"], serde_json::Value::Null, "{again}");
    // The line is printed just before the node turns ready; the harness's
    // reader may store it a moment later.
    crate::harness::eventually("the start-up's lines", || {
        let printed = kiln.printed();
        let said = |line: &str| printed.iter().any(|printed| printed.starts_with(line));
        (said("Compiling the Python runtime for this machine (a first start only)")
            && said("The Python runtime is ready: compiled in "))
        .then_some(())
    });

    ordinary_user_succeeds(&kiln, "first");
    let artifacts = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "cwasm"))
        .count();
    assert_eq!(
        artifacts, 2,
        "both language runtimes, compiled by children at start"
    );
    // A tenant's compile is held to those bounds.
    let answer = upload_wasm(&kiln, "slow", fresh_slow_module(40, 3));
    error_body(answer, 422, "COMPILE_ERROR");
}

#[test]
fn a_user_has_so_many_compiles_in_flight() {
    let (kiln, _dir) = Kiln::start(&[("KILN_LIMITS_COMPILES_PER_USER", "1")]);
    let second = fresh_slow_module(40, 2);
    let first = {
        let (base_url, token) = (kiln.base.clone(), kiln.token.clone());
        // Long enough to be still compiling when the second upload comes.
        let bytes = fresh_slow_module(120, 1);
        std::thread::spawn(move || {
            Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap()
                .post(format!("{base_url}/v1/scripts?name=first"))
                .bearer_auth(token)
                .header("content-type", "application/wasm")
                .body(bytes)
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_for_gauge(&kiln, "kiln_compiles_in_flight");
    let second = upload_wasm(&kiln, "second", second);
    let body = error_body(second, 429, "RATE_LIMIT_EXCEEDED");
    assert!(
        body.to_string().contains("limits.compiles_per_user"),
        "{body}"
    );
    assert_eq!(first.join().unwrap(), 201, "the first compile went on");
}

#[test]
fn a_function_cannot_make_the_host_hold_unbounded_header_fields() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_component("hoard", kiln_components::HTTP_HELLO);
    assert_eq!(
        kiln.anonymous(reqwest::Method::GET, "/fn/hoard/")
            .bearer_auth(&kiln.token)
            .send()
            .unwrap()
            .status(),
        200
    );
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    // 60 KB values pass the size of one set of fields; 15 KB ones pass the
    // number of resources a run may hold. Either way the run fails.
    for size in [60 << 10, 15 << 10] {
        for _ in 0..3 {
            let answer = kiln
                .anonymous(reqwest::Method::GET, &format!("/fn/hoard/fields?{size}"))
                .bearer_auth(&kiln.token)
                .send()
                .unwrap();
            let body = error_body(answer, 502, "MEMORY_LIMIT");
            assert!(body.to_string().contains("host"), "{size}: {body}");
        }
    }
    ordinary_user_succeeds(&kiln, "after");
    watch.finish(base, 64 * MIB);
}

#[test]
fn anonymous_floods_grow_neither_metrics_nor_the_store() {
    let (kiln, dir) = Kiln::start(&[]);
    let metrics_before = kiln.get("/metrics").send().unwrap().text().unwrap().len();
    let store_before = dir_size(dir.path());
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    let client = Client::new();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("M{i:0>2000}").as_bytes()).unwrap();
        let answer = client
            .request(method, format!("{}/fn/nothing/x", kiln.base))
            .send()
            .unwrap();
        assert!(answer.status().is_client_error(), "{}", answer.status());
    }
    // 2 MB usernames never reach the password check or the audit log: 413
    // after 8 KiB, and the server may close the connection before the
    // client has sent the rest.
    for _ in 0..3 {
        let huge = "u".repeat(2 << 20);
        let answer = client
            .post(format!("{}/v1/auth/login", kiln.base))
            .json(&json!({"username": huge, "password": "whatever"}))
            .send();
        if let Ok(answer) = answer {
            assert_eq!(answer.status(), 413);
        }
    }
    let long = kiln.login(&"u".repeat(65), "whatever");
    let body = error_body(long, 400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"][0]["field"], "username", "{body}");
    // A period ending inside a multi-byte character once panicked.
    let period = kiln
        .get("/v1/analytics/usage?period=1%C3%A9")
        .send()
        .unwrap();
    error_body(period, 400, "VALIDATION_ERROR");
    watch.finish(base, 64 * MIB);
    let metrics_after = kiln.get("/metrics").send().unwrap().text().unwrap();
    assert!(
        metrics_after.len() < metrics_before + 16 * 1024,
        "/metrics grew from {metrics_before} to {} bytes",
        metrics_after.len()
    );
    assert!(metrics_after.contains(r#"method="OTHER""#));
    let grown = dir_size(dir.path()).saturating_sub(store_before);
    assert!(grown < 4 * MIB, "the data dir grew by {grown} bytes");
}

#[test]
fn slow_and_surplus_connections_are_closed() {
    let (kiln, _dir) = Kiln::start(&[
        ("KILN_SERVER_HEADER_READ_TIMEOUT_MS", "500"),
        ("KILN_SERVER_MAX_CONNECTIONS_PER_IP", "8"),
    ]);
    let address = kiln.base.trim_start_matches("http://").to_owned();
    // Eight connections that never finish their headers hold every place
    // this address has.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut surplus = TcpStream::connect(&address).unwrap();
    surplus
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = surplus.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = surplus.read_to_end(&mut answer);
    assert!(answer.is_empty(), "the ninth connection was served");
    // Past the header timeout the server closes the slow ones itself.
    let started = Instant::now();
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "a request without its end of headers was served"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
    let refused = crate::harness::sample(&metrics, "kiln_connections_refused_total").unwrap();
    assert!(refused >= 1.0, "{refused}");
    // A body that stops halfway is given up on after the same timeout.
    let mut stalled = TcpStream::connect(&address).unwrap();
    stalled
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"username\": ",
        )
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a stalled body was answered {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    ordinary_user_succeeds(&kiln, "after");
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// What one `/events` stream carried once it ended: bytes of stdout and
/// stderr data, and the final status.
#[derive(Debug, PartialEq)]
struct Streamed {
    stdout: usize,
    stderr: usize,
    status: String,
}

/// Reads an SSE response to its end, or until a stderr event ends with
/// `last_line`.
fn read_stream(response: reqwest::blocking::Response, last_line: Option<&str>) -> Streamed {
    use std::io::BufRead as _;
    let mut seen = Streamed {
        stdout: 0,
        stderr: 0,
        status: String::new(),
    };
    let mut event = String::new();
    for line in std::io::BufReader::new(response).lines() {
        let line = line.unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: serde_json::Value = serde_json::from_str(data).unwrap();
            match event.as_str() {
                "stdout" => seen.stdout += data["data"].as_str().unwrap().len(),
                "stderr" => {
                    let text = data["data"].as_str().unwrap();
                    seen.stderr += text.len();
                    if last_line.is_some_and(|last| text.ends_with(last)) {
                        break;
                    }
                }
                _ => seen.status = data["status"].as_str().unwrap().to_owned(),
            }
        }
    }
    seen
}

#[test]
fn live_output_costs_its_bytes_once_however_many_watch_it() {
    // A quarter of the default caps keeps the run short on a debug build.
    let (kiln, _dir) = Kiln::start(&[("KILN_LIMITS_OUTPUT_BYTES", "262144")]);
    // A quarter of a million one-byte lines, alternating between the
    // streams (as much as the caps keep), a last line to say so, then a
    // spin until cancelled: streams opened now get the whole backlog.
    kiln.create_script(
        "flood",
        "javascript",
        "function main() { for (let i = 0; i < 131071; i++) { console.log('x'); console.error('y'); } \
         console.log('x'); console.error('E'); for (;;) {} }",
    );
    ordinary_user_succeeds(&kiln, "before");
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    let accepted: serde_json::Value = kiln
        .execute("flood", "", json!({"timeout_ms": 120_000}))
        .json()
        .unwrap();
    let id = accepted["execution_id"].as_str().unwrap().to_owned();
    let open = || {
        kiln.get(&format!("/v1/executions/{id}/events"))
            .send()
            .unwrap()
    };
    // Once a stream has seen the last line, all output is written (a
    // stream that falls behind skips the oldest chunks, never the newest).
    read_stream(open(), Some("E\n"));
    let streams: Vec<_> = (0..16)
        .map(|_| {
            let response = open();
            assert_eq!(response.status(), 200);
            std::thread::spawn(move || read_stream(response, None))
        })
        .collect();
    let refused = open();
    let body = error_body(refused, 429, "RATE_LIMIT_EXCEEDED");
    assert!(body.to_string().contains("16 event streams"), "{body}");
    ordinary_user_succeeds(&kiln, "during");
    let cancelled = kiln
        .post(&format!("/v1/executions/{id}/cancel"))
        .send()
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    for stream in streams {
        let seen = stream.join().unwrap();
        let whole = Streamed {
            stdout: 256 << 10,
            stderr: 256 << 10,
            status: "cancelled".into(),
        };
        assert_eq!(seen, whole);
    }
    watch.finish(base, 64 * MIB);
}

#[test]
fn webhook_events_carry_an_excerpt_not_the_whole_output() {
    use crate::webhooks::{FAST_RETRIES, Receiver, create_webhook};
    let (kiln, _dir) = Kiln::start(&FAST_RETRIES);
    let receiver = Receiver::start(0);
    for _ in 0..20 {
        create_webhook(&kiln, &receiver.url, json!(["execution.completed"]));
    }
    kiln.create_script(
        "loud",
        "javascript",
        "function main() { console.log('x'.repeat(1048575)); return 'ok'; }",
    );
    ordinary_user_succeeds(&kiln, "before");
    receiver.wait_for("the ordinary run's events", |got| got.len() == 20);
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    let done = kiln.run("loud", json!({}));
    assert_eq!(done["stdout"].as_str().unwrap().len(), 1 << 20);
    let events = receiver.wait_for("20 more events", |got| got.len() == 40);
    for event in &events[20..] {
        assert!(event.body.len() < 32 << 10, "{} bytes", event.body.len());
        let event: serde_json::Value = serde_json::from_str(&event.body).unwrap();
        let execution = &event["data"];
        assert_eq!(execution["id"], done["id"], "{execution}");
        assert_eq!(execution["status"], "completed");
        assert_eq!(execution["stdout_truncated"], true);
        assert_eq!(execution["stdout"].as_str().unwrap().len(), 4 << 10);
    }
    ordinary_user_succeeds(&kiln, "after");
    watch.finish(base, 64 * MIB);
}

/// A command whose every instance holds the most core instances (32),
/// memories (4) and tables a component may, and spins.
fn instance_heavy() -> Vec<u8> {
    let mut text = String::from(
        "(component
           (core module $spin (memory 1) (table 1 funcref)
             (func (export \"run\") (result i32) (loop $l (br $l)) (i32.const 0)))
           (core module $memory (memory 1) (table 1 funcref))
           (core module $empty)
           (core instance $main (instantiate $spin))",
    );
    for _ in 0..3 {
        text.push_str("(core instance (instantiate $memory))");
    }
    for _ in 0..28 {
        text.push_str("(core instance (instantiate $empty))");
    }
    text.push_str(
        "(func $run (result (result)) (canon lift (core func $main \"run\")))
         (instance $run (export \"run\" (func $run)))
         (export \"wasi:cli/run@0.2.0\" (instance $run)))",
    );
    wat::parse_str(text).unwrap()
}

#[test]
fn components_built_to_the_maximum_cannot_keep_others_from_starting() {
    // Eight workers: seven for the attacker, one for everyone else. The
    // pool once held a quarter of its instances at the maximum, so five.
    let (kiln, _dir) = Kiln::start(&[("KILN_WORKERS_COUNT", "8")]);
    assert_eq!(upload_wasm(&kiln, "heavy", instance_heavy()).status(), 201);
    ordinary_user_succeeds(&kiln, "before");
    let base = kiln.rss_bytes();
    let watch = Watch::start(&kiln);
    let ids: Vec<String> = (0..7)
        .map(|_| {
            let accepted = kiln.execute("heavy", "", json!({"timeout_ms": 3000}));
            assert_eq!(accepted.status(), 202);
            let accepted: serde_json::Value = accepted.json().unwrap();
            accepted["execution_id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        crate::harness::eventually("started", || {
            (kiln.execution(id)["status"] != "queued").then_some(())
        });
    }
    ordinary_user_succeeds(&kiln, "during");
    for id in &ids {
        let done = kiln.poll_until_final(id);
        assert_eq!(done["status"], "timeout", "{done}");
    }
    watch.finish(base, 128 * MIB);
}

#[test]
fn an_upload_s_check_waits_for_a_worker_like_any_run() {
    use base64::Engine as _;
    let (kiln, _dir) = Kiln::start(&[
        ("KILN_WORKERS_COUNT", "1"),
        ("KILN_SERVER_MAX_BODY_BYTES", "2097152"),
    ]);
    ordinary_user_succeeds(&kiln, "before");
    let spinner = kiln
        .post("/v1/scripts")
        .json(&json!({
            "name": "spinner",
            "language": "wasm",
            "content_base64": base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(kiln_components::HTTP_HELLO).unwrap()),
            "limits": {"timeout_ms": 1500},
        }))
        .send()
        .unwrap();
    assert_eq!(spinner.status(), 201);
    // The one worker's turn is the spinning function's until its deadline,
    // which cannot come before 1.5 s from now.
    let started = Instant::now();
    let spin = {
        let (base_url, token) = (kiln.base.clone(), kiln.token.clone());
        std::thread::spawn(move || {
            Client::new()
                .get(format!("{base_url}/fn/spinner/spin"))
                .bearer_auth(token)
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_for_gauge(&kiln, "kiln_executions_running");
    // The upload's parse runs guest code: it waits for that turn.
    kiln.create_script("checked", "javascript", "function main() { return 1; }");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the check ran beside the function, {:?} in",
        started.elapsed()
    );
    assert_eq!(spin.join().unwrap(), 504);
}

/// Processes the server has started and not yet reaped.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
                .flat_map(|children| {
                    children
                        .split_whitespace()
                        .filter_map(|pid| pid.parse().ok())
                        .collect::<Vec<u32>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Uploads `bytes` as a script over a connection of its own, without
/// waiting for the answer, and returns the compiler child it started: the
/// connection stays open until dropped.
fn upload_until_compiling(kiln: &Kiln, bytes: &[u8]) -> (TcpStream, u32) {
    let mut client = TcpStream::connect(kiln.base.trim_start_matches("http://")).unwrap();
    let head = format!(
        "POST /v1/scripts?name=slow HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/wasm\r\ncontent-length: {}\r\n\r\n",
        kiln.token,
        bytes.len()
    );
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(bytes).unwrap();
    let child = crate::harness::eventually("a compiler child", || {
        children_of(kiln.pid()).first().copied()
    });
    (client, child)
}

/// Waits until the gauge `name` of `/metrics` is at least 1.
fn wait_for_gauge(kiln: &Kiln, name: &str) {
    crate::harness::eventually(name, || {
        let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
        (crate::harness::sample(&metrics, name)? >= 1.0).then_some(())
    });
}

#[test]
fn a_compile_nobody_waits_for_any_more_is_killed() {
    let (kiln, _dir) = Kiln::start(&[]);
    ordinary_user_succeeds(&kiln, "before");
    // Seconds of Cranelift, for a client that goes away once it has begun.
    let (client, _) = upload_until_compiling(&kiln, &fresh_slow_module(160, 4));
    drop(client);
    let gone = Instant::now();
    loop {
        let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
        let running = crate::harness::sample(&metrics, "kiln_compiles_in_flight");
        if running == Some(0.0) && children_of(kiln.pid()).is_empty() {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(1),
            "still compiling: {running:?}, children {:?}",
            children_of(kiln.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed: serde_json::Value = kiln.get("/v1/scripts").send().unwrap().json().unwrap();
    assert_eq!(listed["pagination"]["total_elements"], 1, "{listed}");
}

#[test]
fn a_compile_dies_with_its_server() {
    let (kiln, _dir) = Kiln::start(&[]);
    let (_client, child) = upload_until_compiling(&kiln, &fresh_slow_module(160, 5));
    // kill -9: nothing of the server runs to stop the child.
    kiln.kill();
    let killed = Instant::now();
    // Gone, or a zombie waiting for init to reap it, well before its
    // seconds of compiling were over.
    while std::fs::read_to_string(format!("/proc/{child}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2) != Some("Z"))
    {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the child lives on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_compile_past_its_memory_cap_is_stopped_and_named() {
    let (kiln, _dir) = Kiln::start(&[("KILN_LIMITS_COMPILE_MEMORY_MB", "64")]);
    let answer = upload_wasm(&kiln, "big", fresh_slow_module(40, 6));
    let body = error_body(answer, 422, "COMPILE_ERROR");
    assert_eq!(
        body["error"]["details"][0]["field"], "limits.compile_memory_mb",
        "{body}"
    );
    ordinary_user_succeeds(&kiln, "after");
}

//! Outgoing webhooks against a receiver on 127.0.0.1 that the test controls:
//! retries keep the webhook-id, signatures pass the stock Standard Webhooks
//! verifier, pending deliveries survive a crash, and internal destinations
//! are refused and never contacted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::json_of;
use crate::harness::{Kiln, error_body, eventually, sample};

/// One request the receiver got, and the status it answered.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    headers: Vec<(String, String)>,
    pub(crate) body: String,
    answered: u16,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// An HTTP receiver that answers 500 to its first `fail_first` requests and
/// 200 after, and keeps every request.
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    pub(crate) fn start(fail_first: usize) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), fail_first)
    }

    fn on(listener: TcpListener, fail_first: usize) -> Self {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let fail_first = Arc::new(AtomicUsize::new(fail_first));
        let (log, failing) = (received.clone(), fail_first.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else {
                        break;
                    };
                    headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let fail = failing
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let answered = if fail { 500 } else { 200 };
                log.lock().unwrap().push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                    answered,
                });
                let _ = write!(
                    stream,
                    "HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self {
            url,
            received,
            fail_first,
        }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received.
    pub(crate) fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(Instant::now() < deadline, "never {what}: {received:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub(crate) const FAST_RETRIES: [(&str, &str); 2] = [
    ("KILN_WEBHOOKS_ALLOW_PRIVATE", "true"),
    ("KILN_WEBHOOKS_RETRY_BASE_MS", "100"),
];

pub(crate) fn create_webhook(kiln: &Kiln, url: &str, events: Value) -> Value {
    json_of(
        kiln.post("/v1/webhooks")
            .json(&json!({"url": url, "events": events, "description": "e2e"}))
            .send()
            .unwrap(),
        201,
    )
}

/// Checks every request with the `standardwebhooks` package from PyPI.
fn verify_with_the_stock_verifier(secret: &str, requests: &[Received]) {
    let cases: Vec<Value> = requests
        .iter()
        .map(|r| {
            json!({"body": r.body, "headers": {
                "webhook-id": r.header("webhook-id"),
                "webhook-timestamp": r.header("webhook-timestamp"),
                "webhook-signature": r.header("webhook-signature"),
            }})
        })
        .collect();
    let script = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        secret, cases = sys.argv[1], json.loads(sys.stdin.read())\n\
        for case in cases:\n    Webhook(secret).verify(case['body'], case['headers'])\n\
        print(len(cases))\n";
    let mut child = std::process::Command::new(crate::harness::python())
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Standard Webhooks verifier refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        requests.len().to_string()
    );
    // And a tampered body must fail it, or the check above proves nothing.
    let mut tampered = requests[0].clone();
    tampered.body.push(' ');
    let bad = std::process::Command::new(crate::harness::python())
        .args([
            "-c",
            "import json, sys\nfrom standardwebhooks.webhooks import Webhook\n\
             case = json.loads(sys.argv[2])\nWebhook(sys.argv[1]).verify(case['body'], case['headers'])\n",
            secret,
            &json!({"body": tampered.body, "headers": {
                "webhook-id": tampered.header("webhook-id"),
                "webhook-timestamp": tampered.header("webhook-timestamp"),
                "webhook-signature": tampered.header("webhook-signature"),
            }})
            .to_string(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a tampered body verified");
}

#[test]
fn failed_deliveries_are_retried_with_the_same_id_and_signed_to_the_standard() {
    let (kiln, _dir) = Kiln::start(&FAST_RETRIES);
    let receiver = Receiver::start(2);
    let webhook = create_webhook(
        &kiln,
        &receiver.url,
        json!(["script.created", "execution.completed", "execution.failed"]),
    );
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{webhook}");
    let id = webhook["id"].as_str().unwrap().to_owned();
    let shown = kiln
        .get(&format!("/v1/webhooks/{id}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !shown.contains(&secret),
        "the secret is shown again: {shown}"
    );

    kiln.create_script(
        "hooked",
        "javascript",
        "function main(p) { return p.n * 2; }",
    );
    let received = receiver.wait_for("delivered script.created", |r| {
        r.iter().any(|r| r.answered == 200)
    });
    assert_eq!(received.len(), 3, "{received:#?}");
    let msg_id = received[0].header("webhook-id").to_owned();
    assert!(msg_id.starts_with("msg_"), "{msg_id}");
    for request in &received {
        assert_eq!(
            request.header("webhook-id"),
            msg_id,
            "a retry changed the id"
        );
        assert_eq!(request.body, received[0].body, "a retry changed the body");
        assert_eq!(request.header("content-type"), "application/json");
    }
    let event: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(event["type"], "script.created");
    assert_eq!(event["data"]["name"], "hooked");
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));

    let execution = kiln.run("hooked", json!({"parameters": {"n": 21}}));
    let received = receiver.wait_for("delivered execution.completed", |r| r.len() == 4);
    let event: Value = serde_json::from_str(&received[3].body).unwrap();
    assert_eq!(event["type"], "execution.completed");
    assert_eq!(event["data"]["id"], execution["id"]);
    assert_eq!(event["data"]["result"], 42);
    verify_with_the_stock_verifier(&secret, &received);

    // The attempt log, newest first. Kiln records an attempt after the
    // receiver has answered, so the last one may land a moment later.
    let log = eventually("four attempts logged", || {
        let log = json_of(
            kiln.get(&format!("/v1/webhooks/{id}/deliveries"))
                .send()
                .unwrap(),
            200,
        );
        (log["data"].as_array().map_or(0, Vec::len) >= 4).then_some(log)
    });
    let attempts = log["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{log}");
    let created: Vec<&Value> = attempts
        .iter()
        .filter(|a| a["event_type"] == "script.created")
        .collect();
    let outcomes: Vec<(&str, u64)> = created
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap(),
                a["status_code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("delivered", 200), ("retrying", 500), ("retrying", 500)]
    );
    assert_eq!(created[0]["attempt"], 3);
    assert!(created[1]["next_attempt_at"].is_string());
    assert!(created.iter().all(|a| a["msg_id"] == msg_id.as_str()));

    // A ping reaches a webhook whatever it subscribes to.
    let ping = json_of(
        kiln.post(&format!("/v1/webhooks/{id}/test"))
            .send()
            .unwrap(),
        202,
    );
    let received = receiver.wait_for("pinged", |r| r.len() == 5);
    // Pings go to a paused webhook too; events do not.
    assert_eq!(
        kiln.request(Method::PUT, &format!("/v1/webhooks/{id}"))
            .json(&json!({"active": false}))
            .send()
            .unwrap()
            .status(),
        200
    );
    kiln.create_script("unheard", "javascript", "function main() {}");
    kiln.post(&format!("/v1/webhooks/{id}/test"))
        .send()
        .unwrap();
    let all = receiver.wait_for("pinged while paused", |r| r.len() == 6);
    assert_eq!(
        serde_json::from_str::<Value>(&all[5].body).unwrap()["type"],
        "ping"
    );
    assert_eq!(
        received[4].header("webhook-id"),
        ping["msg_id"].as_str().unwrap()
    );
    assert_eq!(
        serde_json::from_str::<Value>(&received[4].body).unwrap()["type"],
        "ping"
    );

    // Counted once the receiver has answered, like the attempt log.
    let counted = |metrics: &str, outcome: &str| {
        sample(
            metrics,
            &format!(r#"kiln_webhook_deliveries_total{{outcome="{outcome}"}}"#),
        )
    };
    let metrics = eventually("four deliveries counted", || {
        let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
        (counted(&metrics, "delivered")? >= 4.0).then_some(metrics)
    });
    assert_eq!(counted(&metrics, "delivered"), Some(4.0), "{metrics}");
    assert_eq!(counted(&metrics, "retrying"), Some(2.0), "{metrics}");
}

#[test]
fn a_failed_scheduled_run_emits_schedule_failed() {
    let (kiln, _dir) = Kiln::start(&FAST_RETRIES);
    let receiver = Receiver::start(0);
    create_webhook(&kiln, &receiver.url, json!(["schedule.failed"]));
    let script = kiln.create_script(
        "broken",
        "javascript",
        "function main() { throw new Error('no'); }",
    );
    let schedule = json_of(
        kiln.post("/v1/schedules")
            .json(
                &json!({"name": "every second", "script_id": script["id"], "cron": "* * * * * *"}),
            )
            .send()
            .unwrap(),
        201,
    );
    let received = receiver.wait_for("sent schedule.failed", |r| !r.is_empty());
    let id = schedule["id"].as_str().unwrap();
    assert_eq!(
        kiln.request(Method::PUT, &format!("/v1/schedules/{id}"))
            .json(&json!({"active": false}))
            .send()
            .unwrap()
            .status(),
        200
    );
    let event: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(event["type"], "schedule.failed");
    assert_eq!(event["data"]["schedule_id"], id);
    assert_eq!(event["data"]["execution"]["status"], "failed");
    assert_eq!(event["data"]["execution"]["trigger"], "schedule");
}

#[test]
fn pending_deliveries_survive_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(usize::MAX);
    let kiln = Kiln::start_in(dir.path(), &FAST_RETRIES);
    let webhook = create_webhook(&kiln, &receiver.url, json!(["script.created"]));
    kiln.create_script("survivor", "javascript", "function main() {}");
    receiver.wait_for("attempted", |r| !r.is_empty());
    kiln.kill();

    receiver.fail_first.store(0, Ordering::SeqCst);
    let kiln = Kiln::start_in(dir.path(), &FAST_RETRIES);
    let received = receiver.wait_for("delivered after the restart", |r| {
        r.iter().any(|r| r.answered == 200)
    });
    let delivered = received.iter().find(|r| r.answered == 200).unwrap();
    assert_eq!(
        delivered.header("webhook-id"),
        received[0].header("webhook-id")
    );
    let event: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(event["data"]["name"], "survivor");
    let id = webhook["id"].as_str().unwrap();
    eventually("the delivery logged", || {
        let log = json_of(
            kiln.get(&format!("/v1/webhooks/{id}/deliveries"))
                .send()
                .unwrap(),
            200,
        );
        (log["data"][0]["outcome"] == "delivered").then_some(())
    });
}

#[test]
fn internal_destinations_are_refused_and_never_contacted() {
    let (kiln, _dir) = Kiln::start(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://0.0.0.0:{port}/hook"),
        "http://10.1.2.3/hook".into(),
        "http://192.168.0.1/hook".into(),
        "http://172.16.5.5/hook".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://100.64.0.1/hook".into(),
        "http://[fd00:ec2::254]/".into(),
        "ftp://example.com/hook".into(),
        "http://user:pass@example.com/hook".into(),
    ] {
        let body = error_body(
            kiln.post("/v1/webhooks")
                .json(&json!({"url": url, "events": ["script.created"]}))
                .send()
                .unwrap(),
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["error"]["details"][0]["field"], "url", "{url}: {body}");
        // The setting that would allow it is named where one would.
        let message = body["error"]["details"][0]["message"].as_str().unwrap();
        let allowable = url.contains("127.0.0.1")
            || url.contains("localhost")
            || url.contains("[::1]")
            || url.contains("0.0.0.0")
            || ["10.1.2.3", "192.168", "172.16", "100.64"]
                .iter()
                .any(|a| url.contains(a));
        assert_eq!(
            message.contains("webhooks.allow_private"),
            allowable,
            "{url}: {message}"
        );
    }
    for (body, field) in [
        (json!({"url": "http://8.8.8.8/", "events": []}), "events"),
        (
            json!({"url": "http://8.8.8.8/", "events": ["script.renamed"]}),
            "events",
        ),
        (
            json!({"url": "http://8.8.8.8/", "events": ["ping"]}),
            "events",
        ),
        (
            json!({"url": "http://8.8.8.8/", "events": ["script.created"], "secret": "hunter2"}),
            "secret",
        ),
    ] {
        let body = error_body(
            kiln.post("/v1/webhooks").json(&body).send().unwrap(),
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused destination was contacted"
    );

    // Even with private destinations allowed, metadata endpoints stay refused.
    let (open, _dir) = Kiln::start(&[("KILN_WEBHOOKS_ALLOW_PRIVATE", "true")]);
    error_body(
        open.post("/v1/webhooks")
            .json(&json!({"url": "http://169.254.169.254/", "events": ["script.created"]}))
            .send()
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    );
    // Subscribing needs to be able to read what the events carry.
    let manager = open.api_key(&open.token, "hooks only", &["manage:webhooks"]);
    for event in ["execution.completed", "schedule.failed", "script.created"] {
        error_body(
            open.with_key(&manager, Method::POST, "/v1/webhooks")
                .json(&json!({"url": format!("http://127.0.0.1:{port}/"), "events": [event]}))
                .send()
                .unwrap(),
            403,
            "PERMISSION_DENIED",
        );
    }
    let created = create_webhook(
        &open,
        &format!("http://127.0.0.1:{port}/hook"),
        json!(["script.created"]),
    );
    let id = created["id"].as_str().unwrap();
    // Managing webhooks needs manage:webhooks: an analyst is refused.
    let (_, analyst) = open.create_user("ann", "analyst");
    error_body(
        open.with_token(&analyst, Method::GET, "/v1/webhooks")
            .send()
            .unwrap(),
        403,
        "PERMISSION_DENIED",
    );
    assert_eq!(
        open.request(Method::DELETE, &format!("/v1/webhooks/{id}"))
            .send()
            .unwrap()
            .status(),
        204
    );
    error_body(
        open.get(&format!("/v1/webhooks/{id}")).send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
}

#[test]
fn redirects_are_not_followed() {
    let (kiln, _dir) = Kiln::start(&FAST_RETRIES);
    let target = Receiver::start(0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let location = target.url.clone();
    let redirected = Arc::new(AtomicUsize::new(0));
    let count = redirected.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut length) = (String::new(), 0);
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 307 X\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    let webhook = create_webhook(&kiln, &url, json!(["script.created"]));
    kiln.create_script("moved", "javascript", "function main() {}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while redirected.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "never retried");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(target.received().is_empty(), "the redirect was followed");
    let id = webhook["id"].as_str().unwrap();
    let log = json_of(
        kiln.get(&format!("/v1/webhooks/{id}/deliveries"))
            .send()
            .unwrap(),
        200,
    );
    let first = log["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(first["status_code"], 307, "{log}");
    assert_eq!(first["outcome"], "retrying", "{log}");
}

/// The attempt log of `webhook`, oldest first.
fn attempt_log(kiln: &Kiln, webhook: &Value) -> Vec<Value> {
    let id = webhook["id"].as_str().unwrap();
    let log = json_of(
        kiln.get(&format!("/v1/webhooks/{id}/deliveries"))
            .send()
            .unwrap(),
        200,
    );
    let mut attempts = log["data"].as_array().cloned().unwrap_or_default();
    attempts.reverse();
    attempts
}

/// The attempt log of `webhook` once it holds `n` attempts, oldest first.
fn attempts(kiln: &Kiln, webhook: &Value, n: usize) -> Vec<Value> {
    eventually(&format!("{n} attempts logged"), || {
        Some(attempt_log(kiln, webhook)).filter(|log| log.len() >= n)
    })
}

/// A destination that was allowed when the webhook was made, and is private
/// by the time of delivery (here: the node restarted with private
/// destinations refused), is checked again at each attempt and never
/// contacted.
#[test]
fn a_destination_private_at_delivery_time_is_refused_and_never_contacted() {
    let receiver = Receiver::start(0);
    let (kiln, dir) = Kiln::start(&FAST_RETRIES);
    let webhook = create_webhook(&kiln, &receiver.url, json!(["script.created"]));
    kiln.terminate();
    let kiln = Kiln::start_in(
        dir.path(),
        &[
            ("KILN_WEBHOOKS_RETRY_BASE_MS", "100"),
            ("KILN_WEBHOOKS_MAX_ATTEMPTS", "2"),
        ],
    );
    kiln.create_script("made", "javascript", "function main() {}");
    let log = attempts(&kiln, &webhook, 2);
    for (attempt, outcome) in log.iter().zip(["retrying", "failed"]) {
        assert_eq!(attempt["outcome"], outcome, "{log:?}");
        assert_eq!(attempt["status_code"], Value::Null);
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(error.contains("127.0.0.1"), "{error}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        receiver.received().is_empty(),
        "a private destination was contacted"
    );
}

/// A receiver that never answers costs each attempt `webhooks.timeout_ms`,
/// and after `webhooks.max_attempts` the delivery is given up: no attempt
/// follows the last.
#[test]
fn a_silent_receiver_times_out_and_the_delivery_is_given_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            // Read nothing, answer nothing, keep the connection open.
            held.push(stream);
        }
    });
    let (kiln, _dir) = Kiln::start(&[
        ("KILN_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("KILN_WEBHOOKS_RETRY_BASE_MS", "100"),
        ("KILN_WEBHOOKS_MAX_ATTEMPTS", "3"),
        ("KILN_WEBHOOKS_TIMEOUT_MS", "300"),
    ]);
    let webhook = create_webhook(&kiln, &url, json!(["script.created"]));
    kiln.create_script("made", "javascript", "function main() {}");
    let log = attempts(&kiln, &webhook, 3);
    for (n, (attempt, outcome)) in log
        .iter()
        .zip(["retrying", "retrying", "failed"])
        .enumerate()
    {
        assert_eq!(attempt["attempt"], n + 1, "{log:?}");
        assert_eq!(attempt["outcome"], outcome, "{log:?}");
        assert_eq!(attempt["error"], "the receiver did not answer in time");
        let took = attempt["duration_ms"].as_u64().unwrap();
        assert!(took >= 300, "gave up on the receiver after {took} ms");
    }
    // Backoff from 100 ms would have made a fourth attempt within ~2 s.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "attempted past the maximum"
    );
    let log = attempt_log(&kiln, &webhook);
    assert_eq!(log.len(), 3, "{log:?}");
}

/// A signing secret that no longer opens (the node restarted under another
/// master key) fails each attempt with that reason; nothing unsigned is sent.
#[test]
fn a_secret_that_no_longer_opens_fails_the_attempt_unsent() {
    let receiver = Receiver::start(0);
    let (kiln, dir) = Kiln::start(&FAST_RETRIES);
    let webhook = create_webhook(&kiln, &receiver.url, json!(["script.created"]));
    kiln.terminate();
    let mut env = FAST_RETRIES.to_vec();
    env.extend([
        ("KILN_WEBHOOKS_MAX_ATTEMPTS", "1"),
        (
            "KILN_AUTH_MASTER_KEY",
            "another master key, not the one sealing",
        ),
    ]);
    let kiln = Kiln::start_in(dir.path(), &env);
    kiln.create_script("made", "javascript", "function main() {}");
    let log = attempts(&kiln, &webhook, 1);
    assert_eq!(log[0]["outcome"], "failed", "{log:?}");
    let error = log[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot open the webhook's signing secret"),
        "{error}"
    );
    assert!(receiver.received().is_empty(), "sent without a signature");
}

/// A secret changed by `PUT` signs the next delivery, and the old one does
/// not.
#[test]
fn a_changed_secret_signs_the_next_delivery() {
    let receiver = Receiver::start(0);
    let (kiln, _dir) = Kiln::start(&FAST_RETRIES);
    let webhook = create_webhook(&kiln, &receiver.url, json!(["script.created"]));
    let id = webhook["id"].as_str().unwrap();
    let secret = "whsec_a2lsbi1lMmUtd2ViaG9vay1zZWNyZXQtMzItYnl0ZSE=";
    let changed = kiln
        .request(Method::PUT, &format!("/v1/webhooks/{id}"))
        .json(&json!({"secret": secret}))
        .send()
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert!(
        !changed.text().unwrap().contains("a2lsbi1l"),
        "the secret was shown"
    );
    kiln.create_script("made", "javascript", "function main() {}");
    let received = receiver.wait_for("one delivery", |got| got.len() == 1);
    verify_with_the_stock_verifier(secret, &received);
    assert_ne!(webhook["secret"].as_str(), Some(secret));
}

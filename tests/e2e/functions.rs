//! HTTP functions (API.md "HTTP functions"): a wasi:http component built
//! with the `wasi` crate, uploaded as a script and called at /fn/.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Kiln, error_body};

fn header(response: &reqwest::blocking::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_wasi_http_component_answers_at_fn_with_status_headers_and_body() {
    let (kiln, _dir) = Kiln::start(&[]);
    let script = kiln.create_component("web", kiln_components::HTTP_HELLO);
    assert_eq!(script["kind"], "http");
    assert_eq!(script["public"], false);

    let response = kiln
        .request(Method::PUT, "/fn/web/echo?x=1")
        .header("x-trace", "abc")
        .body("payload")
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "x-echoed"), "1");
    let execution_id = header(&response, "x-kiln-execution-id");
    let body = response.text().unwrap();
    assert_eq!(body, "PUT /echo?x=1\nx-trace: abc\n\npayload");
    // The caller's credential was not passed to the guest.
    assert!(!body.contains("authorization"), "{body}");

    // /fn/{name} alone is the function's root.
    let root = kiln.get("/fn/web").send().unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().unwrap(), "Hello, WASI!\n");
    let chosen = kiln.get("/fn/web/status?404").send().unwrap();
    assert_eq!(chosen.status(), 404);
    assert_eq!(header(&chosen, "x-chosen"), "yes");

    // Each request is an execution with trigger "http"; output kept, body not.
    let record: Value = kiln
        .get(&format!("/v1/executions/{execution_id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(record["trigger"], "http");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["result"], json!({"status": 201}));
    assert_eq!(
        record["parameters"],
        json!({"method": "PUT", "path": "/echo"})
    );
    assert_eq!(record["script_id"], script["id"]);
    let print = kiln.get("/fn/web/print").send().unwrap();
    let printed: Value = kiln
        .get(&format!(
            "/v1/executions/{}",
            header(&print, "x-kiln-execution-id")
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(printed["stdout"], "to stdout\n");
    assert_eq!(printed["stderr"], "to stderr\n");
    // Idempotency-Key is the function's business: Kiln replays nothing.
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let response = kiln
                .post("/fn/web/echo")
                .header("idempotency-key", "k1")
                .body("same")
                .send()
                .unwrap();
            assert_eq!(response.status(), 201);
            header(&response, "x-kiln-execution-id")
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    let script: Value = kiln.get("/v1/scripts/web").send().unwrap().json().unwrap();
    assert_eq!(script["execution_count"], 6);

    // An HTTP function is called, not executed or scheduled.
    error_body(
        kiln.execute("web", "?wait=true", json!({})),
        400,
        "VALIDATION_ERROR",
    );
    let schedule = kiln
        .post("/v1/schedules")
        .json(&json!({"name": "s", "script_id": "web", "cron": "* * * * *"}))
        .send()
        .unwrap();
    error_body(schedule, 400, "VALIDATION_ERROR");
    // Commands are not served at /fn/.
    kiln.create_component("cmd", kiln_components::HELLO);
    error_body(
        kiln.get("/fn/cmd/").send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
    error_body(
        kiln.get("/fn/nothing/").send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
}

#[test]
fn a_function_is_public_only_when_it_says_so() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_component("private", kiln_components::HTTP_HELLO);
    let anonymous = kiln.anonymous(Method::GET, "/fn/private/").send().unwrap();
    error_body(anonymous, 401, "AUTHENTICATION_REQUIRED");
    let forged = kiln
        .with_token("not.a.token", Method::GET, "/fn/private/")
        .send()
        .unwrap();
    error_body(forged, 401, "AUTHENTICATION_REQUIRED");
    let (_, viewer) = kiln.create_user("viewer1", "viewer");
    let denied = kiln
        .with_token(&viewer, Method::GET, "/fn/private/")
        .send()
        .unwrap();
    error_body(denied, 403, "PERMISSION_DENIED");
    let (_, developer) = kiln.create_user("dev1", "developer");
    let allowed = kiln
        .with_token(&developer, Method::GET, "/fn/private/")
        .send()
        .unwrap();
    assert_eq!(allowed.status(), 200);

    // Only an http script may be public; making this one public opens it.
    let command = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "c", "language": "javascript", "content": "1", "public": true}))
        .send()
        .unwrap();
    error_body(command, 400, "VALIDATION_ERROR");
    let made_public = kiln
        .request(Method::PUT, "/v1/scripts/private")
        .json(&json!({"public": true}))
        .send()
        .unwrap();
    assert_eq!(made_public.status(), 200);
    let open = kiln
        .anonymous(Method::POST, "/fn/private/echo")
        .header("x-api-key", "the function's own key")
        .send()
        .unwrap();
    assert_eq!(open.status(), 201);
    // A credential that is not Kiln's passes through to a public function.
    assert!(
        open.text()
            .unwrap()
            .contains("x-api-key: the function's own key"),
    );
    // A valid Kiln credential never does.
    let key = kiln.api_key(&kiln.token, "fn", &["execute:scripts"]);
    let with_kiln_key = kiln
        .with_key(&key, Method::POST, "/fn/private/echo")
        .send()
        .unwrap();
    assert_eq!(with_kiln_key.status(), 201);
    assert!(!with_kiln_key.text().unwrap().contains("x-api-key"));
}

#[test]
fn limits_stop_a_hostile_function() {
    let (kiln, _dir) = Kiln::start(&[("KILN_SERVER_MAX_BODY_BYTES", "2097152")]);
    upload_http_hello(
        &kiln,
        "hostile",
        json!({"timeout_ms": 500, "memory_mb": 32}),
    );

    let spin = kiln.get("/fn/hostile/spin").send().unwrap();
    let id = header(&spin, "x-kiln-execution-id");
    let body = error_body(spin, 504, "TIMEOUT");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("500 ms"),
        "{body}"
    );
    let record: Value = kiln
        .get(&format!("/v1/executions/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(record["status"], "timeout");

    error_body(
        kiln.get("/fn/hostile/grow").send().unwrap(),
        502,
        "MEMORY_LIMIT",
    );
    let big = kiln.get("/fn/hostile/big?3").send().unwrap();
    let body = error_body(big, 502, "RESPONSE_ERROR");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{body}"
    );
    error_body(
        kiln.get("/fn/hostile/none").send().unwrap(),
        502,
        "RESPONSE_ERROR",
    );
    // Outgoing requests are refused inside the sandbox.
    let fetch = kiln.get("/fn/hostile/fetch").send().unwrap();
    assert_eq!(
        fetch.text().unwrap(),
        "refused: ErrorCode::HttpRequestDenied"
    );
    // A request body over the server's limit never reaches the function: it
    // is refused on its Content-Length, before any of it is read. Sent by
    // hand, because a client still writing 3 MiB when the server answers and
    // closes gets a broken pipe instead of the answer.
    let status_line = raw_status_line(
        &kiln.base,
        &format!(
            "POST /fn/hostile/echo HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            kiln.token,
            3 << 20
        ),
    );
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    // The server is unharmed.
    assert_eq!(kiln.get("/fn/hostile/").send().unwrap().status(), 200);
}

/// HTTP functions run in as many slots as there are workers, with at most
/// `workers.queue_capacity` requests waiting for one; past that a request is
/// refused at once with 503 `QUEUE_FULL` and `Retry-After`, not queued.
#[test]
fn a_full_function_queue_is_503_at_once() {
    let (kiln, _dir) = Kiln::start(&[
        ("KILN_WORKERS_COUNT", "1"),
        ("KILN_WORKERS_QUEUE_CAPACITY", "1"),
    ]);
    upload_http_hello(&kiln, "spinner", json!({"timeout_ms": 1500}));
    // One runs, one waits; the others find the queue full.
    let answers: Vec<(u16, String, Option<String>)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let answer = kiln.get("/fn/spinner/spin").send().unwrap();
                    let status = answer.status().as_u16();
                    let retry = answer
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let body: Value = answer.json().unwrap();
                    let code = body["error"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    (status, code, retry)
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let ran = answers
        .iter()
        .filter(|(s, c, _)| *s == 504 && c == "TIMEOUT")
        .count();
    let refused: Vec<_> = answers.iter().filter(|(s, ..)| *s == 503).collect();
    assert_eq!(ran + refused.len(), 4, "{answers:?}");
    assert!(ran >= 1 && !refused.is_empty(), "{answers:?}");
    for (_, code, retry) in refused {
        assert_eq!(code, "QUEUE_FULL");
        assert!(retry.is_some(), "no Retry-After: {answers:?}");
    }
    // Free again once they are done.
    assert_eq!(kiln.get("/fn/spinner/").send().unwrap().status(), 200);
}

/// Uploads the wasi:http test guest as the HTTP function `name` with
/// `limits`.
fn upload_http_hello(kiln: &Kiln, name: &str, limits: Value) {
    let script = kiln
        .post("/v1/scripts")
        .json(&json!({
            "name": name,
            "language": "wasm",
            "content_base64": base64_of(kiln_components::HTTP_HELLO),
            "limits": limits,
        }))
        .send()
        .unwrap();
    assert_eq!(script.status(), 201);
}

/// Sends `head` (a request without its body) over a new connection and
/// returns the first line of the answer.
fn raw_status_line(base: &str, head: &str) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

fn base64_of(path: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

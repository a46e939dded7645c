//! A script's life over HTTP: multipart and raw uploads, status, metadata
//! and limits, and priorities among queued executions. Versions, ETags,
//! deletion and idempotent retries are tested in process
//! (`host/src/api/suite`).

use reqwest::Method;
use reqwest::blocking::multipart;
use serde_json::{Value, json};

use crate::harness::{Kiln, error_body};

const V1: &str = "function main(p) { return 'v1 ' + p.who; }";

fn put(kiln: &Kiln, script: &str, body: Value) -> reqwest::blocking::Response {
    kiln.request(Method::PUT, &format!("/v1/scripts/{script}"))
        .json(&body)
        .send()
        .unwrap()
}

fn header(response: &reqwest::blocking::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn multipart_and_raw_wasm_uploads() {
    let (kiln, _dir) = Kiln::start(&[]);
    let form = multipart::Form::new()
        .part(
            "meta",
            multipart::Part::text(
                r#"{"name": "from-form", "language": "javascript", "tags": ["up"]}"#,
            )
            .mime_str("application/json")
            .unwrap(),
        )
        .part(
            "file",
            multipart::Part::bytes(V1.as_bytes().to_vec()).file_name("greet.js"),
        );
    let response = kiln.post("/v1/scripts").multipart(form).send().unwrap();
    assert_eq!(response.status(), 201);
    let script: Value = response.json().unwrap();
    assert_eq!(
        (&script["name"], &script["tags"]),
        (&json!("from-form"), &json!(["up"]))
    );
    assert_eq!(
        kiln.run("from-form", json!({"parameters": {"who": "f"}}))["result"],
        "v1 f"
    );

    let no_file = multipart::Form::new().text("meta", r#"{"name": "x", "language": "javascript"}"#);
    let body = error_body(
        kiln.post("/v1/scripts").multipart(no_file).send().unwrap(),
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["field"], "file");

    let wasm = std::fs::read(kiln_components::HELLO).unwrap();
    let response = kiln
        .post("/v1/scripts?name=raw-hello&language=wasm&description=raw")
        .header("content-type", "application/wasm")
        .body(wasm.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let script: Value = response.json().unwrap();
    assert_eq!(
        (&script["language"], &script["description"]),
        (&json!("wasm"), &json!("raw"))
    );
    let content = kiln.get("/v1/scripts/raw-hello/content").send().unwrap();
    assert_eq!(header(&content, "content-type"), "application/wasm");
    assert_eq!(content.bytes().unwrap().as_ref(), wasm.as_slice());
    assert_eq!(kiln.run("raw-hello", json!({}))["status"], "completed");

    let wrong = kiln
        .post("/v1/scripts?name=raw2&language=python")
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .unwrap();
    error_body(wrong, 400, "VALIDATION_ERROR");
    let unnamed = kiln
        .post("/v1/scripts")
        .header("content-type", "application/wasm")
        .body(b"\0asm".to_vec())
        .send()
        .unwrap();
    error_body(unnamed, 400, "VALIDATION_ERROR");
    let text = kiln
        .post("/v1/scripts")
        .header("content-type", "text/plain")
        .body(V1)
        .send()
        .unwrap();
    error_body(text, 415, "UNSUPPORTED_MEDIA_TYPE");
}

#[test]
fn script_status_metadata_and_limits() {
    let (kiln, _dir) = Kiln::start(&[
        ("KILN_LIMITS_MAX_TIMEOUT_MS", "5000"),
        ("KILN_LIMITS_DEFAULT_TIMEOUT_MS", "5000"),
    ]);
    let response = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "spin", "language": "javascript", "content": "function main() { for (;;) {} }",
                      "status": "draft", "metadata": {"team": "core"}, "limits": {"timeout_ms": 200}}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let script: Value = response.json().unwrap();
    assert_eq!(script["status"], "draft");
    assert_eq!(script["metadata"], json!({"team": "core"}));
    assert_eq!(script["limits"], json!({"timeout_ms": 200}));
    // The script's own timeout applies when the request sets none.
    let execution = kiln.run("spin", json!({}));
    assert_eq!(execution["status"], "timeout", "{execution}");

    let over = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "greedy", "language": "javascript", "content": V1, "limits": {"timeout_ms": 9000}}))
        .send()
        .unwrap();
    let body = error_body(over, 400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"][0]["field"], "limits.timeout_ms");
    let public = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "open", "language": "javascript", "content": V1, "public": true}))
        .send()
        .unwrap();
    error_body(public, 400, "VALIDATION_ERROR");

    // Archived scripts are listed by status and do not run.
    let archived: Value = put(&kiln, "spin", json!({"status": "archived", "limits": null}))
        .json()
        .unwrap();
    assert_eq!(
        (&archived["status"], &archived["limits"]),
        (&json!("archived"), &Value::Null)
    );
    error_body(kiln.execute("spin", "", json!({})), 409, "CONFLICT");
    kiln.create_script("live", "javascript", V1);
    let listed: Value = kiln
        .get("/v1/scripts?status=archived")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["pagination"]["total_elements"], 1);
    assert_eq!(listed["data"][0]["name"], "spin");
    error_body(
        kiln.get("/v1/scripts?status=gone").send().unwrap(),
        400,
        "VALIDATION_ERROR",
    );
}

#[test]
fn higher_priority_executions_start_first() {
    let (kiln, _dir) = Kiln::start(&[("KILN_WORKERS_COUNT", "1")]);
    kiln.create_script("spin", "javascript", "function main() { for (;;) {} }");
    // Each run takes a few milliseconds, so one worker's runs start at
    // distinct milliseconds and `started_at` orders them.
    kiln.create_script(
        "tag",
        "javascript",
        "function main(p) { const end = Date.now() + 3; while (Date.now() < end) {} return p.tag; }",
    );
    // Occupies the only worker until all the others are queued (then it is
    // cancelled), however slowly this machine queues them.
    let blocker = kiln.execute("spin", "", json!({"timeout_ms": 60_000}));
    let blocker: Value = blocker.json().unwrap();
    let blocker = blocker["execution_id"].as_str().unwrap();
    kiln.wait_for_status(blocker, "running");
    let ids: Vec<String> = ["low", "normal", "high", "low", "high"]
        .iter()
        .map(|priority| {
            let accepted: Value = kiln
                .execute(
                    "tag",
                    "",
                    json!({"priority": priority, "parameters": {"tag": priority}}),
                )
                .json()
                .unwrap();
            accepted["execution_id"].as_str().unwrap().to_string()
        })
        .collect();
    let cancel = kiln
        .request(Method::POST, &format!("/v1/executions/{blocker}/cancel"))
        .send()
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let mut finished: Vec<Value> = ids.iter().map(|id| kiln.poll_until_final(id)).collect();
    finished.sort_by(|a, b| a["started_at"].as_str().cmp(&b["started_at"].as_str()));
    for pair in finished.windows(2) {
        assert_ne!(pair[0]["started_at"], pair[1]["started_at"], "{finished:?}");
    }
    let order: Vec<&str> = finished
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["high", "high", "normal", "low", "low"]);
    let body = error_body(
        kiln.execute("tag", "", json!({"priority": "urgent"})),
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["field"], "priority", "{body}");
}

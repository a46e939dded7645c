//! A script's life after creation: updates and versions, content, ETags,
//! deletion, the other upload encodings, and idempotent retries.

use reqwest::Method;
use reqwest::blocking::multipart;
use serde_json::{Value, json};

use crate::harness::{Kiln, error_body};

const V1: &str = "function main(p) { return 'v1 ' + p.who; }";
const V2: &str = "function main(p) { return 'v2 ' + p.who; }";

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
fn updates_make_versions_and_a_bad_update_changes_nothing() {
    let (kiln, _dir) = Kiln::start(&[]);
    let created = kiln.create_script("greet", "javascript", V1);
    let id = created["id"].as_str().unwrap();

    // Fields only: same version.
    let response = put(
        &kiln,
        "greet",
        json!({"description": "says hi", "tags": ["a"]}),
    );
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().unwrap();
    assert_eq!(
        (updated["version"].as_u64(), &updated["description"]),
        (Some(1), &json!("says hi"))
    );
    assert!(updated["updated_at"].as_str() >= created["updated_at"].as_str());

    // New content: version 2, compiled first.
    let updated: Value = put(&kiln, id, json!({"content": V2})).json().unwrap();
    assert_eq!(updated["version"], 2);
    assert_ne!(updated["content_hash"], created["content_hash"]);
    // The same content again is not a new version.
    let same: Value = put(&kiln, id, json!({"content": V2})).json().unwrap();
    assert_eq!(same["version"], 2);

    // A syntax error is 422 and the script stays at version 2.
    let body = error_body(
        put(&kiln, id, json!({"content": "function main( {"})),
        422,
        "COMPILE_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["line"], 1, "{body}");
    let current: Value = kiln
        .get("/v1/scripts/greet")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(current["version"], 2);

    let versions: Value = kiln
        .get(&format!("/v1/scripts/{id}/versions"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(versions["pagination"]["total_elements"], 2, "{versions}");
    assert_eq!(versions["data"][0]["version"], 2);
    assert_eq!(versions["data"][0]["current"], true);
    assert_eq!(versions["data"][1]["version"], 1);
    assert_eq!(versions["data"][1]["content_hash"], created["content_hash"]);
    assert!(versions["data"][0].get("content").is_none());
    let first: Value = kiln
        .get(&format!("/v1/scripts/{id}/versions/1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (first["content"].as_str(), &first["current"]),
        (Some(V1), &json!(false))
    );
    error_body(
        kiln.get(&format!("/v1/scripts/{id}/versions/9"))
            .send()
            .unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );

    let content = kiln.get("/v1/scripts/greet/content").send().unwrap();
    assert!(header(&content, "content-type").starts_with("text/javascript"));
    assert_eq!(content.text().unwrap(), V2);
    let old = kiln
        .get("/v1/scripts/greet/content?version=1")
        .send()
        .unwrap();
    assert_eq!(old.text().unwrap(), V1);

    // Executions run the current version unless they pin one.
    let params = json!({"parameters": {"who": "x"}});
    assert_eq!(kiln.run("greet", params.clone())["result"], "v2 x");
    let pinned = kiln.run("greet", json!({"parameters": {"who": "x"}, "version": 1}));
    assert_eq!(
        (&pinned["result"], &pinned["script_version"]),
        (&json!("v1 x"), &json!(1))
    );
    let body = error_body(
        kiln.execute("greet", "", json!({"version": 7})),
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["field"], "version");

    // Renames move the name; taken names and language changes are refused.
    kiln.create_script("other", "javascript", V1);
    error_body(put(&kiln, id, json!({"name": "other"})), 409, "CONFLICT");
    error_body(
        put(&kiln, id, json!({"language": "python"})),
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        put(&kiln, id, json!({"name": "bad name"})),
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        put(&kiln, id, json!({"colour": "red"})),
        400,
        "VALIDATION_ERROR",
    );
    let renamed: Value = put(&kiln, id, json!({"name": "hello"})).json().unwrap();
    assert_eq!(renamed["name"], "hello");
    assert_eq!(kiln.get("/v1/scripts/hello").send().unwrap().status(), 200);
    error_body(
        kiln.get("/v1/scripts/greet").send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
    // The old name is free again.
    kiln.create_script("greet", "javascript", V1);
    error_body(put(&kiln, "nope", json!({})), 404, "RESOURCE_NOT_FOUND");
}

#[test]
fn etags_give_304_on_reads_and_412_on_stale_writes() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_script("tagged", "javascript", V1);
    let response = kiln.get("/v1/scripts/tagged").send().unwrap();
    let tag = header(&response, "etag");
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let unchanged = kiln
        .get("/v1/scripts/tagged")
        .header("if-none-match", &tag)
        .send()
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    assert!(unchanged.text().unwrap().is_empty());

    // A write with the current tag succeeds and changes it.
    let response = kiln
        .request(Method::PUT, "/v1/scripts/tagged")
        .header("if-match", &tag)
        .json(&json!({"description": "first"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let new_tag = header(&response, "etag");
    assert_ne!(new_tag, tag);
    // The old tag is stale now: 412 for writes, 200 for conditional reads.
    let stale = kiln
        .request(Method::PUT, "/v1/scripts/tagged")
        .header("if-match", &tag)
        .json(&json!({"description": "lost update"}))
        .send()
        .unwrap();
    error_body(stale, 412, "PRECONDITION_FAILED");
    let read = kiln
        .get("/v1/scripts/tagged")
        .header("if-none-match", &tag)
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().unwrap()["description"], "first");

    // Content has its own tag: the BLAKE3 hash.
    let content = kiln.get("/v1/scripts/tagged/content").send().unwrap();
    let content_tag = header(&content, "etag");
    let again = kiln
        .get("/v1/scripts/tagged/content")
        .header("if-none-match", &content_tag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);

    let stale = kiln
        .request(Method::DELETE, "/v1/scripts/tagged")
        .header("if-match", &tag)
        .send()
        .unwrap();
    error_body(stale, 412, "PRECONDITION_FAILED");
    assert_eq!(kiln.get("/v1/scripts/tagged").send().unwrap().status(), 200);
}

#[test]
fn deleted_scripts_are_gone_but_their_executions_stay() {
    let (kiln, _dir) = Kiln::start(&[]);
    let script = kiln.create_script("doomed", "javascript", V1);
    let execution = kiln.run("doomed", json!({"parameters": {"who": "y"}}));
    let response = kiln
        .request(Method::DELETE, "/v1/scripts/doomed")
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    for path in [
        "/v1/scripts/doomed".to_string(),
        format!("/v1/scripts/{}", script["id"].as_str().unwrap()),
        format!("/v1/scripts/{}/content", script["id"].as_str().unwrap()),
        format!("/v1/scripts/{}/versions", script["id"].as_str().unwrap()),
    ] {
        error_body(kiln.get(&path).send().unwrap(), 404, "RESOURCE_NOT_FOUND");
    }
    error_body(
        kiln.execute("doomed", "", json!({})),
        404,
        "RESOURCE_NOT_FOUND",
    );
    let again = kiln
        .request(Method::DELETE, "/v1/scripts/doomed")
        .send()
        .unwrap();
    error_body(again, 404, "RESOURCE_NOT_FOUND");
    let kept: Value = kiln
        .get(&format!(
            "/v1/executions/{}",
            execution["id"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(kept["result"], "v1 y");
    // The name can be used again, from version 1.
    assert_eq!(kiln.create_script("doomed", "javascript", V2)["version"], 1);
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
fn idempotency_keys_replay_the_first_response() {
    let (kiln, _dir) = Kiln::start(&[]);
    let body = json!({"name": "once", "language": "javascript", "content": V1});
    let create = |body: &Value, key: &str| {
        kiln.post("/v1/scripts")
            .header("idempotency-key", key)
            .json(body)
            .send()
            .unwrap()
    };
    let first = create(&body, "k-1");
    assert_eq!(first.status(), 201);
    let location = header(&first, "location");
    let first: Value = first.json().unwrap();
    let again = create(&body, "k-1");
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(header(&again, "location"), location);
    assert_eq!(again.json::<Value>().unwrap(), first);
    let other = json!({"name": "twice", "language": "javascript", "content": V1});
    error_body(create(&other, "k-1"), 409, "CONFLICT");
    // Without a key the same body is a second create, refused by name.
    let plain = kiln.post("/v1/scripts").json(&body).send().unwrap();
    error_body(plain, 409, "CONFLICT");
    // Errors are not kept: a fixed retry under the same key succeeds.
    let broken = json!({"name": "fixed", "language": "javascript", "content": "function ("});
    error_body(create(&broken, "k-2"), 422, "COMPILE_ERROR");
    error_body(create(&broken, "k-2"), 422, "COMPILE_ERROR");
    let bad_key = kiln
        .post("/v1/scripts")
        .header("idempotency-key", "")
        .json(&other)
        .send()
        .unwrap();
    error_body(bad_key, 400, "VALIDATION_ERROR");

    // An execution retried with its key runs once.
    let run = || {
        kiln.post("/v1/scripts/once/execute?wait=true")
            .header("idempotency-key", "run-1")
            .json(&json!({"parameters": {"who": "i"}}))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["result"], "v1 i");
    let listed: Value = kiln.get("/v1/executions").send().unwrap().json().unwrap();
    assert_eq!(listed["pagination"]["total_elements"], 1, "{listed}");
}

#[test]
fn higher_priority_executions_start_first() {
    let (kiln, _dir) = Kiln::start(&[("KILN_WORKERS_COUNT", "1")]);
    kiln.create_script("spin", "javascript", "function main() { for (;;) {} }");
    kiln.create_script("tag", "javascript", "function main(p) { return p.tag; }");
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

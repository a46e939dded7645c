//! `/v1/scripts` and the system routes.

use base64::Engine as _;
use serde_json::json;

use crate::harness::{Kiln, error_body};

#[test]
fn health_and_readiness() {
    let (kiln, _dir) = Kiln::start(&[]);
    assert_eq!(kiln.get("/healthz").send().unwrap().status(), 200);
    let ready = kiln.get("/readyz").send().unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().unwrap()["status"],
        "ready"
    );
}

#[test]
fn create_and_read_a_script() {
    let (kiln, _dir) = Kiln::start(&[]);
    let response = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "greet", "language": "javascript", "content": "function main(p) { return p; }",
                      "description": "echoes", "tags": ["demo"]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let script: serde_json::Value = response.json().unwrap();
    assert_eq!(
        location,
        format!("/v1/scripts/{}", script["id"].as_str().unwrap())
    );
    assert_eq!(script["name"], "greet");
    assert_eq!(script["language"], "javascript");
    assert_eq!(script["kind"], "command");
    assert_eq!(script["version"], 1);
    assert_eq!(script["tags"], json!(["demo"]));
    assert_eq!(script["execution_count"], 0);
    assert_eq!(script["content_hash"].as_str().unwrap().len(), 64);

    let by_id: serde_json::Value = kiln.get(&location).send().unwrap().json().unwrap();
    assert_eq!(by_id, script);
    let by_name: serde_json::Value = kiln
        .get("/v1/scripts/greet")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(by_name, script);
}

#[test]
fn components_upload_as_base64_and_broken_ones_are_refused() {
    let (kiln, _dir) = Kiln::start(&[]);
    let wasm = std::fs::read(kiln_components::HELLO).unwrap();
    let script = kiln.create_component("hello-wasm", kiln_components::HELLO);
    assert_eq!(
        (script["kind"].as_str(), script["size_bytes"].as_u64()),
        (Some("command"), Some(wasm.len() as u64))
    );

    let broken = base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0junk");
    let response = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "broken", "language": "wasm", "content_base64": broken}))
        .send()
        .unwrap();
    error_body(response, 422, "COMPILE_ERROR");
    error_body(
        kiln.get("/v1/scripts/broken").send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
}

#[test]
fn a_syntax_error_is_422_with_its_position_and_nothing_is_stored() {
    let (kiln, _dir) = Kiln::start(&[]);
    for (language, source, line) in [
        ("javascript", "function main() {\n  return 1 +;\n}", 2),
        ("python", "def main():\n    return (\n\nx = ]\n", 4),
    ] {
        let response = kiln
            .post("/v1/scripts")
            .json(&json!({"name": "broken", "language": language, "content": source}))
            .send()
            .unwrap();
        let body = error_body(response, 422, "COMPILE_ERROR");
        let detail = &body["error"]["details"][0];
        assert_eq!(detail["field"], "content", "{body}");
        assert_eq!(detail["line"], line, "{body}");
        assert!(detail["column"].is_u64(), "{body}");
        error_body(
            kiln.get("/v1/scripts/broken").send().unwrap(),
            404,
            "RESOURCE_NOT_FOUND",
        );
    }
}

#[test]
fn bad_requests_get_the_contract_error_shape() {
    let (kiln, _dir) = Kiln::start(&[("KILN_SERVER_MAX_BODY_BYTES", "4096")]);
    kiln.create_script("taken", "javascript", "1");
    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (
            kiln.post("/v1/scripts")
                .json(&json!({"name": "taken", "language": "javascript", "content": "2"})),
            409,
            "CONFLICT",
        ),
        (
            kiln.post("/v1/scripts")
                .json(&json!({"name": "bad name!", "language": "javascript", "content": "1"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            kiln.post("/v1/scripts")
                .json(&json!({"name": "x", "language": "cobol", "content": "1"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            kiln.post("/v1/scripts")
                .json(&json!({"name": "x", "language": "javascript", "content": ""})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            kiln.post("/v1/scripts")
                .json(&json!({"name": "x", "language": "javascript"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            kiln.post("/v1/scripts")
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            kiln.post("/v1/scripts").body("name=x"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            kiln.post("/v1/scripts").json(
                &json!({"name": "big", "language": "javascript", "content": "x".repeat(10_000)}),
            ),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (kiln.get("/v1/scripts/nope"), 404, "RESOURCE_NOT_FOUND"),
        (kiln.get("/no/such/route"), 404, "RESOURCE_NOT_FOUND"),
        (
            kiln.request(reqwest::Method::DELETE, "/healthz"),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (request, status, code) in cases {
        error_body(request.send().unwrap(), status, code);
    }
    let body = error_body(
        kiln.post("/v1/scripts")
            .json(&json!({"name": "bad name!", "language": "javascript", "content": "1"}))
            .send()
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["field"], "name");
}

#[test]
fn the_request_id_is_echoed_or_made() {
    let (kiln, _dir) = Kiln::start(&[]);
    let response = kiln
        .get("/healthz")
        .header("x-request-id", "trace-123")
        .send()
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let response = kiln
        .get("/healthz")
        .header("x-request-id", "bad id with spaces")
        .send()
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "bad id with spaces");
    let made = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(made.len(), 36, "{made}");
}

#[test]
fn list_scripts_with_filters_sorting_and_pages() {
    let (kiln, _dir) = Kiln::start(&[]);
    for (name, language, content, tags, description) in [
        ("alpha", "javascript", "1", vec!["etl"], "loads rows"),
        ("beta", "python", "x = 1\n", vec![], "cleans data"),
        (
            "gamma",
            "javascript",
            "2",
            vec!["etl", "daily"],
            "sends mail",
        ),
    ] {
        let response = kiln
            .post("/v1/scripts")
            .json(&json!({"name": name, "language": language, "content": content, "tags": tags, "description": description}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let names = |query: &str| -> Vec<String> {
        let listing: serde_json::Value = kiln
            .get(&format!("/v1/scripts{query}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            listing["data"][0].get("content").is_none(),
            "content stays out of lists"
        );
        listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(""),
        ["gamma", "beta", "alpha"],
        "newest first by default"
    );
    assert_eq!(names("?sort=name&order=asc"), ["alpha", "beta", "gamma"]);
    assert_eq!(
        names("?language=javascript&sort=name&order=asc"),
        ["alpha", "gamma"]
    );
    assert_eq!(names("?tag=etl&sort=name&order=asc"), ["alpha", "gamma"]);
    assert_eq!(names("?search=DATA"), ["beta"]);
    assert_eq!(names("?status=archived"), Vec::<String>::new());

    let listing: serde_json::Value = kiln
        .get("/v1/scripts?size=2&page=2&sort=name&order=asc")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listing["data"][0]["name"], "gamma");
    assert_eq!(
        listing["pagination"],
        json!({"page": 2, "size": 2, "total_elements": 3, "total_pages": 2, "has_next": false, "has_previous": true})
    );
    for bad in [
        "?size=0",
        "?size=101",
        "?page=0",
        "?sort=colour",
        "?order=up",
        "?search=x",
        "?language=cobol",
        "?bogus=1",
        "?page=abc",
    ] {
        error_body(
            kiln.get(&format!("/v1/scripts{bad}")).send().unwrap(),
            400,
            "VALIDATION_ERROR",
        );
    }
}

#[test]
fn languages_are_listed() {
    let (kiln, _dir) = Kiln::start(&[]);
    let body: serde_json::Value = kiln.get("/v1/languages").send().unwrap().json().unwrap();
    let ids: Vec<&str> = body["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["javascript", "python", "wasm"]);
    assert_eq!(body["languages"][0]["extensions"], json!([".js", ".mjs"]));
}

#[test]
fn status_reports_workers_executions_and_the_compile_cache() {
    let (kiln, _dir) = Kiln::start(&[("KILN_WORKERS_COUNT", "3")]);
    kiln.create_script("one", "javascript", "function main() { return 1; }");
    let run = kiln
        .post("/v1/scripts/one/execute?wait=true")
        .send()
        .unwrap();
    assert_eq!(run.status(), 200);
    let status: serde_json::Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
    assert_eq!(status["workers"], 3);
    assert_eq!(status["executions_by_status"]["completed"], 1, "{status}");
    assert_eq!(status["queue_depth"], 0);
    assert!(status["store_size_bytes"].as_u64().unwrap() > 0);
    let loads = |status: &serde_json::Value| {
        let cache = &status["compile_cache"];
        ["memory_hits", "disk_hits", "compiles"]
            .iter()
            .map(|k| cache[k].as_u64().unwrap())
            .sum::<u64>()
    };
    // The runtime was loaded once, for the check at upload; running scripts
    // reuses it rather than loading (and hashing) it per execution.
    assert_eq!(loads(&status), 1, "{status}");
    for _ in 0..3 {
        assert_eq!(
            kiln.post("/v1/scripts/one/execute?wait=true")
                .send()
                .unwrap()
                .status(),
            200
        );
    }
    let after: serde_json::Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
    assert_eq!(loads(&after), 1, "{after}");
    // The script was compiled by the runtime once, at upload; every run
    // found its code.
    assert_eq!(after["compile_cache"]["script_compiles"], 1, "{after}");
    assert_eq!(after["compile_cache"]["script_code_hits"], 4, "{after}");
    assert_eq!(after["executions_by_status"]["completed"], 4);
    assert!(status["version"].is_string());
}

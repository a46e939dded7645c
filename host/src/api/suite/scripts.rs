//! `/v1/scripts` and the system routes: create, read, list, validation and
//! the error shape.

use axum::http::Method;
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Call, TestApp, error_body, json_of};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    assert_eq!(app.get("/healthz").send().await.status(), 200);
    let ready = app.get("/readyz").send().await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json()["status"], "ready");
}

#[tokio::test]
async fn create_and_read_a_script() {
    let app = TestApp::new().await;
    let response = app
        .post("/v1/scripts")
        .json(&json!({"name": "greet", "language": "javascript", "content": "function main(p) { return p; }",
                      "description": "echoes", "tags": ["demo"]}))
        .send()
        .await;
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let script: serde_json::Value = response.json();
    assert_eq!(
        location,
        format!("/v1/scripts/{}", script["id"].as_str().unwrap())
    );
    assert_eq!(script["name"], "greet");
    assert_eq!(script["language"], "javascript");
    assert_eq!(script["kind"], "source", "named after what was uploaded");
    assert_eq!(script["version"], 1);
    assert_eq!(script["tags"], json!(["demo"]));
    assert_eq!(script["execution_count"], 0);
    assert_eq!(script["content_hash"].as_str().unwrap().len(), 64);

    let by_id: serde_json::Value = app.get(&location).send().await.json();
    assert_eq!(by_id, script);
    let by_name: serde_json::Value = app.get("/v1/scripts/greet").send().await.json();
    assert_eq!(by_name, script);
}

#[tokio::test]
async fn components_upload_as_base64_and_broken_ones_are_refused() {
    let app = TestApp::new().await;
    let wasm = std::fs::read(kiln_components::HELLO).unwrap();
    let script = app
        .create_component("hello-wasm", kiln_components::HELLO)
        .await;
    assert_eq!(
        (script["kind"].as_str(), script["size_bytes"].as_u64()),
        (Some("command"), Some(wasm.len() as u64))
    );

    let broken = base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0junk");
    let response = app
        .post("/v1/scripts")
        .json(&json!({"name": "broken", "language": "wasm", "content_base64": broken}))
        .send()
        .await;
    error_body(response, 422, "COMPILE_ERROR");
    error_body(
        app.get("/v1/scripts/broken").send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
}

#[tokio::test]
async fn bad_requests_get_the_contract_error_shape() {
    let app = TestApp::with(|c| c.server.max_body_bytes = 4096).await;
    app.create_script("taken", "javascript", "1").await;
    let cases: Vec<(Call<'_>, u16, &str)> = vec![
        (
            app.post("/v1/scripts")
                .json(&json!({"name": "taken", "language": "javascript", "content": "2"})),
            409,
            "CONFLICT",
        ),
        (
            app.post("/v1/scripts")
                .json(&json!({"name": "bad name!", "language": "javascript", "content": "1"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/v1/scripts")
                .json(&json!({"name": "x", "language": "cobol", "content": "1"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/v1/scripts")
                .json(&json!({"name": "x", "language": "javascript", "content": ""})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/v1/scripts")
                .json(&json!({"name": "x", "language": "javascript"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/v1/scripts")
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/v1/scripts").body("name=x"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            app.post("/v1/scripts").json(
                &json!({"name": "big", "language": "javascript", "content": "x".repeat(10_000)}),
            ),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (app.get("/v1/scripts/nope"), 404, "RESOURCE_NOT_FOUND"),
        (app.get("/no/such/route"), 404, "RESOURCE_NOT_FOUND"),
        (
            app.request(Method::DELETE, "/healthz"),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (request, status, code) in cases {
        error_body(request.send().await, status, code);
    }
    let body = error_body(
        app.post("/v1/scripts")
            .json(&json!({"name": "bad name!", "language": "javascript", "content": "1"}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["field"], "name");
}

#[tokio::test]
async fn the_request_id_is_echoed_or_made() {
    let app = TestApp::new().await;
    let response = app
        .get("/healthz")
        .header("x-request-id", "trace-123")
        .send()
        .await;
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let response = app
        .get("/healthz")
        .header("x-request-id", "bad id with spaces")
        .send()
        .await;
    assert_ne!(response.headers()["x-request-id"], "bad id with spaces");
    let made = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(made.len(), 36, "{made}");
}

#[tokio::test]
async fn list_scripts_with_filters_sorting_and_pages() {
    let app = TestApp::new().await;
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
        let response = app
            .post("/v1/scripts")
            .json(&json!({"name": name, "language": language, "content": content, "tags": tags, "description": description}))
            .send()
            .await;
        assert_eq!(response.status(), 201);
    }
    let names = async |query: &str| -> Vec<String> {
        let listing: serde_json::Value =
            app.get(&format!("/v1/scripts{query}")).send().await.json();
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
        names("").await,
        ["gamma", "beta", "alpha"],
        "newest first by default"
    );
    assert_eq!(
        names("?sort=name&order=asc").await,
        ["alpha", "beta", "gamma"]
    );
    assert_eq!(
        names("?language=javascript&sort=name&order=asc").await,
        ["alpha", "gamma"]
    );
    assert_eq!(
        names("?tag=etl&sort=name&order=asc").await,
        ["alpha", "gamma"]
    );
    assert_eq!(names("?search=DATA").await, ["beta"]);
    assert_eq!(names("?status=archived").await, Vec::<String>::new());

    let listing: serde_json::Value = app
        .get("/v1/scripts?size=2&page=2&sort=name&order=asc")
        .send()
        .await
        .json();
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
            app.get(&format!("/v1/scripts{bad}")).send().await,
            400,
            "VALIDATION_ERROR",
        );
    }
}

#[tokio::test]
async fn languages_are_listed() {
    let app = TestApp::new().await;
    let body: serde_json::Value = app.get("/v1/languages").send().await.json();
    let ids: Vec<&str> = body["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["javascript", "python", "wasm"]);
    assert_eq!(body["languages"][0]["extensions"], json!([".js", ".mjs"]));
    assert_eq!(body["languages"][0]["bundles"], true);
    assert_eq!(body["languages"][2]["bundles"], false);
    let kinds: Vec<&serde_json::Value> = body["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["kinds"])
        .collect();
    assert_eq!(
        kinds,
        [
            &json!(["source"]),
            &json!(["source"]),
            &json!(["command", "sdk", "http"])
        ],
        "every kind a script can have, named after what is uploaded"
    );
    let modules = body["languages"][1]["modules"].as_array().unwrap();
    for module in ["json", "zoneinfo", "asyncio", "datetime", "urllib.parse"] {
        assert!(modules.contains(&json!(module)), "{module} in {modules:?}");
    }
}

/// Shared secrets are bounded: 100 of them (a 101st is 409, replacing one
/// is not), a value (4 096 bytes), grants (1 000, `*` alone), and a new one
/// needs its value.
#[tokio::test]
async fn shared_secrets_are_bounded() {
    let app = TestApp::new().await;
    let put = |name: String, body: serde_json::Value| {
        let app = &app;
        async move {
            app.put(&format!("/v1/secrets/{name}"))
                .json(&body)
                .send()
                .await
        }
    };
    for i in 0..100 {
        let reply = put(format!("S{i}"), json!({"value": "v", "scripts": []})).await;
        assert_eq!(reply.status(), 201);
    }
    let over = put("S100".into(), json!({"value": "v", "scripts": []})).await;
    error_body(over, 409, "CONFLICT");
    let replaced = put("S7".into(), json!({"value": "w", "scripts": ["*"]})).await;
    assert_eq!(replaced.status(), 200, "replacing one is within the bound");
    let listed = app.get("/v1/secrets").send().await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 100);

    let grants: Vec<String> = (0..1001).map(|i| format!("s{i}")).collect();
    for (body, field) in [
        (json!({"value": "x".repeat(4097), "scripts": []}), "value"),
        (json!({"value": "v", "scripts": grants}), "scripts"),
        (json!({"value": "v", "scripts": ["*", "other"]}), "scripts"),
        (json!({"scripts": []}), "value"),
    ] {
        let reply = put("NEW".into(), body).await;
        let body = error_body(reply, 400, "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    error_body(
        put("bad%20name".into(), json!({"value": "v", "scripts": []})).await,
        400,
        "VALIDATION_ERROR",
    );
}

#[tokio::test]
async fn source_goes_up_raw_with_its_media_type() {
    let app = TestApp::new().await;
    let raw = |path: &str, media: &str, body: &str| {
        app.post(path)
            .header("content-type", media)
            .body(body.to_owned())
    };
    let js = json_of(
        raw(
            "/v1/scripts?name=raw-js",
            "application/javascript",
            "function main(p) { return p.n + 1; }",
        )
        .send()
        .await,
        201,
    );
    assert_eq!(js["language"], "javascript");
    assert_eq!(
        app.run("raw-js", json!({"parameters": {"n": 1}})).await["result"],
        2
    );
    let py = json_of(
        raw(
            "/v1/scripts?name=raw-py&public=false",
            "text/x-python; charset=utf-8",
            "def main(n=0):\n    return n * 3\n",
        )
        .send()
        .await,
        201,
    );
    assert_eq!(py["language"], "python");
    let updated = json_of(
        app.put("/v1/scripts/raw-js")
            .header("content-type", "text/javascript")
            .body("function main(p) { return p.n + 2; }")
            .send()
            .await,
        200,
    );
    assert_eq!(updated["version"], 2);

    let field = |body: Value| body["error"]["details"][0]["field"].clone();
    let clash = raw(
        "/v1/scripts?name=x&language=python",
        "application/javascript",
        "1;",
    );
    assert_eq!(
        field(error_body(clash.send().await, 400, "VALIDATION_ERROR")),
        "language"
    );
    let entry = raw(
        "/v1/scripts?name=x&entry=main.js",
        "application/javascript",
        "1;",
    );
    assert_eq!(
        field(error_body(entry.send().await, 400, "VALIDATION_ERROR")),
        "entry"
    );
    let broken = raw(
        "/v1/scripts?name=x",
        "application/javascript",
        "function main( {",
    );
    error_body(broken.send().await, 422, "COMPILE_ERROR");
}

#[tokio::test]
async fn body_errors_name_the_field_and_a_form_is_not_json() {
    let app = TestApp::new().await;
    app.create_script("f", "javascript", "function main() { return 1; }")
        .await;
    let form = app
        .post("/v1/scripts/f/execute")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("parameters=1");
    error_body(form.send().await, 415, "UNSUPPORTED_MEDIA_TYPE");
    let form = app
        .post("/v1/users")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=x");
    error_body(form.send().await, 415, "UNSUPPORTED_MEDIA_TYPE");
    // No Content-Type at all is still read as JSON where a body is optional.
    let bare = app.post("/v1/scripts/f/execute?wait=true").body("{}");
    assert_eq!(bare.send().await.status(), 200);

    let missing = error_body(
        app.post("/v1/users")
            .json(&json!({"username": "x"}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(missing["error"]["details"][0]["field"], "password");
    assert_eq!(missing["error"]["details"][0]["message"], "is required");
    let unknown = error_body(
        app.post("/v1/scripts/f/execute")
            .json(&json!({"parameterz": {}}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(unknown["error"]["details"][0]["field"], "parameterz");
    let broken = error_body(
        app.post("/v1/users")
            .header("content-type", "application/json")
            .body("{\"username\": ")
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(broken["error"]["details"][0]["line"], 1);
    assert_eq!(broken["error"]["details"][0]["column"], 13);
}

//! Execution requests that are refused, and listing executions.

use serde_json::{Value, json};

use super::{TestApp, error_body};

#[tokio::test]
async fn bad_execute_requests() {
    let app = TestApp::new().await;
    app.create_script("ok", "javascript", "1").await;
    error_body(
        app.execute("missing", "", json!({})).await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    error_body(
        app.execute("ok", "", json!({"parameters": [1]})).await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.execute("ok", "", json!({"timeout_ms": 0})).await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.execute("ok", "?wait=maybe", json!({})).await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.execute("ok", "", json!({"surprise": true})).await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.get("/v1/executions/nope").send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    // No body at all is fine: every field has a default.
    let response = app.post("/v1/scripts/ok/execute?wait=true").send().await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn list_executions_newest_first_with_filters() {
    let app = TestApp::new().await;
    let ok = app
        .create_script("ok", "javascript", "function main() { return 1; }")
        .await;
    app.create_script(
        "bad",
        "javascript",
        "function main() { throw new Error('no'); }",
    )
    .await;
    let mut ids = Vec::new();
    for script in ["ok", "bad", "ok"] {
        let execution: Value = app.execute(script, "?wait=true", json!({})).await.json();
        ids.push(execution["id"].as_str().unwrap().to_string());
    }
    let listed = async |query: &str| -> Vec<String> {
        let listing: Value = app
            .get(&format!("/v1/executions{query}"))
            .send()
            .await
            .json();
        listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        listed("").await,
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    assert_eq!(
        listed(&format!("?script_id={}", ok["id"].as_str().unwrap())).await,
        [ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(listed("?status=failed").await, [ids[1].clone()]);
    assert_eq!(listed("?trigger=api&size=1&page=3").await, [ids[0].clone()]);
    assert_eq!(
        listed("?created_after=2999-01-01T00:00:00Z").await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed("?created_before=2999-01-01T00:00:00Z").await.len(),
        3
    );
    for bad in ["?status=sleeping", "?created_after=yesterday", "?size=500"] {
        error_body(
            app.get(&format!("/v1/executions{bad}")).send().await,
            400,
            "VALIDATION_ERROR",
        );
    }
}

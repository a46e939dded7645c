//! A script's life after creation: updates and versions, ETags, deletion,
//! and idempotent retries.

use axum::http::Method;
use serde_json::{Value, json};

use super::{Reply, TestApp, error_body};

const V1: &str = "function main(p) { return 'v1 ' + p.who; }";
const V2: &str = "function main(p) { return 'v2 ' + p.who; }";

async fn put(app: &TestApp, script: &str, body: Value) -> Reply {
    app.put(&format!("/v1/scripts/{script}"))
        .json(&body)
        .send()
        .await
}

#[tokio::test]
async fn updates_make_versions_and_a_bad_update_changes_nothing() {
    let app = TestApp::new().await;
    let created = app.create_script("greet", "javascript", V1).await;
    let id = created["id"].as_str().unwrap();

    // Fields only: same version.
    let response = put(
        &app,
        "greet",
        json!({"description": "says hi", "tags": ["a"]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json();
    assert_eq!(
        (updated["version"].as_u64(), &updated["description"]),
        (Some(1), &json!("says hi"))
    );
    assert!(updated["updated_at"].as_str() >= created["updated_at"].as_str());

    // New content: version 2, compiled first.
    let updated: Value = put(&app, id, json!({"content": V2})).await.json();
    assert_eq!(updated["version"], 2);
    assert_ne!(updated["content_hash"], created["content_hash"]);
    // The same content again is not a new version.
    let same: Value = put(&app, id, json!({"content": V2})).await.json();
    assert_eq!(same["version"], 2);

    // A syntax error is 422 and the script stays at version 2.
    let body = error_body(
        put(&app, id, json!({"content": "function main( {"})).await,
        422,
        "COMPILE_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["line"], 1, "{body}");
    let current: Value = app.get("/v1/scripts/greet").send().await.json();
    assert_eq!(current["version"], 2);

    let versions: Value = app
        .get(&format!("/v1/scripts/{id}/versions"))
        .send()
        .await
        .json();
    assert_eq!(versions["pagination"]["total_elements"], 2, "{versions}");
    assert_eq!(versions["data"][0]["version"], 2);
    assert_eq!(versions["data"][0]["current"], true);
    assert_eq!(versions["data"][1]["version"], 1);
    assert_eq!(versions["data"][1]["content_hash"], created["content_hash"]);
    assert!(versions["data"][0].get("content").is_none());
    let first: Value = app
        .get(&format!("/v1/scripts/{id}/versions/1"))
        .send()
        .await
        .json();
    assert_eq!(
        (first["content"].as_str(), &first["current"]),
        (Some(V1), &json!(false))
    );
    error_body(
        app.get(&format!("/v1/scripts/{id}/versions/9"))
            .send()
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    );

    let content = app.get("/v1/scripts/greet/content").send().await;
    assert!(
        content
            .header("content-type")
            .starts_with("text/javascript")
    );
    assert_eq!(content.text(), V2);
    let old = app.get("/v1/scripts/greet/content?version=1").send().await;
    assert_eq!(old.text(), V1);

    // Executions run the current version unless they pin one.
    let params = json!({"parameters": {"who": "x"}});
    assert_eq!(app.run("greet", params.clone()).await["result"], "v2 x");
    let pinned = app
        .run("greet", json!({"parameters": {"who": "x"}, "version": 1}))
        .await;
    assert_eq!(
        (&pinned["result"], &pinned["script_version"]),
        (&json!("v1 x"), &json!(1))
    );
    let body = error_body(
        app.execute("greet", "", json!({"version": 7})).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["error"]["details"][0]["field"], "version");

    // Renames move the name; taken names and language changes are refused.
    app.create_script("other", "javascript", V1).await;
    error_body(
        put(&app, id, json!({"name": "other"})).await,
        409,
        "CONFLICT",
    );
    error_body(
        put(&app, id, json!({"language": "python"})).await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        put(&app, id, json!({"name": "bad name"})).await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        put(&app, id, json!({"colour": "red"})).await,
        400,
        "VALIDATION_ERROR",
    );
    let renamed: Value = put(&app, id, json!({"name": "hello"})).await.json();
    assert_eq!(renamed["name"], "hello");
    assert_eq!(app.get("/v1/scripts/hello").send().await.status(), 200);
    error_body(
        app.get("/v1/scripts/greet").send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    // The old name is free again.
    app.create_script("greet", "javascript", V1).await;
    error_body(
        put(&app, "nope", json!({})).await,
        404,
        "RESOURCE_NOT_FOUND",
    );
}

#[tokio::test]
async fn etags_give_304_on_reads_and_412_on_stale_writes() {
    let app = TestApp::new().await;
    app.create_script("tagged", "javascript", V1).await;
    let response = app.get("/v1/scripts/tagged").send().await;
    let tag = response.header("etag");
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let unchanged = app
        .get("/v1/scripts/tagged")
        .header("if-none-match", &tag)
        .send()
        .await;
    assert_eq!(unchanged.status(), 304);
    assert!(unchanged.text().is_empty());

    // A write with the current tag succeeds and changes it.
    let response = app
        .request(Method::PUT, "/v1/scripts/tagged")
        .header("if-match", &tag)
        .json(&json!({"description": "first"}))
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let new_tag = response.header("etag");
    assert_ne!(new_tag, tag);
    // The old tag is stale now: 412 for writes, 200 for conditional reads.
    let stale = app
        .request(Method::PUT, "/v1/scripts/tagged")
        .header("if-match", &tag)
        .json(&json!({"description": "lost update"}))
        .send()
        .await;
    error_body(stale, 412, "PRECONDITION_FAILED");
    let read = app
        .get("/v1/scripts/tagged")
        .header("if-none-match", &tag)
        .send()
        .await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.json()["description"], "first");

    // Content has its own tag: the BLAKE3 hash.
    let content = app.get("/v1/scripts/tagged/content").send().await;
    let content_tag = content.header("etag");
    let again = app
        .get("/v1/scripts/tagged/content")
        .header("if-none-match", &content_tag)
        .send()
        .await;
    assert_eq!(again.status(), 304);

    let stale = app
        .request(Method::DELETE, "/v1/scripts/tagged")
        .header("if-match", &tag)
        .send()
        .await;
    error_body(stale, 412, "PRECONDITION_FAILED");
    assert_eq!(app.get("/v1/scripts/tagged").send().await.status(), 200);
}

#[tokio::test]
async fn deleted_scripts_are_gone_but_their_executions_stay() {
    let app = TestApp::new().await;
    let script = app.create_script("doomed", "javascript", V1).await;
    let execution = app.run("doomed", json!({"parameters": {"who": "y"}})).await;
    let response = app
        .request(Method::DELETE, "/v1/scripts/doomed")
        .send()
        .await;
    assert_eq!(response.status(), 204);
    for path in [
        "/v1/scripts/doomed".to_string(),
        format!("/v1/scripts/{}", script["id"].as_str().unwrap()),
        format!("/v1/scripts/{}/content", script["id"].as_str().unwrap()),
        format!("/v1/scripts/{}/versions", script["id"].as_str().unwrap()),
    ] {
        error_body(app.get(&path).send().await, 404, "RESOURCE_NOT_FOUND");
    }
    error_body(
        app.execute("doomed", "", json!({})).await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    let again = app
        .request(Method::DELETE, "/v1/scripts/doomed")
        .send()
        .await;
    error_body(again, 404, "RESOURCE_NOT_FOUND");
    let kept: Value = app
        .get(&format!(
            "/v1/executions/{}",
            execution["id"].as_str().unwrap()
        ))
        .send()
        .await
        .json();
    assert_eq!(kept["result"], "v1 y");
    // The name can be used again, from version 1.
    assert_eq!(
        app.create_script("doomed", "javascript", V2).await["version"],
        1
    );
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_response() {
    let app = TestApp::new().await;
    let body = json!({"name": "once", "language": "javascript", "content": V1});
    let create = async |body: &Value, key: &str| {
        app.post("/v1/scripts")
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
    };
    let first = create(&body, "k-1").await;
    assert_eq!(first.status(), 201);
    let location = first.header("location");
    let first: Value = first.json();
    let again = create(&body, "k-1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.header("location"), location);
    assert_eq!(again.json(), first);
    let other = json!({"name": "twice", "language": "javascript", "content": V1});
    error_body(create(&other, "k-1").await, 409, "CONFLICT");
    // Without a key the same body is a second create, refused by name.
    let plain = app.post("/v1/scripts").json(&body).send().await;
    error_body(plain, 409, "CONFLICT");
    // Errors are not kept: a fixed retry under the same key succeeds.
    let broken = json!({"name": "fixed", "language": "javascript", "content": "function ("});
    error_body(create(&broken, "k-2").await, 422, "COMPILE_ERROR");
    error_body(create(&broken, "k-2").await, 422, "COMPILE_ERROR");
    let bad_key = app
        .post("/v1/scripts")
        .header("idempotency-key", "")
        .json(&other)
        .send()
        .await;
    error_body(bad_key, 400, "VALIDATION_ERROR");

    // An execution retried with its key runs once.
    let run = async || {
        app.post("/v1/scripts/once/execute?wait=true")
            .header("idempotency-key", "run-1")
            .json(&json!({"parameters": {"who": "i"}}))
            .send()
            .await
            .json()
    };
    let (a, b) = (run().await, run().await);
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["result"], "v1 i");
    let listed: Value = app.get("/v1/executions").send().await.json();
    assert_eq!(listed["pagination"]["total_elements"], 1, "{listed}");
}

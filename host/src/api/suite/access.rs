//! What callers may do: roles against route classes, API keys and users.

use axum::http::Method;
use serde_json::{Value, json};

use super::{TestApp, error_body, json_of};

/// What a request does, its method, path and body, and the roles allowed it.
type Case = (
    &'static str,
    Method,
    String,
    Option<Value>,
    &'static [&'static str],
);

#[tokio::test]
async fn every_role_against_every_route_class() {
    let app = TestApp::new().await;
    app.create_script("hello", "javascript", "function main() { return 1; }")
        .await;
    let (_, developer) = app.create_user("dev", "developer").await;
    let (_, analyst) = app.create_user("ann", "analyst").await;
    let (_, viewer) = app.create_user("vic", "viewer").await;
    let roles = [
        ("admin", app.token.clone()),
        ("developer", developer),
        ("analyst", analyst),
        ("viewer", viewer),
    ];
    let schedule = json!({"name": "s", "script_id": "hello", "cron": "@daily"});
    let create = async |name: &str| json!({"name": name, "language": "javascript", "content": "function main() {}"});
    // (what, method, path, body, who may)
    let cases: Vec<Case> = vec![
        (
            "read scripts",
            Method::GET,
            "/v1/scripts".into(),
            None,
            &["admin", "developer", "analyst", "viewer"],
        ),
        (
            "write scripts",
            Method::POST,
            "/v1/scripts".into(),
            Some(json!("create")),
            &["admin", "developer"],
        ),
        (
            "execute",
            Method::POST,
            "/v1/scripts/hello/execute?wait=true".into(),
            Some(json!({})),
            &["admin", "developer"],
        ),
        (
            "ad-hoc",
            Method::POST,
            "/v1/execute".into(),
            Some(json!({"language": "javascript", "code": "function main() { return 2; }"})),
            &["admin", "developer"],
        ),
        (
            "read executions",
            Method::GET,
            "/v1/executions".into(),
            None,
            &["admin", "developer", "analyst"],
        ),
        (
            "usage",
            Method::GET,
            "/v1/analytics/usage".into(),
            None,
            &["admin", "developer", "analyst"],
        ),
        (
            "schedules",
            Method::POST,
            "/v1/schedules".into(),
            Some(schedule),
            &["admin", "developer"],
        ),
        (
            "list schedules",
            Method::GET,
            "/v1/schedules".into(),
            None,
            &["admin", "developer"],
        ),
        ("users", Method::GET, "/v1/users".into(), None, &["admin"]),
        ("status", Method::GET, "/v1/status".into(), None, &["admin"]),
        ("audit", Method::GET, "/v1/audit".into(), None, &["admin"]),
        (
            "me",
            Method::GET,
            "/v1/users/me".into(),
            None,
            &["admin", "developer", "analyst", "viewer"],
        ),
        (
            "languages",
            Method::GET,
            "/v1/languages".into(),
            None,
            &["admin", "developer", "analyst", "viewer"],
        ),
        (
            "own keys",
            Method::GET,
            "/v1/api-keys".into(),
            None,
            &["admin", "developer", "analyst", "viewer"],
        ),
    ];
    for (what, method, path, body, allowed) in &cases {
        for (role, token) in &roles {
            let mut request = app.with_token(token, method.clone(), path);
            if let Some(body) = body {
                let body = if body == "create" {
                    create(&format!("{what}-{role}").replace(' ', "-")).await
                } else {
                    body.clone()
                };
                request = request.json(&body);
            }
            let response = request.send().await;
            if allowed.contains(role) {
                assert!(
                    response.status().is_success(),
                    "{role} {what}: {}",
                    response.status()
                );
            } else {
                let body = error_body(response, 403, "PERMISSION_DENIED");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains("scope"),
                    "{body}"
                );
            }
        }
    }
    let audit = json_of(app.get("/v1/audit?size=100").send().await, 200);
    let denied = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "permission.denied")
        .count();
    // Every refusal of the table above is in the audit log.
    let refusals: usize = cases
        .iter()
        .map(|(_, _, _, _, allowed)| 4 - allowed.len())
        .sum();
    assert_eq!(denied, refusals);
}

#[tokio::test]
async fn api_keys_are_shown_once_capped_and_revoked_at_once() {
    let app = TestApp::new().await;
    let created = json_of(
        app.post("/v1/api-keys")
            .json(&json!({"name": "ci", "scopes": ["read:scripts"], "expires_in_days": 30}))
            .send()
            .await,
        201,
    );
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kiln_") && key.len() == 37, "{key}");
    assert!(key[5..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    assert_eq!(created["scopes"], json!(["read:scripts"]));
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_str().unwrap().to_owned();

    assert_eq!(
        app.with_key(&key, Method::GET, "/v1/scripts")
            .send()
            .await
            .status(),
        200
    );
    let me = json_of(
        app.with_key(&key, Method::GET, "/v1/users/me").send().await,
        200,
    );
    assert_eq!(me["username"], "admin");
    error_body(
        app.with_key(&key, Method::POST, "/v1/scripts")
            .json(&json!({"name": "x", "language": "javascript", "content": "function main() {}"}))
            .send()
            .await,
        403,
        "PERMISSION_DENIED",
    );
    // A key cannot mint keys at all (one that outlived it would survive its
    // revocation), with more scopes or the same.
    for scopes in [json!(["write:scripts"]), json!(["read:scripts"])] {
        error_body(
            app.with_key(&key, Method::POST, "/v1/api-keys")
                .json(&json!({"name": "child", "scopes": scopes}))
                .send()
                .await,
            403,
            "PERMISSION_DENIED",
        );
    }
    // Ad-hoc code needs write:scripts as well as execute:scripts.
    let runner = app
        .api_key(&app.token, "runner", &["execute:scripts"])
        .await;
    let body = error_body(
        app.with_key(&runner, Method::POST, "/v1/execute")
            .json(&json!({"language": "javascript", "code": "function main() { return 1; }"}))
            .send()
            .await,
        403,
        "PERMISSION_DENIED",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write:scripts"),
        "{body}"
    );
    // Responses holding a secret are not kept for Idempotency-Key replays:
    // each request makes its own key.
    let make = async || {
        app.post("/v1/api-keys")
            .header("idempotency-key", "same-key")
            .json(&json!({"name": "twice", "scopes": ["read:scripts"]}))
            .send()
            .await
    };
    let (first, second) = (make().await, make().await);
    assert!(!second.headers().contains_key("idempotent-replayed"));
    assert_ne!(json_of(first, 201)["key"], json_of(second, 201)["key"]);
    let listed = app.get("/v1/api-keys").send().await.text();
    assert!(!listed.contains(&key), "the key is shown again: {listed}");
    assert!(listed.contains(&key[..9]), "the prefix is listed: {listed}");

    for (body, field) in [
        (json!({"name": "", "scopes": ["read:scripts"]}), "name"),
        (json!({"name": "n", "scopes": []}), "scopes"),
        (
            json!({"name": "n", "scopes": ["read:scripts"], "expires_in_days": 0}),
            "expires_in_days",
        ),
    ] {
        let body = error_body(
            app.post("/v1/api-keys").json(&body).send().await,
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    error_body(
        app.post("/v1/api-keys")
            .json(&json!({"name": "n", "scopes": ["root"]}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );

    // A viewer may hold a viewer's key but not mint an admin one.
    let (viewer_id, viewer) = app.create_user("vic", "viewer").await;
    for scopes in [json!(["admin"]), json!(["read:scripts", "write:scripts"])] {
        error_body(
            app.with_token(&viewer, Method::POST, "/v1/api-keys")
                .json(&json!({"name": "escalate", "scopes": scopes}))
                .send()
                .await,
            403,
            "PERMISSION_DENIED",
        );
    }
    let viewer_key = json_of(
        app.with_token(&viewer, Method::POST, "/v1/api-keys")
            .json(&json!({"name": "mine", "scopes": ["read:scripts"]}))
            .send()
            .await,
        201,
    );
    let viewer_key_text = viewer_key["key"].as_str().unwrap();
    // The viewer sees only their key and cannot revoke the admin's.
    let theirs = json_of(
        app.with_token(&viewer, Method::GET, "/v1/api-keys")
            .send()
            .await,
        200,
    );
    assert_eq!(theirs["pagination"]["total_elements"], 1);
    error_body(
        app.with_token(&viewer, Method::DELETE, &format!("/v1/api-keys/{id}"))
            .send()
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    // The admin sees everyone's: ci, runner, twice (×2) and the viewer's.
    let all = json_of(app.get("/v1/api-keys").send().await, 200);
    assert_eq!(all["pagination"]["total_elements"], 5);

    // Revocation is effective on the next request.
    assert_eq!(
        app.request(Method::DELETE, &format!("/v1/api-keys/{id}"))
            .send()
            .await
            .status(),
        204
    );
    error_body(
        app.with_key(&key, Method::GET, "/v1/scripts").send().await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        app.with_key(
            "kiln_00000000000000000000000000000000",
            Method::GET,
            "/v1/scripts",
        )
        .send()
        .await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    // A disabled owner's keys are revoked; enabled again, they stay so.
    let disable = async |disabled: bool| {
        app.request(Method::PUT, &format!("/v1/users/{viewer_id}"))
            .json(&json!({"disabled": disabled}))
            .send()
            .await
            .status()
    };
    assert_eq!(disable(true).await, 200);
    assert_eq!(
        app.with_key(viewer_key_text, Method::GET, "/v1/scripts")
            .send()
            .await
            .status(),
        401
    );
    assert_eq!(disable(false).await, 200);
    assert_eq!(
        app.with_key(viewer_key_text, Method::GET, "/v1/scripts")
            .send()
            .await
            .status(),
        401
    );

    let audit = app.get("/v1/audit?size=100").send().await.text();
    assert!(
        audit.contains("api_key.created") && audit.contains("api_key.revoked"),
        "{audit}"
    );
}

#[tokio::test]
async fn users_are_managed_by_admins_and_changes_apply_at_once() {
    let app = TestApp::new().await;
    let (dev_id, dev) = app.create_user("dev", "developer").await;
    let script = json!({"name": "s", "language": "javascript", "content": "function main() {}"});
    let create_script = async |token: &str| {
        app.with_token(token, Method::POST, "/v1/scripts")
            .json(&script)
            .send()
            .await
            .status()
    };
    assert_eq!(create_script(&dev).await, 201);
    let created_by = json_of(app.get("/v1/scripts/s").send().await, 200)["created_by"].clone();
    assert_eq!(created_by, dev_id.as_str());

    for (body, field) in [
        (
            json!({"username": "x y", "password": "long enough", "role": "viewer"}),
            "username",
        ),
        (
            json!({"username": "short", "password": "1234567", "role": "viewer"}),
            "password",
        ),
    ] {
        let body = error_body(
            app.post("/v1/users").json(&body).send().await,
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    error_body(
        app.post("/v1/users")
            .json(&json!({"username": "r", "password": "long enough", "role": "root"}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.post("/v1/users")
            .json(&json!({"username": "dev", "password": "long enough", "role": "viewer"}))
            .send()
            .await,
        409,
        "CONFLICT",
    );
    let users = app.get("/v1/users").send().await.text();
    assert!(
        !users.contains("argon2") && !users.contains("password"),
        "{users}"
    );

    // A demotion applies to tokens already issued.
    let user = app.get(&format!("/v1/users/{dev_id}")).send().await;
    let etag = user.headers()["etag"].to_str().unwrap().to_owned();
    let demoted = json_of(
        app.request(Method::PUT, &format!("/v1/users/{dev_id}"))
            .header("if-match", &etag)
            .json(&json!({"role": "viewer"}))
            .send()
            .await,
        200,
    );
    assert_eq!(demoted["role"], "viewer");
    error_body(
        app.request(Method::PUT, &format!("/v1/users/{dev_id}"))
            .header("if-match", &etag)
            .json(&json!({"role": "developer"}))
            .send()
            .await,
        412,
        "PRECONDITION_FAILED",
    );
    assert_eq!(create_script(&dev).await, 403);

    // A new password ends the user's sessions; the new one logs in.
    assert_eq!(
        app.request(Method::PUT, &format!("/v1/users/{dev_id}"))
            .json(&json!({"password": "a brand new one"}))
            .send()
            .await
            .status(),
        200
    );
    assert_eq!(
        app.with_token(&dev, Method::GET, "/v1/users/me")
            .send()
            .await
            .status(),
        401
    );
    assert_eq!(app.login("dev", "dev password").await.status(), 401);
    assert_eq!(app.login("dev", "a brand new one").await.status(), 200);

    // The last enabled admin stays.
    let admin_id = json_of(app.get("/v1/users/me").send().await, 200)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for request in [
        app.request(Method::PUT, &format!("/v1/users/{admin_id}"))
            .json(&json!({"role": "viewer"})),
        app.request(Method::PUT, &format!("/v1/users/{admin_id}"))
            .json(&json!({"disabled": true})),
        app.request(Method::DELETE, &format!("/v1/users/{admin_id}")),
    ] {
        error_body(request.send().await, 409, "CONFLICT");
    }

    assert_eq!(
        app.request(Method::DELETE, &format!("/v1/users/{dev_id}"))
            .send()
            .await
            .status(),
        204
    );
    error_body(
        app.get(&format!("/v1/users/{dev_id}")).send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    assert_eq!(app.login("dev", "a brand new one").await.status(), 401);
}

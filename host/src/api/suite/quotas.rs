//! Organizations' quotas through the API: each one reached is a 429
//! `QUOTA_EXCEEDED` with `Retry-After`, and leaves other organizations be.
//! (That windows reset is `quotas.rs`'s unit tests, with a clock.)

use axum::http::Method;
use serde_json::{Value, json};

use super::{Reply, TestApp};

/// Organization `small` with `quotas` (tier custom: nothing else bounded)
/// and a developer there, whose token this returns.
async fn small(app: &TestApp, quotas: Value) -> String {
    app.post("/v1/organizations")
        .json(&json!({"name": "small", "admin": "admin", "tier": "custom", "quotas": quotas}))
        .send()
        .await
        .expect(201);
    app.post("/v1/users")
        .header("x-kiln-organization", "small")
        .json(&json!({"username": "dev", "password": "dev password", "role": "developer"}))
        .send()
        .await
        .expect(201);
    app.login_token("dev", "dev password").await
}

/// A refusal of `quota`, with its `Retry-After` within `max_secs`.
fn spent(reply: Reply, quota: &str, max_secs: u64) -> Value {
    let retry: u64 = reply.header("retry-after").parse().expect("a Retry-After");
    assert!((1..=max_secs).contains(&retry), "Retry-After {retry}");
    let body = reply.error(429, "QUOTA_EXCEEDED");
    assert_eq!(body["error"]["details"][0]["field"], quota, "{body}");
    body
}

#[tokio::test]
async fn requests_per_hour_are_the_rate_limit_headers_and_then_refused() {
    let app = TestApp::with(|c| c.server.metrics_per_org = true).await;
    let dev = small(&app, json!({"requests_per_hour": 4})).await;
    // The operator's request that made the developer was the first.
    for remaining in (0..3).rev() {
        let reply = app
            .with_token(&dev, Method::GET, "/v1/scripts")
            .send()
            .await;
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.header("x-ratelimit-limit"), "4");
        assert_eq!(reply.header("x-ratelimit-window"), "3600");
        assert_eq!(reply.header("x-ratelimit-remaining"), remaining.to_string());
    }
    let refused = app
        .with_token(&dev, Method::GET, "/v1/scripts")
        .send()
        .await;
    assert_eq!(refused.header("x-ratelimit-remaining"), "0");
    spent(refused, "requests_per_hour", 3_600);
    // The quota itself stays readable, and says so.
    let current = app
        .with_token(&dev, Method::GET, "/v1/organizations/current")
        .send()
        .await
        .expect(200);
    assert_eq!(
        (&current["api_quota_limit"], &current["api_quota_used"]),
        (&json!(4), &json!(4)),
        "{current}"
    );
    // Another organization's requests are its own.
    app.get("/v1/scripts").send().await.expect(200);
    let metrics = app.anonymous(Method::GET, "/metrics").send().await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kiln_org_quota_used{")
                && l.contains("quota=\"requests_per_hour\"")
                && l.ends_with(" 4")),
        "{metrics}"
    );
}

#[tokio::test]
async fn executions_and_fuel_per_day_refuse_the_next_run() {
    let app = TestApp::new().await;
    let dev = small(&app, json!({"executions_per_day": 2})).await;
    app.with_token(&dev, Method::POST, "/v1/scripts")
        .json(&json!({"name": "one", "language": "javascript", "content": "function main() { return 1; }"}))
        .send()
        .await
        .expect(201);
    for _ in 0..2 {
        app.with_token(&dev, Method::POST, "/v1/scripts/one/execute?wait=true")
            .json(&json!({}))
            .send()
            .await
            .expect(200);
    }
    let refused = app
        .with_token(&dev, Method::POST, "/v1/scripts/one/execute?wait=true")
        .json(&json!({}))
        .send()
        .await;
    spent(refused, "executions_per_day", 86_400);
    let adhoc = app
        .with_token(&dev, Method::POST, "/v1/execute")
        .json(&json!({"language": "javascript", "code": "function main() { return 2; }"}))
        .send()
        .await;
    spent(adhoc, "executions_per_day", 86_400);
    // Nothing was stored of the refused runs.
    let listed = app
        .with_token(&dev, Method::GET, "/v1/executions")
        .send()
        .await
        .expect(200);
    assert_eq!(listed["pagination"]["total_elements"], 2, "{listed}");

    // Fuel: one more unit than the day's runs burned lets one more run
    // start, which burns past it; the next is refused.
    let current = app
        .with_token(&dev, Method::GET, "/v1/organizations/current")
        .send()
        .await
        .expect(200);
    let burned = current["usage"]
        .as_array()
        .expect("usage")
        .iter()
        .find(|u| u["quota"] == "fuel_per_day")
        .and_then(|u| u["used"].as_u64())
        .expect("fuel used");
    assert!(burned > 0, "{current}");
    app.put("/v1/organizations/small")
        .json(&json!({"quotas": {"fuel_per_day": burned + 1}}))
        .send()
        .await
        .expect(200);
    app.with_token(&dev, Method::POST, "/v1/scripts/one/execute?wait=true")
        .json(&json!({}))
        .send()
        .await
        .expect(200);
    // Admission reads the day's fuel again once it is a second old.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let refused = app
        .with_token(&dev, Method::POST, "/v1/scripts/one/execute?wait=true")
        .json(&json!({}))
        .send()
        .await;
    spent(refused, "fuel_per_day", 86_400);
    // The default organization runs on.
    app.create_script("mine", "javascript", "function main() { return 3; }")
        .await;
    app.run("mine", json!({})).await;
}

#[tokio::test]
async fn what_an_organization_holds_is_bounded() {
    let app = TestApp::with(|c| c.webhooks.allow_private = true).await;
    let dev = small(
        &app,
        json!({"scripts": 1, "schedules": 1, "webhooks": 1, "api_keys": 1, "stored_bytes": 200}),
    )
    .await;
    let create = |name: &str, content: &str| {
        app.with_token(&dev, Method::POST, "/v1/scripts")
            .json(&json!({"name": name, "language": "javascript", "content": content}))
    };
    let big = format!("function main() {{ return '{}'; }}", "x".repeat(300));
    spent(create("big", &big).send().await, "stored_bytes", 3_600);
    create("one", "function main() { return 1; }")
        .send()
        .await
        .expect(201);
    spent(
        create("two", "function main() { return 2; }").send().await,
        "scripts",
        3_600,
    );
    // A new version adds its bytes to what is kept.
    let update = app
        .with_token(&dev, Method::PUT, "/v1/scripts/one")
        .json(&json!({"content": big}))
        .send()
        .await;
    spent(update, "stored_bytes", 3_600);
    for (path, body, quota) in [
        (
            "/v1/schedules",
            json!({"name": "n", "script_id": "one", "cron": "@daily"}),
            "schedules",
        ),
        (
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["script.created"]}),
            "webhooks",
        ),
        (
            "/v1/api-keys",
            json!({"name": "k", "scopes": ["read:scripts"]}),
            "api_keys",
        ),
    ] {
        let first = app
            .with_token(&dev, Method::POST, path)
            .json(&body)
            .send()
            .await;
        assert_eq!(first.status(), 201, "{path}: {}", first.text());
        let second = app
            .with_token(&dev, Method::POST, path)
            .json(&body)
            .send()
            .await;
        spent(second, quota, 3_600);
    }
    let current = app
        .with_token(&dev, Method::GET, "/v1/organizations/current")
        .send()
        .await
        .expect(200);
    let usage = current["usage"].as_array().expect("usage");
    let scripts = usage
        .iter()
        .find(|u| u["quota"] == "scripts")
        .expect("scripts");
    assert_eq!(
        (&scripts["limit"], &scripts["used"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(current["tier"], "custom");
}

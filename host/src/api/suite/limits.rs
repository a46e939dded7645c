//! Rate limits and caps: per class and caller, on logins and failed
//! authentication per address, one bucket per user, records per user.

use std::net::IpAddr;

use axum::http::Method;
use serde_json::json;

use super::{ADMIN_PASSWORD, Reply, TestApp, error_body, json_of};

/// A numeric rate-limit header.
fn number(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", reply.headers()))
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let app = TestApp::with(|c| c.rate_limit.read_per_minute = 3).await;
    for remaining in [2, 1, 0] {
        let response = app.get("/v1/scripts").send().await;
        assert_eq!(response.status(), 200);
        assert_eq!(number(&response, "x-ratelimit-limit"), 3);
        assert_eq!(number(&response, "x-ratelimit-remaining"), remaining);
        assert!(number(&response, "x-ratelimit-reset") <= 60);
        assert_eq!(number(&response, "x-ratelimit-window"), 60);
    }
    let refused = app.get("/v1/scripts").send().await;
    let retry_after = number(&refused, "retry-after");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(number(&refused, "x-ratelimit-remaining"), 0);
    let body = error_body(refused, 429, "RATE_LIMIT_EXCEEDED");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["limit"], 3);
    assert_eq!(detail["remaining"], 0);
    assert_eq!(detail["retry_after"], retry_after);
    // Other classes, other callers and the probes have their own buckets.
    assert_eq!(
        app.post("/v1/scripts")
            .json(&json!({"name": "w", "language": "javascript", "content": "function main() {}"}))
            .send()
            .await
            .status(),
        201
    );
    let (_, other) = app.create_user("other", "viewer").await;
    assert_eq!(
        app.with_token(&other, Method::GET, "/v1/scripts")
            .send()
            .await
            .status(),
        200
    );
    for _ in 0..5 {
        assert_eq!(
            app.anonymous(Method::GET, "/healthz").send().await.status(),
            200
        );
    }
    let metrics = app.get("/metrics").send().await.text();
    assert!(
        metrics.contains(r#"kiln_rate_limited_requests_total{class="read"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn logins_are_limited_per_username_from_an_ip_and_per_ip() {
    // The test app's own login is the first of the 4.
    let app = TestApp::with(|c| {
        c.rate_limit.login_per_minute = 4;
        // The login route is also in the write class, at its default.
        c.rate_limit.write_per_minute = 1200;
    })
    .await;
    for _ in 0..3 {
        error_body(
            app.login("admin", "guess").await,
            401,
            "AUTHENTICATION_REQUIRED",
        );
    }
    // Used up: even the right password is refused, so a guesser learns nothing.
    let blocked = app.login("admin", ADMIN_PASSWORD).await;
    assert!(blocked.headers().contains_key("retry-after"));
    // The headers are the login bucket's, as the body is, not the write class's.
    assert_eq!(number(&blocked, "x-ratelimit-limit"), 4);
    assert_eq!(number(&blocked, "x-ratelimit-remaining"), 0);
    let body = error_body(blocked, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["details"][0]["limit"], 4);
    // The IP may try other usernames, up to three times the quota: 12, of
    // which 5 are taken (the refused attempt too).
    for i in 0..7 {
        let other = app.login(&format!("someone{i}"), "guess").await;
        error_body(other, 401, "AUTHENTICATION_REQUIRED");
    }
    error_body(
        app.login("someone", "guess").await,
        429,
        "RATE_LIMIT_EXCEEDED",
    );
    // Callers with a token are not affected.
    assert_eq!(app.get("/v1/users/me").send().await.status(), 200);
    let audit = json_of(app.get("/v1/audit?size=100").send().await, 200);
    let failed = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login.failed")
        .count();
    assert_eq!(failed, 10);
}

#[tokio::test]
async fn failed_authentication_is_limited_per_address_before_credentials_are_checked() {
    let app = TestApp::with(|c| c.rate_limit.failed_auth_per_minute = 5).await;
    for _ in 0..5 {
        let forged = app
            .with_token("forged.token.value", Method::GET, "/v1/scripts")
            .send()
            .await;
        assert_eq!(forged.status(), 401);
    }
    let refused = app
        .with_key("kiln_guess", Method::GET, "/v1/scripts")
        .send()
        .await;
    error_body(refused, 429, "RATE_LIMIT_EXCEEDED");
    // Even a right credential from this address is not looked at now, so
    // a guesser cannot tell a hit from a miss.
    let right = app.get("/v1/scripts").send().await;
    assert_eq!(right.status(), 429);
    assert!(right.headers().contains_key("retry-after"));
    // From another address it works.
    let answer = app
        .get("/v1/scripts")
        .from(IpAddr::from([127, 0, 0, 2]))
        .send()
        .await;
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn a_user_is_one_rate_bucket_over_all_its_keys_and_keys_are_capped() {
    let app = TestApp::with(|c| {
        c.rate_limit.read_per_minute = 6;
        c.limits.api_keys_per_user = 2;
    })
    .await;
    let (_, token) = app.create_user("reader", "developer").await;
    let key = |name: &str| {
        app.with_token(&token, Method::POST, "/v1/api-keys")
            .json(&json!({"name": name, "scopes": ["read:scripts"]}))
            .send()
    };
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let created = key(name).await.expect(201);
        keys.push(created["key"].as_str().unwrap().to_owned());
    }
    error_body(key("three").await, 409, "CONFLICT");
    let read = |key: &str| app.with_key(key, Method::GET, "/v1/scripts").send();
    for i in 0..6 {
        assert_eq!(read(&keys[i % 2]).await.status(), 200);
    }
    let empty = read(&keys[0]).await;
    assert_eq!(empty.status(), 429, "the user's one bucket is empty");
    let other = read(&keys[1]).await;
    assert_eq!(other.status(), 429, "whichever key asks");
}

#[tokio::test]
async fn a_user_holds_at_most_so_many_scripts_schedules_and_webhooks() {
    let app = TestApp::with(|c| {
        c.limits.scripts_per_user = 2;
        c.limits.schedules_per_user = 1;
        c.limits.webhooks_per_user = 1;
    })
    .await;
    let (_, token) = app.create_user("builder", "developer").await;
    let create = |path: &str, body: serde_json::Value| {
        app.with_token(&token, Method::POST, path)
            .json(&body)
            .send()
    };
    let script = |name: &str| {
        create(
            "/v1/scripts",
            json!({"name": name, "language": "javascript", "content": "function main() {}"}),
        )
    };
    let first = script("one").await.expect(201);
    script("two").await.expect(201);
    let body = error_body(script("three").await, 409, "CONFLICT");
    assert!(
        body.to_string().contains("limits.scripts_per_user"),
        "{body}"
    );
    // Another user is not held back by this one's scripts.
    app.create_script("admins", "javascript", "function main() {}")
        .await;

    let schedule = |name: &str| {
        create(
            "/v1/schedules",
            json!({"name": name, "script_id": first["id"], "cron": "0 0 * * *"}),
        )
    };
    schedule("daily").await.expect(201);
    let body = error_body(schedule("nightly").await, 409, "CONFLICT");
    assert!(
        body.to_string().contains("limits.schedules_per_user"),
        "{body}"
    );

    let webhook = || {
        create(
            "/v1/webhooks",
            json!({"url": "http://93.184.216.34/hook", "events": ["script.created"]}),
        )
    };
    webhook().await.expect(201);
    let body = error_body(webhook().await, 409, "CONFLICT");
    assert!(
        body.to_string().contains("limits.webhooks_per_user"),
        "{body}"
    );
}

#[tokio::test]
async fn a_guesser_cannot_lock_a_user_out_from_another_address() {
    let app = TestApp::with(|c| c.rate_limit.login_per_minute = 3).await;
    let mut guesses = Vec::new();
    for _ in 0..4 {
        let guess = app
            .anonymous(Method::POST, "/v1/auth/login")
            .from(IpAddr::from([127, 0, 0, 3]))
            .json(&json!({"username": "admin", "password": "wrong guess"}))
            .send()
            .await;
        guesses.push(guess.status().as_u16());
    }
    assert_eq!(guesses, [401, 401, 401, 429]);
    let login = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(login.status(), 200, "locked out by someone else's guesses");
}

/// Writes and runs have buckets of their own, each at its configured size:
/// spending one leaves the others whole.
#[tokio::test]
async fn write_and_execute_classes_are_limited_at_their_own_sizes() {
    let app = TestApp::with(|c| {
        c.rate_limit.write_per_minute = 3;
        c.rate_limit.execute_per_minute = 2;
    })
    .await;
    let write = |n: u32| {
        app.post("/v1/scripts")
            .json(&json!({"name": format!("w{n}"), "language": "javascript",
                          "content": "function main() { return 1; }"}))
    };
    for n in 0..3 {
        let made = write(n).send().await;
        assert_eq!(made.status(), 201, "{}", made.text());
        assert_eq!(number(&made, "x-ratelimit-limit"), 3);
    }
    let refused = write(3).send().await;
    assert_eq!(number(&refused, "x-ratelimit-limit"), 3);
    error_body(refused, 429, "RATE_LIMIT_EXCEEDED");
    for _ in 0..2 {
        let ran = app.execute("w0", "?wait=true", json!({})).await;
        assert_eq!(ran.status(), 200, "{}", ran.text());
        assert_eq!(number(&ran, "x-ratelimit-limit"), 2);
    }
    let refused = app.execute("w0", "?wait=true", json!({})).await;
    assert_eq!(number(&refused, "x-ratelimit-limit"), 2);
    error_body(refused, 429, "RATE_LIMIT_EXCEEDED");
    let ad_hoc = app
        .post("/v1/execute")
        .json(&json!({"language": "javascript", "code": "function main() {}"}))
        .send()
        .await;
    error_body(ad_hoc, 429, "RATE_LIMIT_EXCEEDED");
    // Reads were never limited here.
    assert_eq!(app.get("/v1/scripts").send().await.status(), 200);
    let metrics = app.get("/metrics").send().await.text();
    for class in ["write", "execute"] {
        assert!(
            metrics.contains(&format!(
                "kiln_rate_limited_requests_total{{class=\"{class}\"}} {}",
                if class == "write" { 1 } else { 2 }
            )),
            "{metrics}"
        );
    }
}

/// `limits.output_bytes` caps each stream a run keeps, and the record says
/// which were cut.
#[tokio::test]
async fn output_past_the_configured_cap_is_cut_and_flagged() {
    let app = TestApp::with(|c| c.limits.output_bytes = 1000).await;
    app.create_script(
        "loud",
        "javascript",
        "function main() { console.log('o'.repeat(5000)); console.error('e'.repeat(10)); }",
    )
    .await;
    let run = app.run("loud", json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["stdout"], "o".repeat(1000));
    assert_eq!(run["stdout_truncated"], true);
    assert_eq!(run["stderr"], format!("{}\n", "e".repeat(10)));
    assert_eq!(run["stderr_truncated"], false);
}

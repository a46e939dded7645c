//! Execution requests that are refused, and listing executions.

use serde_json::{Value, json};

use axum::http::Method;

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

/// The ids of a listing's executions, and its pagination.
async fn page_of(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let listing = app
        .get(&format!("/v1/executions{query}"))
        .send()
        .await
        .expect(200);
    let ids = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    (ids, listing["pagination"].clone())
}

#[tokio::test]
async fn cursor_pages_walk_both_ways_and_offset_pages_count() {
    let app = TestApp::new().await;
    app.create_script("ok", "javascript", "function main() { return 1; }")
        .await;
    app.create_script("bad", "javascript", "function main() { throw 1; }")
        .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let script = if i % 3 == 1 { "bad" } else { "ok" };
        let execution = app.execute(script, "?wait=true", json!({})).await.json();
        ids.push(execution["id"].as_str().unwrap().to_string());
    }
    ids.reverse(); // newest first, as listed

    let (first, pagination) = page_of(&app, "?limit=3").await;
    assert_eq!(first, ids[..3]);
    assert_eq!(pagination["has_previous"], false);
    assert!(pagination.get("total_elements").is_none(), "{pagination}");
    let next = pagination["next_cursor"].as_str().unwrap().to_owned();
    let (second, pagination) = page_of(&app, &format!("?limit=3&cursor={next}")).await;
    assert_eq!(second, ids[3..6]);
    let back = pagination["prev_cursor"].as_str().unwrap().to_owned();
    let next = pagination["next_cursor"].as_str().unwrap().to_owned();
    let (last, pagination) = page_of(&app, &format!("?limit=3&cursor={next}")).await;
    assert_eq!(last, ids[6..]);
    assert_eq!(pagination["has_next"], false);
    assert!(pagination.get("next_cursor").is_none(), "{pagination}");
    // Back from the second page is the first again.
    let (again, pagination) = page_of(&app, &format!("?limit=3&cursor={back}")).await;
    assert_eq!(again, ids[..3]);
    assert_eq!(pagination["has_previous"], false);
    assert_eq!(pagination["has_next"], true);

    // A filter follows the status index; the cursor keeps to it.
    let (failed, pagination) = page_of(&app, "?status=failed&limit=1").await;
    assert_eq!(failed, [ids[2].clone()]);
    let next = pagination["next_cursor"].as_str().unwrap().to_owned();
    let (failed, _) = page_of(&app, &format!("?status=failed&limit=1&cursor={next}")).await;
    assert_eq!(failed, [ids[5].clone()]);

    // Offset pages answer totals.
    let (skipped, pagination) = page_of(&app, "?limit=2&offset=4").await;
    assert_eq!(skipped, ids[4..6]);
    assert_eq!(
        (
            &pagination["total_elements"],
            &pagination["offset"],
            &pagination["has_next"]
        ),
        (&json!(7), &json!(4), &json!(true))
    );
    let (_, pagination) = page_of(&app, "?status=failed&trigger=api&page=1&size=1").await;
    assert_eq!(pagination["total_elements"], 2, "{pagination}");

    for bad in [
        "?cursor=bm90LWEtY3Vyc29y",
        "?cursor=%%%",
        "?page=1&cursor=x",
        "?limit=2&size=2",
        "?offset=1&cursor=x",
        "?limit=0",
        "?script_id=",
        // Deeper than 10 000 by number or offset: by cursor.
        "?offset=10001&limit=1",
        "?page=502&size=20",
    ] {
        error_body(
            app.get(&format!("/v1/executions{bad}")).send().await,
            400,
            "VALIDATION_ERROR",
        );
    }
}

#[tokio::test]
async fn finished_executions_are_deleted_by_their_creator_or_an_admin() {
    let app = TestApp::new().await;
    app.create_script("ok", "javascript", "function main() { return 1; }")
        .await;
    app.create_script("spin", "javascript", "function main() { for (;;) {} }")
        .await;
    let (_, developer) = app.create_user("dev", "developer").await;
    let run_as = async |token: &str, script: &str, query: &str| -> String {
        let reply = app
            .with_token(
                token,
                Method::POST,
                &format!("/v1/scripts/{script}/execute{query}"),
            )
            .json(&json!({}))
            .send()
            .await;
        let body = reply.json();
        // A waited run answers the execution, a queued one its id.
        body["id"]
            .as_str()
            .or(body["execution_id"].as_str())
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned()
    };
    let admins = run_as(&app.token, "ok", "?wait=true").await;
    let theirs = run_as(&developer, "ok", "?wait=true").await;
    let path = |id: &str| format!("/v1/executions/{id}");

    error_body(
        app.with_token(&developer, Method::DELETE, &path(&admins))
            .send()
            .await,
        403,
        "PERMISSION_DENIED",
    );
    let deleted = app
        .with_token(&developer, Method::DELETE, &path(&theirs))
        .send()
        .await;
    assert_eq!(deleted.status(), 204, "{}", deleted.text());
    error_body(
        app.get(&path(&theirs)).send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    error_body(
        app.request(Method::DELETE, &path(&theirs)).send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );

    // Not while it runs.
    let spinning = run_as(&app.token, "spin", "").await;
    error_body(
        app.request(Method::DELETE, &path(&spinning)).send().await,
        409,
        "CONFLICT",
    );
    app.post(&format!("/v1/executions/{spinning}/cancel"))
        .send()
        .await
        .expect(200);

    // In bulk, by an admin only, with a time bound.
    error_body(
        app.with_token(
            &developer,
            Method::DELETE,
            "/v1/executions?before=2999-01-01T00:00:00Z",
        )
        .send()
        .await,
        403,
        "PERMISSION_DENIED",
    );
    error_body(
        app.request(Method::DELETE, "/v1/executions").send().await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.request(
            Method::DELETE,
            "/v1/executions?script=nope&before=2999-01-01T00:00:00Z",
        )
        .send()
        .await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    let none = app
        .request(
            Method::DELETE,
            "/v1/executions?script=ok&before=2000-01-01T00:00:00Z",
        )
        .send()
        .await
        .expect(200);
    assert_eq!(none, json!({"deleted": 0, "more": false}));
    // Before 1970 (a valid date-time) is before every execution.
    let ancient = app
        .request(
            Method::DELETE,
            "/v1/executions?before=0001-01-04T00:00:00.0Z",
        )
        .send()
        .await
        .expect(200);
    assert_eq!(ancient, json!({"deleted": 0, "more": false}));
    let all = app
        .request(
            Method::DELETE,
            "/v1/executions?script=ok&before=2999-01-01T00:00:00Z",
        )
        .send()
        .await
        .expect(200);
    assert_eq!(all, json!({"deleted": 1, "more": false}));
    error_body(
        app.get(&path(&admins)).send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    // The cancelled run of the other script is still there.
    app.get(&path(&spinning)).send().await.expect(200);
    let audit = app.get("/v1/audit").send().await.expect(200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"execution.deleted") && actions.contains(&"executions.deleted"));
}

#[tokio::test]
async fn a_result_past_its_cap_fails_the_run_and_is_not_kept() {
    let app = TestApp::with(|config| config.limits.result_bytes = 100).await;
    app.create_script(
        "big",
        "javascript",
        "function main(p) { return 'y'.repeat(p.n); }",
    )
    .await;
    let small = app.run("big", json!({"parameters": {"n": 90}})).await;
    assert_eq!(small["status"], "completed", "{small}");
    let big = app
        .run("big", json!({"parameters": {"n": 20_000_000}}))
        .await;
    assert_eq!(big["status"], "failed", "{big}");
    assert_eq!(big["error"]["code"], "RESULT_TOO_LARGE", "{big}");
    assert_eq!(big["result"], Value::Null);
}

/// `?wait=`, `?async=` and `Prefer` mean the same on both execute routes;
/// only what happens when nothing is said differs (ad-hoc code waits).
#[tokio::test]
async fn both_execute_routes_follow_one_waiting_rule() {
    let app = TestApp::new().await;
    app.create_script("quick", "javascript", "function main() { return 1; }")
        .await;
    let code = json!({"language": "javascript", "code": "function main() { return 1; }"});
    let ad_hoc = |query: &str| app.post(&format!("/v1/execute{query}")).json(&code);
    let script = |query: &str| {
        app.post(&format!("/v1/scripts/quick/execute{query}"))
            .json(&json!({}))
    };
    for (call, waited) in [
        (ad_hoc(""), true),
        (ad_hoc("?wait=false"), false),
        (ad_hoc("?async=true"), false),
        (ad_hoc("?wait=true"), true),
        (ad_hoc("?async=false"), true),
        (ad_hoc("").header("prefer", "respond-async"), false),
        (script(""), false),
        (script("?wait=true"), true),
        (script("?async=false"), true),
        (script("?wait=false"), false),
        (script("").header("prefer", "wait=30"), true),
        (script("?async=true").header("prefer", "wait=30"), false),
    ] {
        let answer = call.send().await;
        let expected = if waited { 200 } else { 202 };
        assert_eq!(answer.status(), expected, "{}", answer.text());
    }
    for call in [
        ad_hoc("?wait=true&async=true"),
        script("?wait=false&async=false"),
    ] {
        let body = error_body(call.send().await, 400, "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"][0]["field"], "async");
    }
    error_body(script("?wiat=true").send().await, 400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn a_wait_that_runs_out_says_the_run_is_running() {
    let app = TestApp::new().await;
    app.create_script(
        "slow",
        "javascript",
        "function main() { const end = Date.now() + 4000; while (Date.now() < end) {} return 1; }",
    )
    .await;
    let answer = app
        .post("/v1/scripts/slow/execute")
        .header("prefer", "wait=2")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.json()["status"], "running");
}

/// A limit above the server's maximum is cut to it, and the record says so:
/// what was asked and what the run got.
#[tokio::test]
async fn a_limit_above_the_maximum_is_cut_and_the_record_says_so() {
    let app = TestApp::with(|config| config.limits.max_timeout_ms = 5_000).await;
    app.create_script("quick", "javascript", "function main() { return 1; }")
        .await;
    let cut = app
        .run(
            "quick",
            json!({"timeout_ms": 600_000, "memory_mb": 32, "fuel": 1_000_000}),
        )
        .await;
    assert_eq!(cut["status"], "completed", "{cut}");
    assert_eq!(
        cut["limits"],
        json!({
            "timeout_ms": 5_000,
            "memory_mb": 32,
            "fuel": 1_000_000,
            "clamped": [{"limit": "timeout_ms", "requested": 600_000, "maximum": 5_000}],
        })
    );
    let within = app.run("quick", json!({"timeout_ms": 5_000})).await;
    assert_eq!(within["limits"]["clamped"], json!([]), "{within}");
    let read: Value = app
        .get(&format!("/v1/executions/{}", cut["id"].as_str().unwrap()))
        .send()
        .await
        .json();
    assert_eq!(read["limits"], cut["limits"], "kept in the stored record");
}

/// Two developers, `first` and "other" (their tokens), and a script "nap"
/// that sleeps `ms` milliseconds.
async fn two_users_and_a_nap(app: &TestApp, first: &str, ms: u32) -> (String, String) {
    let (_, first) = app.create_user(first, "developer").await;
    let (_, other) = app.create_user("other", "developer").await;
    let code = format!(
        "export default async function main() {{ await new Promise((r) => setTimeout(r, {ms})); }}"
    );
    app.create_script("nap", "javascript", &code).await;
    (first, other)
}

#[tokio::test]
async fn one_users_flood_of_runs_does_not_hold_up_anothers_single_run() {
    let app = TestApp::with(|c| c.workers.count = 2).await;
    let (flooder, other) = two_users_and_a_nap(&app, "flooder", 50).await;
    // 2 000 runs of 50 ms on 2 workers: 50 s of work, queued far faster,
    // every one asking for high priority, which orders only the flooder's
    // own runs.
    for _ in 0..2_000 {
        app.with_token(&flooder, Method::POST, "/v1/scripts/nap/execute?async=true")
            .json(&json!({"priority": "high"}))
            .send()
            .await
            .expect(202);
    }
    let queued = app.get("/v1/status").send().await.expect(200);
    let waiting = queued["queue_depth"].as_u64().unwrap_or_default();
    assert!(waiting > 200, "the flood is still queued: {queued}");

    let asked = std::time::Instant::now();
    let run = app
        .with_token(&other, Method::POST, "/v1/scripts/nap/execute?wait=true")
        .json(&json!({"priority": "low"}))
        .send()
        .await
        .expect(200);
    assert_eq!(run["status"], "completed", "{run}");
    // In turn it waits for about a run per worker (0.1 s); first in, first
    // out it would have waited for every queued one (over 5 s of them).
    let waited = asked.elapsed();
    assert!(waited < std::time::Duration::from_secs(4), "{waited:?}");
    let started_meanwhile = super::started_while_it_waited(&app, &run).await;
    assert!(
        started_meanwhile <= 3,
        "{started_meanwhile} of the flood went first"
    );
}

#[tokio::test]
async fn one_user_holds_at_most_its_share_of_the_queue() {
    let app = TestApp::with(|c| {
        c.workers.count = 1;
        c.workers.queued_per_user = 3;
    })
    .await;
    let (busy, other) = two_users_and_a_nap(&app, "busy", 2000).await;
    let submit = |token: &str| {
        app.with_token(token, Method::POST, "/v1/scripts/nap/execute?async=true")
            .json(&json!({}))
            .send()
    };
    // One runs (or is about to), three wait; the next is refused.
    let mut refused = None;
    for _ in 0..6 {
        let reply = submit(&busy).await;
        if reply.status() == 429 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status(), 202, "{}", reply.text());
    }
    let refused = refused.expect("a submission past the share is refused");
    assert_eq!(refused.header("retry-after"), "1");
    let body = refused.error(429, "RATE_LIMIT_EXCEEDED");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 of your executions")),
        "{body}"
    );
    // Someone else still gets a place.
    submit(&other).await.expect(202);
}

#[tokio::test]
async fn a_user_at_its_running_bound_leaves_a_worker_for_others() {
    let app = TestApp::with(|c| {
        c.workers.count = 2;
        c.workers.running_per_user = 1;
    })
    .await;
    let (busy, other) = two_users_and_a_nap(&app, "busy", 1500).await;
    // Its first run compiles it, and runs that come meanwhile wait for that.
    app.run("nap", json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let queued = app
            .with_token(&busy, Method::POST, "/v1/scripts/nap/execute?async=true")
            .json(&json!({}))
            .send()
            .await
            .expect(202);
        ids.push(queued["execution_id"].as_str().expect("an id").to_owned());
    }
    // The second worker is free for someone else.
    let theirs = app
        .with_token(&other, Method::POST, "/v1/scripts/nap/execute?wait=true")
        .json(&json!({}))
        .send()
        .await
        .expect(200);
    let theirs_started = theirs["started_at"].as_str().expect("started").to_owned();
    // The busy user's runs went one at a time.
    let mut spans = Vec::new();
    for id in &ids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let run = loop {
            let run = app
                .get(&format!("/v1/executions/{id}"))
                .send()
                .await
                .expect(200);
            if run["completed_at"].is_string() || std::time::Instant::now() > deadline {
                break run;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(run["status"], "completed", "{run}");
        spans.push((
            run["started_at"].as_str().expect("started").to_owned(),
            run["completed_at"].as_str().expect("completed").to_owned(),
        ));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlapping runs: {spans:?}");
    }
    // Unbounded, the second worker would have taken the busy user's second
    // run before the other user asked.
    assert!(theirs_started < spans[1].0, "{theirs_started} vs {spans:?}");
}

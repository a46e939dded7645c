//! Organizations through the API: the worker pool's turns between them.
//! (Isolation, role by role, is the end-to-end matrix in `tests/e2e/orgs.rs`.)

use axum::http::Method;
use serde_json::json;

use super::TestApp;

/// A second organization, `acme`, with a developer of its own (whose
/// token this returns) and a script `nap` of `ms` there and in the default
/// organization.
async fn second_organization(app: &TestApp, ms: u32) -> String {
    app.post("/v1/organizations")
        .json(&json!({"name": "acme", "admin": "admin"}))
        .send()
        .await
        .expect(201);
    app.post("/v1/users")
        .header("x-kiln-organization", "acme")
        .json(
            &json!({"username": "acme-dev", "password": "acme-dev password", "role": "developer"}),
        )
        .send()
        .await
        .expect(201);
    let token = app.login_token("acme-dev", "acme-dev password").await;
    let code = format!(
        "export default async function main() {{ await new Promise((r) => setTimeout(r, {ms})); }}"
    );
    for caller in [None, Some(&token)] {
        let call = app.post("/v1/scripts");
        let call = match caller {
            Some(token) => call.token(token),
            None => call,
        };
        call.json(&json!({"name": "nap", "language": "javascript", "content": code}))
            .send()
            .await
            .expect(201);
    }
    token
}

#[tokio::test]
async fn one_organizations_flood_does_not_hold_up_anothers_single_run() {
    let app = TestApp::with(|c| c.workers.count = 2).await;
    let acme = second_organization(&app, 50).await;
    // The default organization floods: 2 000 runs of 50 ms from four users
    // (50 s of work on 2 workers), all asking for high priority.
    let mut flooders = Vec::new();
    for n in 0..4 {
        flooders.push(app.create_user(&format!("flooder{n}"), "developer").await.1);
    }
    for _ in 0..500 {
        for flooder in &flooders {
            app.with_token(flooder, Method::POST, "/v1/scripts/nap/execute?async=true")
                .json(&json!({"priority": "high"}))
                .send()
                .await
                .expect(202);
        }
    }
    let queued = app.get("/v1/status").send().await.expect(200);
    let waiting = queued["queue_depth"].as_u64().unwrap_or_default();
    assert!(waiting > 200, "the flood is still queued: {queued}");

    let asked = std::time::Instant::now();
    let run = app
        .with_token(&acme, Method::POST, "/v1/scripts/nap/execute?wait=true")
        .json(&json!({"priority": "low"}))
        .send()
        .await
        .expect(200);
    assert_eq!(run["status"], "completed", "{run}");
    let waited = asked.elapsed();
    assert!(waited < std::time::Duration::from_secs(4), "{waited:?}");
    // The organizations take turns: at most one of the flood starts after
    // acme's run is queued and before it starts (the one whose turn it
    // was), besides those already running. Turns by user would let one
    // run of each flooder go first.
    let started_meanwhile = super::started_while_it_waited(&app, &run).await;
    assert!(
        started_meanwhile <= 2,
        "{started_meanwhile} of the flood went first"
    );
}

#[tokio::test]
async fn an_organization_runs_at_most_its_share_of_the_workers() {
    let app = TestApp::with(|c| {
        c.workers.count = 2;
        c.workers.running_per_org = 1;
    })
    .await;
    let acme = second_organization(&app, 1500).await;
    let (_, busy) = app.create_user("busy", "developer").await;
    // Its first run compiles it, and runs that come meanwhile wait for that.
    app.run("nap", json!({})).await;
    // The default organization queues two long runs: one at a time.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let queued = app
            .with_token(&busy, Method::POST, "/v1/scripts/nap/execute?async=true")
            .json(&json!({}))
            .send()
            .await
            .expect(202);
        ids.push(queued["execution_id"].as_str().expect("an id").to_owned());
    }
    // acme's run finds the second worker free and ends before the default
    // organization's second run starts.
    let run = app
        .with_token(&acme, Method::POST, "/v1/scripts/nap/execute?wait=true")
        .json(&json!({}))
        .send()
        .await
        .expect(200);
    assert_eq!(run["status"], "completed", "{run}");
    let second = app
        .get(&format!("/v1/executions/{}", ids[1]))
        .send()
        .await
        .expect(200);
    assert!(
        second["started_at"].is_null()
            || second["started_at"].as_str() > run["started_at"].as_str(),
        "the second run of the default organization went before acme's: {second}"
    );
}

#[tokio::test]
async fn organization_names_are_bounded_and_an_admin_cannot_rename_theirs() {
    let app = TestApp::new().await;
    for name in ["default", "has space", "a:b", &"x".repeat(65)] {
        app.post("/v1/organizations")
            .json(&json!({"name": name}))
            .send()
            .await
            .error(400, "VALIDATION_ERROR");
    }
    let long = "x".repeat(1_001);
    app.post("/v1/organizations")
        .json(&json!({"name": "ok", "description": long}))
        .send()
        .await
        .error(400, "VALIDATION_ERROR");
    // An organization's admin describes it; its name is an operator's.
    app.put("/v1/organizations/current")
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .error(400, "VALIDATION_ERROR");
    let current = app
        .put("/v1/organizations/current")
        .json(&json!({"description": "ours"}))
        .send()
        .await
        .expect(200);
    assert_eq!(
        (&current["name"], &current["description"]),
        (&json!("default"), &json!("ours"))
    );
}

//! Who may change a script: its owner, its editors, admins.

use axum::http::Method;
use serde_json::{Value, json};

use super::TestApp;

/// The audit entries with `action`, newest first.
pub(super) async fn audited(app: &TestApp, action: &str) -> Vec<Value> {
    let audit = app.get("/v1/audit?size=100").send().await.expect(200);
    audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

#[tokio::test]
async fn only_a_scripts_owner_its_editors_and_admins_change_it() {
    let app = TestApp::new().await;
    let (alice_id, alice) = app.create_user("alice", "developer").await;
    let (bob_id, bob) = app.create_user("bob", "developer").await;
    let (_, ann) = app.create_user("ann", "analyst").await;
    let as_ = |token: &str, method: Method, path: &str| app.with_token(token, method, path);

    // Made as the caller's: only an admin makes one owned by someone else.
    let gift = json!({"name": "gift", "language": "javascript", "owner": "bob",
        "content": "function main() { return 1; }"});
    as_(&alice, Method::POST, "/v1/scripts")
        .json(&gift)
        .send()
        .await
        .error(403, "PERMISSION_DENIED");
    let given = app.post("/v1/scripts").json(&gift).send().await.expect(201);
    assert_eq!(given["owner"], bob_id.as_str());

    let created = as_(&alice, Method::POST, "/v1/scripts")
        .json(&json!({"name": "report", "language": "javascript",
            "content": "function main() { return 'report'; }"}))
        .send()
        .await
        .expect(201);
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["owner"], alice_id.as_str());
    assert_eq!(created["editors"], json!([]));
    as_(&alice, Method::PUT, "/v1/scripts/report/config")
        .json(&json!({"values": {"token": "alice-secret-token"}}))
        .send()
        .await
        .expect(200);

    // Another developer reads and runs it, but cannot change it: not its
    // content (which would print the config), its config, its hosts, who
    // edits it, nor delete it.
    let swap = json!({"content": "function main() { return process.env.token.split('').reverse().join(''); }"});
    let refusals = [
        (Method::PUT, "/v1/scripts/report", swap.clone()),
        (
            Method::PUT,
            "/v1/scripts/report",
            json!({"allowed_hosts": ["evil.example"]}),
        ),
        (
            Method::PUT,
            "/v1/scripts/report",
            json!({"editors": ["bob"]}),
        ),
        (
            Method::PUT,
            "/v1/scripts/report/config",
            json!({"values": {"token": "mine"}}),
        ),
        (Method::DELETE, "/v1/scripts/report", Value::Null),
    ];
    for (method, path, body) in &refusals {
        let mut call = as_(&bob, method.clone(), path);
        if !body.is_null() {
            call = call.json(body);
        }
        let refused = call.send().await.error(403, "PERMISSION_DENIED");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("owner")),
            "{refused}"
        );
    }
    as_(&ann, Method::PUT, "/v1/scripts/report")
        .json(&swap)
        .send()
        .await
        .error(403, "PERMISSION_DENIED");
    let unchanged = as_(&bob, Method::GET, "/v1/scripts/report")
        .send()
        .await
        .expect(200);
    assert_eq!(unchanged["version"], 1);
    assert_eq!(unchanged["allowed_hosts"], json!([]));
    let run = as_(&bob, Method::POST, "/v1/scripts/report/execute?wait=true")
        .json(&json!({}))
        .send()
        .await
        .expect(200);
    assert_eq!(run["result"], "report");
    // Every refusal is in the audit log, against the script.
    let denied: Vec<Value> = audited(&app, "permission.denied")
        .await
        .into_iter()
        .filter(|e| e["target"] == format!("script:{id}"))
        .collect();
    assert_eq!(denied.len(), refusals.len(), "{denied:?}");
    assert!(denied.iter().all(|e| e["actor"] == "bob"), "{denied:?}");

    // Its owner makes bob an editor: now he changes it, and the version is
    // his; but he cannot hand out the script.
    let shared = as_(&alice, Method::PUT, "/v1/scripts/report")
        .json(&json!({"editors": ["bob", bob_id.as_str()]}))
        .send()
        .await
        .expect(200);
    assert_eq!(shared["editors"], json!([bob_id.as_str()]));
    let edited = as_(&bob, Method::PUT, "/v1/scripts/report")
        .json(&json!({"content": "function main() { return 'report v2'; }"}))
        .send()
        .await
        .expect(200);
    assert_eq!(edited["version"], 2);
    let v2 = app
        .get("/v1/scripts/report/versions/2")
        .send()
        .await
        .expect(200);
    assert_eq!(v2["created_by"], bob_id.as_str());
    let v1 = app
        .get("/v1/scripts/report/versions/1")
        .send()
        .await
        .expect(200);
    assert_eq!(v1["created_by"], alice_id.as_str());
    for body in [json!({"owner": "bob"}), json!({"editors": []})] {
        as_(&bob, Method::PUT, "/v1/scripts/report")
            .json(&body)
            .send()
            .await
            .error(403, "PERMISSION_DENIED");
    }
    // An old version runs with today's config: only who may change the
    // script runs one.
    let (_, carol) = app.create_user("carol", "developer").await;
    let run_version = |token: &str, version: u32| {
        app.with_token(token, Method::POST, "/v1/scripts/report/execute?wait=true")
            .json(&json!({ "version": version }))
            .send()
    };
    run_version(&carol, 1).await.error(403, "PERMISSION_DENIED");
    let by_editor = run_version(&bob, 1).await.expect(200);
    assert_eq!(by_editor["result"], "report");
    run_version(&carol, 2).await.expect(200);

    // Editors must be users; there is a bound on them.
    let unknown = as_(&alice, Method::PUT, "/v1/scripts/report")
        .json(&json!({"editors": ["nobody"]}))
        .send()
        .await
        .error(400, "VALIDATION_ERROR");
    assert_eq!(unknown["error"]["details"][0]["field"], "editors");
    let many: Vec<String> = (0..33).map(|_| "bob".to_owned()).collect();
    as_(&alice, Method::PUT, "/v1/scripts/report")
        .json(&json!({ "editors": many }))
        .send()
        .await
        .error(400, "VALIDATION_ERROR");

    // An admin gives it to bob: alice, neither owner nor editor now, is
    // refused; bob deletes it.
    let given = app
        .put("/v1/scripts/report")
        .json(&json!({"owner": "bob", "editors": []}))
        .send()
        .await
        .expect(200);
    assert_eq!(given["owner"], bob_id.as_str());
    assert_eq!(given["created_by"], alice_id.as_str());
    as_(&alice, Method::PUT, "/v1/scripts/report")
        .json(&json!({"description": "mine again"}))
        .send()
        .await
        .error(403, "PERMISSION_DENIED");
    let deleted = as_(&bob, Method::DELETE, "/v1/scripts/report").send().await;
    assert_eq!(deleted.status(), 204, "{}", deleted.text());

    // The script's life is in the audit log: who did what, at which version.
    let of_script = |entries: Vec<Value>| -> Vec<(String, String)> {
        entries
            .into_iter()
            .filter(|e| e["target"] == format!("script:{id}"))
            .map(|e| {
                (
                    e["actor"].as_str().unwrap_or_default().to_owned(),
                    e["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        of_script(audited(&app, "script.created").await),
        [("alice".to_owned(), "report, version 1".to_owned())]
    );
    assert_eq!(
        of_script(audited(&app, "script.updated").await),
        [
            (
                "admin".to_owned(),
                "owner, editors; at version 2".to_owned()
            ),
            ("bob".to_owned(), "content; now version 2".to_owned()),
            ("alice".to_owned(), "editors; at version 1".to_owned()),
        ]
    );
    assert_eq!(
        of_script(audited(&app, "script.config.updated").await),
        [("alice".to_owned(), "keys: token; at version 1".to_owned())]
    );
    assert_eq!(
        of_script(audited(&app, "script.deleted").await),
        [("bob".to_owned(), "report, at version 2".to_owned())]
    );
}

#[tokio::test]
async fn schedules_and_webhooks_are_changed_only_by_who_made_them_or_an_admin() {
    let app = TestApp::with(|c| c.webhooks.allow_private = true).await;
    let (_, alice) = app.create_user("alice", "developer").await;
    let (_, bob) = app.create_user("bob", "developer").await;
    let job = app
        .create_script("job", "javascript", "function main() { return 1; }")
        .await;
    let job_id = job["id"].as_str().expect("an id").to_owned();
    let as_ = |token: &str, method: Method, path: &str| app.with_token(token, method, path);
    let schedule = as_(&alice, Method::POST, "/v1/schedules")
        .json(&json!({"name": "nightly", "script_id": "job", "cron": "@daily"}))
        .send()
        .await
        .expect(201);
    let webhook = as_(&alice, Method::POST, "/v1/webhooks")
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["execution.failed"]}))
        .send()
        .await
        .expect(201);
    let schedule = format!("/v1/schedules/{}", schedule["id"].as_str().expect("an id"));
    let webhook = format!("/v1/webhooks/{}", webhook["id"].as_str().expect("an id"));

    // Another developer sees them but cannot retarget, pause or delete them.
    let refusals = [
        (
            Method::PUT,
            schedule.clone(),
            json!({"parameters": {"x": 1}}),
        ),
        (Method::DELETE, schedule.clone(), Value::Null),
        (
            Method::PUT,
            webhook.clone(),
            json!({"url": "http://127.0.0.1:10/mine"}),
        ),
        (Method::POST, format!("{webhook}/test"), Value::Null),
        (Method::DELETE, webhook.clone(), Value::Null),
    ];
    for (method, path, body) in &refusals {
        let mut call = as_(&bob, method.clone(), path);
        if !body.is_null() {
            call = call.json(body);
        }
        call.send().await.error(403, "PERMISSION_DENIED");
    }
    as_(&bob, Method::GET, &schedule).send().await.expect(200);
    as_(&bob, Method::GET, &webhook).send().await.expect(200);
    let denied = audited(&app, "permission.denied").await;
    assert_eq!(denied.len(), refusals.len(), "{denied:?}");

    // An admin may; so may the one who made them.
    app.put(&schedule)
        .json(&json!({"active": false}))
        .send()
        .await
        .expect(200);
    for path in [&schedule, &webhook] {
        let gone = as_(&alice, Method::DELETE, path).send().await;
        assert_eq!(gone.status(), 204, "{}", gone.text());
    }
    // Each change is in the audit log with who made it and which fields.
    let changes: Vec<(String, String, String)> = {
        let audit = app.get("/v1/audit?size=100").send().await.expect(200);
        audit["data"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("schedule.") || a.starts_with("webhook."))
            })
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (text("action"), text("actor"), text("detail"))
            })
            .collect()
    };
    let expect = |action: &str, actor: &str, detail: &str| {
        (action.to_owned(), actor.to_owned(), detail.to_owned())
    };
    assert_eq!(
        changes,
        [
            expect("webhook.deleted", "alice", "events: execution.failed"),
            expect("schedule.deleted", "alice", "nightly"),
            expect("schedule.updated", "admin", "active"),
            expect("webhook.created", "alice", "events: execution.failed"),
            expect(
                "schedule.created",
                "alice",
                &format!("nightly, of script:{job_id}")
            ),
        ]
    );
}

//! What callers may do: roles against route classes, API keys, users, rate
//! limits, and secrets kept out of logs, listings and the audit log.

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::json_of;
use crate::harness::{ADMIN_PASSWORD, Kiln, error_body};

/// What a request does, its method, path and body, and the roles allowed it.
type Case = (
    &'static str,
    Method,
    String,
    Option<Value>,
    &'static [&'static str],
);

#[test]
fn every_role_against_every_route_class() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_script("hello", "javascript", "function main() { return 1; }");
    let (_, developer) = kiln.create_user("dev", "developer");
    let (_, analyst) = kiln.create_user("ann", "analyst");
    let (_, viewer) = kiln.create_user("vic", "viewer");
    let roles = [
        ("admin", kiln.token.clone()),
        ("developer", developer),
        ("analyst", analyst),
        ("viewer", viewer),
    ];
    let schedule = json!({"name": "s", "script_id": "hello", "cron": "@daily"});
    let create = |name: &str| json!({"name": name, "language": "javascript", "content": "function main() {}"});
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
            let mut request = kiln.with_token(token, method.clone(), path);
            if let Some(body) = body {
                let body = if body == "create" {
                    create(&format!("{what}-{role}").replace(' ', "-"))
                } else {
                    body.clone()
                };
                request = request.json(&body);
            }
            let response = request.send().unwrap();
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
    let audit = json_of(kiln.get("/v1/audit?size=100").send().unwrap(), 200);
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

#[test]
fn api_keys_are_shown_once_capped_and_revoked_at_once() {
    let (kiln, _dir) = Kiln::start(&[]);
    let created = json_of(
        kiln.post("/v1/api-keys")
            .json(&json!({"name": "ci", "scopes": ["read:scripts"], "expires_in_days": 30}))
            .send()
            .unwrap(),
        201,
    );
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kiln_") && key.len() == 37, "{key}");
    assert!(key[5..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    assert_eq!(created["scopes"], json!(["read:scripts"]));
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_str().unwrap().to_owned();

    assert_eq!(
        kiln.with_key(&key, Method::GET, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        200
    );
    let me = json_of(
        kiln.with_key(&key, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(me["username"], "admin");
    error_body(
        kiln.with_key(&key, Method::POST, "/v1/scripts")
            .json(&json!({"name": "x", "language": "javascript", "content": "function main() {}"}))
            .send()
            .unwrap(),
        403,
        "PERMISSION_DENIED",
    );
    // A key cannot mint keys at all (one that outlived it would survive its
    // revocation), with more scopes or the same.
    for scopes in [json!(["write:scripts"]), json!(["read:scripts"])] {
        error_body(
            kiln.with_key(&key, Method::POST, "/v1/api-keys")
                .json(&json!({"name": "child", "scopes": scopes}))
                .send()
                .unwrap(),
            403,
            "PERMISSION_DENIED",
        );
    }
    // Ad-hoc code needs write:scripts as well as execute:scripts.
    let runner = kiln.api_key(&kiln.token, "runner", &["execute:scripts"]);
    let body = error_body(
        kiln.with_key(&runner, Method::POST, "/v1/execute")
            .json(&json!({"language": "javascript", "code": "function main() { return 1; }"}))
            .send()
            .unwrap(),
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
    let make = || {
        kiln.post("/v1/api-keys")
            .header("idempotency-key", "same-key")
            .json(&json!({"name": "twice", "scopes": ["read:scripts"]}))
            .send()
            .unwrap()
    };
    let (first, second) = (make(), make());
    assert!(!second.headers().contains_key("idempotent-replayed"));
    assert_ne!(json_of(first, 201)["key"], json_of(second, 201)["key"]);
    let listed = kiln.get("/v1/api-keys").send().unwrap().text().unwrap();
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
            kiln.post("/v1/api-keys").json(&body).send().unwrap(),
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    error_body(
        kiln.post("/v1/api-keys")
            .json(&json!({"name": "n", "scopes": ["root"]}))
            .send()
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    );

    // A viewer may hold a viewer's key but not mint an admin one.
    let (viewer_id, viewer) = kiln.create_user("vic", "viewer");
    for scopes in [json!(["admin"]), json!(["read:scripts", "write:scripts"])] {
        error_body(
            kiln.with_token(&viewer, Method::POST, "/v1/api-keys")
                .json(&json!({"name": "escalate", "scopes": scopes}))
                .send()
                .unwrap(),
            403,
            "PERMISSION_DENIED",
        );
    }
    let viewer_key = json_of(
        kiln.with_token(&viewer, Method::POST, "/v1/api-keys")
            .json(&json!({"name": "mine", "scopes": ["read:scripts"]}))
            .send()
            .unwrap(),
        201,
    );
    let viewer_key_text = viewer_key["key"].as_str().unwrap();
    // The viewer sees only their key and cannot revoke the admin's.
    let theirs = json_of(
        kiln.with_token(&viewer, Method::GET, "/v1/api-keys")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(theirs["pagination"]["total_elements"], 1);
    error_body(
        kiln.with_token(&viewer, Method::DELETE, &format!("/v1/api-keys/{id}"))
            .send()
            .unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
    // The admin sees everyone's: ci, runner, twice (×2) and the viewer's.
    let all = json_of(kiln.get("/v1/api-keys").send().unwrap(), 200);
    assert_eq!(all["pagination"]["total_elements"], 5);

    // Revocation is effective on the next request.
    assert_eq!(
        kiln.request(Method::DELETE, &format!("/v1/api-keys/{id}"))
            .send()
            .unwrap()
            .status(),
        204
    );
    error_body(
        kiln.with_key(&key, Method::GET, "/v1/scripts")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        kiln.with_key(
            "kiln_00000000000000000000000000000000",
            Method::GET,
            "/v1/scripts",
        )
        .send()
        .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    // A disabled owner's keys stop working; enabled again, they work.
    let disable = |disabled: bool| {
        kiln.request(Method::PUT, &format!("/v1/users/{viewer_id}"))
            .json(&json!({"disabled": disabled}))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(disable(true), 200);
    assert_eq!(
        kiln.with_key(viewer_key_text, Method::GET, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(disable(false), 200);
    assert_eq!(
        kiln.with_key(viewer_key_text, Method::GET, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        200
    );

    let audit = kiln
        .get("/v1/audit?size=100")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        audit.contains("api_key.created") && audit.contains("api_key.revoked"),
        "{audit}"
    );
}

#[test]
fn users_are_managed_by_admins_and_changes_apply_at_once() {
    let (kiln, _dir) = Kiln::start(&[]);
    let (dev_id, dev) = kiln.create_user("dev", "developer");
    let script = json!({"name": "s", "language": "javascript", "content": "function main() {}"});
    let create_script = |token: &str| {
        kiln.with_token(token, Method::POST, "/v1/scripts")
            .json(&script)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(create_script(&dev), 201);
    let created_by = json_of(kiln.get("/v1/scripts/s").send().unwrap(), 200)["created_by"].clone();
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
            kiln.post("/v1/users").json(&body).send().unwrap(),
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
    }
    error_body(
        kiln.post("/v1/users")
            .json(&json!({"username": "r", "password": "long enough", "role": "root"}))
            .send()
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        kiln.post("/v1/users")
            .json(&json!({"username": "dev", "password": "long enough", "role": "viewer"}))
            .send()
            .unwrap(),
        409,
        "CONFLICT",
    );
    let users = kiln.get("/v1/users").send().unwrap().text().unwrap();
    assert!(
        !users.contains("argon2") && !users.contains("password"),
        "{users}"
    );

    // A demotion applies to tokens already issued.
    let user = kiln.get(&format!("/v1/users/{dev_id}")).send().unwrap();
    let etag = user.headers()["etag"].to_str().unwrap().to_owned();
    let demoted = json_of(
        kiln.request(Method::PUT, &format!("/v1/users/{dev_id}"))
            .header("if-match", &etag)
            .json(&json!({"role": "viewer"}))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(demoted["role"], "viewer");
    error_body(
        kiln.request(Method::PUT, &format!("/v1/users/{dev_id}"))
            .header("if-match", &etag)
            .json(&json!({"role": "developer"}))
            .send()
            .unwrap(),
        412,
        "PRECONDITION_FAILED",
    );
    assert_eq!(create_script(&dev), 403);

    // A new password ends the user's sessions; the new one logs in.
    assert_eq!(
        kiln.request(Method::PUT, &format!("/v1/users/{dev_id}"))
            .json(&json!({"password": "a brand new one"}))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        kiln.with_token(&dev, Method::GET, "/v1/users/me")
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(kiln.login("dev", "dev password").status(), 401);
    assert_eq!(kiln.login("dev", "a brand new one").status(), 200);

    // The last enabled admin stays.
    let admin_id = json_of(kiln.get("/v1/users/me").send().unwrap(), 200)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for request in [
        kiln.request(Method::PUT, &format!("/v1/users/{admin_id}"))
            .json(&json!({"role": "viewer"})),
        kiln.request(Method::PUT, &format!("/v1/users/{admin_id}"))
            .json(&json!({"disabled": true})),
        kiln.request(Method::DELETE, &format!("/v1/users/{admin_id}")),
    ] {
        error_body(request.send().unwrap(), 409, "CONFLICT");
    }

    assert_eq!(
        kiln.request(Method::DELETE, &format!("/v1/users/{dev_id}"))
            .send()
            .unwrap()
            .status(),
        204
    );
    error_body(
        kiln.get(&format!("/v1/users/{dev_id}")).send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
    assert_eq!(kiln.login("dev", "a brand new one").status(), 401);
}

#[test]
fn rate_limits_answer_429_with_headers() {
    let (kiln, _dir) = Kiln::start(&[("KILN_RATE_LIMIT_READ_PER_MINUTE", "3")]);
    let header = |r: &reqwest::blocking::Response, name: &str| -> u64 {
        r.headers()[name].to_str().unwrap().parse().unwrap()
    };
    for remaining in [2, 1, 0] {
        let response = kiln.get("/v1/scripts").send().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), 3);
        assert_eq!(header(&response, "x-ratelimit-remaining"), remaining);
        assert!(header(&response, "x-ratelimit-reset") <= 60);
    }
    let refused = kiln.get("/v1/scripts").send().unwrap();
    let retry_after = header(&refused, "retry-after");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), 0);
    let body = error_body(refused, 429, "RATE_LIMIT_EXCEEDED");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["limit"], 3);
    assert_eq!(detail["remaining"], 0);
    assert_eq!(detail["retry_after"], retry_after);
    // Other classes, other callers and the probes have their own buckets.
    assert_eq!(
        kiln.post("/v1/scripts")
            .json(&json!({"name": "w", "language": "javascript", "content": "function main() {}"}))
            .send()
            .unwrap()
            .status(),
        201
    );
    let (_, other) = kiln.create_user("other", "viewer");
    assert_eq!(
        kiln.with_token(&other, Method::GET, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        200
    );
    for _ in 0..5 {
        assert_eq!(
            kiln.anonymous(Method::GET, "/healthz")
                .send()
                .unwrap()
                .status(),
            200
        );
    }
    let metrics = kiln.get("/metrics").send().unwrap().text().unwrap();
    assert!(
        metrics.contains(r#"kiln_rate_limited_requests_total{class="read"} 1"#),
        "{metrics}"
    );
}

#[test]
fn logins_are_limited_per_username_from_an_ip_and_per_ip() {
    // The harness's own login is the first of the 4.
    let (kiln, _dir) = Kiln::start(&[("KILN_RATE_LIMIT_LOGIN_PER_MINUTE", "4")]);
    for _ in 0..3 {
        error_body(kiln.login("admin", "guess"), 401, "AUTHENTICATION_REQUIRED");
    }
    // Used up: even the right password is refused, so a guesser learns nothing.
    let blocked = kiln.login("admin", ADMIN_PASSWORD);
    assert!(blocked.headers().contains_key("retry-after"));
    let body = error_body(blocked, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["error"]["details"][0]["limit"], 4);
    // The IP may try other usernames, up to three times the quota: 12, of
    // which 5 are taken (the refused attempt too).
    for i in 0..7 {
        let other = kiln.login(&format!("someone{i}"), "guess");
        error_body(other, 401, "AUTHENTICATION_REQUIRED");
    }
    error_body(kiln.login("someone", "guess"), 429, "RATE_LIMIT_EXCEEDED");
    // Callers with a token are not affected.
    assert_eq!(kiln.get("/v1/users/me").send().unwrap().status(), 200);
    let audit = json_of(kiln.get("/v1/audit?size=100").send().unwrap(), 200);
    let failed = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login.failed")
        .count();
    assert_eq!(failed, 10);
}

#[test]
fn a_burst_of_parallel_guesses_gets_no_more_checks_than_the_quota() {
    let (kiln, _dir) = Kiln::start(&[("KILN_RATE_LIMIT_LOGIN_PER_MINUTE", "5")]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..20)
            .map(|i| {
                let kiln = &kiln;
                scope.spawn(move || kiln.login("admin", &format!("guess {i}")).status().as_u16())
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // 5 per minute, one of them the harness's login.
    assert_eq!((checked, refused), (4, 16), "{statuses:?}");
}

#[test]
fn secrets_never_reach_logs_responses_or_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let data = dir.path().join("data");
    let kiln = Kiln::start_logging_to(
        &data,
        &[("KILN_LOG", "debug")],
        std::fs::File::create(&log_path).unwrap(),
    );
    let user_password = "user password 42";
    let wrong_password = "wrong password 43";
    assert_eq!(
        kiln.post("/v1/users")
            .json(&json!({"username": "u", "password": user_password, "role": "developer"}))
            .send()
            .unwrap()
            .status(),
        201
    );
    assert_eq!(kiln.login("u", wrong_password).status(), 401);
    let login = json_of(kiln.login("u", user_password), 200);
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let rotated = json_of(
        kiln.anonymous(Method::POST, "/v1/auth/refresh")
            .json(&json!({"refresh_token": refresh}))
            .send()
            .unwrap(),
        200,
    );
    let key = kiln.api_key(&access, "k", &["read:scripts"]);
    assert_eq!(
        kiln.with_key(&key, Method::GET, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        kiln.with_key(&key, Method::POST, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        kiln.with_token("forged.token.here", Method::GET, "/v1/scripts")
            .send()
            .unwrap()
            .status(),
        401
    );

    let admin_token = kiln.token.clone();
    let secrets = [
        ADMIN_PASSWORD,
        user_password,
        wrong_password,
        &access,
        &refresh,
        rotated["access_token"].as_str().unwrap(),
        rotated["refresh_token"].as_str().unwrap(),
        &key,
        &admin_token,
    ];
    let audit = kiln
        .get("/v1/audit?size=100")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let users = kiln.get("/v1/users").send().unwrap().text().unwrap();
    let keys = kiln.get("/v1/api-keys").send().unwrap().text().unwrap();
    let jwt_secret = std::fs::read_to_string(data.join("jwt-secret")).unwrap();
    drop(kiln);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("login.failed"),
        "the log has the audit lines: {log}"
    );
    assert!(
        log.contains("authorization: ***"),
        "headers are logged, masked: {log}"
    );
    assert!(
        log.contains("x-api-key: ***"),
        "headers are logged, masked: {log}"
    );
    for secret in secrets.iter().copied().chain([jwt_secret.trim()]) {
        assert!(!log.contains(secret), "the log holds a secret: {secret}");
        assert!(
            !audit.contains(secret),
            "the audit log holds a secret: {secret}"
        );
        assert!(
            !users.contains(secret) && !keys.contains(secret),
            "a listing holds {secret}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

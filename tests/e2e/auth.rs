//! Authentication, authorization, rate limits and the audit log, driven the
//! way a client (or an attacker) would.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, Kiln, error_body};

fn json_of(response: reqwest::blocking::Response, status: u16) -> Value {
    let code = response.status();
    let text = response.text().unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn login_refresh_rotation_reuse_and_logout() {
    let (kiln, _dir) = Kiln::start(&[]);
    // The same answer for a wrong password and for nobody.
    let wrong = error_body(
        kiln.login("admin", "not the password"),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    let nobody = error_body(
        kiln.login("nobody", ADMIN_PASSWORD),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(wrong["error"]["message"], nobody["error"]["message"]);
    error_body(
        kiln.anonymous(Method::GET, "/v1/scripts").send().unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        kiln.anonymous(Method::GET, "/v1/scripts")
            .header("authorization", "Basic YWRtaW46eA==")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(
        kiln.anonymous(Method::GET, "/healthz")
            .send()
            .unwrap()
            .status(),
        200
    );

    let login = json_of(kiln.login("admin", ADMIN_PASSWORD), 200);
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 3600);
    assert_eq!(login["user"]["username"], "admin");
    assert_eq!(login["user"]["role"], "admin");
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    let me = json_of(
        kiln.with_token(access, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(me["username"], "admin");
    assert!(me["last_login_at"].is_string());

    // Rotation: the pair changes and the old refresh token is used up.
    let refresh_once = |token: &str| {
        kiln.anonymous(Method::POST, "/v1/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
            .unwrap()
    };
    let rotated = json_of(refresh_once(refresh), 200);
    let (access2, refresh2) = (
        rotated["access_token"].as_str().unwrap(),
        rotated["refresh_token"].as_str().unwrap(),
    );
    assert_ne!(refresh2, refresh);
    assert_eq!(
        kiln.with_token(access2, Method::GET, "/v1/users/me")
            .send()
            .unwrap()
            .status(),
        200
    );
    // Reuse of the used token revokes the whole family, access tokens too.
    error_body(refresh_once(refresh), 401, "AUTHENTICATION_REQUIRED");
    error_body(refresh_once(refresh2), 401, "AUTHENTICATION_REQUIRED");
    error_body(
        kiln.with_token(access2, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        refresh_once("kilnrt_made_up"),
        401,
        "AUTHENTICATION_REQUIRED",
    );

    // Logout ends the access token and the refresh family at once, and no
    // other session.
    let login = json_of(kiln.login("admin", ADMIN_PASSWORD), 200);
    let access = login["access_token"].as_str().unwrap();
    let out = json_of(
        kiln.with_token(access, Method::POST, "/v1/auth/logout")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(out["status"], "logged out");
    error_body(
        kiln.with_token(access, Method::GET, "/v1/users/me")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        refresh_once(login["refresh_token"].as_str().unwrap()),
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(kiln.get("/v1/users/me").send().unwrap().status(), 200);

    let audit = json_of(kiln.get("/v1/audit?size=100").send().unwrap(), 200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "login.failed",
        "login.succeeded",
        "refresh.reused",
        "logout",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn forged_tokens_are_refused() {
    const SECRET: &str = "an e2e secret of at least 32 characters";
    let (kiln, _dir) = Kiln::start(&[("KILN_AUTH_JWT_SECRET", SECRET)]);
    let real = payload(&kiln.token);
    let sign = |claims: &Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let status = |token: &str| {
        kiln.with_token(token, Method::GET, "/v1/users/me")
            .send()
            .unwrap()
            .status()
    };
    // The control: what the server signs, the test can sign too.
    assert_eq!(status(&sign(&real, SECRET)), 200);

    let with = |field: &str, value: Value| {
        let mut claims = real.clone();
        claims[field] = value;
        claims
    };
    let now = real["iat"].as_u64().unwrap();
    let forgeries = [
        (
            "wrong secret",
            sign(&real, "another secret of at least 32 chars!"),
        ),
        (
            "wrong audience",
            sign(&with("aud", json!("someone-else")), SECRET),
        ),
        ("wrong issuer", sign(&with("iss", json!("evil")), SECRET)),
        ("expired", sign(&with("exp", json!(now - 3600)), SECRET)),
        (
            "unknown session",
            sign(&with("sid", json!("no-such-session")), SECRET),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(real.to_string().as_bytes())
            ),
        ),
        (
            "HS512",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
                &real,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        ),
        ("tampered", {
            // The real signature over someone else's claims.
            let mut parts: Vec<String> = kiln.token.split('.').map(String::from).collect();
            let mut escalated = with("role", json!("admin"));
            escalated["sub"] = json!("someone");
            parts[1] = b64(escalated.to_string().as_bytes());
            parts.join(".")
        }),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in forgeries {
        assert_eq!(status(&token), 401, "{what} was accepted");
    }
    error_body(
        kiln.with_token("x.y.z", Method::GET, "/v1/scripts")
            .send()
            .unwrap(),
        401,
        "AUTHENTICATION_REQUIRED",
    );
}

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
    let cases: Vec<(&str, Method, String, Option<Value>, &[&str])> = vec![
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
    // A key cannot mint a key with more than it has.
    error_body(
        kiln.with_key(&key, Method::POST, "/v1/api-keys")
            .json(&json!({"name": "up", "scopes": ["write:scripts"]}))
            .send()
            .unwrap(),
        403,
        "PERMISSION_DENIED",
    );
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
    let all = json_of(kiln.get("/v1/api-keys").send().unwrap(), 200);
    assert_eq!(all["pagination"]["total_elements"], 2);

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
fn failed_logins_are_limited_per_username_and_per_ip() {
    let (kiln, _dir) = Kiln::start(&[("KILN_RATE_LIMIT_LOGIN_PER_MINUTE", "3")]);
    for _ in 0..4 {
        error_body(kiln.login("admin", "guess"), 401, "AUTHENTICATION_REQUIRED");
    }
    // Blocked now: even the right password is refused, so a guesser learns nothing.
    let blocked = kiln.login("admin", ADMIN_PASSWORD);
    assert!(blocked.headers().contains_key("retry-after"));
    error_body(blocked, 429, "RATE_LIMIT_EXCEEDED");
    // The IP is blocked as well, for any username.
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
    assert_eq!(failed, 4);
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
    let key = json_of(
        kiln.with_token(&access, Method::POST, "/v1/api-keys")
            .json(&json!({"name": "k", "scopes": ["read:scripts"]}))
            .send()
            .unwrap(),
        201,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
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

#[test]
fn the_first_start_makes_an_admin_with_a_random_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("first.log");
    let data = dir.path().join("data");
    let kiln = Kiln::launch(
        &data,
        &[("KILN_ADMIN_PASSWORD", "")],
        std::fs::File::create(&log_path).unwrap().into(),
    );
    let file = data.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(password.len(), 24);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(kiln.login("admin", &password).status(), 200);
    assert_eq!(kiln.login("admin", ADMIN_PASSWORD).status(), 401);
    drop(kiln);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.matches(&password).count(), 1, "printed once: {log}");

    // A restart does not make another admin or print the password again.
    let log_path = dir.path().join("second.log");
    let kiln = Kiln::launch(
        &data,
        &[("KILN_ADMIN_PASSWORD", "")],
        std::fs::File::create(&log_path).unwrap().into(),
    );
    assert_eq!(kiln.login("admin", &password).status(), 200);
    drop(kiln);
    assert!(
        !std::fs::read_to_string(&log_path)
            .unwrap()
            .contains(&password)
    );
}

#[test]
fn the_openapi_document_shows_the_security_schemes() {
    let (kiln, _dir) = Kiln::start(&[]);
    let document = json_of(
        kiln.anonymous(Method::GET, "/openapi.json").send().unwrap(),
        200,
    );
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    let needs = |path: &str, method: &str| document["paths"][path][method]["security"].clone();
    assert_eq!(
        needs("/v1/scripts", "get"),
        json!([{"bearer": ["read:scripts"]}, {"api_key": ["read:scripts"]}])
    );
    assert_eq!(needs("/v1/users", "post")[0]["bearer"], json!(["admin"]));
    assert_eq!(needs("/v1/users/me", "get")[0]["bearer"], json!([]));
    assert!(needs("/v1/auth/login", "post").is_null());
    // A method a route lacks is 405 with what it has, credential or not.
    for request in [
        kiln.request(Method::PATCH, "/v1/scripts"),
        kiln.anonymous(Method::PATCH, "/v1/scripts"),
    ] {
        let response = request.send().unwrap();
        assert_eq!(response.headers()["allow"], "GET, POST");
        error_body(response, 405, "METHOD_NOT_ALLOWED");
    }
    assert!(needs("/healthz", "get").is_null());
}

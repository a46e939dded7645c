//! Authentication: login, refresh rotation, reuse detection, logout, and
//! forged tokens, driven the way a client (or an attacker) would.

use axum::http::Method;
use base64::Engine as _;
use serde_json::{Value, json};

use super::{ADMIN_PASSWORD, TestApp, error_body, json_of};

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let app = TestApp::new().await;
    // The same answer for a wrong password and for nobody.
    let wrong = error_body(
        app.login("admin", "not the password").await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    let nobody = error_body(
        app.login("nobody", ADMIN_PASSWORD).await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(wrong["error"]["message"], nobody["error"]["message"]);
    error_body(
        app.anonymous(Method::GET, "/v1/scripts").send().await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        app.anonymous(Method::GET, "/v1/scripts")
            .header("authorization", "Basic YWRtaW46eA==")
            .send()
            .await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(
        app.anonymous(Method::GET, "/healthz").send().await.status(),
        200
    );

    let login = json_of(app.login("admin", ADMIN_PASSWORD).await, 200);
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 3600);
    assert_eq!(login["user"]["username"], "admin");
    assert_eq!(login["user"]["role"], "admin");
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    let me = json_of(
        app.with_token(access, Method::GET, "/v1/users/me")
            .send()
            .await,
        200,
    );
    assert_eq!(me["username"], "admin");
    assert!(me["last_login_at"].is_string());

    // Rotation: the pair changes and the old refresh token is used up.
    let refresh_once = |token: &str| {
        app.anonymous(Method::POST, "/v1/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let rotated = json_of(refresh_once(refresh).await, 200);
    let (access2, refresh2) = (
        rotated["access_token"].as_str().unwrap(),
        rotated["refresh_token"].as_str().unwrap(),
    );
    assert_ne!(refresh2, refresh);
    assert_eq!(
        app.with_token(access2, Method::GET, "/v1/users/me")
            .send()
            .await
            .status(),
        200
    );
    // Reuse of the used token revokes the whole family, access tokens too.
    error_body(refresh_once(refresh).await, 401, "AUTHENTICATION_REQUIRED");
    error_body(refresh_once(refresh2).await, 401, "AUTHENTICATION_REQUIRED");
    error_body(
        app.with_token(access2, Method::GET, "/v1/users/me")
            .send()
            .await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        refresh_once("kilnrt_made_up").await,
        401,
        "AUTHENTICATION_REQUIRED",
    );

    // Logout ends the access token and the refresh family at once, and no
    // other session.
    let login = json_of(app.login("admin", ADMIN_PASSWORD).await, 200);
    let access = login["access_token"].as_str().unwrap();
    let out = json_of(
        app.with_token(access, Method::POST, "/v1/auth/logout")
            .send()
            .await,
        200,
    );
    assert_eq!(out["status"], "logged out");
    error_body(
        app.with_token(access, Method::GET, "/v1/users/me")
            .send()
            .await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    error_body(
        refresh_once(login["refresh_token"].as_str().unwrap()).await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
    assert_eq!(app.get("/v1/users/me").send().await.status(), 200);

    let audit = json_of(app.get("/v1/audit?size=100").send().await, 200);
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

#[tokio::test]
async fn forged_tokens_are_refused() {
    const SECRET: &str = "a test secret of at least 32 characters";
    let app =
        TestApp::with(|c| c.auth.jwt_secret = Some(crate::config::Secret(SECRET.into()))).await;
    let real = payload(&app.token);
    let sign = |claims: &Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let status = |token: &str| app.with_token(token, Method::GET, "/v1/users/me").send();
    // The control: what the server signs, the test can sign too.
    assert_eq!(status(&sign(&real, SECRET)).await.status(), 200);

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
            let mut parts: Vec<String> = app.token.split('.').map(String::from).collect();
            let mut escalated = with("role", json!("admin"));
            escalated["sub"] = json!("someone");
            parts[1] = b64(escalated.to_string().as_bytes());
            parts.join(".")
        }),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in forgeries {
        assert_eq!(status(&token).await.status(), 401, "{what} was accepted");
    }
    error_body(
        app.with_token("x.y.z", Method::GET, "/v1/scripts")
            .send()
            .await,
        401,
        "AUTHENTICATION_REQUIRED",
    );
}

#[tokio::test]
async fn users_are_found_by_username_as_by_id() {
    let app = TestApp::new().await;
    let (id, _) = app.create_user("dev", "viewer").await;
    let by_name = json_of(app.get("/v1/users/dev").send().await, 200);
    assert_eq!(by_name["id"], id.as_str());
    let by_id = json_of(app.get(&format!("/v1/users/{id}")).send().await, 200);
    assert_eq!(by_id, by_name);
    let changed = json_of(
        app.put("/v1/users/dev")
            .json(&json!({"role": "developer"}))
            .send()
            .await,
        200,
    );
    assert_eq!(changed["role"], "developer");
    assert_eq!(changed["id"], id.as_str());
    let deleted = app
        .request(Method::DELETE, "/v1/users/dev")
        .send()
        .await
        .status();
    assert!(deleted.is_success(), "{deleted}");
    error_body(
        app.get(&format!("/v1/users/{id}")).send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    error_body(
        app.get("/v1/users/nobody").send().await,
        404,
        "RESOURCE_NOT_FOUND",
    );
}

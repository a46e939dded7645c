//! A user's own account: changing one's password, what a reset or a
//! disable takes with it, and one-time login codes.

use axum::http::Method;
use serde_json::{Value, json};

use super::TestApp;
use super::ownership::audited;

#[tokio::test]
async fn a_user_changes_their_own_password_and_ends_their_other_sessions() {
    let app = TestApp::new().await;
    let (dev_id, here) = app.create_user("dev", "developer").await;
    let elsewhere = app.login("dev", "dev password").await.expect(200);
    let elsewhere_token = elsewhere["access_token"].as_str().expect("a token");
    let elsewhere_refresh = elsewhere["refresh_token"].as_str().expect("a token");
    let key = app.api_key(&here, "ci", &["read:scripts"]).await;
    let change = |body: Value| {
        app.with_token(&here, Method::PUT, "/v1/users/me")
            .json(&body)
            .send()
    };

    // Refused, each with its reason, and nothing changes.
    change(json!({"current_password": "a wrong guess", "password": "the new dev password"}))
        .await
        .error(403, "PERMISSION_DENIED");
    change(json!({"current_password": "dev password", "password": "short"}))
        .await
        .error(400, "VALIDATION_ERROR");
    change(json!({"current_password": "dev password", "password": "dev password"}))
        .await
        .error(400, "VALIDATION_ERROR");
    change(json!({"current_password": "dev password", "password": "the new dev password", "role": "admin"}))
        .await
        .error(400, "VALIDATION_ERROR");
    app.login("dev", "dev password").await.expect(200);

    let changed =
        change(json!({"current_password": "dev password", "password": "the new dev password"}))
            .await
            .expect(200);
    assert_eq!(changed["id"], dev_id.as_str());
    assert_eq!(changed["role"], "developer");
    // This session goes on, every other ends; the key stays.
    app.with_token(&here, Method::GET, "/v1/users/me")
        .send()
        .await
        .expect(200);
    app.with_token(elsewhere_token, Method::GET, "/v1/users/me")
        .send()
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    app.anonymous(Method::POST, "/v1/auth/refresh")
        .json(&json!({"refresh_token": elsewhere_refresh}))
        .send()
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    app.with_key(&key, Method::GET, "/v1/scripts")
        .send()
        .await
        .expect(200);
    app.login("dev", "dev password")
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    app.login("dev", "the new dev password").await.expect(200);

    // Asked to, it revokes the keys too.
    change(json!({"current_password": "the new dev password",
        "password": "a third dev password", "revoke_keys": true}))
    .await
    .expect(200);
    app.with_key(&key, Method::GET, "/v1/scripts")
        .send()
        .await
        .error(401, "AUTHENTICATION_REQUIRED");

    let details: Vec<(String, String)> = audited(&app, "user.password_changed")
        .await
        .into_iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            (
                "success".into(),
                "1 other sessions ended, 1 keys revoked".into()
            ),
            (
                "success".into(),
                "2 other sessions ended, 0 keys revoked".into()
            ),
            ("failure".into(), "the current password was wrong".into()),
        ]
    );
}

#[tokio::test]
async fn guessing_the_current_password_is_limited_as_logins_are() {
    let app = TestApp::with(|c| c.rate_limit.login_per_minute = 3).await;
    let (_, token) = app.create_user("dev", "developer").await;
    let guess = || {
        app.with_token(&token, Method::PUT, "/v1/users/me")
            .json(&json!({"current_password": "a wrong guess", "password": "whatever it is"}))
            .send()
    };
    // The login above took one attempt of the minute's three.
    for _ in 0..2 {
        guess().await.error(403, "PERMISSION_DENIED");
    }
    let refused = guess().await;
    assert!(!refused.header("retry-after").is_empty());
    refused.error(429, "RATE_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn a_reset_password_or_a_disable_revokes_the_users_keys() {
    let app = TestApp::new().await;
    let (_, dev) = app.create_user("dev", "developer").await;
    let keys = |n: usize| {
        let app = &app;
        let dev = dev.clone();
        async move {
            let mut made = Vec::new();
            for i in 0..n {
                made.push(app.api_key(&dev, &format!("k{i}"), &["read:scripts"]).await);
            }
            made
        }
    };
    let works = async |key: &str| {
        app.with_key(key, Method::GET, "/v1/scripts")
            .send()
            .await
            .status()
            == 200
    };

    let before = keys(2).await;
    assert!(works(&before[0]).await && works(&before[1]).await);
    app.put("/v1/users/dev")
        .json(&json!({"password": "reset by the admin"}))
        .send()
        .await
        .expect(200);
    assert!(!works(&before[0]).await && !works(&before[1]).await);

    let token = app.login("dev", "reset by the admin").await.expect(200);
    let dev = token["access_token"].as_str().expect("a token").to_owned();
    let key = app.api_key(&dev, "again", &["read:scripts"]).await;
    // A role change alone takes nothing.
    app.put("/v1/users/dev")
        .json(&json!({"role": "analyst"}))
        .send()
        .await
        .expect(200);
    assert!(works(&key).await);
    app.put("/v1/users/dev")
        .json(&json!({"disabled": true}))
        .send()
        .await
        .expect(200);
    app.put("/v1/users/dev")
        .json(&json!({"disabled": false}))
        .send()
        .await
        .expect(200);
    assert!(
        !works(&key).await,
        "enabling the user again brings no key back"
    );
    let updates: Vec<String> = audited(&app, "user.updated")
        .await
        .into_iter()
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect();
    assert!(
        updates.contains(&"disabled=true, 1 keys revoked".to_owned()),
        "{updates:?}"
    );
    assert!(
        updates.contains(&"password, 2 keys revoked".to_owned()),
        "{updates:?}"
    );
}

/// The code an app with `secret` shows `steps` steps from now.
fn code(secret: &str, steps: i64) -> String {
    let now = crate::now_ms() / 1000;
    let at = now.saturating_add_signed(steps * 30);
    crate::auth::totp::code_at(secret, at).expect("a code")
}

/// Sets one-time codes up for the user of `token`: their secret and
/// recovery codes.
async fn turn_codes_on(app: &TestApp, token: &str, password: &str) -> (String, Vec<String>) {
    let setup = app
        .with_token(token, Method::POST, "/v1/users/me/totp")
        .json(&json!({"current_password": password}))
        .send()
        .await
        .expect(200);
    let secret = setup["secret"].as_str().expect("a secret").to_owned();
    let confirmed = app
        .with_token(token, Method::POST, "/v1/users/me/totp/confirm")
        .json(&json!({"code": code(&secret, 0)}))
        .send()
        .await
        .expect(200);
    let recovery = confirmed["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    (secret, recovery)
}

async fn login_with(app: &TestApp, username: &str, password: &str, otp: &str) -> super::Reply {
    app.anonymous(Method::POST, "/v1/auth/login")
        .json(&json!({"username": username, "password": password, "otp": otp}))
        .send()
        .await
}

#[tokio::test]
async fn one_time_codes_guard_logins_once_each_and_pause_a_guesser() {
    let app = TestApp::new().await;
    let (_, dev) = app.create_user("dev", "developer").await;

    // Setting up takes the password; until a code confirms it, logins are
    // as before.
    app.with_token(&dev, Method::POST, "/v1/users/me/totp")
        .json(&json!({"current_password": "a wrong guess"}))
        .send()
        .await
        .error(403, "PERMISSION_DENIED");
    let setup = app
        .with_token(&dev, Method::POST, "/v1/users/me/totp")
        .json(&json!({"current_password": "dev password"}))
        .send()
        .await
        .expect(200);
    let secret = setup["secret"].as_str().expect("a secret").to_owned();
    assert!(
        setup["otpauth_uri"].as_str().is_some_and(|u| u
            .starts_with("otpauth://totp/Kiln:dev?secret=")
            && u.contains(&secret)),
        "{setup}"
    );
    app.login("dev", "dev password").await.expect(200);
    let wrong = app
        .with_token(&dev, Method::POST, "/v1/users/me/totp/confirm")
        .json(&json!({"code": "000000"}))
        .send()
        .await;
    // (One in a million: the right code is 000000.)
    if code(&secret, 0) != "000000" {
        wrong.error(400, "VALIDATION_ERROR");
    }
    // Codes taken now, so a step boundary passing during the test changes
    // nothing: the confirming one, and the app's next one.
    let (first, next) = (code(&secret, 0), code(&secret, 1));
    let made_before = app.login("dev", "dev password").await.expect(200);
    let made_before = made_before["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let confirmed = app
        .with_token(&dev, Method::POST, "/v1/users/me/totp/confirm")
        .json(&json!({"code": first}))
        .send()
        .await
        .expect(200);
    let recovery: Vec<String> =
        serde_json::from_value(confirmed["recovery_codes"].clone()).expect("codes");
    assert_eq!(recovery.len(), 10);
    let me = app
        .with_token(&dev, Method::GET, "/v1/users/me")
        .send()
        .await
        .expect(200);
    assert_eq!(me["totp"], true);
    // A session made without a code ends; the one that turned codes on goes on.
    app.with_token(&made_before, Method::GET, "/v1/users/me")
        .send()
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    app.with_token(&dev, Method::POST, "/v1/users/me/totp")
        .json(&json!({"current_password": "dev password"}))
        .send()
        .await
        .error(409, "CONFLICT");

    // A login now wants a code, and says so only to whoever knows the
    // password.
    let asked = app
        .login("dev", "dev password")
        .await
        .error(401, "OTP_REQUIRED");
    assert_eq!(asked["error"]["details"][0]["field"], "otp");
    app.login("dev", "not the password")
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    // The code that confirmed the setup is used; the app's next one works,
    // once.
    login_with(&app, "dev", "dev password", &first)
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    login_with(&app, "dev", "dev password", &next)
        .await
        .expect(200);
    login_with(&app, "dev", "dev password", &next)
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
    // A recovery code works once, however it is typed.
    let typed = recovery[0].to_uppercase().replace('-', " ");
    login_with(&app, "dev", "dev password", &typed)
        .await
        .expect(200);
    login_with(&app, "dev", "dev password", &recovery[0])
        .await
        .error(401, "AUTHENTICATION_REQUIRED");

    // Five wrong codes in a row (a right one starts the count again; a used
    // one does not count: one above) pause the user's logins, even with a
    // right code.
    for _ in 0..3 {
        login_with(&app, "dev", "dev password", "zzzzz-zzzzz")
            .await
            .error(401, "AUTHENTICATION_REQUIRED");
    }
    let paused = login_with(&app, "dev", "dev password", "zzzzz-zzzzz").await;
    let retry: u64 = paused.header("retry-after").parse().expect("Retry-After");
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(paused.header("x-ratelimit-window"), "300");
    paused.error(429, "RATE_LIMIT_EXCEEDED");
    login_with(&app, "dev", "dev password", &recovery[1])
        .await
        .error(429, "RATE_LIMIT_EXCEEDED");

    // An admin turns them off for a user who lost the phone; only the user
    // turns them on.
    app.put("/v1/users/dev")
        .json(&json!({"totp": true}))
        .send()
        .await
        .error(400, "VALIDATION_ERROR");
    let off = app
        .put("/v1/users/dev")
        .json(&json!({"totp": false}))
        .send()
        .await
        .expect(200);
    assert_eq!(off["totp"], false);
    app.login("dev", "dev password").await.expect(200);

    let actions = |entries: Vec<Value>| -> Vec<String> {
        entries
            .into_iter()
            .filter_map(|e| e["detail"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(audited(&app, "user.totp_enabled").await.len(), 1);
    assert_eq!(
        actions(audited(&app, "user.recovery_code_used").await),
        ["9 left"]
    );
    // Codes used already are refused without counting toward the pause.
    let failed = actions(audited(&app, "login.failed").await);
    let count = |prefix: &str| failed.iter().filter(|d| d.starts_with(prefix)).count();
    assert_eq!(count("a wrong one-time code"), 5, "{failed:?}");
    assert_eq!(count("a one-time code used already"), 2, "{failed:?}");
    assert!(
        failed.contains(&"a wrong one-time code; logins paused".to_owned()),
        "{failed:?}"
    );
}

#[tokio::test]
async fn turning_codes_off_takes_the_password_and_a_code() {
    let app = TestApp::new().await;
    let (_, ops) = app.create_user("ops", "developer").await;
    let (secret, recovery) = turn_codes_on(&app, &ops, "ops password").await;
    let remove = |password: &str, otp: &str| {
        app.with_token(&ops, Method::DELETE, "/v1/users/me/totp")
            .json(&json!({"current_password": password, "otp": otp}))
            .send()
    };
    remove("a wrong guess", &code(&secret, 1))
        .await
        .error(403, "PERMISSION_DENIED");
    remove("ops password", "zzzzz-zzzzz")
        .await
        .error(403, "PERMISSION_DENIED");
    let gone = remove("ops password", &recovery[3]).await;
    assert_eq!(gone.status(), 204, "{}", gone.text());
    remove("ops password", &recovery[4])
        .await
        .error(409, "CONFLICT");
    app.login("ops", "ops password").await.expect(200);
    let outcomes: Vec<Value> = audited(&app, "user.totp_disabled")
        .await
        .into_iter()
        .map(|e| e["outcome"].clone())
        .collect();
    // The wrong code, then the wrong password, refused; then the change.
    assert_eq!(
        outcomes,
        [json!("success"), json!("failure"), json!("failure")]
    );
}

#[tokio::test]
async fn a_setup_is_shown_once_and_dropped_after_wrong_codes() {
    let app = TestApp::new().await;
    let (_, dev) = app.create_user("dev", "developer").await;
    let begin = || {
        app.with_token(&dev, Method::POST, "/v1/users/me/totp")
            .header("idempotency-key", "same-key")
            .json(&json!({"current_password": "dev password"}))
            .send()
    };
    // Not replayed from the idempotency store, which would keep the secret.
    let (one, two) = (begin().await, begin().await);
    assert!(two.header("idempotent-replayed").is_empty());
    let secret = two.expect(200)["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    assert_ne!(one.expect(200)["secret"], secret.as_str());

    let wrong = if code(&secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let confirm = |code: String| {
        app.with_token(&dev, Method::POST, "/v1/users/me/totp/confirm")
            .json(&json!({ "code": code }))
            .send()
    };
    // One too long to be any code is wrong like the others.
    confirm("9".repeat(65)).await.error(400, "VALIDATION_ERROR");
    for _ in 0..3 {
        confirm(wrong.to_owned())
            .await
            .error(400, "VALIDATION_ERROR");
    }
    let dropped = confirm(wrong.to_owned())
        .await
        .error(400, "VALIDATION_ERROR");
    assert!(
        dropped["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("start again")),
        "{dropped}"
    );
    confirm(code(&secret, 0)).await.error(409, "CONFLICT");
    app.login("dev", "dev password").await.expect(200);
}

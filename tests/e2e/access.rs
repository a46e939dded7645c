//! What needs a real server of the access rules: parallel login guesses on
//! real connections, and secrets kept out of the server's log. The access
//! matrix, keys, users and rate limits are tested in process
//! (`host/src/api/suite`).

use reqwest::Method;
use serde_json::json;

use crate::auth::json_of;
use crate::harness::{ADMIN_PASSWORD, Kiln};

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

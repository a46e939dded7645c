//! Authentication that needs a real process: the first start's admin and
//! its password file, and the served OpenAPI document's security schemes.
//! Logins, tokens and forgeries are tested in process (`host/src/api/suite`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, Kiln, error_body};

pub fn json_of(response: reqwest::blocking::Response, status: u16) -> Value {
    let code = response.status();
    let text = response.text().unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap()
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

/// A port already in use stops the first start before it writes anything:
/// no data directory, so no admin password that nobody was shown.
#[test]
fn a_port_in_use_stops_the_start_before_anything_is_written() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", &address, "--data"])
        .arg(&data)
        .env_remove("KILN_ADMIN_PASSWORD")
        .env_remove("KILN_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(!data.exists(), "the data directory was made");
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

/// Behind a trusted proxy (`server.trusted_proxies`), the address the
/// proxy forwards is the client's: each gets its own failed-auth budget and
/// the audit log names it. Without the setting the header is ignored.
#[test]
fn a_trusted_proxy_names_the_client_to_the_limiter_and_the_audit_log() {
    let (kiln, _dir) = Kiln::start(&[
        ("KILN_SERVER_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("KILN_RATE_LIMIT_FAILED_AUTH_PER_MINUTE", "2"),
    ]);
    let bad_token = |client: &str| {
        kiln.anonymous(reqwest::Method::GET, "/v1/scripts")
            .header("authorization", "Bearer not-a-token")
            .header("x-forwarded-for", format!("198.51.100.1, {client}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let first: Vec<u16> = (0..5).map(|_| bad_token("203.0.113.7")).collect();
    assert!(first.contains(&429), "the client is blocked: {first:?}");
    assert_eq!(bad_token("203.0.113.8"), 401, "another client is not");

    let login = |kiln: &Kiln| {
        let response = kiln
            .anonymous(reqwest::Method::POST, "/v1/auth/login")
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"username": "admin", "password": "wrong password"}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401);
        let audit: Value = kiln.get("/v1/audit").send().unwrap().json().unwrap();
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["action"] == "login.failed")
            .map(|entry| entry["ip"].clone())
            .unwrap_or_else(|| panic!("no failed login audited: {audit}"))
    };
    assert_eq!(login(&kiln), "203.0.113.9");
    let (direct, _dir) = Kiln::start(&[]);
    assert_eq!(
        login(&direct),
        "127.0.0.1",
        "a header from an untrusted peer is ignored"
    );
}

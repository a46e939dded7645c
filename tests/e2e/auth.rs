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

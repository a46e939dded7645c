//! Schemathesis (from scripts/setup.sh) over the served document against a
//! real server, every phase on, stateful included: every answer must be one
//! its operation lists, in a listed media type, matching its schema and
//! headers, and never a server error. Bounded in examples and time; the
//! same with a longer budget is in README.md ("The OpenAPI document").
//!
//! Two checks are left out: whether data the schema allows is taken and
//! data it refuses is refused. Some of the server's rules cannot be said in
//! OpenAPI 3.1 (`?wait` against `?async`, cursor against page, a script that
//! must compile, a host that must resolve, `1.0` where JSON Schema's integer
//! allows it and serde does not); those the in-process suite checks rule by
//! rule (`api/suite/openapi.rs`).

use std::process::Command;
use std::time::Duration;

use crate::harness::{Kiln, output_within, python_tool};

#[test]
fn schemathesis_finds_no_answer_the_document_does_not_describe() {
    let limits_off = [
        ("KILN_RATE_LIMIT_READ_PER_MINUTE", "0"),
        ("KILN_RATE_LIMIT_WRITE_PER_MINUTE", "0"),
        ("KILN_RATE_LIMIT_EXECUTE_PER_MINUTE", "0"),
        ("KILN_RATE_LIMIT_FAILED_AUTH_PER_MINUTE", "0"),
    ];
    let (kiln, _data) = Kiln::start(&limits_off);
    let (schemathesis, tools) = python_tool("st");
    let report = tempfile::tempdir().unwrap();
    let ran = output_within(
        Command::new(&schemathesis)
            .arg("run")
            .arg(format!("{}/openapi.json", kiln.base))
            .args(["-H", &format!("Authorization: Bearer {}", kiln.token)])
            .args(["--checks", "all"])
            .args([
                "--exclude-checks",
                "negative_data_rejection,positive_data_acceptance",
            ])
            // Not HTTP request and answer: functions take anything, a
            // logout ends the session the run uses, and so would a new
            // password for its user; `/ws` is a WebSocket.
            .args(["--exclude-path-regex", "^/fn/|/v1/auth/logout|/ws$"])
            .args(["--exclude-path", "/v1/users/{id}"])
            .args(["--max-examples", "25", "--seed", "1"])
            .args(["--max-time", "60", "--request-timeout", "60"])
            .arg("--report-dir")
            .arg(report.path())
            .env("PATH", &tools)
            .env("NO_COLOR", "1")
            // Its cache of what it found goes beside the report, not into
            // the checkout.
            .current_dir(report.path()),
        Duration::from_secs(400),
    );
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
}

//! A client generated from the server's own `/openapi.json` by a stock
//! generator (openapi-python-client, from scripts/setup.sh), driven against
//! a real server by `generated/use_client.py`: the document is what clients
//! are built from, so it must say what the server does.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{ADMIN_PASSWORD, Kiln, output_within, python, python_tool};

#[test]
fn a_client_generated_from_the_document_drives_the_server() {
    let (kiln, _data) = Kiln::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let document = dir.path().join("openapi.json");
    let served = kiln
        .anonymous(reqwest::Method::GET, "/openapi.json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    std::fs::write(&document, served).unwrap();

    // The generator sits beside the Python that setup.sh's environment has.
    let (generator, tools) = python_tool("openapi-python-client");
    let generated = output_within(
        Command::new(&generator)
            .args(["generate", "--meta", "none", "--path"])
            .arg(&document)
            .arg("--output-path")
            .arg(dir.path().join("kiln_client"))
            .env("PATH", &tools),
        Duration::from_secs(300),
    );
    assert!(
        generated.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/generated/use_client.py");
    let used = output_within(
        Command::new(python())
            .arg(script)
            .args([&kiln.base, ADMIN_PASSWORD])
            .env("PYTHONPATH", dir.path()),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&used.stdout);
    assert!(
        used.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&used.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["user"], "admin");
    assert_eq!(seen["kind"], "source");
    assert_eq!(seen["status"], "completed");
    assert_eq!(seen["result"], 42);
    assert_eq!(seen["ad_hoc"], serde_json::json!([1, "two"]));
    assert_eq!(seen["scripts"], serde_json::json!(["generated"]));
    assert_eq!(seen["missing"], "RESOURCE_NOT_FOUND");
    assert!(seen["timeout_ms"].as_u64().unwrap() > 0, "{seen}");
    assert!(seen["executions"].as_u64().unwrap() >= 2, "{seen}");
    assert!(
        seen["queued"].as_str().is_some_and(|id| !id.is_empty()),
        "{seen}"
    );
}

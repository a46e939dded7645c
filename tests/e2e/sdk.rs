//! The guest SDK: `kiln:script` components (the `counter` example, and a
//! crate made by `kiln new` in an empty folder outside the repository) with
//! their key-value store and config values.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Kiln, error_body};

#[test]
fn a_counter_kept_in_kv_grows_across_executions_and_reads_its_config() {
    let (kiln, _dir) = Kiln::start(&[("KILN_LIMITS_KV_SCRIPT_BYTES", "200")]);
    let script = kiln.create_component("counter", kiln_components::COUNTER);
    assert_eq!(script["kind"], "sdk");

    for expected in 1..=3 {
        let run = kiln.run("counter", json!({}));
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["result"]["count"], expected, "{run}");
        assert_eq!(run["stderr"], format!("[info] visits is now {expected}\n"));
    }
    let other = kiln.run("counter", json!({"parameters": {"counter": "other"}}));
    assert_eq!(other["result"]["count"], 1);
    assert_eq!(other["result"]["keys"], json!(["other", "visits"]));

    // Config values: write-only through the API, read by the script.
    assert_eq!(
        kiln.run("counter", json!({}))["result"]["greeting"],
        Value::Null
    );
    let put = kiln
        .request(Method::PUT, "/v1/scripts/counter/config")
        .json(&json!({"values": {"greeting": "hej", "token": "s3cr3t-value"}}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.json::<Value>().unwrap(),
        json!({"keys": ["greeting", "token"]})
    );
    let read = kiln
        .get("/v1/scripts/counter/config")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!read.contains("s3cr3t-value"), "{read}");
    assert_eq!(kiln.run("counter", json!({}))["result"]["greeting"], "hej");
    let bad = kiln
        .request(Method::PUT, "/v1/scripts/counter/config")
        .json(&json!({"values": {"no spaces": "x"}}))
        .send()
        .unwrap();
    error_body(bad, 400, "VALIDATION_ERROR");

    // Admins read the store; a viewer may not.
    let kv: Value = kiln
        .get("/v1/scripts/counter/kv")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(kv["entries"][1]["key"], "visits");
    assert_eq!(kv["entries"][1]["value"], "5");
    let (_, viewer) = kiln.create_user("viewer2", "viewer");
    let denied = kiln
        .with_token(&viewer, Method::GET, "/v1/scripts/counter/kv")
        .send()
        .unwrap();
    error_body(denied, 403, "PERMISSION_DENIED");

    // The quota (200 bytes here) refuses a write that would exceed it; the
    // script sees the error and fails, the store keeps what it had.
    let mut failed = None;
    for n in 0..40 {
        let run = kiln.run(
            "counter",
            json!({"parameters": {"counter": format!("counter-number-{n:02}")}}),
        );
        if run["status"] == "failed" {
            failed = Some(run);
            break;
        }
    }
    let failed = failed.expect("the quota never refused a write");
    assert_eq!(failed["error"]["code"], "SCRIPT_ERROR");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota exceeded"),
        "{failed}"
    );
    let kv: Value = kiln
        .get("/v1/scripts/counter/kv")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(kv["total_bytes"].as_u64().unwrap() <= 200, "{kv}");

    // An Err from run fails the execution with its text.
    let fail = kiln.run("counter", json!({"parameters": {"fail": true}}));
    assert_eq!(fail["status"], "failed");
    assert_eq!(
        fail["error"]["message"],
        "asked to fail with visits untouched"
    );

    // Deleting the script deletes what it kept.
    let id = script["id"].as_str().unwrap();
    assert_eq!(
        kiln.request(Method::DELETE, "/v1/scripts/counter")
            .send()
            .unwrap()
            .status(),
        204
    );
    let again = kiln.create_component("counter", kiln_components::COUNTER);
    assert_ne!(again["id"], id);
    assert_eq!(kiln.run("counter", json!({}))["result"]["count"], 1);
    assert_eq!(
        kiln.run("counter", json!({}))["result"]["greeting"],
        Value::Null
    );
}

#[test]
fn ad_hoc_script_components_have_no_store() {
    use base64::Engine as _;
    let (kiln, _dir) = Kiln::start(&[]);
    let code = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(kiln_components::COUNTER).unwrap());
    let run: Value = kiln
        .post("/v1/execute")
        .json(&json!({"language": "wasm", "code_base64": code}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{run}"
    );
}

/// `kiln new` in an empty folder outside the repository, built with plain
/// cargo, run with `kiln run`, then uploaded: its counter grows.
#[test]
fn a_crate_made_by_kiln_new_builds_runs_locally_and_counts_on_the_server() {
    let outside = tempfile::tempdir().unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    for sdk_flag in [None, Some(sdk.as_path())] {
        let folder = outside.path().join(if sdk_flag.is_some() {
            "with-sdk"
        } else {
            "vendored"
        });
        let mut new = Command::new(env!("CARGO_BIN_EXE_kiln"));
        new.args(["new", "hello-kiln", "--path"]).arg(&folder);
        if let Some(sdk) = sdk_flag {
            new.arg("--sdk").arg(sdk);
        }
        let made = new.output().unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        assert!(
            String::from_utf8_lossy(&made.stdout)
                .contains("cargo build --release --target wasm32-wasip2")
        );
        // The crate depends on the SDK it was given, else on its own copy.
        let manifest = std::fs::read_to_string(folder.join("Cargo.toml")).unwrap();
        let vendored = folder.join("kiln-guest").is_dir();
        match sdk_flag {
            Some(sdk) => {
                let sdk = std::path::absolute(sdk).unwrap();
                assert!(manifest.contains(sdk.to_str().unwrap()), "{manifest}");
                assert!(!vendored, "an SDK was written beside the crate");
            }
            None => assert!(vendored, "no SDK beside the crate"),
        }
    }
    // Both crates build and run; the vendored one, built last, is uploaded.
    let mut wasm = PathBuf::new();
    for folder in ["with-sdk", "vendored"] {
        wasm = build_and_run_locally(&outside.path().join(folder));
    }

    let (kiln, _dir) = Kiln::start(&[]);
    let script = kiln.create_component("hello-kiln", wasm.to_str().unwrap());
    assert_eq!(script["kind"], "sdk");
    for count in 1..=3 {
        let run = kiln.run("hello-kiln", json!({"parameters": {"name": "you"}}));
        assert_eq!(
            run["result"],
            json!({"greeting": "Hello, you!", "count": count}),
            "{run}"
        );
    }
}

/// Builds a crate `kiln new` made, with plain cargo as a user would, and
/// runs it with `kiln run`; returns the component.
fn build_and_run_locally(folder: &Path) -> PathBuf {
    // A shared target dir only saves compiling the same dependencies again
    // across crates and test runs.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-new-target");
    let built = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(folder)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}: {}",
        folder.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/hello_kiln.wasm");
    let local = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("run")
        .arg(&wasm)
        .args(["--params", r#"{"name": "Kiln"}"#, "--json"])
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}: {}",
        folder.display(),
        String::from_utf8_lossy(&local.stderr)
    );
    let outcome: Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(
        outcome["result"],
        json!({"greeting": "Hello, Kiln!", "count": 1}),
        "{}",
        folder.display()
    );
    wasm
}

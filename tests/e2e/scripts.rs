//! `/v1/scripts` where a real server matters: Python's syntax errors (its
//! runtime compiled in a child process) and `/v1/status` over real
//! workers. Validation, listing and the error shape are tested in process
//! (`host/src/api/suite`).

use serde_json::json;

use crate::harness::{Kiln, error_body};

#[test]
fn a_syntax_error_is_422_with_its_position_and_nothing_is_stored() {
    let (kiln, _dir) = Kiln::start(&[]);
    for (language, source, line) in [
        ("javascript", "function main() {\n  return 1 +;\n}", 2),
        ("python", "def main():\n    return (\n\nx = ]\n", 4),
    ] {
        let response = kiln
            .post("/v1/scripts")
            .json(&json!({"name": "broken", "language": language, "content": source}))
            .send()
            .unwrap();
        let body = error_body(response, 422, "COMPILE_ERROR");
        let detail = &body["error"]["details"][0];
        assert_eq!(detail["field"], "content", "{body}");
        assert_eq!(detail["line"], line, "{body}");
        assert!(detail["column"].is_u64(), "{body}");
        error_body(
            kiln.get("/v1/scripts/broken").send().unwrap(),
            404,
            "RESOURCE_NOT_FOUND",
        );
    }
}

/// An import of a module Kiln's Python lacks is refused at upload, naming
/// the module and its line; a script without an entry point uploads (its
/// top level may be all it has to check) but fails its runs as a compile
/// error that says what to define.
#[test]
fn a_missing_module_is_422_at_upload_and_a_missing_main_fails_the_run() {
    let (kiln, _dir) = Kiln::start(&[]);
    let response = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "tz", "language": "python",
                      "content": "import json\nfrom sqlite3 import connect\ndef main():\n    return 1\n"}))
        .send()
        .unwrap();
    let body = error_body(response, 422, "COMPILE_ERROR");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["line"], 2, "{body}");
    assert!(
        body.to_string().contains("No module named 'sqlite3'"),
        "{body}"
    );

    for (name, language, source, signature) in [
        (
            "no-main-js",
            "javascript",
            "const x = 1;",
            "function main(params)",
        ),
        ("no-main-py", "python", "x = 1\n", "def main(**params)"),
    ] {
        kiln.create_script(name, language, source);
        let run = kiln.run(name, json!({}));
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error"]["code"], "COMPILE_ERROR", "{run}");
        assert!(
            run["error"]["message"]
                .as_str()
                .unwrap()
                .contains(signature),
            "{run}"
        );
    }
}

#[test]
fn status_reports_workers_executions_and_the_compile_cache() {
    let (kiln, _dir) = Kiln::start(&[("KILN_WORKERS_COUNT", "3")]);
    kiln.create_script("one", "javascript", "function main() { return 1; }");
    let run = kiln
        .post("/v1/scripts/one/execute?wait=true")
        .send()
        .unwrap();
    assert_eq!(run.status(), 200);
    let status: serde_json::Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
    assert_eq!(status["workers"], 3);
    assert_eq!(status["executions_by_status"]["completed"], 1, "{status}");
    assert_eq!(status["queue_depth"], 0);
    assert!(status["store_size_bytes"].as_u64().unwrap() > 0);
    // Records per family: the run, the audit entries of logging in and
    // creating the script, and the run's usage rollups (stored by the
    // store's flush that follows an answer within a second).
    let records = &status["records"];
    assert_eq!(records["executions"], 1, "{status}");
    assert!(records["audit_entries"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(records["webhook_attempts"], 0, "{status}");
    crate::harness::eventually("the run's four usage rollups stored", || {
        let status: serde_json::Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
        (status["records"]["usage_rollups"] == 4).then_some(())
    });
    let loads = |status: &serde_json::Value| {
        let cache = &status["compile_cache"];
        ["memory_hits", "disk_hits", "compiles"]
            .iter()
            .map(|k| cache[k].as_u64().unwrap())
            .sum::<u64>()
    };
    // Each runtime was loaded once, at start (the node is ready after);
    // the check at upload and the runs reuse it rather than loading (and
    // hashing) it again.
    assert_eq!(loads(&status), 2, "{status}");
    for _ in 0..3 {
        assert_eq!(
            kiln.post("/v1/scripts/one/execute?wait=true")
                .send()
                .unwrap()
                .status(),
            200
        );
    }
    let after: serde_json::Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
    assert_eq!(loads(&after), 2, "{after}");
    // The script was compiled by the runtime once, at upload; every run
    // found its code.
    assert_eq!(after["compile_cache"]["script_compiles"], 1, "{after}");
    assert_eq!(after["compile_cache"]["script_code_hits"], 4, "{after}");
    assert_eq!(after["executions_by_status"]["completed"], 4);
    assert!(status["version"].is_string());
}

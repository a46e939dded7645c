//! `/metrics` and `/v1/analytics/usage` after some real traffic.

use serde_json::{Value, json};

use crate::harness::{Kiln, error_body, eventually, sample};

#[test]
fn metrics_count_requests_executions_and_the_cache() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_script("ok", "javascript", "function main() { return 1; }");
    kiln.create_script(
        "bad",
        "javascript",
        "function main() { throw new Error('x'); }",
    );
    for _ in 0..3 {
        assert_eq!(kiln.run("ok", json!({}))["status"], "completed");
    }
    assert_eq!(kiln.run("bad", json!({}))["status"], "failed");
    error_body(
        kiln.get("/v1/scripts/none").send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );

    let response = kiln.get("/metrics").send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let series = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        series(r#"kiln_executions_total{status="completed",language="javascript"}"#),
        3.0
    );
    assert_eq!(
        series(r#"kiln_executions_total{status="failed",language="javascript"}"#),
        1.0
    );
    assert_eq!(
        series(
            r#"kiln_http_requests_total{method="POST",route="/v1/scripts/{id_or_name}/execute",status="200"}"#
        ),
        4.0
    );
    assert_eq!(
        series(
            r#"kiln_http_requests_total{method="GET",route="/v1/scripts/{id_or_name}",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        series(r#"kiln_execution_duration_seconds_count{language="javascript"}"#),
        4.0
    );
    assert!(series(r#"kiln_fuel_consumed_total{language="javascript"}"#) > 0.0);
    assert_eq!(series("kiln_queue_depth"), 0.0);
    assert_eq!(series("kiln_executions_running"), 0.0);
    // The JS runtime was loaded once: one miss (or disk hit) then memory hits.
    let loads = series(r#"kiln_compile_cache_hits_total{tier="memory"}"#)
        + series(r#"kiln_compile_cache_hits_total{tier="disk"}"#)
        + series("kiln_compile_cache_misses_total");
    assert!(loads >= 1.0, "{text}");
    // Each script is compiled by its runtime once; every later run reuses it.
    assert_eq!(series("kiln_script_compiles_total"), 2.0, "{text}");
    assert_eq!(series("kiln_script_code_cache_hits_total"), 4.0, "{text}");
}

/// Python runs that come apart start from a runtime instance made between
/// them, and are still each their own run.
#[test]
fn python_runs_apart_start_from_instances_made_ahead() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_script(
        "apart",
        "python",
        "import os\nruns = []\ndef main(n):\n    runs.append(n)\n    return {'runs': runs, 'id': os.environ['KILN_EXECUTION_ID']}\n",
    );
    let prewarmed = || {
        let status: Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
        status["compile_cache"]["prewarmed_runs"].as_u64().unwrap()
    };
    let started = std::time::Instant::now();
    for n in 0.. {
        let execution = kiln.run("apart", json!({ "parameters": { "n": n } }));
        assert_eq!(execution["status"], "completed", "{execution}");
        assert_eq!(
            execution["result"],
            json!({"runs": [n], "id": execution["id"]}),
            "{execution}"
        );
        if prewarmed() >= 2 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no run was prewarmed"
        );
        // Runs are prewarmed when they come apart by twice an instantiation,
        // which takes longer in a debug build: pause longer each time.
        std::thread::sleep(std::time::Duration::from_millis(100 << n.min(4)));
    }
    let text = kiln.get("/metrics").send().unwrap().text().unwrap();
    let counted = sample(&text, "kiln_prewarmed_runs_total").unwrap();
    assert_eq!(counted, prewarmed() as f64, "{text}");
}

#[test]
fn usage_sums_the_period_by_day_status_and_script() {
    let (kiln, _dir) = Kiln::start(&[]);
    kiln.create_script("busy", "javascript", "function main() { return 1; }");
    kiln.create_script(
        "quiet",
        "javascript",
        "function main() { throw new Error('x'); }",
    );
    for _ in 0..4 {
        kiln.run("busy", json!({}));
    }
    kiln.run("quiet", json!({}));

    let usage: Value = kiln
        .get("/v1/analytics/usage?period=7d")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(usage["period"], "7d");
    assert_eq!(usage["executions"], 5, "{usage}");
    assert_eq!(usage["by_status"], json!({"completed": 4, "failed": 1}));
    let daily = usage["daily"].as_array().unwrap();
    // "7d" is today and the six days before it.
    assert_eq!(daily.len(), 7, "{usage}");
    let today = daily.last().unwrap();
    assert_eq!(today["executions"], 5);
    assert_eq!(
        today["date"].as_str(),
        usage["to"].as_str().map(|t| &t[..10])
    );
    assert!(
        daily[..daily.len() - 1]
            .iter()
            .all(|d| d["executions"] == 0)
    );
    let p50 = usage["duration_ms"]["p50"].as_u64().unwrap();
    assert!(usage["duration_ms"]["p99"].as_u64().unwrap() >= p50);
    assert!(usage["fuel"]["total"].as_u64().unwrap() > 0);
    let top = usage["top_scripts"].as_array().unwrap();
    assert_eq!(
        (&top[0]["name"], &top[0]["executions"]),
        (&json!("busy"), &json!(4))
    );
    assert_eq!(
        (&top[1]["name"], &top[1]["failures"]),
        (&json!("quiet"), &json!(1))
    );

    let one: Value = kiln
        .get(&format!(
            "/v1/analytics/usage?script_id={}",
            top[1]["script_id"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (&one["period"], &one["executions"]),
        (&json!("30d"), &json!(1))
    );
    for bad in ["0d", "400d", "week"] {
        let response = kiln
            .get(&format!("/v1/analytics/usage?period={bad}"))
            .send()
            .unwrap();
        error_body(response, 400, "VALIDATION_ERROR");
    }
}

#[test]
fn the_openapi_document_covers_every_route_and_validates_as_3_1() {
    let (kiln, dir) = Kiln::start(&[]);
    let response = kiln.get("/openapi.json").send().unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/scripts", "get"),
        ("/v1/scripts", "post"),
        ("/v1/scripts/{id_or_name}", "get"),
        ("/v1/scripts/{id_or_name}", "put"),
        ("/v1/scripts/{id_or_name}", "delete"),
        ("/v1/scripts/{id_or_name}/content", "get"),
        ("/v1/scripts/{id_or_name}/versions", "get"),
        ("/v1/scripts/{id_or_name}/versions/{version}", "get"),
        ("/v1/languages", "get"),
        ("/v1/scripts/{id_or_name}/execute", "post"),
        ("/v1/execute", "post"),
        ("/v1/executions", "get"),
        ("/v1/executions/{id}", "get"),
        ("/v1/executions/{id}/cancel", "post"),
        ("/v1/executions/{id}/events", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/status", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/analytics/usage", "get"),
        ("/fn/{name}/{path}", "get"),
        ("/fn/{name}/{path}", "post"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty())
        );
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Script",
        "Execution",
        "ErrorEnvelope",
        "ScriptInput",
        "Usage",
    ] {
        assert!(schemas.contains_key(schema), "no {schema} schema");
    }

    // The reference validator (installed by scripts/setup.sh) must accept it.
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let validated = std::process::Command::new(crate::harness::python())
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
}

/// A record too large for sled's log goes to a file of its own. The answer
/// waits for the journal's sync, which holds the whole record; the full
/// flush that follows within a second syncs the blob file too (the
/// counters prove both syncs: a kill -9 keeps the page cache, so the
/// restart only shows the record whole).
#[test]
fn a_large_record_is_journaled_before_the_answer_and_its_file_synced_after() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = Kiln::start_in(dir.path(), &[]);
    kiln.create_script(
        "loud",
        "javascript",
        "function main() { console.log('x'.repeat(300000)); return 1; }",
    );
    let synced = |kiln: &Kiln| {
        let text = kiln.get("/metrics").send().unwrap().text().unwrap();
        let value = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        (
            value("kiln_store_journal_syncs_total"),
            value("kiln_store_syncs_total"),
            value("kiln_store_blob_files_synced_total"),
        )
    };
    let (journal_before, syncs_before, blobs_before) = synced(&kiln);
    assert!(syncs_before >= 1.0, "creating a script synced nothing");
    let execution = kiln.run("loud", json!({}));
    assert_eq!(execution["status"], "completed", "{execution}");
    let (journal, ..) = synced(&kiln);
    assert!(
        journal > journal_before,
        "the answer came before a journal sync"
    );
    let text = kiln.get("/metrics").send().unwrap().text().unwrap();
    assert_eq!(
        sample(&text, "kiln_store_records{records=\"executions\"}"),
        Some(1.0),
        "{text}"
    );
    eventually("a full flush syncing the blob file", || {
        let (_, syncs, blobs) = synced(&kiln);
        (syncs > syncs_before && blobs > blobs_before).then_some(())
    });

    kiln.kill();
    let kiln = Kiln::start_in(dir.path(), &[]);
    let id = execution["id"].as_str().unwrap();
    let stored = kiln.execution(id);
    assert_eq!(stored["status"], "completed", "{stored}");
    assert_eq!(stored["stdout"].as_str().map(str::len), Some(300_001));
}

/// `log.format = json`: every line a log shipper reads is one JSON object;
/// request lines carry the request id, route, status and whole
/// milliseconds. `kiln health` says whether a server is ready.
#[test]
fn json_logs_parse_line_by_line_and_kiln_health_reports_readiness() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("kiln.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let kiln = Kiln::start_logging_to(
        &data.path().join("node"),
        &[("KILN_LOG_FORMAT", "json"), ("KILN_LOG", "info")],
        log,
    );
    kiln.create_script("logged", "javascript", "function main() { return 1; }");
    assert_eq!(kiln.run("logged", json!({}))["result"], 1);
    error_body(
        kiln.get("/v1/scripts/missing").send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
    let health = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["health", url, "--timeout-ms", "2000"])
            .output()
            .unwrap()
    };
    let ready = health(&kiln.base);
    assert!(ready.status.success(), "{ready:?}");
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ready\n");
    let base = kiln.base.clone();
    assert!(kiln.terminate().success());
    let gone = health(&base);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot reach"));

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}")))
        .collect();
    let served: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "served")
        .collect();
    assert!(served.len() >= 3, "{text}");
    let missing = served
        .iter()
        .find(|line| line["status"] == 404)
        .unwrap_or_else(|| panic!("no 404 line: {text}"));
    assert!(missing["ms"].is_u64(), "whole milliseconds: {missing}");
    assert_eq!(missing["span"]["route"], "/v1/scripts/{id_or_name}");
    assert!(missing["span"]["request_id"].is_string(), "{missing}");
    assert!(
        lines.iter().any(|line| line["message"] == "ready"),
        "start-up says when it is ready: {text}"
    );
}

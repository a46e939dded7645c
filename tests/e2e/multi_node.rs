//! Three `kiln serve` nodes sharing one PostgreSQL database
//! (`store.shared`): every execution runs once whichever node took it, a
//! node killed mid-run has its runs ended INTERRUPTED within its lease while
//! the others serve on, a schedule fires once per tick, a webhook gets each
//! event once, and a cancel or an event stream may reach any node.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::Kiln;
use crate::webhooks::{FAST_RETRIES, Receiver, create_webhook};

/// What every node of one database must share: the key that seals values
/// and the one that signs tokens.
const SHARED: [(&str, &str); 4] = [
    ("KILN_STORE_SHARED", "true"),
    ("KILN_MASTER_KEY", "a master key all three nodes share, 32+"),
    (
        "KILN_AUTH_JWT_SECRET",
        "a token key all three nodes share, 32+",
    ),
    ("KILN_WORKERS_COUNT", "2"),
];

fn three_nodes(url: &str) -> (Vec<Kiln>, Vec<tempfile::TempDir>) {
    let mut env: Vec<(&str, &str)> = vec![("KILN_STORE_URL", url)];
    env.extend(SHARED);
    env.extend(FAST_RETRIES);
    // The first makes the first admin; the others find it.
    let (first, first_dir) = Kiln::start(&env);
    let (second, second_dir) = Kiln::start(&env);
    let (third, third_dir) = Kiln::start(&env);
    (
        vec![first, second, third],
        vec![first_dir, second_dir, third_dir],
    )
}

#[test]
fn three_nodes_on_one_database_run_each_execution_once_and_survive_one_s_death() {
    let url = kiln_testpg::shared().database("multi_node");
    let (mut nodes, _dirs) = three_nodes(&url);
    nodes[0].create_script(
        "triple",
        "javascript",
        "function main(p) { return p.i * 3; }",
    );
    let receiver = Receiver::start(0);
    create_webhook(&nodes[1], &receiver.url, json!(["execution.completed"]));
    // Every node reads the webhooks again within a second.
    std::thread::sleep(Duration::from_millis(1_500));

    // 300 executions, round-robin, not waited for; each read back from
    // another node than the one that took it.
    const RUNS: usize = 300;
    let ids: Vec<String> = (0..RUNS)
        .map(|i| {
            let response = nodes[i % 3].execute("triple", "", json!({"parameters": {"i": i}}));
            assert_eq!(response.status(), 202);
            let body: Value = response.json().unwrap();
            body["execution_id"].as_str().unwrap().to_owned()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let done = nodes[(i + 1) % 3].poll_until_final(id);
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"], json!(i * 3));
    }
    // Each ran once: its script counted it once.
    let script: Value = nodes[2]
        .get("/v1/scripts/triple")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(script["execution_count"], RUNS);
    // And its event reached the webhook once, whichever node delivered it.
    receiver.wait_for("an event per execution", |got| got.len() >= RUNS);
    std::thread::sleep(Duration::from_secs(1));
    let got = receiver.received();
    let ids_seen: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(got.len(), RUNS, "no event twice");
    assert_eq!(ids_seen.len(), RUNS);

    // A schedule every second, made on one node: over 20 s each tick fires
    // once, whichever node claims it (three nodes firing would make ~60).
    nodes[0].create_script("tick", "javascript", "function main() { return 1; }");
    let schedule: Value = nodes[2]
        .post("/v1/schedules")
        .json(&json!({"name": "every second", "script_id": "tick", "cron": "* * * * * *"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let paused = nodes[1]
        .request(
            Method::PUT,
            &format!("/v1/schedules/{}", schedule["id"].as_str().unwrap()),
        )
        .json(&json!({"active": false}))
        .send()
        .unwrap();
    assert_eq!(paused.status(), 200);
    let elapsed = began.elapsed().as_secs();
    std::thread::sleep(Duration::from_millis(500));
    let runs: Value = nodes[0]
        .get("/v1/executions?trigger=schedule&size=100")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let fired = runs["data"].as_array().unwrap().len() as u64;
    eprintln!("the schedule fired {fired} times in {elapsed} s on three nodes");
    assert!(
        (elapsed - 4..=elapsed + 1).contains(&fired),
        "{fired} runs in {elapsed} s"
    );

    // A cancel sent to another node than the one running the run stops it,
    // and that node answers with the cancelled record.
    nodes[0].create_script("spin", "javascript", "function main() { for (;;) {} }");
    let spin = |node: &Kiln| -> String {
        let response = node.execute("spin", "", json!({"timeout_ms": 60_000}));
        assert_eq!(response.status(), 202);
        let body: Value = response.json().unwrap();
        body["execution_id"].as_str().unwrap().to_owned()
    };
    let far = spin(&nodes[0]);
    crate::harness::eventually("running", || {
        (nodes[1].execution(&far)["status"] == "running").then_some(())
    });
    let asked = Instant::now();
    let cancelled = nodes[1]
        .post(&format!("/v1/executions/{far}/cancel"))
        .send()
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    eprintln!("cancelled from another node in {:?}", asked.elapsed());

    // An event stream served by another node than the one running the run
    // ends with the run's end.
    nodes[0].create_script(
        "slow",
        "javascript",
        "function main() { const end = Date.now() + 1500; while (Date.now() < end) {} return 7; }",
    );
    let response = nodes[0].execute("slow", "", json!({}));
    let body: Value = response.json().unwrap();
    let slow = body["execution_id"].as_str().unwrap().to_owned();
    let events = nodes[2]
        .get(&format!("/v1/executions/{slow}/events"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(events.contains("event: done"), "{events}");
    assert!(events.contains("\"result\":7"), "{events}");

    // Node three dies (SIGKILL) while it runs two executions: another node
    // ends them INTERRUPTED once its lease runs out (15 s), and the others
    // go on serving.
    let spinning: Vec<String> = (0..2).map(|_| spin(&nodes[2])).collect();
    for id in &spinning {
        crate::harness::eventually("running", || {
            (nodes[0].execution(id)["status"] == "running").then_some(())
        });
    }
    let third = nodes.pop().unwrap();
    third.kill();
    let killed = Instant::now();
    for id in &spinning {
        let ended = nodes[0].poll_until_final(id);
        assert_eq!(ended["status"], "failed", "{ended}");
        assert_eq!(ended["error"]["code"], "INTERRUPTED", "{ended}");
    }
    eprintln!("interrupted {:?} after the kill", killed.elapsed());
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "ended {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        nodes[1].run("triple", json!({"parameters": {"i": 5}}))["result"],
        15
    );
}

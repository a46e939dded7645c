//! Three `kiln serve` nodes sharing one PostgreSQL database
//! (`store.shared`): every execution runs once whichever node took it, a
//! node killed mid-run has its runs ended INTERRUPTED within its lease while
//! the others serve on, a schedule fires once per tick, a webhook gets each
//! event once, a cancel or an event stream may reach any node, and a
//! database outage makes every node unready and then ready again with
//! nothing answered lost.

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

/// Makes organization `name` of the custom tier with `quotas`, the admin
/// its member.
fn custom_org(node: &Kiln, name: &str, quotas: Value) {
    let made = node
        .post("/v1/organizations")
        .json(&json!({"name": name, "admin": "admin", "tier": "custom", "quotas": quotas}))
        .send()
        .unwrap();
    assert_eq!(made.status(), 201);
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

    // An organization's hourly requests are counted once across the nodes:
    // four pass, whichever nodes they reach, and the fifth is refused.
    custom_org(&nodes[0], "capped", json!({"requests_per_hour": 4}));
    let in_capped = |node: &Kiln| {
        node.get("/v1/scripts")
            .header("x-kiln-organization", "capped")
            .send()
            .unwrap()
    };
    for i in 0..4 {
        assert_eq!(in_capped(&nodes[i % 3]).status(), 200, "request {i}");
    }
    crate::harness::error_body(in_capped(&nodes[1]), 429, "QUOTA_EXCEEDED");

    // An organization allowed one run at a time runs one at a time across
    // the nodes: all sent to one node, the runs that wait there past 2 s
    // are taken by the idle nodes, which have heard nothing of the
    // organization.
    custom_org(&nodes[0], "serial", json!({"concurrent_executions": 1}));
    let in_serial = |node: &Kiln, method: Method, path: &str| {
        node.request(method, path)
            .header("x-kiln-organization", "serial")
    };
    let made = in_serial(&nodes[0], Method::POST, "/v1/scripts")
        .json(&json!({"name": "busy", "language": "javascript",
            "content": "function main() { const end = Date.now() + 1000; while (Date.now() < end) {} return 1; }"}))
        .send()
        .unwrap();
    assert_eq!(made.status(), 201);
    let serial: Vec<String> = (0..4)
        .map(|_| {
            let response = in_serial(&nodes[0], Method::POST, "/v1/scripts/busy/execute")
                .json(&json!({}))
                .send()
                .unwrap();
            assert_eq!(response.status(), 202);
            let body: Value = response.json().unwrap();
            body["execution_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut most_at_once = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: Value = in_serial(&nodes[0], Method::GET, "/v1/executions?size=100")
            .send()
            .unwrap()
            .json()
            .unwrap();
        let runs = page["data"].as_array().unwrap();
        let running = runs.iter().filter(|e| e["status"] == "running").count();
        most_at_once = most_at_once.max(running);
        if runs.iter().filter(|e| e["status"] == "completed").count() == serial.len() {
            break;
        }
        assert!(Instant::now() < deadline, "never all done: {page}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(most_at_once, 1, "one at a time on three nodes");

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
    // gets its output as it is written, then its end.
    nodes[0].create_script(
        "slow",
        "javascript",
        "function main() { console.log('started'); const end = Date.now() + 1500; while (Date.now() < end) {} return 7; }",
    );
    let response = nodes[0].execute("slow", "", json!({}));
    let body: Value = response.json().unwrap();
    let slow = body["execution_id"].as_str().unwrap().to_owned();
    let stream = nodes[2]
        .get(&format!("/v1/executions/{slow}/events"))
        .send()
        .unwrap();
    let (mut output_at, mut done_at, mut events) = (None, None, String::new());
    for line in std::io::BufRead::lines(std::io::BufReader::new(stream)) {
        let line = line.unwrap();
        if line == "event: stdout" && output_at.is_none() {
            output_at = Some(Instant::now());
        }
        if line == "event: done" {
            done_at = Some(Instant::now());
        }
        events.push_str(&line);
        events.push('\n');
    }
    assert!(events.contains("{\"data\":\"started\\n\"}"), "{events}");
    assert!(events.contains("\"result\":7"), "{events}");
    let (output_at, done_at) = (output_at.unwrap(), done_at.unwrap());
    eprintln!(
        "output from another node {:?} before the end",
        done_at - output_at
    );
    assert!(
        done_at - output_at > Duration::from_millis(500),
        "the output came with the end, not as it was written: {events}"
    );

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

#[test]
fn a_database_outage_makes_every_node_unready_until_it_returns_and_loses_nothing() {
    // A cluster of this test's own, so stopping it stops no other test.
    let cluster = kiln_testpg::Cluster::start();
    let (nodes, _dirs) = three_nodes(&cluster.database("outage"));
    nodes[0].create_script("echo", "javascript", "function main(p) { return p.n; }");
    nodes[0].create_script(
        "slow",
        "javascript",
        "function main(p) { const end = Date.now() + 2500; while (Date.now() < end) {} return p.n; }",
    );
    // Answered before the outage: waited runs, two per node.
    let answered: Vec<(String, usize)> = (0..6)
        .map(|n| {
            let record = nodes[n % 3].run("echo", json!({"parameters": {"n": n}}));
            (record["id"].as_str().unwrap().to_owned(), n)
        })
        .collect();
    // Accepted and running when the database goes, ending while it is away:
    // one per node.
    let under_way: Vec<(String, usize)> = (0..3)
        .map(|n| {
            let response = nodes[n].execute("slow", "", json!({"parameters": {"n": n}}));
            assert_eq!(response.status(), 202);
            let body: Value = response.json().unwrap();
            (body["execution_id"].as_str().unwrap().to_owned(), n)
        })
        .collect();
    for (id, _) in &under_way {
        crate::harness::eventually("running", || {
            (nodes[0].execution(id)["status"] == "running").then_some(())
        });
    }

    cluster.pause();
    let stopped = Instant::now();
    // Each node at once (a refused request waits out the pool's 5 s).
    std::thread::scope(|scope| {
        for node in &nodes {
            scope.spawn(move || {
                let down = crate::harness::eventually("unready", || {
                    let answer = node.anonymous(Method::GET, "/readyz").send().unwrap();
                    (answer.status() == 503).then_some(answer)
                });
                let _: Value = down.json().unwrap();
                // What needs the store is refused in the error shape, as
                // unavailable.
                let refused = node.execute("echo", "?wait=true", json!({"parameters": {"n": 0}}));
                let status = refused.status();
                let error: Value = refused.json().unwrap();
                assert_eq!(status, 503, "{error}");
                assert_eq!(error["error"]["code"], "UNAVAILABLE", "{error}");
            });
        }
    });
    std::thread::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed()));

    cluster.resume();
    let back = Instant::now();
    eprintln!("the database was away {:?}", stopped.elapsed());
    for node in &nodes {
        crate::harness::eventually("ready again", || {
            let answer = node.anonymous(Method::GET, "/readyz").send().unwrap();
            (answer.status() == 200).then_some(())
        });
    }
    eprintln!("all three ready {:?} after it returned", back.elapsed());
    // Every answered record, read from another node than the one that took it.
    for (i, (id, n)) in answered.iter().enumerate() {
        let kept = nodes[(i + 1) % 3].execution(id);
        assert_eq!(kept["status"], "completed", "{kept}");
        assert_eq!(kept["result"], json!(n));
    }
    // The runs that ended while the database was away kept their outcome.
    for (id, n) in &under_way {
        let ended = nodes[2].poll_until_final(id);
        assert_eq!(ended["status"], "completed", "{ended}");
        assert_eq!(ended["result"], json!(n));
    }
    for (n, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.run("echo", json!({"parameters": {"n": n}}))["result"],
            json!(n)
        );
    }
}

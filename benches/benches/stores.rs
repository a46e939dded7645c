//! The store under load: `?wait=true` executions of a trivial JavaScript
//! script through one node on sled, one node on PostgreSQL, and two nodes
//! sharing one PostgreSQL database (`store.shared`; the connections split
//! between them), in the same run, at 1 and 32 connections, with
//! authentication and rate limits off. Each round runs the three in turn,
//! which goes first rotating from round to round; the report is each
//! round's rates and the median of the rounds' ratios to sled.
//!
//! ```text
//! cargo build --release -p kiln
//! cargo bench -p kiln-benches --bench stores
//! ```
//!
//! `LOAD_SECONDS` (default 10), `LOAD_MAX_REQUESTS` (default 50 000),
//! `LOAD_ROUNDS` (default 3) and `LOAD_PAUSE_MS` (default 1000) as in the
//! load harness; `KILN_BIN` names the binary. PostgreSQL is a throwaway
//! cluster on 127.0.0.1 (`kiln-testpg`, fsync off: what is measured is Kiln's
//! path to the database, not this disk). The caveat: one machine runs the
//! servers, PostgreSQL and the load together, so on 2 cores a second node
//! takes cores the first would have had: the two-node figure is what sharing
//! one database costs, not what a second machine adds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness fails loudly"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Call, Server, env_or, load, median, print};
use kiln_benches::{kiln_binary, listening_address, workspace};

const CONNECTIONS: [usize; 2] = [1, 32];

fn start(data: &std::path::Path, store: Option<(&str, bool)>) -> (Server, String) {
    let mut command = Command::new(kiln_binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env(
            "KILN_SERVER_CACHE_DIR",
            workspace().join("target/kiln-load-cache"),
        )
        .env("KILN_AUTH_ENABLED", "false")
        // What nodes of one database share.
        .env("KILN_MASTER_KEY", "the stores harness's master key, 32+")
        .env(
            "KILN_AUTH_JWT_SECRET",
            "the stores harness's token key, 32+",
        )
        .envs(
            ["READ", "WRITE", "EXECUTE"]
                .map(|class| (format!("KILN_RATE_LIMIT_{class}_PER_MINUTE"), "0")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((url, shared)) = store {
        command
            .env("KILN_STORE_URL", url)
            .env("KILN_STORE_SHARED", shared.to_string());
    }
    let mut child = command.spawn().unwrap();
    let base = listening_address(&mut child);
    (Server(child), base)
}

/// Makes the trivial script on the node at `base`; its id.
async fn trivial(base: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/scripts"))
        .json(
            &serde_json::json!({"name": "trivial", "language": "javascript",
                                  "content": "function main() { return 'ok'; }"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "cannot create the script");
    let script: serde_json::Value = response.json().await.unwrap();
    script["id"].as_str().unwrap().to_owned()
}

fn waited(base: &str, id: &str) -> Call {
    Call::Execute {
        url: format!("{base}/v1/scripts/{id}/execute?wait=true"),
        credential: None,
        organization: None,
        expect: "ok".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let seconds = env_or("LOAD_SECONDS", 10u64);
    let max_requests = env_or("LOAD_MAX_REQUESTS", 50_000u64);
    let rounds = env_or("LOAD_ROUNDS", 3usize).max(1);
    let pause = Duration::from_millis(env_or("LOAD_PAUSE_MS", 1000u64));
    let cluster = kiln_testpg::Cluster::start();
    let data = tempfile::tempdir().unwrap();
    let (_sled, sled) = start(&data.path().join("sled"), None);
    let alone = cluster.database("alone");
    let (_pg, pg) = start(&data.path().join("pg"), Some((&alone, false)));
    let shared = cluster.database("shared");
    let (_first, first) = start(&data.path().join("first"), Some((&shared, true)));
    let (_second, second) = start(&data.path().join("second"), Some((&shared, true)));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let on_sled = waited(&sled, &trivial(&sled).await);
        let on_pg = waited(&pg, &trivial(&pg).await);
        // One script, made on the first node, run through both.
        let id = trivial(&first).await;
        let on_two = Call::Spread(vec![waited(&first, &id), waited(&second, &id)]);
        let configurations = [
            ("sled, one node", &on_sled),
            ("PostgreSQL, one node", &on_pg),
            ("PostgreSQL, two nodes", &on_two),
        ];
        for (_, call) in configurations {
            let warm = load(call, 4, 5, 200).await;
            assert_eq!(warm.errors, 0, "the warm-up failed");
        }
        println!("| store | connections | requests | errors | req/s | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|---|---|");
        for connections in CONNECTIONS {
            let mut ratios = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                let mut rates = [0.0; 3];
                for turn in 0..3 {
                    let which = (round + turn) % 3;
                    let (name, call) = configurations[which];
                    tokio::time::sleep(pause).await;
                    let report = load(call, connections, seconds, max_requests).await;
                    rates[which] = print(&format!("{name} (round {})", round + 1), connections, &report);
                }
                ratios[0].push(rates[1] / rates[0]);
                ratios[1].push(rates[2] / rates[0]);
            }
            println!(
                "| **PostgreSQL / sled, one node (median of {rounds})** | {connections} | | | **{:.2}×** | | |",
                median(&mut ratios[0])
            );
            println!(
                "| **PostgreSQL two nodes / sled one node (median of {rounds})** | {connections} | | | **{:.2}×** | | |",
                median(&mut ratios[1])
            );
        }
    });
}

//! Edge-node footprint of the shipped `kiln` binary (the static musl build):
//! its size, the time from process start to `/readyz` 200 on an empty data
//! dir and on a warm one holding 100 compiled scripts, idle RSS, and RSS
//! sampled across 10 000 executions; next to the `wasmtime` CLI of the same
//! version where a figure compares (size, start to first answer, RSS of
//! `wasmtime serve`). Everything stays on 127.0.0.1 and is bounded.
//!
//! ```text
//! cargo build --release --target x86_64-unknown-linux-musl -p kiln
//! cargo bench -p kiln-benches --bench edge
//! ```
//!
//! `KILN_BIN` names another kiln binary, `WASMTIME` the wasmtime CLI
//! (`cargo install wasmtime-cli --version 48.0.8 --locked`), `EDGE_EXECUTIONS`
//! the number of executions (default 10 000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness fails loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_benches::{listening_address, wasmtime_binary, workspace};

const ADMIN_PASSWORD: &str = "edge bench admin";
const STARTS: usize = 10;
const SCRIPTS: usize = 100;
const CONNECTIONS: usize = 8;

/// Kills the child when dropped, so no server outlives the harness.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Resident set size now, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// SIGTERM, then wait: the server drains and exits by itself.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "kiln serve exited with {exit}");
    }
}

fn kiln_binary() -> PathBuf {
    let binary = std::env::var_os("KILN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/x86_64-unknown-linux-musl/release/kiln"));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release --target x86_64-unknown-linux-musl -p kiln` \
         first (or set KILN_BIN)",
        binary.display()
    );
    binary
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts `kiln serve` on `data`, its compiled code cached in `cache`, and
/// returns it with the time from spawn to the first `/readyz` 200 (a node
/// is ready once both language runtimes are loaded: compiled, on a cold
/// cache).
fn start_kiln(
    binary: &Path,
    data: &Path,
    cache: &Path,
    client: &reqwest::blocking::Client,
) -> (Server, Duration) {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("KILN_SERVER_CACHE_DIR", cache)
        .env("KILN_LOG", "warn")
        // 10 000 executions in seconds are far past the default quotas.
        .env("KILN_RATE_LIMIT_EXECUTE_PER_MINUTE", "0")
        .env("KILN_RATE_LIMIT_READ_PER_MINUTE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = listening_address(&mut child);
    let ready = format!("{base}/readyz");
    while !client.get(&ready).send().is_ok_and(|r| r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(300), "never ready");
        std::thread::sleep(Duration::from_micros(200));
    }
    (Server { child, base }, started.elapsed())
}

fn login(server: &Server, client: &reqwest::blocking::Client) -> String {
    let login: serde_json::Value = client
        .post(format!("{}/v1/auth/login", server.base))
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    format!("Bearer {}", login["access_token"].as_str().unwrap())
}

/// Creates a JavaScript script and returns its id.
fn create_script(server: &Server, token: &str, name: &str, source: &str) -> String {
    let response = client()
        .post(format!("{}/v1/scripts", server.base))
        .header("authorization", token)
        .json(&serde_json::json!({"name": name, "language": "javascript", "content": source}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "cannot create {name}");
    let script: serde_json::Value = response.json().unwrap();
    script["id"].as_str().unwrap().to_owned()
}

/// The URL that runs a script waited (a restarted server has a new port).
fn execute_url(server: &Server, id: &str) -> String {
    format!("{}/v1/scripts/{id}/execute?wait=true", server.base)
}

fn execute(client: &reqwest::blocking::Client, url: &str, token: &str) {
    let response = client
        .post(url)
        .header("authorization", token)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["status"], "completed", "{body}");
}

/// A counter from the Prometheus text of `/metrics`.
fn metric(server: &Server, token: &str, name: &str) -> f64 {
    let text = client()
        .get(format!("{}/metrics", server.base))
        .header("authorization", token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

/// The size of a copy of `binary` after `strip`, if `strip` runs.
fn stripped_size(binary: &Path) -> Option<u64> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("stripped");
    std::fs::copy(binary, &copy).unwrap();
    let status = Command::new("strip").arg(&copy).status().ok()?;
    status
        .success()
        .then(|| std::fs::metadata(&copy).unwrap().len())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn ms(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1e3)
}

/// Sends `count` requests with `send` over `CONNECTIONS` threads, in ten
/// rounds, and samples the server's RSS after each: (requests so far, bytes).
fn sample_rss(
    server: &Server,
    count: usize,
    send: impl Fn(&reqwest::blocking::Client) + Sync,
) -> Vec<(usize, u64)> {
    let per_thread = count / 10 / CONNECTIONS;
    assert!(per_thread > 0, "at least {} requests", 10 * CONNECTIONS);
    let mut samples = Vec::new();
    for round in 1..=10 {
        std::thread::scope(|scope| {
            for _ in 0..CONNECTIONS {
                scope.spawn(|| {
                    let client = client();
                    for _ in 0..per_thread {
                        send(&client);
                    }
                });
            }
        });
        samples.push((round * per_thread * CONNECTIONS, server.rss_bytes()));
    }
    samples
}

fn main() {
    let executions: usize = std::env::var("EDGE_EXECUTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let binary = kiln_binary();
    let wasmtime = wasmtime_binary();
    let client = client();
    let data = tempfile::tempdir().unwrap();

    println!("| figure | kiln | wasmtime CLI |");
    println!("|---|---|---|");
    // Kiln's release profile strips its binary; a stripped copy of the
    // wasmtime CLI is the like-for-like size.
    let size = std::fs::metadata(&binary).unwrap().len();
    let shown = |size: Option<u64>| size.map_or_else(|| "not found".into(), mb);
    let wasmtime_size = wasmtime
        .as_ref()
        .map(|w| std::fs::metadata(w).unwrap().len());
    println!(
        "| binary size, as built | {} | {} |",
        mb(size),
        shown(wasmtime_size)
    );
    println!(
        "| binary size, stripped | {} | {} |",
        shown(stripped_size(&binary)),
        shown(wasmtime.as_deref().and_then(stripped_size))
    );

    // The very first start: nothing compiled yet, so the node compiles both
    // language runtimes before it is ready. Every later start shares that
    // cache, as a node's restarts and its new data dirs on one host do.
    let cache = data.path().join("cache");
    let (server, cold) = start_kiln(&binary, &data.path().join("cold"), &cache, &client);
    server.stop();
    println!(
        "| start → /readyz 200, empty data dir and no compiled code (both runtimes compiled) | {} | |",
        ms(cold)
    );

    // Empty data dirs: each start creates the store, the JWT secret and the
    // admin (one Argon2id hash).
    let mut empty = Vec::new();
    for start in 0..STARTS {
        let (server, time) = start_kiln(
            &binary,
            &data.path().join(format!("empty-{start}")),
            &cache,
            &client,
        );
        empty.push(time);
        server.stop();
    }
    let (p50, max) = median(empty);
    println!(
        "| start → /readyz 200, empty data dir (median, max of {STARTS}) | {} ({}) | |",
        ms(p50),
        ms(max)
    );

    // A warm data dir: 100 scripts, each compiled at upload and run once, so
    // the JavaScript runtime's machine code is in the disk cache.
    let warm = data.path().join("warm");
    let (server, _) = start_kiln(&binary, &warm, &cache, &client);
    let token = login(&server, &client);
    let ids: Vec<String> = (0..SCRIPTS)
        .map(|i| {
            let source = format!("function main(params) {{ return {{ script: {i}, params }}; }}");
            create_script(&server, &token, &format!("script-{i}"), &source)
        })
        .collect();
    for id in &ids {
        execute(&client, &execute_url(&server, id), &token);
    }
    server.stop();
    let mut restarts = Vec::new();
    for _ in 0..STARTS - 1 {
        let (server, time) = start_kiln(&binary, &warm, &cache, &client);
        restarts.push(time);
        server.stop();
    }
    let (server, time) = start_kiln(&binary, &warm, &cache, &client);
    restarts.push(time);
    let (p50, max) = median(restarts);
    println!(
        "| start → /readyz 200, warm data dir with {SCRIPTS} compiled scripts (median, max of {STARTS}) | {} ({}) | |",
        ms(p50),
        ms(max)
    );
    // After a restart nothing is compiled to machine code again: the first
    // run of every script finds the runtime in the disk cache.
    let token = login(&server, &client);
    let urls: Vec<String> = ids.iter().map(|id| execute_url(&server, id)).collect();
    let first_round = Instant::now();
    for url in &urls {
        execute(&client, url, &token);
    }
    let first_round = first_round.elapsed();
    let second_round = Instant::now();
    for url in &urls {
        execute(&client, url, &token);
    }
    let second_round = second_round.elapsed();
    let misses = metric(&server, &token, "kiln_compile_cache_misses_total");
    println!(
        "| after restart: first run of each of the {SCRIPTS} scripts, mean (second run) | {} ({}); Cranelift compiles: {misses} | |",
        ms(first_round / SCRIPTS as u32),
        ms(second_round / SCRIPTS as u32)
    );
    server.stop();

    // RSS: idle after start, then across the executions of a trivial script.
    let (server, _) = start_kiln(&binary, &data.path().join("rss"), &cache, &client);
    std::thread::sleep(Duration::from_secs(1));
    let idle = server.rss_bytes();
    let token = login(&server, &client);
    let id = create_script(
        &server,
        &token,
        "trivial",
        "function main() { return 'ok'; }",
    );
    let url = execute_url(&server, &id);
    let samples = sample_rss(&server, executions, |client| execute(client, &url, &token));
    // The server gives free memory back within 5 s of going idle (memory.rs).
    std::thread::sleep(Duration::from_secs(7));
    let after = server.rss_bytes();
    server.stop();

    let (wasmtime_start, wasmtime_idle, wasmtime_samples) = match &wasmtime {
        Some(wasmtime) => {
            let (start, idle, samples) = measure_wasmtime(wasmtime, executions);
            (ms(start), mb(idle), Some(samples))
        }
        None => ("not found".into(), "not found".into(), None),
    };
    println!("| wasmtime serve: start → first 200 of a wasi:http hello | | {wasmtime_start} |");
    println!("| idle RSS after start | {} | {wasmtime_idle} |", mb(idle));
    for (i, (count, rss)) in samples.iter().enumerate() {
        let theirs = wasmtime_samples
            .as_ref()
            .map(|s| mb(s[i].1))
            .unwrap_or_default();
        println!(
            "| RSS after {count} executions (wasmtime: requests) | {} | {theirs} |",
            mb(*rss)
        );
    }
    println!("| RSS 7 s after the last execution | {} | |", mb(after));
}

/// `wasmtime serve` of the wasi:http hello component: time from spawn to
/// the first 200, idle RSS, and RSS sampled across `count` requests.
fn measure_wasmtime(binary: &Path, count: usize) -> (Duration, u64, Vec<(usize, u64)>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["serve", "-S", "cli", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(kiln_components::HTTP_HELLO)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = client();
    while !client
        .get(&server.base)
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "wasmtime serve never answered"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let start = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let idle = server.rss_bytes();
    let samples = sample_rss(&server, count, |client| {
        let response = client.get(&server.base).send().unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().unwrap();
    });
    (start, idle, samples)
}

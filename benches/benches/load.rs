//! Load harness: `?wait=true` executions of a trivial JavaScript script
//! through a real `kiln serve`, and the trivial wasi:http component served as
//! an HTTP function at `/fn/`, next to `wasmtime serve` (same wasmtime
//! version) serving that same component, in the same run, at 1 and 32
//! connections. Kiln is measured with authentication and rate limiting on
//! (an access token, then an API key; quotas high enough never to refuse)
//! and, as the baseline for their cost, a second server with both off.
//! Everything stays on 127.0.0.1 and every phase is bounded in requests and
//! time.
//!
//! ```text
//! cargo build --release -p kiln
//! cargo install wasmtime-cli --version 48.0.8 --locked   # once; or set WASMTIME=path
//! cargo bench -p kiln-benches --bench load
//! ```
//!
//! `LOAD_SECONDS` (default 10) and `LOAD_MAX_REQUESTS` (default 50 000) bound
//! each phase; `KILN_BIN` and `WASMTIME` name the binaries. The cost of the
//! organization and quota checks is the token's runs in an organization
//! with every quota set (named by `X-Kiln-Organization`; `LOAD_ORG_QUOTAS`
//! sets others) and in one with none, against those in the default one (no
//! quotas), in rounds whose first rotates, printed with the quartiles of
//! the rounds' ratios and the server's CPU time per request;
//! `LOAD_ORGS_ONLY=1` stops after it and `LOAD_ORG_CONNECTIONS=32` runs
//! those rounds at 32 connections only. `LOAD_HEAD_TO_HEAD_ONLY=1` runs only
//! the head-to-head below; `LOAD_EARLIER_KILN` names another Kiln binary
//! that takes its turn in the head-to-head's rounds (a change against the
//! code before it, in the same run).
//!
//! The ratio to `wasmtime serve` comes from a head-to-head at the end:
//! `LOAD_ROUNDS` (default 3) rounds per connection count, each a phase of
//! Kiln's auth-free `?wait=true` and a phase of `wasmtime serve`, which one
//! goes first alternating from round to round, with `LOAD_PAUSE_MS`
//! (default 1000) of rest before every phase; then the median of the
//! rounds' ratios. On a shared 2-core machine the rate of either server
//! drifts by ±10 % over minutes, and a phase right after another runs on
//! warmer (or throttled) cores; alternating keeps both out of the ratio. After the one-connection rounds it measures this disk's
//! sync (4 KiB write + `fdatasync`) and prints the best ratio any server
//! could reach there that, like Kiln, syncs before each answer. Last, the
//! CPU each Kiln of the head-to-head uses while idle for `LOAD_IDLE_SECONDS`
//! (default 5), with the store its rounds filled.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness fails loudly"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Call, Report, Server, cpu_seconds, env_or, load, median, print, quartiles};

use kiln_benches::{WASMTIME_VERSION, kiln_binary, listening_address, wasmtime_binary, workspace};

const CONNECTIONS: [usize; 2] = [1, 32];

const ADMIN_PASSWORD: &str = "load harness admin";

fn start_kiln(data: &std::path::Path, auth: bool) -> (Server, String) {
    start_kiln_binary(&kiln_binary(), data, auth)
}

fn start_kiln_binary(
    binary: &std::path::Path,
    data: &std::path::Path,
    auth: bool,
) -> (Server, String) {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env(
            "KILN_SERVER_CACHE_DIR",
            workspace().join("target/kiln-load-cache"),
        )
        .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("KILN_AUTH_ENABLED", auth.to_string())
        .envs(["READ", "WRITE", "EXECUTE"].map(|class| {
            // On with auth, and far above what one machine can send, so
            // every request pays for the check but none is refused.
            let quota = if auth { "1000000000" } else { "0" };
            (format!("KILN_RATE_LIMIT_{class}_PER_MINUTE"), quota)
        }))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = listening_address(&mut child);
    (Server(child), base)
}

fn start_wasmtime(binary: &std::path::Path) -> (Server, String) {
    // `wasmtime serve` takes an address, not a listener: find a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args(["serve", "-S", "cli", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(kiln_components::HTTP_HELLO)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Server(child), format!("http://127.0.0.1:{port}"))
}

/// Creates a script with `create` and returns the call that runs it waited,
/// expecting `result`.
async fn execute(
    base: &str,
    credential: Option<(&'static str, String)>,
    create: reqwest::RequestBuilder,
    result: serde_json::Value,
) -> Call {
    let create = match &credential {
        Some((name, value)) => create.header(*name, value),
        None => create,
    };
    let response = create.send().await.unwrap();
    assert_eq!(response.status(), 201, "cannot create the script");
    let script: serde_json::Value = response.json().await.unwrap();
    let id = script["id"].as_str().unwrap();
    Call::Execute {
        url: format!("{base}/v1/scripts/{id}/execute?wait=true"),
        credential,
        organization: None,
        expect: result,
    }
}

/// Uploads the `http_hello` component as a public HTTP function and returns
/// the call of its root.
async fn create_function(base: &str, credential: Option<(&'static str, String)>) -> Call {
    let mut create = reqwest::Client::new()
        .post(format!("{base}/v1/scripts"))
        .json(&serde_json::json!({
            "name": "hello-http",
            "language": "wasm",
            "public": true,
            "content_base64": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                std::fs::read(kiln_components::HTTP_HELLO).unwrap(),
            ),
        }));
    if let Some((name, value)) = &credential {
        create = create.header(*name, value);
    }
    let response = create.send().await.unwrap();
    assert_eq!(response.status(), 201, "cannot create the function");
    Call::Get {
        url: format!("{base}/fn/hello-http/"),
    }
}

/// Logs in as the admin; returns `Authorization: Bearer …` and an
/// `X-API-Key` with the scopes the harness needs.
async fn credentials(base: &str) -> [(&'static str, String); 2] {
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = format!("Bearer {}", login["access_token"].as_str().unwrap());
    let key: serde_json::Value = client
        .post(format!("{base}/v1/api-keys"))
        .header("authorization", &token)
        .json(&serde_json::json!({"name": "load", "scopes": ["write:scripts", "execute:scripts"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    [
        ("authorization", token),
        ("x-api-key", key["key"].as_str().unwrap().to_owned()),
    ]
}

/// Makes organization `name` (the admin its admin) with `quotas`;
/// returns its name.
async fn organization(
    base: &str,
    token: &(&'static str, String),
    name: &str,
    quotas: serde_json::Value,
) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/organizations"))
        .header(token.0, &token.1)
        .json(&serde_json::json!({
            "name": name, "admin": "admin", "tier": "custom", "quotas": quotas,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "cannot create the organization");
    name.into()
}

/// Every quota set far above what a run reaches, or `LOAD_ORG_QUOTAS` (a
/// JSON object of quotas) to measure some alone.
fn high_quotas() -> serde_json::Value {
    const HIGH: u64 = 1 << 50;
    match std::env::var("LOAD_ORG_QUOTAS") {
        Ok(only) => {
            serde_json::from_str(&only).expect("LOAD_ORG_QUOTAS is a JSON object of quotas")
        }
        Err(_) => serde_json::json!({
            "requests_per_hour": HIGH, "executions_per_day": HIGH, "fuel_per_day": HIGH,
            "concurrent_executions": 1_000, "stored_bytes": HIGH, "scripts": HIGH,
            "schedules": HIGH, "webhooks": HIGH, "api_keys": HIGH,
        }),
    }
}

async fn wait_until_up(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

/// The connection counts of the organization rounds: `LOAD_ORG_CONNECTIONS`
/// (e.g. `32`), else both.
fn org_connections() -> Vec<usize> {
    std::env::var("LOAD_ORG_CONNECTIONS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .filter(|counts| !counts.is_empty())
        .unwrap_or_else(|| CONNECTIONS.to_vec())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let seconds = env_or("LOAD_SECONDS", 10u64);
    let max_requests = env_or("LOAD_MAX_REQUESTS", 50_000u64);
    let rounds = env_or("LOAD_ROUNDS", 3usize).max(1);
    let pause = Duration::from_millis(env_or("LOAD_PAUSE_MS", 1000u64));
    let head_to_head_only = std::env::var_os("LOAD_HEAD_TO_HEAD_ONLY").is_some();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (kiln_server, base) = start_kiln(&data.path().join("auth"), true);
    let (_open_kiln, open_base) = start_kiln(&data.path().join("open"), false);
    // Another Kiln binary in the head-to-head's rounds, auth off too: a
    // change measured against the code before it, in the same run.
    let earlier = std::env::var_os("LOAD_EARLIER_KILN")
        .map(|binary| start_kiln_binary(binary.as_ref(), &data.path().join("earlier"), false));
    // Whose CPU the idle check below reads.
    let idle_pids: Vec<(&str, u32)> = [Some(("kiln", _open_kiln.0.id()))]
        .into_iter()
        .chain([earlier
            .as_ref()
            .map(|(server, _)| ("earlier kiln", server.0.id()))])
        .flatten()
        .collect();
    let wasmtime = wasmtime_binary();
    if wasmtime.is_none() {
        eprintln!(
            "wasmtime {WASMTIME_VERSION} not found: `cargo install wasmtime-cli --version 48.0.8 --locked` \
             or set WASMTIME; measuring Kiln alone"
        );
    }

    runtime.block_on(async {
        let client = reqwest::Client::new();
        let javascript = |base: &str| {
            client.post(format!("{base}/v1/scripts")).json(
                &serde_json::json!({"name": "trivial", "language": "javascript",
                                          "content": "function main() { return 'ok'; }"}),
            )
        };
        let [token, key] = credentials(&base).await;
        let kiln = execute(&base, Some(token.clone()), javascript(&base), "ok".into()).await;
        let Call::Execute { url, expect, .. } = kiln.clone() else {
            unreachable!()
        };
        let kiln_key = Call::Execute {
            url,
            credential: Some(key),
            organization: None,
            expect,
        };
        // The same script in a second organization with every quota set
        // (too high to refuse in this run), named by the header: the
        // organization found by name and the membership checked on every
        // request, its hour of requests counted, its day of executions and
        // fuel read before each run. The default organization's are none.
        // And in a third with no quota: an organization's own data (its
        // field in each record, its index entry) without the checks.
        let in_org = |name: String| {
            let create = javascript(&base).header("x-kiln-organization", &name);
            let token = token.clone();
            let base = base.clone();
            async move {
                let Call::Execute { url, credential, expect, .. } =
                    execute(&base, Some(token), create, "ok".into()).await
                else {
                    unreachable!()
                };
                Call::Execute {
                    url,
                    credential,
                    organization: Some(name),
                    expect,
                }
            }
        };
        let kiln_bounded = in_org(organization(&base, &token, "bounded", high_quotas()).await).await;
        let kiln_plain =
            in_org(organization(&base, &token, "plain", serde_json::json!({})).await).await;
        let kiln_open = execute(&open_base, None, javascript(&open_base), "ok".into()).await;
        let earlier = match &earlier {
            Some((_, base)) => {
                let call = execute(base, None, javascript(base), "ok".into()).await;
                assert_eq!(load(&call, 4, 5, 200).await.errors, 0, "the warm-up failed");
                Some(call)
            }
            None => None,
        };
        // The same server path with a trivial Rust component instead of the
        // JavaScript interpreter: what the front door costs by itself.
        let component = client
            .post(format!("{base}/v1/scripts?name=hello&language=wasm"))
            .header("content-type", "application/wasm")
            .body(std::fs::read(kiln_components::HELLO).unwrap());
        let kiln_wasm = execute(&base, Some(token.clone()), component, serde_json::Value::Null).await;
        // The very component `wasmtime serve` runs, as an HTTP function:
        // public on the server with auth and rate limits (the guard still
        // runs, per client IP), and on the one with both off.
        let function = create_function(&base, Some(token)).await;
        let function_open = create_function(&open_base, None).await;
        // Warm up: the runtime is compiled (or read from the disk cache) once.
        for call in [
            &kiln,
            &kiln_key,
            &kiln_bounded,
            &kiln_plain,
            &kiln_open,
            &kiln_wasm,
            &function,
            &function_open,
        ] {
            let warm = load(call, 4, 5, 200).await;
            assert_eq!(warm.errors, 0, "the warm-up failed");
        }

        println!("| server | connections | requests | errors | req/s | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|---|---|");
        let mut function_rates = Vec::new();
        if !head_to_head_only {
            for connections in CONNECTIONS {
                let open = load(&kiln_open, connections, seconds, max_requests).await;
                let open = print("kiln `?wait=true` (JS, auth off)", connections, &open);
                let report = load(&kiln, connections, seconds, max_requests).await;
                let rate = print("kiln `?wait=true` (JS, token)", connections, &report);
                let keyed = load(&kiln_key, connections, seconds, max_requests).await;
                let keyed = print("kiln `?wait=true` (JS, API key)", connections, &keyed);
                println!(
                    "| cost of auth + rate limit | {connections} | | | token {:+.1} %, key {:+.1} % | | |",
                    (rate / open - 1.0) * 100.0,
                    (keyed / open - 1.0) * 100.0
                );
            }
            // Organization and quota checks: the token's runs in the default
            // organization (no quotas) and in the bounded one, alternating
            // which goes first, the median of the rounds' ratios.
            // Beside the rate, the server's CPU time per request in each
            // phase (at 32 connections the server's cores are the bound, so it
            // is the rate's inverse; at one it is not).
            let pid = kiln_server.0.id();
            let columns = [
                ("default org", &kiln),
                ("org without quotas", &kiln_plain),
                ("org with quotas", &kiln_bounded),
            ];
            for connections in org_connections() {
                // Per column but the first, each round's ratio to the first.
                let mut ratios = vec![(Vec::new(), Vec::new()); columns.len()];
                for round in 1..=rounds {
                    // Which goes first rotates from round to round.
                    let mut measured = Vec::new();
                    for turn in 0..columns.len() {
                        let column = (round + turn) % columns.len();
                        tokio::time::sleep(pause).await;
                        let before = cpu_seconds(pid);
                        let report = load(columns[column].1, connections, seconds, max_requests).await;
                        assert_eq!(report.errors, 0, "a run was refused");
                        let cpu = (cpu_seconds(pid) - before) / report.requests as f64 * 1e6;
                        measured.push((column, report.rate(), cpu));
                    }
                    measured.sort_by_key(|(column, ..)| *column);
                    let shown: Vec<String> = measured
                        .iter()
                        .map(|(_, rate, cpu)| format!("{rate:.0} ({cpu:.0} µs)"))
                        .collect();
                    println!(
                        "| round {round}: req/s (server CPU per request) of {} | {connections} | | | {} | | |",
                        columns.map(|(name, _)| name).join("; "),
                        shown.join("; ")
                    );
                    let (_, base_rate, base_cpu) = measured[0];
                    for (column, rate, cpu) in &measured[1..] {
                        ratios[*column].0.push(rate / base_rate);
                        ratios[*column].1.push(cpu / base_cpu);
                    }
                }
                let percent = |ratio: f64| (ratio - 1.0) * 100.0;
                for (column, (rates, cpus)) in ratios.iter_mut().enumerate().skip(1) {
                    let (rate_low, rate_high) = quartiles(rates);
                    let (cpu_low, cpu_high) = quartiles(cpus);
                    println!(
                        "| {} against the default org, median of {rounds} (quartiles): rate; server CPU per request | {connections} | | | {:+.1} % ({:+.1}, {:+.1}); {:+.1} % ({:+.1}, {:+.1}) | | |",
                        columns[column].0,
                        percent(median(rates)),
                        percent(rate_low),
                        percent(rate_high),
                        percent(median(cpus)),
                        percent(cpu_low),
                        percent(cpu_high)
                    );
                }
            }
            if std::env::var_os("LOAD_ORGS_ONLY").is_some() {
                return;
            }
            // Last, so the servers compared above have run the same number of
            // executions (a store that has recorded more costs more to flush).
            for connections in CONNECTIONS {
                let report = load(&kiln_wasm, connections, seconds, max_requests).await;
                print("kiln `?wait=true` (wasm component, token)", connections, &report);
            }
            for connections in CONNECTIONS {
                let report = load(&function_open, connections, seconds, max_requests).await;
                let open = print("kiln /fn/ (wasi:http, auth off)", connections, &report);
                let report = load(&function, connections, seconds, max_requests).await;
                let public = print("kiln /fn/ (wasi:http, public, auth on)", connections, &report);
                function_rates.push((open, public));
            }
        }
        let Some(wasmtime) = wasmtime else { return };
        let (_server, url) = start_wasmtime(&wasmtime);
        wait_until_up(&url).await;
        let baseline = Call::Get { url };
        load(&baseline, 4, 5, 200).await;
        for (connections, (open, public)) in CONNECTIONS.into_iter().zip(function_rates) {
            let report = load(&baseline, connections, seconds, max_requests).await;
            let rate = print("wasmtime serve (wasi:http)", connections, &report);
            println!(
                "| ratio kiln /fn/ / wasmtime (auth off; public, auth on) | {connections} | | | {:.2}×; {:.2}× | | |",
                open / rate,
                public / rate
            );
        }
        println!();
        println!("| head-to-head | connections | kiln JS `?wait=true`, auth off, req/s | wasmtime serve req/s | ratio | errors |");
        println!("|---|---|---|---|---|---|");
        for connections in CONNECTIONS {
            let mut ratios = Vec::new();
            let mut earlier_ratios = Vec::new();
            let mut wasmtime_rates = Vec::new();
            // Kiln, wasmtime and (if set) the earlier Kiln: who goes
            // first rotates from round to round.
            let calls: Vec<&Call> = [Some(&kiln_open), Some(&baseline), earlier.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            for round in 1..=rounds {
                let first = (round - 1) % calls.len();
                let mut phases: Vec<Option<Report>> = calls.iter().map(|_| None).collect();
                for turn in 0..calls.len() {
                    let at = (first + turn) % calls.len();
                    tokio::time::sleep(pause).await;
                    phases[at] = Some(load(calls[at], connections, seconds, max_requests).await);
                }
                let phases: Vec<Report> = phases.into_iter().flatten().collect();
                let errors: u64 = phases.iter().map(|p| p.errors).sum();
                let (kiln, wasmtime) = (phases[0].rate(), phases[1].rate());
                ratios.push(kiln / wasmtime);
                wasmtime_rates.push(wasmtime);
                let earlier_column = match phases.get(2) {
                    Some(earlier) => {
                        earlier_ratios.push(earlier.rate() / wasmtime);
                        format!(
                            "; earlier kiln {:.0} req/s, {:.2}×",
                            earlier.rate(),
                            earlier.rate() / wasmtime
                        )
                    }
                    None => String::new(),
                };
                println!(
                    "| round {round} ({} first) | {connections} | {kiln:.0} | {wasmtime:.0} | {:.2}×{earlier_column} | {errors} |",
                    ["kiln", "wasmtime", "earlier kiln"][first],
                    kiln / wasmtime
                );
            }
            let earlier_median = if earlier_ratios.is_empty() {
                String::new()
            } else {
                format!("; earlier kiln {:.2}×", median(&mut earlier_ratios))
            };
            println!(
                "| **median of {rounds}** | {connections} | | | **{:.2}×**{earlier_median} | |",
                median(&mut ratios)
            );
            if connections == 1 {
                // At one connection every answer waits for its own sync, so
                // a server that syncs is bounded by this disk's sync plus
                // the rest of the request, at best as quick as wasmtime's.
                let sync = sync_latency(data.path());
                let wasmtime = median(&mut wasmtime_rates);
                let bound = 1.0 / (1.0 / wasmtime + sync.as_secs_f64());
                println!(
                    "| bound with one sync per answer | 1 | sync p50 {:.3} ms | {wasmtime:.0} | ≤ {:.2}× | |",
                    sync.as_secs_f64() * 1e3,
                    bound / wasmtime
                );
            }
        }
        // What each Kiln of the head-to-head costs once the load stops: its
        // background work (the retention sweeper, flushes) over the store
        // the rounds filled, which ran beside every later phase too.
        tokio::time::sleep(pause).await;
        let idle = Duration::from_secs(env_or("LOAD_IDLE_SECONDS", 5u64).max(1));
        let before: Vec<f64> = idle_pids.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
        tokio::time::sleep(idle).await;
        let used: Vec<String> = idle_pids
            .iter()
            .zip(before)
            .map(|((name, pid), before)| {
                let cores = (cpu_seconds(*pid) - before) / idle.as_secs_f64();
                format!("{name} {cores:.3} of a core")
            })
            .collect();
        println!(
            "| idle for {} s after the rounds | | {} | | | |",
            idle.as_secs(),
            used.join("; ")
        );
    });
}

/// The median of 300 syncs of a 4 KiB write to a file in `dir`: what one
/// durable answer costs at least on this disk. The file is written and
/// synced first, so the timed writes overwrite allocated space, as sled's
/// log mostly does, and no sync has a grown size to commit.
fn sync_latency(dir: &std::path::Path) -> Duration {
    use std::os::unix::fs::FileExt;
    let path = dir.join("sync-probe");
    let file = std::fs::File::create(&path).unwrap();
    file.write_all_at(&vec![0u8; 300 * 4096], 0).unwrap();
    file.sync_all().unwrap();
    let block = [7u8; 4096];
    let mut times: Vec<f64> = (0..300u64)
        .map(|i| {
            let started = Instant::now();
            file.write_all_at(&block, i * 4096).unwrap();
            file.sync_data().unwrap();
            started.elapsed().as_secs_f64()
        })
        .collect();
    drop(file);
    std::fs::remove_file(&path).unwrap();
    Duration::from_secs_f64(median(&mut times))
}

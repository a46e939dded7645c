//! The store as it grows (issue 22). For each size, fills a fresh node's
//! store directly with trivial executions (each written queued, running and
//! final, as a waited run writes it; 100 scripts plus ad-hoc runs, one in ten
//! failed, spread over the last 30 days), then times through the node's
//! router, in process: the first page, filtered pages, a deep cursor page,
//! page-number and deep offset pages, usage analytics for 7 days; and the
//! retention sweeper removing the older half.
//!
//! Then the bytes per execution of ad-hoc runs with large code and output:
//! `STORE_LARGE_RUNS` (default 2 000) runs of one 8 KiB script that print
//! the same 16 KiB, against as many runs whose code and output are each
//! their own, in stores of their own in the same run: what storing large
//! fields once by content saves when they repeat, and costs when not.
//!
//! `cargo bench -p kiln-benches --bench store`; `STORE_SIZES=10000,100000`
//! picks the sizes (default 10⁴, 10⁵, 10⁶; `0` none), `STORE_FILL_SECONDS`
//! caps each fill (default 900; a capped fill reports the size it reached).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness fails loudly"
)]

use std::time::{Duration, Instant, SystemTime};

use kiln::bench::{StoreNode, cursor_older_than};

const DAY_MS: u64 = 24 * 3_600_000;
const SCRIPTS: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// p50 and p99 of `runs` timed calls of `path`, in ms; every answer must be 200.
async fn time_get(node: &StoreNode, path: &str, runs: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        let (status, body) = node.get(path).await.unwrap();
        times.push(began.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    times.sort_by(f64::total_cmp);
    (times[runs / 2], times[(runs * 99 / 100).min(runs - 1)])
}

async fn one_size(wanted: usize, fill_cap: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let node = StoreNode::open(dir.path()).await.unwrap();
    let empty = node.size_on_disk().unwrap();
    let scripts: Vec<String> = (0..SCRIPTS)
        .map(|i| format!("0190b5c4-0000-7000-8000-{i:012}"))
        .collect();
    let now = now_ms();
    let span = 30 * DAY_MS;
    let step = span / wanted as u64;
    let began = Instant::now();
    let (mut stored, mut middle) = (0, String::new());
    for i in 0..wanted {
        let script = (i % 10 != 9).then(|| scripts[i % SCRIPTS].as_str());
        let id = node
            .put_trivial(now - span + i as u64 * step, script, i % 10 == 3)
            .await
            .unwrap();
        stored += 1;
        if i == wanted / 2 {
            middle = id;
        }
        if i % 1000 == 0 && began.elapsed() > fill_cap {
            break;
        }
    }
    node.flush().await.unwrap();
    let fill = began.elapsed();
    // sled writes its log in segments and cleans them in the background:
    // give it a moment so the size is not a transient.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes = node.size_on_disk().unwrap().saturating_sub(empty);
    println!(
        "\n## {stored} executions (filled in {:.1} s, {:.0} executions/s)\n",
        fill.as_secs_f64(),
        stored as f64 / fill.as_secs_f64()
    );
    println!(
        "store: {:.1} MB, {:.0} bytes per trivial execution\n",
        bytes as f64 / 1e6,
        bytes as f64 / stored as f64
    );
    println!("| request | runs | p50 ms | p99 ms |\n|---|---|---|---|");
    let deep = cursor_older_than(&middle);
    // Pages by offset skip at most 10 000 (deeper ones go by cursor).
    let offset = (stored / 2).min(10_000);
    let cases: Vec<(String, String, usize)> = vec![
        (
            "first page (cursor)".into(),
            "/v1/executions?limit=20".into(),
            200,
        ),
        (
            "one script's page".into(),
            format!("/v1/executions?script_id={}&limit=20", scripts[7]),
            200,
        ),
        (
            "failed ones' page".into(),
            "/v1/executions?status=failed&limit=20".into(),
            200,
        ),
        (
            "deep cursor page (middle)".into(),
            format!("/v1/executions?limit=20&cursor={deep}"),
            200,
        ),
        (
            "unindexed filter (trigger=schedule, none match)".into(),
            "/v1/executions?trigger=schedule&limit=20".into(),
            20,
        ),
        (
            "first page by number (with total)".into(),
            "/v1/executions?page=1&size=20".into(),
            200,
        ),
        (
            "deep offset page (middle or the deepest allowed, 10 000; with total)".into(),
            format!("/v1/executions?offset={offset}&limit=20"),
            5,
        ),
        (
            "usage analytics, 7 days".into(),
            "/v1/analytics/usage?period=7d".into(),
            20,
        ),
    ];
    for (name, path, runs) in cases {
        let (p50, p99) = time_get(&node, &path, runs).await;
        println!("| {name} | {runs} | {p50:.2} | {p99:.2} |");
    }
    let began = Instant::now();
    let (removed, sweeps) = node.sweep_all(now, 15 * 24 * 3600, 10_000).await.unwrap();
    let took = began.elapsed().as_secs_f64();
    node.flush().await.unwrap();
    println!(
        "\nsweeper: removed {removed} executions older than 15 days in {sweeps} sweeps of at most 10 000 reads, {took:.1} s: {:.0} removed/s",
        removed as f64 / took
    );
}

/// Bytes per execution of `runs` ad-hoc runs of 8 KiB of code printing
/// 16 KiB, all the same (`repeated`) or each run's own.
async fn large_runs(runs: usize, repeated: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let node = StoreNode::open(dir.path()).await.unwrap();
    let empty = node.size_on_disk().unwrap();
    let now = now_ms();
    for i in 0..runs {
        let own = if repeated { 0 } else { i };
        let code = format!("// {own:08}\n{}", "c".repeat(8 * 1024));
        let stdout = format!("{own:08}{}\n", "o".repeat(16 * 1024));
        node.put_ad_hoc(now - (runs - i) as u64, code.as_bytes(), &stdout)
            .await
            .unwrap();
    }
    node.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.size_on_disk().unwrap().saturating_sub(empty) as f64 / runs as f64
}

fn main() {
    let sizes: Vec<usize> = std::env::var("STORE_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok().filter(|n| *n > 0))
        .collect();
    let fill_cap = Duration::from_secs(env_or("STORE_FILL_SECONDS", 900));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for size in sizes {
        runtime.block_on(one_size(size, fill_cap));
    }
    let runs = env_or("STORE_LARGE_RUNS", 2_000usize);
    let repeated = runtime.block_on(large_runs(runs, true));
    let distinct = runtime.block_on(large_runs(runs, false));
    println!(
        "\n## {runs} ad-hoc runs of 8 KiB of code printing 16 KiB\n\n| runs | bytes per execution |\n|---|---|\n| the same code and output | {repeated:.0} |\n| each its own | {distinct:.0} |"
    );
}

//! What the load harnesses share: servers killed on drop, the calls they
//! send, a bounded phase of them at some number of connections, and the
//! report of one.
#![allow(
    dead_code,
    reason = "each harness uses its part; included by `mod common` in each"
)]

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills the child when dropped, so no server outlives the harness.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// The middle value, or the mean of the two middle ones.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// The first and third quartiles (the medians of the lower and upper
/// halves): the spread a median of rounds is read with.
pub fn quartiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    let upper = values.len() - half;
    if half == 0 {
        return (values[0], values[0]);
    }
    (
        median(&mut values[..half].to_vec()),
        median(&mut values[upper..].to_vec()),
    )
}

/// The CPU time (user and system, every thread) process `pid` has used:
/// what a request costs a server, read where its rate is bound by the
/// disk's syncs rather than by its cores. From `/proc/<pid>/stat`, in the
/// kernel's clock ticks (100 a second).
pub fn cpu_seconds(pid: u32) -> f64 {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SECOND
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// One kind of request the load sends.
#[derive(Clone)]
pub enum Call {
    /// POST a waited execution; the answer must be 200 with this result.
    Execute {
        url: String,
        /// The credential header, if the server wants one.
        credential: Option<(&'static str, String)>,
        /// `X-Kiln-Organization`, if the run is in another organization
        /// than the user's first.
        organization: Option<String>,
        expect: serde_json::Value,
    },
    /// GET; the answer must be 200.
    Get { url: String },
    /// One of these per connection, in turn (connection `i` sends the
    /// `i`-th modulo their number): the same load spread over servers.
    Spread(Vec<Call>),
}

impl Call {
    /// What connection `i` sends.
    fn for_connection(&self, i: usize) -> Call {
        match self {
            Call::Spread(calls) => calls[i % calls.len()].for_connection(0),
            call => call.clone(),
        }
    }
}

pub async fn send(client: &reqwest::Client, call: &Call) -> bool {
    match call {
        Call::Execute {
            url,
            credential,
            organization,
            expect,
        } => {
            let mut request = client.post(url).json(&serde_json::json!({}));
            if let Some((name, value)) = credential {
                request = request.header(*name, value);
            }
            if let Some(organization) = organization {
                request = request.header("x-kiln-organization", organization);
            }
            let Ok(response) = request.send().await else {
                return false;
            };
            if response.status() != 200 {
                return false;
            }
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            body["status"] == "completed" && body["result"] == *expect
        }
        Call::Get { url } => match client.get(url).send().await {
            Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
            Err(_) => false,
        },
        Call::Spread(_) => unreachable!("a spread call is split per connection by `load`"),
    }
}

pub async fn load(call: &Call, connections: usize, seconds: u64, max_requests: u64) -> Report {
    let budget = Arc::new(AtomicU64::new(max_requests));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let (call, budget, errors) = (call.for_connection(i), budget.clone(), errors.clone());
            tokio::spawn(async move {
                // One keep-alive connection per task.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut latencies = Vec::new();
                while Instant::now() < deadline
                    && budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                {
                    let sent = Instant::now();
                    if send(&client, &call).await {
                        latencies.push(sent.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Report {
        requests: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50: at(0.50),
        p99: at(0.99),
    }
}

pub fn print(name: &str, connections: usize, report: &Report) -> f64 {
    let rate = report.rate();
    println!(
        "| {name} | {connections} | {} | {} | {rate:.0} | {:.2} | {:.2} |",
        report.requests,
        report.errors,
        report.p50.as_secs_f64() * 1e3,
        report.p99.as_secs_f64() * 1e3
    );
    rate
}

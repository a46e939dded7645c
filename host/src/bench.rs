//! What `benches/benches/store.rs` drives, and nothing else should: a node's
//! router (auth off) over a store filled directly, so that a benchmark can
//! put a million executions in place in seconds and then time the API's
//! listings and analytics, and the retention sweeper, on them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use tower::ServiceExt as _;

use crate::api::AppState;
use crate::config::Config;
use crate::store::{ExecutionRecord, ExecutionStatus, Language, Store, StoreError, Trigger};

/// One node over a store in `data_dir`, its background tasks not started.
pub struct StoreNode {
    state: AppState,
    router: axum::Router,
}

impl StoreNode {
    /// # Errors
    ///
    /// The node cannot be assembled in `data_dir`.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let mut config = Config::default();
        config.server.data_dir = data_dir.to_path_buf();
        config.auth.enabled = false;
        config.workers.count = 1;
        let r = &mut config.rate_limit;
        (r.read_per_minute, r.write_per_minute, r.execute_per_minute) = (0, 0, 0);
        let state = crate::serve::assemble(config, None).await?;
        state.lifecycle.ready();
        Ok(Self {
            router: crate::api::router(state.clone()),
            state,
        })
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// Stores one trivial execution as a waited run leaves it: held queued,
    /// then running, written final, created at `created_ms` (Unix ms), of
    /// `script` (`None`: ad hoc), failed when `failed`. Returns its id.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn put_trivial(
        &self,
        created_ms: u64,
        script: Option<&str>,
        failed: bool,
    ) -> Result<String, StoreError> {
        let at = crate::time_of_ms;
        let mut record = ExecutionRecord {
            script_id: script.map(str::to_owned),
            script_version: script.map(|_| 1),
            created_by: Some("0190b5c4-0000-7000-8000-000000000001".into()),
            ..queued_at(created_ms)
        };
        let id = record.id.clone();
        self.store().hold_execution(&record).await?;
        record.status = ExecutionStatus::Running;
        record.started_at = Some(at(created_ms));
        self.store().put_execution(&record).await?;
        record.completed_at = Some(at(created_ms + 1));
        record.duration_ms = Some(1);
        record.fuel_consumed = Some(41_000);
        record.peak_memory_bytes = Some(1_245_184);
        if failed {
            record.status = ExecutionStatus::Failed;
            record.error = Some(crate::store::ExecutionError {
                code: crate::store::ExecutionCode::Run(kiln_runtime::ErrorCode::ScriptError),
                message: "Error: no".into(),
                stack: None,
                line: None,
                column: None,
            });
        } else {
            record.status = ExecutionStatus::Completed;
            record.result = Some(serde_json::json!(1));
            record.exit_code = Some(0);
        }
        self.store().put_execution(&record).await?;
        Ok(id)
    }

    /// Stores a finished ad-hoc run created at `created_ms` of `code` that
    /// printed `stdout`, as a waited run writes it. Returns its id.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn put_ad_hoc(
        &self,
        created_ms: u64,
        code: &[u8],
        stdout: &str,
    ) -> Result<String, StoreError> {
        let at = crate::time_of_ms;
        let mut record = ExecutionRecord {
            code: Some(code.to_vec()),
            ..queued_at(created_ms)
        };
        let id = record.id.clone();
        self.store().hold_execution(&record).await?;
        record.status = ExecutionStatus::Completed;
        record.started_at = Some(at(created_ms));
        record.completed_at = Some(at(created_ms + 1));
        record.duration_ms = Some(1);
        record.stdout = stdout.to_owned();
        record.result = Some(serde_json::json!(1));
        self.store().put_execution(&record).await?;
        Ok(id)
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store().flush().await
    }

    /// Bytes the store takes on disk.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.store().size_on_disk()
    }

    /// `GET path` through the router: the status and the body.
    ///
    /// # Errors
    ///
    /// The body could not be read.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut request = Request::builder().uri(path).body(Body::empty())?;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20).await?;
        Ok((status, body.to_vec()))
    }

    /// Sweeps as the server would at `now_ms`, with executions older than
    /// `max_age_secs` due and `batch` records read per sweep, until nothing
    /// more is due; how many executions it removed and in how many sweeps.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn sweep_all(
        &self,
        now_ms: u64,
        max_age_secs: u64,
        batch: usize,
    ) -> Result<(usize, usize), StoreError> {
        let policy = crate::config::RetentionConfig {
            executions_max_age_secs: max_age_secs,
            executions_per_script: u64::MAX,
            sweep_batch: batch,
            ..self.state.config.retention.clone()
        };
        let mut sweeper = crate::retention::Sweeper::new(
            self.store().clone(),
            self.state.jobs.clone(),
            policy,
            self.state.metrics.swept(),
        );
        let (mut removed, mut sweeps) = (0, 0);
        loop {
            let swept = sweeper.sweep(now_ms).await?;
            removed += swept.executions;
            sweeps += 1;
            if !swept.more {
                return Ok((removed, sweeps));
            }
        }
    }
}

/// The `?cursor=` of the page of executions older than `id`.
pub fn cursor_older_than(id: &str) -> String {
    crate::api::ExecutionCursor {
        newer: false,
        id: id.to_owned(),
    }
    .encode()
}

/// A queued JavaScript run made at `created_ms`, as the API makes one.
fn queued_at(created_ms: u64) -> ExecutionRecord {
    let id = uuid::Builder::from_unix_timestamp_millis(created_ms, &rand_bytes())
        .into_uuid()
        .to_string();
    ExecutionRecord {
        timeout_ms: 30_000,
        memory_mb: 128,
        ..ExecutionRecord::queued(
            id,
            Language::Javascript,
            Trigger::Api,
            crate::time_of_ms(created_ms),
        )
    }
}

fn rand_bytes() -> [u8; 10] {
    let mut bytes = [0; 10];
    // The benchmark's ids need only be distinct; a failure leaves zeros.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// Outbound HTTP as `kiln serve` sends it, for `benches/benches/egress.rs`:
/// the node's gateway with its default limits, `private_hosts` allowed to
/// be loopback (the benchmark's upstream).
pub struct EgressNode(Arc<crate::egress::Gateway>);

impl EgressNode {
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn new(private_hosts: &[&str]) -> anyhow::Result<Self> {
        let config = crate::config::EgressConfig {
            allow_private_hosts: private_hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..crate::config::EgressConfig::default()
        };
        let metrics = crate::metrics::EgressMetrics::default();
        Ok(Self(
            crate::egress::Gateway::new(&config, metrics).map_err(anyhow::Error::msg)?,
        ))
    }

    /// A fresh egress for one run of a script allowing `allowed_hosts`.
    ///
    /// # Errors
    ///
    /// A pattern is not a host pattern.
    pub fn for_run(&self, allowed_hosts: &[&str]) -> anyhow::Result<Arc<dyn kiln_runtime::Egress>> {
        let allowed = crate::egress::AllowedHosts::parse(allowed_hosts)?;
        Ok(Arc::new(self.0.for_run(allowed)))
    }
}

//! Prometheus metrics (OpenMetrics text at `/metrics`). Counters and
//! histograms are updated where things happen (the HTTP layer, the workers);
//! values that already live elsewhere (queue depth, compile cache) are read
//! when scraped.

use std::sync::Arc;

use kiln_runtime::Sandbox;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{ExecutionRecord, Store};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutionLabels {
    status: String,
    language: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Webhook delivery attempts by outcome; a cheap clone for the delivery task.
#[derive(Debug, Clone)]
pub struct WebhookMetrics(Family<OutcomeLabels, Counter>);

impl WebhookMetrics {
    /// Counts an attempt: `delivered`, `retrying` or `failed`.
    pub fn attempt(&self, outcome: &str) {
        self.0
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// Scripts' outbound HTTP requests by outcome, and the bytes their answers
/// carried; a cheap clone for the egress gateway.
#[derive(Debug, Clone, Default)]
pub struct EgressMetrics {
    requests: Family<OutcomeLabels, Counter>,
    response_bytes: Counter,
}

impl EgressMetrics {
    /// Counts a request: `ok`, or why it failed (`denied`, `limit`,
    /// `timeout`, `network`, `invalid`).
    pub fn request(&self, outcome: &'static str, response_bytes: u64) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.response_bytes.inc_by(response_bytes);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    records: &'static str,
}

/// Records the retention sweeper removed, by kind; a cheap clone for it
/// and for `/v1/status`, which reads them back.
#[derive(Debug, Clone, Default)]
pub struct SweepMetrics(Family<RecordLabels, Counter>);

impl SweepMetrics {
    /// The kinds of record the sweeper removes.
    pub const KINDS: [&'static str; 7] = [
        "executions",
        "audit_entries",
        "webhook_attempts",
        "idempotency_keys",
        "usage_rollups",
        "compiled_artifacts",
        "script_versions",
    ];

    pub fn removed(&self, records: &'static str, n: usize) {
        self.0
            .get_or_create(&RecordLabels { records })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub fn total(&self, records: &'static str) -> u64 {
        self.0.get_or_create(&RecordLabels { records }).get()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LanguageLabels {
    language: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    rate_limited: Family<ClassLabels, Counter>,
    connections_refused: Counter,
    webhooks: WebhookMetrics,
    executions: ExecutionMetrics,
    swept: SweepMetrics,
    egress: EgressMetrics,
}

/// What the workers record about finished executions; a cheap clone that
/// shares the registry's families.
#[derive(Debug, Clone)]
pub struct ExecutionMetrics {
    executions: Family<ExecutionLabels, Counter>,
    execution_seconds: Family<LanguageLabels, Histogram>,
    fuel: Family<LanguageLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        // 0.5 ms .. ~16 s: a warm script runs in well under a millisecond.
        let latency = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let executions = Family::<ExecutionLabels, Counter>::default();
        let execution_seconds =
            Family::<LanguageLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let fuel = Family::<LanguageLabels, Counter>::default();
        let rate_limited = Family::<ClassLabels, Counter>::default();
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, failed)",
            webhook_attempts.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429, by route class (read, write, execute, login, failed_auth)",
            rate_limited.clone(),
        );
        let egress = EgressMetrics::default();
        registry.register(
            "egress_requests",
            "Scripts' outbound HTTP requests by outcome (ok, denied, limit, timeout, network, invalid)",
            egress.requests.clone(),
        );
        registry.register(
            "egress_response_bytes",
            "Bytes of the answers scripts' outbound HTTP requests received",
            egress.response_bytes.clone(),
        );
        let swept = SweepMetrics::default();
        registry.register(
            "retention_removed",
            "Records the retention sweeper removed, by kind (executions, audit_entries, webhook_attempts, idempotency_keys, usage_rollups, compiled_artifacts, script_versions)",
            swept.0.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed on arrival: server.max_connections or server.max_connections_per_ip was reached",
            connections_refused.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template and method",
            request_seconds.clone(),
        );
        registry.register(
            "executions",
            "Finished executions by final status and language",
            executions.clone(),
        );
        registry.register(
            "execution_duration_seconds",
            "Time guests ran, by language",
            execution_seconds.clone(),
        );
        registry.register(
            "fuel_consumed",
            "Fuel (wasm instructions, roughly) guests consumed, by language",
            fuel.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            rate_limited,
            connections_refused,
            webhooks: WebhookMetrics(webhook_attempts),
            swept,
            egress,
            executions: ExecutionMetrics {
                executions,
                execution_seconds,
                fuel,
            },
        }
    }

    /// Counts a connection closed because too many were open.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a request refused by a rate limit.
    pub fn rate_limited(&self, class: &str) {
        self.rate_limited
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .inc();
    }

    /// The handle the webhook delivery task counts attempts through.
    pub fn webhooks(&self) -> WebhookMetrics {
        self.webhooks.clone()
    }

    /// The handle the egress gateway counts scripts' requests through.
    pub fn egress(&self) -> EgressMetrics {
        self.egress.clone()
    }

    /// The handle the retention sweeper counts removals through.
    pub fn swept(&self) -> SweepMetrics {
        self.swept.clone()
    }

    /// The handle workers record executions through.
    pub fn executions(&self) -> ExecutionMetrics {
        self.executions.clone()
    }

    /// Adds the gauges and counters that are read at scrape time.
    pub fn watch(
        &mut self,
        jobs: Arc<dyn ExecutionLoad>,
        sandbox: Arc<Sandbox>,
        store: Arc<dyn Store>,
        compiler: Arc<crate::compiler::Compiler>,
    ) {
        self.registry.register_collector(Box::new(Live {
            jobs,
            sandbox,
            store,
            compiler,
        }));
    }

    /// Reports organizations' quotas at every scrape.
    pub fn watch_quotas(&mut self, quotas: Arc<dyn OrgQuotaLoad>) {
        self.registry
            .register_collector(Box::new(OrgQuotas(quotas)));
    }

    /// Counts a request. The method is reduced to a fixed set: HTTP
    /// functions take any method, and a label per made-up method would let
    /// anyone grow `/metrics` without bound.
    pub fn request(&self, method: &axum::http::Method, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.into(),
                route: route.into(),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl ExecutionMetrics {
    /// Counts an execution that has just become final.
    pub fn record(&self, execution: &ExecutionRecord) {
        let language = execution.language.as_str();
        self.executions
            .get_or_create(&ExecutionLabels {
                status: execution.status.as_str().into(),
                language: language.into(),
            })
            .inc();
        let language = LanguageLabels {
            language: language.into(),
        };
        // Only executions that ran have a duration and fuel.
        if let Some(ms) = execution.duration_ms {
            self.execution_seconds
                .get_or_create(&language)
                .observe(ms as f64 / 1000.0);
        }
        if let Some(fuel) = execution.fuel_consumed {
            self.fuel.get_or_create(&language).inc_by(fuel);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Organizations' quotas, read at scrape time (`quotas::Quotas` tells; it
/// sits beside this module and reads the queue).
pub trait OrgQuotaLoad: Send + Sync {
    /// Per organization (id) and quota: the limit, if any, and what is used.
    fn quota_standing(&self) -> Vec<(String, &'static str, Option<u64>, u64)>;
}

/// The `kiln_org_quota_*` gauges: one series per organization and quota
/// (bounded by the organizations, at most `MAX_ORGS`).
struct OrgQuotas(Arc<dyn OrgQuotaLoad>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QuotaLabels {
    org: String,
    quota: &'static str,
}

impl std::fmt::Debug for OrgQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrgQuotas")
    }
}

impl Collector for OrgQuotas {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let standing = self.0.quota_standing();
        let gauge = ConstGauge::new(0i64);
        let mut used = encoder.encode_descriptor(
            "org_quota_used",
            "What an organization has used of a quota (in its window, or held now)",
            None,
            gauge.metric_type(),
        )?;
        for (org, quota, _, n) in &standing {
            let labels = QuotaLabels {
                org: org.clone(),
                quota,
            };
            ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                .encode(used.encode_family(&labels)?)?;
        }
        let mut limits = encoder.encode_descriptor(
            "org_quota_limit",
            "An organization's quota (only those it has)",
            None,
            gauge.metric_type(),
        )?;
        for (org, quota, limit, _) in &standing {
            if let Some(limit) = limit {
                let labels = QuotaLabels {
                    org: org.clone(),
                    quota,
                };
                ConstGauge::new(i64::try_from(*limit).unwrap_or(i64::MAX))
                    .encode(limits.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// How busy the execution queue is, read at scrape time (`jobs::Jobs`
/// tells; metrics sits below it, as `Jobs` counts into [`ExecutionMetrics`]).
pub trait ExecutionLoad: Send + Sync {
    /// Executions waiting in the queue.
    fn queued(&self) -> usize;
    /// Executions running now.
    fn running(&self) -> usize;
}

/// Queue depth, running executions, compile cache and store sync counters,
/// as they are at scrape time.
struct Live {
    jobs: Arc<dyn ExecutionLoad>,
    sandbox: Arc<Sandbox>,
    store: Arc<dyn Store>,
    compiler: Arc<crate::compiler::Compiler>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: &'static str,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "queue_depth",
                "Executions waiting in the queue",
                self.jobs.queued(),
            ),
            (
                "executions_running",
                "Executions running now",
                self.jobs.running(),
            ),
            (
                "compiles_in_flight",
                "Compiles in child processes or waiting for a turn",
                self.compiler.in_flight(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let stats = self.sandbox.cache_stats();
        let hits = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "compile_cache_hits",
            "Artifacts found compiled, in memory or on disk",
            None,
            hits.metric_type(),
        )?;
        for (tier, value) in [("memory", stats.memory_hits), ("disk", stats.disk_hits)] {
            ConstCounter::new(value).encode(family.encode_family(&TierLabels { tier })?)?;
        }
        let misses = ConstCounter::new(stats.compiles);
        misses.encode(encoder.encode_descriptor(
            "compile_cache_misses",
            "Artifacts that had to be compiled",
            None,
            misses.metric_type(),
        )?)?;
        let stored = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "stored_executions",
            "Execution records in the store, by status",
            None,
            stored.metric_type(),
        )?;
        for (status, n) in self.store.execution_counts() {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(family.encode_family(
                &StatusLabels {
                    status: status.as_str(),
                },
            )?)?;
        }
        let records = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "store_records",
            "Records in the store, by family (those that grow with use)",
            None,
            records.metric_type(),
        )?;
        for (records, n) in self.store.record_counts().by_family() {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(family.encode_family(&RecordLabels { records })?)?;
        }
        if let Ok(bytes) = self.store.size_on_disk() {
            let size = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
            size.encode(encoder.encode_descriptor(
                "store_size_bytes",
                "Bytes the store takes on disk",
                None,
                size.metric_type(),
            )?)?;
        }
        let synced = self.store.sync_stats();
        let counters = [
            (
                "store_syncs",
                "Flushes that made the store durable, each covering every change requested before it",
                synced.syncs,
            ),
            (
                "store_blob_files_synced",
                "Files of large values synced by those flushes",
                synced.blob_files,
            ),
            (
                "store_journal_syncs",
                "Syncs of the journal of final records, each covering every final record stored before it",
                synced.journal_syncs,
            ),
            (
                "script_code_cache_hits",
                "Script runs that found their script already compiled",
                stats.script_code_hits,
            ),
            (
                "script_compiles",
                "Scripts compiled by their language runtime",
                stats.script_compiles,
            ),
            (
                "prewarmed_runs",
                "Script runs handed a language runtime instance made ahead of them",
                stats.prewarmed_runs,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The standard methods by name, everything else as `OTHER`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let metrics = Metrics::new();
        for i in 0..300 {
            let method = axum::http::Method::from_bytes(format!("X{i:0>2000}").as_bytes()).unwrap();
            metrics.request(&method, "/fn/{name}", 404, 0.001);
        }
        metrics.request(&axum::http::Method::GET, "/fn/{name}", 404, 0.001);
        let text = metrics.render().unwrap();
        assert!(text.len() < 16 * 1024, "{} bytes", text.len());
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        assert!(text.contains(r#"method="GET""#), "{text}");
        assert!(!text.contains("X000"), "a raw method became a label");
    }
}

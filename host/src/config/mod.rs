//! Configuration: defaults < `kiln.toml` (`--config`) < `KILN_*` environment <
//! flags. This is the only module of the host that reads environment
//! variables, so every knob is listed in one place.

mod layer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use self::layer::{Named, sections};

/// Where `kiln run` keeps compiled artifacts when `--cache-dir` and
/// `KILN_CACHE_DIR` are absent: `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
/// `None` (memory only) when neither variable is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("kiln"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".cache").join("kiln"))
}

/// Where `kiln serve` caches compiled artifacts.
pub fn cache_dir(config: &Config) -> PathBuf {
    config
        .server
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("cache"))
}

/// A value that must never reach a log: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not a log format: text or json")),
        }
    }
}

/// Which forwarding header trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum ForwardedHeader {
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl std::str::FromStr for ForwardedHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!("{other:?} is not x-forwarded-for or forwarded")),
        }
    }
}

/// The cores this process may use (1 when the system does not say): the
/// default count of workers and of the server's threads.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The most threads `server.threads` may ask for: each has its stack and
/// takes part in every wake-up of the runtime.
pub const MAX_SERVER_THREADS: usize = 256;

// Every key, once: its type, its default and what it means. `kiln.toml`
// has a `[section]` table per section, the environment `KILN_<SECTION>_<KEY>`,
// the command line `--set section.key=value`.
sections! {
    server: ServerConfig / ServerLayer {
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        data_dir: PathBuf = PathBuf::from("kiln-data"),
        /// Compiled artifacts; `None` means `<data_dir>/cache`.
        cache_dir: Option<PathBuf> = None,
        max_body_bytes: usize = 10 << 20,
        /// After SIGTERM, how long `/readyz` answers 503 while requests
        /// are still served, so load balancers stop sending first.
        drain_delay_ms: u64 = 5_000,
        drain_timeout_ms: u64 = 30_000,
        /// The store's in-memory page cache (sled's `cache_capacity`).
        store_cache_mb: u64 = 32,
        /// Threads of the async runtime, which serves HTTP and runs the
        /// workers' guests (0: one per core). More than the cores let
        /// waited runs go on while a thread waits for the disk and cost
        /// CPU-bound HTTP functions their switches: on 2 cores, 4 threads
        /// gave ~15 % more `?wait=true` runs a second at 32 connections and
        /// ~12 % fewer function requests (benches/README.md).
        threads: usize = 0,
        /// Open connections at once; more are closed as they arrive.
        max_connections: usize = 1024,
        /// Open connections at once from one client address (an IPv6 /64).
        max_connections_per_ip: usize = 64,
        /// How long a connection may take to send a request's headers, may sit
        /// idle between requests, and may pause within a request's body.
        header_read_timeout_ms: u64 = 10_000,
        /// Proxies (addresses or CIDRs) whose `Forwarded` / `X-Forwarded-For`
        /// name the client for rate limits and the audit log; none by
        /// default: the connection's peer is the client.
        trusted_proxies: Vec<String> = Vec::new(),
        /// The header those proxies write the client into: `x-forwarded-for`
        /// or `forwarded` (RFC 7239). Only that one is read: a client's own
        /// copy of the other would pass through the proxy untouched.
        forwarded_header: ForwardedHeader = ForwardedHeader::XForwardedFor,
        /// Origins (`https://console.example.com`) whose pages may call the
        /// API from a browser (CORS), or `*` for any. None by default.
        /// HTTP functions answer their own preflights.
        cors_origins: Vec<String> = Vec::new(),
        /// The web console at `/` (assets built into the binary); off, `/`
        /// is a 404 like any unknown path.
        console: bool = true,
        /// `kiln_org_quota_used` / `kiln_org_quota_limit` on `/metrics`, per
        /// organization and quota. Off by default: `/metrics` is open, and
        /// they tell one tenant of the others; turn them on where only the
        /// node's operator reaches `/metrics`.
        metrics_per_org: bool = false,
    }

    /// Where the records are kept: sled in `<data_dir>/db` unless `url`
    /// names a PostgreSQL database.
    store: StoreConfig / StoreLayer {
        /// `postgres://user:password@host:5432/database` (`KILN_STORE_URL`):
        /// the PostgreSQL store. Unset: sled, embedded.
        url: Option<Secret> = None,
        /// Let several nodes share that database (`KILN_STORE_SHARED`), every
        /// one with the same `auth.jwt_secret` and `auth.master_key`. Off, a
        /// node refuses to start on a database another node uses. On,
        /// executions run once whichever node claimed them, a node that dies
        /// has its runs ended INTERRUPTED within its lease (15 s), schedules
        /// fire once, webhook attempts are made once, and cancels, waits and
        /// event streams reach any node (a stream elsewhere carries the end,
        /// not the output); requests per hour and executions per day are
        /// counted per node (docs/scaling.md).
        shared: bool = false,
    }

    /// What `kiln serve` logs to stderr, and how. Which events is
    /// `KILN_LOG` (e.g. `info`, `kiln=debug`; default `warn`).
    log: LogConfig / LogLayer {
        /// `text` (for people) or `json` (one object per line, for log
        /// shippers).
        format: LogFormat = LogFormat::Text,
    }

    workers: WorkersConfig / WorkersLayer {
        /// One worker per core.
        count: usize = cores(),
        queue_capacity: usize = 10_000,
        /// Of `queue_capacity`, the most one user's queued executions may
        /// take (past it, 429), so no one user fills the queue for all.
        queued_per_user: usize = 2_500,
        /// The most executions of one user that run at once (0: as many
        /// as there are workers), so others find a worker free while fewer
        /// users than workers are at it. HTTP function requests, which have
        /// slots of their own, do not count.
        running_per_user: usize = 0,
        /// Of `queue_capacity`, the most one organization's queued
        /// executions may take, whatever its users (past it, 429), so no
        /// one organization fills the queue for all (0: no bound).
        queued_per_org: usize = 5_000,
        /// The most executions of one organization that run at once (0: as
        /// many as there are workers), so one organization cannot hold every
        /// worker while another's runs wait.
        running_per_org: usize = 0,
    }

    /// Per-execution limits: what a request gets by default and the most it
    /// may ask for; what one user may hold; how compiles are bounded.
    limits: LimitsConfig / LimitsLayer {
        default_timeout_ms: u64 = 30_000,
        max_timeout_ms: u64 = 300_000,
        default_memory_mb: u64 = 128,
        max_memory_mb: u64 = 1024,
        /// `None`: unmetered unless the request sets a budget.
        default_fuel: Option<u64> = None,
        max_fuel: Option<u64> = None,
        output_bytes: usize = 1 << 20,
        /// JSON a script may return; past it the run fails `RESULT_TOO_LARGE`.
        result_bytes: usize = 1 << 20,
        /// The largest value a script may keep in its key-value store.
        kv_value_bytes: u64 = 64 << 10,
        /// All of one script's keys and values together.
        kv_script_bytes: u64 = 1 << 20,
        /// API keys one user may hold (revoked ones do not count).
        api_keys_per_user: usize = 100,
        /// Scripts, schedules and webhooks one user may hold.
        scripts_per_user: usize = 1_000,
        schedules_per_user: usize = 100,
        webhooks_per_user: usize = 25,
        /// A compile's address space, in its own process.
        compile_memory_mb: u64 = 4096,
        /// A compile's CPU time, all its threads together.
        compile_cpu_secs: u64 = 300,
        /// A compile's wall-clock time, from its start.
        compile_timeout_ms: u64 = 300_000,
        /// New compiles one user (or anonymous callers together) may have in
        /// flight; joining a compile of the same bytes costs nothing.
        compiles_per_user: usize = 2,
    }

    auth: AuthConfig / AuthLayer {
        /// Off only for local benchmarking: every caller is then an admin, so
        /// the server refuses to start off on a non-loopback address.
        enabled: bool = true,
        /// HS256 key for access tokens; `None`: generated once into the data dir.
        jwt_secret: Option<Secret> = None,
        access_ttl_secs: u64 = 3600,
        refresh_ttl_secs: u64 = 30 * 24 * 3600,
        /// The first-start admin's password; `None`: a random one is made.
        admin_password: Option<Secret> = None,
        /// Seals scripts' config values and requests' `env` at rest (at
        /// least 32 characters; `KILN_MASTER_KEY`). Unset: a random key is
        /// made once into `<data_dir>/master-key` (mode 0600). Changing it
        /// makes the values sealed before unreadable.
        master_key: Option<Secret> = None,
    }

    /// Requests per minute per caller and route class; 0 turns a class off.
    rate_limit: RateLimitConfig / RateLimitLayer {
        read_per_minute: u32 = 6000,
        write_per_minute: u32 = 1200,
        execute_per_minute: u32 = 6000,
        /// Login attempts per minute for one username from one client IP; an
        /// IP may make three times as many over all usernames.
        login_per_minute: u32 = 10,
        /// Password checks per minute on the whole node, whoever asks: what
        /// bounds the CPU a distributed guesser can spend on Argon2.
        login_global_per_minute: u32 = 600,
        /// Requests with a credential that does not authenticate, per minute and
        /// client IP; past it, the IP's credentials are not even checked.
        failed_auth_per_minute: u32 = 60,
    }

    webhooks: WebhooksConfig / WebhooksLayer {
        /// Allow loopback, private, link-local and CGNAT destinations (tests,
        /// private networks). Cloud metadata addresses stay refused.
        allow_private: bool = false,
        max_attempts: u32 = 8,
        timeout_ms: u64 = 10_000,
        /// The wait after the first failed attempt; each later one is 4× longer.
        retry_base_ms: u64 = 15_000,
    }

    /// Scripts' outbound HTTP (`fetch`, `kiln.http`, `wasi:http`): only to
    /// the hosts a script lists in its `allowed_hosts`, and only to public
    /// addresses.
    egress: EgressConfig / EgressLayer {
        /// Off: every outbound request is refused, whatever scripts allow.
        enabled: bool = true,
        /// Host names or addresses, as written in URLs, that may resolve to
        /// loopback, private, link-local or CGNAT addresses (internal
        /// services, tests); any other host is refused there after DNS.
        /// Cloud metadata addresses stay refused.
        allow_private_hosts: Vec<String> = Vec::new(),
        /// Requests one run may make (redirects followed within one count once).
        max_requests_per_run: u32 = 50,
        /// Request and response bodies of one run, together.
        max_bytes_per_run: u64 = 32 << 20,
        max_response_bytes: u64 = 10 << 20,
        max_request_bytes: u64 = 1 << 20,
        /// One request, redirects and body included (a script may ask for
        /// less); the run's own deadline applies anyway.
        timeout_ms: u64 = 30_000,
        max_redirects: u32 = 5,
    }

    /// What the store keeps, and the sweeper that removes the rest. An age
    /// of 0 keeps that kind of record forever.
    retention: RetentionConfig / RetentionLayer {
        /// Final executions older than this are removed...
        executions_max_age_secs: u64 = 30 * 24 * 3600,
        /// ...and so are those past this many of one script (ad-hoc runs
        /// count as one script), oldest first...
        executions_per_script: u64 = 10_000,
        /// ...but never a script's newest ones...
        executions_keep_last: u64 = 10,
        /// ...nor one that finished this recently: a client that was just
        /// told of it can still read it.
        executions_grace_secs: u64 = 300,
        audit_max_age_secs: u64 = 90 * 24 * 3600,
        webhook_attempts_max_age_secs: u64 = 30 * 24 * 3600,
        /// Each script keeps its newest this many versions (and any a
        /// queued or running execution uses); older ones are removed. 0
        /// keeps them all.
        script_versions_keep: u32 = 100,
        /// Compiled artifacts on disk (the cache directory) past this many
        /// MiB are removed, least recently used first; never one loaded in
        /// memory. 0 keeps them all.
        artifacts_max_mb: u64 = 2048,
        /// How often the sweeper looks; while it finds more than one
        /// batch to remove it goes on after a short pause instead.
        sweep_interval_ms: u64 = 60_000,
        /// The most records one sweep reads looking for what to remove.
        sweep_batch: usize = 2_000,
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    /// A value from the environment or a `--set` flag, by the name it
    /// was given under.
    #[error("{name}={value:?}: {reason}")]
    Value {
        name: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Values given on the command line, the last layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `section.key=value`, any declared key.
    pub set: Vec<String>,
}

impl Config {
    /// Loads the layers in order and validates the result.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, variable or key at fault.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let layer: Layer = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source: Box::new(source),
            })?;
            config.apply(layer);
        }
        config.apply(env_layer(|name| std::env::var(name).ok())?);
        config.apply(flag_layer(&overrides.set)?);
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.workers.count == 0
            || self.workers.queue_capacity == 0
            || self.workers.queued_per_user == 0
        {
            return invalid(
                "workers.count, workers.queue_capacity and workers.queued_per_user must be at least 1",
            );
        }
        if l.default_timeout_ms == 0 || l.default_timeout_ms > l.max_timeout_ms {
            return invalid(
                "limits.default_timeout_ms must be between 1 and limits.max_timeout_ms",
            );
        }
        if l.default_memory_mb == 0 || l.default_memory_mb > l.max_memory_mb {
            return invalid("limits.default_memory_mb must be between 1 and limits.max_memory_mb");
        }
        if let (Some(default), Some(max)) = (l.default_fuel, l.max_fuel)
            && default > max
        {
            return invalid("limits.default_fuel must not exceed limits.max_fuel");
        }
        if self.server.threads > MAX_SERVER_THREADS {
            return invalid(&format!(
                "server.threads must be at most {MAX_SERVER_THREADS}"
            ));
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes must be at least 1");
        }
        if self.server.store_cache_mb == 0 {
            return invalid("server.store_cache_mb must be at least 1");
        }
        if l.compile_memory_mb < 64
            || l.compile_cpu_secs == 0
            || l.compile_timeout_ms == 0
            || l.compiles_per_user == 0
        {
            return invalid(
                "limits.compile_memory_mb must be at least 64, and limits.compile_cpu_secs, limits.compile_timeout_ms and limits.compiles_per_user at least 1",
            );
        }
        let e = &self.egress;
        if e.timeout_ms == 0 || e.max_response_bytes == 0 || e.max_bytes_per_run == 0 {
            return invalid(
                "egress.timeout_ms, egress.max_response_bytes and egress.max_bytes_per_run must be at least 1",
            );
        }
        let r = &self.retention;
        if r.executions_per_script == 0 || r.executions_keep_last > r.executions_per_script {
            return invalid(
                "retention.executions_per_script must be at least 1 and at least retention.executions_keep_last",
            );
        }
        if r.sweep_interval_ms < 10 || r.sweep_batch == 0 {
            return invalid(
                "retention.sweep_interval_ms must be at least 10 and retention.sweep_batch at least 1",
            );
        }
        let s = &self.server;
        if s.max_connections == 0 || s.max_connections_per_ip == 0 || s.header_read_timeout_ms == 0
        {
            return invalid(
                "server.max_connections, server.max_connections_per_ip and server.header_read_timeout_ms must be at least 1",
            );
        }
        // Read as `client_ip.rs` reads them.
        if let Some(bad) = self.server.trusted_proxies.iter().find(|entry| {
            let entry = entry.trim();
            entry.parse::<ipnet::IpNet>().is_err() && entry.parse::<std::net::IpAddr>().is_err()
        }) {
            return Err(ConfigError::Invalid(format!(
                "server.trusted_proxies: {bad:?} is not an address or a CIDR"
            )));
        }
        if let Some(bad) = self
            .server
            .cors_origins
            .iter()
            .find(|origin| origin.as_str() != "*" && !is_origin(origin))
        {
            return Err(ConfigError::Invalid(format!(
                "server.cors_origins: {bad:?} is not an origin (scheme://host[:port], or *)"
            )));
        }
        let a = &self.auth;
        if a.jwt_secret.as_ref().is_some_and(|s| s.0.len() < 32) {
            return invalid("auth.jwt_secret must be at least 32 characters");
        }
        if a.admin_password
            .as_ref()
            .is_some_and(|p| p.0.chars().count() < 8)
        {
            return invalid(
                "the admin password (KILN_ADMIN_PASSWORD) must be at least 8 characters",
            );
        }
        if a.access_ttl_secs == 0 || a.refresh_ttl_secs < a.access_ttl_secs {
            return invalid(
                "auth.access_ttl_secs must be at least 1 and auth.refresh_ttl_secs at least as long",
            );
        }
        let h = &self.webhooks;
        if h.max_attempts == 0 || h.timeout_ms == 0 || h.retry_base_ms == 0 {
            return invalid(
                "webhooks.max_attempts, webhooks.timeout_ms and webhooks.retry_base_ms must be at least 1",
            );
        }
        if !a.enabled && !self.server.listen.ip().is_loopback() {
            return invalid(
                "auth.enabled = false makes every caller an admin; it is allowed only on a loopback listen address",
            );
        }
        Ok(())
    }
}

/// The `KILN_<SECTION>_<KEY>` layer, plus the `KILN_LISTEN`,
/// `KILN_DATA_DIR`, `KILN_ADMIN_PASSWORD` and `KILN_MASTER_KEY` shortcuts (the
/// long name wins).
fn env_layer(var: impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    let named = |name: &str| var(name).map(|value| (name.to_owned(), value));
    let mut layer = Layer::read(&Named(|section: &str, key: &str| {
        named(&format!("KILN_{section}_{key}").to_uppercase())
    }))?;
    let shortcuts = Named(|_: &str, key: &str| named(key));
    if layer.server.listen.is_none() {
        layer.server.listen = shortcuts.get::<SocketAddr>("", "KILN_LISTEN")?;
    }
    if layer.server.data_dir.is_none() {
        layer.server.data_dir = shortcuts.get::<PathBuf>("", "KILN_DATA_DIR")?;
    }
    if layer.auth.admin_password.is_none() {
        layer.auth.admin_password = shortcuts.get::<Secret>("", "KILN_ADMIN_PASSWORD")?;
    }
    if layer.auth.master_key.is_none() {
        layer.auth.master_key = shortcuts.get::<Secret>("", "KILN_MASTER_KEY")?;
    }
    Ok(layer)
}

/// The `--set section.key=value` layer; a key that is not declared is refused.
fn flag_layer(pairs: &[String]) -> Result<Layer, ConfigError> {
    let mut values = std::collections::HashMap::new();
    for pair in pairs {
        let parsed = pair
            .split_once('=')
            .and_then(|(name, value)| Some((name.split_once('.')?, value)));
        let Some(((section, key), value)) = parsed else {
            return Err(ConfigError::Invalid(format!(
                "--set {pair:?} is not section.key=value"
            )));
        };
        if !Layer::declares(section, key) {
            return Err(ConfigError::Invalid(format!(
                "--set {pair:?}: there is no key {key:?} in [{section}]"
            )));
        }
        values.insert(format!("{section}.{key}"), value.to_owned());
    }
    Layer::read(&Named(|section: &str, key: &str| {
        let name = format!("{section}.{key}");
        values
            .get(&name)
            .map(|value| (format!("--set {name}"), value.clone()))
    }))
}

/// `scheme://host[:port]` and nothing more, as a browser's `Origin` header
/// writes it.
fn is_origin(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.origin().ascii_serialization() == text
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server.data_dir, PathBuf::from("kiln-data"));
    }

    #[test]
    fn cors_origins_are_origins_or_a_star() {
        let mut config = Config::default();
        config.server.cors_origins = vec![
            "https://console.example".into(),
            "http://127.0.0.1:3000".into(),
            "*".into(),
        ];
        config.validate().unwrap();
        for bad in [
            "https://console.example/",
            "https://console.example/app",
            "console.example",
            "ftp://console.example",
        ] {
            config.server.cors_origins = vec![bad.into()];
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("server.cors_origins"), "{bad}: {error}");
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let mut config = Config::default();
        config.apply(
            toml::from_str("[server]\nlisten = \"127.0.0.1:9000\"\n[limits]\nmax_fuel = 5")
                .unwrap(),
        );
        config.apply(
            env_layer(env(&[
                ("KILN_LISTEN", "127.0.0.1:9001"),
                ("KILN_WORKERS_COUNT", "3"),
            ]))
            .unwrap(),
        );
        assert_eq!(config.server.listen.port(), 9001);
        assert_eq!(config.workers.count, 3);
        assert_eq!(config.limits.max_fuel, Some(5));
    }

    #[test]
    fn the_long_env_name_wins_over_the_shortcut() {
        let layer = env_layer(env(&[
            ("KILN_LISTEN", "127.0.0.1:1"),
            ("KILN_SERVER_LISTEN", "127.0.0.1:2"),
        ]))
        .unwrap();
        assert_eq!(layer.server.listen.unwrap().port(), 2);
    }

    #[test]
    fn a_config_file_is_read_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kiln.toml");
        std::fs::write(
            &file,
            "[workers]\ncount = 7\n[server]\ndata_dir = \"/srv/kiln\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            data_dir: Some(PathBuf::from("/flag/wins")),
            ..Overrides::default()
        };
        let config = Config::load(Some(&file), &overrides).unwrap();
        assert_eq!(config.workers.count, 7);
        assert_eq!(config.server.data_dir, PathBuf::from("/flag/wins"));

        let missing =
            Config::load(Some(&dir.path().join("nope.toml")), &Overrides::default()).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
        std::fs::write(&file, "[workers]\ncount = \"seven\"\n").unwrap();
        let bad = Config::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(bad.to_string().contains("kiln.toml"), "{bad}");
        std::fs::write(&file, "[workers]\ncount = 0\n").unwrap();
        assert!(matches!(
            Config::load(Some(&file), &Overrides::default()),
            Err(ConfigError::Invalid(_))
        ));
        std::fs::write(&file, "[server]\nstore_cache_mb = 0\n").unwrap();
        let zero = Config::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(zero.to_string().contains("store_cache_mb"), "{zero}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = env_layer(env(&[("KILN_WORKERS_COUNT", "many")])).unwrap_err();
        assert!(err.to_string().contains("KILN_WORKERS_COUNT"), "{err}");
        let err = toml::from_str::<Layer>("[server]\nlisten_on = 1").unwrap_err();
        assert!(err.to_string().contains("listen_on"), "{err}");
        let mut config = Config::default();
        config.limits.default_memory_mb = 4096;
        assert!(config.validate().is_err());
    }

    #[test]
    fn retention_that_keeps_more_than_its_cap_or_sweeps_nonstop_is_refused() {
        let refused = |change: fn(&mut RetentionConfig)| {
            let mut config = Config::default();
            change(&mut config.retention);
            config.validate().unwrap_err().to_string()
        };
        assert!(
            refused(|r| r.executions_keep_last = r.executions_per_script + 1)
                .contains("executions_keep_last")
        );
        assert!(refused(|r| r.executions_per_script = 0).contains("executions_per_script"));
        assert!(refused(|r| r.sweep_interval_ms = 1).contains("sweep_interval_ms"));
        assert!(refused(|r| r.sweep_batch = 0).contains("sweep_batch"));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn the_runtime_threads_are_bounded() {
        let layer = env_layer(env(&[("KILN_SERVER_THREADS", "4")])).unwrap();
        let mut config = Config::default();
        config.apply(layer);
        assert_eq!(config.server.threads, 4);
        config.server.threads = MAX_SERVER_THREADS;
        assert!(config.validate().is_ok());
        config.server.threads = MAX_SERVER_THREADS + 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("server.threads"), "{err}");
    }

    #[test]
    fn every_key_has_an_environment_name_and_a_flag() {
        let layer = env_layer(env(&[
            ("KILN_RATE_LIMIT_FAILED_AUTH_PER_MINUTE", "7"),
            ("KILN_LIMITS_DEFAULT_FUEL", " 1000 "),
            ("KILN_SERVER_CACHE_DIR", "/var/cache/kiln "),
        ]))
        .unwrap();
        assert_eq!(layer.rate_limit.failed_auth_per_minute, Some(7));
        assert_eq!(layer.limits.default_fuel, Some(1000));
        assert_eq!(
            layer.server.cache_dir,
            Some(PathBuf::from("/var/cache/kiln ")),
            "paths are taken as written"
        );

        let overrides = Overrides {
            set: vec![
                "workers.queue_capacity=5".into(),
                "webhooks.allow_private=true".into(),
                "auth.admin_password=from a flag".into(),
            ],
            ..Overrides::default()
        };
        let config = Config::load(None, &overrides).unwrap();
        assert_eq!(config.workers.queue_capacity, 5);
        assert!(config.webhooks.allow_private);
        assert_eq!(
            config.auth.admin_password,
            Some(Secret("from a flag".into()))
        );

        for (pair, says) in [
            ("workers.colour=5", "no key"),
            ("nowhere.count=5", "no key"),
            ("workers.count", "section.key=value"),
            ("count=5", "section.key=value"),
            ("workers.count=many", "--set workers.count"),
        ] {
            let overrides = Overrides {
                set: vec![pair.into()],
                ..Overrides::default()
            };
            let err = Config::load(None, &overrides).unwrap_err().to_string();
            assert!(err.contains(says), "{pair}: {err}");
        }
    }

    #[test]
    fn auth_settings_are_checked_and_secrets_stay_out_of_debug() {
        let mut config = Config::default();
        config.apply(
            env_layer(env(&[
                ("KILN_ADMIN_PASSWORD", "correct horse"),
                ("KILN_AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("KILN_RATE_LIMIT_LOGIN_PER_MINUTE", "3"),
            ]))
            .unwrap(),
        );
        config.validate().unwrap();
        assert_eq!(config.rate_limit.login_per_minute, 3);
        let printed = format!("{config:?}");
        assert!(!printed.contains("correct horse"), "{printed}");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");

        let mut short = config.clone();
        short.auth.jwt_secret = Some(Secret("short".into()));
        assert!(short.validate().is_err());
        let mut weak = config.clone();
        weak.auth.admin_password = Some(Secret("1234567".into()));
        assert!(weak.validate().is_err());
        let mut open = config;
        open.auth.enabled = false;
        open.validate().unwrap();
        open.server.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(open.validate().is_err(), "auth off on a public address");
    }
}

//! Configuration: defaults < `kiln.toml` (`--config`) < `KILN_*` environment <
//! flags. This is the only module of the host that reads environment
//! variables, so every knob is listed in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

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

/// How `kiln serve`'s compiles are bounded.
pub fn compile_bounds(config: &Config) -> crate::compiler::CompileBounds {
    let l = &config.limits;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::compiler::CompileBounds {
        memory_mb: l.compile_memory_mb,
        cpu_secs: l.compile_cpu_secs,
        timeout: std::time::Duration::from_millis(l.compile_timeout_ms),
        per_caller: l.compiles_per_user,
        parallel: cores,
        // Enough for every worker and a burst of uploads; past it, 503.
        waiting: cores.saturating_mul(16).max(64),
        parallel_threads: false,
    }
}

/// Where `kiln serve` caches compiled artifacts.
pub fn cache_dir(config: &Config) -> PathBuf {
    config
        .server
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("cache"))
}

/// The validated configuration of `kiln serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub workers: WorkersConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub webhooks: WebhooksConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// Allow loopback, private, link-local and CGNAT destinations (tests,
    /// private networks). Cloud metadata addresses stay refused.
    pub allow_private: bool,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// The wait after the first failed attempt; each later one is 4× longer.
    pub retry_base_ms: u64,
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

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Off only for local benchmarking: every caller is then an admin, so
    /// the server refuses to start off on a non-loopback address.
    pub enabled: bool,
    /// HS256 key for access tokens; `None`: generated once into the data dir.
    pub jwt_secret: Option<Secret>,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    /// The first-start admin's password; `None`: a random one is made.
    pub admin_password: Option<Secret>,
}

/// Requests per minute per caller and route class; 0 turns a class off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub read_per_minute: u32,
    pub write_per_minute: u32,
    pub execute_per_minute: u32,
    /// Login attempts per minute for one username from one client IP; an
    /// IP may make three times as many over all usernames.
    pub login_per_minute: u32,
    /// Password checks per minute on the whole node, whoever asks: what
    /// bounds the CPU a distributed guesser can spend on Argon2.
    pub login_global_per_minute: u32,
    /// Requests with a credential that does not authenticate, per minute and
    /// client IP; past it, the IP's credentials are not even checked.
    pub failed_auth_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Compiled artifacts; `None` means `<data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub drain_timeout_ms: u64,
    /// The store's in-memory page cache (sled's `cache_capacity`).
    pub store_cache_mb: u64,
    /// Open connections at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Open connections at once from one client address (an IPv6 /64).
    pub max_connections_per_ip: usize,
    /// How long a connection may take to send a request's headers, may sit
    /// idle between requests, and may pause within a request's body.
    pub header_read_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkersConfig {
    pub count: usize,
    pub queue_capacity: usize,
}

/// Per-execution limits: what a request gets by default and the most it may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    /// `None`: unmetered unless the request sets a budget.
    pub default_fuel: Option<u64>,
    pub max_fuel: Option<u64>,
    pub output_bytes: usize,
    /// The largest value a script may keep in its key-value store.
    pub kv_value_bytes: u64,
    /// All of one script's keys and values together.
    pub kv_script_bytes: u64,
    /// API keys one user may hold (revoked ones do not count).
    pub api_keys_per_user: usize,
    /// Scripts, schedules and webhooks one user may hold.
    pub scripts_per_user: usize,
    pub schedules_per_user: usize,
    pub webhooks_per_user: usize,
    /// A compile's address space, in its own process.
    pub compile_memory_mb: u64,
    /// A compile's CPU time, all its threads together.
    pub compile_cpu_secs: u64,
    /// A compile's wall-clock time, from its start.
    pub compile_timeout_ms: u64,
    /// New compiles one user (or anonymous callers together) may have in
    /// flight; joining a compile of the same bytes costs nothing.
    pub compiles_per_user: usize,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                data_dir: PathBuf::from("kiln-data"),
                cache_dir: None,
                max_body_bytes: 10 << 20,
                drain_timeout_ms: 30_000,
                store_cache_mb: 32,
                max_connections: 1024,
                max_connections_per_ip: 64,
                header_read_timeout_ms: 10_000,
            },
            workers: WorkersConfig {
                count: cores,
                queue_capacity: 10_000,
            },
            limits: LimitsConfig {
                default_timeout_ms: 30_000,
                max_timeout_ms: 300_000,
                default_memory_mb: 128,
                max_memory_mb: 1024,
                default_fuel: None,
                max_fuel: None,
                output_bytes: 1 << 20,
                kv_value_bytes: 64 << 10,
                kv_script_bytes: 1 << 20,
                api_keys_per_user: 100,
                scripts_per_user: 1_000,
                schedules_per_user: 100,
                webhooks_per_user: 25,
                compile_memory_mb: 4096,
                compile_cpu_secs: 300,
                compile_timeout_ms: 300_000,
                compiles_per_user: 2,
            },
            auth: AuthConfig {
                enabled: true,
                jwt_secret: None,
                access_ttl_secs: 3600,
                refresh_ttl_secs: 30 * 24 * 3600,
                admin_password: None,
            },
            rate_limit: RateLimitConfig {
                read_per_minute: 6000,
                write_per_minute: 1200,
                execute_per_minute: 6000,
                login_per_minute: 10,
                login_global_per_minute: 600,
                failed_auth_per_minute: 60,
            },
            webhooks: WebhooksConfig {
                allow_private: false,
                max_attempts: 8,
                timeout_ms: 10_000,
                retry_base_ms: 15_000,
            },
        }
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
    #[error("{name}={value:?}: {reason}")]
    Env {
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
}

/// One layer: every field optional, merged over the layers below it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    #[serde(default)]
    server: ServerLayer,
    #[serde(default)]
    workers: WorkersLayer,
    #[serde(default)]
    limits: LimitsLayer,
    #[serde(default)]
    auth: AuthLayer,
    #[serde(default)]
    rate_limit: RateLimitLayer,
    #[serde(default)]
    webhooks: WebhooksLayer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksLayer {
    allow_private: Option<bool>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    retry_base_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthLayer {
    enabled: Option<bool>,
    jwt_secret: Option<Secret>,
    access_ttl_secs: Option<u64>,
    refresh_ttl_secs: Option<u64>,
    admin_password: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitLayer {
    read_per_minute: Option<u32>,
    write_per_minute: Option<u32>,
    execute_per_minute: Option<u32>,
    login_per_minute: Option<u32>,
    login_global_per_minute: Option<u32>,
    failed_auth_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerLayer {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    drain_timeout_ms: Option<u64>,
    store_cache_mb: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    header_read_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkersLayer {
    count: Option<usize>,
    queue_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsLayer {
    default_timeout_ms: Option<u64>,
    max_timeout_ms: Option<u64>,
    default_memory_mb: Option<u64>,
    max_memory_mb: Option<u64>,
    default_fuel: Option<u64>,
    max_fuel: Option<u64>,
    output_bytes: Option<usize>,
    kv_value_bytes: Option<u64>,
    kv_script_bytes: Option<u64>,
    api_keys_per_user: Option<usize>,
    scripts_per_user: Option<usize>,
    schedules_per_user: Option<usize>,
    webhooks_per_user: Option<usize>,
    compile_memory_mb: Option<u64>,
    compile_cpu_secs: Option<u64>,
    compile_timeout_ms: Option<u64>,
    compiles_per_user: Option<usize>,
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
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, layer: Layer) {
        let (s, w, l) = (&mut self.server, &mut self.workers, &mut self.limits);
        set(&mut s.listen, layer.server.listen);
        set(&mut s.data_dir, layer.server.data_dir);
        if layer.server.cache_dir.is_some() {
            s.cache_dir = layer.server.cache_dir;
        }
        set(&mut s.max_body_bytes, layer.server.max_body_bytes);
        set(&mut s.drain_timeout_ms, layer.server.drain_timeout_ms);
        set(&mut s.store_cache_mb, layer.server.store_cache_mb);
        set(&mut s.max_connections, layer.server.max_connections);
        set(
            &mut s.max_connections_per_ip,
            layer.server.max_connections_per_ip,
        );
        set(
            &mut s.header_read_timeout_ms,
            layer.server.header_read_timeout_ms,
        );
        set(&mut w.count, layer.workers.count);
        set(&mut w.queue_capacity, layer.workers.queue_capacity);
        set(&mut l.default_timeout_ms, layer.limits.default_timeout_ms);
        set(&mut l.max_timeout_ms, layer.limits.max_timeout_ms);
        set(&mut l.default_memory_mb, layer.limits.default_memory_mb);
        set(&mut l.max_memory_mb, layer.limits.max_memory_mb);
        if layer.limits.default_fuel.is_some() {
            l.default_fuel = layer.limits.default_fuel;
        }
        if layer.limits.max_fuel.is_some() {
            l.max_fuel = layer.limits.max_fuel;
        }
        set(&mut l.output_bytes, layer.limits.output_bytes);
        set(&mut l.kv_value_bytes, layer.limits.kv_value_bytes);
        set(&mut l.kv_script_bytes, layer.limits.kv_script_bytes);
        set(&mut l.api_keys_per_user, layer.limits.api_keys_per_user);
        set(&mut l.scripts_per_user, layer.limits.scripts_per_user);
        set(&mut l.schedules_per_user, layer.limits.schedules_per_user);
        set(&mut l.webhooks_per_user, layer.limits.webhooks_per_user);
        set(&mut l.compile_memory_mb, layer.limits.compile_memory_mb);
        set(&mut l.compile_cpu_secs, layer.limits.compile_cpu_secs);
        set(&mut l.compile_timeout_ms, layer.limits.compile_timeout_ms);
        set(&mut l.compiles_per_user, layer.limits.compiles_per_user);
        let a = &mut self.auth;
        set(&mut a.enabled, layer.auth.enabled);
        if layer.auth.jwt_secret.is_some() {
            a.jwt_secret = layer.auth.jwt_secret;
        }
        set(&mut a.access_ttl_secs, layer.auth.access_ttl_secs);
        set(&mut a.refresh_ttl_secs, layer.auth.refresh_ttl_secs);
        if layer.auth.admin_password.is_some() {
            a.admin_password = layer.auth.admin_password;
        }
        let r = &mut self.rate_limit;
        set(&mut r.read_per_minute, layer.rate_limit.read_per_minute);
        set(&mut r.write_per_minute, layer.rate_limit.write_per_minute);
        set(
            &mut r.execute_per_minute,
            layer.rate_limit.execute_per_minute,
        );
        set(&mut r.login_per_minute, layer.rate_limit.login_per_minute);
        set(
            &mut r.login_global_per_minute,
            layer.rate_limit.login_global_per_minute,
        );
        set(
            &mut r.failed_auth_per_minute,
            layer.rate_limit.failed_auth_per_minute,
        );
        let h = &mut self.webhooks;
        set(&mut h.allow_private, layer.webhooks.allow_private);
        set(&mut h.max_attempts, layer.webhooks.max_attempts);
        set(&mut h.timeout_ms, layer.webhooks.timeout_ms);
        set(&mut h.retry_base_ms, layer.webhooks.retry_base_ms);
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.workers.count == 0 || self.workers.queue_capacity == 0 {
            return invalid("workers.count and workers.queue_capacity must be at least 1");
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
        let s = &self.server;
        if s.max_connections == 0 || s.max_connections_per_ip == 0 || s.header_read_timeout_ms == 0
        {
            return invalid(
                "server.max_connections, server.max_connections_per_ip and server.header_read_timeout_ms must be at least 1",
            );
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

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The `KILN_<SECTION>_<KEY>` layer, plus the `KILN_LISTEN` and
/// `KILN_DATA_DIR` shortcuts.
fn env_layer(var: impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    fn parse<T: FromStr>(
        var: &impl Fn(&str) -> Option<String>,
        name: &str,
    ) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let Some(value) = var(name) else {
            return Ok(None);
        };
        value
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: T::Err| ConfigError::Env {
                name: name.into(),
                value: value.clone(),
                reason: e.to_string(),
            })
    }
    let listen = match parse(&var, "KILN_SERVER_LISTEN")? {
        Some(listen) => Some(listen),
        None => parse(&var, "KILN_LISTEN")?,
    };
    let data_dir = var("KILN_SERVER_DATA_DIR")
        .or_else(|| var("KILN_DATA_DIR"))
        .map(PathBuf::from);
    Ok(Layer {
        server: ServerLayer {
            listen,
            data_dir,
            cache_dir: var("KILN_SERVER_CACHE_DIR").map(PathBuf::from),
            max_body_bytes: parse(&var, "KILN_SERVER_MAX_BODY_BYTES")?,
            drain_timeout_ms: parse(&var, "KILN_SERVER_DRAIN_TIMEOUT_MS")?,
            store_cache_mb: parse(&var, "KILN_SERVER_STORE_CACHE_MB")?,
            max_connections: parse(&var, "KILN_SERVER_MAX_CONNECTIONS")?,
            max_connections_per_ip: parse(&var, "KILN_SERVER_MAX_CONNECTIONS_PER_IP")?,
            header_read_timeout_ms: parse(&var, "KILN_SERVER_HEADER_READ_TIMEOUT_MS")?,
        },
        workers: WorkersLayer {
            count: parse(&var, "KILN_WORKERS_COUNT")?,
            queue_capacity: parse(&var, "KILN_WORKERS_QUEUE_CAPACITY")?,
        },
        limits: LimitsLayer {
            default_timeout_ms: parse(&var, "KILN_LIMITS_DEFAULT_TIMEOUT_MS")?,
            max_timeout_ms: parse(&var, "KILN_LIMITS_MAX_TIMEOUT_MS")?,
            default_memory_mb: parse(&var, "KILN_LIMITS_DEFAULT_MEMORY_MB")?,
            max_memory_mb: parse(&var, "KILN_LIMITS_MAX_MEMORY_MB")?,
            default_fuel: parse(&var, "KILN_LIMITS_DEFAULT_FUEL")?,
            max_fuel: parse(&var, "KILN_LIMITS_MAX_FUEL")?,
            output_bytes: parse(&var, "KILN_LIMITS_OUTPUT_BYTES")?,
            kv_value_bytes: parse(&var, "KILN_LIMITS_KV_VALUE_BYTES")?,
            kv_script_bytes: parse(&var, "KILN_LIMITS_KV_SCRIPT_BYTES")?,
            api_keys_per_user: parse(&var, "KILN_LIMITS_API_KEYS_PER_USER")?,
            scripts_per_user: parse(&var, "KILN_LIMITS_SCRIPTS_PER_USER")?,
            schedules_per_user: parse(&var, "KILN_LIMITS_SCHEDULES_PER_USER")?,
            webhooks_per_user: parse(&var, "KILN_LIMITS_WEBHOOKS_PER_USER")?,
            compile_memory_mb: parse(&var, "KILN_LIMITS_COMPILE_MEMORY_MB")?,
            compile_cpu_secs: parse(&var, "KILN_LIMITS_COMPILE_CPU_SECS")?,
            compile_timeout_ms: parse(&var, "KILN_LIMITS_COMPILE_TIMEOUT_MS")?,
            compiles_per_user: parse(&var, "KILN_LIMITS_COMPILES_PER_USER")?,
        },
        auth: AuthLayer {
            enabled: parse(&var, "KILN_AUTH_ENABLED")?,
            jwt_secret: var("KILN_AUTH_JWT_SECRET").map(Secret),
            access_ttl_secs: parse(&var, "KILN_AUTH_ACCESS_TTL_SECS")?,
            refresh_ttl_secs: parse(&var, "KILN_AUTH_REFRESH_TTL_SECS")?,
            admin_password: var("KILN_AUTH_ADMIN_PASSWORD")
                .or_else(|| var("KILN_ADMIN_PASSWORD"))
                .map(Secret),
        },
        rate_limit: RateLimitLayer {
            read_per_minute: parse(&var, "KILN_RATE_LIMIT_READ_PER_MINUTE")?,
            write_per_minute: parse(&var, "KILN_RATE_LIMIT_WRITE_PER_MINUTE")?,
            execute_per_minute: parse(&var, "KILN_RATE_LIMIT_EXECUTE_PER_MINUTE")?,
            login_per_minute: parse(&var, "KILN_RATE_LIMIT_LOGIN_PER_MINUTE")?,
            login_global_per_minute: parse(&var, "KILN_RATE_LIMIT_LOGIN_GLOBAL_PER_MINUTE")?,
            failed_auth_per_minute: parse(&var, "KILN_RATE_LIMIT_FAILED_AUTH_PER_MINUTE")?,
        },
        webhooks: WebhooksLayer {
            allow_private: parse(&var, "KILN_WEBHOOKS_ALLOW_PRIVATE")?,
            max_attempts: parse(&var, "KILN_WEBHOOKS_MAX_ATTEMPTS")?,
            timeout_ms: parse(&var, "KILN_WEBHOOKS_TIMEOUT_MS")?,
            retry_base_ms: parse(&var, "KILN_WEBHOOKS_RETRY_BASE_MS")?,
        },
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

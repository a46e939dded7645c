//! Scripts' outbound HTTP (`[egress]`). The sandbox hands every request a
//! guest makes, from `fetch`, `kiln.http` or `wasi:http`, to the run's
//! [`RunEgress`], which sends it only to the hosts the script lists in its
//! `allowed_hosts`, and only to public addresses after DNS (`ssrf.rs`; an
//! operator may let named hosts resolve to private ones), follows redirects
//! that stay within the list, and counts the run's requests and bytes
//! against its limits. Every request is logged for the execution record and
//! counted in `/metrics`.

pub mod allowlist;
pub mod ssrf;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kiln_runtime::{EgressError, EgressErrorKind, EgressFuture, EgressRequest, EgressResponse};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

pub use allowlist::AllowedHosts;

use crate::config::EgressConfig;
use crate::metrics::EgressMetrics;
use crate::store::OutboundRequest;

/// The node's side of outbound HTTP: its policy and one connection pool,
/// shared by every run.
pub struct Gateway {
    config: EgressConfig,
    client: reqwest::Client,
    metrics: EgressMetrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long a connection may take to open, within a request's own time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Gateway {
    /// # Errors
    ///
    /// The HTTP client cannot be built (its TLS setup).
    pub fn new(config: &EgressConfig, metrics: EgressMetrics) -> Result<Arc<Self>, String> {
        let resolver = GuardedResolver {
            private_hosts: lower_case(&config.allow_private_hosts),
        };
        let client = reqwest::Client::builder()
            // A proxy would resolve names itself, around the guard.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(resolver))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("Kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the egress HTTP client: {e}"))?;
        Ok(Arc::new(Self {
            config: EgressConfig {
                allow_private_hosts: lower_case(&config.allow_private_hosts),
                ..config.clone()
            },
            client,
            metrics,
        }))
    }

    /// The egress of one run of a script that allows `allowed`.
    pub fn for_run(self: &Arc<Self>, allowed: AllowedHosts) -> RunEgress {
        RunEgress(Arc::new(Run {
            gateway: self.clone(),
            allowed,
            state: Mutex::default(),
        }))
    }
}

fn lower_case(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

/// One run's outbound HTTP: the gateway, the script's hosts, and what the
/// run has sent so far.
#[derive(Clone)]
pub struct RunEgress(Arc<Run>);

struct Run {
    gateway: Arc<Gateway>,
    allowed: AllowedHosts,
    state: Mutex<RunState>,
}

#[derive(Default)]
struct RunState {
    requests: u32,
    bytes: u64,
    /// One entry per request counted, so at most `max_requests_per_run`.
    log: Vec<OutboundRequest>,
}

impl RunEgress {
    /// The requests the run made, in order; empties the log.
    pub fn take_log(&self) -> Vec<OutboundRequest> {
        std::mem::take(&mut self.0.lock().log)
    }
}

impl Run {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self) -> &EgressConfig {
        &self.gateway.config
    }

    /// Counts a request before it is sent; refuses one past the run's
    /// limits. A refused one is not logged (the log stays bounded).
    fn admit(&self, body_bytes: usize) -> Result<(), EgressError> {
        let config = self.config();
        let mut state = self.lock();
        if state.requests >= config.max_requests_per_run {
            return Err(limit(format!(
                "the run already made {} requests (egress.max_requests_per_run)",
                config.max_requests_per_run
            )));
        }
        let bytes = state.bytes.saturating_add(body_bytes as u64);
        if bytes > config.max_bytes_per_run {
            return Err(limit(format!(
                "the run's requests and responses would pass {} bytes (egress.max_bytes_per_run)",
                config.max_bytes_per_run
            )));
        }
        state.requests += 1;
        state.bytes = bytes;
        Ok(())
    }

    async fn send(self: Arc<Self>, request: EgressRequest) -> Result<EgressResponse, EgressError> {
        let started = Instant::now();
        let config = self.config();
        if !config.enabled {
            return Err(denied(
                "outbound HTTP is off on this node (egress.enabled = false)".into(),
            ));
        }
        if let Err(refused) = self.admit(request.body.len()) {
            self.gateway.metrics.request("limit", 0);
            return Err(refused);
        }
        let mut entry = OutboundRequest {
            method: clip(&request.method.to_ascii_uppercase()),
            ..OutboundRequest::default()
        };
        let configured = Duration::from_millis(config.timeout_ms);
        let timeout = request.timeout.map_or(configured, |t| t.min(configured));
        let result = match tokio::time::timeout(timeout, self.exchange(&request, &mut entry)).await
        {
            Ok(result) => result,
            Err(_) => Err(EgressError::new(
                EgressErrorKind::Timeout,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        };
        entry.ms = crate::millis(started.elapsed());
        let outcome = match &result {
            Ok(response) => {
                entry.status = Some(response.status);
                entry.bytes = response.body.len() as u64;
                "ok"
            }
            Err(e) => {
                entry.error = Some(clip(&e.message));
                kind_name(e.kind)
            }
        };
        self.gateway.metrics.request(outcome, entry.bytes);
        self.lock().log.push(entry);
        result
    }

    /// Sends the request and follows redirects within the allowed hosts;
    /// reads the answer's body up to what the run may still receive.
    async fn exchange(
        &self,
        request: &EgressRequest,
        entry: &mut OutboundRequest,
    ) -> Result<EgressResponse, EgressError> {
        let config = self.config();
        // Messages name the URL without its query: it often carries credentials.
        let mut url = Url::parse(&request.url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        let mut method = reqwest::Method::from_bytes(entry.method.as_bytes())
            .map_err(|_| invalid(format!("{:?} is not an HTTP method", entry.method)))?;
        let mut headers = header_map(&request.headers)?;
        let mut body = bytes::Bytes::from(request.body.clone());
        let mut hops = 0;
        loop {
            self.check(&url, entry)?;
            let response = self
                .gateway
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await
                .map_err(network_error)?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok());
            let follows = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if let (true, Some(location)) = (follows, location) {
                if hops >= config.max_redirects {
                    return Err(limit(format!(
                        "more than {} redirects (egress.max_redirects)",
                        config.max_redirects
                    )));
                }
                hops += 1;
                let next = url
                    .join(location)
                    .map_err(|e| network(format!("a redirect to something not a URL: {e}")))?;
                let see_other = status == reqwest::StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST);
                if see_other {
                    method = reqwest::Method::GET;
                    body = bytes::Bytes::new();
                    headers.remove(reqwest::header::CONTENT_TYPE);
                }
                if next.host_str() != url.host_str()
                    || next.port_or_known_default() != url.port_or_known_default()
                {
                    // As browsers do: credentials are for the host they were written for.
                    headers.remove(reqwest::header::AUTHORIZATION);
                    headers.remove(reqwest::header::COOKIE);
                }
                url = next;
                continue;
            }
            return self.read(response, url).await;
        }
    }

    /// Refuses a URL outside the script's hosts, or an address literal the
    /// node may not reach; notes its host and path in the log entry.
    fn check(&self, url: &Url, entry: &mut OutboundRequest) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "{}: only http and https URLs can be reached",
                without_query(url)
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not sent; use an Authorization header".into(),
            ));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(443);
        let default_port = if url.scheme() == "https" { 443 } else { 80 };
        entry.host = if url.port().is_some() {
            format!("{host}:{port}")
        } else {
            host.clone()
        };
        entry.path = clip(url.path());
        if !self.allowed.allows(&host, port, default_port) {
            let allowed = if self.allowed.is_empty() {
                "it allows none; set the script's allowed_hosts".to_owned()
            } else {
                format!("it allows {}", self.allowed)
            };
            return Err(denied(format!(
                "{host}:{port} is not in this script's allowed hosts ({allowed})"
            )));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            let private_ok = self.config().allow_private_hosts.contains(&host);
            if let Some(kind) = ssrf::refused_kind(ip, private_ok) {
                return Err(denied(format!(
                    "{host} is a {kind} address, where requests may not go (egress.allow_private_hosts)"
                )));
            }
        }
        Ok(())
    }

    async fn read(
        &self,
        mut response: reqwest::Response,
        url: Url,
    ) -> Result<EgressResponse, EgressError> {
        let config = self.config();
        // Reserved before reading, so requests in flight at once (a
        // component may have several) cannot each count on the same bytes.
        let cap = {
            let mut state = self.lock();
            let left = config.max_bytes_per_run.saturating_sub(state.bytes);
            let cap = config.max_response_bytes.min(left);
            state.bytes += cap;
            cap
        };
        let body = read_capped(&mut response, cap).await;
        let used = body.as_ref().map_or(0, |b| b.len() as u64);
        self.lock().bytes -= cap - used;
        let body = body.map_err(|e| e.unwrap_or_else(|| too_large(config, cap)))?;
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(EgressResponse {
            status: response.status().as_u16(),
            url: url.to_string(),
            headers,
            body,
        })
    }
}

/// The body, or `Err(None)` past `cap` bytes (checked before each chunk is
/// kept), or the network's error.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: u64,
) -> Result<Vec<u8>, Option<EgressError>> {
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Some(network_error(e)))? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A log entry's field or message, at most 256 characters: a guest chooses
/// the method and path, and the log is kept with the execution.
fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 256;
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

impl kiln_runtime::Egress for RunEgress {
    fn send(&self, request: EgressRequest) -> EgressFuture {
        Box::pin(self.0.clone().send(request))
    }

    fn max_request_body_bytes(&self) -> usize {
        usize::try_from(self.0.config().max_request_bytes).unwrap_or(usize::MAX)
    }
}

/// Header fields a guest may not set: the client sets them from the URL and
/// body, and a guest's own would contradict those.
const SET_BY_THE_CLIENT: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, EgressError> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
        if SET_BY_THE_CLIENT.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of header {name} is not valid")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn too_large(config: &EgressConfig, cap: u64) -> EgressError {
    if cap < config.max_response_bytes {
        limit(format!(
            "the response body would pass the run's {} bytes (egress.max_bytes_per_run)",
            config.max_bytes_per_run
        ))
    } else {
        limit(format!(
            "the response body is over {cap} bytes (egress.max_response_bytes)"
        ))
    }
}

/// A failed exchange: a refusal by the resolver's guard is `denied`.
fn network_error(error: reqwest::Error) -> EgressError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        match e.downcast_ref::<ssrf::Refused>() {
            Some(refused @ ssrf::Refused::Address { .. }) => {
                return denied(format!("{refused} (egress.allow_private_hosts)"));
            }
            Some(refused) => return network(refused.to_string()),
            None => {}
        }
        source = e.source();
    }
    if error.is_timeout() {
        return EgressError::new(EgressErrorKind::Timeout, "no connection in time".to_owned());
    }
    // reqwest names the URL, query and all: the log keeps host and path.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(e) = cause {
        message = format!("{message}: {e}");
        cause = e.source();
    }
    network(message)
}

fn kind_name(kind: EgressErrorKind) -> &'static str {
    match kind {
        EgressErrorKind::Denied => "denied",
        EgressErrorKind::Limit => "limit",
        EgressErrorKind::Timeout => "timeout",
        EgressErrorKind::Network => "network",
        EgressErrorKind::Invalid => "invalid",
    }
}

fn denied(message: String) -> EgressError {
    EgressError::new(EgressErrorKind::Denied, message)
}

fn limit(message: String) -> EgressError {
    EgressError::new(EgressErrorKind::Limit, message)
}

fn invalid(message: String) -> EgressError {
    EgressError::new(EgressErrorKind::Invalid, message)
}

fn network(message: String) -> EgressError {
    EgressError::new(EgressErrorKind::Network, message)
}

/// Name resolution for the egress client: every address a name resolves to
/// must be one the node may reach, or the name is refused (a round-robin
/// name must not be a way in). Names the operator lists may resolve to
/// private addresses; cloud metadata addresses are refused always.
struct GuardedResolver {
    private_hosts: Vec<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let private_ok = self.private_hosts.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| {
                    Box::new(ssrf::Refused::Resolve {
                        host: host.clone(),
                        reason: e.to_string(),
                    }) as Box<dyn std::error::Error + Send + Sync>
                })?
                .collect();
            for addr in &addrs {
                if let Some(kind) = ssrf::refused_kind(addr.ip(), private_ok) {
                    return Err(Box::new(ssrf::Refused::Address {
                        host: host.clone(),
                        ip: addr.ip(),
                        kind,
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use kiln_runtime::Egress as _;

    use super::*;

    fn gateway(config: EgressConfig) -> Arc<Gateway> {
        Gateway::new(&config, EgressMetrics::default()).unwrap()
    }

    fn get(url: &str) -> EgressRequest {
        EgressRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// Refused before any connection: nothing here reaches the network.
    #[tokio::test]
    async fn a_run_is_held_to_its_request_count_and_its_log_stays_bounded() {
        let run = gateway(EgressConfig {
            max_requests_per_run: 2,
            ..EgressConfig::default()
        })
        .for_run(AllowedHosts::parse(&["api.test"]).unwrap());
        for _ in 0..2 {
            let refused = run.send(get("http://other.test/")).await.unwrap_err();
            assert_eq!(refused.kind, EgressErrorKind::Denied, "{refused}");
        }
        let third = run.send(get("http://other.test/")).await.unwrap_err();
        assert_eq!(third.kind, EgressErrorKind::Limit);
        assert!(
            third.message.contains("egress.max_requests_per_run"),
            "{third}"
        );
        let log = run.take_log();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0].host, "other.test");
        assert!(run.take_log().is_empty());
    }

    #[tokio::test]
    async fn request_bodies_count_against_the_runs_bytes() {
        let run = gateway(EgressConfig {
            max_bytes_per_run: 10,
            ..EgressConfig::default()
        })
        .for_run(AllowedHosts::default());
        let big = EgressRequest {
            body: vec![0; 11],
            ..get("http://api.test/")
        };
        let refused = run.send(big).await.unwrap_err();
        assert_eq!(refused.kind, EgressErrorKind::Limit);
        assert!(
            refused.message.contains("egress.max_bytes_per_run"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_node_with_egress_off_refuses_everything() {
        let run = gateway(EgressConfig {
            enabled: false,
            ..EgressConfig::default()
        })
        .for_run(AllowedHosts::parse(&["api.test"]).unwrap());
        let refused = run.send(get("http://api.test/")).await.unwrap_err();
        assert!(refused.message.contains("egress.enabled"), "{refused}");
    }

    #[test]
    fn headers_the_client_sets_are_dropped_and_bad_ones_refused() {
        let headers = header_map(&[
            ("Host".into(), "elsewhere".into()),
            ("X-Ok".into(), "1".into()),
            ("Content-Length".into(), "5".into()),
        ])
        .unwrap();
        assert_eq!(headers.len(), 1);
        assert!(header_map(&[("bad name".into(), "x".into())]).is_err());
        assert!(header_map(&[("x".into(), "a\nb".into())]).is_err());
    }

    #[test]
    fn log_fields_are_clipped_and_messages_leave_out_the_query() {
        assert_eq!(clip("GET"), "GET");
        let long = "x".repeat(1000);
        assert_eq!(clip(&long).chars().count(), 257);
        let url = Url::parse("ftp://h.test/p?token=s3cr3t#f").unwrap();
        assert_eq!(without_query(&url), "ftp://h.test/p");
    }

    #[tokio::test]
    async fn a_long_method_is_refused_and_logged_clipped() {
        let run = gateway(EgressConfig::default()).for_run(AllowedHosts::default());
        let request = EgressRequest {
            method: "M".repeat(5000),
            ..get("http://api.test/")
        };
        let refused = run.send(request).await.unwrap_err();
        assert_eq!(refused.kind, EgressErrorKind::Invalid, "{refused}");
        let log = run.take_log();
        assert!(log[0].method.chars().count() <= 257);
        assert!(log[0].error.as_ref().unwrap().chars().count() <= 257);
    }
}

//! The hosts a script may reach: `api.example.com` (its default ports, 80
//! for http and 443 for https), `api.example.com:8443` (that port only),
//! `*.example.org` (any subdomain, not the domain itself), `host:*` (any
//! port), and IP addresses written as in URLs (`127.0.0.1:9000`,
//! `[::1]:9000`). Names are compared lower-case and without a trailing dot.

use std::fmt;

/// How many patterns one script may list.
pub const MAX_PATTERNS: usize = 64;
/// The longest pattern (a DNS name is at most 253 bytes, plus a port).
const MAX_PATTERN_BYTES: usize = 260;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Port {
    /// 80 for http, 443 for https.
    Default,
    Any,
    Only(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Lower-case; for a wildcard, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: Port,
}

/// A script's allowed hosts, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<Pattern>);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} is not a host pattern: {reason}")]
pub struct BadPattern {
    pub pattern: String,
    pub reason: &'static str,
}

impl AllowedHosts {
    /// Parses every pattern, refusing the first bad one.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, BadPattern> {
        patterns
            .iter()
            .map(|p| parse_pattern(p.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `host` (as in a URL, lower-case; IPv6 in brackets) at `port`
    /// is allowed; `default_port` is the scheme's.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_end_matches('.');
        self.0.iter().any(|p| {
            let host_matches = if p.wildcard {
                host.len() > p.host.len() + 1
                    && host.ends_with(p.host.as_str())
                    && host.as_bytes()[host.len() - p.host.len() - 1] == b'.'
            } else {
                host == p.host
            };
            let port_matches = match p.port {
                Port::Default => port == default_port,
                Port::Any => true,
                Port::Only(only) => port == only,
            };
            host_matches && port_matches
        })
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if p.wildcard {
                f.write_str("*.")?;
            }
            f.write_str(&p.host)?;
            match p.port {
                Port::Default => {}
                Port::Any => f.write_str(":*")?,
                Port::Only(port) => write!(f, ":{port}")?,
            }
        }
        Ok(())
    }
}

/// Checks a script's patterns as given in the API: at most
/// [`MAX_PATTERNS`], each a pattern. Returns them normalized (lower-case,
/// no trailing dot), as they are stored.
pub fn normalize(patterns: &[String]) -> Result<Vec<String>, String> {
    if patterns.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} host patterns"));
    }
    let parsed = AllowedHosts::parse(patterns).map_err(|e| e.to_string())?;
    Ok(parsed
        .0
        .into_iter()
        .map(|p| AllowedHosts(vec![p]).to_string())
        .collect())
}

fn parse_pattern(raw: &str) -> Result<Pattern, BadPattern> {
    let bad = |reason| BadPattern {
        pattern: raw.to_owned(),
        reason,
    };
    let text = raw.trim().to_ascii_lowercase();
    if text.is_empty() || text.len() > MAX_PATTERN_BYTES {
        return Err(bad("it must be 1 to 260 characters"));
    }
    if text.contains("://") || text.contains('/') || text.contains('@') {
        return Err(bad(
            "write only the host and optional port, no scheme or path",
        ));
    }
    let (host, port) = split_port(&text).ok_or_else(|| bad("the port is not a number or *"))?;
    let (host, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    let host = host.trim_end_matches('.');
    if host.starts_with('[') {
        let inner = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .ok_or_else(|| bad("an IPv6 address goes in brackets"))?;
        if wildcard || inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address"));
        }
    } else {
        if host.is_empty() || host.contains('*') {
            return Err(bad(
                "a wildcard may only start the pattern, as in *.example.com",
            ));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad("not a host name or IP address"));
        }
        if wildcard && !host.contains('.') {
            return Err(bad("a wildcard needs a domain of at least two labels"));
        }
    }
    Ok(Pattern {
        host: host.to_owned(),
        wildcard,
        port,
    })
}

/// `host[:port]` into the host and its port rule; IPv6 hosts are bracketed.
fn split_port(text: &str) -> Option<(&str, Port)> {
    let (host, port) = match text.rfind(':') {
        Some(at) if !text.starts_with('[') || text[..at].ends_with(']') => {
            (&text[..at], Some(&text[at + 1..]))
        }
        _ => (text, None),
    };
    let port = match port {
        None => Port::Default,
        Some("*") => Port::Any,
        Some(n) => Port::Only(n.parse().ok().filter(|&p| p != 0)?),
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(patterns: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(patterns).unwrap()
    }

    #[test]
    fn a_bare_host_allows_its_schemes_default_ports_only() {
        let allowed = hosts(&["API.example.com."]);
        assert!(allowed.allows("api.example.com", 443, 443));
        assert!(allowed.allows("api.example.com", 80, 80));
        assert!(allowed.allows("api.example.com.", 443, 443));
        assert!(!allowed.allows("api.example.com", 8443, 443));
        assert!(!allowed.allows("example.com", 443, 443));
        assert!(!allowed.allows("evil-api.example.com", 443, 443));
    }

    #[test]
    fn ports_and_wildcards() {
        let allowed = hosts(&["*.example.org:443", "127.0.0.1:9000", "[::1]:*"]);
        assert!(allowed.allows("a.example.org", 443, 443));
        assert!(allowed.allows("a.b.example.org", 443, 80));
        assert!(!allowed.allows("example.org", 443, 443));
        assert!(!allowed.allows("aexample.org", 443, 443));
        assert!(!allowed.allows("a.example.org", 80, 80));
        assert!(allowed.allows("127.0.0.1", 9000, 80));
        assert!(!allowed.allows("127.0.0.1", 9001, 80));
        assert!(allowed.allows("[::1]", 1, 80));
        assert_eq!(
            allowed.to_string(),
            "*.example.org:443, 127.0.0.1:9000, [::1]:*"
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            "https://api.example.com",
            "api.example.com/path",
            "user@host",
            "host:port",
            "host:0",
            "a.*.com",
            "*.com",
            "*",
            "[::1",
            "[nothost]:80",
            "spaces in.host",
        ] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad:?} was accepted");
        }
        let too_many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("h{i}.test")).collect();
        assert!(normalize(&too_many).is_err());
        assert_eq!(
            normalize(&["A.Example.COM.:8080".into()]).unwrap(),
            ["a.example.com:8080"]
        );
    }
}

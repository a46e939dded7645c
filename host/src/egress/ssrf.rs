//! Where the node's own requests may go: webhook deliveries and scripts'
//! outbound HTTP. A destination is checked after DNS resolution, and the
//! request then connects to exactly the addresses that were checked, so a
//! name that re-resolves to an internal address in between gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the URL is not valid: {0}")]
    Url(String),
    #[error("only http and https URLs can be reached")]
    Scheme,
    #[error(
        "put credentials in the receiver's configuration, not in the URL; deliveries are signed"
    )]
    Credentials,
    #[error("{host} resolves to {ip}, a {kind} address, where requests may not go")]
    Address {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// Why `ip` is no place for a webhook, if it is not. Cloud metadata
/// endpoints (all of IPv4 link-local, where AWS, GCP, Azure and ECS put
/// theirs, and the known others) are refused even with `allow_private`:
/// nothing legitimate listens there for webhooks, and they hand out
/// credentials.
pub fn refused_kind(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if is_metadata(ip) {
        return Some("cloud metadata");
    }
    if allow_private {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200),
        IpAddr::V6(v6) => v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    }
}

/// The IPv4 address inside an IPv6 address that reaches it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002:AABB:CCDD::/48`, whose relay forwards to `AA.BB.CC.DD`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let v4_of = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[0] == 0x2002 {
        return Some(v4_of(s[1], s[2]));
    }
    let translated = s[..6] == [0, 0, 0, 0, 0xffff, 0];
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    (translated || nat64 || compatible).then(|| v4_of(s[6], s[7]))
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (0, _, _) => "unspecified",
        _ if ip.is_broadcast() || ip.is_multicast() || a >= 240 => {
            "broadcast, multicast or reserved"
        }
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            "reserved"
        }
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match first {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if first & 0xfe00 == 0xfc00 => "private (unique local)",
        _ if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 => "link-local",
        _ if first & 0xff00 == 0xff00 => "multicast",
        0x2001 if ip.segments()[1] == 0xdb8 => "reserved",
        // Teredo tunnels to an obfuscated IPv4 address of the relay's choosing.
        0x2001 if ip.segments()[1] == 0 => "Teredo",
        // Local-use NAT64 (RFC 8215) may put the IPv4 address anywhere in
        // the /48's suffix, so the whole prefix is refused.
        0x64 if ip.segments()[1..3] == [0xff9b, 1] => "NAT64 (local use)",
        // Discard-only (RFC 6666).
        0x100 if ip.segments()[1..4] == [0, 0, 0] => "discard-only",
        _ => return None,
    })
}

/// Parses a webhook URL, refusing what can never be a destination.
pub fn parse(url: &str) -> Result<Url, Refused> {
    let url = Url::parse(url).map_err(|e| Refused::Url(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    if url.host().is_none() {
        return Err(Refused::Url("it has no host".into()));
    }
    Ok(url)
}

/// The addresses to connect to for `url`, every one of them allowed.
pub async fn resolve(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, Refused> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        _ => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Refused::Resolve {
                host: host.clone(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refused::Resolve {
            host,
            reason: "no addresses".into(),
        });
    }
    // One bad address refuses the name: a round-robin name must not be a
    // way in.
    for addr in &addrs {
        if let Some(kind) = refused_kind(addr.ip(), allow_private) {
            return Err(Refused::Address {
                host,
                ip: addr.ip(),
                kind,
            });
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        refused_kind(ip.parse().unwrap(), false)
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            // IPv4-translated, 6to4, Teredo, local-use NAT64, discard-only.
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::8.8.8.8",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
        ] {
            assert!(kind(ip).is_some(), "{ip} passed");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "::ffff:0:8.8.8.8",
            "2002:808:808::1",
            "2001:db9::1",
            "64:ff9b:2::1",
            "100:0:0:1::1",
        ] {
            assert_eq!(kind(ip), None, "{ip} refused");
        }
        // allow_private opens private ranges but never the metadata endpoints.
        assert_eq!(refused_kind("127.0.0.1".parse().unwrap(), true), None);
        assert_eq!(refused_kind("10.0.0.1".parse().unwrap(), true), None);
        assert!(refused_kind("169.254.169.254".parse().unwrap(), true).is_some());
        assert!(refused_kind("169.254.170.2".parse().unwrap(), true).is_some());
        assert!(refused_kind("fd00:ec2::254".parse().unwrap(), true).is_some());
        assert!(refused_kind("::ffff:169.254.169.254".parse().unwrap(), true).is_some());
        assert!(refused_kind("2002:a9fe:a9fe::".parse().unwrap(), true).is_some());
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(parse("https://example.com/hook").is_ok());
        assert_eq!(parse("ftp://example.com").unwrap_err(), Refused::Scheme);
        assert_eq!(
            parse("https://u:p@example.com").unwrap_err(),
            Refused::Credentials
        );
        assert!(matches!(parse("not a url"), Err(Refused::Url(_))));
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let url = parse("http://localhost:9/x").unwrap();
        assert!(matches!(
            resolve(&url, false).await,
            Err(Refused::Address {
                kind: "loopback",
                ..
            })
        ));
        assert!(resolve(&url, true).await.is_ok());
        let literal = parse("http://[::ffff:7f00:1]:9/").unwrap();
        assert!(resolve(&literal, false).await.is_err());
    }
}

//! Which address a request comes from, for the rate limiter and the audit
//! log. The connection's peer, unless that peer is a proxy the operator
//! trusts (`server.trusted_proxies`): then the nearest address that is not
//! itself a trusted proxy in the one header those proxies write
//! (`server.forwarded_header`: `X-Forwarded-For` or RFC 7239 `Forwarded`).
//! Any client can write either header, so only that one is read, only from a
//! trusted peer, and from the right: what a trusted proxy appended.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ForwardedHeader;

/// The proxies whose forwarding header is believed, and which header.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        Self {
            nets: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) or single addresses.
    ///
    /// # Errors
    ///
    /// The first entry that is neither.
    pub fn parse(entries: &[String], header: ForwardedHeader) -> Result<Self, String> {
        let nets = entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets, header })
    }

    /// Whether `ip` is one of the trusted proxies (whose connections count
    /// as many clients').
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: Option<&ConnectInfo<SocketAddr>>, headers: &HeaderMap) -> String {
        let Some(peer) = peer.map(|c| c.0.ip().to_canonical()) else {
            return "unknown".to_owned();
        };
        if !self.trusts(peer) {
            return peer.to_string();
        }
        // Nearest hop first: the last entry was added by the peer itself.
        let mut nearest = peer;
        for hop in forwarded_for(headers, self.header).into_iter().rev() {
            match hop {
                Some(ip) if self.trusts(ip) => nearest = ip,
                Some(ip) => return ip.to_string(),
                // A hop that hides its address (`unknown`, an obfuscated
                // name): what lies farther left was written by whoever
                // connected there, so the trusted hop that reported it is
                // the client as far as Kiln can tell.
                None => break,
            }
        }
        nearest.to_string()
    }
}

/// The hops `header` lists, in order (farthest first); `None` for a hop
/// whose address is not given.
fn forwarded_for(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    if header == ForwardedHeader::Forwarded {
        return headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| node_address(value.trim().trim_matches('"')))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| node_address(hop.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`,
/// `2001:db8::1`; anything else (`unknown`, `_hidden`) is no address.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> ConnectInfo<SocketAddr> {
        ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40_000))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn trusted_with(entries: &[&str], header: ForwardedHeader) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        TrustedProxies::parse(&entries, header).unwrap()
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        trusted_with(entries, ForwardedHeader::XForwardedFor)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let forged = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            proxies.client(Some(&peer("203.0.113.9")), &forged),
            "203.0.113.9"
        );
        assert_eq!(
            TrustedProxies::default().client(Some(&peer("10.0.0.1")), &forged),
            "10.0.0.1",
            "nothing is trusted by default"
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_nearest_untrusted_hop() {
        let proxies = trusted(&["10.0.0.0/8", "192.168.1.1"]);
        // The client forged the first entry; the proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 192.168.1.1")]);
        assert_eq!(
            proxies.client(Some(&peer("10.1.2.3")), &chain),
            "203.0.113.7"
        );
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            proxies.client(Some(&peer("10.1.2.3")), &split),
            "203.0.113.7"
        );
        let rfc = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2",
        )]);
        let rfc_proxies = trusted_with(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        assert_eq!(
            rfc_proxies.client(Some(&peer("10.1.2.3")), &rfc),
            "2001:db8::7"
        );
        assert_eq!(
            proxies.client(Some(&peer("10.1.2.3")), &rfc),
            "10.1.2.3",
            "only the configured header is read: a client's own Forwarded passes proxies untouched"
        );
        let none = headers(&[]);
        assert_eq!(proxies.client(Some(&peer("10.1.2.3")), &none), "10.1.2.3");
        // A hop that hides its address: the trusted hop that reported it,
        // never what the client wrote farther left.
        let hidden = headers(&[("forwarded", "for=6.6.6.6, for=unknown, for=10.0.0.2")]);
        assert_eq!(
            rfc_proxies.client(Some(&peer("10.1.2.3")), &hidden),
            "10.0.0.2"
        );
        let mapped = headers(&[("x-forwarded-for", "::ffff:203.0.113.8")]);
        assert_eq!(
            proxies.client(Some(&peer("10.1.2.3")), &mapped),
            "203.0.113.8"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        let header = ForwardedHeader::XForwardedFor;
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()], header).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()], header).is_err());
        assert!(TrustedProxies::parse(&[" 10.0.0.1 ".into(), "::1/128".into()], header).is_ok());
    }
}

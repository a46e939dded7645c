//! The accept loop of `kiln serve`: HTTP/1.1 connections with a bound on
//! their number (in all and per client address) and on the time a client
//! may take to send a request's headers or sit idle between requests, so
//! connections that never finish cannot pile up. `axum::serve` offers
//! neither.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// What bounds the open connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max: usize,
    pub per_ip: usize,
    pub header_read_timeout: Duration,
    /// Proxies carry many clients' connections: only `max` holds for them.
    pub trusted: crate::client_ip::TrustedProxies,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, asks open connections to finish their request in flight, and
/// returns once they have (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    refused: impl Fn() + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let http = Arc::new(http);
    let open = Arc::new(Open::new(limits));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Every connection task holds a receiver: when all are gone, so are
    // the connections.
    let (done, all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: give connections
                    // time to close instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = Open::admit(&open, peer.ip()).map(|slot| ConnectionSlot(Arc::new(slot)))
        else {
            refused();
            tracing::debug!(%peer, "connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request({
            let slot = slot.clone();
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(slot.clone());
                request.map(axum::body::Body::new)
            }
        });
        let (http, mut stopping, done) = (http.clone(), stopping.clone(), done.clone());
        tokio::spawn(async move {
            let connection = http
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop((slot, done));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(done);
    let mut all_done = all_done;
    let _ = all_done.recv().await;
}

/// The connections open now, in all and per client address.
struct Open {
    limits: ConnectionLimits,
    by_address: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place among the open ones, as a request carries it: a
/// WebSocket keeps it after the upgrade (which ends hyper's connection),
/// so open sockets count against the same bounds.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code, reason = "held, not read")] Arc<Slot>);

/// One admitted connection; gives its place back when dropped.
struct Slot {
    open: Arc<Open>,
    address: IpAddr,
}

impl Open {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            by_address: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(open: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let address = crate::ratelimit::client_prefix(ip);
        let mut guard = open.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_address) = &mut *guard;
        let mine = per_address.get(&address).copied().unwrap_or(0);
        let capped = !open.limits.trusted.trusts(ip) && mine >= open.limits.per_ip;
        if *total >= open.limits.max || capped {
            return None;
        }
        *total += 1;
        per_address.insert(address, mine + 1);
        Some(Slot {
            open: open.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self
            .open
            .by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (total, per_address) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(count) = per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> Arc<Open> {
        Arc::new(Open::new(ConnectionLimits {
            max,
            per_ip,
            header_read_timeout: Duration::from_secs(1),
            trusted: crate::client_ip::TrustedProxies::parse(
                &["10.9.9.9".to_owned()],
                crate::config::ForwardedHeader::XForwardedFor,
            )
            .unwrap(),
        }))
    }

    #[test]
    fn a_trusted_proxy_is_held_only_to_the_total() {
        let open = limits(3, 1);
        let proxy: IpAddr = "10.9.9.9".parse().unwrap();
        let _held: Vec<Slot> = (0..3).map(|_| Open::admit(&open, proxy).unwrap()).collect();
        assert!(Open::admit(&open, proxy).is_none(), "in all");
    }

    #[test]
    fn connections_are_capped_in_all_and_per_address() {
        let open = limits(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = Open::admit(&open, a).unwrap();
        let _second = Open::admit(&open, a).unwrap();
        assert!(Open::admit(&open, a).is_none(), "per address");
        let _third = Open::admit(&open, b).unwrap();
        assert!(Open::admit(&open, b).is_none(), "in all");
        drop(first);
        assert!(
            Open::admit(&open, a).is_some(),
            "a closed one frees its place"
        );
    }

    #[test]
    fn an_ipv6_client_is_one_address_per_64() {
        let open = limits(10, 1);
        let _held = Open::admit(&open, "2001:db8::1".parse().unwrap()).unwrap();
        assert!(Open::admit(&open, "2001:db8::2:3".parse().unwrap()).is_none());
        assert!(Open::admit(&open, "2001:db8:0:1::1".parse().unwrap()).is_some());
        let _v4 = Open::admit(&open, "::ffff:10.0.0.9".parse().unwrap()).unwrap();
        assert!(Open::admit(&open, "10.0.0.9".parse().unwrap()).is_none());
    }
}

//! Rate limits (API.md "Rate limiting"): GCRA buckets from governor, one
//! keyed limiter per route class, keyed by user (all of a user's sessions
//! and API keys share one bucket) or client IP where there is none; the
//! brute-force guard on logins (per IP, per username from that IP, and one
//! bucket for the node); and failed authentication per IP. Client IPs are
//! keyed by address, IPv6 ones by their /64, which one client usually holds
//! whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    Execute,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Execute => "execute",
        }
    }
}

/// A bucket's state after a request, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Requests per window (the bucket's size).
    pub limit: u32,
    /// The window `limit` is counted over, in seconds (`X-RateLimit-Window`).
    pub window_secs: u64,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// `Some(seconds)` when this request was refused.
    pub retry_after_secs: Option<u64>,
}

struct Bucket {
    limiter: Keyed,
    per_minute: u32,
}

impl Bucket {
    fn new(per_minute: u32) -> Option<Self> {
        let per_minute_nz = NonZeroU32::new(per_minute)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute_nz))
                .with_middleware::<StateInformationMiddleware>(),
            per_minute,
        })
    }

    fn check(&self, key: &str) -> Standing {
        let interval = Duration::from_secs(60) / self.per_minute;
        let key = key.to_owned();
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let empty = self.per_minute.saturating_sub(remaining);
                Standing {
                    limit: self.per_minute,
                    window_secs: 60,
                    remaining,
                    reset_secs: ceil_secs(interval * empty),
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Standing {
                    limit: self.per_minute,
                    window_secs: 60,
                    remaining: 0,
                    reset_secs: ceil_secs(interval * self.per_minute),
                    retry_after_secs: Some(ceil_secs(wait).max(1)),
                }
            }
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_millis()
        .div_ceil(1000)
        .try_into()
        .unwrap_or(u64::MAX)
}

pub struct RateLimits {
    read: Option<Bucket>,
    write: Option<Bucket>,
    execute: Option<Bucket>,
    /// Taken from before each password check, not after a failure: checks
    /// run in parallel, so counting failures afterwards would let a burst of
    /// guesses through before the first one is counted. Keyed by IP (three
    /// times the quota) and by username and IP: a guesser elsewhere cannot
    /// lock a user out of their own address.
    logins: Option<Bucket>,
    logins_per_ip: Option<Bucket>,
    /// Every password check of the node: bounds the Argon2 work that many
    /// addresses together can ask for.
    logins_global: Option<Bucket>,
    failed_auth: Option<Bucket>,
    /// IPs whose failed authentications used up their bucket, until when:
    /// their credentials are not checked until then, so the answers cannot
    /// tell a guesser that a guess was right.
    blocked: Mutex<HashMap<String, Instant>>,
}

/// Blocked IPs remembered at once; past this, a blocked IP's credentials
/// are checked again (each failure is still refused).
const MAX_BLOCKED: usize = 100_000;

/// The part of a client address one client usually holds whole: an IPv4
/// address as is (also when mapped into IPv6), an IPv6 address's /64.
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The bucket key of a client address (see [`client_prefix`]).
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(ip) => format!("ip:{}", client_prefix(ip)),
        Err(_) => format!("ip:{ip}"),
    }
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            read: Bucket::new(config.read_per_minute),
            write: Bucket::new(config.write_per_minute),
            execute: Bucket::new(config.execute_per_minute),
            logins: Bucket::new(config.login_per_minute),
            logins_per_ip: Bucket::new(config.login_per_minute.saturating_mul(3)),
            logins_global: Bucket::new(config.login_global_per_minute),
            failed_auth: Bucket::new(config.failed_auth_per_minute),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `class` from `key`'s bucket; `None` when the
    /// class is not limited.
    pub fn check(&self, class: Class, key: &str) -> Option<Standing> {
        let bucket = match class {
            Class::Read => self.read.as_ref(),
            Class::Write => self.write.as_ref(),
            Class::Execute => self.execute.as_ref(),
        }?;
        Some(bucket.check(key))
    }

    /// Takes a login attempt for `username` from `ip`; the refusal when
    /// the IP, the username from that IP, or the node has used its quota. A
    /// refused attempt is never checked, right password or not, or the
    /// answers would tell a guesser when they hit.
    pub fn login_attempt(&self, username: &str, ip: &str) -> Option<Standing> {
        let ip = ip_key(ip);
        // The narrowest first: an address spraying usernames must not use
        // up the node's quota with attempts its own would refuse.
        let checks = [
            (self.logins_per_ip.as_ref(), ip.clone()),
            (self.logins.as_ref(), format!("{ip} user:{username}")),
            (self.logins_global.as_ref(), "node".to_owned()),
        ];
        for (bucket, key) in checks {
            let Some(bucket) = bucket else { continue };
            let standing = bucket.check(&key);
            if standing.retry_after_secs.is_some() {
                return Some(standing);
            }
        }
        None
    }

    /// Whether `ip` is refused before its credential is looked at, having
    /// failed to authenticate too often; the refusal if so.
    pub fn auth_blocked(&self, ip: &str) -> Option<Standing> {
        let bucket = self.failed_auth.as_ref()?;
        let key = ip_key(ip);
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&key)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&key);
            return None;
        }
        Some(Standing {
            limit: bucket.per_minute,
            window_secs: 60,
            remaining: 0,
            reset_secs: ceil_secs(until - now),
            retry_after_secs: Some(ceil_secs(until - now).max(1)),
        })
    }

    /// Counts a credential from `ip` that did not authenticate; the refusal
    /// when that used up the IP's quota, after which it is blocked (see
    /// [`Self::auth_blocked`]) until the bucket grants another attempt.
    pub fn auth_failed(&self, ip: &str) -> Option<Standing> {
        let bucket = self.failed_auth.as_ref()?;
        let key = ip_key(ip);
        let standing = bucket.check(&key);
        let retry = standing.retry_after_secs?;
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() < MAX_BLOCKED {
            blocked.insert(key, Instant::now() + Duration::from_secs(retry));
        }
        Some(standing)
    }

    /// Forgets buckets that are full again, so keys that come once (IPs)
    /// do not pile up.
    pub fn forget_idle(&self) {
        for bucket in [
            &self.read,
            &self.write,
            &self.execute,
            &self.logins,
            &self.logins_per_ip,
            &self.logins_global,
            &self.failed_auth,
        ]
        .into_iter()
        .flatten()
        {
            bucket.limiter.retain_recent();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32) -> RateLimits {
        RateLimits::new(&RateLimitConfig {
            read_per_minute: per_minute,
            write_per_minute: 0,
            execute_per_minute: per_minute,
            login_per_minute: 2,
            login_global_per_minute: 7,
            failed_auth_per_minute: 3,
        })
    }

    #[test]
    fn a_bucket_empties_and_reports_its_state() {
        let limits = limits(3);
        let first = limits.check(Class::Read, "user:a").unwrap();
        assert_eq!(
            (first.limit, first.remaining, first.retry_after_secs),
            (3, 2, None)
        );
        assert_eq!(first.reset_secs, 20);
        limits.check(Class::Read, "user:a").unwrap();
        assert_eq!(limits.check(Class::Read, "user:a").unwrap().remaining, 0);
        let refused = limits.check(Class::Read, "user:a").unwrap();
        assert_eq!(refused.remaining, 0);
        let retry = refused.retry_after_secs.unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
        // Keys and classes are separate buckets; a class at 0 is off.
        assert_eq!(limits.check(Class::Read, "user:b").unwrap().remaining, 2);
        assert_eq!(limits.check(Class::Execute, "user:a").unwrap().remaining, 2);
        assert!(limits.check(Class::Write, "user:a").is_none());
    }

    #[test]
    fn logins_are_limited_per_ip_per_username_there_and_per_node() {
        let limits = limits(100);
        assert_eq!(limits.login_attempt("admin", "1.1.1.1"), None);
        assert_eq!(limits.login_attempt("admin", "1.1.1.1"), None);
        let refused = limits.login_attempt("admin", "1.1.1.1").unwrap();
        assert!(refused.retry_after_secs.is_some(), "username from this IP");
        // A guesser elsewhere has not locked the user out of another address.
        assert_eq!(limits.login_attempt("admin", "2.2.2.2"), None);
        // The IP may try other usernames, up to three times the quota.
        assert_eq!(limits.login_attempt("other", "1.1.1.1"), None);
        assert_eq!(limits.login_attempt("other", "1.1.1.1"), None);
        assert_eq!(limits.login_attempt("third", "1.1.1.1"), None);
        assert!(
            limits.login_attempt("fourth", "1.1.1.1").is_some(),
            "IP used up"
        );
        // Six of the node's seven checks are taken (refused attempts take
        // none): the next address gets the last one.
        assert_eq!(limits.login_attempt("a", "3.3.3.3"), None);
        assert!(
            limits.login_attempt("b", "4.4.4.4").is_some(),
            "node used up"
        );
        limits.forget_idle();
        assert!(
            limits.login_attempt("admin", "1.1.1.1").is_some(),
            "still limited"
        );
    }

    #[test]
    fn failed_authentication_blocks_the_ip_before_its_credentials_are_checked() {
        let limits = limits(100);
        assert_eq!(limits.auth_blocked("5.5.5.5"), None);
        for _ in 0..3 {
            assert_eq!(limits.auth_failed("5.5.5.5"), None);
        }
        assert_eq!(limits.auth_blocked("5.5.5.5"), None, "not blocked yet");
        let refused = limits.auth_failed("5.5.5.5").unwrap();
        assert!(refused.retry_after_secs.is_some());
        let blocked = limits.auth_blocked("5.5.5.5").unwrap();
        assert!((1..=20).contains(&blocked.retry_after_secs.unwrap()));
        assert_eq!(limits.auth_blocked("6.6.6.6"), None, "other IPs go on");
        limits.forget_idle();
        assert!(limits.auth_blocked("5.5.5.5").is_some(), "not yet expired");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            ip_key("2001:db8:1:2:aaaa::1"),
            ip_key("2001:db8:1:2:bbbb::2")
        );
        assert_ne!(ip_key("2001:db8:1:2::1"), ip_key("2001:db8:1:3::1"));
        assert_eq!(ip_key("::ffff:1.2.3.4"), ip_key("1.2.3.4"));
        assert_eq!(ip_key("1.2.3.4"), "ip:1.2.3.4");
        let limits = limits(100);
        for i in 0..3 {
            limits.auth_failed(&format!("2001:db8::{i}"));
        }
        assert!(limits.auth_failed("2001:db8::ffff").is_some());
    }
}

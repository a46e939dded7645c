//! Rate limits (API.md "Rate limiting"): GCRA buckets from governor, one
//! keyed limiter per route class, keyed by principal (or client IP where
//! there is none), and the brute-force guard on logins, which counts per
//! username and per IP apart.

use std::num::NonZeroU32;
use std::time::Duration;

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
    /// Requests per minute (the bucket's size).
    pub limit: u32,
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
                    remaining,
                    reset_secs: ceil_secs(interval * empty),
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Standing {
                    limit: self.per_minute,
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
    /// guesses through before the first one is counted.
    logins: Option<Bucket>,
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
    /// either has used its quota. A refused attempt is never checked, right
    /// password or not, or the answers would tell a guesser when they hit.
    pub fn login_attempt(&self, username: &str, ip: &str) -> Option<Standing> {
        let bucket = self.logins.as_ref()?;
        // The IP first: one address spraying usernames must not use up
        // their buckets too.
        for key in [format!("ip:{ip}"), format!("user:{username}")] {
            let standing = bucket.check(&key);
            if standing.retry_after_secs.is_some() {
                return Some(standing);
            }
        }
        None
    }

    /// Forgets buckets that are full again, so keys that come once (IPs)
    /// do not pile up.
    pub fn forget_idle(&self) {
        for bucket in [&self.read, &self.write, &self.execute, &self.logins]
            .into_iter()
            .flatten()
        {
            bucket.limiter.retain_recent();
        }
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
    fn logins_are_limited_per_username_and_per_ip_apart() {
        let limits = limits(100);
        assert_eq!(limits.login_attempt("admin", "1.1.1.1"), None);
        assert_eq!(limits.login_attempt("admin", "2.2.2.2"), None);
        let refused = limits.login_attempt("admin", "3.3.3.3").unwrap();
        assert!(refused.retry_after_secs.is_some(), "username used up");
        assert_eq!(limits.login_attempt("other", "1.1.1.1"), None);
        assert!(
            limits.login_attempt("third", "1.1.1.1").is_some(),
            "IP used up"
        );
        // A refusal by IP does not spend the username's quota.
        assert_eq!(limits.login_attempt("fresh", "4.4.4.4"), None);
        limits.forget_idle();
        assert!(
            limits.login_attempt("admin", "5.5.5.5").is_some(),
            "still limited"
        );
    }
}

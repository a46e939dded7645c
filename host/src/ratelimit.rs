//! Rate limits (API.md "Rate limiting"): GCRA buckets from governor, one
//! keyed limiter per route class, keyed by principal (or client IP where
//! there is none), and the brute-force guard on failed logins, which counts
//! per username and per IP apart.

use std::collections::HashMap;
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
    failed_logins: Option<Bucket>,
    /// Login keys (`user:…`, `ip:…`) refused until the given time. Every
    /// attempt is refused while blocked, right password or not, or the
    /// answers would tell a guesser when they hit.
    blocked: Mutex<HashMap<String, Instant>>,
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
            failed_logins: Bucket::new(config.login_per_minute),
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

    fn login_keys(username: &str, ip: &str) -> [String; 2] {
        [format!("user:{username}"), format!("ip:{ip}")]
    }

    /// Seconds a login attempt for `username` from `ip` must wait, if it must.
    pub fn login_blocked(&self, username: &str, ip: &str) -> Option<u64> {
        let now = Instant::now();
        let blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::login_keys(username, ip)
            .iter()
            .filter_map(|key| blocked.get(key))
            .filter(|until| **until > now)
            .map(|until| ceil_secs(until.duration_since(now)).max(1))
            .max()
    }

    /// Counts a failed login against the username and the IP.
    pub fn login_failed(&self, username: &str, ip: &str) {
        let Some(bucket) = &self.failed_logins else {
            return;
        };
        for key in Self::login_keys(username, ip) {
            if let Some(wait) = bucket.check(&key).retry_after_secs {
                let until = Instant::now() + Duration::from_secs(wait);
                self.blocked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, until);
            }
        }
    }

    /// Forgets buckets that are full again, so keys that come once (IPs)
    /// do not pile up.
    pub fn forget_idle(&self) {
        for bucket in [&self.read, &self.write, &self.execute, &self.failed_logins]
            .into_iter()
            .flatten()
        {
            bucket.limiter.retain_recent();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn failed_logins_block_the_username_and_the_ip_apart() {
        let limits = limits(100);
        assert_eq!(limits.login_blocked("admin", "1.1.1.1"), None);
        for _ in 0..3 {
            limits.login_failed("admin", "1.1.1.1");
        }
        assert!(
            limits.login_blocked("admin", "2.2.2.2").is_some(),
            "username blocked"
        );
        assert!(
            limits.login_blocked("other", "1.1.1.1").is_some(),
            "IP blocked"
        );
        assert_eq!(limits.login_blocked("other", "2.2.2.2"), None);
        limits.forget_idle();
        assert!(
            limits.login_blocked("admin", "3.3.3.3").is_some(),
            "still blocked"
        );
    }
}

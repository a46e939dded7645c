//! Usage rollups: per hour and per day (of creation), for every script
//! together and for each script, what the executions that ended came to —
//! counts per status, fuel, a histogram of durations. Added to as each
//! execution becomes final, so usage analytics read a row per hour or day
//! (and per script, for the busiest scripts), however many executions there
//! were; they outlive the execution records retention removes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ExecutionRecord, ExecutionStatus, StoreError};

/// The length of the time buckets rollups are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub const ALL: [Self; 2] = [Self::Hour, Self::Day];

    pub fn millis(self) -> u64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    /// The bucket `time` (RFC 3339) falls in, by name: `2026-12-04T13` or
    /// `2026-12-04`; names sort as their times do.
    pub fn bucket(self, time: &str) -> &str {
        let len = match self {
            Self::Hour => 13,
            Self::Day => 10,
        };
        time.get(..len).unwrap_or(time)
    }

    /// The bucket `ms` (Unix ms) falls in.
    pub fn bucket_at(self, ms: u64) -> String {
        self.bucket(&crate::time_of_ms(ms)).to_owned()
    }
}

/// Which rollups a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every execution of an organization together: a row per bucket.
    Total(&'a str),
    /// Each script's of an organization apart: a row per bucket and script
    /// that ran (`None`: the ad-hoc runs).
    PerScript(&'a str),
    /// One script's of an organization (`None`: its ad-hoc runs): a row per
    /// bucket.
    Script(&'a str, Option<&'a str>),
}

/// Durations in buckets of 1/16 of a power of two: every value from 0 to
/// 15 ms exactly, above that within 6.25 %. At most ~1 000 buckets, and as
/// many as there were distinct magnitudes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    #[serde(default)]
    buckets: BTreeMap<u16, u64>,
    #[serde(default)]
    max: u64,
}

const SUB_BUCKETS: u64 = 16;

fn bucket_of(ms: u64) -> u16 {
    if ms < SUB_BUCKETS {
        return ms as u16;
    }
    let magnitude = 63 - u64::from(ms.leading_zeros()); // >= 4
    let shift = magnitude - 4;
    let mantissa = (ms >> shift) - SUB_BUCKETS; // 0..16
    ((shift + 1) * SUB_BUCKETS + mantissa) as u16
}

/// The smallest duration in `bucket`.
fn bucket_floor(bucket: u16) -> u64 {
    let bucket = u64::from(bucket);
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    (SUB_BUCKETS + bucket % SUB_BUCKETS) << shift
}

impl Durations {
    pub fn add(&mut self, ms: u64) {
        *self.buckets.entry(bucket_of(ms)).or_default() += 1;
        self.max = self.max.max(ms);
    }

    pub fn merge(&mut self, other: &Self) {
        for (bucket, n) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += n;
        }
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    pub fn max(&self) -> Option<u64> {
        (self.count() > 0).then_some(self.max)
    }

    /// The nearest-rank percentile `p` (0..=1), as the lowest duration of
    /// its bucket (never above the largest seen).
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((p * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_floor(*bucket).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// What the executions of one hour and script that ended came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRollup {
    #[serde(default)]
    pub by_status: BTreeMap<ExecutionStatus, u64>,
    #[serde(default)]
    pub fuel_total: u64,
    /// Executions that reported fuel.
    #[serde(default)]
    pub fueled: u64,
    #[serde(default)]
    pub durations: Durations,
}

impl UsageRollup {
    pub fn add(&mut self, record: &ExecutionRecord) {
        *self.by_status.entry(record.status).or_default() += 1;
        if let Some(fuel) = record.fuel_consumed {
            self.fuel_total = self.fuel_total.saturating_add(fuel);
            self.fueled += 1;
        }
        if let Some(ms) = record.duration_ms {
            self.durations.add(ms);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.fuel_total = self.fuel_total.saturating_add(other.fuel_total);
        self.fueled += other.fueled;
        self.durations.merge(&other.durations);
    }

    pub fn executions(&self) -> u64 {
        self.by_status.values().sum()
    }

    pub fn failures(&self) -> u64 {
        [ExecutionStatus::Failed, ExecutionStatus::Timeout]
            .iter()
            .filter_map(|s| self.by_status.get(s))
            .sum()
    }
}

/// One rollup row: its bucket ([`Grain::bucket`]) and script (`None`:
/// ad-hoc runs, or every script for [`Scope::Total`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub bucket: String,
    pub script_id: Option<String>,
    pub usage: UsageRollup,
}

#[async_trait::async_trait]
pub trait UsageStore {
    /// The rollups of `scope` in the `grain` buckets from the one `from_ms`
    /// falls in to the one `to_ms` falls in (Unix ms), with what ended
    /// since the last flush; in bucket order.
    async fn usage(
        &self,
        grain: Grain,
        from_ms: u64,
        to_ms: u64,
        scope: Scope<'_>,
    ) -> Result<Vec<UsageRow>, StoreError>;
    /// Removes up to `limit` rollups of buckets that ended before
    /// `before_ms`; how many.
    async fn remove_usage_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_small_values_exactly_and_large_ones_within_a_sixteenth() {
        for ms in (0..5000).chain([u64::MAX / 3, u64::MAX]) {
            let floor = bucket_floor(bucket_of(ms));
            assert!(floor <= ms, "{ms}: {floor}");
            assert!(ms - floor <= ms / 16, "{ms}: {floor}");
            if ms < 16 {
                assert_eq!(floor, ms);
            }
        }
        let mut last = 0;
        for ms in 0..100_000 {
            let bucket = bucket_of(ms);
            assert!(bucket >= last, "buckets follow the values");
            last = bucket;
        }
    }

    #[test]
    fn percentiles_come_from_the_buckets_and_merge() {
        let mut a = Durations::default();
        let mut b = Durations::default();
        for ms in 1..=50 {
            a.add(ms);
        }
        for ms in 51..=100 {
            b.add(ms);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.max(), Some(100));
        let p50 = a.percentile(0.5).unwrap();
        assert!((47..=50).contains(&p50), "{p50}");
        let p99 = a.percentile(0.99).unwrap();
        assert!((93..=99).contains(&p99), "{p99}");
        assert_eq!(Durations::default().percentile(0.5), None);
        let mut one = Durations::default();
        one.add(7);
        assert_eq!(one.percentile(0.99), Some(7));
    }
}

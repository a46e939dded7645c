//! Organizations' quotas (`store/orgs.rs`: a tier's, with an
//! organization's own over them), checked before the work they bound:
//!
//! - requests per clock hour: counted here, in memory, per organization (a
//!   restart starts the hour's count again); on a store several nodes
//!   share, in the store (`store/shared_counts.rs`), so the quota holds
//!   across the nodes;
//! - executions and fuel per day: counted in memory per organization, from
//!   the day's usage rollup (what ended, durable) plus the executions queued
//!   or running when the day's count starts (so a restart forgets nothing),
//!   then one more for each execution admitted (on a shared store, the count
//!   is the store's, started the same way); fuel is read from the rollup
//!   (which every node adds to) again at most once a second, and runs
//!   already going may pass it by their own fuel limits;
//! - concurrent executions: the queue holds the organization's runs past
//!   it (they wait, not fail); on a shared store the claim counts its runs
//!   on every node (`ExecutionStore::claim_execution`);
//! - stored bytes, scripts, schedules, webhooks, API keys: counted from the
//!   records when one more would be made.
//!
//! Going over is [`Exceeded`]: the API's `429 QUOTA_EXCEEDED` with
//! `Retry-After` (the end of the window, or, for what is held rather than
//! spent, an hour: it frees when something is deleted or the tier rises).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::jobs::Jobs;
use crate::store::orgs::{InOrg as _, QuotaLimits};
use crate::store::shared_counts::{SharedCounts, Taken};
use crate::store::usage::{Grain, Scope};
use crate::store::{Store, StoreError};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    RequestsPerHour,
    ExecutionsPerDay,
    FuelPerDay,
    ConcurrentExecutions,
    StoredBytes,
    Scripts,
    Schedules,
    Webhooks,
    ApiKeys,
}

impl Quota {
    pub const ALL: [Quota; 9] = [
        Quota::RequestsPerHour,
        Quota::ExecutionsPerDay,
        Quota::FuelPerDay,
        Quota::ConcurrentExecutions,
        Quota::StoredBytes,
        Quota::Scripts,
        Quota::Schedules,
        Quota::Webhooks,
        Quota::ApiKeys,
    ];

    /// Its name, as `QuotaLimits` and `/metrics` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::RequestsPerHour => "requests_per_hour",
            Quota::ExecutionsPerDay => "executions_per_day",
            Quota::FuelPerDay => "fuel_per_day",
            Quota::ConcurrentExecutions => "concurrent_executions",
            Quota::StoredBytes => "stored_bytes",
            Quota::Scripts => "scripts",
            Quota::Schedules => "schedules",
            Quota::Webhooks => "webhooks",
            Quota::ApiKeys => "api_keys",
        }
    }

    pub fn of(self, limits: &QuotaLimits) -> Option<u64> {
        match self {
            Quota::RequestsPerHour => limits.requests_per_hour,
            Quota::ExecutionsPerDay => limits.executions_per_day,
            Quota::FuelPerDay => limits.fuel_per_day,
            Quota::ConcurrentExecutions => limits.concurrent_executions,
            Quota::StoredBytes => limits.stored_bytes,
            Quota::Scripts => limits.scripts,
            Quota::Schedules => limits.schedules,
            Quota::Webhooks => limits.webhooks,
            Quota::ApiKeys => limits.api_keys,
        }
    }

    /// The window it is counted over, in ms (`None`: what is held now).
    fn window_ms(self) -> Option<u64> {
        match self {
            Quota::RequestsPerHour => Some(HOUR_MS),
            Quota::ExecutionsPerDay | Quota::FuelPerDay => Some(DAY_MS),
            _ => None,
        }
    }

    /// When the window of `now_ms` ends (Unix ms), for a windowed quota.
    pub fn resets_at_ms(self, now_ms: u64) -> Option<u64> {
        self.window_ms().map(|w| now_ms - now_ms % w + w)
    }
}

/// A quota an organization has spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the organization's {} quota of {limit} is spent ({used} used); retry in {retry_after_secs} s, \
     or ask a node operator for a higher tier",
    quota.as_str()
)]
pub struct Exceeded {
    pub quota: Quota,
    pub limit: u64,
    pub used: u64,
    pub retry_after_secs: u64,
}

impl Exceeded {
    /// `quota` of `limit` spent (`used`) at `now_ms`: retry when its window
    /// ends.
    fn at(quota: Quota, limit: u64, used: u64, now_ms: u64) -> Self {
        Self {
            quota,
            limit,
            used,
            retry_after_secs: retry_after(quota, now_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Exceeded(#[from] Exceeded),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One quota's standing, for `/v1/organizations/current` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use {
    pub quota: Quota,
    pub limit: Option<u64>,
    pub used: u64,
    /// When the window ends (Unix ms), for a windowed quota.
    pub resets_at_ms: Option<u64>,
}

/// The hour's request count of an organization.
#[derive(Debug, Clone, Copy)]
struct Hour {
    start_ms: u64,
    used: u64,
}

pub struct Quotas {
    store: Arc<dyn Store>,
    jobs: Arc<Jobs>,
    /// Each organization's limits, read from its record on first use and
    /// forgotten when it changes (bounded by the organizations).
    limits: Mutex<HashMap<String, (QuotaLimits, std::time::Instant)>>,
    /// Requests of the current hour per organization (bounded by the
    /// organizations: an entry is made only for one that exists).
    requests: Mutex<HashMap<String, Hour>>,
    /// The day's executions and fuel per organization with a daily quota
    /// (bounded by the organizations).
    days: Mutex<HashMap<String, Day>>,
}

/// An organization's day as admission counts it.
#[derive(Debug, Clone, Copy)]
struct Day {
    start_ms: u64,
    executions: u64,
    fuel: u64,
    /// When `fuel` was read from the rollup.
    fuel_read_ms: u64,
}

/// How stale the fuel a day's admission reads may be.
const FUEL_REREAD_MS: u64 = 1_000;

/// How long an organization's limits stand before they are read again, on
/// a store nodes can share (PostgreSQL: a change made through another
/// node).
const LIMITS_REREAD: std::time::Duration = std::time::Duration::from_secs(5);

/// An execution admitted against its organization's daily quotas, counted
/// as the day's; dropped without [`Admitted::keep`] (nothing was stored of
/// it), it is taken off the count again.
#[must_use = "an admitted execution not kept is taken off the count"]
pub struct Admitted<'a> {
    quotas: &'a Quotas,
    /// The organization and day it was counted in, and whether in the
    /// store's shared count; `None` when the organization has no daily
    /// quota, or once kept.
    counted: Option<(String, u64, Counted)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// In this node's memory (`Quotas::days`).
    Here,
    /// In the store's count every node shares.
    Shared,
}

impl Admitted<'_> {
    /// It counts as the day's for good (its record is stored).
    pub fn keep(mut self) {
        self.counted = None;
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        match self.counted.take() {
            Some((org, start_ms, Counted::Here)) => {
                if let Some(day) = self.quotas.days().get_mut(&org)
                    && day.start_ms == start_ms
                {
                    day.executions = day.executions.saturating_sub(1);
                }
            }
            Some((org, start_ms, Counted::Shared)) => {
                let store = self.quotas.store.clone();
                let give_back = async move {
                    if let Some(shared) = store.shared_counts() {
                        let quota = Quota::ExecutionsPerDay.as_str();
                        if let Err(e) = shared.give_back_use(&org, quota, start_ms).await {
                            tracing::warn!(error = %e, org, "an unused admission was not given back");
                        }
                    }
                };
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(give_back);
                }
            }
            None => {}
        }
    }
}

fn retry_after(quota: Quota, now_ms: u64) -> u64 {
    quota
        .resets_at_ms(now_ms)
        .map_or(3_600, |end| (end - now_ms).div_ceil(1000).max(1))
}

impl Quotas {
    pub fn new(store: Arc<dyn Store>, jobs: Arc<Jobs>) -> Self {
        Self {
            store,
            jobs,
            limits: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            days: Mutex::new(HashMap::new()),
        }
    }

    /// The limits of `org`: its record's (none for one that does not exist).
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    pub async fn limits(&self, org: &str) -> Result<QuotaLimits, StoreError> {
        let shared = self.store.shared_counts().is_some();
        let cached = self.cached().get(org).copied();
        if let Some((limits, read_at)) = cached
            && (!shared || read_at.elapsed() < LIMITS_REREAD)
        {
            return Ok(limits);
        }
        let Some(record) = self.store.org(org).await? else {
            return Ok(QuotaLimits::default());
        };
        let limits = record.limits();
        self.cached()
            .insert(org.to_owned(), (limits, std::time::Instant::now()));
        if shared {
            // Made or changed through another node, maybe.
            self.jobs.set_org_cap(org, limits.running_cap());
        }
        Ok(limits)
    }

    fn cached(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (QuotaLimits, std::time::Instant)>> {
        self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads `org`'s limits again (its tier or quotas changed, or it was
    /// deleted) and tells the queue its running bound.
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    pub async fn changed(&self, org: &str) -> Result<(), StoreError> {
        let before = self.cached().remove(org).map(|(limits, _)| limits);
        // Counted afresh: while it had no daily quota nothing was counted.
        self.days().remove(org);
        let gone = self.store.org(org).await?.is_none();
        if gone {
            // Deleted: nothing of it is kept.
            self.requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(org);
        }
        let limits = self.limits(org).await?;
        // The shared counts go on through a change of a limit (a restart, a
        // rename or a raise must not give an hour's requests again); they
        // start again only where nothing was counted: a quota just set.
        let newly_counted = |quota: Quota| {
            before.is_some_and(|before| quota.of(&before).is_none()) && quota.of(&limits).is_some()
        };
        if let Some(shared) = self.store.shared_counts()
            && (gone
                || newly_counted(Quota::RequestsPerHour)
                || newly_counted(Quota::ExecutionsPerDay))
        {
            shared.forget_uses(org).await?;
        }
        self.jobs.set_org_cap(org, limits.running_cap());
        Ok(())
    }

    /// One more use of windowed `quota` by `org` at `now_ms` under `limit`,
    /// in the count every node shares: the uses now, or (refused) as they
    /// stand. A window not counted yet starts as this node's memory would.
    async fn take_shared(
        &self,
        shared: &dyn SharedCounts,
        org: &str,
        quota: Quota,
        now_ms: u64,
        limit: u64,
    ) -> Result<Result<u64, u64>, StoreError> {
        let window = now_ms - now_ms % quota.window_ms().unwrap_or(DAY_MS);
        // Uncounted, started, taken; a count forgotten meanwhile (a change
        // of the organization) once more.
        for _ in 0..3 {
            match shared.take_use(org, quota.as_str(), window, limit).await? {
                Taken::Used(used) => return Ok(Ok(used)),
                Taken::Refused(used) => return Ok(Err(used)),
                Taken::Uncounted => {
                    let start = self.uses_before_counting(org, quota, now_ms).await?;
                    shared
                        .start_uses(org, quota.as_str(), window, start)
                        .await?;
                }
            }
        }
        Err(StoreError::Backend(format!(
            "the count of {} keeps going missing",
            quota.as_str()
        )))
    }

    /// Where a window's shared count starts: no requests; the executions
    /// that ended that day (the rollup every node adds to) and those queued
    /// or running here.
    async fn uses_before_counting(
        &self,
        org: &str,
        quota: Quota,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        if quota != Quota::ExecutionsPerDay {
            return Ok(0);
        }
        let (ended, _) = self.rollup_today(org, now_ms).await?;
        let live = u64::try_from(self.jobs.live_of(org)).unwrap_or(u64::MAX);
        Ok(ended + live)
    }

    /// The uses of windowed `quota` by `org` at `now_ms` in the shared
    /// count (where it would start, if it has none yet).
    async fn shared_uses(
        &self,
        shared: &dyn SharedCounts,
        org: &str,
        quota: Quota,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let window = now_ms - now_ms % quota.window_ms().unwrap_or(DAY_MS);
        match shared.uses(org, quota.as_str(), window).await? {
            Some(used) => Ok(used),
            None => self.uses_before_counting(org, quota, now_ms).await,
        }
    }

    /// Tells the queue every organization's running bound (at start).
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    pub async fn load(&self) -> Result<(), StoreError> {
        for org in self.store.orgs().await? {
            self.changed(&org.id).await?;
        }
        Ok(())
    }

    /// Counts one request of `org` in its hour; the hour's standing when
    /// the organization has an hourly quota.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exceeded`] when the hour's requests are spent (this
    /// one is not counted).
    pub async fn request(&self, org: &str, now_ms: u64) -> Result<Option<Use>, QuotaError> {
        let Some(limit) = self.limits(org).await?.requests_per_hour else {
            return Ok(None);
        };
        let start_ms = now_ms - now_ms % HOUR_MS;
        if let Some(shared) = self.store.shared_counts() {
            let quota = Quota::RequestsPerHour;
            return match self.take_shared(shared, org, quota, now_ms, limit).await? {
                Ok(used) => Ok(Some(Use {
                    quota,
                    limit: Some(limit),
                    used,
                    resets_at_ms: Some(start_ms + HOUR_MS),
                })),
                Err(used) => Err(Exceeded::at(quota, limit, used, now_ms).into()),
            };
        }
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        // No allocation but the organization's first request.
        if !requests.contains_key(org) {
            requests.insert(org.to_owned(), Hour { start_ms, used: 0 });
        }
        let Some(hour) = requests.get_mut(org) else {
            return Ok(None);
        };
        if hour.start_ms != start_ms {
            *hour = Hour { start_ms, used: 0 };
        }
        if hour.used >= limit {
            return Err(Exceeded::at(Quota::RequestsPerHour, limit, hour.used, now_ms).into());
        }
        hour.used += 1;
        Ok(Some(Use {
            quota: Quota::RequestsPerHour,
            limit: Some(limit),
            used: hour.used,
            resets_at_ms: Some(start_ms + HOUR_MS),
        }))
    }

    /// Whether `org` may start one more execution today: its executions
    /// and fuel of the day are under their quotas. The execution is counted
    /// at once, so requests at the same moment cannot all pass the last
    /// place; [`Admitted::keep`] it once its record is stored.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exceeded`] naming the quota spent.
    pub async fn admit_execution(
        &self,
        org: &str,
        now_ms: u64,
    ) -> Result<Admitted<'_>, QuotaError> {
        let limits = self.limits(org).await?;
        if limits.executions_per_day.is_none() && limits.fuel_per_day.is_none() {
            return Ok(Admitted {
                quotas: self,
                counted: None,
            });
        }
        // Fuel only matters with its quota; then a second old will do.
        let fuel_age = limits.fuel_per_day.map(|_| FUEL_REREAD_MS);
        if let Some(shared) = self.store.shared_counts() {
            // Fuel from the rollup, then the executions in the store's count.
            let fuel = {
                let (days, _) = self.day(org, now_ms, fuel_age).await?;
                days.get(org).map_or(0, |day| day.fuel)
            };
            let quota = Quota::FuelPerDay;
            if let Some(limit) = quota.of(&limits)
                && fuel >= limit
            {
                return Err(Exceeded::at(quota, limit, fuel, now_ms).into());
            }
            let quota = Quota::ExecutionsPerDay;
            let Some(limit) = quota.of(&limits) else {
                return Ok(Admitted {
                    quotas: self,
                    counted: None,
                });
            };
            return match self.take_shared(shared, org, quota, now_ms, limit).await? {
                Ok(_) => Ok(Admitted {
                    quotas: self,
                    counted: Some((org.to_owned(), now_ms - now_ms % DAY_MS, Counted::Shared)),
                }),
                Err(used) => Err(Exceeded::at(quota, limit, used, now_ms).into()),
            };
        }
        let (mut days, _) = self.day(org, now_ms, fuel_age).await?;
        let Some(day) = days.get_mut(org) else {
            return Err(StoreError::Backend("a day's count went missing".into()).into());
        };
        for (quota, used) in [
            (Quota::ExecutionsPerDay, day.executions),
            (Quota::FuelPerDay, day.fuel),
        ] {
            if let Some(limit) = quota.of(&limits)
                && used >= limit
            {
                return Err(Exceeded::at(quota, limit, used, now_ms).into());
            }
        }
        day.executions += 1;
        Ok(Admitted {
            quotas: self,
            counted: Some((org.to_owned(), day.start_ms, Counted::Here)),
        })
    }

    fn days(&self) -> std::sync::MutexGuard<'_, HashMap<String, Day>> {
        self.days.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `org`'s count of the day `now_ms` falls in, locked. The store is
    /// read before the lock is taken (a rollup read waits for a flush's
    /// merge, and the lock is every organization's): when the day has no
    /// count yet, or its fuel is older than `fuel_age` ms (`None`: as it is).
    /// A count that starts is what ended that day; on the first one since
    /// the node started, also what is queued or running now (accepted
    /// before, and not yet in any rollup). At a new day, runs still queued
    /// from the last are that day's, as the rollup files them.
    async fn day(
        &self,
        org: &str,
        now_ms: u64,
        fuel_age: Option<u64>,
    ) -> Result<(std::sync::MutexGuard<'_, HashMap<String, Day>>, u64), StoreError> {
        let start_ms = now_ms - now_ms % DAY_MS;
        let stale = self.days().get(org).is_none_or(|day| {
            day.start_ms != start_ms
                || fuel_age.is_some_and(|age| now_ms.saturating_sub(day.fuel_read_ms) >= age)
        });
        let mut read = if stale {
            Some(self.rollup_today(org, now_ms).await?)
        } else {
            None
        };
        loop {
            // The lock in a scope that ends before the store is awaited.
            {
                let mut days = self.days();
                match (days.get_mut(org), read) {
                    (Some(day), Some((ended, fuel))) if day.start_ms != start_ms => {
                        *day = Day {
                            start_ms,
                            executions: ended,
                            fuel,
                            fuel_read_ms: now_ms,
                        };
                    }
                    (Some(day), Some((_, fuel))) => {
                        day.fuel = fuel;
                        day.fuel_read_ms = now_ms;
                    }
                    (Some(_), None) => {}
                    // Forgotten meanwhile (its quota changed): read, then lock again.
                    (None, None) => {}
                    (None, Some((ended, fuel))) => {
                        let live = u64::try_from(self.jobs.live_of(org)).unwrap_or(u64::MAX);
                        days.insert(
                            org.to_owned(),
                            Day {
                                start_ms,
                                executions: ended + live,
                                fuel,
                                fuel_read_ms: now_ms,
                            },
                        );
                    }
                }
                if days.contains_key(org) {
                    return Ok((days, start_ms));
                }
            }
            read = Some(self.rollup_today(org, now_ms).await?);
        }
    }

    /// The executions that ended today and the fuel they burned, from the
    /// day's usage rollup.
    async fn rollup_today(&self, org: &str, now_ms: u64) -> Result<(u64, u64), StoreError> {
        let rows = self
            .store
            .usage(Grain::Day, now_ms, now_ms, Scope::Total(org))
            .await?;
        Ok(rows.iter().fold((0, 0), |(n, f), row| {
            (n + row.usage.executions(), f + row.usage.fuel_total)
        }))
    }

    /// The day's executions and fuel of `org`: its admission's count when
    /// it has a daily quota, else read from the store.
    async fn today(&self, org: &str, now_ms: u64) -> Result<(u64, u64), StoreError> {
        let limits = self.limits(org).await?;
        if let Some(shared) = self.store.shared_counts()
            && limits.executions_per_day.is_some()
        {
            let quota = Quota::ExecutionsPerDay;
            let executions = self.shared_uses(shared, org, quota, now_ms).await?;
            let (_, fuel) = self.rollup_today(org, now_ms).await?;
            return Ok((executions, fuel));
        }
        if limits.executions_per_day.is_none() && limits.fuel_per_day.is_none() {
            let (ended, fuel) = self.rollup_today(org, now_ms).await?;
            let live = u64::try_from(self.jobs.live_of(org)).unwrap_or(u64::MAX);
            return Ok((ended + live, fuel));
        }
        // What is reported is the fuel now.
        let (days, _) = self.day(org, now_ms, Some(0)).await?;
        Ok(days
            .get(org)
            .map_or((0, 0), |day| (day.executions, day.fuel)))
    }

    /// Whether `org` may hold `adding` more of `quota`, having `held`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exceeded`] when it would hold more than its quota.
    pub async fn check_held(
        &self,
        org: &str,
        quota: Quota,
        held: u64,
        adding: u64,
    ) -> Result<(), QuotaError> {
        match quota.of(&self.limits(org).await?) {
            Some(limit) if held.saturating_add(adding) > limit => {
                Err(Exceeded::at(quota, limit, held, crate::now_ms()).into())
            }
            _ => Ok(()),
        }
    }

    /// Whether `org` may hold `adding` more of `quota` than it does now
    /// (counted only when it has that quota).
    ///
    /// # Errors
    ///
    /// [`QuotaError::Exceeded`] when it would hold more than its quota.
    pub async fn allow_more(&self, org: &str, quota: Quota, adding: u64) -> Result<(), QuotaError> {
        if quota.of(&self.limits(org).await?).is_none() {
            return Ok(());
        }
        let held = self.held(org, quota).await?;
        self.check_held(org, quota, held, adding).await
    }

    /// What `org` holds of each quota counted from records: its scripts,
    /// schedules, webhooks, unexpired API keys, and stored bytes (every
    /// kept version of its scripts, and their key-value data).
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    pub async fn held(&self, org: &str, quota: Quota) -> Result<u64, StoreError> {
        let store = &self.store;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok(match quota {
            Quota::Scripts => count(
                store
                    .scripts()
                    .await?
                    .iter()
                    .filter(|s| s.org() == org)
                    .count(),
            ),
            Quota::Schedules => count(
                store
                    .schedules()
                    .await?
                    .iter()
                    .filter(|s| s.org() == org)
                    .count(),
            ),
            Quota::Webhooks => count(
                store
                    .webhooks()
                    .await?
                    .iter()
                    .filter(|w| w.org() == org)
                    .count(),
            ),
            Quota::ApiKeys => {
                let now = crate::now_ms();
                count(
                    store
                        .api_keys()
                        .await?
                        .iter()
                        .filter(|k| k.org() == org && k.expires_ms.is_none_or(|e| e > now))
                        .count(),
                )
            }
            Quota::StoredBytes => {
                let mut bytes = 0u64;
                for script in store.scripts().await?.iter().filter(|s| s.org() == org) {
                    for version in store.script_versions(&script.id).await? {
                        bytes = bytes.saturating_add(version.size_bytes);
                    }
                    for (key, value) in store.kv_entries(&script.id).await? {
                        bytes = bytes.saturating_add((key.len() + value.len()) as u64);
                    }
                }
                bytes
            }
            Quota::ConcurrentExecutions => count(self.jobs.live_of(org)),
            Quota::RequestsPerHour => {
                let now = crate::now_ms();
                if let Some(shared) = store.shared_counts() {
                    return self.shared_uses(shared, org, quota, now).await;
                }
                self.requests
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(org)
                    .filter(|h| h.start_ms == now - now % HOUR_MS)
                    .map_or(0, |h| h.used)
            }
            Quota::ExecutionsPerDay => self.today(org, crate::now_ms()).await?.0,
            Quota::FuelPerDay => self.today(org, crate::now_ms()).await?.1,
        })
    }

    /// Every quota of `org`: its limit, what is used, when it resets.
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    pub async fn standing(&self, org: &str) -> Result<Vec<Use>, StoreError> {
        let limits = self.limits(org).await?;
        let now = crate::now_ms();
        let mut standing = Vec::with_capacity(Quota::ALL.len());
        for quota in Quota::ALL {
            standing.push(Use {
                quota,
                limit: quota.of(&limits),
                used: self.held(org, quota).await?,
                resets_at_ms: quota.resets_at_ms(now),
            });
        }
        Ok(standing)
    }

    /// Every organization's windowed and running quotas and its counts of
    /// records, each family read once for all (stored bytes, which would
    /// read every version, are left to `/v1/organizations/current`).
    async fn all_standing(
        &self,
    ) -> Result<Vec<(String, &'static str, Option<u64>, u64)>, StoreError> {
        let orgs = self.store.orgs().await?;
        let mut held: HashMap<(String, Quota), u64> = HashMap::new();
        let mut count = |org: &str, quota| {
            *held.entry((org.to_owned(), quota)).or_default() += 1;
        };
        for script in self.store.scripts().await? {
            count(script.org(), Quota::Scripts);
        }
        for schedule in self.store.schedules().await? {
            count(schedule.org(), Quota::Schedules);
        }
        for webhook in self.store.webhooks().await? {
            count(webhook.org(), Quota::Webhooks);
        }
        let now = crate::now_ms();
        for key in self.store.api_keys().await? {
            if key.expires_ms.is_none_or(|e| e > now) {
                count(key.org(), Quota::ApiKeys);
            }
        }
        let mut standing = Vec::new();
        for org in orgs {
            let limits = self.limits(&org.id).await?;
            let (executions, fuel) = self.today(&org.id, now).await?;
            for quota in Quota::ALL {
                let used = match quota {
                    Quota::StoredBytes => continue,
                    Quota::ExecutionsPerDay => executions,
                    Quota::FuelPerDay => fuel,
                    Quota::RequestsPerHour | Quota::ConcurrentExecutions => {
                        self.held(&org.id, quota).await?
                    }
                    counted => held.get(&(org.id.clone(), counted)).copied().unwrap_or(0),
                };
                standing.push((org.id.clone(), quota.as_str(), quota.of(&limits), used));
            }
        }
        Ok(standing)
    }
}

impl crate::metrics::OrgQuotaLoad for Quotas {
    /// Called by `/metrics`' render, which runs on a blocking thread of the
    /// runtime: the store is asked from there.
    fn quota_standing(&self) -> Vec<(String, &'static str, Option<u64>, u64)> {
        let read = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.block_on(self.all_standing()),
            Err(e) => Err(StoreError::Backend(format!("no runtime to read with: {e}"))),
        };
        read.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the quotas for /metrics");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use crate::store::orgs::{OrgRecord, Tier};

    async fn quotas(limits: QuotaLimits) -> (Quotas, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
        let mut org = OrgRecord::default_org("2026-01-01T00:00:00.000Z");
        org.id = "acme".into();
        org.name = "acme".into();
        org.tier = Tier::Custom;
        org.quotas = limits;
        store.create_org(&org).await.unwrap();
        let metrics = crate::metrics::Metrics::new();
        let jobs = Jobs::new(
            1,
            10,
            crate::jobs::QueueShare::whole(10),
            metrics.executions(),
        );
        (Quotas::new(store, jobs), dir)
    }

    #[tokio::test]
    async fn requests_are_counted_per_hour_and_reset_with_it() {
        let (quotas, _dir) = quotas(QuotaLimits {
            requests_per_hour: Some(2),
            ..QuotaLimits::default()
        })
        .await;
        let hour = 1_000 * HOUR_MS;
        let at = hour + 1_000;
        assert_eq!(quotas.request("acme", at).await.unwrap().unwrap().used, 1);
        quotas.request("acme", at + 1).await.unwrap();
        let Err(QuotaError::Exceeded(spent)) = quotas.request("acme", hour + HOUR_MS - 500).await
        else {
            panic!("a third request in the hour passed");
        };
        assert_eq!(
            (spent.quota, spent.limit, spent.retry_after_secs),
            (Quota::RequestsPerHour, 2, 1)
        );
        // The next hour starts afresh.
        let next = quotas
            .request("acme", hour + HOUR_MS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (next.used, next.resets_at_ms),
            (1, Some(hour + 2 * HOUR_MS))
        );
        // The default organization (custom, nothing set) is not counted.
        assert!(
            quotas
                .request(crate::store::orgs::DEFAULT_ORG, at)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn executions_of_the_day_count_what_ended_and_what_is_live() {
        let (quotas, _dir) = quotas(QuotaLimits {
            executions_per_day: Some(2),
            ..QuotaLimits::default()
        })
        .await;
        let day = 20_000 * DAY_MS;
        let at = day + 5_000;
        // Admitted, an execution counts at once: with two, a third is
        // refused; one dropped without being kept counts no more.
        let first = quotas.admit_execution("acme", at).await.unwrap();
        let second = quotas.admit_execution("acme", at).await.unwrap();
        assert!(matches!(
            quotas.admit_execution("acme", at).await,
            Err(QuotaError::Exceeded(_))
        ));
        drop((first, second));
        // Kept, they stay counted.
        quotas.admit_execution("acme", at).await.unwrap().keep();
        quotas.admit_execution("acme", at).await.unwrap().keep();
        assert!(matches!(
            quotas.admit_execution("acme", at).await,
            Err(QuotaError::Exceeded(_))
        ));
        // A day's count starts from the store: what ended, and what is live.
        quotas.days().clear();
        let mut ended = crate::store::testing::execution(
            &crate::store::testing::id_at(at, 0),
            None,
            crate::store::ExecutionStatus::Completed,
        );
        ended.org = Some("acme".into());
        ended.created_at = crate::time_of_ms(at);
        quotas.store.put_execution(&ended).await.unwrap();
        let mut live = ended.clone();
        live.id = crate::store::testing::id_at(at, 1);
        live.status = crate::store::ExecutionStatus::Queued;
        quotas.jobs.enqueue(&live).unwrap();
        let Err(QuotaError::Exceeded(spent)) = quotas.admit_execution("acme", at).await else {
            panic!("a third execution of the day was admitted");
        };
        assert_eq!(
            (spent.used, spent.retry_after_secs),
            (2, (DAY_MS - 5_000) / 1000)
        );
        // A new day counts from nothing: yesterday's run still queued is
        // yesterday's.
        let next = day + DAY_MS;
        quotas.admit_execution("acme", next).await.unwrap().keep();
        quotas.admit_execution("acme", next).await.unwrap().keep();
        assert!(matches!(
            quotas.admit_execution("acme", next).await,
            Err(QuotaError::Exceeded(_))
        ));
        // A quota changed starts the count again from the store.
        quotas.changed("acme").await.unwrap();
        assert!(quotas.admit_execution("acme", next).await.is_ok());
    }

    #[tokio::test]
    async fn held_quotas_refuse_one_past_the_limit() {
        let (quotas, _dir) = quotas(QuotaLimits {
            scripts: Some(1),
            ..QuotaLimits::default()
        })
        .await;
        quotas
            .check_held("acme", Quota::Scripts, 0, 1)
            .await
            .unwrap();
        assert!(matches!(
            quotas.check_held("acme", Quota::Scripts, 1, 1).await,
            Err(QuotaError::Exceeded(Exceeded {
                quota: Quota::Scripts,
                ..
            }))
        ));
        // Unset: unbounded.
        quotas
            .check_held("acme", Quota::Webhooks, 1_000, 1)
            .await
            .unwrap();
    }

    /// Two nodes' quotas on one PostgreSQL database, for organization
    /// `acme` with `limits`.
    async fn two_nodes(limits: QuotaLimits) -> (Quotas, Quotas) {
        let url = kiln_testpg::shared().fresh_database();
        let node = || async {
            let store: Arc<dyn Store> =
                Arc::new(crate::store::PgStore::connect(&url).await.unwrap());
            let jobs = Jobs::new(
                1,
                10,
                crate::jobs::QueueShare::whole(10),
                crate::metrics::Metrics::new().executions(),
            );
            Quotas::new(store, jobs)
        };
        let (a, b) = (node().await, node().await);
        let mut org = OrgRecord::default_org("2026-01-01T00:00:00.000Z");
        org.id = "acme".into();
        org.name = "acme".into();
        org.tier = Tier::Custom;
        org.quotas = limits;
        a.store.create_org(&org).await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn nodes_sharing_a_store_count_requests_and_executions_against_one_quota() {
        let (a, b) = two_nodes(QuotaLimits {
            requests_per_hour: Some(3),
            executions_per_day: Some(2),
            ..QuotaLimits::default()
        })
        .await;
        let now = crate::now_ms();
        assert_eq!(a.request("acme", now).await.unwrap().unwrap().used, 1);
        assert_eq!(b.request("acme", now).await.unwrap().unwrap().used, 2);
        assert_eq!(a.request("acme", now).await.unwrap().unwrap().used, 3);
        let Err(QuotaError::Exceeded(spent)) = b.request("acme", now).await else {
            panic!("a fourth request in the hour passed on another node");
        };
        assert_eq!((spent.quota, spent.used), (Quota::RequestsPerHour, 3));
        assert_eq!(b.held("acme", Quota::RequestsPerHour).await.unwrap(), 3);

        a.admit_execution("acme", now).await.unwrap().keep();
        // Admitted and not kept: given back (soon after).
        drop(b.admit_execution("acme", now).await.unwrap());
        let given_back = async {
            while b.held("acme", Quota::ExecutionsPerDay).await.unwrap() != 1 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), given_back)
            .await
            .expect("given back");
        b.admit_execution("acme", now).await.unwrap().keep();
        let Err(QuotaError::Exceeded(spent)) = a.admit_execution("acme", now).await else {
            panic!("a third execution in the day passed on another node");
        };
        assert_eq!((spent.quota, spent.used), (Quota::ExecutionsPerDay, 2));

        // A change of the organization that leaves its windowed quotas set
        // (a rename, a raise) or a node starting keeps the counts.
        a.changed("acme").await.unwrap();
        b.load().await.unwrap();
        assert_eq!(b.held("acme", Quota::RequestsPerHour).await.unwrap(), 3);
        assert_eq!(a.held("acme", Quota::ExecutionsPerDay).await.unwrap(), 2);
    }
}

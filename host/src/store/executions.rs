//! Execution records: one per run, keyed so that creation order is key order,
//! and found through an index (by script, by status) in O(what is read).

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde::Deserialize;

use super::orgs::DEFAULT_ORG;
use super::{ExecutionRecord, ExecutionStatus, StoreError};

/// Which executions a walk follows: each is an index, so a walk reads only
/// the records it yields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecutionIndex {
    All,
    /// One script's executions; `None` is the default organization's
    /// ad-hoc ones (`POST /v1/execute`), `~<organization id>` another's.
    Script(Option<String>),
    Status(ExecutionStatus),
    /// One organization's executions.
    Org(String),
}

/// How far an execution's `created_at` may trail the time in its id (both
/// are taken when the record is made): walks bounded by creation time are
/// widened by this much and then compare `created_at` itself.
pub const ID_TIME_SLACK_MS: u64 = 1_000;

/// A walk over one index, within bounds on the executions' creation time.
#[derive(Debug, Clone)]
pub struct ExecutionWalk {
    pub index: ExecutionIndex,
    pub newest_first: bool,
    /// Only executions after this id in walk order (a cursor's position).
    pub after: Option<String>,
    /// Only executions created at or after this time (Unix ms).
    pub created_from_ms: Option<u64>,
    /// Only executions created before this time (Unix ms).
    pub created_until_ms: Option<u64>,
}

impl ExecutionWalk {
    pub fn new(index: ExecutionIndex, newest_first: bool) -> Self {
        Self {
            index,
            newest_first,
            after: None,
            created_from_ms: None,
            created_until_ms: None,
        }
    }
}

/// What the indexes need of a record, read without decoding the rest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Indexed {
    #[serde(default)]
    pub org: Option<String>,
    pub script_id: Option<String>,
    pub status: ExecutionStatus,
}

/// The script index an execution is under: its script's, else (ad-hoc)
/// none for the default organization and `~<id>` for another.
pub(crate) fn script_slot(script_id: &Option<String>, org: &Option<String>) -> Option<String> {
    script_id
        .clone()
        .or_else(|| org.as_ref().map(|org| format!("~{org}")))
}

impl Indexed {
    pub fn script_slot(&self) -> Option<String> {
        script_slot(&self.script_id, &self.org)
    }

    pub fn of(record: &ExecutionRecord) -> Self {
        Self {
            org: record.org.clone(),
            script_id: record.script_id.clone(),
            status: record.status,
        }
    }
}

/// How many executions each index holds, kept in memory beside the store
/// ([`ExecutionStore::count_executions`]).
#[derive(Debug, Default)]
pub(crate) struct IndexCounts {
    pub status: HashMap<ExecutionStatus, u64>,
    pub script: HashMap<Option<String>, u64>,
    /// Executions per organization but the default (bounded by the
    /// organizations).
    pub org: HashMap<String, u64>,
}

impl IndexCounts {
    pub fn add(&mut self, entry: &Indexed) {
        self.add_n(entry, 1);
    }

    pub fn add_n(&mut self, entry: &Indexed, n: u64) {
        *self.status.entry(entry.status).or_default() += n;
        *self.script.entry(entry.script_slot()).or_default() += n;
        if let Some(org) = &entry.org {
            *self.org.entry(org.clone()).or_default() += n;
        }
    }

    pub fn remove(&mut self, entry: &Indexed) {
        if let Some(n) = self.status.get_mut(&entry.status) {
            *n = n.saturating_sub(1);
        }
        let slot = entry.script_slot();
        if let Some(n) = self.script.get_mut(&slot) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // One entry per script that has executions, no more.
                self.script.remove(&slot);
            }
        }
        if let Some(org) = &entry.org
            && let Some(n) = self.org.get_mut(org)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.org.remove(org);
            }
        }
    }

    pub fn count(&self, index: &ExecutionIndex) -> u64 {
        match index {
            ExecutionIndex::All => self.status.values().sum(),
            ExecutionIndex::Script(script) => self.script.get(script).copied().unwrap_or(0),
            ExecutionIndex::Status(status) => self.status.get(status).copied().unwrap_or(0),
            ExecutionIndex::Org(org) if org == DEFAULT_ORG => {
                let all: u64 = self.status.values().sum();
                all.saturating_sub(self.org.values().sum())
            }
            ExecutionIndex::Org(org) => self.org.get(org).copied().unwrap_or(0),
        }
    }

    /// Each script's count ([`ExecutionStore::executions_per_script`]).
    pub fn per_script(&self) -> Vec<(Option<String>, u64)> {
        let mut scripts: Vec<_> = self.script.iter().map(|(s, n)| (s.clone(), *n)).collect();
        scripts.sort();
        scripts
    }
}

/// What [`ExecutionStore::claim_execution`] did.
#[derive(Debug)]
pub enum Claimed {
    /// Running now: the record as written.
    Running(ExecutionRecord),
    /// Not claimed: no such execution, or not queued any more.
    NotQueued,
    /// Not claimed: its organization runs as many as it may on all the
    /// nodes; the record as it is, queued.
    OrgAtCap(ExecutionRecord),
}

/// What [`ExecutionStore::delete_execution`] did.
#[derive(Debug)]
pub enum Removal {
    Removed,
    /// Queued or running executions are never removed.
    NotFinal(ExecutionStatus),
    Missing,
}

#[async_trait::async_trait]
pub trait ExecutionStore {
    /// Creates or replaces an execution record, and its index entries with
    /// it. A held execution (see [`ExecutionStore::hold_execution`]) stays
    /// held, in memory, until this writes it final.
    async fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError>;
    /// Takes a new queued execution whose client waits for its end: it is
    /// held in memory, seen by every reader, and written only when it is
    /// final or [`ExecutionStore::keep_execution`] asks (`store/held.rs`).
    /// A store that holds too much already writes it at once.
    async fn hold_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError>;
    /// Writes the execution `id` if it is held: someone is about to be told
    /// of it. Nothing for any other id.
    async fn keep_execution(&self, id: &str) -> Result<(), StoreError>;
    /// Writes the final records a store kept in memory after journaling
    /// them ([`crate::store::Store::flush_finals_deferring`]). Nothing by
    /// default: a store that defers none.
    async fn apply_deferred(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Visits the executions `walk` selects, in its order, until `visit`
    /// breaks or they run out.
    async fn walk_executions(
        &self,
        walk: &ExecutionWalk,
        visit: &mut (dyn FnMut(ExecutionRecord) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError>;
    /// How many executions an index holds, from counters kept beside it
    /// (in memory: read where no await can be, as by `/metrics`).
    fn count_executions(&self, index: &ExecutionIndex) -> u64;
    /// The scripts that have stored executions (`None`: the default
    /// organization's ad-hoc ones; `~<organization id>`: another's, so
    /// retention keeps each organization's apart), with how many each has.
    fn executions_per_script(&self) -> Vec<(Option<String>, u64)>;
    /// Removes a final execution and its index entries, at once.
    async fn delete_execution(&self, id: &str) -> Result<Removal, StoreError>;
    /// Stores `record`, which just became final, with the webhook
    /// deliveries its end makes (`outbox`): in one transaction where the
    /// store has them (PostgreSQL), so a node that dies between the two
    /// loses neither; sled writes the record first. With `expect`, only over
    /// a current record it accepts (a compare-and-swap, as
    /// [`Self::update_execution`]): `false`, and nothing written, if not.
    async fn finish_execution(
        &self,
        record: &ExecutionRecord,
        expect: Option<&(dyn for<'r> Fn(&'r ExecutionRecord) -> bool + Send + Sync)>,
        outbox: &[super::webhooks::DeliveryRecord],
    ) -> Result<bool, StoreError>;
    /// Claims execution `id`: writes what `change` makes of it (a
    /// compare-and-swap, as [`Self::update_execution`]), unless its
    /// organization already runs `org_cap(org)` executions on all the nodes
    /// sharing the store, counted under a lock per organization, so two
    /// nodes never both take its last place. sled, with one node, whose
    /// queue counts them, does not count.
    async fn claim_execution(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r ExecutionRecord) -> Option<ExecutionRecord> + Send + Sync),
        org_cap: &(dyn for<'o> Fn(&'o str) -> Option<usize> + Send + Sync),
    ) -> Result<Claimed, StoreError>;
    /// Running executions per organization on the other nodes sharing the
    /// store (none for sled).
    async fn running_elsewhere(&self) -> Result<HashMap<String, usize>, StoreError>;
    /// Replaces execution `id` with what `change` makes of it, atomically
    /// on every node: a claim, a cancel, a final record are each written
    /// only over the state they were decided on. `change` returns `None` to
    /// leave the record as it is; the written record, if any.
    async fn update_execution(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r ExecutionRecord) -> Option<ExecutionRecord> + Send + Sync),
    ) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Moves on the leases of this node's running executions `ids`, so no
    /// other node ends them (a store several nodes share; nothing in sled).
    async fn renew_runs(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Running executions of other nodes whose lease ran out (a store
    /// several nodes share; none in sled, where what a crash left running
    /// is found at the next start), oldest first, at most `limit`.
    async fn expired_runs(&self, limit: usize) -> Result<Vec<ExecutionRecord>, StoreError>;
    /// Queued executions created more than `age_ms` ago, oldest first, at
    /// most `limit`: in a shared store, work a node that went away left
    /// queued (or one too busy to start), which any node may claim. None in
    /// a store of one node, whose queue holds every queued execution.
    async fn stale_queued(
        &self,
        age_ms: u64,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError>;

    /// Executions in the given states, oldest first (for recovery at start).
    async fn executions_in(
        &self,
        states: &[ExecutionStatus],
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let mut found = Vec::new();
        for status in states {
            let walk = ExecutionWalk::new(ExecutionIndex::Status(*status), false);
            self.walk_executions(&walk, &mut |record| {
                found.push(record);
                ControlFlow::Continue(())
            })
            .await?;
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// How many executions are in each state.
    fn execution_counts(&self) -> Vec<(ExecutionStatus, u64)> {
        ExecutionStatus::ALL
            .iter()
            .map(|s| (*s, self.count_executions(&ExecutionIndex::Status(*s))))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

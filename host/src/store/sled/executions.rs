//! The sled side of [`ExecutionStore`]: records and their index entries in
//! one tree, whose keys `execution_keys.rs` lays out.
//!
//! Not sled batches: `apply_batch` takes sled's global write lock and from
//! then on makes every operation of the process take its read lock, which
//! cut the waited-execution rate at 32 connections to a quarter. Instead
//! writes are ordered so a crash can leave only an entry too many (an index
//! entry is written before its record and removed after it), never a record
//! an index misses: readers check each entry against its record, and `open`
//! drops the stray ones after a crash (`repair`).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Mutex, PoisonError};

use super::contents::{self, Apart, ApartOf};
use super::execution_keys::{self, FIRST_ID, ID_LEN, MergedIds, PAST_IDS, Source, keys};
use super::packed;
use super::{SledStore, backend, decode, lowest_id};
use crate::store::executions::{
    ExecutionIndex, ExecutionStore, ExecutionWalk, IndexCounts, Indexed, Removal, script_slot,
};
use crate::store::held::HeldExecutions;
use crate::store::journal::MAX_ENTRY;
use crate::store::orgs::{DEFAULT_ORG, InOrg as _};
use crate::store::webhooks::WebhookStore as _;
use crate::store::{ExecutionRecord, ExecutionStatus, StoreError};

/// Record writes of one id are serialized (read the old index entries, write
/// the new ones); different ids rarely share a lock.
const LOCK_STRIPES: usize = 32;

/// What is kept in memory of a queued or running execution.
#[derive(Debug, Clone)]
struct Live {
    status: ExecutionStatus,
    /// Its organization but the default: that organization's walks read
    /// its unfinished executions from here (they have no entry of theirs).
    org: Option<String>,
}

#[derive(Debug, Default)]
struct Counts {
    index: IndexCounts,
    /// Each queued or running execution (bounded by the queue and the
    /// workers).
    live: HashMap<String, Live>,
}

/// The locks and counters kept beside the executions tree.
pub(super) struct ExecutionIndexes {
    locks: [Mutex<()>; LOCK_STRIPES],
    counts: Mutex<Counts>,
    held: HeldExecutions,
    /// Final records held in memory, journaled, whose writes wait for
    /// [`ExecutionStore::apply_deferred`] (id, journal seq): bounded by
    /// the held records.
    deferred: Mutex<Vec<(String, u64)>>,
    /// Held by a drain of `deferred` from its take to its last write, so a
    /// flush that drains finds every record taken before it written.
    draining: Mutex<()>,
}

impl ExecutionIndexes {
    /// Counts the index entries of `tree` (keys only, no final record
    /// decoded) and reads the unfinished records' states.
    pub(super) fn load(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut counts = Counts::default();
        let live = &mut counts.live;
        execution_keys::count_entries(tree, &mut counts.index, |id, indexed| {
            let Indexed { status, org, .. } = indexed;
            live.insert(id, Live { status, org });
        })?;
        Ok(Self {
            locks: std::array::from_fn(|_| Mutex::new(())),
            counts: Mutex::new(counts),
            held: HeldExecutions::default(),
            deferred: Mutex::default(),
            draining: Mutex::default(),
        })
    }

    fn lock(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        let stripe = id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        self.locks[stripe % LOCK_STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn deferred(&self) -> std::sync::MutexGuard<'_, Vec<(String, u64)>> {
        self.deferred.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SledStore {
    /// Visits the held records that come before the stored record `id` in
    /// the walk's order (all of them for `None`); `held` has the ids, the
    /// next one last. A record written since the walk took the ids is read
    /// from the tree, or skipped when the walk meets it there (`id`).
    fn visit_held(
        &self,
        held: &mut Vec<String>,
        id: Option<&str>,
        newest_first: bool,
        visit: &mut (dyn FnMut(ExecutionRecord) -> ControlFlow<()> + Send),
    ) -> Result<ControlFlow<()>, StoreError> {
        while let Some(next) = held.pop() {
            let written = id == Some(next.as_str());
            let first = id.is_none_or(|id| (next.as_str() > id) == newest_first);
            if !written && !first {
                held.push(next);
                break;
            }
            if written {
                continue;
            }
            let record = match self.execution_indexes.held.get(&next) {
                Some(record) => Some(record),
                None => self.stored_execution(&next)?,
            };
            if let Some(record) = record
                && visit(record).is_break()
            {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

impl SledStore {
    /// Writes every held execution (the store is closing: what is still
    /// queued runs after the next start).
    /// [`ExecutionStore::put_execution`], callable where nothing is awaited.
    fn put_now(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let _writing = self.execution_indexes.lock(&execution.id);
        self.put_journaled(execution)
    }

    /// [`Self::put_locked`], and a final record journaled: its seq taken
    /// before the write, filled after it.
    ///
    /// A held record that becomes final stays held, final, with its entry
    /// filled at once: its writes to sled wait for
    /// [`ExecutionStore::apply_deferred`], which the answer that syncs the
    /// entry starts once it is sent. Readers see it held meanwhile, and a
    /// full flush covers the entry only once it is applied.
    fn put_journaled(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let Some(entry) = execution.status.is_final().then(|| self.journal.reserve()) else {
            return self.put_locked(execution, None).map(drop);
        };
        let payload = self
            .journal_payload(execution)
            .filter(|payload| payload.len() <= MAX_ENTRY);
        match payload {
            Some(payload) if self.put_locked(execution, Some(&payload))? => {
                let seq = entry.fill_unapplied(&payload);
                self.execution_indexes
                    .deferred()
                    .push((execution.id.clone(), seq));
            }
            Some(payload) => entry.fill(Some(&payload)),
            None => {
                self.put_locked(execution, None)?;
                entry.fill(None);
            }
        }
        Ok(())
    }

    /// Writes the final records held since their entries were journaled
    /// ([`Self::put_journaled`]); those a reader or a close wrote meanwhile
    /// are only marked applied. One whose write fails stays held, and is
    /// tried again at the next call.
    pub(super) fn apply_deferred_now(&self) -> Result<(), StoreError> {
        let _draining = self
            .execution_indexes
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let deferred = std::mem::take(&mut *self.execution_indexes.deferred());
        let mut failed = None;
        for (id, seq) in deferred {
            let _writing = self.execution_indexes.lock(&id);
            let written = match self.execution_indexes.held.get(&id) {
                Some(record) => self.write_held_final(&record),
                None => Ok(()),
            };
            match written {
                Ok(()) => self.journal.applied(seq),
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "cannot write a final record held in memory");
                    self.execution_indexes.deferred().push((id, seq));
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// A final record the journal kept and sled lost, written again at
    /// open (not journaled again: the open's flush covers it).
    pub(super) fn put_replayed(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let _writing = self.execution_indexes.lock(&execution.id);
        self.put_locked(execution, None).map(drop)
    }

    /// [`Self::put_now`] with the id's lock held, not journaled; `true`
    /// when a held record became final and stays held (its `journaled`
    /// entry is to be filled unapplied).
    fn put_locked(
        &self,
        execution: &ExecutionRecord,
        journaled: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let id = execution.id.as_str();
        let held = &self.execution_indexes.held;
        // A held final record is one whose write is deferred
        // ([`Self::put_journaled`]): not written, so not rolled up yet.
        let held_status = held.read(id, |record| record.status);
        let deferred_before = held_status.is_some_and(ExecutionStatus::is_final);
        let known = self
            .execution_indexes
            .counts()
            .live
            .get(id)
            .map(|live| live.status)
            .or(held_status);
        // What the stored record keeps apart: an unfinished one only its
        // code, which no write of it changes.
        let mut kept_apart = Apart::new();
        let before = match known {
            // The script and organization of a record never change.
            Some(status) => Some(Indexed {
                org: execution.org.clone(),
                script_id: execution.script_id.clone(),
                status,
            }),
            None => match self.executions.get(id).map_err(backend)? {
                Some(bytes) => {
                    let json = packed::RECORD.unpack(&bytes);
                    if let Ok(json) = &json {
                        kept_apart = ApartOf::read(json).unwrap_or_default();
                    }
                    json.and_then(|json| decode::<Indexed>(&json))
                        .inspect_err(
                            |e| tracing::error!(id, error = %e, "replacing an unreadable execution"),
                        )
                        .ok()
                }
                None => None,
            },
        };
        let after = Indexed::of(execution);
        let mut deferred = false;
        if held_status.is_none() {
            self.write_execution(execution, before.as_ref(), &kept_apart)?;
        } else if after.status.is_final() {
            deferred = journaled.is_some() && held.replace_within_bound(execution);
            if !deferred {
                // Final now: written, with entries of its own; then no
                // longer held.
                self.write_execution(execution, None, &Apart::new())?;
                held.release(id);
            }
        } else {
            held.replace(execution);
        }
        if !deferred {
            let rolled_before = before.as_ref().filter(|_| !deferred_before);
            self.roll_up(execution, rolled_before, &after);
        }
        self.count(execution, before.as_ref(), &after);
        Ok(deferred)
    }

    /// [`ExecutionStore::keep_execution`], callable where nothing is awaited.
    fn keep_now(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.execution_indexes.lock(id);
        let held = &self.execution_indexes.held;
        let Some(record) = held.get(id) else {
            return Ok(());
        };
        if record.status.is_final() {
            return self.write_held_final(&record);
        }
        self.write_execution(&record, None, &Apart::new())?;
        held.release(id);
        Ok(())
    }

    /// Writes a final record held since it was journaled, with its id's
    /// lock held, and adds it to its usage rollups: only now, so a rollup a
    /// flush stores is never of a record a replay would write and count
    /// again.
    fn write_held_final(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        self.write_execution(record, None, &Apart::new())?;
        self.pending_usage.usage.add(record);
        self.execution_indexes.held.release(&record.id);
        Ok(())
    }

    pub(super) fn keep_held_executions(&self) -> Result<(), StoreError> {
        for id in self.execution_indexes.held.ids() {
            self.keep_now(&id)?;
        }
        Ok(())
    }

    /// Writes `execution` and its index entries over those of `before` (what
    /// the tree holds of it now, if anything, and the contents it keeps
    /// apart): contents and entries first, record next, stale entries and
    /// contents last (see the module's doc).
    fn write_execution(
        &self,
        execution: &ExecutionRecord,
        before: Option<&Indexed>,
        kept_apart: &Apart,
    ) -> Result<(), StoreError> {
        let id = execution.id.as_str();
        let (bytes, pieces) = contents::split(execution)?;
        self.contents.put(id, &pieces)?;
        let new_keys = keys(&Indexed::of(execution), id);
        let old_keys = before.map(|b| keys(b, id));
        let is_old = |key: &Vec<u8>| old_keys.as_ref().is_some_and(|old| old.contains(key));
        for key in new_keys.iter().filter(|key| !is_old(key)) {
            self.executions.insert(key, &[]).map_err(backend)?;
        }
        self.executions
            .insert(id.as_bytes(), packed::RECORD.pack(bytes))
            .map_err(backend)?;
        for key in old_keys
            .iter()
            .flatten()
            .filter(|key| !new_keys.contains(key))
        {
            self.executions.remove(key).map_err(backend)?;
        }
        let kept = |hex: &&String| {
            pieces
                .iter()
                .any(|p| p.hash.to_hex().as_str() == hex.as_str())
        };
        self.contents
            .release(id, kept_apart.values().filter(|hex| !kept(hex)))?;
        Ok(())
    }

    /// The stored record `id` (not a held one), with the fields it keeps
    /// apart put back. Reads take no lock: a record deleted or rewritten
    /// between the read of its bytes and of its contents is read again.
    pub(super) fn stored_execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        let mut read = self.executions.get(id).map_err(backend)?;
        for _ in 0..3 {
            let Some(bytes) = read else {
                return Ok(None);
            };
            if let Some(record) = self.read_execution(&bytes)? {
                return Ok(Some(record));
            }
            read = self.executions.get(id).map_err(backend)?;
            if read.as_ref() == Some(&bytes) {
                // Unchanged, yet what it names is gone.
                break;
            }
        }
        Err(StoreError::Corrupt(format!(
            "execution {id}: a field stored apart is missing"
        )))
    }

    /// A stored record's bytes, decoded, with the fields it keeps apart
    /// put back; `None` when one of them is gone (read the record again).
    pub(super) fn read_execution(
        &self,
        bytes: &[u8],
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let json = packed::RECORD.unpack(bytes)?;
        let mut record: ExecutionRecord = decode(&json)?;
        let apart = ApartOf::read(&json)?;
        if !apart.is_empty() && !self.contents.fill(&mut record, &apart)? {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// A record written that just became final is added to its usage
    /// rollups (one whose write is deferred, when it is written).
    fn roll_up(&self, record: &ExecutionRecord, before: Option<&Indexed>, after: &Indexed) {
        if after.status.is_final() && before.is_none_or(|b| !b.status.is_final()) {
            self.pending_usage.usage.add(record);
        }
    }

    /// Whether an execution is queued or running here, which the thread
    /// of a sync made in its place would hold up. HTTP function requests
    /// are not counted: they store only their final record.
    pub(super) fn any_unfinished(&self) -> bool {
        !self.execution_indexes.counts().live.is_empty()
    }

    /// Moves the counters from `before` to `after`.
    fn count(&self, record: &ExecutionRecord, before: Option<&Indexed>, after: &Indexed) {
        let id = record.id.as_str();
        let mut counts = self.execution_indexes.counts();
        if before != Some(after) {
            if let Some(before) = before {
                counts.index.remove(before);
            }
            counts.index.add(after);
        }
        if after.status.is_final() {
            counts.live.remove(id);
        } else {
            // A run already known only changes state: no allocation.
            match counts.live.get_mut(id) {
                Some(live) => live.status = after.status,
                None => {
                    let live = Live {
                        status: after.status,
                        org: after.org.clone(),
                    };
                    counts.live.insert(id.to_owned(), live);
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ExecutionStore for SledStore {
    async fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        self.put_now(execution)
    }

    async fn hold_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let id = execution.id.as_str();
        let writing = self.execution_indexes.lock(id);
        if execution.status.is_final() || !self.execution_indexes.held.hold(execution) {
            drop(writing);
            return self.put_now(execution);
        }
        self.count(execution, None, &Indexed::of(execution));
        Ok(())
    }

    async fn keep_execution(&self, id: &str) -> Result<(), StoreError> {
        self.keep_now(id)
    }

    async fn apply_deferred(&self) -> Result<(), StoreError> {
        self.apply_deferred_now()
    }

    async fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        if id.len() != ID_LEN {
            // Never an index key.
            return Ok(None);
        }
        if let Some(record) = self.execution_indexes.held.get(id) {
            return Ok(Some(record));
        }
        // It may have been written and released since.
        self.stored_execution(id)
    }

    async fn walk_executions(
        &self,
        walk: &ExecutionWalk,
        visit: &mut (dyn FnMut(ExecutionRecord) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        let mut low = FIRST_ID.to_vec();
        let mut high = PAST_IDS.to_vec();
        if let Some(ms) = walk.created_from_ms {
            low = low.max(lowest_id(ms));
        }
        if let Some(ms) = walk.created_until_ms {
            high = high.min(lowest_id(ms));
        }
        if let Some(after) = &walk.after {
            if walk.newest_first {
                high = high.min(after.as_bytes().to_vec());
            } else {
                // The smallest key above `after`.
                low = low.max([after.as_bytes(), &[0]].concat());
            }
        }
        if low >= high {
            return Ok(());
        }
        let selects = |record: &ExecutionRecord| match &walk.index {
            ExecutionIndex::All => true,
            ExecutionIndex::Script(script) => {
                script_slot(&record.script_id, &record.org) == *script
            }
            ExecutionIndex::Status(status) => record.status == *status,
            ExecutionIndex::Org(org) => record.org() == org,
        };
        // Held records have no entries: they join the walk in id order, as
        // do another organization's unfinished ones.
        let in_bounds = |id: &str| (low.as_slice()..high.as_slice()).contains(&id.as_bytes());
        let mut held = self
            .execution_indexes
            .held
            .matching(|r| selects(r) && in_bounds(&r.id));
        let source = {
            let counts = self.execution_indexes.counts();
            if let ExecutionIndex::Org(org) = &walk.index
                && org != DEFAULT_ORG
            {
                held.extend(
                    counts
                        .live
                        .iter()
                        .filter(|(id, live)| live.org.as_ref() == Some(org) && in_bounds(id))
                        .map(|(id, _)| id.clone()),
                );
                held.sort_unstable();
                held.dedup();
            }
            execution_keys::source(&walk.index, counts.index.org.keys().map(String::as_str))
        };
        if !walk.newest_first {
            held.reverse();
        }
        // Each id, with its record's bytes when the walk reads the records.
        let found: Box<dyn Iterator<Item = Result<(Vec<u8>, Option<sled::IVec>), StoreError>>> =
            match source {
                Source::Records => {
                    let range = self.executions.range(low.as_slice()..high.as_slice());
                    let range: Box<dyn Iterator<Item = _>> = if walk.newest_first {
                        Box::new(range.rev())
                    } else {
                        Box::new(range)
                    };
                    Box::new(range.map(|entry| {
                        let (key, value) = entry.map_err(backend)?;
                        Ok((key.to_vec(), Some(value)))
                    }))
                }
                Source::Entries(prefixes) => Box::new(
                    MergedIds::new(&self.executions, &prefixes, &low, &high, walk.newest_first)
                        .map(|id| id.map(|id| (id, None))),
                ),
            };
        for entry in found {
            let (id, value) = entry?;
            let read = match value {
                Some(bytes) => self.read_execution(&bytes)?,
                None => None,
            };
            let record = match read {
                Some(record) => record,
                // Through an index entry, or changed since the walk read it.
                None => match self.stored_execution(&String::from_utf8_lossy(&id))? {
                    Some(record) => record,
                    None => continue,
                },
            };
            // An entry a crash left, until `open` drops it, is skipped.
            if !selects(&record) {
                continue;
            }
            let newest_first = walk.newest_first;
            if self
                .visit_held(&mut held, Some(&record.id), newest_first, visit)?
                .is_break()
                || visit(record).is_break()
            {
                return Ok(());
            }
        }
        // The walk ends here whether or not the visitor stopped it.
        let _ = self.visit_held(&mut held, None, walk.newest_first, visit)?;
        Ok(())
    }

    fn count_executions(&self, index: &ExecutionIndex) -> u64 {
        self.execution_indexes.counts().index.count(index)
    }

    fn executions_per_script(&self) -> Vec<(Option<String>, u64)> {
        self.execution_indexes.counts().index.per_script()
    }

    async fn update_execution(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r ExecutionRecord) -> Option<ExecutionRecord> + Send + Sync),
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        if id.len() != ID_LEN {
            return Ok(None);
        }
        let _writing = self.execution_indexes.lock(id);
        let current = match self.execution_indexes.held.get(id) {
            Some(record) => Some(record),
            None => self.stored_execution(id)?,
        };
        let Some(next) = current.as_ref().and_then(change) else {
            return Ok(None);
        };
        self.put_journaled(&next)?;
        Ok(Some(next))
    }

    async fn claim_execution(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r ExecutionRecord) -> Option<ExecutionRecord> + Send + Sync),
        _org_cap: &(dyn for<'o> Fn(&'o str) -> Option<usize> + Send + Sync),
    ) -> Result<crate::store::executions::Claimed, StoreError> {
        use crate::store::executions::Claimed;
        // One node: its queue holds an organization to its bound.
        Ok(match self.update_execution(id, change).await? {
            Some(record) => Claimed::Running(record),
            None => Claimed::NotQueued,
        })
    }

    async fn running_elsewhere(&self) -> Result<HashMap<String, usize>, StoreError> {
        Ok(HashMap::new())
    }

    async fn finish_execution(
        &self,
        record: &ExecutionRecord,
        expect: Option<&(dyn for<'r> Fn(&'r ExecutionRecord) -> bool + Send + Sync)>,
        outbox: &[crate::store::webhooks::DeliveryRecord],
    ) -> Result<bool, StoreError> {
        // Taken before the record's: a reader that sees the record final
        // and syncs waits for its deliveries too.
        let deliveries = (!outbox.is_empty()).then(|| self.journal.reserve());
        let written = match expect {
            None => {
                self.put_execution(record).await?;
                true
            }
            Some(expect) => self
                .update_execution(&record.id, &|current| {
                    expect(current).then(|| record.clone())
                })
                .await?
                .is_some(),
        };
        if let Some(entry) = deliveries {
            let stored = if written { outbox } else { &[] };
            for delivery in stored {
                self.put_delivery(delivery).await?;
            }
            self.journal_deliveries(entry, stored);
        }
        Ok(written)
    }

    async fn renew_runs(&self, _ids: &[String]) -> Result<(), StoreError> {
        // One node: no one else to keep them from.
        Ok(())
    }

    async fn expired_runs(&self, _limit: usize) -> Result<Vec<ExecutionRecord>, StoreError> {
        // One node: its runs end with it, and the next start finds them.
        Ok(Vec::new())
    }

    async fn stale_queued(
        &self,
        _age_ms: u64,
        _limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        // One node: its queue holds every queued execution.
        Ok(Vec::new())
    }

    async fn delete_execution(&self, id: &str) -> Result<Removal, StoreError> {
        if id.len() != ID_LEN {
            return Ok(Removal::Missing);
        }
        let _writing = self.execution_indexes.lock(id);
        if let Some(held) = self.execution_indexes.held.get(id) {
            if !held.status.is_final() {
                return Ok(Removal::NotFinal(held.status));
            }
            // Final, its write deferred: written now, then removed.
            self.write_held_final(&held)?;
        }
        let Some(bytes) = self.executions.get(id).map_err(backend)? else {
            return Ok(Removal::Missing);
        };
        let json = packed::RECORD.unpack(&bytes)?;
        let indexed: Indexed = decode(&json)?;
        if !indexed.status.is_final() {
            return Ok(Removal::NotFinal(indexed.status));
        }
        let apart = ApartOf::read(&json)?;
        self.executions.remove(id.as_bytes()).map_err(backend)?;
        for key in keys(&indexed, id) {
            self.executions.remove(key).map_err(backend)?;
        }
        self.contents.release(id, apart.values())?;
        self.execution_indexes.counts().index.remove(&indexed);
        Ok(Removal::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::super::tests::{TEST_CACHE_BYTES, reopen};
    use super::*;
    use crate::store::Store;
    use crate::store::conformance::ids;
    use crate::store::testing::{execution, id_at};

    /// What a journal sync asks before it makes a lone entry's sync on its
    /// own thread: whether any run, written or held, is queued or running.
    #[tokio::test]
    async fn a_run_is_unfinished_until_its_final_record_whether_written_or_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (written, held) = (id_at(1_000, 0), id_at(2_000, 0));
        assert!(!store.any_unfinished(), "a new store");
        for status in [ExecutionStatus::Queued, ExecutionStatus::Running] {
            let record = execution(&written, Some("s1"), status);
            store.put_execution(&record).await.unwrap();
            assert!(store.any_unfinished(), "{status:?}");
        }
        let done = execution(&written, Some("s1"), ExecutionStatus::Completed);
        store.put_execution(&done).await.unwrap();
        assert!(!store.any_unfinished(), "final");
        let waited = execution(&held, Some("s1"), ExecutionStatus::Queued);
        store.hold_execution(&waited).await.unwrap();
        assert!(store.any_unfinished(), "held, queued");
        let claimed = execution(&held, Some("s1"), ExecutionStatus::Running);
        store.put_execution(&claimed).await.unwrap();
        assert!(store.any_unfinished(), "held, running");
        let failed = execution(&held, Some("s1"), ExecutionStatus::Failed);
        store.put_execution(&failed).await.unwrap();
        assert!(!store.any_unfinished(), "held, final");
    }

    #[tokio::test]
    async fn indexes_follow_every_write_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (a, b, c) = (id_at(1_000, 0), id_at(2_000, 0), id_at(3_000, 0));
        store
            .put_execution(&execution(&a, Some("s1"), ExecutionStatus::Queued))
            .await
            .unwrap();
        store
            .put_execution(&execution(&b, Some("s2"), ExecutionStatus::Queued))
            .await
            .unwrap();
        store
            .put_execution(&execution(&c, None, ExecutionStatus::Queued))
            .await
            .unwrap();
        store
            .put_execution(&execution(&a, Some("s1"), ExecutionStatus::Running))
            .await
            .unwrap();
        store
            .put_execution(&execution(&a, Some("s1"), ExecutionStatus::Completed))
            .await
            .unwrap();

        let walk = |index| ExecutionWalk::new(index, true);
        assert_eq!(
            ids(&store, &walk(ExecutionIndex::All)).await,
            [c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(
            ids(&store, &walk(ExecutionIndex::Script(Some("s1".into())))).await,
            [a.as_str()]
        );
        assert_eq!(
            ids(&store, &walk(ExecutionIndex::Script(None))).await,
            [c.as_str()]
        );
        assert_eq!(
            ids(
                &store,
                &walk(ExecutionIndex::Status(ExecutionStatus::Queued))
            )
            .await,
            [c.clone(), b.clone()]
        );
        assert!(
            ids(
                &store,
                &walk(ExecutionIndex::Status(ExecutionStatus::Running))
            )
            .await
            .is_empty()
        );
        assert_eq!(store.count_executions(&ExecutionIndex::All), 3);
        assert_eq!(
            store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Queued)),
            2
        );
        assert_eq!(
            store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Running)),
            0
        );

        assert!(matches!(
            store.delete_execution(&b).await.unwrap(),
            Removal::NotFinal(ExecutionStatus::Queued)
        ));
        assert!(matches!(
            store.delete_execution(&a).await.unwrap(),
            Removal::Removed
        ));
        assert!(matches!(
            store.delete_execution(&a).await.unwrap(),
            Removal::Missing
        ));
        assert!(
            ids(&store, &walk(ExecutionIndex::Script(Some("s1".into()))))
                .await
                .is_empty()
        );
        assert!(
            ids(
                &store,
                &walk(ExecutionIndex::Status(ExecutionStatus::Completed))
            )
            .await
            .is_empty()
        );
        assert_eq!(
            store.executions_per_script(),
            [(None, 1), (Some("s2".into()), 1)]
        );

        // The counters are rebuilt from the indexes on open.
        drop(store);
        let store = reopen(dir.path()).unwrap();
        assert_eq!(store.count_executions(&ExecutionIndex::All), 2);
        assert_eq!(
            store.count_executions(&ExecutionIndex::Script(Some("s2".into()))),
            1
        );
        assert_eq!(store.execution_counts(), [(ExecutionStatus::Queued, 2)]);
    }

    #[tokio::test]
    async fn records_are_stored_packed_and_ones_stored_as_json_before_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (packed_id, plain_id) = (id_at(1_000, 0), id_at(2_000, 0));
        let mut done = execution(&packed_id, Some("s1"), ExecutionStatus::Completed);
        done.result = Some(serde_json::json!({ "answer": 42 }));
        store.put_execution(&done).await.unwrap();
        let stored = store.executions.get(&packed_id).unwrap().unwrap();
        assert_ne!(stored[0], b'{', "stored packed");
        assert!(stored.len() < encode(&done).unwrap().len() / 2);
        assert_eq!(
            store.execution(&packed_id).await.unwrap(),
            Some(done.clone())
        );

        // A record as a build before packing wrote it: JSON, with its entries.
        let plain = execution(&plain_id, Some("s1"), ExecutionStatus::Failed);
        store
            .executions
            .insert(plain_id.as_bytes(), encode(&plain).unwrap())
            .unwrap();
        for key in keys(&Indexed::of(&plain), &plain_id) {
            store.executions.insert(key, &[]).unwrap();
        }
        assert_eq!(
            store.execution(&plain_id).await.unwrap(),
            Some(plain.clone())
        );
        let walk = ExecutionWalk::new(ExecutionIndex::Script(Some("s1".into())), true);
        assert_eq!(
            ids(&store, &walk).await,
            [plain_id.clone(), packed_id.clone()]
        );
        // Rewritten (an update), it is packed too; both delete.
        store.put_execution(&plain).await.unwrap();
        assert_ne!(store.executions.get(&plain_id).unwrap().unwrap()[0], b'{');
        for id in [&packed_id, &plain_id] {
            assert!(matches!(
                store.delete_execution(id).await.unwrap(),
                Removal::Removed
            ));
            assert_eq!(store.execution(id).await.unwrap(), None);
        }
        assert!(ids(&store, &walk).await.is_empty());
    }

    #[tokio::test]
    async fn walks_start_after_a_cursor_and_keep_to_creation_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let all: Vec<String> = (0..10).map(|i| id_at(1_000 * (i + 1), 0)).collect();
        for id in &all {
            store
                .put_execution(&execution(id, Some("s"), ExecutionStatus::Completed))
                .await
                .unwrap();
        }
        for index in [
            ExecutionIndex::All,
            ExecutionIndex::Script(Some("s".into())),
            ExecutionIndex::Status(ExecutionStatus::Completed),
        ] {
            let mut walk = ExecutionWalk::new(index, true);
            walk.after = Some(all[5].clone());
            assert_eq!(
                ids(&store, &walk).await,
                [
                    all[4].clone(),
                    all[3].clone(),
                    all[2].clone(),
                    all[1].clone(),
                    all[0].clone()
                ]
            );
            walk.newest_first = false;
            assert_eq!(
                ids(&store, &walk).await,
                [
                    all[6].clone(),
                    all[7].clone(),
                    all[8].clone(),
                    all[9].clone()
                ]
            );
            walk.after = None;
            walk.created_from_ms = Some(3_000);
            walk.created_until_ms = Some(5_000);
            assert_eq!(ids(&store, &walk).await, [all[2].clone(), all[3].clone()]);
        }
    }

    #[tokio::test]
    async fn a_schema_2_store_is_indexed_and_rolled_up_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (id_at(1_000, 0), id_at(1_000, 1));
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            // As version 2 wrote them: the record alone.
            for (id, status) in [(&a, ExecutionStatus::Failed), (&b, ExecutionStatus::Queued)] {
                let record = execution(id, Some("s"), status);
                store
                    .executions
                    .insert(id.as_bytes(), encode(&record).unwrap())
                    .unwrap();
            }
            store
                .db
                .open_tree("meta")
                .unwrap()
                .insert("schema_version", encode(&2u32).unwrap())
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert_eq!(
            store.count_executions(&ExecutionIndex::Script(Some("s".into()))),
            2
        );
        let queued = store
            .executions_in(&[ExecutionStatus::Queued])
            .await
            .unwrap();
        assert_eq!(
            queued.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            [b.as_str()]
        );
        // Rolled up too (schema 4): the final one.
        use crate::store::usage::{Grain, Scope, UsageStore};
        let rows = store
            .usage(
                Grain::Day,
                1_000,
                1_000,
                Scope::PerScript(crate::store::orgs::DEFAULT_ORG),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].usage.failures(), 1);
        assert_eq!(rows[0].usage.executions(), 1);
    }

    #[tokio::test]
    async fn entries_a_crash_left_are_dropped_on_the_next_open_and_skipped_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let (done, gone) = (id_at(1_000, 0), id_at(2_000, 0));
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store
                .put_execution(&execution(&done, Some("s"), ExecutionStatus::Completed))
                .await
                .unwrap();
            // As a crash between the writes leaves them: the old status's
            // entry of a record that moved on, and entries of a record
            // never written.
            let stray = [
                keys(
                    &Indexed {
                        org: None,
                        script_id: Some("s".into()),
                        status: ExecutionStatus::Running,
                    },
                    &done,
                ),
                keys(
                    &Indexed {
                        org: None,
                        script_id: Some("s".into()),
                        status: ExecutionStatus::Queued,
                    },
                    &gone,
                ),
            ];
            for key in stray.iter().flatten() {
                store.executions.insert(key, &[]).unwrap();
            }
            let running =
                ExecutionWalk::new(ExecutionIndex::Status(ExecutionStatus::Running), true);
            assert!(ids(&store, &running).await.is_empty());
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert_eq!(
            store.count_executions(&ExecutionIndex::Script(Some("s".into()))),
            1
        );
        assert_eq!(store.execution_counts(), [(ExecutionStatus::Completed, 1)]);
        // A store closed cleanly is not repaired (nor needs to be).
        store.close().await.unwrap();
        drop(store);
        let store = reopen(dir.path()).unwrap();
        assert_eq!(store.count_executions(&ExecutionIndex::All), 1);
    }

    #[tokio::test]
    async fn held_executions_are_seen_like_stored_ones_and_written_only_when_final_or_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (a, b, c, d) = (
            id_at(1_000, 0),
            id_at(2_000, 0),
            id_at(3_000, 0),
            id_at(4_000, 0),
        );
        for id in [&a, &c] {
            store
                .put_execution(&execution(id, Some("s"), ExecutionStatus::Completed))
                .await
                .unwrap();
        }
        store
            .hold_execution(&execution(&b, Some("s"), ExecutionStatus::Queued))
            .await
            .unwrap();
        store
            .hold_execution(&execution(&d, None, ExecutionStatus::Queued))
            .await
            .unwrap();
        store
            .put_execution(&execution(&b, Some("s"), ExecutionStatus::Running))
            .await
            .unwrap();
        let on_disk = |id: &str| store.executions.get(id).unwrap().is_some();
        assert!(!on_disk(&b) && !on_disk(&d), "held, not written");
        assert_eq!(
            store.execution(&b).await.unwrap().map(|r| r.status),
            Some(ExecutionStatus::Running)
        );
        // Walks see them in creation order, both ways and from a cursor.
        let mut walk = ExecutionWalk::new(ExecutionIndex::All, true);
        assert_eq!(
            ids(&store, &walk).await,
            [d.as_str(), c.as_str(), b.as_str(), a.as_str()]
        );
        walk.newest_first = false;
        assert_eq!(
            ids(&store, &walk).await,
            [a.as_str(), b.as_str(), c.as_str(), d.as_str()]
        );
        walk.after = Some(a.clone());
        assert_eq!(
            ids(&store, &walk).await,
            [b.as_str(), c.as_str(), d.as_str()]
        );
        let script = ExecutionWalk::new(ExecutionIndex::Script(Some("s".into())), true);
        assert_eq!(
            ids(&store, &script).await,
            [c.as_str(), b.as_str(), a.as_str()]
        );
        let running = ExecutionWalk::new(ExecutionIndex::Status(ExecutionStatus::Running), true);
        assert_eq!(ids(&store, &running).await, [b.as_str()]);
        assert_eq!(store.count_executions(&ExecutionIndex::All), 4);
        assert_eq!(
            store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Running)),
            1
        );
        assert!(matches!(
            store.delete_execution(&b).await.unwrap(),
            Removal::NotFinal(ExecutionStatus::Running)
        ));

        // Final: held until its write is applied (it was journaled), then
        // written with its entries; kept: written as it stands.
        store
            .put_execution(&execution(&b, Some("s"), ExecutionStatus::Completed))
            .await
            .unwrap();
        assert!(!on_disk(&b));
        assert_eq!(
            store.execution(&b).await.unwrap().map(|r| r.status),
            Some(ExecutionStatus::Completed)
        );
        store.apply_deferred().await.unwrap();
        assert!(on_disk(&b));
        let completed =
            ExecutionWalk::new(ExecutionIndex::Status(ExecutionStatus::Completed), true);
        assert_eq!(
            ids(&store, &completed).await,
            [c.as_str(), b.as_str(), a.as_str()]
        );
        store.keep_execution(&d).await.unwrap();
        assert!(on_disk(&d));
        let queued = ExecutionWalk::new(ExecutionIndex::Status(ExecutionStatus::Queued), true);
        assert_eq!(ids(&store, &queued).await, [d.as_str()]);
        assert_eq!(store.count_executions(&ExecutionIndex::All), 4);

        // A crash loses what is still held; a close writes it.
        let (e, f) = (id_at(5_000, 0), id_at(6_000, 0));
        store
            .hold_execution(&execution(&e, None, ExecutionStatus::Queued))
            .await
            .unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = reopen(dir.path()).unwrap();
        assert!(store.execution(&e).await.unwrap().is_none());
        assert_eq!(store.count_executions(&ExecutionIndex::All), 4);
        store
            .hold_execution(&execution(&f, None, ExecutionStatus::Queued))
            .await
            .unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = reopen(dir.path()).unwrap();
        let queued = store
            .executions_in(&[ExecutionStatus::Queued])
            .await
            .unwrap();
        assert_eq!(
            queued.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [d.as_str(), f.as_str()]
        );
    }

    #[tokio::test]
    async fn a_run_past_what_may_be_held_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (small, big) = (id_at(1_000, 0), id_at(2_000, 0));
        store
            .hold_execution(&execution(&small, None, ExecutionStatus::Queued))
            .await
            .unwrap();
        let mut past = execution(&big, None, ExecutionStatus::Queued);
        past.code = Some(vec![0; crate::store::held::HELD_BYTES]);
        store.hold_execution(&past).await.unwrap();
        let on_disk = |id: &str| store.executions.get(id).unwrap().is_some();
        assert!(!on_disk(&small), "held");
        assert!(on_disk(&big), "written: holding it would pass the bound");
        assert_eq!(
            store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Queued)),
            2
        );
    }

    #[tokio::test]
    async fn each_organization_s_ad_hoc_runs_are_a_script_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (mine, theirs) = (id_at(1_000, 0), id_at(2_000, 0));
        store
            .put_execution(&execution(&mine, None, ExecutionStatus::Completed))
            .await
            .unwrap();
        let mut other = execution(&theirs, None, ExecutionStatus::Completed);
        other.org = Some("acme".into());
        store.put_execution(&other).await.unwrap();
        assert_eq!(
            store.executions_per_script(),
            [(None, 1), (Some("~acme".to_owned()), 1)]
        );
        let walk = async |index| ids(&store, &ExecutionWalk::new(index, true)).await;
        assert_eq!(walk(ExecutionIndex::Script(None)).await, [mine.as_str()]);
        assert_eq!(
            walk(ExecutionIndex::Script(Some("~acme".into()))).await,
            [theirs.as_str()]
        );
        assert_eq!(
            walk(ExecutionIndex::Org("acme".into())).await,
            [theirs.as_str()]
        );
        assert_eq!(
            walk(ExecutionIndex::Org(DEFAULT_ORG.into())).await,
            [mine.as_str()]
        );
        // A crash's repair keeps them, and drops a stale entry of theirs
        // (under a state the record left), which walks skip until then.
        assert_eq!(execution_keys::repair(&store.executions).unwrap(), 0);
        let stale = keys(
            &Indexed {
                org: Some("acme".into()),
                script_id: None,
                status: ExecutionStatus::Failed,
            },
            &theirs,
        );
        store.executions.insert(&stale[1], &[]).unwrap();
        assert_eq!(
            walk(ExecutionIndex::Org("acme".into())).await,
            [theirs.as_str()]
        );
        assert_eq!(execution_keys::repair(&store.executions).unwrap(), 1);
        store.delete_execution(&theirs).await.unwrap();
        assert_eq!(store.executions_per_script(), [(None, 1)]);
    }

    /// Index entries of `id` (keys below the records that end in it).
    fn entries_of(store: &SledStore, id: &str) -> Vec<Vec<u8>> {
        store
            .executions
            .range(..FIRST_ID)
            .keys()
            .map(|key| key.unwrap().to_vec())
            .filter(|key| key.ends_with(id.as_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn an_organization_s_walks_merge_its_final_states_and_its_unfinished_runs() {
        use ExecutionStatus::{Completed, Failed, Queued, Running};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let id = |n: u64| id_at(1_000 * n, 0);
        let in_acme = |n, status| {
            let mut record = execution(&id(n), Some("s"), status);
            record.org = Some("acme".into());
            record
        };
        // acme: 1 completed, 3 queued (written), 4 running (held), 6 failed;
        // the default organization: 2 completed, 5 failed.
        store.put_execution(&in_acme(1, Completed)).await.unwrap();
        store
            .put_execution(&execution(&id(2), Some("d"), Completed))
            .await
            .unwrap();
        store.put_execution(&in_acme(3, Queued)).await.unwrap();
        store.hold_execution(&in_acme(4, Queued)).await.unwrap();
        store.put_execution(&in_acme(4, Running)).await.unwrap();
        store
            .put_execution(&execution(&id(5), Some("d"), Failed))
            .await
            .unwrap();
        store.put_execution(&in_acme(6, Failed)).await.unwrap();

        async fn check(store: &SledStore, id: impl Fn(u64) -> String) {
            let ns = |ns: &[u64]| ns.iter().map(|n| id(*n)).collect::<Vec<_>>();
            let acme = ExecutionIndex::Org("acme".into());
            let mut walk = ExecutionWalk::new(acme.clone(), true);
            assert_eq!(ids(store, &walk).await, ns(&[6, 4, 3, 1]));
            walk.newest_first = false;
            assert_eq!(ids(store, &walk).await, ns(&[1, 3, 4, 6]));
            walk.newest_first = true;
            walk.after = Some(id(4));
            assert_eq!(ids(store, &walk).await, ns(&[3, 1]));
            walk.after = None;
            walk.created_from_ms = Some(2_000);
            walk.created_until_ms = Some(5_000);
            assert_eq!(ids(store, &walk).await, ns(&[4, 3]));
            let status = |status, newest_first| {
                ExecutionWalk::new(ExecutionIndex::Status(status), newest_first)
            };
            assert_eq!(ids(store, &status(Completed, true)).await, ns(&[2, 1]));
            assert_eq!(ids(store, &status(Failed, false)).await, ns(&[5, 6]));
            let default = ExecutionWalk::new(ExecutionIndex::Org(DEFAULT_ORG.into()), true);
            assert_eq!(ids(store, &default).await, ns(&[5, 2]));
            assert_eq!(store.count_executions(&acme), 4);
            assert_eq!(store.count_executions(&default.index), 2);
            assert_eq!(
                store.count_executions(&ExecutionIndex::Status(Completed)),
                2
            );
            assert_eq!(store.count_executions(&ExecutionIndex::Status(Failed)), 2);
        }
        check(&store, id).await;
        // Two entries each, in either organization; none while held.
        for n in [1, 2, 3, 5, 6] {
            assert_eq!(entries_of(&store, &id(n)).len(), 2, "{n}");
        }
        assert!(entries_of(&store, &id(4)).is_empty());

        // The counters and the unfinished are read back on open.
        store.close().await.unwrap();
        drop(store);
        let store = reopen(dir.path()).unwrap();
        check(&store, id).await;

        // A run that ends leaves memory and is found through its final entry.
        store.put_execution(&in_acme(3, Completed)).await.unwrap();
        let completed = ExecutionWalk::new(ExecutionIndex::Status(Completed), true);
        assert_eq!(ids(&store, &completed).await, [id(3), id(2), id(1)]);
        let acme = ExecutionWalk::new(ExecutionIndex::Org("acme".into()), true);
        assert_eq!(ids(&store, &acme).await, [id(6), id(4), id(3), id(1)]);
        store.delete_execution(&id(1)).await.unwrap();
        assert_eq!(ids(&store, &acme).await, [id(6), id(4), id(3)]);
        assert_eq!(store.count_executions(&acme.index), 3);
        assert!(entries_of(&store, &id(1)).is_empty());
    }

    #[tokio::test]
    async fn a_schema_6_store_s_organization_entries_are_folded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (done, queued, mine) = (id_at(1_000, 0), id_at(2_000, 0), id_at(3_000, 0));
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            let mut failed = execution(&done, Some("s"), ExecutionStatus::Failed);
            failed.org = Some("acme".into());
            let mut waiting = execution(&queued, None, ExecutionStatus::Queued);
            waiting.org = Some("acme".into());
            let completed = execution(&mine, Some("t"), ExecutionStatus::Completed);
            for record in [&failed, &waiting, &completed] {
                store
                    .executions
                    .insert(record.id.as_bytes(), encode(record).unwrap())
                    .unwrap();
            }
            // Schema 6's entries, byte for byte.
            let entries: [(&[u8], &str); 8] = [
                (b"\x01s\x00", &done),
                (b"\x02failed\x00", &done),
                (b"\x04acme\x00", &done),
                (b"\x01~acme\x00", &queued),
                (b"\x03", &queued),
                (b"\x04acme\x00", &queued),
                (b"\x01t\x00", &mine),
                (b"\x02completed\x00", &mine),
            ];
            for (prefix, id) in entries {
                store
                    .executions
                    .insert([prefix, id.as_bytes()].concat(), &[])
                    .unwrap();
            }
            store
                .db
                .open_tree("meta")
                .unwrap()
                .insert("schema_version", encode(&6u32).unwrap())
                .unwrap();
            store.db.flush().unwrap();
        }
        for open in ["migrating", "migrated already"] {
            let store = reopen(dir.path()).unwrap();
            let walk = async |index| ids(&store, &ExecutionWalk::new(index, true)).await;
            let acme = ExecutionIndex::Org("acme".into());
            assert_eq!(
                walk(acme.clone()).await,
                [queued.as_str(), done.as_str()],
                "{open}"
            );
            assert_eq!(
                walk(ExecutionIndex::Status(ExecutionStatus::Failed)).await,
                [done.as_str()]
            );
            assert_eq!(
                walk(ExecutionIndex::Status(ExecutionStatus::Completed)).await,
                [mine.as_str()]
            );
            assert_eq!(
                walk(ExecutionIndex::Org(DEFAULT_ORG.into())).await,
                [mine.as_str()]
            );
            assert_eq!(store.count_executions(&acme), 2);
            assert_eq!(store.count_executions(&ExecutionIndex::All), 3);
            for id in [&done, &queued, &mine] {
                let entries = entries_of(&store, id);
                assert_eq!(entries.len(), 2, "{open}: {entries:?}");
                assert!(entries.iter().all(|key| key[0] != 4));
            }
            store.close().await.unwrap();
        }
    }
}

//! The keys of the executions tree: one tree holds the records and their
//! index entries.
//!
//! - `<id>` → the record; ids are UUIDv7 strings, so key order is creation order;
//! - `0x01 <script id> 0x00 <id>` → nothing (an empty script id: the default
//!   organization's ad-hoc runs; `~<organization id>`: another's, so each
//!   organization's ad-hoc runs are apart, as a script's are);
//! - `0x02 <status> 0x00 <id>` → nothing, for the default organization's
//!   final states;
//! - `0x03 <id>` → nothing, while queued or running: the unfinished, which
//!   recovery reads at open and which are also kept in memory, with their
//!   organization, so the writes of a run after its first read no record
//!   back and an organization's walk finds its unfinished ones;
//! - `0x05 <organization id> 0x00 <status> 0x00 <id>` → nothing, for another
//!   organization's final states.
//!
//! So every execution has two entries, whatever its organization: an
//! organization's walk merges its final states' ranges (and its unfinished
//! executions, from memory), a final state's walk merges the default
//! organization's range with each other organization's. (Schema 6 wrote a
//! third entry, `0x04 <organization id> 0x00 <id>`, for every execution of
//! another organization: one write in four more at the end of each of its
//! runs. [`migrate_to_7`] folds it into these.)
//!
//! Index keys begin below `'0'`, so they sort before every record.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{backend, packed};
use crate::store::executions::{ExecutionIndex, IndexCounts, Indexed};
use crate::store::orgs::DEFAULT_ORG;
use crate::store::{ExecutionStatus, StoreError};

const SCRIPT_INDEX: u8 = 1;
const STATUS_INDEX: u8 = 2;
pub(super) const LIVE_INDEX: u8 = 3;
/// Schema 6's organization entries, read only by [`migrate_to_7`].
const ORG_INDEX_6: u8 = 4;
const ORG_FINAL_INDEX: u8 = 5;
/// Ids are lowercase hex and dashes: every one is at or above the first
/// bound and below the second.
pub(super) const FIRST_ID: &[u8] = b"0";
pub(super) const PAST_IDS: &[u8] = b"g";
/// The keys of the records (not their index entries).
pub(super) const RECORDS: std::ops::Range<&[u8]> = FIRST_ID..PAST_IDS;
pub(super) const ID_LEN: usize = 36;

/// `tag`, then each name and a `0x00`: what the ids of an index follow.
fn prefix(tag: u8, names: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + names.iter().map(|n| n.len() + 1).sum::<usize>() + ID_LEN);
    key.push(tag);
    for name in names {
        key.extend_from_slice(name.as_bytes());
        key.push(0);
    }
    key
}

fn final_prefix(org: Option<&str>, status: ExecutionStatus) -> Vec<u8> {
    match org {
        Some(org) => prefix(ORG_FINAL_INDEX, &[org, status.as_str()]),
        None => prefix(STATUS_INDEX, &[status.as_str()]),
    }
}

/// The index entries of a record in state `indexed`.
pub(super) fn keys(indexed: &Indexed, id: &str) -> [Vec<u8>; 2] {
    let slot = indexed.script_slot();
    let script = prefix(SCRIPT_INDEX, &[slot.as_deref().unwrap_or("")]);
    let state = if indexed.status.is_final() {
        final_prefix(indexed.org.as_deref(), indexed.status)
    } else {
        vec![LIVE_INDEX]
    };
    [script, state].map(|key| [key, id.as_bytes().to_vec()].concat())
}

/// Where a walk reads.
pub(super) enum Source {
    /// The records themselves, in key order.
    Records,
    /// The ids these index ranges end in, merged into one order.
    Entries(Vec<Vec<u8>>),
}

/// Where a walk of `index` reads; `orgs` are the organizations but the
/// default that have executions (a final state's walk reads each one's
/// range).
pub(super) fn source<'o>(index: &ExecutionIndex, orgs: impl Iterator<Item = &'o str>) -> Source {
    match index {
        ExecutionIndex::All => Source::Records,
        // Every record, less those of another organization: a node of one
        // organization reads no entry more.
        ExecutionIndex::Org(org) if org == DEFAULT_ORG => Source::Records,
        // Its unfinished executions join from memory.
        ExecutionIndex::Org(org) => Source::Entries(
            ExecutionStatus::ALL
                .into_iter()
                .filter(|status| status.is_final())
                .map(|status| final_prefix(Some(org), status))
                .collect(),
        ),
        ExecutionIndex::Script(script) => Source::Entries(vec![prefix(
            SCRIPT_INDEX,
            &[script.as_deref().unwrap_or("")],
        )]),
        ExecutionIndex::Status(status) if status.is_final() => Source::Entries(
            std::iter::once(None)
                .chain(orgs.map(Some))
                .map(|org| final_prefix(org, *status))
                .collect(),
        ),
        // Queued and running share one entry, so a claim writes no index;
        // walks tell them apart by the record.
        ExecutionIndex::Status(_) => Source::Entries(vec![vec![LIVE_INDEX]]),
    }
}

/// One range's next id, ordered so the heap's greatest is the walk's next.
struct Head {
    id: Vec<u8>,
    range: usize,
    newest_first: bool,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        let order = self.id.cmp(&other.id).then(other.range.cmp(&self.range));
        if self.newest_first {
            order
        } else {
            order.reverse()
        }
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

type Entries = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send>;

/// The ids of several index ranges in one walk order, each once (an id under
/// two entries, as a crash can leave, is yielded once). Holds one id per
/// range.
pub(super) struct MergedIds {
    ranges: Vec<Entries>,
    heads: BinaryHeap<Head>,
    newest_first: bool,
    started: bool,
    last: Option<Vec<u8>>,
}

impl MergedIds {
    /// The ids in `[low, high)` under each of `prefixes`.
    pub(super) fn new(
        tree: &sled::Tree,
        prefixes: &[Vec<u8>],
        low: &[u8],
        high: &[u8],
        newest_first: bool,
    ) -> Self {
        let ranges = prefixes
            .iter()
            .map(|prefix| {
                let range = tree.range([prefix, low].concat()..[prefix, high].concat());
                if newest_first {
                    Box::new(range.rev()) as Entries
                } else {
                    Box::new(range)
                }
            })
            .collect();
        Self {
            ranges,
            heads: BinaryHeap::with_capacity(prefixes.len()),
            newest_first,
            started: false,
            last: None,
        }
    }

    fn pull(&mut self, range: usize) -> Result<(), StoreError> {
        if let Some(entry) = self.ranges[range].next() {
            let (key, _) = entry.map_err(backend)?;
            if key.len() >= ID_LEN {
                self.heads.push(Head {
                    id: key[key.len() - ID_LEN..].to_vec(),
                    range,
                    newest_first: self.newest_first,
                });
            }
        }
        Ok(())
    }

    fn next_id(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.started {
            self.started = true;
            for range in 0..self.ranges.len() {
                self.pull(range)?;
            }
        }
        while let Some(head) = self.heads.pop() {
            self.pull(head.range)?;
            if self.last.as_ref() != Some(&head.id) {
                self.last = Some(head.id.clone());
                return Ok(Some(head.id));
            }
        }
        Ok(None)
    }
}

impl Iterator for MergedIds {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_id().transpose()
    }
}

/// The bytes between an entry's tag and the `0x00` before its id.
fn names(key: &[u8]) -> Option<&[u8]> {
    let end = key.len().checked_sub(ID_LEN + 1)?;
    (end >= 1 && key[end] == 0).then(|| &key[1..end])
}

fn status_named(name: &[u8]) -> Option<ExecutionStatus> {
    ExecutionStatus::ALL
        .into_iter()
        .find(|s| s.as_str().as_bytes() == name)
}

/// Counts the entries of the final states and the scripts (keys only, no
/// record decoded); `live` is called with each unfinished record's id and
/// state, which it counts itself.
pub(super) fn count_entries(
    tree: &sled::Tree,
    counts: &mut IndexCounts,
    mut live: impl FnMut(String, Indexed),
) -> Result<(), StoreError> {
    for entry in tree.range([SCRIPT_INDEX]..[SCRIPT_INDEX + 1]) {
        let (key, _) = entry.map_err(backend)?;
        if let Some(name) = names(&key) {
            let script = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into());
            *counts.script.entry(script).or_default() += 1;
        }
    }
    for entry in tree.range([STATUS_INDEX]..[STATUS_INDEX + 1]) {
        let (key, _) = entry.map_err(backend)?;
        if let Some(status) = names(&key).and_then(status_named) {
            *counts.status.entry(status).or_default() += 1;
        }
    }
    for entry in tree.range([ORG_FINAL_INDEX]..[ORG_FINAL_INDEX + 1]) {
        let (key, _) = entry.map_err(backend)?;
        let Some(name) = names(&key) else { continue };
        let Some(split) = name.iter().position(|b| *b == 0) else {
            continue;
        };
        if let Some(status) = status_named(&name[split + 1..]) {
            *counts.status.entry(status).or_default() += 1;
            *counts
                .org
                .entry(String::from_utf8_lossy(&name[..split]).into_owned())
                .or_default() += 1;
        }
    }
    for entry in tree.range([LIVE_INDEX]..[LIVE_INDEX + 1]) {
        let (key, _) = entry.map_err(backend)?;
        let id = &key[1..];
        let record = tree.get(id).map_err(backend)?;
        if let Some(indexed) = record.and_then(|b| packed::RECORD.decode::<Indexed>(&b).ok()) {
            *counts.status.entry(indexed.status).or_default() += 1;
            if let Some(org) = &indexed.org {
                *counts.org.entry(org.clone()).or_default() += 1;
            }
            live(String::from_utf8_lossy(id).into_owned(), indexed);
        }
    }
    Ok(())
}

/// Writes the index entries of every record: what the executions tree of
/// schema version 2 lacks. Safe to run twice.
pub(super) fn index_all(tree: &sled::Tree) -> Result<(), StoreError> {
    for entry in tree.range(RECORDS) {
        let (id, bytes) = entry.map_err(backend)?;
        let Ok(indexed) = packed::RECORD.decode::<Indexed>(&bytes) else {
            tracing::error!(id = %String::from_utf8_lossy(&id), "an unreadable execution is left out of the indexes");
            continue;
        };
        for key in keys(&indexed, &String::from_utf8_lossy(&id)) {
            tree.insert(key, &[]).map_err(backend)?;
        }
    }
    Ok(())
}

/// Folds schema 6's organization entries into the final states' (see the
/// module's doc): new entries first, old ones after, so it is safe to run
/// again after a crash. Returns how many it folded.
pub(super) fn migrate_to_7(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut folded = 0;
    for entry in tree.range([ORG_INDEX_6]..[ORG_INDEX_6 + 1]) {
        let (key, _) = entry.map_err(backend)?;
        if key.len() > ID_LEN {
            let id = &key[key.len() - ID_LEN..];
            let record = tree.get(id).map_err(backend)?;
            if let Some(indexed) = record.and_then(|b| packed::RECORD.decode::<Indexed>(&b).ok()) {
                let id = String::from_utf8_lossy(id);
                for new in keys(&indexed, &id) {
                    tree.insert(new, &[]).map_err(backend)?;
                }
                if indexed.org.is_some() && indexed.status.is_final() {
                    let old = [final_prefix(None, indexed.status), id.as_bytes().to_vec()];
                    tree.remove(old.concat()).map_err(backend)?;
                }
                folded += 1;
            }
        }
        tree.remove(&key).map_err(backend)?;
    }
    Ok(folded)
}

/// Drops the index entries whose record is gone or says otherwise: what a
/// crash between a record's write and its entries' can leave. Reads every
/// entry (keys) and its record, so `open` runs it only after a crash.
pub(super) fn repair(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut dropped = 0;
    for entry in tree.range([SCRIPT_INDEX]..[ORG_FINAL_INDEX + 1]) {
        let (key, _) = entry.map_err(backend)?;
        if key.len() < ID_LEN + 1 {
            continue;
        }
        let id = &key[key.len() - ID_LEN..];
        let indexed = match tree.get(id).map_err(backend)? {
            Some(bytes) => packed::RECORD.decode::<Indexed>(&bytes).ok(),
            None => None,
        };
        let holds = indexed.is_some_and(|indexed| {
            keys(&indexed, &String::from_utf8_lossy(id)).contains(&key.to_vec())
        });
        if !holds {
            tree.remove(&key).map_err(backend)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(merged: MergedIds) -> Vec<String> {
        merged
            .map(|id| String::from_utf8(id.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn merged_ranges_come_out_in_one_order_each_id_once() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let id = |n: u32| format!("{n:036}");
        let a = prefix(ORG_FINAL_INDEX, &["a", "completed"]);
        let b = prefix(ORG_FINAL_INDEX, &["a", "failed"]);
        for (p, n) in [(&a, 1), (&b, 2), (&a, 3), (&b, 3), (&a, 5), (&b, 4)] {
            tree.insert([p.clone(), id(n).into_bytes()].concat(), &[])
                .unwrap();
        }
        // Entries under another name sort between the two ranges, unread.
        tree.insert(
            [prefix(ORG_FINAL_INDEX, &["a", "d"]), id(9).into_bytes()].concat(),
            &[],
        )
        .unwrap();
        let prefixes = [a, b];
        let walk = |low: &str, high: &str, newest_first| {
            ids(MergedIds::new(
                &tree,
                &prefixes,
                low.as_bytes(),
                high.as_bytes(),
                newest_first,
            ))
        };
        let all = [1, 2, 3, 4, 5].map(id);
        assert_eq!(walk("0", "g", false), all);
        assert_eq!(
            walk("0", "g", true),
            all.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert_eq!(walk(&id(2), &id(5), false), [2, 3, 4].map(id));
        assert!(walk(&id(6), "g", true).is_empty());
        assert!(
            ids(MergedIds::new(&tree, &[], b"0", b"g", true)).is_empty(),
            "no range, no id"
        );
    }

    #[test]
    fn an_execution_has_two_entries_whatever_its_organization() {
        let indexed = |org: Option<&str>, status| Indexed {
            org: org.map(Into::into),
            script_id: Some("s".into()),
            status,
        };
        let id = "0".repeat(ID_LEN);
        for org in [None, Some("acme")] {
            for status in ExecutionStatus::ALL {
                let keys = keys(&indexed(org, status), &id);
                assert_eq!(keys[0][0], SCRIPT_INDEX);
                let tag = match (org, status.is_final()) {
                    (_, false) => LIVE_INDEX,
                    (None, true) => STATUS_INDEX,
                    (Some(_), true) => ORG_FINAL_INDEX,
                };
                assert_eq!(keys[1][0], tag, "{org:?} {status:?}");
            }
        }
    }
}

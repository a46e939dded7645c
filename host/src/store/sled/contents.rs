//! An execution record's large fields, stored once by content. The same
//! ad-hoc code runs again and again, and one script's runs often print
//! the same output; stored inline, each record carried its own copy. A
//! field at or above its size (`CODE_APART`, `OUTPUT_APART`) is kept in
//! the `contents` tree under its BLAKE3 hash and the record names the hash
//! (`"apart": {"stdout": "<hex>"}`), so it costs its bytes once however
//! many records hold it. Smaller fields stay inline: below those sizes a
//! reference costs more than the copy.
//!
//! The tree holds:
//!
//! - `c <hash>` → the bytes;
//! - `r <hash> <execution id>` → nothing: that record holds the content.
//!
//! As with the executions' index entries, writes are ordered so a crash
//! leaves only something too many: a content and its reference are written
//! before the record, and removed after it; `repair` (run by `open` after a
//! crash) drops references whose record does not name them and contents
//! nothing references. A content is removed only while its hash's lock is
//! held and no reference is left, so a record written meanwhile cannot
//! lose the content it names.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{backend, decode};
use crate::store::{ExecutionRecord, StoreError};

/// Ad-hoc code of at least this many bytes is stored apart: one run's code
/// is the next run's too.
pub(super) const CODE_APART: usize = 1024;
/// A result (as JSON), stdout or stderr of at least this many bytes is
/// stored apart.
pub(super) const OUTPUT_APART: usize = 4096;
const CONTENT: u8 = b'c';
const REFERENCE: u8 = b'r';
const HASH_LEN: usize = blake3::OUT_LEN;
const LOCK_STRIPES: usize = 16;

/// A field of an execution record that may be stored apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Field {
    Code,
    Result,
    Stdout,
    Stderr,
}

/// The fields a stored record keeps apart, by the hex of their hash.
pub(super) type Apart = BTreeMap<Field, String>;

/// What a stored record says of its fields kept apart (every other field
/// is skipped, not decoded).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ApartOf {
    #[serde(default)]
    pub apart: Apart,
}

impl ApartOf {
    /// The fields `bytes` (a stored record) keeps apart. Most records keep
    /// none and do not name the field, so they are not decoded twice.
    pub fn read(bytes: &[u8]) -> Result<Apart, StoreError> {
        if !names_apart(bytes) {
            return Ok(Apart::new());
        }
        Ok(decode::<Self>(bytes)?.apart)
    }
}

/// How far from a stored record's end its `apart` begins at most: it is
/// written last, and names at most four hashes.
const APART_TAIL: usize = 512;

/// Whether `"apart"` occurs near the end of `bytes`: a record that keeps a
/// field apart has it there; one that does not may too (in a string), and
/// is then decoded to find that its `apart` is empty.
fn names_apart(bytes: &[u8]) -> bool {
    bytes[bytes.len().saturating_sub(APART_TAIL)..]
        .windows(7)
        .any(|w| w == b"\"apart\"")
}

#[derive(Serialize)]
struct Storing<'a> {
    #[serde(flatten)]
    record: &'a ExecutionRecord,
    apart: &'a Apart,
}

/// A content a record about to be written keeps apart.
#[derive(Debug)]
pub(super) struct Piece {
    pub hash: blake3::Hash,
    pub bytes: Vec<u8>,
}

/// `record` as it is stored, and the contents it keeps apart (written
/// before it, [`Contents::put`]).
pub(super) fn split(record: &ExecutionRecord) -> Result<(Vec<u8>, Vec<Piece>), StoreError> {
    // Most records are smaller whole than the smallest field kept apart
    // (code, which the record holds as base64, a third larger): encoded
    // once, with nothing more to look at.
    let whole = super::encode(record)?;
    if whole.len() < CODE_APART {
        return Ok((whole, Vec::new()));
    }
    let result = match &record.result {
        Some(result) => {
            Some(serde_json::to_vec(result).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                .filter(|json| json.len() >= OUTPUT_APART)
        }
        None => None,
    };
    let code = record.code.as_ref().filter(|c| c.len() >= CODE_APART);
    let stdout = (record.stdout.len() >= OUTPUT_APART).then_some(&record.stdout);
    let stderr = (record.stderr.len() >= OUTPUT_APART).then_some(&record.stderr);
    if code.is_none() && result.is_none() && stdout.is_none() && stderr.is_none() {
        return Ok((whole, Vec::new()));
    }
    let mut kept = record.clone();
    let mut apart = Apart::new();
    let mut pieces = Vec::new();
    let mut keep = |field: Field, bytes: Vec<u8>| {
        let hash = blake3::hash(&bytes);
        apart.insert(field, hash.to_hex().to_string());
        pieces.push(Piece { hash, bytes });
    };
    if let Some(code) = code {
        keep(Field::Code, code.clone());
        kept.code = None;
    }
    if let Some(result) = result {
        keep(Field::Result, result);
        kept.result = None;
    }
    if let Some(stdout) = stdout {
        keep(Field::Stdout, stdout.as_bytes().to_vec());
        kept.stdout = String::new();
    }
    if let Some(stderr) = stderr {
        keep(Field::Stderr, stderr.as_bytes().to_vec());
        kept.stderr = String::new();
    }
    let bytes = serde_json::to_vec(&Storing {
        record: &kept,
        apart: &apart,
    })
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((bytes, pieces))
}

fn content_key(hash: &[u8; HASH_LEN]) -> Vec<u8> {
    [&[CONTENT][..], hash].concat()
}

fn reference_key(hash: &[u8; HASH_LEN], id: &str) -> Vec<u8> {
    [&[REFERENCE][..], hash, id.as_bytes()].concat()
}

fn parse_hash(hex: &str) -> Result<[u8; HASH_LEN], StoreError> {
    blake3::Hash::from_hex(hex)
        .map(|hash| *hash.as_bytes())
        .map_err(|e| StoreError::Corrupt(format!("a stored content's hash {hex:?}: {e}")))
}

/// The `contents` tree and the locks that order its writes.
pub(super) struct Contents {
    tree: sled::Tree,
    locks: [Mutex<()>; LOCK_STRIPES],
}

impl Contents {
    pub fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            locks: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    fn lock(&self, hash: &[u8; HASH_LEN]) -> std::sync::MutexGuard<'_, ()> {
        self.locks[usize::from(hash[0]) % LOCK_STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores each piece (unless it is already) and a reference to it from
    /// the record `id`: before the record is written.
    pub fn put(&self, id: &str, pieces: &[Piece]) -> Result<(), StoreError> {
        for piece in pieces {
            let hash = piece.hash.as_bytes();
            let _held = self.lock(hash);
            let key = content_key(hash);
            if !self.tree.contains_key(&key).map_err(backend)? {
                self.tree
                    .insert(key, piece.bytes.as_slice())
                    .map_err(backend)?;
            }
            self.tree
                .insert(reference_key(hash, id), &[])
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Drops the record `id`'s references to `hashes` (hex), and each
    /// content no other record references: after the record is removed or
    /// rewritten without them.
    pub fn release<'h>(
        &self,
        id: &str,
        hashes: impl IntoIterator<Item = &'h String>,
    ) -> Result<(), StoreError> {
        for hex in hashes {
            let hash = parse_hash(hex)?;
            let _held = self.lock(&hash);
            self.tree
                .remove(reference_key(&hash, id))
                .map_err(backend)?;
            let prefix = [&[REFERENCE][..], &hash].concat();
            if self.tree.scan_prefix(prefix).next().is_none() {
                self.tree.remove(content_key(&hash)).map_err(backend)?;
            }
        }
        Ok(())
    }

    /// Puts back into `record` the fields `apart` names; `false` when a
    /// content is missing (the record was deleted or rewritten since its
    /// bytes were read: the caller reads it again).
    pub fn fill(&self, record: &mut ExecutionRecord, apart: &Apart) -> Result<bool, StoreError> {
        for (field, hex) in apart {
            let hash = parse_hash(hex)?;
            let Some(bytes) = self.tree.get(content_key(&hash)).map_err(backend)? else {
                return Ok(false);
            };
            let text = || {
                String::from_utf8(bytes.to_vec()).map_err(|e| StoreError::Corrupt(e.to_string()))
            };
            match field {
                Field::Code => record.code = Some(bytes.to_vec()),
                Field::Result => record.result = Some(decode(&bytes)?),
                Field::Stdout => record.stdout = text()?,
                Field::Stderr => record.stderr = text()?,
            }
        }
        Ok(true)
    }

    /// Contents and references stored.
    #[cfg(test)]
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let count = |tag: u8| -> Result<u64, StoreError> {
            let mut n = 0;
            for entry in self.tree.scan_prefix([tag]) {
                entry.map_err(backend)?;
                n += 1;
            }
            Ok(n)
        };
        Ok((count(CONTENT)?, count(REFERENCE)?))
    }

    /// Drops the references whose record is gone or names another content
    /// there, then the contents nothing references: what a crash between a
    /// record's writes can leave. Reads every reference and content key
    /// (and each referencing record), so `open` runs it only after a crash.
    pub fn repair(&self, executions: &sled::Tree) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for entry in self.tree.scan_prefix([REFERENCE]) {
            let (key, _) = entry.map_err(backend)?;
            let Some(hash) = key.get(1..=HASH_LEN) else {
                continue;
            };
            let id = &key[1 + HASH_LEN..];
            let hex = blake3::Hash::from_slice(hash)
                .map(|h| h.to_hex().to_string())
                .unwrap_or_default();
            // A record that cannot be read keeps what it may name.
            let named = match executions.get(id).map_err(backend)? {
                Some(bytes) => super::packed::RECORD
                    .unpack(&bytes)
                    .and_then(|json| ApartOf::read(&json))
                    .map(|apart| apart.values().any(|h| *h == hex))
                    .unwrap_or(true),
                None => false,
            };
            if !named {
                self.tree.remove(&key).map_err(backend)?;
                dropped += 1;
            }
        }
        for entry in self.tree.scan_prefix([CONTENT]) {
            let (key, _) = entry.map_err(backend)?;
            let references = [&[REFERENCE][..], &key[1..]].concat();
            if self.tree.scan_prefix(references).next().is_none() {
                self.tree.remove(&key).map_err(backend)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SledStore;
    use super::super::tests::{TEST_CACHE_BYTES, reopen};
    use super::*;
    use crate::store::ExecutionStatus;
    use crate::store::executions::{ExecutionIndex, ExecutionStore as _, ExecutionWalk, Removal};
    use crate::store::testing::{execution, id_at};

    /// A finished ad-hoc run with 2 KiB of code that printed 8 KiB and
    /// returned a 5 KiB string: every large field.
    fn large(id: &str, stdout: char) -> ExecutionRecord {
        let mut record = execution(id, None, ExecutionStatus::Completed);
        record.code = Some(vec![b'x'; 2 * 1024]);
        record.stdout = std::iter::repeat_n(stdout, 8 * 1024).collect();
        record.stderr = "small".into();
        record.result = Some(serde_json::json!("r".repeat(5 * 1024)));
        record
    }

    fn fresh() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        (dir, store)
    }

    #[test]
    fn every_field_apart_names_them_within_the_tail_a_read_looks_at() {
        let mut record = large(&id_at(1_000, 0), 'o');
        record.stderr = "e".repeat(OUTPUT_APART);
        let (bytes, pieces) = split(&record).unwrap();
        assert_eq!(pieces.len(), 4);
        assert!(
            bytes.len() > APART_TAIL,
            "the record alone is longer than the tail"
        );
        let from_end = bytes.len() - bytes.windows(7).rposition(|w| w == b"\"apart\"").unwrap();
        assert!(from_end < APART_TAIL, "{from_end}");
        assert_eq!(ApartOf::read(&bytes).unwrap().len(), 4);
    }

    #[test]
    fn a_field_at_its_size_is_kept_apart_and_one_byte_under_is_not() {
        let mut record = execution(&id_at(1_000, 0), None, ExecutionStatus::Completed);
        record.code = Some(vec![b'x'; CODE_APART]);
        record.stdout = "o".repeat(OUTPUT_APART);
        record.stderr = "e".repeat(OUTPUT_APART - 1);
        let (bytes, pieces) = split(&record).unwrap();
        let apart = ApartOf::read(&bytes).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            apart.keys().copied().collect::<Vec<_>>(),
            [Field::Code, Field::Stdout]
        );
    }

    fn stored_bytes(store: &SledStore, id: &str) -> usize {
        store.executions.get(id).unwrap().unwrap().len()
    }

    #[tokio::test]
    async fn large_fields_are_stored_once_and_read_back_whole() {
        let (_dir, store) = fresh();
        let (a, b) = (id_at(1_000, 0), id_at(2_000, 0));
        store.put_execution(&large(&a, 'o')).await.unwrap();
        store.put_execution(&large(&b, 'o')).await.unwrap();
        // Code, result and stdout once each, referenced by both; stderr inline.
        assert_eq!(store.contents.counts().unwrap(), (3, 6));
        assert!(
            stored_bytes(&store, &a) < 1024,
            "{}",
            stored_bytes(&store, &a)
        );
        assert_eq!(store.execution(&a).await.unwrap(), Some(large(&a, 'o')));
        let mut walked = Vec::new();
        store
            .walk_executions(&ExecutionWalk::new(ExecutionIndex::All, false), &mut |r| {
                walked.push(r);
                std::ops::ControlFlow::Continue(())
            })
            .await
            .unwrap();
        assert_eq!(walked, [large(&a, 'o'), large(&b, 'o')]);

        // A content stays while any record holds it.
        assert!(matches!(
            store.delete_execution(&a).await.unwrap(),
            Removal::Removed
        ));
        assert_eq!(store.contents.counts().unwrap(), (3, 3));
        assert_eq!(store.execution(&b).await.unwrap(), Some(large(&b, 'o')));
        assert!(matches!(
            store.delete_execution(&b).await.unwrap(),
            Removal::Removed
        ));
        assert_eq!(store.contents.counts().unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn a_rewritten_record_lets_go_of_what_it_no_longer_holds() {
        let (_dir, store) = fresh();
        let id = id_at(1_000, 0);
        // Queued with its code apart, then final with its outputs.
        let mut queued = large(&id, 'o');
        queued.status = ExecutionStatus::Queued;
        queued.completed_at = None;
        queued.result = None;
        queued.stdout.clear();
        store.put_execution(&queued).await.unwrap();
        assert_eq!(store.contents.counts().unwrap(), (1, 1));
        store.put_execution(&large(&id, 'o')).await.unwrap();
        assert_eq!(store.contents.counts().unwrap(), (3, 3));
        // Final again with another stdout: the old one goes.
        store.put_execution(&large(&id, 'p')).await.unwrap();
        assert_eq!(store.contents.counts().unwrap(), (3, 3));
        assert_eq!(store.execution(&id).await.unwrap(), Some(large(&id, 'p')));
        let mut small = large(&id, 'p');
        small.stdout = "short".into();
        small.result = None;
        small.code = None;
        store.put_execution(&small).await.unwrap();
        assert_eq!(store.contents.counts().unwrap(), (0, 0));
        assert_eq!(store.execution(&id).await.unwrap(), Some(small));
    }

    /// Records holding one content written and deleted from several
    /// threads at once: whatever interleaving, every record left reads back
    /// whole, and the content goes with the last of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_content_is_never_removed_under_a_record_written_meanwhile() {
        let (_dir, store) = fresh();
        let store = std::sync::Arc::new(store);
        let tasks: Vec<_> = (0..4u8)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    for round in 0..50u8 {
                        let id = id_at(1_000 + u64::from(round), task);
                        store.put_execution(&large(&id, 'o')).await.unwrap();
                        // Every other one stays: the rest are deleted at once.
                        if round % 2 == 1 {
                            store.delete_execution(&id).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut kept = 0;
        for task in 0..4u8 {
            for round in (0..50u8).step_by(2) {
                let id = id_at(1_000 + u64::from(round), task);
                assert_eq!(store.execution(&id).await.unwrap(), Some(large(&id, 'o')));
                kept += 1;
            }
        }
        assert_eq!(store.contents.counts().unwrap(), (3, 3 * kept));
        for task in 0..4u8 {
            for round in (0..50u8).step_by(2) {
                store
                    .delete_execution(&id_at(1_000 + u64::from(round), task))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(store.contents.counts().unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn a_read_that_meets_a_delete_finds_nothing_and_a_lost_content_is_an_error() {
        let (_dir, store) = fresh();
        let (a, b) = (id_at(1_000, 0), id_at(2_000, 0));
        store.put_execution(&large(&a, 'o')).await.unwrap();
        store.put_execution(&large(&b, 'p')).await.unwrap();
        // Its bytes read, then the record deleted before its contents are.
        let bytes = store.executions.get(&a).unwrap().unwrap();
        store.delete_execution(&a).await.unwrap();
        assert!(store.read_execution(&bytes).unwrap().is_none());
        assert!(store.stored_execution(&a).unwrap().is_none());
        // A stored record whose content is gone (never by the store's own
        // writes) is said to be corrupt, not shown without its output.
        let (_, pieces) = split(&large(&b, 'p')).unwrap();
        let stdout = pieces.iter().find(|p| p.bytes.starts_with(b"ppp")).unwrap();
        store
            .contents
            .tree
            .remove(content_key(stdout.hash.as_bytes()))
            .unwrap();
        assert!(matches!(
            store.execution(&b).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn small_fields_stay_inline() {
        let (_dir, store) = fresh();
        let id = id_at(1_000, 0);
        let mut record = execution(&id, None, ExecutionStatus::Completed);
        record.code = Some(vec![b'x'; CODE_APART - 1]);
        record.stdout = "o".repeat(OUTPUT_APART - 1);
        // A string that names the field is not mistaken for it.
        record.stderr = r#"{"apart":{"stdout":"00"}}"#.into();
        store.put_execution(&record).await.unwrap();
        assert_eq!(store.contents.counts().unwrap(), (0, 0));
        assert_eq!(store.execution(&id).await.unwrap(), Some(record));
    }

    #[tokio::test]
    async fn what_a_crash_left_is_dropped_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, gone) = (id_at(1_000, 0), id_at(2_000, 0));
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store.put_execution(&large(&kept, 'o')).await.unwrap();
            // As a crash leaves them: a record's contents and references
            // written, the record not; and a content whose last reference
            // was dropped, the content not yet.
            let (_, pieces) = split(&large(&gone, 'q')).unwrap();
            store.contents.put(&gone, &pieces).unwrap();
            let orphan = blake3::hash(b"orphan");
            store
                .contents
                .tree
                .insert(content_key(orphan.as_bytes()), &b"orphan"[..])
                .unwrap();
            assert_eq!(store.contents.counts().unwrap(), (5, 6));
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        // The stdout of `gone` and the orphan: code and result are `kept`'s too.
        assert_eq!(store.contents.counts().unwrap(), (3, 3));
        assert_eq!(
            store.execution(&kept).await.unwrap(),
            Some(large(&kept, 'o'))
        );
    }
}

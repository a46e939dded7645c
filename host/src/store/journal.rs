//! The sled store's journal of final records: what an answer reporting a
//! run's end waits for, in place of a flush of the whole store. An entry is
//! appended after its writes to sled; a group of entries is one `pwrite` and
//! one `fdatasync` of a file written through beforehand, so the sync has no
//! size or extent to commit. sled itself is flushed in the background:
//! every full flush ([`super::group_commit`]) first notes in the store how
//! far the journal was appended (`covered`), so the entries up to there are
//! in sled once it returns; `open` replays only the entries past it.
//!
//! Two files of [`FILE_BYTES`] each take turns. A file is written from its
//! start again only once every entry in it is covered. An entry is
//! `magic, seq, length, hash, payload`, and a file is read from its start
//! while each entry is whole and its `seq` higher than the one before: a
//! torn write, the zeros of a new file and the entries of a file's earlier
//! turn all end the read. An entry that does not fit in either file (a
//! burst that outruns the full flushes, or a payload past [`MAX_ENTRY`]) is
//! not journaled: its waiters flush the whole store instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::StoreError;
use super::disk_sync::FileSyncer;

/// Each file's size, written through (zeros) when it is made.
pub const FILE_BYTES: u64 = 8 << 20;
/// A payload past this is not journaled (its waiters flush the store).
pub const MAX_ENTRY: usize = 1 << 20;
/// Entries waiting for a write past this are dropped and left to a full
/// flush: nobody syncs them (no writer runs), or the write under way is
/// stuck on a disk that stalls while answers keep filling.
const MAX_PENDING: usize = 2 << 20;
/// Past this much of the file being written, the writer turns to the
/// other file if it is free, and else the next answer starts a full flush
/// at once, to free it.
const CHECKPOINT_BYTES: u64 = FILE_BYTES / 4;
/// A full flush at least this often while entries are appended, so that
/// a replay after a crash stays short.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

const MAGIC: [u8; 4] = *b"KJ1\n";
const HEADER: usize = 4 + 8 + 4 + 8;
const NAMES: [&str; 2] = ["journal-0", "journal-1"];

/// What a wait for the journal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Every entry appended before the wait is on disk.
    Journaled,
    /// An entry did not fit: flush the whole store.
    NeedsFlush,
}

/// An entry found at open, past what the store had covered.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    pub seq: u64,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Pending {
    /// Framed entries not yet written.
    bytes: Vec<u8>,
    /// Entries filled before one reserved earlier: bounded by the writes
    /// of final records in progress at once.
    filled: std::collections::BTreeMap<u64, Option<Vec<u8>>>,
    /// Whether a caller is writing (see [`Journal::sync`]).
    writing: bool,
    /// Entries filled before their writes to sled (a record held in memory
    /// meanwhile): no full flush covers them until they are applied.
    /// Bounded by the held records (`held.rs`).
    unapplied: std::collections::BTreeSet<u64>,
}

struct Files {
    files: [File; 2],
    paths: [PathBuf; 2],
    active: usize,
    /// Where the next write to the active file goes.
    offset: u64,
    /// The highest seq each file holds in its current turn: it may be
    /// written again once that is covered.
    last_seq: [u64; 2],
}

pub struct Journal {
    syncer: Arc<dyn FileSyncer>,
    /// The seq of the latest entry reserved; taken under `pending`.
    reserved: AtomicU64,
    /// Every entry up to this seq is filled (its writes done) and framed
    /// into `pending`, or overflowed; moved under `pending`.
    appended: AtomicU64,
    /// Every entry up to this seq is in sled on disk (a full flush).
    covered: AtomicU64,
    covered_at: Mutex<Instant>,
    /// The highest seq not journaled (it did not fit).
    overflowed: AtomicU64,
    pending: Mutex<Pending>,
    files: Mutex<Files>,
    /// Every entry up to this seq is written and synced, or overflowed.
    written: watch::Sender<u64>,
    /// Bytes the file being written holds this turn (read without the
    /// files' lock, which a sync holds).
    in_turn: AtomicU64,
    checkpointing: AtomicBool,
    /// Wakes the writer when an entry is filled. Only the writer waits on
    /// it: waking every waiter at every fill would cost each of them a poll
    /// and a lock of `pending` per answer.
    on_fill: Notify,
    /// Wakes the waiters when a writer hands over, so one whose entry is
    /// not written takes over.
    handed_over: Notify,
    syncs: AtomicU64,
    /// How long the last write and sync took, in µs: a slow disk's sync is
    /// not made on a worker without handing its core away.
    last_write_us: AtomicU64,
}

/// A lone entry's write is made on the worker itself only while writes
/// take less than this.
const INLINE_WRITE_BELOW: Duration = Duration::from_millis(2);

/// The writer's turn, given up when it ends however it ends (its caller
/// may be dropped while it waits).
struct HandOver<'a>(&'a Journal);

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        self.0.lock_pending().writing = false;
        self.0.handed_over.notify_waiters();
    }
}

/// A seq taken by [`Journal::reserve`].
pub struct Reserved<'a> {
    journal: &'a Journal,
    seq: u64,
    filled: bool,
}

impl Reserved<'_> {
    /// The writes are done: journal `payload` (`None`: leave the entry to
    /// a full flush).
    pub fn fill(mut self, payload: Option<&[u8]>) {
        self.filled = true;
        self.journal.fill(self.seq, payload);
    }
}

impl Reserved<'_> {
    /// Journals `payload` before its writes to sled are made: a full flush
    /// covers it only once [`Journal::applied`] says they are. The seq.
    pub fn fill_unapplied(mut self, payload: &[u8]) -> u64 {
        self.filled = true;
        self.journal.lock_pending().unapplied.insert(self.seq);
        self.journal.fill(self.seq, Some(payload));
        self.seq
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.journal.fill(self.seq, None);
        }
    }
}

impl Journal {
    /// Opens the two files in `dir` (made, written through and synced if
    /// missing) and reads the entries past `covered`, in seq order.
    pub fn open(
        dir: &Path,
        syncer: Arc<dyn FileSyncer>,
        covered: u64,
    ) -> io::Result<(Arc<Self>, Vec<Found>)> {
        let mut made = false;
        let mut cut_short = false;
        let mut found = Vec::new();
        let mut highest = covered;
        let mut open_one = |name: &str| -> io::Result<(File, PathBuf)> {
            let path = dir.join(name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let len = file.metadata()?.len();
            let (entries, ended_on_bytes) = read_entries(&file, len)?;
            cut_short |= ended_on_bytes;
            for entry in entries {
                highest = highest.max(entry.seq);
                if entry.seq > covered {
                    found.push(entry);
                }
            }
            if len < FILE_BYTES {
                write_zeros(&file, len)?;
                syncer.sync_all(&file, &path)?;
                made = true;
            }
            Ok((file, path))
        };
        let (first, first_path) = open_one(NAMES[0])?;
        let (second, second_path) = open_one(NAMES[1])?;
        if made {
            syncer.sync_all(&File::open(dir)?, dir)?;
        }
        found.sort_by_key(|entry| entry.seq);
        if cut_short {
            // Past a torn write, whole entries may follow with seqs above
            // those read: new seqs start above any the files can hold, so
            // none of those is ever read as part of a later turn.
            highest = highest.saturating_add(2 * FILE_BYTES / HEADER as u64);
        }
        let journal = Self {
            syncer,
            reserved: AtomicU64::new(highest),
            appended: AtomicU64::new(highest),
            covered: AtomicU64::new(covered),
            covered_at: Mutex::new(Instant::now()),
            overflowed: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            // Both files hold only what `found` has: neither is written
            // before a full flush covers it (`highest`).
            files: Mutex::new(Files {
                files: [first, second],
                paths: [first_path, second_path],
                active: 0,
                offset: FILE_BYTES,
                last_seq: [highest, highest],
            }),
            written: watch::Sender::new(highest),
            in_turn: AtomicU64::new(0),
            checkpointing: AtomicBool::new(false),
            on_fill: Notify::new(),
            handed_over: Notify::new(),
            syncs: AtomicU64::new(0),
            last_write_us: AtomicU64::new(0),
        };
        Ok((Arc::new(journal), found))
    }

    /// Takes the next seq, before the writes the entry stands for: a
    /// reader that sees those writes and then waits ([`Self::sync`]) waits
    /// for the entry too. Fill it once they are done; dropped unfilled
    /// (the writes failed), it is left to a full flush.
    pub fn reserve(&self) -> Reserved<'_> {
        let _pending = self.lock_pending();
        let seq = self.reserved.load(Ordering::Relaxed) + 1;
        self.reserved.store(seq, Ordering::Release);
        Reserved {
            journal: self,
            seq,
            filled: false,
        }
    }

    /// Reserves and fills at once: an entry whose writes are done.
    #[cfg(test)]
    pub fn append(&self, payload: &[u8]) -> u64 {
        let entry = self.reserve();
        let seq = entry.seq;
        entry.fill(Some(payload));
        seq
    }

    /// Entry `seq` is ready (`None`: not journaled). Entries are framed
    /// in seq order: one filled early waits for those before it.
    fn fill(&self, seq: u64, payload: Option<&[u8]>) {
        let framed = match payload {
            Some(payload) if payload.len() <= MAX_ENTRY => {
                let mut framed = Vec::with_capacity(HEADER + payload.len());
                frame(&mut framed, seq, payload);
                Some(framed)
            }
            _ => None,
        };
        {
            let mut pending = self.lock_pending();
            pending.filled.insert(seq, framed);
            let mut appended = self.appended.load(Ordering::Relaxed);
            while let Some(framed) = pending.filled.remove(&(appended + 1)) {
                appended += 1;
                match framed {
                    Some(framed) => pending.bytes.extend_from_slice(&framed),
                    None => {
                        self.overflowed.fetch_max(appended, Ordering::AcqRel);
                    }
                }
            }
            self.appended.store(appended, Ordering::Release);
            // Nobody waits for these (final records stored by a path that
            // flushes the whole store, or a store filled directly), or the
            // write before them is stuck: left to a full flush rather than
            // held without bound.
            if pending.bytes.len() > MAX_PENDING {
                pending.bytes = Vec::new();
                self.overflowed.fetch_max(appended, Ordering::AcqRel);
            }
        }
        self.on_fill.notify_waiters();
    }

    /// The seq of the latest entry appended.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// What a full flush starting now covers once it returns: the entries
    /// appended, up to the first whose writes to sled are not made yet.
    pub fn coverable(&self) -> u64 {
        let pending = self.lock_pending();
        let appended = self.appended.load(Ordering::Acquire);
        match pending.unapplied.first() {
            Some(&first) => appended.min(first - 1),
            None => appended,
        }
    }

    /// The writes to sled of an entry filled by
    /// [`Reserved::fill_unapplied`] are made.
    pub fn applied(&self, seq: u64) {
        self.lock_pending().unapplied.remove(&seq);
    }

    /// Writes synced since open.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Every entry up to this seq is in sled on disk.
    pub fn covered(&self) -> u64 {
        self.covered.load(Ordering::Acquire)
    }

    /// A full flush that started after entry `seq` was appended returned.
    pub fn cover(&self, seq: u64) {
        {
            // What waits to be written is in sled now: not needed.
            let mut pending = self.lock_pending();
            if self.appended.load(Ordering::Acquire) <= seq && !pending.writing {
                pending.bytes = Vec::new();
            }
        }
        if self.covered.fetch_max(seq, Ordering::AcqRel) < seq {
            *self
                .covered_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
    }

    /// [`Self::sync_among`] with nothing else running.
    #[cfg(test)]
    pub async fn sync(self: &Arc<Self>) -> Result<Synced, StoreError> {
        self.sync_among(&|| false).await
    }

    /// Returns once every entry reserved before the call is on disk, or
    /// says that one of them was not journaled. The first caller to find
    /// no writer writes, on its own thread (in `block_in_place` unless
    /// [`Self::gives_core_away`] says otherwise), for itself and for
    /// whoever filled an entry meanwhile; the others wait for it (or take
    /// over when it is done and theirs is not written). `busy`: whether the
    /// caller knows of other work on this runtime that a sync made on the
    /// worker would hold up, asked only when that is in question.
    ///
    /// # Errors
    ///
    /// Never today; the type leaves room for a journal that can fail.
    pub async fn sync_among(
        self: &Arc<Self>,
        busy: &(dyn Fn() -> bool + Sync),
    ) -> Result<Synced, StoreError> {
        let upto = self.reserved.load(Ordering::Acquire);
        let covered = || self.covered.load(Ordering::Acquire);
        if upto <= covered() {
            return Ok(Synced::Journaled);
        }
        let mut written = self.written.subscribe();
        loop {
            let handed_over = self.handed_over.notified();
            tokio::pin!(handed_over);
            // Registered before the checks, so no hand-over or write is
            // missed.
            handed_over.as_mut().enable();
            if *written.borrow_and_update() >= upto {
                break;
            }
            if self.lead() {
                self.write_for(upto, busy).await;
                continue;
            }
            tokio::select! {
                _ = written.changed() => {}
                () = &mut handed_over => {}
            }
        }
        if self.overflowed.load(Ordering::Acquire) > covered() {
            return Ok(Synced::NeedsFlush);
        }
        Ok(Synced::Journaled)
    }

    /// Becomes the writer, if there is none.
    fn lead(&self) -> bool {
        let mut pending = self.lock_pending();
        !std::mem::replace(&mut pending.writing, true)
    }

    /// As the writer: writes what is filled until entry `upto` is
    /// written, then hands over: a waiter whose entry is not written yet
    /// takes over (a hand-over, and every write, wakes them). A caller
    /// dropped while it waits for an entry to be filled hands over too.
    async fn write_for(self: &Arc<Self>, upto: u64, busy: &(dyn Fn() -> bool + Sync)) {
        let _writer = HandOver(self);
        loop {
            let batch = {
                let mut pending = self.lock_pending();
                let last = self.appended.load(Ordering::Acquire);
                if pending.bytes.is_empty() {
                    self.written.send_if_modified(|w| {
                        let behind = *w < last;
                        *w = last;
                        behind
                    });
                    if last >= upto {
                        return;
                    }
                    None
                } else {
                    Some((std::mem::take(&mut pending.bytes), last))
                }
            };
            let Some((bytes, last)) = batch else {
                // An entry before `upto` is still being written to sled.
                let filled = self.on_fill.notified();
                tokio::pin!(filled);
                filled.as_mut().enable();
                if self.appended.load(Ordering::Acquire) < upto
                    && self.lock_pending().bytes.is_empty()
                {
                    filled.await;
                }
                continue;
            };
            // Not cancellable: the batch is written before anything else
            // can be, so seqs reach the file in order.
            let ok = if self.gives_core_away(last, busy) {
                tokio::task::block_in_place(|| self.timed_write(&bytes, last))
            } else {
                self.timed_write(&bytes, last)
            };
            if !ok {
                self.overflowed.fetch_max(last, Ordering::AcqRel);
            }
            self.written.send_replace(last);
            if last >= upto {
                // Whoever filled meanwhile writes next: no caller stays
                // the writer for others' entries for long.
                return;
            }
        }
    }

    /// Whether the write of entries up to `last` hands the worker's core to
    /// another thread (`block_in_place`) so the worker's other tasks go on
    /// through the sync. Not for a lone entry while nothing else is `busy`
    /// (asked last, so only for such an entry; one connection's answer):
    /// the hand-over costs that answer about as
    /// much as the sync. Unless the runtime has one worker, which the sync
    /// would stop whole, or the disk was slow at the last write. A
    /// current-thread runtime (tests) writes inline. While runs are queued
    /// or running, a lone entry's sync made on the worker holds up the
    /// tasks behind it: at 32 connections, waited runs went ~5 % faster
    /// with `busy` than without, and 23 % slower with every sync made on
    /// the worker (benches/README.md).
    fn gives_core_away(&self, last: u64, busy: &dyn Fn() -> bool) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return false;
        }
        let lone = last.saturating_sub(*self.written.borrow()) <= 1;
        let quick =
            self.last_write_us.load(Ordering::Relaxed) < INLINE_WRITE_BELOW.as_micros() as u64;
        !(lone && quick && runtime.metrics().num_workers() > 1 && !busy())
    }

    /// [`Self::write`], its time noted for [`Self::gives_core_away`].
    fn timed_write(&self, bytes: &[u8], last: u64) -> bool {
        let began = Instant::now();
        let ok = self.write(bytes, last);
        let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_write_us.store(took, Ordering::Relaxed);
        ok
    }

    /// When a full flush should start, if none is under way or planned
    /// and entries are uncovered: at once if the file being written is a
    /// quarter full or the last one was [`CHECKPOINT_EVERY`] ago, else
    /// when that is. The caller plans it, and calls
    /// [`Self::checkpoint_done`] after.
    pub fn checkpoint_due(&self) -> Option<Duration> {
        if self.appended() <= self.covered.load(Ordering::Acquire)
            || self.checkpointing.swap(true, Ordering::AcqRel)
        {
            return None;
        }
        let since = self
            .covered_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        if self.in_turn.load(Ordering::Relaxed) > CHECKPOINT_BYTES {
            return Some(Duration::ZERO);
        }
        Some(CHECKPOINT_EVERY.saturating_sub(since))
    }

    pub fn checkpoint_done(&self) {
        self.checkpointing.store(false, Ordering::Release);
    }

    /// Writes and syncs `bytes` (entries up to `last`); `false` when they
    /// do not fit or the write failed (they are then left to a full flush).
    fn write(&self, bytes: &[u8], last: u64) -> bool {
        let mut files = self.lock_files();
        let len = bytes.len() as u64;
        let other = 1 - files.active;
        let other_free = files.last_seq[other] <= self.covered.load(Ordering::Acquire);
        // Turns change at a quarter of a file when the other is free, so a
        // turn is short and a full flush frees it in time.
        if files.offset + len > CHECKPOINT_BYTES && other_free && len <= FILE_BYTES {
            files.active = other;
            files.offset = 0;
        } else if files.offset + len > FILE_BYTES {
            return false;
        }
        let (active, offset) = (files.active, files.offset);
        files.last_seq[active] = last;
        let result = files.files[active]
            .write_all_at(bytes, offset)
            .and_then(|()| {
                self.syncer
                    .sync_data(&files.files[active], &files.paths[active])
            });
        match result {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                files.offset += len;
                self.in_turn.store(files.offset, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the journal; flushing the store instead");
                // What follows in this file can no longer be trusted.
                files.offset = FILE_BYTES;
                false
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry_hash(seq: u64, payload: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&(payload.len() as u64).to_le_bytes());
    hasher.update(payload);
    let mut hash = [0; 8];
    hash.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    hash
}

fn frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    // At most MAX_ENTRY, checked by the caller.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&entry_hash(seq, payload));
    out.extend_from_slice(payload);
}

/// The entries of one turn of a file, from its start: while each is whole
/// and its seq above the one before.
/// Whether the read ended at anything but zeros or the file's end is
/// the second value: a torn write, or an earlier turn's entries.
fn read_entries(file: &File, len: u64) -> io::Result<(Vec<Found>, bool)> {
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut previous = 0u64;
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= len {
        file.read_exact_at(&mut header, offset)?;
        let field = |range: std::ops::Range<usize>| &header[range];
        if field(0..4) != MAGIC {
            return Ok((entries, header.iter().any(|b| *b != 0)));
        }
        let seq = u64::from_le_bytes(field(4..12).try_into().unwrap_or_default());
        let size = u32::from_le_bytes(field(12..16).try_into().unwrap_or_default()) as usize;
        let start = offset + HEADER as u64;
        if seq <= previous || size > MAX_ENTRY || start + size as u64 > len {
            return Ok((entries, true));
        }
        let mut payload = vec![0; size];
        file.read_exact_at(&mut payload, start)?;
        if field(16..24) != entry_hash(seq, &payload) {
            return Ok((entries, true));
        }
        entries.push(Found { seq, payload });
        previous = seq;
        offset = start + size as u64;
    }
    Ok((entries, false))
}

fn write_zeros(file: &File, from: u64) -> io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut at = from;
    while at < FILE_BYTES {
        let n = (FILE_BYTES - at).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, covered: u64) -> (Arc<Journal>, Vec<Found>) {
        Journal::open(dir, Arc::new(super::super::Fsync), covered).unwrap()
    }

    fn seqs(found: &[Found]) -> Vec<u64> {
        found.iter().map(|f| f.seq).collect()
    }

    /// Whether a write of one entry, and of a batch, would give the
    /// worker's core away on the runtime this runs on, with nothing else
    /// busy.
    fn core_given_away(journal: &Journal) -> [bool; 2] {
        let written = *journal.written.borrow();
        // Asked only for a lone entry.
        let lone_only = |lone: bool| {
            move || {
                assert!(lone, "busy asked for a batch");
                false
            }
        };
        [
            journal.gives_core_away(written + 1, &lone_only(true)),
            journal.gives_core_away(written + 5, &lone_only(false)),
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_entry_is_written_on_the_worker_unless_busy_or_the_disk_was_slow() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        assert_eq!(core_given_away(&journal), [false, true]);
        let written = *journal.written.borrow();
        assert!(
            journal.gives_core_away(written + 1, &|| true),
            "a lone entry while other runs are busy"
        );
        journal.append(b"one");
        journal.sync().await.unwrap();
        assert!(journal.last_write_us.load(Ordering::Relaxed) > 0, "timed");
        journal
            .last_write_us
            .store(INLINE_WRITE_BELOW.as_micros() as u64, Ordering::Relaxed);
        assert_eq!(core_given_away(&journal), [true, true], "a slow disk");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn one_worker_is_never_stopped_by_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        assert_eq!(core_given_away(&journal), [true, true]);
    }

    #[tokio::test]
    async fn a_current_thread_runtime_writes_inline() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        assert_eq!(core_given_away(&journal), [false, false]);
    }

    /// A full flush covers an entry filled before its writes to sled only
    /// once they are applied, and none after it meanwhile; the entry is
    /// written and synced like any other.
    #[tokio::test]
    async fn an_unapplied_entry_holds_back_what_a_flush_covers() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        journal.append(b"one");
        let held = journal.reserve().fill_unapplied(b"two");
        journal.append(b"three");
        assert_eq!((journal.appended(), journal.coverable()), (3, 1));
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        assert_eq!(journal.coverable(), 1, "synced is not applied");
        journal.applied(held);
        assert_eq!(journal.coverable(), 3);
        drop(journal);
        let (_, found) = open(dir.path(), 1);
        assert_eq!(seqs(&found), [2, 3]);
        assert_eq!(found[0].payload, b"two");
    }

    #[tokio::test]
    async fn entries_synced_are_found_at_the_next_open_past_what_was_covered() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, found) = open(dir.path(), 0);
        assert!(found.is_empty());
        for i in 1..=5u8 {
            assert_eq!(journal.append(&[i; 100]), u64::from(i));
        }
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        drop(journal);
        let (_, found) = open(dir.path(), 2);
        assert_eq!(seqs(&found), [3, 4, 5]);
        assert_eq!(found[0].payload, [3; 100]);
        assert_eq!(
            std::fs::metadata(dir.path().join(NAMES[0])).unwrap().len(),
            FILE_BYTES
        );
    }

    #[tokio::test]
    async fn a_torn_entry_ends_the_read_and_what_follows_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        for i in 1..=3u8 {
            journal.append(&[i; 50]);
            journal.sync().await.unwrap();
        }
        drop(journal);
        // Flip a byte of the second entry's payload, in whichever file
        // holds the entries.
        let second = (HEADER + 50 + HEADER + 10) as u64;
        for name in NAMES {
            let file = OpenOptions::new()
                .write(true)
                .open(dir.path().join(name))
                .unwrap();
            file.write_all_at(&[0xff], second).unwrap();
        }
        let (journal, found) = open(dir.path(), 0);
        assert_eq!(seqs(&found), [1]);
        // Entry 3 is whole past the torn one: new seqs start above any
        // the files can hold.
        assert!(journal.append(b"next") > 1 + 2 * FILE_BYTES / HEADER as u64);
    }

    #[tokio::test]
    async fn a_payload_past_the_cap_is_left_to_a_full_flush_until_one_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        journal.append(&[1; 10]);
        journal.append(&vec![2; MAX_ENTRY + 1]);
        assert_eq!(journal.sync().await.unwrap(), Synced::NeedsFlush);
        journal.cover(journal.appended());
        journal.append(&[3; 10]);
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        drop(journal);
        let (_, found) = open(dir.path(), 2);
        assert_eq!(seqs(&found), [3]);
    }

    /// The files take turns; a file is written again only once what it
    /// holds is covered, and its earlier turn's entries are not read back.
    #[tokio::test]
    async fn files_take_turns_only_over_covered_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        let big = vec![7u8; MAX_ENTRY];
        let per_file = (FILE_BYTES / (MAX_ENTRY + HEADER) as u64) as usize;
        // Nothing covered: the first file's turn ends at a quarter (the
        // other is free), the other's goes on to its end; then an entry
        // cannot be journaled.
        let mut journaled = 0;
        loop {
            journal.append(&big);
            match journal.sync().await.unwrap() {
                Synced::Journaled => journaled += 1,
                Synced::NeedsFlush => break,
            }
        }
        assert_eq!(journaled, per_file + 1);
        // A full flush covers all of it: the file written first takes a
        // new turn (what follows does not fit in the other).
        journal.cover(journal.appended());
        let after = vec![9u8; MAX_ENTRY];
        let next = journal.append(&after);
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        drop(journal);
        let (_, found) = open(dir.path(), next - 1);
        assert_eq!(seqs(&found), [next]);
        assert_eq!(found[0].payload, after);
        // Nothing covered at all: each file's current turn is read, not the
        // earlier turn's entries after the one written over its start.
        let (_, found) = open(dir.path(), 0);
        assert_eq!(found.len(), per_file + 1);
        assert_eq!(found.last().unwrap().seq, next);
    }

    /// Entries nobody syncs are not held without bound: a full flush
    /// drops them, and past a cap they are left to one.
    #[tokio::test]
    async fn entries_nobody_syncs_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        journal.append(&[1; 1000]);
        journal.cover(journal.appended());
        assert!(journal.lock_pending().bytes.is_empty());
        let entry = vec![2; 64 << 10];
        for _ in 0..(MAX_PENDING / entry.len() + 2) {
            journal.append(&entry);
            assert!(journal.lock_pending().bytes.len() <= MAX_PENDING + entry.len() + HEADER);
        }
        assert_eq!(journal.sync().await.unwrap(), Synced::NeedsFlush);
        journal.cover(journal.appended());
        journal.append(b"then");
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
    }

    /// Syncs that block until told to go on, or fail while `failing`.
    #[derive(Default)]
    struct Gate {
        held: Mutex<bool>,
        released: std::sync::Condvar,
        failing: AtomicBool,
    }

    impl Gate {
        fn hold(&self, held: bool) {
            *self.held.lock().unwrap() = held;
            self.released.notify_all();
        }
    }

    /// Lets held syncs go when dropped: a test that fails while one is
    /// held fails instead of waiting for it forever.
    struct Holding(Arc<Gate>);

    impl Drop for Holding {
        fn drop(&mut self) {
            self.0.hold(false);
        }
    }

    impl FileSyncer for Gate {
        fn sync_data(&self, _file: &File, _path: &Path) -> io::Result<()> {
            let held = self.held.lock().unwrap();
            drop(self.released.wait_while(held, |held| *held).unwrap());
            if self.failing.load(Ordering::Relaxed) {
                return Err(io::Error::other("the disk is gone"));
            }
            Ok(())
        }

        fn sync_all(&self, _file: &File, _path: &Path) -> io::Result<()> {
            Ok(())
        }
    }

    /// While a write is stuck on a stalled disk, what answers fill meanwhile
    /// is held only up to the cap; past it, it is left to a full flush and
    /// its waiters hear so once the stuck write returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_filled_behind_a_stuck_write_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let (journal, _) = Journal::open(dir.path(), gate.clone(), 0).unwrap();
        gate.hold(true);
        let holding = Holding(gate.clone());
        journal.append(b"first");
        let stuck = tokio::spawn({
            let journal = journal.clone();
            async move { journal.sync().await }
        });
        let writing = async {
            while !journal.lock_pending().writing {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), writing)
            .await
            .expect("no writer started");
        let entry = vec![3; 64 << 10];
        for _ in 0..(MAX_PENDING / entry.len() + 8) {
            journal.append(&entry);
            assert!(journal.lock_pending().bytes.len() <= MAX_PENDING + entry.len() + HEADER);
        }
        let behind = tokio::spawn({
            let journal = journal.clone();
            async move { journal.sync().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stuck.is_finished() && !behind.is_finished());
        drop(holding);
        assert_eq!(behind.await.unwrap().unwrap(), Synced::NeedsFlush);
        stuck.await.unwrap().unwrap();
        journal.cover(journal.appended());
        journal.append(b"then");
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
    }

    /// A write or sync that fails leaves its entries to a full flush, and
    /// the file it failed in is not written again in that turn; once a
    /// full flush covers what is there, the journal is used again.
    #[tokio::test]
    async fn a_failing_write_is_left_to_a_full_flush_and_the_journal_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let (journal, _) = Journal::open(dir.path(), gate.clone(), 0).unwrap();
        journal.append(b"one");
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        gate.failing.store(true, Ordering::Relaxed);
        journal.append(b"two");
        assert_eq!(journal.sync().await.unwrap(), Synced::NeedsFlush);
        gate.failing.store(false, Ordering::Relaxed);
        // Not covered yet: the waiters still flush the whole store.
        journal.append(b"three");
        assert_eq!(journal.sync().await.unwrap(), Synced::NeedsFlush);
        journal.cover(journal.appended());
        let four = journal.append(b"four");
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        // "one", "three" (in the other file), "four"; not the failed one.
        assert_eq!(journal.syncs(), 3);
        drop(journal);
        let (_, found) = open(dir.path(), four - 1);
        assert_eq!(seqs(&found), [four]);
        assert_eq!(found[0].payload, b"four");
    }

    /// One background full flush is planned at a time: within a second
    /// of the last, or at once when the file being written is past a
    /// quarter and the other still holds uncovered entries; none once
    /// everything is covered.
    #[tokio::test]
    async fn one_checkpoint_at_a_time_and_at_once_when_a_file_fills() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        assert_eq!(journal.checkpoint_due(), None, "nothing to cover");
        journal.append(b"one");
        assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        let due = journal.checkpoint_due().unwrap();
        assert!(due > Duration::ZERO && due <= CHECKPOINT_EVERY, "{due:?}");
        assert_eq!(journal.checkpoint_due(), None, "one is planned already");
        journal.checkpoint_done();
        // One file's turn takes "one" and a large entry; the turn in the
        // other goes on past a quarter, since the first file still holds
        // entries not covered.
        let big = vec![1u8; MAX_ENTRY];
        for _ in 0..3 {
            journal.append(&big);
            assert_eq!(journal.sync().await.unwrap(), Synced::Journaled);
        }
        assert_eq!(journal.checkpoint_due(), Some(Duration::ZERO));
        journal.checkpoint_done();
        journal.cover(journal.appended());
        assert_eq!(journal.checkpoint_due(), None, "everything is covered");
    }

    /// A reader that saw an entry's writes waits for that entry, even
    /// when it was filled after a later one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_covers_an_entry_reserved_before_it_and_filled_after() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        let early = journal.reserve();
        journal.append(b"later");
        let waiter = tokio::spawn({
            let journal = journal.clone();
            async move { journal.sync().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "answered before its entry was filled"
        );
        early.fill(Some(b"early"));
        assert_eq!(waiter.await.unwrap().unwrap(), Synced::Journaled);
        drop(journal);
        let (_, found) = open(dir.path(), 0);
        assert_eq!(seqs(&found), [1, 2]);
        assert_eq!(found[0].payload, b"early");
    }

    /// A writer whose caller is dropped while it waits for an entry to be
    /// filled (a client that went away) hands over: the next wait is
    /// answered once that entry is filled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_dropped_while_it_waits_hands_over() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        let early = journal.reserve();
        let gone = tokio::spawn({
            let journal = journal.clone();
            async move { journal.sync().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        let next = tokio::spawn({
            let journal = journal.clone();
            async move { journal.sync().await }
        });
        early.fill(Some(b"early"));
        let synced = tokio::time::timeout(Duration::from_secs(10), next).await;
        assert_eq!(synced.unwrap().unwrap().unwrap(), Synced::Journaled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_appenders_are_all_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path(), 0);
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    journal.append(&i.to_le_bytes());
                    journal.sync().await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Synced::Journaled);
        }
        drop(journal);
        let (_, found) = open(dir.path(), 0);
        assert_eq!(seqs(&found), (1..=200).collect::<Vec<_>>());
    }
}

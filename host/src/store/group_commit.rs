//! Group commit: however many callers ask for durability at once, one flush
//! runs at a time and each caller waits for the first one that started after
//! its request. A flush is sled's own (on Linux a `pwrite` of its log and a
//! `sync_file_range`), then [`DiskSync`]: the new blob files and an
//! `fdatasync` of the log, so what a caller was told is durable survives a
//! power cut, not only a crash of Kiln. One flush at a time is also a
//! workaround: sled 0.34's `flush_async` runs on its own small thread pool,
//! and enough concurrent calls park every pool thread waiting for a log write
//! queued behind them, which never runs.
//!
//! Each flush first notes in the store how far the journal of final records
//! (`journal.rs`) was appended: once the flush returns, those entries are in
//! sled on disk, and the next open replays only what came after.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::disk_sync::{DiskSync, FileSyncer};
use super::journal::Journal;
use super::{StoreError, SyncStats};

/// What has been made durable: every request numbered up to `done`, and
/// whether the flush that covered the latest of them failed.
#[derive(Debug, Clone, Default)]
struct Durable {
    done: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Requests {
    /// The number of the latest request.
    latest: u64,
    /// Whether a flusher task is running.
    flushing: bool,
}

/// The `meta` key of the journal's seq that the last flush covered.
pub const JOURNAL_COVERED: &str = "journal_covered";

/// What a flush first moves from memory into sled (the usage rollups).
pub type BeforeFlush = Box<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

pub struct GroupCommit {
    db: sled::Db,
    before_flush: BeforeFlush,
    /// Where [`JOURNAL_COVERED`] is kept.
    meta: sled::Tree,
    journal: Arc<Journal>,
    /// Locked by one flush at a time: start-up's, then the flusher task's.
    disk: Mutex<DiskSync>,
    syncs: AtomicU64,
    blob_files: AtomicU64,
    requests: Mutex<Requests>,
    durable: watch::Sender<Durable>,
}

impl GroupCommit {
    /// `dir` is where `db` was opened; `syncer` makes its files durable;
    /// each flush covers `journal` as far as it was filled, after
    /// `before_flush`.
    pub fn new(
        db: sled::Db,
        dir: &Path,
        syncer: Arc<dyn FileSyncer>,
        journal: Arc<Journal>,
        before_flush: BeforeFlush,
    ) -> Result<Arc<Self>, StoreError> {
        let meta = db
            .open_tree("meta")
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let disk = DiskSync::open(dir, syncer).map_err(|e| {
            StoreError::Backend(format!("cannot open the store's files for syncing: {e}"))
        })?;
        Ok(Arc::new(Self {
            db,
            before_flush,
            meta,
            journal,
            disk: Mutex::new(disk),
            syncs: AtomicU64::new(0),
            blob_files: AtomicU64::new(0),
            requests: Mutex::new(Requests::default()),
            durable: watch::Sender::new(Durable::default()),
        }))
    }

    /// A flush on the calling thread (start-up, and the flusher's blocking
    /// task): what waits in memory (`before_flush`), the blob files, the
    /// journal's mark, sled's flush, then its log's sync.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let cannot_sync = |e| StoreError::Backend(format!("cannot sync the store's files: {e}"));
        // Every entry up to here was filled after its writes to sled, or
        // has had them made since.
        let covers = self.journal.coverable();
        // After reading `covers`: those entries' rollups are moved too.
        (self.before_flush)()?;
        let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
        // Before the mark: sled's own flusher may put the mark on disk
        // at any time, and a record it vouches for may be in a blob file.
        let blob_files = disk.sync_blobs().map_err(cannot_sync)?;
        if covers > self.journal.covered() {
            self.meta
                .insert(JOURNAL_COVERED, &covers.to_be_bytes())
                .map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        self.db
            .flush()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        disk.sync_log().map_err(cannot_sync)?;
        drop(disk);
        self.journal.cover(covers);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.blob_files.fetch_add(
            u64::try_from(blob_files).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The journal's seq the store last covered, as read at open.
    pub fn covered_at_open(meta: &sled::Tree) -> Result<u64, StoreError> {
        Ok(meta
            .get(JOURNAL_COVERED)
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub fn stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            blob_files: self.blob_files.load(Ordering::Relaxed),
            journal_syncs: 0,
        }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut durable = self.durable.subscribe();
        let mine = {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            requests.latest += 1;
            if !requests.flushing {
                requests.flushing = true;
                let this = self.clone();
                tokio::spawn(async move { this.flush_until_caught_up().await });
            }
            requests.latest
        };
        let state = durable
            .wait_for(|d| d.done >= mine)
            .await
            .map_err(|_| StoreError::Backend("the store's flusher stopped".into()))?;
        match &state.error {
            Some(e) => Err(StoreError::Backend(e.clone())),
            None => Ok(()),
        }
    }

    /// Flushes until no request is newer than the last flush.
    async fn flush_until_caught_up(self: Arc<Self>) {
        loop {
            let target = {
                let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
                if self.durable.borrow().done >= requests.latest {
                    requests.flushing = false;
                    return;
                }
                requests.latest
            };
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.flush_blocking()).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("the flush task failed: {e}")),
            };
            self.durable.send_replace(Durable {
                done: target,
                error,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_of(db: &sled::Db, dir: &Path) -> Arc<GroupCommit> {
        let syncer: Arc<dyn FileSyncer> = Arc::new(crate::store::Fsync);
        let (journal, _) = Journal::open(dir, syncer.clone(), 0).unwrap();
        GroupCommit::new(db.clone(), dir, syncer, journal, Box::new(|| Ok(()))).unwrap()
    }

    /// A flush notes how far the journal was appended, and covers it.
    #[tokio::test]
    async fn a_flush_covers_the_journal_as_far_as_it_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let syncer: Arc<dyn FileSyncer> = Arc::new(crate::store::Fsync);
        let (journal, _) = Journal::open(dir.path(), syncer.clone(), 0).unwrap();
        let commit = GroupCommit::new(
            db.clone(),
            dir.path(),
            syncer,
            journal.clone(),
            Box::new(|| Ok(())),
        )
        .unwrap();
        journal.append(b"one");
        journal.append(b"two");
        commit.flush().await.unwrap();
        assert_eq!(journal.covered(), 2);
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(GroupCommit::covered_at_open(&meta).unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_callers_all_return_and_their_writes_are_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let commit = commit_of(&db, dir.path());
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let (db, commit) = (db.clone(), commit.clone());
                tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), &b"x"[..]).unwrap();
                    commit.flush().await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        drop((db, commit));
        // sled's threads let go of the directory's lock a moment after the
        // last handle is dropped; a new process never sees that, this test can.
        let mut reopened = sled::open(dir.path());
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            reopened = sled::open(dir.path());
        }
        assert_eq!(reopened.unwrap().len(), 200);
    }

    /// A flush whose sync fails is an error for its callers, not a success;
    /// the store's next flush works again and is counted.
    #[tokio::test]
    async fn a_failed_sync_fails_the_flush_and_the_next_one_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let commit = commit_of(&db, dir.path());
        // The first sync lists the blob directory: take it away for a moment.
        let (blobs, aside) = (dir.path().join("blobs"), dir.path().join("aside"));
        std::fs::rename(&blobs, &aside).unwrap();
        db.insert("k", "v").unwrap();
        let failed = commit.flush().await;
        assert!(
            matches!(&failed, Err(StoreError::Backend(e)) if e.contains("cannot sync")),
            "{failed:?}"
        );
        assert_eq!(commit.stats().syncs, 0);
        std::fs::rename(&aside, &blobs).unwrap();
        commit.flush().await.unwrap();
        assert_eq!(commit.stats().syncs, 1);
    }
}

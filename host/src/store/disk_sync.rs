//! What sled 0.34's flush leaves out, done after it. On Linux its flush
//! writes the log with `pwrite` and waits with `sync_file_range`, which
//! neither flushes the device's write cache nor commits a grown file's size,
//! and a value past its size threshold goes to a file of its own under
//! `blobs/` that nothing syncs. [`DiskSync::sync`] closes both gaps: the blob
//! files written since the last call, their directory, then an `fdatasync`
//! of the log. Run after a flush, it makes that flush survive a power cut.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How bytes already written to a file are made durable. [`Fsync`] is the
/// store's; tests inject one that records what each sync covered, so that a
/// sync removed, or moved after the answer it guards, fails a test.
pub trait FileSyncer: Send + Sync + 'static {
    /// The file's data and what is needed to read it back (`fdatasync`).
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Data and metadata (`fsync`): a new blob file, a directory's entries.
    fn sync_all(&self, file: &File, path: &Path) -> io::Result<()>;
}

/// The system calls themselves.
pub struct Fsync;

impl FileSyncer for Fsync {
    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_all(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }
}

pub struct DiskSync {
    syncer: Arc<dyn FileSyncer>,
    log: File,
    log_path: PathBuf,
    blobs_dir: PathBuf,
    written: WrittenBlobs,
    /// Sync every blob file next time, not only the new ones: at first (an
    /// earlier process may have left some unsynced) and after a failed sync
    /// (whose blobs would otherwise be forgotten).
    all_blobs: bool,
}

impl DiskSync {
    /// `dir` is sled's directory, opened: its `db` log and `blobs/` exist.
    pub fn open(dir: &Path, syncer: Arc<dyn FileSyncer>) -> io::Result<Self> {
        let blobs_dir = dir.join("blobs");
        // The entries sled made on first open (`db`, `conf`, `blobs/`).
        syncer.sync_all(&File::open(dir)?, dir)?;
        let log_path = dir.join("db");
        Ok(Self {
            syncer,
            log: File::open(&log_path)?,
            log_path,
            written: WrittenBlobs::watch(&blobs_dir),
            blobs_dir,
            all_blobs: true,
        })
    }

    /// Syncs every blob file finished since the last call, then the log.
    /// Returns how many blob files it synced.
    #[cfg(test)]
    pub fn sync(&mut self) -> io::Result<usize> {
        let synced = self.sync_blobs()?;
        self.sync_log()?;
        Ok(synced)
    }

    /// Syncs every blob file finished since the last call (and their
    /// directory); how many. Before a flush that writes a mark vouching
    /// for the records they hold (`group_commit.rs`).
    pub fn sync_blobs(&mut self) -> io::Result<usize> {
        let result = self.sync_new_blobs();
        self.all_blobs = result.is_err();
        result
    }

    /// An `fdatasync` of sled's log, after its flush. After a failure the
    /// next sync takes every blob again, as after a failed blob sync.
    pub fn sync_log(&mut self) -> io::Result<()> {
        let result = self.syncer.sync_data(&self.log, &self.log_path);
        self.all_blobs |= result.is_err();
        result
    }

    fn sync_new_blobs(&mut self) -> io::Result<usize> {
        // Read the watch even when listing, so its queue does not fill up.
        let names = match self.written.take()? {
            Some(new) if !self.all_blobs => new,
            _ => std::fs::read_dir(&self.blobs_dir)?
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?,
        };
        let mut synced = 0;
        for name in names {
            let path = self.blobs_dir.join(&name);
            match File::open(&path) {
                Ok(blob) => {
                    self.syncer.sync_all(&blob, &path)?;
                    synced += 1;
                }
                // sled removed it (the value was replaced or deleted).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if synced > 0 {
            self.syncer
                .sync_all(&File::open(&self.blobs_dir)?, &self.blobs_dir)?;
        }
        Ok(synced)
    }
}

/// The blob files finished since the last [`WrittenBlobs::take`], or `None`
/// when it cannot tell and every file must be taken. On Linux
/// an inotify watch for files closed after writing: sled writes each blob in
/// one go and closes it before the log entry pointing at it can be flushed,
/// so the event is queued before any flush request that needs it. Cost is
/// per new blob, not per blob in the directory. Without a watch (inotify's
/// per-user limits reached, or not Linux), every file each time: correct,
/// and slower with many.
struct WrittenBlobs {
    #[cfg(target_os = "linux")]
    inotify: Option<std::os::fd::OwnedFd>,
}

impl WrittenBlobs {
    #[cfg(target_os = "linux")]
    fn watch(dir: &Path) -> Self {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let watch = || -> io::Result<_> {
            let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
            inotify::add_watch(&inotify, dir, WatchFlags::CLOSE_WRITE | WatchFlags::ONLYDIR)?;
            Ok(inotify)
        };
        let inotify = watch()
            .inspect_err(|e| {
                tracing::warn!(error = %e, dir = %dir.display(),
                    "cannot watch the store's blob files; every flush will list them");
            })
            .ok();
        Self { inotify }
    }

    #[cfg(not(target_os = "linux"))]
    fn watch(_dir: &Path) -> Self {
        Self {}
    }

    #[cfg(target_os = "linux")]
    fn take(&mut self) -> io::Result<Option<BTreeSet<OsString>>> {
        use std::mem::MaybeUninit;
        use std::os::unix::ffi::OsStrExt;

        use rustix::fs::inotify::{ReadFlags, Reader};
        use rustix::io::Errno;

        let Some(inotify) = &self.inotify else {
            return Ok(None);
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut events = Reader::new(inotify, &mut buf);
        let mut names = BTreeSet::new();
        loop {
            match events.next() {
                Ok(event) if event.events().contains(ReadFlags::QUEUE_OVERFLOW) => {
                    // Events were dropped: sync them all rather than guess.
                    while drain(inotify)? {}
                    return Ok(None);
                }
                Ok(event) => {
                    if let Some(name) = event.file_name() {
                        names.insert(std::ffi::OsStr::from_bytes(name.to_bytes()).to_owned());
                    }
                }
                Err(Errno::AGAIN) => return Ok(Some(names)),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn take(&mut self) -> io::Result<Option<BTreeSet<OsString>>> {
        Ok(None)
    }
}

/// Reads and drops queued events; false once none is left.
#[cfg(target_os = "linux")]
fn drain(inotify: &std::os::fd::OwnedFd) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    match rustix::io::read(inotify, &mut buf) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::AGAIN) => Ok(false),
        Err(rustix::io::Errno::INTR) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sled_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::create_dir_all(path.join("blobs")).unwrap();
        std::fs::write(path.join("db"), b"log").unwrap();
        (dir, path)
    }

    fn write_blob(dir: &Path, name: &str) {
        let mut file = File::create_new(dir.join("blobs").join(name)).unwrap();
        file.write_all(&[7; 1024]).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn each_new_blob_file_is_synced_once() {
        let (_keep, dir) = sled_dir();
        write_blob(&dir, "1");
        let mut sync = DiskSync::open(&dir, Arc::new(Fsync)).unwrap();
        // The first sync takes every blob, whoever wrote it.
        assert_eq!(sync.sync().unwrap(), 1);
        assert_eq!(sync.sync().unwrap(), 0);
        write_blob(&dir, "100");
        write_blob(&dir, "200");
        assert_eq!(sync.sync().unwrap(), 2);
        assert_eq!(sync.sync().unwrap(), 0, "synced again");
        write_blob(&dir, "300");
        assert_eq!(sync.sync().unwrap(), 1);
    }

    #[test]
    fn a_blob_removed_before_the_sync_is_skipped() {
        let (_keep, dir) = sled_dir();
        let mut sync = DiskSync::open(&dir, Arc::new(Fsync)).unwrap();
        sync.sync().unwrap();
        write_blob(&dir, "100");
        write_blob(&dir, "200");
        std::fs::remove_file(dir.join("blobs").join("100")).unwrap();
        assert_eq!(sync.sync().unwrap(), 1);
    }

    /// More new files than inotify queues (16 384 by default): the watch
    /// says it cannot tell, and its queue starts afresh after.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_overflowed_watch_takes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = WrittenBlobs::watch(dir.path());
        assert!(written.inotify.is_some());
        let queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .map_or(16_384, |n| n.trim().parse().unwrap());
        if queued > 100_000 {
            return; // a host that raised the limit: too many files to make
        }
        let files = queued + 100;
        for i in 0..files {
            File::create_new(dir.path().join(i.to_string())).unwrap();
        }
        assert_eq!(written.take().unwrap(), None, "no overflow seen");
        File::create_new(dir.path().join("last")).unwrap();
        let after: Vec<OsString> = written.take().unwrap().unwrap().into_iter().collect();
        assert_eq!(after, ["last"]);
    }

    /// A failed sync forgets no blob: the next one takes them all.
    #[cfg(target_os = "linux")]
    #[test]
    fn after_a_failed_sync_every_blob_is_synced() {
        let (_keep, dir) = sled_dir();
        let mut sync = DiskSync::open(&dir, Arc::new(Fsync)).unwrap();
        sync.sync().unwrap();
        write_blob(&dir, "100");
        // A sync that lists the blobs, made to fail: the directory is gone
        // for a moment. (The watch already handed over "100" to it.)
        let aside = dir.join("aside");
        std::fs::rename(dir.join("blobs"), &aside).unwrap();
        sync.all_blobs = true;
        assert!(sync.sync().is_err());
        std::fs::rename(&aside, dir.join("blobs")).unwrap();
        assert_eq!(sync.sync().unwrap(), 1, "the blob was forgotten");
        assert_eq!(sync.sync().unwrap(), 0);
    }

    /// Notes each sync: its kind and the file's name.
    #[derive(Default)]
    struct Journal(std::sync::Mutex<Vec<String>>);

    impl FileSyncer for Journal {
        fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
            self.note("data", path);
            file.sync_data()
        }

        fn sync_all(&self, file: &File, path: &Path) -> io::Result<()> {
            self.note("all", path);
            file.sync_all()
        }
    }

    impl Journal {
        fn note(&self, kind: &str, path: &Path) {
            let name = path.file_name().unwrap().to_string_lossy();
            self.0.lock().unwrap().push(format!("{kind} {name}"));
        }

        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// A new blob is durable before the log entry that points at it: the
    /// file, then its directory entry, then the log. Without blobs, the log
    /// alone, and always with `fdatasync`.
    #[cfg(target_os = "linux")]
    #[test]
    fn blobs_then_their_directory_then_the_log() {
        let (_keep, dir) = sled_dir();
        let journal = Arc::new(Journal::default());
        let mut sync = DiskSync::open(&dir, journal.clone()).unwrap();
        assert_eq!(journal.take(), ["all db"], "the directory sled made");
        sync.sync().unwrap();
        assert_eq!(journal.take(), ["data db"]);
        write_blob(&dir, "100");
        sync.sync().unwrap();
        assert_eq!(journal.take(), ["all 100", "all blobs", "data db"]);
    }

    /// A failing sync is the flush's error, and nothing after it runs as if
    /// it had worked.
    #[test]
    fn a_failing_sync_stops_the_flush() {
        struct Failing;
        impl FileSyncer for Failing {
            fn sync_data(&self, _: &File, _: &Path) -> io::Result<()> {
                Err(io::Error::other("disk gone"))
            }
            fn sync_all(&self, _: &File, _: &Path) -> io::Result<()> {
                Ok(())
            }
        }
        let (_keep, dir) = sled_dir();
        let mut sync = DiskSync::open(&dir, Arc::new(Failing)).unwrap();
        assert_eq!(sync.sync().unwrap_err().to_string(), "disk gone");
        assert!(sync.all_blobs, "the next sync takes every blob");
    }

    #[test]
    fn a_missing_log_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        assert!(DiskSync::open(dir.path(), Arc::new(Fsync)).is_err());
    }
}

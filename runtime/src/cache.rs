//! Compiled artifacts on disk (across restarts) and ready-to-instantiate
//! artifacts in memory (an LRU).
//!
//! On disk an artifact is `<key>.cwasm`, wasmtime's serialized machine code,
//! next to `<key>.b3`, the BLAKE3 of that file. The checksum is verified before
//! the code is mapped, so a truncated or corrupted file is recompiled instead
//! of executed.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;
use wasmtime::component::Component;

use crate::artifact::{Artifact, ArtifactKey};
use crate::error::Error;

/// Counters of how artifacts were obtained since the sandbox started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads answered from memory.
    pub memory_hits: u64,
    /// Loads answered from the disk cache (deserialized, not compiled).
    pub disk_hits: u64,
    /// Loads that ran Cranelift.
    pub compiles: u64,
    /// Script runs that found their script already compiled by its language
    /// runtime (so the run skipped the parser).
    pub script_code_hits: u64,
    /// Scripts compiled by a language runtime (at upload, or at a first run).
    pub script_compiles: u64,
    /// Script runs handed a language runtime instance made ahead of them
    /// (after an earlier run ended; see `warm.rs`).
    pub prewarmed_runs: u64,
}

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    ready: Mutex<LruCache<ArtifactKey, Arc<Artifact>>>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiles: AtomicU64,
}

impl ArtifactCache {
    pub(crate) fn new(dir: Option<PathBuf>, entries: usize) -> Result<Self, Error> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        let entries = NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            dir,
            ready: Mutex::new(LruCache::new(entries)),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            ..CacheStats::default()
        }
    }

    pub(crate) fn ready(&self, key: &ArtifactKey) -> Option<Arc<Artifact>> {
        let hit = self.lock().get(key).cloned();
        if hit.is_some() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub(crate) fn insert(&self, artifact: Arc<Artifact>) {
        self.lock().put(artifact.key, artifact);
    }

    pub(crate) fn count_compile(&self) {
        self.compiles.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_disk_hit(&self) {
        self.disk_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<ArtifactKey, Arc<Artifact>>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn paths(&self, key: &ArtifactKey) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.as_ref()?;
        let hex = key.to_hex();
        Some((
            dir.join(format!("{hex}.cwasm")),
            dir.join(format!("{hex}.b3")),
        ))
    }

    /// The compiled component for `key` from disk, if a valid copy is there.
    /// A missing, corrupt or incompatible file is not an error: it is removed
    /// and the caller compiles again.
    pub(crate) fn read_disk(
        &self,
        engine: &wasmtime::Engine,
        key: &ArtifactKey,
    ) -> Option<Component> {
        match self.read_disk_checked(engine, key) {
            Ok(component) => component,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cached artifact unusable; recompiling");
                None
            }
        }
    }

    /// As [`read_disk`](Self::read_disk), but a file whose checksum holds
    /// and which still does not load is the error it gives (removed too):
    /// right after a compile, that is the component's fault, e.g. a memory
    /// or table larger than the instance pool allows.
    pub(crate) fn read_disk_checked(
        &self,
        engine: &wasmtime::Engine,
        key: &ArtifactKey,
    ) -> Result<Option<Component>, String> {
        let Some((code, sum)) = self.paths(key) else {
            return Ok(None);
        };
        let (Ok(expected), Ok(bytes)) = (std::fs::read_to_string(&sum), std::fs::read(&code))
        else {
            return Ok(None);
        };
        if blake3::hash(&bytes).to_hex().as_str() != expected.trim() {
            tracing::warn!(key = %key, "cached artifact fails its checksum; recompiling");
            remove(&code, &sum);
            return Ok(None);
        }
        drop(bytes);
        match deserialize(engine, &code) {
            Ok(component) => {
                // Used now: the disk trim removes the least recently used.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&code)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Ok(Some(component))
            }
            Err(e) => {
                remove(&code, &sum);
                Err(format!("{e:#}"))
            }
        }
    }

    /// Writes the compiled component to disk atomically (temporary file, then
    /// rename), the checksum last so a crash never leaves a valid-looking pair.
    pub(crate) fn write_disk(&self, key: &ArtifactKey, component: &Component) -> Result<(), Error> {
        let Some((code, sum)) = self.paths(key) else {
            return Ok(());
        };
        let bytes = component
            .serialize()
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        write_atomic(&code, &bytes)?;
        write_atomic(&sum, digest.as_bytes())?;
        Ok(())
    }
}

/// What [`ArtifactCache::trim_disk`] removed, and what it left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Artifacts removed.
    pub files: usize,
    /// What they took on disk.
    pub bytes: u64,
    /// What the artifacts left on disk take.
    pub kept_bytes: u64,
}

impl ArtifactCache {
    /// Removes compiled artifacts from disk, least recently used (written or
    /// read) first, until those left take at most `max_bytes`; never one
    /// loaded in memory, which is in use or kept ready for the next run (so
    /// what those take may alone pass `max_bytes`). Reads the directory's
    /// listing: call it now and then, not per run.
    ///
    /// # Errors
    ///
    /// The directory cannot be listed.
    pub(crate) fn trim_disk(&self, max_bytes: u64) -> std::io::Result<Trimmed> {
        let Some(dir) = &self.dir else {
            return Ok(Trimmed::default());
        };
        let loaded: std::collections::HashSet<String> =
            self.lock().iter().map(|(key, _)| key.to_hex()).collect();
        let mut total = 0u64;
        let mut removable = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "cwasm") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.len();
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if !loaded.contains(name) {
                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                removable.push((used, meta.len(), path));
            }
        }
        removable.sort_by_key(|(used, _, _)| *used);
        let mut trimmed = Trimmed::default();
        for (_, len, code) in removable {
            if total <= max_bytes {
                break;
            }
            remove(&code, &code.with_extension("b3"));
            total -= len;
            trimmed.files += 1;
            trimmed.bytes += len;
        }
        trimmed.kept_bytes = total;
        Ok(trimmed)
    }
}

#[allow(
    unsafe_code,
    reason = "the one audited use of Component::deserialize_file"
)]
fn deserialize(engine: &wasmtime::Engine, code: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `write_disk` of an engine whose
    // compatibility digest is part of the key (so wasmtime's own header check
    // and ours agree), and its BLAKE3 checksum was verified just before.
    // The cache directory belongs to Kiln alone; nothing else writes there.
    unsafe { Component::deserialize_file(engine, code) }
}

/// Writes through a temporary file then renames it over `path`. The temporary
/// name is unique per process and per write, so concurrent loads of the same
/// new bytes (in one process or in several sharing the directory) never
/// rename each other's file away.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{write}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn remove(code: &Path, sum: &Path) {
    let _ = std::fs::remove_file(sum);
    let _ = std::fs::remove_file(code);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_disk_is_trimmed_least_recently_used_first_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(Some(dir.path().to_path_buf()), 4).unwrap();
        // Four artifacts of 1 000 bytes, used at t = 4, 1, 3, 2 s.
        for (name, used) in [("a", 4), ("b", 1), ("c", 3), ("d", 2)] {
            let code = dir.path().join(format!("{name}.cwasm"));
            std::fs::write(&code, [0u8; 1000]).unwrap();
            std::fs::write(code.with_extension("b3"), "sum").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&code)
                .unwrap()
                .set_modified(UNIX_EPOCH + Duration::from_secs(used))
                .unwrap();
        }
        let trimmed = cache.trim_disk(2_500).unwrap();
        assert_eq!(
            (trimmed.files, trimmed.bytes, trimmed.kept_bytes),
            (2, 2000, 2000)
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.b3", "a.cwasm", "c.b3", "c.cwasm"]);
        assert_eq!(
            cache.trim_disk(2_000).unwrap().files,
            0,
            "within the budget"
        );
    }
}

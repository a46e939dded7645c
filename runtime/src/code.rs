//! Scripts in their language runtime's compiled form (CPython code objects,
//! QuickJS bytecode), kept in memory so a warm run skips the parser.
//!
//! The key is BLAKE3 of the runtime's artifact key and the source: code
//! compiled by one runtime build is never handed to another. Nothing goes to
//! disk: compiling a script costs about as much as one run, so after a
//! restart the first run of each script simply compiles it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use crate::artifact::ArtifactKey;
use crate::source::Source;

/// Compiled code larger than this is used but not kept.
const MAX_ENTRY_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CodeKey([u8; 32]);

impl CodeKey {
    pub(crate) fn new(runtime: &ArtifactKey, source: &Source) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-script-code-v1\0");
        hasher.update(runtime.as_bytes());
        source.hash_into(&mut hasher);
        Self(*hasher.finalize().as_bytes())
    }
}

/// An LRU bounded by the total size of the code it holds.
pub(crate) struct CodeCache {
    entries: Mutex<Entries>,
    capacity_bytes: usize,
    hits: AtomicU64,
    compiles: AtomicU64,
}

struct Entries {
    lru: LruCache<CodeKey, Arc<[u8]>>,
    bytes: usize,
}

impl CodeCache {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity_bytes,
            hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, key: &CodeKey) -> Option<Arc<[u8]>> {
        let hit = self.lock().lru.get(key).cloned();
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Records that a script was compiled and keeps its code if it fits.
    pub(crate) fn insert(&self, key: CodeKey, code: Arc<[u8]>) {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if code.len() > MAX_ENTRY_BYTES.min(self.capacity_bytes) {
            return;
        }
        let mut entries = self.lock();
        let added = code.len();
        if let Some(replaced) = entries.lru.put(key, code) {
            entries.bytes -= replaced.len();
        }
        entries.bytes += added;
        while entries.bytes > self.capacity_bytes {
            match entries.lru.pop_lru() {
                Some((_, evicted)) => entries.bytes -= evicted.len(),
                None => break,
            }
        }
    }

    /// (warm runs that found their code, scripts compiled)
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.compiles.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(n: u8) -> ArtifactKey {
        ArtifactKey::new(&[n], &[0; 32])
    }

    #[test]
    fn key_depends_on_runtime_and_source() {
        let a = CodeKey::new(&runtime(1), &"main()".into());
        assert_eq!(a, CodeKey::new(&runtime(1), &"main()".into()));
        assert_ne!(a, CodeKey::new(&runtime(2), &"main()".into()));
        assert_ne!(a, CodeKey::new(&runtime(1), &"main( )".into()));
    }

    #[test]
    fn hit_after_insert_and_counts() {
        let cache = CodeCache::new(1 << 20);
        let key = CodeKey::new(&runtime(1), &"x".into());
        assert!(cache.get(&key).is_none());
        cache.insert(key, Arc::from(&b"code"[..]));
        assert_eq!(cache.get(&key).as_deref(), Some(&b"code"[..]));
        assert_eq!(cache.counts(), (1, 1));
    }

    #[test]
    fn evicts_least_recently_used_to_stay_under_capacity() {
        let cache = CodeCache::new(10);
        let keys: Vec<_> = (0..3)
            .map(|i| CodeKey::new(&runtime(1), &i.to_string().into()))
            .collect();
        cache.insert(keys[0], Arc::from(&[0u8; 4][..]));
        cache.insert(keys[1], Arc::from(&[1u8; 4][..]));
        assert!(cache.get(&keys[0]).is_some()); // now keys[1] is the oldest
        cache.insert(keys[2], Arc::from(&[2u8; 4][..]));
        assert!(cache.get(&keys[1]).is_none());
        assert!(cache.get(&keys[0]).is_some());
        assert!(cache.get(&keys[2]).is_some());
        assert!(cache.lock().bytes <= 10);
    }

    #[test]
    fn oversized_code_is_not_kept() {
        let cache = CodeCache::new(8);
        let key = CodeKey::new(&runtime(1), &"big".into());
        cache.insert(key, Arc::from(&[0u8; 9][..]));
        assert!(cache.get(&key).is_none());
        assert_eq!(cache.counts(), (0, 1));
    }
}

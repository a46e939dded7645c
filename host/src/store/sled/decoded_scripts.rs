//! Script records kept decoded beside the bytes they were decoded from.
//! Every run reads its script at least twice (the handler by id or name,
//! the worker by id), and decoding the JSON was ~2.6 % of the server's CPU
//! at 32 connections. A read still gets the bytes from sled and reuses a
//! decoded record only when they are the very bytes it came from, so no
//! write of a script needs to know this cache: it is right by construction.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use super::decode;
use crate::store::{ScriptRecord, StoreError};

/// Records kept, at most: a node's busy scripts.
const ENTRIES: usize = 256;
/// Records stored in more bytes are decoded each time, so the cache holds
/// at most `ENTRIES` × this in bytes, and about as much decoded.
const LARGEST: usize = 16 * 1024;

/// Script id → the stored bytes and the record decoded from them, the
/// least recently read dropped first.
type Entries = LruCache<sled::IVec, (sled::IVec, Arc<ScriptRecord>)>;

pub(super) struct DecodedScripts(Mutex<Entries>);

impl Default for DecodedScripts {
    fn default() -> Self {
        let entries = NonZeroUsize::new(ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Self(Mutex::new(LruCache::new(entries)))
    }
}

impl DecodedScripts {
    /// The record stored as `bytes` at `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the bytes are not a script record.
    pub(super) fn decode(
        &self,
        id: &[u8],
        bytes: &sled::IVec,
    ) -> Result<Arc<ScriptRecord>, StoreError> {
        if let Some((kept, record)) = self.lock().get(id)
            && kept == bytes
        {
            return Ok(record.clone());
        }
        let record = Arc::new(decode::<ScriptRecord>(bytes)?);
        if bytes.len() <= LARGEST {
            self.lock()
                .put(sled::IVec::from(id), (bytes.clone(), record.clone()));
        }
        Ok(record)
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::encode;

    fn script(id: &str, name: &str) -> ScriptRecord {
        crate::store::testing::script(id, name, 1)
    }

    #[test]
    fn a_record_is_decoded_again_only_when_its_bytes_change() {
        let cache = DecodedScripts::default();
        let first = sled::IVec::from(encode(&script("s1", "first")).unwrap());
        let a = cache.decode(b"s1", &first).unwrap();
        let b = cache.decode(b"s1", &first).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same bytes reuse the record");
        let renamed = sled::IVec::from(encode(&script("s1", "renamed")).unwrap());
        let c = cache.decode(b"s1", &renamed).unwrap();
        assert_eq!(c.name, "renamed", "new bytes are decoded");
        assert!(cache.decode(b"s1", &sled::IVec::from(&b"{"[..])).is_err());
        assert_eq!(cache.decode(b"s1", &renamed).unwrap().name, "renamed");
    }

    #[test]
    fn the_cache_is_bounded_in_entries_and_in_a_record_size() {
        let cache = DecodedScripts::default();
        for i in 0..ENTRIES + 50 {
            let id = format!("s{i}");
            let bytes = sled::IVec::from(encode(&script(&id, &id)).unwrap());
            cache.decode(id.as_bytes(), &bytes).unwrap();
            assert!(cache.lock().len() <= ENTRIES);
        }
        // The least recently read went first.
        assert!(!cache.lock().contains(&b"s0"[..]));
        assert!(
            cache
                .lock()
                .contains(format!("s{}", ENTRIES + 49).as_bytes())
        );
        let mut large = script("large", "large");
        large.description = Some("x".repeat(LARGEST));
        let bytes = sled::IVec::from(encode(&large).unwrap());
        let a = cache.decode(b"large", &bytes).unwrap();
        assert!(!cache.lock().contains(&b"large"[..]));
        assert!(!Arc::ptr_eq(&a, &cache.decode(b"large", &bytes).unwrap()));
    }
}

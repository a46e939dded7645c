//! Execution records and usage rollups packed with zstd against fixed
//! dictionaries.
//!
//! A trivial run's record is ~500 bytes of JSON, most of it field names
//! and values every record repeats, and sled's log carries each record
//! two to three times over (its deltas, node rewrites and the garbage
//! its segments keep until cleaned). Compressed alone, a record that small
//! barely shrinks; against a dictionary of typical records
//! (`record_dictionary_1.txt`, raw content, no training) what is left is
//! mostly its ids and times.
//!
//! Rollup rows are the same: ~100 bytes of JSON, one per script and hour
//! that ran.
//!
//! A stored value is either JSON as before (it begins with `{`), so values
//! written before packing, and ones too large to pack, read as they are,
//! or its kind's tag, the JSON's length (`u32`, little-endian) and a zstd
//! frame. A dictionary is never edited: values packed with it need its
//! exact bytes (a test pins their hashes); a better one gets a new tag.

use std::borrow::Cow;
use std::sync::{Mutex, OnceLock, PoisonError};

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::store::StoreError;

/// Execution records (`executions`).
pub(super) static RECORD: Packing = Packing::new(0x01, include_bytes!("record_dictionary_1.txt"));
/// Usage rollup rows (`usage`): a hundred bytes of JSON each, one per
/// script and hour that ran.
pub(super) static ROLLUP: Packing = Packing::new(0x02, include_bytes!("rollup_dictionary_2.txt"));

/// zstd's level: on a trivial record level 1 packs smaller than 3 and no
/// slower; higher levels save a few bytes more for about twice the time,
/// on every run's final write.
const LEVEL: i32 = 1;
/// Values longer than this are stored as JSON: a record that large is
/// rare (large parameters; large outputs are stored apart, `contents.rs`),
/// and the bound keeps what a corrupt length could make `unpack` allocate
/// small.
const PACK_UP_TO: usize = 64 * 1024;
const HEADER: usize = 1 + 4;
/// Contexts kept for reuse, per direction; beyond it one is made and
/// dropped (each holds a few hundred KiB).
const POOLED: usize = 8;

/// One kind of value's tag and dictionary, and the zstd contexts kept for
/// it.
pub(super) struct Packing {
    tag: u8,
    dictionary: &'static [u8],
    encoder: OnceLock<EncoderDictionary<'static>>,
    decoder: OnceLock<DecoderDictionary<'static>>,
    compressors: Mutex<Vec<Compressor<'static>>>,
    decompressors: Mutex<Vec<Decompressor<'static>>>,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("a packed value: {what}"))
}

/// Takes a context from `pool` (or makes one), runs `work` with it and
/// puts it back while the pool has room.
fn pooled<C, T>(
    pool: &Mutex<Vec<C>>,
    make: impl FnOnce() -> std::io::Result<C>,
    work: impl FnOnce(&mut C) -> T,
) -> std::io::Result<T> {
    let taken = pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut context = match taken {
        Some(context) => context,
        None => make()?,
    };
    let done = work(&mut context);
    let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOLED {
        pool.push(context);
    }
    Ok(done)
}

impl Packing {
    const fn new(tag: u8, dictionary: &'static [u8]) -> Self {
        Self {
            tag,
            dictionary,
            encoder: OnceLock::new(),
            decoder: OnceLock::new(),
            compressors: Mutex::new(Vec::new()),
            decompressors: Mutex::new(Vec::new()),
        }
    }

    /// `json` (an encoded value) as it is stored: packed when that is
    /// smaller, else as it is.
    pub(super) fn pack(&'static self, json: Vec<u8>) -> Vec<u8> {
        if json.len() > PACK_UP_TO {
            return json;
        }
        let packed = pooled(
            &self.compressors,
            || {
                let encoder = self
                    .encoder
                    .get_or_init(|| EncoderDictionary::copy(self.dictionary, LEVEL));
                Compressor::with_prepared_dictionary(encoder)
            },
            |compressor| compressor.compress(&json),
        );
        let frame = match packed {
            Ok(Ok(frame)) if HEADER + frame.len() < json.len() => frame,
            // A compress error (none is expected: the output has room for
            // zstd's bound) leaves the value as JSON.
            _ => return json,
        };
        let mut stored = Vec::with_capacity(HEADER + frame.len());
        stored.push(self.tag);
        // Within PACK_UP_TO, so within u32.
        stored.extend_from_slice(&(json.len() as u32).to_le_bytes());
        stored.extend_from_slice(&frame);
        stored
    }

    /// A stored value's JSON.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a length past what is packed, or a frame
    /// that does not decompress to it.
    pub(super) fn unpack<'a>(&'static self, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
        if stored.first() != Some(&self.tag) {
            return Ok(Cow::Borrowed(stored));
        }
        let length = stored
            .get(1..HEADER)
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .map(|bytes| u32::from_le_bytes(bytes) as usize)
            .ok_or_else(|| corrupt("it ends in its header"))?;
        if length > PACK_UP_TO {
            return Err(corrupt(format!("a length of {length} bytes")));
        }
        let json = pooled(
            &self.decompressors,
            || {
                let decoder = self
                    .decoder
                    .get_or_init(|| DecoderDictionary::copy(self.dictionary));
                Decompressor::with_prepared_dictionary(decoder)
            },
            |decompressor| decompressor.decompress(&stored[HEADER..], length),
        )
        .and_then(|done| done)
        .map_err(corrupt)?;
        if json.len() != length {
            return Err(corrupt(format!(
                "{} bytes where its header says {length}",
                json.len()
            )));
        }
        Ok(Cow::Owned(json))
    }

    /// A stored value (or part of one, such as a record's `Indexed`
    /// fields), decoded.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`]: see [`Packing::unpack`]; or its JSON does
    /// not decode.
    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        &'static self,
        stored: &[u8],
    ) -> Result<T, StoreError> {
        super::decode(&self.unpack(stored)?)
    }
}

/// Every packed value in `bytes` (a store file, read whole), unpacked: what
/// a test that searches the data directory for a marker must look in too.
#[cfg(test)]
pub(crate) fn unpacked_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    use std::io::Read as _;
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let mut found = Vec::new();
    for at in 0..bytes.len() {
        let value = &bytes[at..];
        if value.get(HEADER..HEADER + ZSTD_MAGIC.len()) != Some(&ZSTD_MAGIC[..]) {
            continue;
        }
        let length = u32::from_le_bytes([value[1], value[2], value[3], value[4]]) as usize;
        for packing in [&RECORD, &ROLLUP].into_iter().filter(|p| p.tag == value[0]) {
            let dictionary = packing
                .decoder
                .get_or_init(|| DecoderDictionary::copy(packing.dictionary));
            let Ok(decoder) =
                zstd::stream::read::Decoder::with_prepared_dictionary(&value[HEADER..], dictionary)
            else {
                continue;
            };
            // A frame followed by other bytes: read just the one.
            let mut text = Vec::new();
            let read = decoder
                .single_frame()
                .take(PACK_UP_TO as u64 + 1)
                .read_to_end(&mut text);
            if read.is_ok() && text.len() == length {
                found.push(text);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::execution;
    use crate::store::usage::UsageRollup;
    use crate::store::{ExecutionRecord, ExecutionStatus};

    /// A completed run of `script` (ad-hoc if none).
    fn completed(script: Option<&str>) -> ExecutionRecord {
        execution(
            "019af3c2-5b1e-7cc4-9a2e-3d1f0b7e6a55",
            script,
            ExecutionStatus::Completed,
        )
    }

    fn trivial() -> Vec<u8> {
        let mut record = completed(Some("019af3c2-1111-7abc-8def-0123456789ab"));
        record.created_by = Some("019af3c2-2222-7abc-8def-0123456789ab".into());
        record.started_at = Some("2026-12-06T17:20:01.123Z".into());
        record.completed_at = Some("2026-12-06T17:20:01.125Z".into());
        record.duration_ms = Some(2);
        record.exit_code = Some(0);
        record.result = Some(serde_json::json!(1));
        record.fuel_consumed = Some(41_233);
        record.peak_memory_bytes = Some(1_245_184);
        serde_json::to_vec(&record).unwrap()
    }

    #[test]
    fn the_dictionaries_are_the_ones_values_were_packed_with() {
        // Values on disk need these exact bytes: a change must come with a
        // new tag (and this dictionary kept), not an edit.
        let hash = |packing: &Packing| blake3::hash(packing.dictionary).to_hex().to_string();
        assert_eq!(
            hash(&RECORD),
            "1096e28cc21b9960981d259cff7810ab6dddc5c342c3ccf0716673746de73cca"
        );
        assert_eq!(
            hash(&ROLLUP),
            "4f7b6ea4a0475233e38348fb2816259068c55022f43fde2d9782dd8b2c411e59"
        );
        assert_ne!(RECORD.tag, ROLLUP.tag);
        assert!(![RECORD.tag, ROLLUP.tag].contains(&b'{'));
    }

    #[test]
    fn a_trivial_record_packs_to_a_third_and_back() {
        let json = trivial();
        let stored = RECORD.pack(json.clone());
        assert_eq!(stored[0], RECORD.tag);
        assert!(
            stored.len() * 3 < json.len(),
            "{} bytes packed from {}",
            stored.len(),
            json.len()
        );
        assert_eq!(&*RECORD.unpack(&stored).unwrap(), json.as_slice());
        let record: ExecutionRecord = RECORD.decode(&stored).unwrap();
        assert_eq!(record.fuel_consumed, Some(41_233));
    }

    #[test]
    fn a_rollup_row_packs_to_half_and_back() {
        let mut row = UsageRollup::default();
        let mut record = completed(None);
        record.duration_ms = Some(3);
        record.fuel_consumed = Some(52_113);
        row.add(&record);
        let json = serde_json::to_vec(&row).unwrap();
        let stored = ROLLUP.pack(json.clone());
        assert_eq!(stored[0], ROLLUP.tag);
        assert!(
            stored.len() * 2 < json.len(),
            "{} bytes packed from {}",
            stored.len(),
            json.len()
        );
        assert_eq!(ROLLUP.decode::<UsageRollup>(&stored).unwrap(), row);
        // One kind's tag is not another's: a record read as a rollup is
        // not unpacked with the wrong dictionary.
        assert!(RECORD.decode::<UsageRollup>(&stored).is_err());
    }

    #[test]
    fn json_stored_before_packing_reads_as_it_is() {
        let json = trivial();
        assert!(matches!(RECORD.unpack(&json).unwrap(), Cow::Borrowed(b) if b == json.as_slice()));
    }

    #[test]
    fn a_record_too_large_or_that_does_not_shrink_stays_json() {
        let mut record = completed(None);
        record.parameters = serde_json::json!({ "blob": "x".repeat(PACK_UP_TO) });
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(RECORD.pack(json.clone()), json);
        let tiny = b"{}".to_vec();
        assert_eq!(RECORD.pack(tiny.clone()), tiny);
    }

    #[test]
    fn damaged_packed_values_are_corrupt_not_a_panic() {
        let stored = RECORD.pack(trivial());
        let mut cut = stored.clone();
        cut.truncate(stored.len() - 4);
        let mut long = stored.clone();
        long[1..HEADER].copy_from_slice(&(PACK_UP_TO as u32 + 1).to_le_bytes());
        let mut wrong = stored.clone();
        wrong[1..HEADER].copy_from_slice(&10u32.to_le_bytes());
        for damaged in [&stored[..3], &cut[..], &long[..], &wrong[..]] {
            assert!(matches!(
                RECORD.unpack(damaged),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    /// Takes `depth` contexts at once from `pool`, one inside the other.
    fn hold(pool: &Mutex<Vec<usize>>, depth: usize, made: &std::sync::atomic::AtomicUsize) {
        if depth == 0 {
            return;
        }
        let make = || Ok(made.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        pooled(pool, make, |_| hold(pool, depth - 1, made)).unwrap();
    }

    #[test]
    fn at_most_pooled_contexts_are_kept_however_many_were_in_use() {
        let pool = Mutex::new(Vec::new());
        let made = std::sync::atomic::AtomicUsize::new(0);
        hold(&pool, POOLED + 4, &made);
        assert_eq!(made.load(std::sync::atomic::Ordering::Relaxed), POOLED + 4);
        assert_eq!(pool.lock().unwrap().len(), POOLED);
        // Kept ones are used again before any is made.
        hold(&pool, 3, &made);
        assert_eq!(made.load(std::sync::atomic::Ordering::Relaxed), POOLED + 4);
        assert_eq!(pool.lock().unwrap().len(), POOLED);
    }

    #[test]
    fn packed_values_are_found_among_other_bytes() {
        let record = RECORD.pack(trivial());
        let mut rollup = UsageRollup::default();
        rollup.add(&completed(None));
        let row = ROLLUP.pack(serde_json::to_vec(&rollup).unwrap());
        let file = [&b"\x01\x02 log"[..], &record, b"{}", &row, b"\x00"].concat();
        let found = unpacked_in(&file);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], trivial());
        assert!(unpacked_in(&trivial()).is_empty());
    }
}

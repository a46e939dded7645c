//! The sled implementation of [`Store`]: one tree per record family, JSON
//! values, and group commit through `flush_async`.

use std::path::Path;

use sled::Transactional as _;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use super::{
    Claim, ExecutionRecord, ExecutionStatus, FlushFuture, IDEMPOTENCY_ABANDONED_MS,
    IDEMPOTENCY_TTL_MS, SCHEMA_VERSION, ScriptRecord, Store, StoreError, StoredResponse,
    VersionRecord,
};

pub struct SledStore {
    db: sled::Db,
    scripts: sled::Tree,
    script_names: sled::Tree,
    /// `<id>/<version>` → content and `<id>/v/<version>` → [`VersionRecord`].
    script_versions: sled::Tree,
    executions: sled::Tree,
    /// Idempotency key → [`IdempotencyEntry`].
    idempotency: sled::Tree,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    decode(bytes).map_err(ConflictableTransactionError::Abort)
}

fn tx_encode<T: serde::Serialize>(value: &T) -> TxResult<Vec<u8>> {
    encode(value).map_err(ConflictableTransactionError::Abort)
}

/// The script record under `id` (or under the id the name `id` points at).
fn tx_script(
    scripts: &TransactionalTree,
    names: &TransactionalTree,
    id: &str,
) -> Result<Option<ScriptRecord>, UnabortableTransactionError> {
    let bytes = match scripts.get(id)? {
        Some(bytes) => Some(bytes),
        None => match names.get(id)? {
            Some(real) => scripts.get(real)?,
            None => None,
        },
    };
    Ok(bytes.and_then(|b| decode(&b).ok()))
}

#[derive(serde::Serialize, serde::Deserialize)]
enum IdempotencyEntry {
    InFlight {
        fingerprint: String,
        claimed_ms: u64,
    },
    Done {
        fingerprint: String,
        claimed_ms: u64,
        response: StoredResponse,
    },
}

impl IdempotencyEntry {
    fn claimed_ms(&self) -> u64 {
        match self {
            Self::InFlight { claimed_ms, .. } | Self::Done { claimed_ms, .. } => *claimed_ms,
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn version_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/{version:010}").into_bytes()
}

fn version_meta_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/v/{version:010}").into_bytes()
}

impl SledStore {
    /// Opens (or creates) the database in `dir` and checks its schema version.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if sled cannot open it (for example another
    /// process holds it), [`StoreError::Schema`] if it is of another version.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let store = Self {
            scripts: db.open_tree("scripts").map_err(backend)?,
            script_names: db.open_tree("script_names").map_err(backend)?,
            script_versions: db.open_tree("script_versions").map_err(backend)?,
            executions: db.open_tree("executions").map_err(backend)?,
            idempotency: db.open_tree("idempotency").map_err(backend)?,
            db,
        };
        let found: u32 = match meta.get("schema_version").map_err(backend)? {
            Some(found) => decode(&found)?,
            None => SCHEMA_VERSION,
        };
        if found > SCHEMA_VERSION || found == 0 {
            return Err(StoreError::Schema { found });
        }
        if found < 2 {
            store.migrate_to_2()?;
        }
        meta.insert("schema_version", encode(&SCHEMA_VERSION)?)
            .map_err(backend)?;
        store.db.flush().map_err(backend)?;
        Ok(store)
    }

    /// Schema 1 kept only the content of each version: give every stored
    /// version a record, dated when the script was last updated.
    fn migrate_to_2(&self) -> Result<(), StoreError> {
        for script in self.scripts()? {
            for version in 1..=script.version {
                let Some(content) = self.script_content(&script.id, version)? else {
                    continue;
                };
                let record = VersionRecord {
                    version,
                    content_hash: blake3::hash(&content).to_hex().to_string(),
                    size_bytes: content.len() as u64,
                    created_at: script.updated_at.clone(),
                    created_by: script.created_by.clone(),
                };
                self.script_versions
                    .insert(version_meta_key(&script.id, version), encode(&record)?)
                    .map_err(backend)?;
            }
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError> {
        // Claim the name first: compare-and-swap makes two concurrent creates
        // of one name end with exactly one winner.
        let claimed = self
            .script_names
            .compare_and_swap(
                script.name.as_bytes(),
                None as Option<&[u8]>,
                Some(script.id.as_bytes()),
            )
            .map_err(backend)?;
        if claimed.is_err() {
            return Err(StoreError::NameTaken(script.name.clone()));
        }
        self.script_versions
            .insert(version_key(&script.id, script.version), content)
            .map_err(backend)?;
        self.script_versions
            .insert(
                version_meta_key(&script.id, script.version),
                encode(&VersionRecord::current(script))?,
            )
            .map_err(backend)?;
        self.scripts
            .insert(script.id.as_bytes(), encode(script)?)
            .map_err(backend)?;
        Ok(())
    }

    fn script(&self, id_or_name: &str) -> Result<Option<ScriptRecord>, StoreError> {
        if let Some(bytes) = self.scripts.get(id_or_name).map_err(backend)? {
            return decode(&bytes).map(Some);
        }
        let Some(id) = self.script_names.get(id_or_name).map_err(backend)? else {
            return Ok(None);
        };
        match self.scripts.get(id).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .script_versions
            .get(version_key(id, version))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn update_script(
        &self,
        id: &str,
        change: &dyn Fn(&ScriptRecord) -> Result<ScriptRecord, StoreError>,
        content: Option<&[u8]>,
    ) -> Result<ScriptRecord, StoreError> {
        (&self.scripts, &self.script_names, &self.script_versions)
            .transaction(|(scripts, names, versions)| {
                let Some(current) = tx_script(scripts, names, id)? else {
                    return abort(StoreError::NotFound);
                };
                let next = change(&current).map_err(ConflictableTransactionError::Abort)?;
                if next.name != current.name {
                    if names.get(next.name.as_bytes())?.is_some() {
                        return abort(StoreError::NameTaken(next.name.clone()));
                    }
                    names.remove(current.name.as_bytes())?;
                    names.insert(next.name.as_bytes(), next.id.as_bytes())?;
                }
                if let Some(content) = content {
                    versions.insert(version_key(&next.id, next.version), content)?;
                    versions.insert(
                        version_meta_key(&next.id, next.version),
                        tx_encode(&VersionRecord::current(&next))?,
                    )?;
                }
                scripts.insert(next.id.as_bytes(), tx_encode(&next)?)?;
                Ok(next)
            })
            .map_err(tx_error)
    }

    fn delete_script(
        &self,
        id: &str,
        allow: &dyn Fn(&ScriptRecord) -> Result<(), StoreError>,
    ) -> Result<ScriptRecord, StoreError> {
        let deleted = (&self.scripts, &self.script_names)
            .transaction(|(scripts, names)| {
                let Some(current) = tx_script(scripts, names, id)? else {
                    return abort(StoreError::NotFound);
                };
                allow(&current).map_err(ConflictableTransactionError::Abort)?;
                scripts.remove(current.id.as_bytes())?;
                names.remove(current.name.as_bytes())?;
                Ok(current)
            })
            .map_err(tx_error)?;
        // The record is gone, so nothing adds versions any more; a crash here
        // leaves unreachable content, never a half-deleted script.
        let prefix = format!("{}/", deleted.id);
        for key in self.script_versions.scan_prefix(prefix.as_bytes()).keys() {
            self.script_versions
                .remove(key.map_err(backend)?)
                .map_err(backend)?;
        }
        Ok(deleted)
    }

    fn script_versions(&self, id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.script_versions
            .scan_prefix(format!("{id}/v/").as_bytes())
            .values()
            .map(|v| decode(&v.map_err(backend)?))
            .collect()
    }

    fn script_version(&self, id: &str, version: u32) -> Result<Option<VersionRecord>, StoreError> {
        self.script_versions
            .get(version_meta_key(id, version))
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn note_execution(&self, script_id: &str, at: &str) -> Result<(), StoreError> {
        // A transaction, so it never interleaves with an update's.
        self.scripts
            .transaction(|scripts| {
                let Some(bytes) = scripts.get(script_id)? else {
                    return Ok(());
                };
                let mut script: ScriptRecord = tx_decode(&bytes)?;
                script.execution_count += 1;
                script.last_executed_at = Some(at.to_string());
                scripts.insert(script_id.as_bytes(), tx_encode(&script)?)?;
                Ok(())
            })
            .map_err(tx_error)
    }

    fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        self.executions
            .insert(execution.id.as_bytes(), encode(execution)?)
            .map_err(backend)?;
        Ok(())
    }

    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        self.executions
            .get(id)
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn executions_in(
        &self,
        states: &[ExecutionStatus],
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let mut found = Vec::new();
        // Keys are UUID v7 strings, so iteration is oldest first.
        for entry in self.executions.iter() {
            let (_, bytes) = entry.map_err(backend)?;
            let record: ExecutionRecord = decode(&bytes)?;
            if states.contains(&record.status) {
                found.push(record);
            }
        }
        Ok(found)
    }

    fn scripts(&self) -> Result<Vec<ScriptRecord>, StoreError> {
        self.scripts
            .iter()
            .map(|entry| decode(&entry.map_err(backend)?.1))
            .collect()
    }

    fn executions_page(
        &self,
        keep: &dyn Fn(&ExecutionRecord) -> bool,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<ExecutionRecord>, usize), StoreError> {
        let (mut page, mut total) = (Vec::new(), 0);
        // Keys are UUID v7 strings: reverse key order is newest first.
        for entry in self.executions.iter().rev() {
            let record: ExecutionRecord = decode(&entry.map_err(backend)?.1)?;
            if keep(&record) {
                if total >= skip && page.len() < take {
                    page.push(record);
                }
                total += 1;
            }
        }
        Ok((page, total))
    }

    fn visit_executions_since(
        &self,
        since_ms: u64,
        visit: &mut dyn FnMut(ExecutionRecord),
    ) -> Result<(), StoreError> {
        // Keys are UUID v7 strings, which begin with their creation time in
        // ms: the smallest id of that millisecond is where the range starts.
        let first = uuid::Builder::from_unix_timestamp_millis(since_ms, &[0; 10])
            .into_uuid()
            .to_string();
        for entry in self.executions.range(first.into_bytes()..) {
            visit(decode(&entry.map_err(backend)?.1)?);
        }
        Ok(())
    }

    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let mut counts: Vec<(ExecutionStatus, u64)> = Vec::new();
        for entry in self.executions.iter() {
            let record: ExecutionRecord = decode(&entry.map_err(backend)?.1)?;
            match counts
                .iter_mut()
                .find(|(status, _)| *status == record.status)
            {
                Some((_, n)) => *n += 1,
                None => counts.push((record.status, 1)),
            }
        }
        Ok(counts)
    }

    fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        loop {
            let current = self.idempotency.get(key).map_err(backend)?;
            if let Some(bytes) = &current {
                let entry: IdempotencyEntry = decode(bytes)?;
                let age = now_ms.saturating_sub(entry.claimed_ms());
                let live = match &entry {
                    IdempotencyEntry::InFlight { .. } => age < IDEMPOTENCY_ABANDONED_MS,
                    IdempotencyEntry::Done { .. } => age < IDEMPOTENCY_TTL_MS,
                };
                if live {
                    return Ok(match entry {
                        IdempotencyEntry::InFlight { fingerprint: f, .. }
                        | IdempotencyEntry::Done { fingerprint: f, .. }
                            if f != fingerprint =>
                        {
                            Claim::Mismatch
                        }
                        IdempotencyEntry::InFlight { .. } => Claim::InFlight,
                        IdempotencyEntry::Done { response, .. } => Claim::Replay(response),
                    });
                }
            }
            let claim = encode(&IdempotencyEntry::InFlight {
                fingerprint: fingerprint.to_string(),
                claimed_ms: now_ms,
            })?;
            // Compare-and-swap: of two concurrent first uses, one claims.
            if self
                .idempotency
                .compare_and_swap(key, current, Some(claim))
                .map_err(backend)?
                .is_ok()
            {
                return Ok(Claim::Claimed);
            }
        }
    }

    fn settle_idempotency_key(
        &self,
        key: &str,
        response: Option<&StoredResponse>,
    ) -> Result<(), StoreError> {
        let Some(response) = response else {
            self.idempotency.remove(key).map_err(backend)?;
            return Ok(());
        };
        let Some(bytes) = self.idempotency.get(key).map_err(backend)? else {
            return Ok(());
        };
        if let IdempotencyEntry::InFlight {
            fingerprint,
            claimed_ms,
        } = decode(&bytes)?
        {
            let done = IdempotencyEntry::Done {
                fingerprint,
                claimed_ms,
                response: response.clone(),
            };
            self.idempotency
                .insert(key, encode(&done)?)
                .map_err(backend)?;
        }
        Ok(())
    }

    fn expire_idempotency_keys(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut expired = 0;
        for entry in self.idempotency.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            let stale = decode::<IdempotencyEntry>(&bytes)
                .map_or(true, |entry| entry.claimed_ms() < before_ms);
            if stale {
                // Only if unchanged: a fresh claim of the key stays.
                let _ = self
                    .idempotency
                    .compare_and_swap(&key, Some(&bytes), None as Option<&[u8]>)
                    .map_err(backend)?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.db.flush_async().await.map_err(backend)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Language, ScriptStatus};

    fn script(id: &str, name: &str, version: u32) -> ScriptRecord {
        ScriptRecord {
            id: id.into(),
            name: name.into(),
            language: Language::Javascript,
            description: None,
            tags: Vec::new(),
            metadata: serde_json::Map::new(),
            status: ScriptStatus::Active,
            limits: None,
            created_by: None,
            version,
            content_hash: blake3::hash(b"v2").to_hex().to_string(),
            size_bytes: 2,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-02T00:00:00.000Z".into(),
            execution_count: 0,
            last_executed_at: None,
        }
    }

    #[test]
    fn schema_1_data_gets_version_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What a schema-1 build wrote: content only, no version records.
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", encode(&1u32).unwrap())
                .unwrap();
            let versions = db.open_tree("script_versions").unwrap();
            versions.insert(version_key("s1", 1), &b"v1"[..]).unwrap();
            versions.insert(version_key("s1", 2), &b"v2"[..]).unwrap();
            let record = script("s1", "old", 2);
            db.open_tree("scripts")
                .unwrap()
                .insert("s1", encode(&record).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let versions = store.script_versions("s1").unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(
            versions[0].content_hash,
            blake3::hash(b"v1").to_hex().to_string()
        );
        assert_eq!(versions[1].size_bytes, 2);
        assert_eq!(
            store.script_content("s1", 1).unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        drop(store);
        // Reopening finds schema 2 and changes nothing.
        assert_eq!(
            SledStore::open(dir.path())
                .unwrap()
                .script_versions("s1")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", encode(&(SCHEMA_VERSION + 1)).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            SledStore::open(dir.path()),
            Err(StoreError::Schema { .. })
        ));
    }

    #[test]
    fn idempotency_keys_claim_replay_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "f", 1_000).unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_idempotency_key("k", "f", 1_001).unwrap(),
            Claim::InFlight
        );
        assert_eq!(
            store.claim_idempotency_key("k", "g", 1_001).unwrap(),
            Claim::Mismatch
        );
        let response = StoredResponse {
            status: 201,
            headers: vec![("location".into(), "/x".into())],
            body: b"{}".to_vec(),
        };
        store.settle_idempotency_key("k", Some(&response)).unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "f", 2_000).unwrap(),
            Claim::Replay(response)
        );
        // After the TTL the key is new again.
        let later = 1_000 + IDEMPOTENCY_TTL_MS;
        assert_eq!(
            store.claim_idempotency_key("k", "g", later).unwrap(),
            Claim::Claimed
        );
        // A released claim can be taken at once; an abandoned one after a while.
        store.settle_idempotency_key("k", None).unwrap();
        assert_eq!(
            store.claim_idempotency_key("k", "h", later).unwrap(),
            Claim::Claimed
        );
        let abandoned = later + IDEMPOTENCY_ABANDONED_MS;
        assert_eq!(
            store.claim_idempotency_key("k", "h", abandoned).unwrap(),
            Claim::Claimed
        );
        assert_eq!(store.expire_idempotency_keys(abandoned + 1).unwrap(), 1);
        assert_eq!(
            store.claim_idempotency_key("k", "f", abandoned).unwrap(),
            Claim::Claimed
        );
    }

    #[test]
    fn renames_move_the_name_and_refusals_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create_script(&script("a", "first", 1), b"v2")
            .unwrap();
        store
            .create_script(&script("b", "second", 1), b"v2")
            .unwrap();
        let rename = |to: &'static str| {
            move |s: &ScriptRecord| {
                let mut next = s.clone();
                next.name = to.into();
                Ok(next)
            }
        };
        assert!(matches!(
            store.update_script("a", &rename("second"), None),
            Err(StoreError::NameTaken(_))
        ));
        store
            .update_script("first", &rename("third"), None)
            .unwrap();
        assert!(store.script("first").unwrap().is_none());
        assert_eq!(store.script("third").unwrap().unwrap().id, "a");
        let refuse = |_: &ScriptRecord| Err(StoreError::Refused("stale".into()));
        assert!(store.update_script("a", &refuse, Some(b"v3")).is_err());
        assert_eq!(store.script_versions("a").unwrap().len(), 1);
        store.delete_script("third", &|_| Ok(())).unwrap();
        assert!(store.script("a").unwrap().is_none());
        assert!(store.script_content("a", 1).unwrap().is_none());
        assert!(store.script_versions("a").unwrap().is_empty());
        assert!(matches!(
            store.delete_script("a", &|_| Ok(())),
            Err(StoreError::NotFound)
        ));
    }
}

//! The sled implementation of [`Store`]: one tree per record family, JSON
//! values, and group commit (`group_commit.rs`).

mod auth;
mod script_data;
mod webhooks;

use std::path::Path;

use std::sync::{Arc, Mutex, PoisonError};

use super::group_commit::GroupCommit;
use super::{
    Claim, ExecutionRecord, ExecutionStatus, FlushFuture, IDEMPOTENCY_ABANDONED_MS,
    IDEMPOTENCY_TTL_MS, SCHEMA_VERSION, ScheduleRecord, ScriptRecord, Store, StoreError,
    StoredResponse, VersionRecord,
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
    /// Schedule id (a UUIDv7, so creation order) → [`ScheduleRecord`].
    schedules: sled::Tree,
    users: sled::Tree,
    /// Username → user id: the unique index.
    user_names: sled::Tree,
    api_keys: sled::Tree,
    /// BLAKE3 of a key (hex) → key id.
    api_key_hashes: sled::Tree,
    sessions: sled::Tree,
    /// BLAKE3 of a refresh token (hex) → [`RefreshRecord`](super::auth::RefreshRecord).
    refresh_tokens: sled::Tree,
    audit: sled::Tree,
    webhooks: sled::Tree,
    /// Deliveries not yet done, by id.
    outbox: sled::Tree,
    /// The attempt log, by `<webhook id>/<attempt id>`.
    deliveries: sled::Tree,
    /// Scripts' key-value entries by `<script id>/<key>`.
    script_kv: sled::Tree,
    /// Scripts' config values by script id.
    script_config: sled::Tree,
    /// Serializes key-value writes (their quota check reads the sum).
    kv_writes: Mutex<()>,
    /// Serializes script updates and deletes. Not sled transactions: in sled
    /// 0.34 they take a global lock that deadlocks with concurrent
    /// `flush_async` under load. Writes are ordered so that a crash between
    /// them leaves at most a stale name, which `open` repairs.
    script_writes: Mutex<()>,
    commit: Arc<GroupCommit>,
}

/// Removes the entries of a name index (`name → id`) whose record in
/// `records` is missing or carries another name (`name_of`).
fn drop_stale_names(
    names: &sled::Tree,
    records: &sled::Tree,
    name_of: impl Fn(&[u8]) -> Result<String, StoreError>,
) -> Result<(), StoreError> {
    for entry in names.iter() {
        let (name, id) = entry.map_err(backend)?;
        let current = match records.get(&id).map_err(backend)? {
            Some(bytes) => Some(name_of(&bytes)?),
            None => None,
        };
        if current.as_deref().map(str::as_bytes) != Some(&name[..]) {
            names.remove(&name).map_err(backend)?;
        }
    }
    Ok(())
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
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

/// Reads the record at `key`, lets `change` decide from it what to write
/// (`Some`: a new record; `None`: delete it), and writes that only if the
/// stored bytes are still those it read, else reads again: one
/// compare-and-swap loop for every record changed in place. Returns the
/// record as read and as written, or `None` when there is no such record.
fn swap<T: serde::Serialize + serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    change: impl Fn(&T) -> Result<Option<T>, StoreError>,
) -> Result<Option<(T, Option<T>)>, StoreError> {
    loop {
        let Some(current) = tree.get(key).map_err(backend)? else {
            return Ok(None);
        };
        let before: T = decode(&current)?;
        let after = change(&before)?;
        let bytes = after.as_ref().map(encode).transpose()?;
        let swapped = tree
            .compare_and_swap(key, Some(current), bytes)
            .map_err(backend)?;
        if swapped.is_ok() {
            return Ok(Some((before, after)));
        }
    }
}

fn version_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/{version:010}").into_bytes()
}

fn version_meta_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/v/{version:010}").into_bytes()
}

impl SledStore {
    /// Opens (or creates) the database in `dir` and checks its schema version.
    /// sled's page cache is capped at `cache_bytes`: its own default is
    /// 1 GiB, which an edge node's RSS would creep towards as records are
    /// written.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if sled cannot open it (for example another
    /// process holds it), [`StoreError::Schema`] if it is of another version.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let store = Self {
            scripts: db.open_tree("scripts").map_err(backend)?,
            script_names: db.open_tree("script_names").map_err(backend)?,
            script_versions: db.open_tree("script_versions").map_err(backend)?,
            executions: db.open_tree("executions").map_err(backend)?,
            idempotency: db.open_tree("idempotency").map_err(backend)?,
            schedules: db.open_tree("schedules").map_err(backend)?,
            users: db.open_tree("users").map_err(backend)?,
            user_names: db.open_tree("user_names").map_err(backend)?,
            api_keys: db.open_tree("api_keys").map_err(backend)?,
            api_key_hashes: db.open_tree("api_key_hashes").map_err(backend)?,
            sessions: db.open_tree("sessions").map_err(backend)?,
            refresh_tokens: db.open_tree("refresh_tokens").map_err(backend)?,
            audit: db.open_tree("audit").map_err(backend)?,
            webhooks: db.open_tree("webhooks").map_err(backend)?,
            outbox: db.open_tree("outbox").map_err(backend)?,
            deliveries: db.open_tree("deliveries").map_err(backend)?,
            script_kv: db.open_tree("script_kv").map_err(backend)?,
            script_config: db.open_tree("script_config").map_err(backend)?,
            kv_writes: Mutex::new(()),
            script_writes: Mutex::new(()),
            commit: GroupCommit::new(db.clone(), dir)?,
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
        store.repair_names()?;
        store.commit.flush_blocking()?;
        Ok(store)
    }

    /// Drops names that point at no record or at a record now named
    /// otherwise: what a crash between the writes of a create, rename or
    /// delete can leave (a script's, or a user's: a first admin that never
    /// was must not keep its name from the next one).
    fn repair_names(&self) -> Result<(), StoreError> {
        drop_stale_names(&self.script_names, &self.scripts, |bytes| {
            Ok(decode::<ScriptRecord>(bytes)?.name)
        })?;
        drop_stale_names(&self.user_names, &self.users, |bytes| {
            Ok(decode::<crate::store::auth::UserRecord>(bytes)?.username)
        })
    }

    /// The id and stored bytes of a script, by id or name.
    fn script_entry(
        &self,
        id_or_name: &str,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        if let Some(bytes) = self.scripts.get(id_or_name).map_err(backend)? {
            return Ok(Some((sled::IVec::from(id_or_name.as_bytes()), bytes)));
        }
        let Some(id) = self.script_names.get(id_or_name).map_err(backend)? else {
            return Ok(None);
        };
        Ok(self
            .scripts
            .get(&id)
            .map_err(backend)?
            .map(|bytes| (id, bytes)))
    }

    /// Claims `name` for `id` unless another script has it.
    fn claim_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let claimed = self
            .script_names
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(id.as_bytes()))
            .map_err(backend)?;
        match claimed {
            Ok(()) => Ok(()),
            Err(e) if e.current.as_deref() == Some(id.as_bytes()) => Ok(()),
            Err(_) => Err(StoreError::NameTaken(name.to_string())),
        }
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
        self.claim_name(&script.name, &script.id)?;
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
        self.script_entry(id_or_name)?
            .map(|(_, bytes)| decode(&bytes))
            .transpose()
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
        let _writing = self
            .script_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let (key, bytes) = self.script_entry(id)?.ok_or(StoreError::NotFound)?;
            let current: ScriptRecord = decode(&bytes)?;
            let next = change(&current)?;
            if let Some(content) = content {
                // Unreachable until the record below points at it.
                self.script_versions
                    .insert(version_key(&next.id, next.version), content)
                    .map_err(backend)?;
                self.script_versions
                    .insert(
                        version_meta_key(&next.id, next.version),
                        encode(&VersionRecord::current(&next))?,
                    )
                    .map_err(backend)?;
            }
            if next.name != current.name {
                self.claim_name(&next.name, &next.id)?;
            }
            // Only a concurrent `note_execution` can change the record now;
            // if one did, apply the change again to what it wrote.
            let swapped = self
                .scripts
                .compare_and_swap(&key, Some(bytes), Some(encode(&next)?))
                .map_err(backend)?;
            if swapped.is_err() {
                continue;
            }
            if next.name != current.name {
                self.script_names
                    .remove(current.name.as_bytes())
                    .map_err(backend)?;
            }
            return Ok(next);
        }
    }

    fn delete_script(
        &self,
        id: &str,
        allow: &dyn Fn(&ScriptRecord) -> Result<(), StoreError>,
    ) -> Result<ScriptRecord, StoreError> {
        let _writing = self
            .script_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (key, bytes) = self.script_entry(id)?.ok_or(StoreError::NotFound)?;
        let deleted: ScriptRecord = decode(&bytes)?;
        allow(&deleted)?;
        // The record first: once it is gone the script is, whatever a crash
        // leaves of its name (repaired at open) or its content (unreachable).
        self.scripts.remove(&key).map_err(backend)?;
        self.script_names
            .remove(deleted.name.as_bytes())
            .map_err(backend)?;
        let prefix = format!("{}/", deleted.id);
        for key in self.script_versions.scan_prefix(prefix.as_bytes()).keys() {
            self.script_versions
                .remove(key.map_err(backend)?)
                .map_err(backend)?;
        }
        // What its runs kept and its config go too (unreachable once the
        // record is gone, whatever a crash leaves of them).
        super::script_data::ScriptDataStore::drop_script_data(self, &deleted.id)?;
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
        let mut failure = None;
        // An atomic read-modify-write of the one record; a deleted script
        // stays deleted.
        self.scripts
            .update_and_fetch(script_id, |old| {
                let old = old?;
                let updated = decode::<ScriptRecord>(old).and_then(|mut script| {
                    script.execution_count += 1;
                    script.last_executed_at = Some(at.to_string());
                    encode(&script)
                });
                match updated {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        failure = Some(e);
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(backend)?;
        failure.map_or(Ok(()), Err)
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

    fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError> {
        self.schedules
            .insert(&schedule.id, encode(schedule)?)
            .map_err(backend)?;
        Ok(())
    }

    fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.schedules
            .get(id)
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut schedules = Vec::new();
        for entry in self.schedules.iter() {
            let (id, bytes) = entry.map_err(backend)?;
            // One unreadable record must not stop every other schedule.
            match decode(&bytes) {
                Ok(schedule) => schedules.push(schedule),
                Err(e) => tracing::error!(id = %String::from_utf8_lossy(&id), error = %e,
                    "skipping an unreadable schedule"),
            }
        }
        Ok(schedules)
    }

    fn update_schedule(
        &self,
        id: &str,
        change: &dyn Fn(&ScheduleRecord) -> Result<ScheduleRecord, StoreError>,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let swapped = swap(&self.schedules, id.as_bytes(), |current| {
            change(current).map(Some)
        })?;
        Ok(swapped.and_then(|(_, after)| after))
    }

    fn delete_schedule(
        &self,
        id: &str,
        expect: &dyn Fn(&ScheduleRecord) -> Result<(), StoreError>,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let swapped = swap(&self.schedules, id.as_bytes(), |current| {
            expect(current).map(|()| None)
        })?;
        Ok(swapped.map(|(before, _)| before))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(self.commit.flush())
    }

    fn sync_stats(&self) -> super::SyncStats {
        self.commit.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Language, ScriptKind, ScriptStatus};

    const TEST_CACHE_BYTES: u64 = 8 << 20;

    /// Opens a store a test has just closed. sled's background threads let go
    /// of the directory's lock a moment after the handle is dropped: a new
    /// process never sees that, a test reopening in-process sometimes does.
    fn reopen(path: &std::path::Path) -> Result<SledStore, StoreError> {
        for _ in 0..100 {
            match SledStore::open(path, TEST_CACHE_BYTES) {
                Err(StoreError::Backend(e)) if e.contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        SledStore::open(path, TEST_CACHE_BYTES)
    }

    fn schedule(id: &str) -> ScheduleRecord {
        ScheduleRecord {
            id: id.into(),
            name: "nightly".into(),
            script_id: "s1".into(),
            cron: "@daily".into(),
            timezone: "UTC".into(),
            parameters: serde_json::json!({}),
            active: true,
            overlap: crate::store::Overlap::default(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            created_by: None,
            next_run_ms: None,
            last_run_at: None,
            last_execution_id: None,
        }
    }

    #[test]
    fn a_delete_happens_only_if_its_expectation_holds_at_the_moment_of_the_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        store.create_schedule(&schedule("a")).unwrap();
        let refused = store.delete_schedule("a", &|current| {
            if current.name == "nightly" {
                Err(StoreError::Refused("changed".into()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(refused, Err(StoreError::Refused(_))));
        assert!(store.schedule("a").unwrap().is_some(), "kept");
        let deleted = store.delete_schedule("a", &|_| Ok(())).unwrap();
        assert_eq!(deleted.map(|s| s.id), Some("a".into()));
        assert!(store.schedule("a").unwrap().is_none());
        assert!(store.delete_schedule("a", &|_| Ok(())).unwrap().is_none());
    }

    #[test]
    fn a_swap_that_lost_a_race_applies_its_change_to_the_winner_s_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        store.create_schedule(&schedule("a")).unwrap();
        let raced = std::cell::Cell::new(false);
        let written = store
            .update_schedule("a", &|current| {
                if !raced.replace(true) {
                    // Another writer lands between this read and its write.
                    let mut theirs = current.clone();
                    theirs.name = "theirs".into();
                    store
                        .schedules
                        .insert("a", encode(&theirs)?)
                        .map_err(backend)?;
                }
                let mut mine = current.clone();
                mine.active = false;
                Ok(mine)
            })
            .unwrap()
            .unwrap();
        assert_eq!((written.name.as_str(), written.active), ("theirs", false));
    }

    fn script(id: &str, name: &str, version: u32) -> ScriptRecord {
        ScriptRecord {
            id: id.into(),
            name: name.into(),
            language: Language::Javascript,
            kind: ScriptKind::Command,
            public: false,
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
        let store = reopen(dir.path()).unwrap();
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
            reopen(dir.path())
                .unwrap()
                .script_versions("s1")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn names_a_crash_left_stale_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store.create_script(&script("a", "kept", 1), b"v2").unwrap();
            // A rename that stopped between claiming the new name and
            // writing the record, and a delete that stopped after the record.
            store.script_names.insert("half-renamed", "a").unwrap();
            store.script_names.insert("half-deleted", "gone").unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert_eq!(store.script("kept").unwrap().unwrap().id, "a");
        assert!(store.script("half-renamed").unwrap().is_none());
        assert!(store.script("half-deleted").unwrap().is_none());
        store
            .create_script(&script("b", "half-renamed", 1), b"v2")
            .unwrap();
    }

    #[test]
    fn usernames_a_crash_left_stale_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            // Claimed, then the process died before the record was written.
            store.user_names.insert("admin", "never-written").unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert!(store.users.is_empty());
        assert!(store.user_names.get("admin").unwrap().is_none());
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
        assert!(matches!(reopen(dir.path()), Err(StoreError::Schema { .. })));
    }

    #[test]
    fn idempotency_keys_claim_replay_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
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

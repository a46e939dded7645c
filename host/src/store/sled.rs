//! The sled implementation of [`Store`]: one tree per record family, JSON
//! values, and group commit (`group_commit.rs`).

mod auth;
mod contents;
mod decoded_scripts;
mod execution_keys;
mod executions;
mod idempotency;
mod journaled;
mod orgs;
mod packed;
#[cfg(test)]
pub(crate) use packed::unpacked_in;
mod schedules;
mod script_counts;
mod script_data;
mod scripts;
mod usage;
mod webhooks;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::disk_sync::FileSyncer;
use super::executions::ExecutionStore as _;
use super::group_commit::GroupCommit;
use super::journal::Journal;
use super::{
    FlushFuture, RecordCounts, SCHEMA_VERSION, ScriptRecord, Store, StoreError, SyncStats,
};

pub struct SledStore {
    db: sled::Db,
    scripts: sled::Tree,
    script_names: sled::Tree,
    /// `<id>/<version>` → content and `<id>/v/<version>` → [`VersionRecord`].
    script_versions: sled::Tree,
    /// Execution records and their indexes (`sled/executions.rs`).
    executions: sled::Tree,
    execution_indexes: executions::ExecutionIndexes,
    /// Executions' large fields, stored once by content (`sled/contents.rs`).
    contents: contents::Contents,
    /// Usage rollups by hour and script (`sled/usage.rs`).
    usage: sled::Tree,
    pending_usage: Arc<usage::Pending>,
    /// Runs counted on their scripts, written by every full flush.
    pending_counts: Arc<script_counts::PendingCounts>,
    /// Script records decoded, by the bytes they came from.
    decoded_scripts: decoded_scripts::DecodedScripts,
    /// Idempotency key → a claim or the response it ended with.
    idempotency: sled::Tree,
    /// Schedule id (a UUIDv7, so creation order) → [`ScheduleRecord`].
    schedules: sled::Tree,
    /// Organization id → [`OrgRecord`](super::orgs::OrgRecord).
    orgs: sled::Tree,
    /// Organization name → id: the unique index.
    org_names: sled::Tree,
    /// Serializes organization renames and deletes (a name and its record).
    org_writes: Mutex<()>,
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
    /// Shared secrets by name (`SharedSecretRecord`, value sealed).
    shared_secrets: sled::Tree,
    /// Those records decoded, as every run of a stored script reads them:
    /// filled by the first read, emptied by every change, both under this
    /// lock so a read cannot put back what a change replaced.
    shared_decoded: Mutex<Option<std::sync::Arc<[crate::store::script_data::SharedSecretRecord]>>>,
    /// Serializes key-value writes (their quota check reads the sum).
    kv_writes: Mutex<()>,
    /// Serializes outbox writes (a record and its due entry).
    outbox_writes: Mutex<()>,
    /// Records of the append-and-sweep families, counted at open (keys
    /// only) and kept as they are written and removed.
    counted: Arc<Counted>,
    /// Serializes script updates and deletes. Not sled transactions: in sled
    /// 0.34 they take a global lock that deadlocks with concurrent
    /// `flush_async` under load. Writes are ordered so that a crash between
    /// them leaves at most a stale name, which `open` repairs.
    script_writes: Mutex<()>,
    commit: Arc<GroupCommit>,
    /// Final records, synced before the answers that report them
    /// (`sled/journaled.rs`).
    journal: Arc<Journal>,
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

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes `record` at `key`, whatever was there.
fn put<T: serde::Serialize>(
    tree: &sled::Tree,
    key: impl AsRef<[u8]>,
    record: &T,
) -> Result<(), StoreError> {
    tree.insert(key.as_ref(), encode(record)?)
        .map_err(backend)?;
    Ok(())
}

/// The smallest id a UUIDv7 made at `ms` can have: in a tree keyed by
/// such ids (after `prefix`), every key below it was made before `ms`.
fn lowest_id(ms: u64) -> Vec<u8> {
    super::lowest_id_at(ms).into_bytes()
}

/// Removes up to `limit` entries of `tree` under `prefix` whose UUIDv7 key
/// was made before `before_ms`, oldest first; how many it removed.
fn remove_older(
    tree: &sled::Tree,
    prefix: &[u8],
    before_ms: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let end = [prefix, &lowest_id(before_ms)].concat();
    let mut removed = 0;
    // One by one, not a sled batch: see `sled/executions.rs`.
    for entry in tree.range(prefix.to_vec()..end).take(limit) {
        // Counted only if this removal took it (another may have, meanwhile).
        if tree
            .remove(entry.map_err(backend)?.0)
            .map_err(backend)?
            .is_some()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// What a compare-and-swap's `change` makes of the record it read.
enum Change<T> {
    /// Write this in its place.
    Put(T),
    /// Delete it.
    Remove,
    /// Leave it as it is.
    Keep,
}

/// Reads the record at `key` (if there is one), lets `change` decide what to
/// do with it, and does that only if the stored bytes are still those it
/// read, else reads again: the one compare-and-swap loop for every record
/// changed in place. Returns the record as read and what `change` made of it.
fn swap_entry<T: serde::Serialize + serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    change: impl Fn(Option<&T>) -> Result<Change<T>, StoreError>,
) -> Result<(Option<T>, Change<T>), StoreError> {
    loop {
        let current = tree.get(key).map_err(backend)?;
        let before: Option<T> = current.as_deref().map(decode).transpose()?;
        let after = change(before.as_ref())?;
        let bytes = match &after {
            Change::Keep => return Ok((before, after)),
            Change::Put(record) => Some(encode(record)?),
            Change::Remove => None,
        };
        if tree
            .compare_and_swap(key, current, bytes)
            .map_err(backend)?
            .is_ok()
        {
            return Ok((before, after));
        }
    }
}

/// [`swap_entry`] of a record that must exist: `None` when there is none.
fn swap<T: serde::Serialize + serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    change: impl Fn(&T) -> Result<Change<T>, StoreError>,
) -> Result<Option<(T, Change<T>)>, StoreError> {
    let (before, after) = swap_entry(tree, key, |current| match current {
        Some(current) => change(current),
        None => Ok(Change::Keep),
    })?;
    Ok(before.map(|before| (before, after)))
}

/// Replaces the record at `key` with what `change` makes of it; the record
/// before and after, or `None` when there is none.
fn update<T: serde::Serialize + serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    change: impl Fn(&T) -> Result<T, StoreError>,
) -> Result<Option<(T, T)>, StoreError> {
    let swapped = swap(tree, key, |current| change(current).map(Change::Put))?;
    Ok(swapped.and_then(|(before, after)| match after {
        Change::Put(after) => Some((before, after)),
        Change::Remove | Change::Keep => None,
    }))
}

/// Records of the families that only grow by appends and shrink by sweeps,
/// whose trees sled can count only by reading every key.
#[derive(Debug, Default)]
struct Counted {
    audit: AtomicU64,
    /// Audit entries per organization other than the default (bounded by
    /// the organizations).
    audit_by_org: Mutex<std::collections::HashMap<String, u64>>,
    attempts: AtomicU64,
    usage: AtomicU64,
}

impl Counted {
    fn load(
        audit: &sled::Tree,
        attempts: &sled::Tree,
        usage: &sled::Tree,
    ) -> Result<Self, StoreError> {
        // `Tree::len` walks the keys: once, at open.
        let keys = |tree: &sled::Tree| tree.len() as u64;
        let mut audit_by_org = std::collections::HashMap::new();
        for key in audit.range(auth::ORG_AUDIT..).keys() {
            let key = key.map_err(backend)?;
            if let Some(org) = auth::audit_org(&key) {
                *audit_by_org
                    .entry(String::from_utf8_lossy(org).into_owned())
                    .or_default() += 1;
            }
        }
        Ok(Self {
            audit: AtomicU64::new(keys(audit)),
            audit_by_org: Mutex::new(audit_by_org),
            attempts: AtomicU64::new(keys(attempts)),
            usage: AtomicU64::new(keys(usage)),
        })
    }

    fn audit_orgs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.audit_by_org
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The audit entries of `org`: the default one has those no other has.
    fn audit_of(&self, org: &str) -> u64 {
        let by_org = self.audit_orgs();
        if org == super::orgs::DEFAULT_ORG {
            let all = self.audit.load(Ordering::Relaxed);
            all.saturating_sub(by_org.values().sum())
        } else {
            by_org.get(org).copied().unwrap_or(0)
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn remove(counter: &AtomicU64, n: usize) {
        // Never below zero, whatever a race between a sweep and a count did.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_sub(n as u64))
        });
    }
}

impl SledStore {
    /// [`SledStore::open_with`] with the system's own syncs.
    #[cfg(test)]
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, cache_bytes, Arc::new(super::Fsync))
    }

    /// Opens (or creates) the database in `dir` and checks its schema
    /// version; `syncer` makes its files durable (tests inject one that
    /// records what each sync covered). sled's page cache is capped at
    /// `cache_bytes`: its own default is 1 GiB, which an edge node's RSS
    /// would creep towards as records are written.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if sled cannot open it (for example another
    /// process holds it), [`StoreError::Schema`] if it is of another version.
    pub fn open_with(
        dir: &Path,
        cache_bytes: u64,
        syncer: Arc<dyn FileSyncer>,
    ) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let found: u32 = match meta.get("schema_version").map_err(backend)? {
            Some(found) => decode(&found)?,
            None => SCHEMA_VERSION,
        };
        if found > SCHEMA_VERSION || found == 0 {
            return Err(StoreError::Schema { found });
        }
        let execution_tree = db.open_tree("executions").map_err(backend)?;
        if found < 3 {
            execution_keys::index_all(&execution_tree)?;
        }
        if found < 7 {
            let folded = execution_keys::migrate_to_7(&execution_tree)?;
            tracing::info!(
                folded,
                "organizations' index entries folded into their final states'"
            );
        }
        let usage_tree = db.open_tree("usage").map_err(backend)?;
        let outbox = db.open_tree("outbox").map_err(backend)?;
        let audit = db.open_tree("audit").map_err(backend)?;
        let deliveries = db.open_tree("deliveries").map_err(backend)?;
        if found < 4 {
            usage::rollup_all(&execution_tree, &usage_tree)?;
            webhooks::index_outbox(&outbox)?;
        }
        // Absent after a crash (and on a new store): then the indexes may
        // hold an entry too many.
        let contents = contents::Contents::new(db.open_tree("contents").map_err(backend)?);
        if meta.remove(CLEAN).map_err(backend)?.is_none() {
            let dropped = execution_keys::repair(&execution_tree)?
                + webhooks::repair_outbox(&outbox)?
                + contents.repair(&execution_tree)?;
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    "stray entries (execution indexes and contents, webhook outbox) dropped after a crash"
                );
            }
        }
        let (journal, journaled) =
            Journal::open(dir, syncer.clone(), GroupCommit::covered_at_open(&meta)?).map_err(
                |e| StoreError::Backend(format!("cannot open the store's journal: {e}")),
            )?;
        let counted = Arc::new(Counted::load(&audit, &deliveries, &usage_tree)?);
        let pending_usage = Arc::<usage::Pending>::default();
        // Every flush moves the rollups first, after reading how far the
        // journal is filled, so an entry it covers has its rollup stored.
        let pending_counts = Arc::<script_counts::PendingCounts>::default();
        let scripts = db.open_tree("scripts").map_err(backend)?;
        let before_flush: super::group_commit::BeforeFlush = {
            let (pending, tree, counted) =
                (pending_usage.clone(), usage_tree.clone(), counted.clone());
            let (counts, scripts) = (pending_counts.clone(), scripts.clone());
            Box::new(move || {
                counts.write(&scripts);
                usage::write(&pending, &tree, &counted)
            })
        };
        let commit = GroupCommit::new(db.clone(), dir, syncer, journal.clone(), before_flush)?;
        let store = Self {
            counted,
            scripts,
            script_names: db.open_tree("script_names").map_err(backend)?,
            script_versions: db.open_tree("script_versions").map_err(backend)?,
            execution_indexes: executions::ExecutionIndexes::load(&execution_tree)?,
            executions: execution_tree,
            contents,
            usage: usage_tree,
            pending_usage,
            pending_counts,
            decoded_scripts: decoded_scripts::DecodedScripts::default(),
            idempotency: db.open_tree("idempotency").map_err(backend)?,
            schedules: db.open_tree("schedules").map_err(backend)?,
            orgs: db.open_tree("orgs").map_err(backend)?,
            org_names: db.open_tree("org_names").map_err(backend)?,
            org_writes: Mutex::new(()),
            users: db.open_tree("users").map_err(backend)?,
            user_names: db.open_tree("user_names").map_err(backend)?,
            api_keys: db.open_tree("api_keys").map_err(backend)?,
            api_key_hashes: db.open_tree("api_key_hashes").map_err(backend)?,
            sessions: db.open_tree("sessions").map_err(backend)?,
            refresh_tokens: db.open_tree("refresh_tokens").map_err(backend)?,
            audit,
            webhooks: db.open_tree("webhooks").map_err(backend)?,
            outbox,
            deliveries,
            script_kv: db.open_tree("script_kv").map_err(backend)?,
            script_config: db.open_tree("script_config").map_err(backend)?,
            shared_secrets: db.open_tree("shared_secrets").map_err(backend)?,
            shared_decoded: Mutex::new(None),
            kv_writes: Mutex::new(()),
            outbox_writes: Mutex::new(()),
            script_writes: Mutex::new(()),
            commit,
            journal,
            db,
        };
        if found < 2 {
            store.migrate_to_2()?;
        }
        if found < 5 {
            let moved = orgs::migrate_users_to_5(&store.users)?;
            tracing::info!(users = moved, "users moved into the default organization");
        }
        store.ensure_default_org()?;
        meta.insert("schema_version", encode(&SCHEMA_VERSION)?)
            .map_err(backend)?;
        store.repair_names()?;
        let replayed = store.replay_journal(journaled)?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                "final records and webhook deliveries written again from the journal"
            );
        }
        store.commit.flush_blocking()?;
        Ok(store)
    }

    /// Drops names that point at no record or at a record now named
    /// otherwise: what a crash between the writes of a create, rename or
    /// delete can leave (a script's, or a user's: a first admin that never
    /// was must not keep its name from the next one).
    fn repair_names(&self) -> Result<(), StoreError> {
        drop_stale_names(&self.script_names, &self.scripts, |bytes| {
            let script = decode::<ScriptRecord>(bytes)?;
            Ok(super::orgs::name_key(
                super::orgs::InOrg::org(&script),
                &script.name,
            ))
        })?;
        drop_stale_names(&self.org_names, &self.orgs, |bytes| {
            Ok(decode::<crate::store::orgs::OrgRecord>(bytes)?.name)
        })?;
        drop_stale_names(&self.user_names, &self.users, |bytes| {
            Ok(decode::<crate::store::auth::UserRecord>(bytes)?.username)
        })
    }

    /// The record in `records` that `index` maps `key` to.
    fn get_indexed<T: serde::de::DeserializeOwned>(
        index: &sled::Tree,
        records: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match index.get(key).map_err(backend)? {
            Some(id) => records
                .get(id)
                .map_err(backend)?
                .map(|bytes| decode(&bytes))
                .transpose(),
            None => Ok(None),
        }
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        tree.get(key)
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every readable record of a tree, in key order.
    fn all_decoded<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        let mut all = Vec::new();
        for entry in tree.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            match decode(&bytes) {
                Ok(record) => all.push(record),
                // One unreadable record must not hide the rest.
                Err(e) => tracing::error!(key = %String::from_utf8_lossy(&key), error = %e,
                    "skipping an unreadable record"),
            }
        }
        Ok(all)
    }

    /// [`Store::close`], done before its future is returned.
    /// [`Self::apply_deferred_now`] before a flush: a write that fails is
    /// logged there, and its record stays held and its journal entry
    /// uncovered, so the flush goes on.
    pub(super) fn apply_deferred_logged(&self) {
        let _ = self.apply_deferred_now();
    }

    fn close_now(&self) -> Result<(), StoreError> {
        // What fails stays held, and `keep_held_executions` tries again.
        self.apply_deferred_logged();
        self.keep_held_executions()?;
        self.commit.flush_blocking()?;
        self.db
            .open_tree("meta")
            .and_then(|meta| meta.insert(CLEAN, &[1]))
            .map_err(backend)?;
        self.commit.flush_blocking()
    }
}

/// The `meta` key a store closed by [`Store::close`] holds until it is
/// opened again.
const CLEAN: &str = "closed_cleanly";

impl Store for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn node(&self) -> Option<&str> {
        None
    }

    /// Embedded: it answers while the process runs.
    fn check(&self) -> FlushFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// One node: nobody to tell.
    fn signal(&self, _signal: super::Signal) {}

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<super::Signal>> {
        None
    }

    fn shared_counts(&self) -> Option<&dyn super::shared_counts::SharedCounts> {
        None
    }

    fn close(&self) -> FlushFuture<'_> {
        Box::pin(std::future::ready(self.close_now()))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let journal = 2 * super::journal::FILE_BYTES;
        Ok(self.db.size_on_disk().map_err(backend)? + journal)
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.apply_deferred_logged();
            self.commit.flush().await
        })
    }

    fn flush_finals(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.sync_finals().await?;
            // Durable by the journal already; a record not written stays
            // held, its entry uncovered.
            self.apply_deferred_logged();
            Ok(())
        })
    }

    fn flush_finals_deferring(&self) -> FlushFuture<'_> {
        self.sync_finals()
    }

    fn sync_stats(&self) -> SyncStats {
        SyncStats {
            journal_syncs: self.journal.syncs(),
            ..self.commit.stats()
        }
    }

    fn record_counts(&self) -> RecordCounts {
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RecordCounts {
            executions: self.count_executions(&super::executions::ExecutionIndex::All),
            audit_entries: count(&self.counted.audit),
            webhook_attempts: count(&self.counted.attempts),
            usage_rollups: count(&self.counted.usage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripts::version_key;
    use super::*;

    /// The conformance suite (`store/conformance.rs`), each family on a
    /// fresh store.
    macro_rules! conformance {
        ($($family:ident),*) => {$(
            #[tokio::test]
            async fn $family() {
                let dir = tempfile::tempdir().unwrap();
                let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
                crate::store::conformance::$family(&store).await;
            }
        )*};
    }

    mod conformance {
        use super::*;
        conformance!(
            orgs,
            scripts,
            executions,
            final_records,
            schedules,
            idempotency,
            webhooks,
            auth,
            script_data,
            usage
        );
    }

    use crate::store::scripts::ScriptStore;
    use crate::store::testing::script;

    pub(super) const TEST_CACHE_BYTES: u64 = 8 << 20;

    /// Opens a store a test has just closed. sled's background threads let go
    /// of the directory's lock a moment after the handle is dropped: a new
    /// process never sees that, a test reopening in-process sometimes does.
    pub(super) fn reopen(path: &std::path::Path) -> Result<SledStore, StoreError> {
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

    #[tokio::test]
    async fn schema_1_data_gets_version_records() {
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
        let versions = store.script_versions("s1").await.unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(
            versions[0].content_hash,
            blake3::hash(b"v1").to_hex().to_string()
        );
        assert_eq!(versions[1].size_bytes, 2);
        assert_eq!(
            store.script_content("s1", 1).await.unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        drop(store);
        // Reopening finds schema 2 and changes nothing.
        assert_eq!(
            reopen(dir.path())
                .unwrap()
                .script_versions("s1")
                .await
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn names_a_crash_left_stale_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
            store
                .create_script(&script("a", "kept", 1), b"v2")
                .await
                .unwrap();
            // A rename that stopped between claiming the new name and
            // writing the record, and a delete that stopped after the record.
            store.script_names.insert("half-renamed", "a").unwrap();
            store.script_names.insert("half-deleted", "gone").unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert_eq!(
            store
                .script(crate::store::orgs::DEFAULT_ORG, "kept")
                .await
                .unwrap()
                .unwrap()
                .id,
            "a"
        );
        assert!(
            store
                .script(crate::store::orgs::DEFAULT_ORG, "half-renamed")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .script(crate::store::orgs::DEFAULT_ORG, "half-deleted")
                .await
                .unwrap()
                .is_none()
        );
        store
            .create_script(&script("b", "half-renamed", 1), b"v2")
            .await
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
}

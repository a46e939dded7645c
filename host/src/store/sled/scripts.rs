//! The sled side of [`ScriptStore`]: `scripts` by id, the unique index
//! `script_names`, and `script_versions` holding each version's content at
//! `<id>/<version>` and its [`VersionRecord`] at `<id>/v/<version>`.

use std::sync::PoisonError;

use super::script_counts::merged;
use super::{SledStore, backend, decode, encode, put, update};
use crate::store::orgs::{InOrg as _, name_key};
use crate::store::scripts::ScriptStore;
use crate::store::{ScriptRecord, StoreError, VersionRecord};

pub(super) fn version_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/{version:010}").into_bytes()
}

fn version_meta_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/v/{version:010}").into_bytes()
}

impl SledStore {
    /// The id and stored bytes of a script of `org`, by id or name.
    fn script_entry(
        &self,
        org: &str,
        id_or_name: &str,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        if let Some(bytes) = self.scripts.get(id_or_name).map_err(backend)? {
            let script = self.decoded_scripts.decode(id_or_name.as_bytes(), &bytes)?;
            // Another organization's id is no script here: the name may be.
            if script.org() == org {
                return Ok(Some((sled::IVec::from(id_or_name.as_bytes()), bytes)));
            }
        }
        let Some(id) = self
            .script_names
            .get(name_key(org, id_or_name))
            .map_err(backend)?
        else {
            return Ok(None);
        };
        Ok(self
            .scripts
            .get(&id)
            .map_err(backend)?
            .map(|bytes| (id, bytes)))
    }

    /// The stored bytes of the script `id`.
    fn script_by_id(&self, id: &str) -> Result<(sled::IVec, sled::IVec), StoreError> {
        let bytes = self
            .scripts
            .get(id)
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        Ok((sled::IVec::from(id.as_bytes()), bytes))
    }

    /// Claims the name of `script` in its organization unless another script has it.
    fn claim_name(&self, script: &ScriptRecord) -> Result<(), StoreError> {
        let claimed = self
            .script_names
            .compare_and_swap(
                name_key(script.org(), &script.name).as_bytes(),
                None as Option<&[u8]>,
                Some(script.id.as_bytes()),
            )
            .map_err(backend)?;
        match claimed {
            Ok(()) => Ok(()),
            Err(e) if e.current.as_deref() == Some(script.id.as_bytes()) => Ok(()),
            Err(_) => Err(StoreError::NameTaken(script.name.clone())),
        }
    }

    /// Stores a version's content and record; unreachable until a script
    /// record names that version.
    fn put_version(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError> {
        self.script_versions
            .insert(version_key(&script.id, script.version), content)
            .map_err(backend)?;
        self.script_versions
            .insert(
                version_meta_key(&script.id, script.version),
                encode(&VersionRecord::current(script))?,
            )
            .map_err(backend)?;
        Ok(())
    }

    /// Schema 1 kept only the content of each version: give every stored
    /// version a record, dated when the script was last updated.
    pub(super) fn migrate_to_2(&self) -> Result<(), StoreError> {
        for script in Self::all_decoded::<ScriptRecord>(&self.scripts)? {
            for version in 1..=script.version {
                let Some(content) = self
                    .script_versions
                    .get(version_key(&script.id, version))
                    .map_err(backend)?
                else {
                    continue;
                };
                let record = VersionRecord {
                    version,
                    content_hash: blake3::hash(&content).to_hex().to_string(),
                    size_bytes: content.len() as u64,
                    created_at: script.updated_at.clone(),
                    created_by: script.created_by.clone(),
                };
                put(
                    &self.script_versions,
                    version_meta_key(&script.id, version),
                    &record,
                )?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ScriptStore for SledStore {
    async fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError> {
        // Claim the name first: compare-and-swap makes two concurrent creates
        // of one name end with exactly one winner.
        self.claim_name(script)?;
        self.put_version(script, content)?;
        put(&self.scripts, script.id.as_bytes(), script)
    }

    async fn script(
        &self,
        org: &str,
        id_or_name: &str,
    ) -> Result<Option<ScriptRecord>, StoreError> {
        let pending = self.pending_counts.lock();
        let Some((id, bytes)) = self.script_entry(org, id_or_name)? else {
            return Ok(None);
        };
        let script = self.decoded_scripts.decode(&id, &bytes)?;
        Ok(Some(merged(&pending, ScriptRecord::clone(&script))))
    }

    async fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .script_versions
            .get(version_key(id, version))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    async fn update_script(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r ScriptRecord) -> Result<ScriptRecord, StoreError> + Send + Sync
         ),
        content: Option<&[u8]>,
    ) -> Result<ScriptRecord, StoreError> {
        let _writing = self
            .script_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (key, _) = self.script_by_id(id)?;
        // The change sees the runs counted so far (an `If-Match` compares
        // with what readers were shown), and its write takes them in.
        let mut pending = self.pending_counts.lock();
        // With writes serialized and the counts held, nothing else writes
        // the record: the swap reads once.
        let updated = update(&self.scripts, &key, |current: &ScriptRecord| {
            let next = change(&merged(&pending, current.clone()))?;
            if let Some(content) = content {
                self.put_version(&next, content)?;
            }
            // Neither its id nor its organization ever changes.
            if next.id != current.id || next.org != current.org {
                return Err(StoreError::Refused(
                    "a script's id and organization are fixed".into(),
                ));
            }
            if next.name != current.name {
                self.claim_name(&next)?;
            }
            Ok(next)
        })?;
        let (before, after) = updated.ok_or(StoreError::NotFound)?;
        pending.remove(id);
        drop(pending);
        if after.name != before.name {
            self.script_names
                .remove(name_key(before.org(), &before.name).as_bytes())
                .map_err(backend)?;
        }
        Ok(after)
    }

    async fn delete_script(
        &self,
        id: &str,
        allow: &(dyn for<'r> Fn(&'r ScriptRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<ScriptRecord, StoreError> {
        let _writing = self
            .script_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (key, bytes) = self.script_by_id(id)?;
        // Its runs counted so far are in what the deletion reports, and
        // then nowhere.
        let mut pending = self.pending_counts.lock();
        let deleted = merged(&pending, decode(&bytes)?);
        allow(&deleted)?;
        // The record first: once it is gone the script is, whatever a crash
        // leaves of its name (repaired at open) or its content (unreachable).
        self.scripts.remove(&key).map_err(backend)?;
        pending.remove(id);
        drop(pending);
        self.script_names
            .remove(name_key(deleted.org(), &deleted.name).as_bytes())
            .map_err(backend)?;
        let prefix = format!("{}/", deleted.id);
        for key in self.script_versions.scan_prefix(prefix.as_bytes()).keys() {
            self.script_versions
                .remove(key.map_err(backend)?)
                .map_err(backend)?;
        }
        // What its runs kept and its config go too (unreachable once the
        // record is gone, whatever a crash leaves of them).
        self.drop_data_of(&deleted.id)?;
        Ok(deleted)
    }

    async fn script_versions(&self, id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.script_versions
            .scan_prefix(format!("{id}/v/").as_bytes())
            .values()
            .map(|v| decode(&v.map_err(backend)?))
            .collect()
    }

    async fn script_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.script_versions
            .get(version_meta_key(id, version))
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn remove_versions_below(
        &self,
        id: &str,
        below: u32,
        keep: &(dyn Fn(u32) -> bool + Send + Sync),
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        let records = version_meta_key(id, 0)..version_meta_key(id, below);
        for entry in self.script_versions.range(records) {
            if removed == limit {
                break;
            }
            let (key, bytes) = entry.map_err(backend)?;
            let record: VersionRecord = decode(&bytes)?;
            if keep(record.version) {
                continue;
            }
            // The content first: a crash between leaves a record without
            // content, which the next sweep removes, never content that no
            // record lists and nothing would ever remove.
            self.script_versions
                .remove(version_key(id, record.version))
                .map_err(backend)?;
            self.script_versions.remove(key).map_err(backend)?;
            removed += 1;
        }
        Ok(removed)
    }

    async fn note_execution(&self, script_id: &str, at: &str) -> Result<(), StoreError> {
        // Written by the next full flush (`script_counts.rs`).
        self.pending_counts.add(script_id, at);
        Ok(())
    }

    async fn scripts(&self) -> Result<Vec<ScriptRecord>, StoreError> {
        let pending = self.pending_counts.lock();
        self.scripts
            .iter()
            .map(|entry| Ok(merged(&pending, decode(&entry.map_err(backend)?.1)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TEST_CACHE_BYTES;
    use super::*;
    use crate::store::Store as _;
    use crate::store::orgs::DEFAULT_ORG;
    use crate::store::testing::script;

    /// A store in `dir` holding a script of each `(id, name)`.
    async fn with_scripts(dir: &std::path::Path, scripts: &[(&str, &str)]) -> SledStore {
        let store = SledStore::open(dir, TEST_CACHE_BYTES).unwrap();
        for (id, name) in scripts {
            store
                .create_script(&script(id, name, 1), b"v1")
                .await
                .unwrap();
        }
        store
    }

    /// Runs are counted in memory until a flush; readers and an update
    /// see them, and neither an update nor a flush counts them twice.
    #[tokio::test]
    async fn runs_counted_in_memory_are_seen_by_readers_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_scripts(dir.path(), &[("a", "first"), ("b", "second")]).await;
        let count = async |store: &SledStore| {
            let read = store.script(DEFAULT_ORG, "a").await.unwrap().unwrap();
            let listed = store.scripts().await.unwrap();
            let a = listed.iter().find(|s| s.id == "a").unwrap();
            assert_eq!(a.execution_count, read.execution_count);
            read.execution_count
        };
        store
            .note_execution("a", "2026-01-01T00:00:01Z")
            .await
            .unwrap();
        store
            .note_execution("a", "2026-01-01T00:00:02Z")
            .await
            .unwrap();
        assert_eq!(count(&store).await, 2);
        let seen = std::sync::Mutex::new(0);
        let update = store
            .update_script(
                "a",
                &|s: &ScriptRecord| {
                    *seen.lock().unwrap() = s.execution_count;
                    let mut next = s.clone();
                    next.description = Some("changed".into());
                    Ok(next)
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!((*seen.lock().unwrap(), update.execution_count), (2, 2));
        store
            .note_execution("a", "2026-01-01T00:00:03Z")
            .await
            .unwrap();
        // A deleted script reports its runs, and its count goes with it.
        store
            .note_execution("b", "2026-01-01T00:00:04Z")
            .await
            .unwrap();
        let deleted = store.delete_script("b", &|_| Ok(())).await.unwrap();
        assert_eq!(deleted.execution_count, 1);
        assert!(!store.pending_counts.lock().contains_key("b"));
        store.flush().await.unwrap();
        assert_eq!(count(&store).await, 3);
        assert!(store.pending_counts.lock().is_empty());
        drop(store);
        let store = super::super::tests::reopen(dir.path()).unwrap();
        let read = store.script(DEFAULT_ORG, "a").await.unwrap().unwrap();
        assert_eq!(read.execution_count, 3);
        assert_eq!(
            read.last_executed_at.as_deref(),
            Some("2026-01-01T00:00:03Z")
        );
    }

    #[tokio::test]
    async fn renames_move_the_name_and_refusals_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_scripts(dir.path(), &[("a", "first"), ("b", "second")]).await;
        let rename = |to: &'static str| {
            move |s: &ScriptRecord| {
                let mut next = s.clone();
                next.name = to.into();
                Ok(next)
            }
        };
        assert!(matches!(
            store.update_script("a", &rename("second"), None).await,
            Err(StoreError::NameTaken(_))
        ));
        store
            .update_script("a", &rename("third"), None)
            .await
            .unwrap();
        assert!(store.script(DEFAULT_ORG, "first").await.unwrap().is_none());
        assert_eq!(
            store
                .script(DEFAULT_ORG, "third")
                .await
                .unwrap()
                .unwrap()
                .id,
            "a"
        );
        let refuse = |_: &ScriptRecord| Err(StoreError::Refused("stale".into()));
        assert!(
            store
                .update_script("a", &refuse, Some(b"v3"))
                .await
                .is_err()
        );
        assert_eq!(store.script_versions("a").await.unwrap().len(), 1);
        store.delete_script("a", &|_| Ok(())).await.unwrap();
        assert!(store.script(DEFAULT_ORG, "a").await.unwrap().is_none());
        assert!(store.script_content("a", 1).await.unwrap().is_none());
        assert!(store.script_versions("a").await.unwrap().is_empty());
        assert!(matches!(
            store.delete_script("a", &|_| Ok(())).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn names_are_unique_within_an_organization_and_ids_stay_in_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        store
            .create_script(&script("a", "job", 1), b"v1")
            .await
            .unwrap();
        let mut other = script("b", "job", 1);
        other.org = Some("acme".into());
        store.create_script(&other, b"v1").await.unwrap();
        assert_eq!(
            store.script(DEFAULT_ORG, "job").await.unwrap().unwrap().id,
            "a"
        );
        assert_eq!(store.script("acme", "job").await.unwrap().unwrap().id, "b");
        assert!(store.script("acme", "a").await.unwrap().is_none());
        assert!(store.script(DEFAULT_ORG, "b").await.unwrap().is_none());
        let mut twin = script("c", "job", 1);
        twin.org = Some("acme".into());
        assert!(matches!(
            store.create_script(&twin, b"v1").await,
            Err(StoreError::NameTaken(_))
        ));
        let move_away = |s: &ScriptRecord| {
            let mut next = s.clone();
            next.org = None;
            Ok(next)
        };
        assert!(matches!(
            store.update_script("b", &move_away, None).await,
            Err(StoreError::Refused(_))
        ));
        store.delete_script("b", &|_| Ok(())).await.unwrap();
        assert!(store.script("acme", "job").await.unwrap().is_none());
        assert_eq!(
            store.script(DEFAULT_ORG, "job").await.unwrap().unwrap().id,
            "a"
        );
    }
}

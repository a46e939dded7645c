//! The sled side of [`ScriptDataStore`]: `script_kv` by `<script id>/<key>`
//! (a script id has no `/`), `script_config` by script id (a JSON map).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use super::{SledStore, backend, decode, put};
use crate::store::orgs::name_key;
use crate::store::script_data::{KvRefusal, ScriptDataStore, SharedSecretRecord};
use crate::store::{ScriptRecord, StoreError};

fn kv_key(script_id: &str, key: &str) -> Vec<u8> {
    format!("{script_id}/{key}").into_bytes()
}

impl SledStore {
    /// Removes a script's config and key-value entries, as the script's
    /// delete does.
    pub(super) fn drop_data_of(&self, script_id: &str) -> Result<(), StoreError> {
        self.script_config.remove(script_id).map_err(backend)?;
        for key in self.script_kv.scan_prefix(format!("{script_id}/")).keys() {
            self.script_kv
                .remove(key.map_err(backend)?)
                .map_err(backend)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ScriptDataStore for SledStore {
    async fn kv_get(&self, script_id: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .script_kv
            .get(kv_key(script_id, key))
            .map_err(backend)?
            .map(|value| value.to_vec()))
    }

    async fn kv_set(
        &self,
        script_id: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<(), KvRefusal> {
        // One writer at a time, so two writes cannot both fit a quota that
        // only one of them fits. The sum is read by a scan of the script's
        // own entries, at most `quota` bytes.
        let _writing = self
            .kv_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = kv_key(script_id, key);
        let mut used = 0u64;
        for pair in self.script_kv.scan_prefix(format!("{script_id}/")) {
            let (k, v) = pair.map_err(backend)?;
            if k.as_ref() != entry.as_slice() {
                used += (k.len() - script_id.len() - 1 + v.len()) as u64;
            }
        }
        let would = used + (key.len() + value.len()) as u64;
        if would > quota {
            return Err(KvRefusal::OverQuota { would, quota });
        }
        self.script_kv.insert(entry, value).map_err(backend)?;
        Ok(())
    }

    async fn kv_delete(&self, script_id: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .script_kv
            .remove(kv_key(script_id, key))
            .map_err(backend)?
            .is_some())
    }

    async fn kv_keys(
        &self,
        script_id: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let skip = script_id.len() + 1;
        self.script_kv
            .scan_prefix(kv_key(script_id, prefix))
            .keys()
            .take(limit)
            .map(|k| {
                let k = k.map_err(backend)?;
                Ok(String::from_utf8_lossy(&k[skip..]).into_owned())
            })
            .collect()
    }

    async fn kv_entries(&self, script_id: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let skip = script_id.len() + 1;
        self.script_kv
            .scan_prefix(format!("{script_id}/"))
            .map(|pair| {
                let (k, v) = pair.map_err(backend)?;
                Ok((String::from_utf8_lossy(&k[skip..]).into_owned(), v.to_vec()))
            })
            .collect()
    }

    async fn script_config(&self, script_id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.script_config
            .get(script_id)
            .map_err(backend)?
            .map_or_else(|| Ok(BTreeMap::new()), |bytes| decode(&bytes))
    }

    async fn set_script_config(
        &self,
        script_id: &str,
        values: &BTreeMap<String, String>,
        allow: &(dyn for<'r> Fn(&'r ScriptRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<(), StoreError> {
        // Under the lock script writes take, so `allow` sees the record as
        // it is when the config is written (and a deleted script gets none).
        let _writing = self
            .script_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let script: ScriptRecord =
            Self::get_decoded(&self.scripts, script_id)?.ok_or(StoreError::NotFound)?;
        allow(&script)?;
        put(&self.script_config, script.id.as_bytes(), values)
    }

    async fn shared_secrets(&self) -> Result<Arc<[SharedSecretRecord]>, StoreError> {
        let mut decoded = self
            .shared_decoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(secrets) = &*decoded {
            return Ok(secrets.clone());
        }
        let secrets: Arc<[SharedSecretRecord]> = self
            .shared_secrets
            .iter()
            .values()
            .map(|value| decode(&value.map_err(backend)?))
            .collect::<Result<_, StoreError>>()?;
        *decoded = Some(secrets.clone());
        Ok(secrets)
    }

    async fn shared_secret(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<SharedSecretRecord>, StoreError> {
        self.shared_secrets
            .get(name_key(org, name))
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    async fn put_shared_secret(&self, secret: &SharedSecretRecord) -> Result<(), StoreError> {
        let mut decoded = self
            .shared_decoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        put(&self.shared_secrets, secret.key(), secret)?;
        *decoded = None;
        Ok(())
    }

    async fn delete_shared_secret(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        let mut decoded = self
            .shared_decoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let removed = self
            .shared_secrets
            .remove(name_key(org, name))
            .map_err(backend)?
            .is_some();
        *decoded = None;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::orgs::DEFAULT_ORG;
    use crate::store::scripts::ScriptStore as _;

    #[tokio::test]
    async fn shared_secrets_read_after_a_change_are_the_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let secret = |name: &str, value: &str| SharedSecretRecord {
            org: None,
            name: name.into(),
            value: value.into(),
            scripts: vec!["*".into()],
            created_at: String::new(),
            updated_at: String::new(),
            created_by: None,
        };
        assert!(store.shared_secrets().await.unwrap().is_empty());
        store.put_shared_secret(&secret("A", "1")).await.unwrap();
        // Read twice: the second comes from memory.
        assert_eq!(store.shared_secrets().await.unwrap()[0].value, "1");
        assert_eq!(store.shared_secrets().await.unwrap()[0].value, "1");
        store.put_shared_secret(&secret("A", "2")).await.unwrap();
        store.put_shared_secret(&secret("B", "3")).await.unwrap();
        let read = store.shared_secrets().await.unwrap();
        assert_eq!((read.len(), read[0].value.as_str()), (2, "2"));
        assert!(store.delete_shared_secret(DEFAULT_ORG, "A").await.unwrap());
        assert!(!store.delete_shared_secret(DEFAULT_ORG, "A").await.unwrap());
        let read = store.shared_secrets().await.unwrap();
        assert_eq!((read.len(), read[0].name.as_str()), (1, "B"));
    }

    #[tokio::test]
    async fn values_are_kept_per_script_within_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.kv_set("a", "n", b"1", 100).await.unwrap();
        store.kv_set("ab", "n", b"2", 100).await.unwrap();
        assert_eq!(store.kv_get("a", "n").await.unwrap().unwrap(), b"1");
        assert_eq!(store.kv_get("ab", "n").await.unwrap().unwrap(), b"2");
        // Replacing a value counts only the new one.
        store.kv_set("a", "n", &[b'x'; 99], 100).await.unwrap();
        let refused = store.kv_set("a", "m", b"1", 100).await.unwrap_err();
        assert!(
            matches!(
                refused,
                KvRefusal::OverQuota {
                    would: 102,
                    quota: 100
                }
            ),
            "{refused}"
        );
        store.kv_set("a", "p/1", b"", 1000).await.unwrap();
        store.kv_set("a", "p/2", b"", 1000).await.unwrap();
        assert_eq!(store.kv_keys("a", "p/", 10).await.unwrap(), ["p/1", "p/2"]);
        assert_eq!(store.kv_keys("a", "", 2).await.unwrap(), ["n", "p/1"]);
        assert!(store.kv_delete("a", "p/1").await.unwrap());
        assert!(!store.kv_delete("a", "p/1").await.unwrap());

        let config = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let allow = |_: &ScriptRecord| Ok(());
        // Only a script that exists has config, and only when its check passes.
        assert!(matches!(
            store.set_script_config("a", &config, &allow).await,
            Err(StoreError::NotFound)
        ));
        store
            .create_script(&crate::store::testing::script("a", "a-name", 1), b"v2")
            .await
            .unwrap();
        let refuse = |_: &ScriptRecord| Err(StoreError::Forbidden("no".into()));
        assert!(
            store
                .set_script_config("a", &config, &refuse)
                .await
                .is_err()
        );
        assert!(store.script_config("a").await.unwrap().is_empty());
        store.set_script_config("a", &config, &allow).await.unwrap();
        assert_eq!(store.script_config("a").await.unwrap(), config);
        store.drop_data_of("a").unwrap();
        assert!(store.kv_entries("a").await.unwrap().is_empty());
        assert!(store.script_config("a").await.unwrap().is_empty());
        assert_eq!(store.kv_entries("ab").await.unwrap().len(), 1);
    }
}

//! The store behind a `kiln:script` run's key-value and config imports: the
//! script's own entries, within the configured quotas.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_runtime::{KvError, ScriptHost};

use crate::config::LimitsConfig;
use crate::store::Store;
use crate::store::script_data::KvRefusal;

pub struct StoredScript {
    store: Arc<dyn Store>,
    script_id: String,
    /// Read once when the run starts: a run sees one set of values.
    config: BTreeMap<String, String>,
    value_quota: u64,
    script_quota: u64,
}

impl StoredScript {
    /// The host of one run of `script_id`, whose config values (opened) are
    /// `config`.
    pub fn new(
        store: Arc<dyn Store>,
        script_id: &str,
        config: BTreeMap<String, String>,
        limits: &LimitsConfig,
    ) -> Self {
        Self {
            config,
            store,
            script_id: script_id.to_owned(),
            value_quota: limits.kv_value_bytes,
            script_quota: limits.kv_script_bytes,
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    tracing::error!(error = %e, "a script's key-value call failed");
    KvError::Unavailable("the store failed; the server log has the details".into())
}

#[async_trait::async_trait]
impl ScriptHost for StoredScript {
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store
            .kv_get(&self.script_id, key)
            .await
            .map_err(unavailable)
    }

    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if value.len() as u64 > self.value_quota {
            return Err(KvError::QuotaExceeded(format!(
                "a value may have {} bytes; this one has {}",
                self.value_quota,
                value.len()
            )));
        }
        self.store
            .kv_set(&self.script_id, key, value, self.script_quota)
            .await
            .map_err(|refusal| match refusal {
                KvRefusal::OverQuota { .. } => KvError::QuotaExceeded(refusal.to_string()),
                KvRefusal::Store(e) => unavailable(e),
            })
    }

    async fn kv_delete(&self, key: &str) -> Result<bool, KvError> {
        self.store
            .kv_delete(&self.script_id, key)
            .await
            .map_err(unavailable)
    }

    async fn kv_list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError> {
        self.store
            .kv_keys(&self.script_id, prefix, limit)
            .await
            .map_err(unavailable)
    }

    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[tokio::test]
    async fn values_over_either_quota_are_refused_and_config_is_what_the_run_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let config = BTreeMap::from([("greeting".to_string(), "hej".to_string())]);
        let limits = LimitsConfig {
            kv_value_bytes: 8,
            kv_script_bytes: 12,
            ..crate::config::Config::default().limits
        };
        let host = StoredScript::new(store.clone(), "s", config, &limits);
        assert!(matches!(
            host.kv_set("k", &[0; 9]).await,
            Err(KvError::QuotaExceeded(_))
        ));
        host.kv_set("k", &[0; 8]).await.unwrap();
        assert!(matches!(
            host.kv_set("k2", b"abc").await,
            Err(KvError::QuotaExceeded(_))
        ));
        assert_eq!(host.kv_list("", 10).await.unwrap(), ["k"]);
        assert_eq!(host.config("greeting").as_deref(), Some("hej"));
        assert_eq!(host.config("other"), None);
    }
}

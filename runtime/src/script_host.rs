//! What a `kiln:script` component imports from its host: log lines go to the
//! run's stderr and to tracing; key-value and config calls go to the
//! embedder's [`ScriptHost`] (the server backs them with its store, `kiln
//! run` with memory), since this crate does no storage I/O of its own.

use std::sync::Arc;

use crate::bindings::script::kiln::script::{config, kv, log};
use crate::capture::CapturePipe;
use crate::wasi::State;

/// Why a key-value call failed; the guest sees the same variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key is empty, too long, or otherwise not a key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value or the script's store would be over its quota.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The store cannot be reached (or the run belongs to no script).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The storage behind one run's `kiln:script` imports: the key-value store
/// and config values of the script being run. Calls come from the thread
/// running the guest and should return quickly.
#[async_trait::async_trait]
pub trait ScriptHost: Send + Sync {
    /// The value under `key`.
    ///
    /// # Errors
    ///
    /// Whatever the store cannot do, as a [`KvError`].
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value` under `key`.
    ///
    /// # Errors
    ///
    /// [`KvError::QuotaExceeded`] past the quotas, or a store failure.
    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`; true when it existed.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn kv_delete(&self, key: &str) -> Result<bool, KvError>;
    /// Keys starting with `prefix`, in byte order, at most `limit`.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn kv_list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError>;
    /// The config value of `key`, if set.
    fn config(&self, key: &str) -> Option<String>;
}

/// A [`ScriptHost`] in memory: a store that lasts as long as the value (for
/// `kiln run`, one run) and fixed config values.
#[derive(Debug, Default)]
pub struct MemoryScriptHost {
    kv: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    config: std::collections::BTreeMap<String, String>,
}

impl MemoryScriptHost {
    /// An empty store with these config values.
    pub fn new(config: std::collections::BTreeMap<String, String>) -> Self {
        Self {
            kv: std::sync::Mutex::default(),
            config,
        }
    }

    /// The value under `key` now.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.kv().get(key).cloned()
    }

    fn kv(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Vec<u8>>> {
        self.kv
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl ScriptHost for MemoryScriptHost {
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.value(key))
    }

    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.kv().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn kv_delete(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.kv().remove(key).is_some())
    }

    async fn kv_list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError> {
        Ok(self
            .kv()
            .range(prefix.to_owned()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}

/// Keys are text of at most this many bytes (checked here, for every host).
pub const MAX_KEY_BYTES: usize = 512;
/// `list-keys` returns at most this many keys.
const MAX_LISTED_KEYS: usize = 1000;

/// Log lines of one run that also reach the server's log, and how much of
/// each: the run's stderr has its own cap, but the server's log must not be
/// a hostile script's to fill.
const MAX_TRACED_LINES: usize = 100;
const MAX_TRACED_BYTES: usize = 1024;

/// A run's connection to its host, held in the store.
pub(crate) struct ScriptEnv {
    pub host: Option<Arc<dyn ScriptHost>>,
    pub stderr: CapturePipe,
    /// Log lines passed on to tracing so far.
    pub traced: usize,
}

impl ScriptEnv {
    fn host(&self) -> Result<&dyn ScriptHost, kv::Error> {
        self.host.as_deref().ok_or_else(|| {
            kv::Error::Unavailable(
                "this run belongs to no stored script, so it has no store".into(),
            )
        })
    }
}

fn check_key(key: &str) -> Result<(), kv::Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(kv::Error::InvalidKey(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

impl From<KvError> for kv::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::InvalidKey(m) => kv::Error::InvalidKey(m),
            KvError::QuotaExceeded(m) => kv::Error::QuotaExceeded(m),
            KvError::Unavailable(m) => kv::Error::Unavailable(m),
        }
    }
}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let name = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        if self.script.traced < MAX_TRACED_LINES {
            self.script.traced += 1;
            let mut end = message.len().min(MAX_TRACED_BYTES);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let line = &message[..end];
            match level {
                log::Level::Debug => tracing::debug!(target: "kiln::script", "{line}"),
                log::Level::Info => tracing::info!(target: "kiln::script", "{line}"),
                log::Level::Warn => tracing::warn!(target: "kiln::script", "{line}"),
                log::Level::Error => tracing::error!(target: "kiln::script", "{line}"),
            }
        }
        self.script
            .stderr
            .push(format!("[{name}] {message}\n").as_bytes());
    }
}

impl kv::Host for State {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        check_key(&key)?;
        Ok(self.script.host()?.kv_get(&key).await?)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::Error> {
        check_key(&key)?;
        Ok(self.script.host()?.kv_set(&key, &value).await?)
    }

    async fn delete(&mut self, key: String) -> Result<bool, kv::Error> {
        check_key(&key)?;
        Ok(self.script.host()?.kv_delete(&key).await?)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, kv::Error> {
        Ok(self
            .script
            .host()?
            .kv_list(&prefix, MAX_LISTED_KEYS)
            .await?)
    }
}

impl config::Host for State {
    fn get(&mut self, key: String) -> Option<String> {
        self.script.host.as_ref()?.config(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_512_bytes() {
        assert!(check_key("k").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        for bad in [String::new(), "k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(matches!(check_key(&bad), Err(kv::Error::InvalidKey(_))));
        }
    }

    #[tokio::test]
    async fn the_memory_host_lists_by_prefix_in_order() {
        let host = MemoryScriptHost::default();
        for key in ["b", "a/2", "a/1", "ab"] {
            host.kv_set(key, b"").await.unwrap();
        }
        assert_eq!(host.kv_list("a/", 10).await.unwrap(), ["a/1", "a/2"]);
        assert_eq!(host.kv_list("", 2).await.unwrap(), ["a/1", "a/2"]);
        assert!(host.kv_delete("b").await.unwrap());
        assert_eq!(host.kv_get("b").await.unwrap(), None);
    }
}

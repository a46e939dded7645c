//! What a script keeps beside its versions: its key-value store (written by
//! its `kiln:script` runs) and its config values (set through the API, read
//! by its runs). Both go when the script is deleted.

use std::collections::BTreeMap;

use super::StoreError;

/// Why a key-value write was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvRefusal {
    /// The script's store would hold more than its quota.
    #[error("the script's store would hold {would} bytes; its quota is {quota}")]
    OverQuota { would: u64, quota: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub trait ScriptDataStore {
    fn kv_get(&self, script_id: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a value unless the script's keys and values would then take
    /// more than `quota` bytes in all.
    fn kv_set(&self, script_id: &str, key: &str, value: &[u8], quota: u64)
    -> Result<(), KvRefusal>;
    fn kv_delete(&self, script_id: &str, key: &str) -> Result<bool, StoreError>;
    /// Keys starting with `prefix`, in byte order, at most `limit`.
    fn kv_keys(
        &self,
        script_id: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Every key and value of a script, in key order.
    fn kv_entries(&self, script_id: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    fn script_config(&self, script_id: &str) -> Result<BTreeMap<String, String>, StoreError>;
    fn set_script_config(
        &self,
        script_id: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), StoreError>;
    /// Removes a deleted script's key-value entries and config.
    fn drop_script_data(&self, script_id: &str) -> Result<(), StoreError>;
}

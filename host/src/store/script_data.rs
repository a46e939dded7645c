//! What a script keeps beside its versions: its key-value store (written by
//! its `kiln:script` runs) and its config values (set through the API, read
//! by its runs). Both go when the script is deleted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// A secret an admin keeps once and grants to scripts, which read it as
/// they read their own config values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSecretRecord {
    pub name: String,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Sealed by the vault (slot `shared:<name>`), never shown.
    pub value: String,
    /// The ids of the scripts granted it; `*` grants every script.
    pub scripts: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: Option<String>,
}

impl SharedSecretRecord {
    /// Whether a run of `script_id` of organization `org` gets it: only
    /// its own organization's scripts ever do (`*` is every one of those).
    pub fn granted_to(&self, org: &str, script_id: &str) -> bool {
        super::orgs::InOrg::org(self) == org
            && self.scripts.iter().any(|s| s == "*" || s == script_id)
    }

    /// Its key in the store and its vault slot's name: unique on the node.
    pub fn key(&self) -> String {
        super::orgs::name_key(super::orgs::InOrg::org(self), &self.name)
    }
}

/// Why a key-value write was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvRefusal {
    /// The script's store would hold more than its quota.
    #[error("the script's store would hold {would} bytes; its quota is {quota}")]
    OverQuota { would: u64, quota: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait::async_trait]
pub trait ScriptDataStore {
    async fn kv_get(&self, script_id: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a value unless the script's keys and values would then take
    /// more than `quota` bytes in all.
    async fn kv_set(
        &self,
        script_id: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<(), KvRefusal>;
    async fn kv_delete(&self, script_id: &str, key: &str) -> Result<bool, StoreError>;
    /// Keys starting with `prefix`, in byte order, at most `limit`.
    async fn kv_keys(
        &self,
        script_id: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Every key and value of a script, in key order.
    async fn kv_entries(&self, script_id: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    async fn script_config(&self, script_id: &str) -> Result<BTreeMap<String, String>, StoreError>;
    /// Replaces a script's config if `allow` passes its record as it is
    /// now; [`StoreError::NotFound`] if there is no such script.
    async fn set_script_config(
        &self,
        script_id: &str,
        values: &BTreeMap<String, String>,
        allow: &(dyn for<'r> Fn(&'r super::ScriptRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<(), StoreError>;
    /// Every shared secret, by name (bounded by the API: 100).
    async fn shared_secrets(&self) -> Result<std::sync::Arc<[SharedSecretRecord]>, StoreError>;
    /// Organization `org`'s secret `name`.
    async fn shared_secret(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<SharedSecretRecord>, StoreError>;
    /// Stores a shared secret, replacing one of that name.
    async fn put_shared_secret(&self, secret: &SharedSecretRecord) -> Result<(), StoreError>;
    /// Whether there was one to delete.
    async fn delete_shared_secret(&self, org: &str, name: &str) -> Result<bool, StoreError>;
}

//! Scripts: the record, a unique name index, and every version's content
//! with its [`VersionRecord`].

use super::{ScriptRecord, StoreError, VersionRecord};

#[async_trait::async_trait]
pub trait ScriptStore {
    /// Stores a new script and its first version's content, refusing a taken name.
    async fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError>;
    /// A script of organization `org` by id, or by name when no id
    /// matches; another organization's script is `None`.
    async fn script(&self, org: &str, id_or_name: &str)
    -> Result<Option<ScriptRecord>, StoreError>;
    /// The content of one version of a script.
    async fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces a script (by id) with what `change` makes of the current record,
    /// atomically. When `content` is given it is stored as the new record's
    /// `version` (which `change` must have raised). A name change claims the
    /// new name. `change` may run more than once and refuses with
    /// [`StoreError::Refused`].
    async fn update_script(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r ScriptRecord) -> Result<ScriptRecord, StoreError> + Send + Sync
         ),
        content: Option<&[u8]>,
    ) -> Result<ScriptRecord, StoreError>;
    /// Deletes a script (by id), its name and all its versions if `allow` accepts the
    /// current record. Executions are kept.
    async fn delete_script(
        &self,
        id: &str,
        allow: &(dyn for<'r> Fn(&'r ScriptRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<ScriptRecord, StoreError>;
    /// Every version of a script, oldest first.
    async fn script_versions(&self, id: &str) -> Result<Vec<VersionRecord>, StoreError>;
    /// Removes up to `limit` versions of a script below `below` (content and
    /// record), oldest first, except those `keep` names; how many.
    async fn remove_versions_below(
        &self,
        id: &str,
        below: u32,
        keep: &(dyn Fn(u32) -> bool + Send + Sync),
        limit: usize,
    ) -> Result<usize, StoreError>;
    async fn script_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<VersionRecord>, StoreError>;
    /// Counts one more execution of a script.
    async fn note_execution(&self, script_id: &str, at: &str) -> Result<(), StoreError>;
    /// Every script of the node, in id (creation) order.
    async fn scripts(&self) -> Result<Vec<ScriptRecord>, StoreError>;
}

//! Organizations: the tenants of a node. Every script, execution,
//! schedule, webhook, API key, shared secret and audit entry belongs to one;
//! users belong to one or more, with a role in each.
//!
//! Records name their organization in an `org` field that is absent for
//! the default one: a data directory from before organizations is the
//! default organization as it stands, and records of a one-organization
//! node stay as small as they were.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::scopes::Role;

/// The id (and first name) of the organization every node has; records
/// without an `org` belong to it.
pub const DEFAULT_ORG: &str = "default";

/// At most this many organizations on one node.
pub const MAX_ORGS: usize = 10_000;
/// A user belongs to at most this many organizations.
pub const MAX_MEMBERSHIPS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgRecord {
    /// `default`, or a UUIDv7.
    pub id: String,
    /// Unique on the node; an identifier, as script names are.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub created_by: Option<String>,
}

impl OrgRecord {
    /// The default organization as a node makes it the first time.
    pub fn default_org(at: &str) -> Self {
        Self {
            id: DEFAULT_ORG.into(),
            name: DEFAULT_ORG.into(),
            description: None,
            created_at: at.into(),
            updated_at: at.into(),
            created_by: None,
        }
    }
}

/// A user's role in one organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub org: String,
    pub role: Role,
}

/// The organization a record's `org` field names.
pub fn org_of(field: &Option<String>) -> &str {
    field.as_deref().unwrap_or(DEFAULT_ORG)
}

/// The `org` field of a record in `org`: absent for the default one.
pub fn org_field(org: &str) -> Option<String> {
    (org != DEFAULT_ORG).then(|| org.to_owned())
}

/// The key of a name unique within its organization (a script's, a shared
/// secret's): the name itself in the default organization, so the keys of a
/// store from before organizations hold, and `<org id>/<name>` in the
/// others (names never hold a `/`).
pub fn name_key(org: &str, name: &str) -> String {
    if org == DEFAULT_ORG {
        name.to_owned()
    } else {
        format!("{org}/{name}")
    }
}

/// A record that belongs to an organization.
pub trait InOrg {
    fn org(&self) -> &str;
}

macro_rules! in_org {
    ($($record:ty),* $(,)?) => {$(
        impl InOrg for $record {
            fn org(&self) -> &str {
                org_of(&self.org)
            }
        }
    )*};
}

in_org!(
    super::ScriptRecord,
    super::ExecutionRecord,
    super::ScheduleRecord,
    super::webhooks::WebhookRecord,
    super::auth::ApiKeyRecord,
    super::auth::AuditRecord,
    super::script_data::SharedSecretRecord,
);

pub trait OrgStore {
    /// Stores a new organization, refusing a taken name
    /// ([`StoreError::NameTaken`]).
    fn create_org(&self, org: &OrgRecord) -> Result<(), StoreError>;
    /// By id or name.
    fn org(&self, id_or_name: &str) -> Result<Option<OrgRecord>, StoreError>;
    /// Every organization, the default first, then in creation order.
    fn orgs(&self) -> Result<Vec<OrgRecord>, StoreError>;
    /// Replaces an organization with what `change` makes of it (a rename
    /// claims the new name first); `None` if there is none.
    fn update_org(
        &self,
        id: &str,
        change: &dyn Fn(&OrgRecord) -> Result<OrgRecord, StoreError>,
    ) -> Result<Option<OrgRecord>, StoreError>;
    /// Removes an organization's record and name; its contents are the
    /// caller's to have removed first.
    fn delete_org(&self, id: &str) -> Result<Option<OrgRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_organization_keeps_the_old_keys_and_fields() {
        assert_eq!(name_key(DEFAULT_ORG, "hello"), "hello");
        assert_eq!(name_key("0192-x", "hello"), "0192-x/hello");
        assert_eq!(org_field(DEFAULT_ORG), None);
        assert_eq!(org_of(&org_field("0192-x")), "0192-x");
        assert_eq!(org_of(&None), DEFAULT_ORG);
    }
}

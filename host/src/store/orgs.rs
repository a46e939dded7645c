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
    /// Its tier's quotas, with `quotas` over them.
    #[serde(default)]
    pub tier: Tier,
    /// Quotas of its own: over the tier's, or, for `custom`, all of them.
    #[serde(default, skip_serializing_if = "QuotaLimits::is_empty")]
    pub quotas: QuotaLimits,
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
            // The node's own: as unbounded as it was before organizations.
            tier: Tier::Custom,
            quotas: QuotaLimits::default(),
            created_at: at.into(),
            updated_at: at.into(),
            created_by: None,
        }
    }
}

impl OrgRecord {
    /// What it may hold and do: its tier's quotas with its own over them.
    pub fn limits(&self) -> QuotaLimits {
        self.tier.limits().overlaid(&self.quotas)
    }
}

/// A subscription tier: a set of quotas (the seed's tiers; `custom` is
/// only the organization's own, unbounded where it sets none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Free,
    Pro,
    Enterprise,
    Custom,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
            Tier::Custom => "custom",
        }
    }

    /// The tier's quotas: requests per hour as the seed has them (100,
    /// 1 000, 10 000), the rest scaled alike.
    pub fn limits(self) -> QuotaLimits {
        let scaled = |requests_per_hour: u64, scale: u64| QuotaLimits {
            requests_per_hour: Some(requests_per_hour),
            executions_per_day: Some(1_000 * scale),
            fuel_per_day: Some(100_000_000_000 * scale),
            concurrent_executions: Some(2 * scale.min(8)),
            stored_bytes: Some((100 << 20) * scale),
            scripts: Some(50 * scale),
            schedules: Some(10 * scale),
            webhooks: Some(5 * scale),
            api_keys: Some(10 * scale),
        };
        match self {
            Tier::Free => scaled(100, 1),
            Tier::Pro => scaled(1_000, 10),
            Tier::Enterprise => scaled(10_000, 100),
            Tier::Custom => QuotaLimits::default(),
        }
    }
}

/// Quotas of an organization; `None` is no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimits {
    /// Authenticated API requests per clock hour (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    /// Executions started per day (UTC), whatever their trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions_per_day: Option<u64>,
    /// Fuel its executions burned per day (UTC); runs already going may
    /// pass it by their own fuel limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_day: Option<u64>,
    /// Executions running at once; more wait in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_executions: Option<u64>,
    /// Bytes of script content kept (every version) and key-value data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<u64>,
}

impl QuotaLimits {
    /// The bound of running executions a queue holds the organization to.
    pub fn running_cap(&self) -> Option<usize> {
        self.concurrent_executions
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These, with every quota `over` sets in their place.
    pub fn overlaid(self, over: &Self) -> Self {
        Self {
            requests_per_hour: over.requests_per_hour.or(self.requests_per_hour),
            executions_per_day: over.executions_per_day.or(self.executions_per_day),
            fuel_per_day: over.fuel_per_day.or(self.fuel_per_day),
            concurrent_executions: over.concurrent_executions.or(self.concurrent_executions),
            stored_bytes: over.stored_bytes.or(self.stored_bytes),
            scripts: over.scripts.or(self.scripts),
            schedules: over.schedules.or(self.schedules),
            webhooks: over.webhooks.or(self.webhooks),
            api_keys: over.api_keys.or(self.api_keys),
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

#[async_trait::async_trait]
pub trait OrgStore {
    /// Stores a new organization, refusing a taken name
    /// ([`StoreError::NameTaken`]).
    async fn create_org(&self, org: &OrgRecord) -> Result<(), StoreError>;
    /// By id or name.
    async fn org(&self, id_or_name: &str) -> Result<Option<OrgRecord>, StoreError>;
    /// Every organization, the default first, then in creation order.
    async fn orgs(&self) -> Result<Vec<OrgRecord>, StoreError>;
    /// Replaces an organization with what `change` makes of it (a rename
    /// claims the new name first); `None` if there is none.
    async fn update_org(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r OrgRecord) -> Result<OrgRecord, StoreError> + Send + Sync),
    ) -> Result<Option<OrgRecord>, StoreError>;
    /// Removes an organization's record and name; its contents are the
    /// caller's to have removed first.
    async fn delete_org(&self, id: &str) -> Result<Option<OrgRecord>, StoreError>;
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

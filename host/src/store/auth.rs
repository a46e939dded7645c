//! Who may call: users, API keys, login sessions with their refresh tokens,
//! and the audit log. Secrets are never stored in clear: passwords as
//! Argon2id PHC strings, API keys and refresh tokens as BLAKE3 hashes.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::orgs::Membership;
use super::scopes::{Role, Scope};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// The organizations the user belongs to, with a role in each; the
    /// first is where a request without `X-Kiln-Organization` acts.
    pub memberships: Vec<Membership>,
    /// A node operator: manages organizations (`/v1/organizations`) and the
    /// node (`/v1/status`), above any one organization.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
    /// Argon2id in PHC string form (algorithm, parameters and salt included).
    pub password_hash: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub last_login_at: Option<String>,
    /// The second factor, once the user has set one up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpRecord>,
}

impl UserRecord {
    /// The user's role in `org`, if they belong to it.
    pub fn role_in(&self, org: &str) -> Option<Role> {
        self.memberships
            .iter()
            .find(|m| m.org == org)
            .map(|m| m.role)
    }

    /// Where the user acts when a request does not say: their first
    /// organization.
    pub fn home_org(&self) -> Option<&str> {
        self.memberships.first().map(|m| m.org.as_str())
    }
}

/// A user's one-time code setup (`auth/totp.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpRecord {
    /// The base32 secret, sealed by the vault at `totp:<user id>`.
    pub secret: String,
    /// Whether a code has confirmed the user's app has it; logins ask for a
    /// code only then.
    pub confirmed: bool,
    /// The last time step a code was taken for: each code works once.
    #[serde(default)]
    pub last_step: u64,
    /// Keyed hashes (`Vault::keyed_hash`) of the recovery codes not used
    /// yet; while unconfirmed, wrong codes given to confirm it count in
    /// `failures`.
    #[serde(default)]
    pub recovery: Vec<String>,
    /// Wrong codes since the last right one.
    #[serde(default)]
    pub failures: u32,
    /// Until when (Unix ms) logins wait after too many wrong codes.
    #[serde(default)]
    pub locked_until_ms: u64,
    /// Pauses since the last right code (each twice as long as the one
    /// before).
    #[serde(default)]
    pub lockouts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub name: String,
    pub owner_id: String,
    /// The first characters of the key, enough to recognise it in a list.
    pub prefix: String,
    /// BLAKE3 of the whole key, hex.
    pub hash: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// `expires_at` as Unix ms, for the check on every request.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// One login: the family of refresh tokens that rotate from it, and the
/// access tokens issued with them (their `sid` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub created_ms: u64,
    /// Moves forward with every refresh; the session is forgotten after it.
    pub expires_ms: u64,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub session_id: String,
    pub user_id: String,
    pub expires_ms: u64,
    /// Set when it was exchanged; showing it again is reuse.
    #[serde(default)]
    pub used: bool,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    Unknown,
    /// It was live and is now used up.
    Fresh(RefreshRecord),
    /// It had been used before.
    Reused(RefreshRecord),
}

/// One auth decision. Never holds a password, token or key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: String,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub at: String,
    /// e.g. `login.succeeded`, `login.failed`, `api_key.created`, `permission.denied`.
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The user (or the API key's owner) who acted, when known.
    pub actor_id: Option<String>,
    /// A readable name for the actor: a username, or `key:<name>`.
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// What was acted on: a user id, key id, or `METHOD /route`.
    pub target: Option<String>,
    pub detail: Option<String>,
    pub request_id: Option<String>,
}

#[async_trait::async_trait]
pub trait AuthStore: Send + Sync {
    /// Stores a new user, refusing a taken username.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Every user, in id (creation) order.
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Replaces a user with what `change` makes of it, atomically (`change`
    /// may run more than once); `None` if there is no such user. The
    /// username does not change.
    async fn update_user(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r UserRecord) -> Result<UserRecord, StoreError> + Send + Sync),
    ) -> Result<Option<UserRecord>, StoreError>;
    /// Deletes a user with their API keys and sessions.
    async fn delete_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes a key: after this it authenticates nothing.
    async fn delete_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Revokes every key of a user; returns how many there were.
    async fn revoke_user_keys(&self, user_id: &str) -> Result<usize, StoreError>;

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Moves a live session's expiry to `expires_ms`, atomically against a
    /// revocation; `None` if it is revoked or gone.
    async fn extend_session(
        &self,
        id: &str,
        expires_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Marks a session revoked; its refresh and access tokens stop working.
    async fn revoke_session(&self, id: &str) -> Result<(), StoreError>;
    /// Revokes every session of a user but `except`; returns how many were
    /// live.
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
    ) -> Result<usize, StoreError>;
    /// Stores a refresh token under the hash of its text.
    async fn put_refresh_token(&self, hash: &str, token: &RefreshRecord) -> Result<(), StoreError>;
    /// Uses a refresh token up, atomically: of two concurrent uses one is
    /// `Fresh` and the other `Reused`.
    async fn use_refresh_token(&self, hash: &str) -> Result<RefreshUse, StoreError>;
    /// Forgets sessions and refresh tokens that expired before `now_ms`.
    async fn expire_sessions(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Adds an audit record. Not awaited, so a refusal can be recorded
    /// where it is made: the record is as durable as the store's next
    /// [`flush`](super::Store::flush), like every write before it.
    fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// An organization's audit records newest first: the `take` after the
    /// first `skip`, and how many there are.
    async fn audit_page(
        &self,
        org: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AuditRecord>, usize), StoreError>;
    /// Removes up to `limit` audit records made before `before_ms` (Unix
    /// ms), oldest first; how many it removed.
    async fn remove_audit_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError>;
}

//! Authentication: users with Argon2id passwords, login sessions with
//! rotating refresh tokens, HS256 access tokens, and API keys. [`Auth`]
//! turns a request's credential into a [`Principal`]; which scope a route
//! needs is the router's business (`api/access.rs`).

pub mod jwt;
mod principal;
pub mod secrets;
pub mod totp;

use std::sync::{Arc, OnceLock};

use axum::http::HeaderMap;

pub use self::principal::{Principal, Via};
use self::secrets::SecretError;
use crate::config::Config;
use crate::store::auth::{RefreshRecord, RefreshUse, SessionRecord, UserRecord};
use crate::store::orgs::{DEFAULT_ORG, InOrg as _, Membership};
pub use crate::store::scopes::{Role, Scope, Scopes};
use crate::store::{Store, StoreError};

/// API keys are `kiln_` followed by this many base62 characters.
pub const API_KEY_PREFIX: &str = "kiln_";
pub const API_KEY_CHARS: usize = 32;
const REFRESH_PREFIX: &str = "kilnrt_";
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, expired, revoked or forged: the client gets this sentence.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A used refresh token came back: its session is now revoked.
    #[error("this refresh token was already used; its session is revoked")]
    RefreshReuse { user_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot sign an access token: {0}")]
    Sign(String),
    #[error("the first admin could not be created: {0}")]
    FirstAdmin(String),
    /// `X-Kiln-Organization` names no organization this credential acts in
    /// (none by that id or name, or one the user is no member of, or not
    /// the API key's): the same answer for each, so it tells nothing.
    #[error("no organization {0:?} that this credential may act in")]
    NoOrganization(String),
}

/// The request header that names (by id or name) the organization a
/// request acts in; without it a session acts in the user's first
/// organization and an API key in its own.
pub const ORG_HEADER: &str = "x-kiln-organization";

/// A fresh access token and the refresh token to get the next one.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

pub struct Auth {
    store: Arc<dyn Store>,
    signer: jwt::Signer,
    enabled: bool,
    access_ttl_secs: u64,
    refresh_ttl_secs: u64,
    /// Checked against when the user does not exist, so a wrong username
    /// takes as long as a wrong password.
    dummy_hash: OnceLock<String>,
    /// Held across "is another admin left?" and the write that depends on it.
    admin_changes: tokio::sync::Mutex<()>,
    /// A new data dir makes its first admin after the server is ready: the
    /// Argon2id hash alone would take most of the start-up budget.
    first_admin: tokio::sync::watch::Sender<FirstAdmin>,
    /// Organization ids and names → ids, read whole from the store on the
    /// first header that needs them and dropped by [`Auth::orgs_changed`]
    /// (at most twice `MAX_ORGS` entries).
    org_ids: std::sync::RwLock<Option<std::collections::HashMap<String, String>>>,
    /// Counts [`Auth::orgs_changed`]: a map read before a change is not kept.
    org_changes: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
enum FirstAdmin {
    Pending,
    Exists,
    Failed(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// The first admin's password, for a store with no user yet: the
/// configured one, else the one in `<data>/initial-admin-password`, created
/// with a random value the first time, and logged.
///
/// # Errors
///
/// The password file cannot be read or written, or is damaged.
pub fn first_admin_password(config: &Config) -> Result<String, AuthError> {
    if let Some(password) = &config.auth.admin_password {
        return Ok(password.0.clone());
    }
    let path = config.server.data_dir.join("initial-admin-password");
    let (password, _) = secrets::load_or_create(&path, MIN_PASSWORD_CHARS, || {
        secrets::random_base62(24).map(|p| format!("{p}\n"))
    })?;
    // API.md: printed once, on the start that creates the user (the only
    // caller asks when the store has no user yet).
    tracing::warn!(
        file = %path.display(),
        "the first user, \"admin\", has the password {password}; it is also in the file named here. Change it."
    );
    Ok(password)
}

/// Whether the user who made something that acts later on their behalf (a
/// schedule's runs, a webhook's events) still may do `scope`: not disabled,
/// not deleted, and their role has it now. Things made with authentication
/// off have no creator and are not held back.
///
/// # Errors
///
/// The store cannot be read.
pub async fn creator_may(
    store: &dyn Store,
    org: &str,
    created_by: Option<&str>,
    scope: Scope,
) -> Result<bool, StoreError> {
    let Some(user_id) = created_by else {
        return Ok(true);
    };
    Ok(store.user(user_id).await?.is_some_and(|user| {
        !user.disabled
            && user
                .role_in(org)
                .is_some_and(|role| role.scopes().allows(scope))
    }))
}

/// An Argon2id hash of `password`, made on a blocking thread.
async fn hash_off_thread(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| AuthError::Store(StoreError::Backend(e.to_string())))?
        .map_err(AuthError::from)
}

fn now_secs() -> u64 {
    crate::now_ms() / 1000
}

impl Auth {
    /// Loads (or makes, once) the token secret and, on an empty store, the
    /// first admin.
    ///
    /// # Errors
    ///
    /// The secret file or the store cannot be read or written.
    /// On an empty store the first admin is still to be made
    /// ([`Auth::create_first_admin`]); logins wait for it.
    pub async fn open(store: Arc<dyn Store>, config: &Config) -> Result<Self, AuthError> {
        let secret = match &config.auth.jwt_secret {
            Some(secret) => secret.0.clone(),
            None => {
                let path = config.server.data_dir.join("jwt-secret");
                secrets::load_or_create(&path, 32, || {
                    Ok(blake3::Hash::from_bytes(secrets::random_bytes::<32>()?)
                        .to_hex()
                        .to_string())
                })?
                .0
            }
        };
        let auth = Self {
            store,
            signer: jwt::Signer::new(secret.as_bytes()),
            enabled: config.auth.enabled,
            access_ttl_secs: config.auth.access_ttl_secs,
            refresh_ttl_secs: config.auth.refresh_ttl_secs,
            dummy_hash: OnceLock::new(),
            admin_changes: tokio::sync::Mutex::const_new(()),
            first_admin: tokio::sync::watch::Sender::new(FirstAdmin::Pending),
            org_ids: std::sync::RwLock::new(None),
            org_changes: std::sync::atomic::AtomicU64::new(0),
        };
        if !auth.store.users().await?.is_empty() {
            auth.first_admin.send_replace(FirstAdmin::Exists);
        }
        Ok(auth)
    }

    /// Serializes changes that could remove the last enabled admin.
    pub async fn admin_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.admin_changes.lock().await
    }

    /// Makes user "admin" with `password` (from [`first_admin_password`])
    /// unless some user exists. Waiting logins go on once it is done, or fail
    /// with its error.
    ///
    /// # Errors
    ///
    /// Hashing failed or the store cannot be written.
    pub async fn create_first_admin(&self, password: &str) -> Result<(), AuthError> {
        use futures_util::FutureExt as _;
        // A panic must not leave logins waiting forever.
        let created = std::panic::AssertUnwindSafe(self.make_first_admin(password))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(AuthError::FirstAdmin("making it panicked".into())));
        self.first_admin.send_replace(match &created {
            Ok(()) => FirstAdmin::Exists,
            Err(e) => FirstAdmin::Failed(e.to_string()),
        });
        created
    }

    /// Starts making the first admin on a blocking thread and returns: its
    /// Argon2id hash (~40 ms) would otherwise hold up readiness. The password
    /// (file) is settled before this returns; logins wait for the rest, and a
    /// failure reaches them and `serve`, which stops.
    ///
    /// # Errors
    ///
    /// The password file cannot be read or written, or is damaged.
    pub fn make_first_admin_in_background(
        self: &Arc<Self>,
        config: &Config,
    ) -> Result<(), AuthError> {
        let password = first_admin_password(config)?;
        let auth = self.clone();
        tokio::spawn(async move {
            let made = auth.create_first_admin(&password).await;
            // Argon2id's 19 MiB are free again.
            let _ = tokio::task::spawn_blocking(crate::memory::release_unused).await;
            match made {
                Ok(()) => {
                    if let Err(e) = auth.store.flush().await {
                        tracing::error!(error = %e, "cannot flush the first admin to disk");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot create the first admin"),
            }
        });
        Ok(())
    }

    /// Resolves once the first admin exists (at once for a store that has
    /// users).
    ///
    /// # Errors
    ///
    /// [`AuthError::FirstAdmin`] when making it failed.
    pub async fn first_admin_made(&self) -> Result<(), AuthError> {
        let mut state = self.first_admin.subscribe();
        let state = state
            .wait_for(|s| !matches!(s, FirstAdmin::Pending))
            .await
            .map_err(|_| AuthError::FirstAdmin("the server is stopping".into()))?;
        match &*state {
            FirstAdmin::Failed(e) => Err(AuthError::FirstAdmin(e.clone())),
            _ => Ok(()),
        }
    }

    /// Whether the first admin is still to be made.
    pub fn first_admin_pending(&self) -> bool {
        matches!(*self.first_admin.borrow(), FirstAdmin::Pending)
    }

    async fn make_first_admin(&self, password: &str) -> Result<(), AuthError> {
        if !self.store.users().await?.is_empty() {
            return Ok(());
        }
        let now = crate::now();
        let admin = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            username: "admin".into(),
            memberships: vec![Membership {
                org: DEFAULT_ORG.into(),
                role: Role::Admin,
            }],
            operator: true,
            password_hash: hash_off_thread(password.to_owned()).await?,
            disabled: false,
            created_at: now.clone(),
            updated_at: now,
            last_login_at: None,
            totp: None,
        };
        match self.store.create_user(&admin).await {
            Ok(()) | Err(StoreError::NameTaken(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The caller a request's `Authorization: Bearer` or `X-API-Key` names.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthenticated`] for a missing, expired, revoked or
    /// forged credential, or one of a disabled or deleted user;
    /// [`AuthError::NoOrganization`] for an [`ORG_HEADER`] it may not act in.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let wanted = match headers.get(ORG_HEADER) {
            Some(value) => Some(
                value
                    .to_str()
                    .map(str::trim)
                    .map_err(|_| AuthError::NoOrganization("(not text)".into()))?,
            ),
            None => None,
        };
        if !self.enabled {
            let mut open = Principal::open();
            if let Some(wanted) = wanted {
                open.org = self.find_org(wanted).await?;
            }
            return Ok(open);
        }
        if let Some(key) = headers.get("x-api-key") {
            let key = key
                .to_str()
                .map_err(|_| AuthError::Unauthenticated("the API key is not valid"))?;
            return self.by_api_key(key.trim(), wanted).await;
        }
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(AuthError::Unauthenticated(
                "this route needs Authorization: Bearer <access token> or X-API-Key: <key>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::Unauthenticated(
                "the Authorization header must be Bearer <access token>",
            ))?;
        self.by_access_token(token, wanted).await
    }

    /// The id of the organization `wanted` names (by id or name).
    async fn find_org(&self, wanted: &str) -> Result<String, AuthError> {
        let read = |ids: &std::collections::HashMap<String, String>| ids.get(wanted).cloned();
        let known = self
            .org_ids
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(read);
        let found = match known {
            Some(Some(id)) => Some(id),
            // Not in the map: the store says (a name unknown, or one made
            // since the map was read).
            Some(None) => self.store.org(wanted).await?.map(|org| org.id),
            None => {
                let seen = self.org_changes.load(std::sync::atomic::Ordering::Acquire);
                let orgs = self.store.orgs().await?;
                // Ids win over names, as in the store's lookup.
                let mut ids: std::collections::HashMap<String, String> = orgs
                    .iter()
                    .map(|org| (org.name.clone(), org.id.clone()))
                    .collect();
                ids.extend(orgs.into_iter().map(|org| (org.id.clone(), org.id)));
                let found = read(&ids);
                let mut kept = self
                    .org_ids
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if self.org_changes.load(std::sync::atomic::Ordering::Acquire) == seen {
                    *kept = Some(ids);
                }
                found
            }
        };
        found.ok_or_else(|| AuthError::NoOrganization(wanted.into()))
    }

    /// An organization was made, renamed or deleted: names are read again.
    pub fn orgs_changed(&self) {
        let mut kept = self
            .org_ids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.org_changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *kept = None;
    }

    async fn by_access_token(
        &self,
        token: &str,
        wanted: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let claims = self.signer.verify(token).map_err(|_| {
            AuthError::Unauthenticated("the access token is invalid or has expired")
        })?;
        let live = self
            .store
            .session(&claims.sid)
            .await?
            .is_some_and(|s| !s.revoked && s.user_id == claims.sub);
        if !live {
            return Err(AuthError::Unauthenticated(
                "the session of this token has ended",
            ));
        }
        let user = self.active_user(&claims.sub).await?;
        let org = match wanted {
            Some(wanted) => {
                let org = self.find_org(wanted).await?;
                if user.role_in(&org).is_none() {
                    return Err(AuthError::NoOrganization(wanted.into()));
                }
                org
            }
            // A user who belongs nowhere (an operator only, or one whose
            // last organization went) acts in none: every lookup finds nothing.
            None => user.home_org().unwrap_or_default().to_owned(),
        };
        // What the user may do is their role in that organization now (the
        // token's `scopes` claim is for clients, of their first one).
        let role = user.role_in(&org);
        Ok(Principal {
            scopes: role.map(Role::scopes).unwrap_or_default(),
            user_id: Some(user.id),
            name: user.username,
            org,
            role,
            operator: user.operator,
            via: Via::Session {
                session_id: claims.sid,
            },
        })
    }

    async fn by_api_key(&self, key: &str, wanted: Option<&str>) -> Result<Principal, AuthError> {
        const INVALID: AuthError = AuthError::Unauthenticated("the API key is invalid or revoked");
        if !key.starts_with(API_KEY_PREFIX) {
            return Err(INVALID);
        }
        let record = self
            .store
            .api_key_by_hash(&secrets::token_hash(key))
            .await?
            .ok_or(INVALID)?;
        if record.expires_ms.is_some_and(|at| at <= crate::now_ms()) {
            return Err(AuthError::Unauthenticated("the API key has expired"));
        }
        let owner = self.active_user(&record.owner_id).await?;
        let org = record.org().to_owned();
        if let Some(wanted) = wanted
            && self.find_org(wanted).await? != org
        {
            return Err(AuthError::NoOrganization(wanted.into()));
        }
        // A key acts in its organization only while its owner belongs there.
        let role = owner.role_in(&org).ok_or(AuthError::Unauthenticated(
            "the owner of this API key is no longer a member of its organization",
        ))?;
        Ok(Principal {
            scopes: record
                .scopes
                .iter()
                .copied()
                .collect::<Scopes>()
                .intersect(role.scopes()),
            user_id: Some(owner.id),
            name: format!("key:{}", record.name),
            org,
            role: Some(role),
            // A key acts inside its organization, never above it.
            operator: false,
            via: Via::ApiKey { key_id: record.id },
        })
    }

    async fn active_user(&self, id: &str) -> Result<UserRecord, AuthError> {
        self.store
            .user(id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Unauthenticated(
                "the user of this credential is disabled or deleted",
            ))
    }

    /// The user whose name and password these are. The Argon2id check
    /// runs on a blocking thread; an unknown name is checked against a
    /// dummy hash, so it takes as long as a known one.
    ///
    /// # Errors
    ///
    /// The same [`AuthError::Unauthenticated`] whether the user is unknown,
    /// disabled, or the password is wrong.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<UserRecord, AuthError> {
        const WRONG: AuthError = AuthError::Unauthenticated("wrong username or password");
        let user = self.store.user_by_name(username).await?;
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let password = password.to_owned();
        let matches =
            tokio::task::spawn_blocking(move || secrets::verify_password(&password, &hash))
                .await
                .map_err(|e| AuthError::Store(StoreError::Backend(e.to_string())))?;
        match user {
            Some(user) if matches && !user.disabled => Ok(user),
            _ => Err(WRONG),
        }
    }

    /// A hash no password matches, made once.
    async fn dummy_hash(&self) -> Result<String, AuthError> {
        if let Some(hash) = self.dummy_hash.get() {
            return Ok(hash.clone());
        }
        let hash = hash_off_thread("not anyone's password".into()).await?;
        Ok(self.dummy_hash.get_or_init(|| hash).clone())
    }

    /// Starts a login session for `user`.
    ///
    /// # Errors
    ///
    /// The store or the random source failed.
    pub async fn start_session(&self, user: &UserRecord) -> Result<TokenPair, AuthError> {
        let now = crate::now_ms();
        let session = SessionRecord {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            created_ms: now,
            expires_ms: now.saturating_add(self.refresh_ttl_secs.saturating_mul(1000)),
            revoked: false,
        };
        self.store.put_session(&session).await?;
        self.issue(user, &session).await
    }

    async fn issue(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
    ) -> Result<TokenPair, AuthError> {
        let iat = now_secs();
        let home_role = user.memberships.first().map_or(Role::Viewer, |m| m.role);
        let claims = jwt::Claims {
            sub: user.id.clone(),
            // Of the user's first organization, for clients; requests are
            // checked against their role where they act.
            role: home_role,
            scopes: home_role.scopes().to_vec(),
            jti: uuid::Uuid::now_v7().to_string(),
            iat,
            exp: iat.saturating_add(self.access_ttl_secs),
            iss: jwt::ISSUER.into(),
            aud: jwt::AUDIENCE.into(),
            sid: session.id.clone(),
        };
        let access_token = self
            .signer
            .sign(&claims)
            .map_err(|e| AuthError::Sign(e.to_string()))?;
        let refresh_token = format!("{REFRESH_PREFIX}{}", secrets::random_base62(43)?);
        self.store
            .put_refresh_token(
                &secrets::token_hash(&refresh_token),
                &RefreshRecord {
                    session_id: session.id.clone(),
                    user_id: user.id.clone(),
                    expires_ms: session.expires_ms,
                    used: false,
                },
            )
            .await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.access_ttl_secs,
        })
    }

    /// Exchanges a refresh token for a new pair. The old one is used up; a
    /// used one shown again revokes its whole session.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthenticated`] for an unknown, expired or revoked
    /// token, [`AuthError::RefreshReuse`] for a used one.
    pub async fn refresh(&self, refresh_token: &str) -> Result<(TokenPair, UserRecord), AuthError> {
        const INVALID: AuthError =
            AuthError::Unauthenticated("the refresh token is invalid, expired or revoked");
        let token = match self
            .store
            .use_refresh_token(&secrets::token_hash(refresh_token))
            .await?
        {
            RefreshUse::Unknown => return Err(INVALID),
            RefreshUse::Reused(token) => {
                self.store.revoke_session(&token.session_id).await?;
                return Err(AuthError::RefreshReuse {
                    user_id: token.user_id,
                });
            }
            RefreshUse::Fresh(token) => token,
        };
        let now = crate::now_ms();
        if token.expires_ms <= now {
            return Err(INVALID);
        }
        let user = self
            .active_user(&token.user_id)
            .await
            .map_err(|_| INVALID)?;
        let session = self
            .store
            .extend_session(
                &token.session_id,
                now.saturating_add(self.refresh_ttl_secs.saturating_mul(1000)),
            )
            .await?
            .ok_or(INVALID)?;
        Ok((self.issue(&user, &session).await?, user))
    }

    /// Ends a caller's login session: its refresh tokens and every access
    /// token issued in it stop working at once. `false` if the caller did
    /// not come with a session (an API key).
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn logout(&self, principal: &Principal) -> Result<bool, AuthError> {
        match &principal.via {
            Via::Session { session_id } => {
                self.store.revoke_session(session_id).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use crate::store::auth::ApiKeyRecord;

    /// An empty store in a temporary data dir, and a configuration naming
    /// the first admin's password.
    fn empty_store() -> (Arc<dyn Store>, Config, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&dir.path().join("db"), 8 << 20).unwrap());
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.auth.admin_password = Some(crate::config::Secret("first admin".into()));
        (store, config, dir)
    }

    async fn auth() -> (Auth, Arc<dyn Store>, tempfile::TempDir) {
        let (store, config, dir) = empty_store();
        let auth = Auth::open(store.clone(), &config).await.unwrap();
        auth.create_first_admin("first admin").await.unwrap();
        (auth, store, dir)
    }

    #[tokio::test]
    async fn logins_wait_for_the_first_admin_of_a_new_store() {
        let (store, config, _dir) = empty_store();
        let auth = Arc::new(Auth::open(store.clone(), &config).await.unwrap());
        assert!(auth.first_admin_pending());
        let waiting = tokio::spawn({
            let auth = auth.clone();
            async move { auth.first_admin_made().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no admin yet");
        auth.create_first_admin("first admin").await.unwrap();
        waiting.await.unwrap().unwrap();
        auth.check_password("admin", "first admin").await.unwrap();
        // Reopened, the store has its admin: nothing to wait for.
        let reopened = Auth::open(store, &config).await.unwrap();
        assert!(!reopened.first_admin_pending());
        reopened.first_admin_made().await.unwrap();
    }

    #[tokio::test]
    async fn the_first_admin_made_in_the_background_can_log_in() {
        let (store, config, _dir) = empty_store();
        let auth = Arc::new(Auth::open(store.clone(), &config).await.unwrap());
        auth.make_first_admin_in_background(&config).unwrap();
        auth.first_admin_made().await.unwrap();
        assert_eq!(store.users().await.unwrap().len(), 1);
        auth.check_password("admin", "first admin").await.unwrap();
    }

    #[test]
    fn the_first_admin_password_is_made_once_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        let made = first_admin_password(&config).unwrap();
        assert_eq!(made.len(), 24);
        assert_eq!(first_admin_password(&config).unwrap(), made);
        config.auth.admin_password = Some(crate::config::Secret("configured one".into()));
        assert_eq!(first_admin_password(&config).unwrap(), "configured one");
        // A directory where the file should be is an error, not a new password.
        config.auth.admin_password = None;
        config.server.data_dir = dir.path().join("elsewhere");
        std::fs::create_dir_all(config.server.data_dir.join("initial-admin-password")).unwrap();
        first_admin_password(&config).unwrap_err();
    }

    fn key_headers(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn expired_keys_and_keys_of_disabled_owners_are_refused() {
        let (auth, store, _dir) = auth().await;
        let admin = store.user_by_name("admin").await.unwrap().unwrap();
        let now = crate::now_ms();
        for (key, expires_ms) in [("kiln_live", now + 60_000), ("kiln_expired", now - 1)] {
            store
                .create_api_key(&ApiKeyRecord {
                    id: key.into(),
                    org: None,
                    name: key.into(),
                    owner_id: admin.id.clone(),
                    prefix: key.into(),
                    hash: secrets::token_hash(key),
                    scopes: vec![Scope::ReadScripts],
                    created_at: crate::now(),
                    expires_at: None,
                    expires_ms: Some(expires_ms),
                })
                .await
                .unwrap();
        }
        let live = auth.authenticate(&key_headers("kiln_live")).await.unwrap();
        assert_eq!(live.scopes, [Scope::ReadScripts].into_iter().collect());
        assert!(matches!(
            auth.authenticate(&key_headers("kiln_expired")).await,
            Err(AuthError::Unauthenticated(_))
        ));
        store
            .update_user(&admin.id, &|u| {
                Ok(UserRecord {
                    disabled: true,
                    ..u.clone()
                })
            })
            .await
            .unwrap();
        assert!(auth.authenticate(&key_headers("kiln_live")).await.is_err());
    }

    #[tokio::test]
    async fn concurrent_refreshes_of_one_token_are_reuse_and_end_the_session() {
        let (auth, _store, _dir) = auth().await;
        let admin = auth.check_password("admin", "first admin").await.unwrap();
        assert!(auth.check_password("admin", "wrong").await.is_err());
        assert!(auth.check_password("nobody", "first admin").await.is_err());
        let pair = auth.start_session(&admin).await.unwrap();
        let auth = Arc::new(auth);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (auth, token) = (auth.clone(), pair.refresh_token.clone());
                tokio::spawn(async move { auth.refresh(&token).await.is_ok() })
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.unwrap());
        }
        // One use is fresh and every other is reuse, which revokes the
        // session, so even the one fresh use may lose the race to a revocation.
        assert!(results.iter().filter(|ok| **ok).count() <= 1, "{results:?}");
        assert!(auth.refresh(&pair.refresh_token).await.is_err());
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", pair.access_token).parse().unwrap(),
        );
        assert!(auth.authenticate(&headers).await.is_err());
    }
}

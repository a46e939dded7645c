//! `/v1/users` (an organization's admin: its members) and `/v1/users/me`
//! (anyone). Passwords are hashed with Argon2id off the async threads; no
//! response ever carries a hash.
//!
//! Usernames are unique on the node; a user belongs to organizations with
//! a role in each. An admin sees and manages their own organization's
//! members only, and changes a member's password, codes or disabled flag
//! only when the member belongs to no other organization and is no node
//! operator (else that is a node operator's to do). Deleting a member who
//! belongs elsewhere too removes them from this organization only.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::audit::{self, Entry};
use super::error::ErrorEnvelope;
use super::etag;
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::{MIN_PASSWORD_CHARS, Principal, Role, secrets};
use crate::store::StoreError;
use crate::store::auth::UserRecord;
use crate::store::orgs::{InOrg as _, Membership};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(me, change_own_password))
        .routes(routes!(read, update, delete))
}

/// Longer passwords are refused: Argon2 over megabytes would be a cheap
/// way to burn the server's CPU.
pub(super) const MAX_PASSWORD_CHARS: usize = 1024;
/// Usernames appear in URLs, tokens and the audit log.
pub(super) const MAX_USERNAME: usize = 64;

/// Who a token belongs to, as login returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    id: String,
    username: String,
    /// The role in the user's first organization (where requests without
    /// `X-Kiln-Organization` act).
    role: Role,
}

impl UserSummary {
    pub fn of(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.memberships.first().map_or(Role::Viewer, |m| m.role),
        }
    }
}

/// A user as one organization sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    id: String,
    username: String,
    /// Their role in the organization the request acts in (none: a node
    /// operator who is no member of it).
    role: Option<Role>,
    /// A node operator, above organizations.
    operator: bool,
    disabled: bool,
    created_at: String,
    updated_at: String,
    last_login_at: Option<String>,
    /// Whether logins ask for a one-time code.
    totp: bool,
}

impl User {
    /// `user` as organization `org` sees them.
    pub(super) fn in_org(user: UserRecord, org: &str) -> Self {
        Self {
            role: user.role_in(org),
            operator: user.operator,
            id: user.id,
            username: user.username,
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
            last_login_at: user.last_login_at,
            totp: user.totp.is_some_and(|t| t.confirmed),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1–64 of `[A-Za-z0-9_.-]`.
    #[schema(pattern = "^[a-zA-Z0-9_.-]{1,64}$")]
    username: String,
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Their role in the organization the request acts in.
    role: Option<Role>,
    /// Make them a node operator, or no longer one (node operators only).
    operator: Option<bool>,
    /// A new password (8 to 1024 characters); the user's sessions end and
    /// their API keys are revoked.
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
    /// `false` turns the user's one-time codes off (a lost phone); only
    /// the user turns them on.
    totp: Option<bool>,
    /// A disabled user cannot log in, their sessions end and their API keys
    /// are revoked (enabling them again brings no key back).
    disabled: Option<bool>,
}

/// A user's change of their own password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeOwnPassword {
    /// The password in use now.
    current_password: String,
    /// The new one (8 to 1024 characters, not the current one).
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Also revoke every API key of the user (default false: keys are
    /// listed and revoked at `/v1/api-keys`).
    #[serde(default)]
    revoke_keys: bool,
}

fn check_username(name: &str) -> Result<(), ApiError> {
    super::check_identifier("username", name, MAX_USERNAME)
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// A user by id, else by username, of any organization.
pub(super) async fn find_anywhere(
    state: &AppState,
    id_or_name: &str,
) -> Result<UserRecord, ApiError> {
    let user = match state.store.user(id_or_name).await? {
        Some(user) => Some(user),
        None => state.store.user_by_name(id_or_name).await?,
    };
    user.ok_or_else(|| ApiError::NotFound(format!("no user {id_or_name:?}")))
}

/// A member of organization `org` by id, else by username: anyone else is
/// no user at all there.
pub(super) async fn find(
    state: &AppState,
    org: &str,
    id_or_name: &str,
) -> Result<UserRecord, ApiError> {
    let user = find_anywhere(state, id_or_name).await?;
    if user.role_in(org).is_some() {
        Ok(user)
    } else {
        Err(ApiError::NotFound(format!("no user {id_or_name:?}")))
    }
}

/// Refuses a change of user `id` (to `after`, or its removal) that would
/// leave organization `org` with no enabled admin, or the node with no
/// enabled operator.
pub(super) async fn keep_admins(
    state: &AppState,
    org: &str,
    id: &str,
    after: Option<&UserRecord>,
) -> Result<(), ApiError> {
    let admin = |u: &UserRecord| !u.disabled && u.role_in(org) == Some(Role::Admin);
    let operator = |u: &UserRecord| !u.disabled && u.operator;
    let others: Vec<UserRecord> = state
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| u.id != id)
        .collect();
    let before = state.store.user(id).await?;
    let was = |test: &dyn Fn(&UserRecord) -> bool| before.as_ref().is_some_and(test);
    let stays = |test: &dyn Fn(&UserRecord) -> bool| after.is_some_and(test);
    if was(&admin) && !stays(&admin) && !others.iter().any(admin) {
        return Err(ApiError::Conflict(
            "this would leave the organization no enabled admin; make another admin first".into(),
        ));
    }
    if was(&operator) && !stays(&operator) && !others.iter().any(operator) {
        return Err(ApiError::Conflict(
            "this would leave the node no enabled operator; make another operator first".into(),
        ));
    }
    Ok(())
}

/// Whether the caller may change `user`'s account itself (password, codes,
/// disabled, deletion): a node operator may; an organization's admin only
/// for a member of theirs alone who is no operator.
fn may_manage_account(principal: &Principal, user: &UserRecord) -> bool {
    principal.operator
        || (!user.operator && user.memberships.iter().all(|m| m.org == principal.org))
}

/// Create a user (admin).
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", tag = "auth",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 409, description = "The username is taken", body = ErrorEnvelope),
    ))]
async fn create(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    check_username(&body.username)?;
    check_password(&body.password)?;
    // With authentication off anyone may get here while a new data dir's
    // first admin is still being made; a user stored first would prevent it.
    state
        .auth
        .first_admin_made()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = crate::now();
    let user = UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        username: body.username,
        memberships: vec![Membership {
            org: principal.org.clone(),
            role: body.role,
        }],
        operator: false,
        password_hash: hash(body.password).await?,
        disabled: false,
        created_at: now.clone(),
        updated_at: now,
        last_login_at: None,
        totp: None,
    };
    state.store.create_user(&user).await.map_err(|e| match e {
        StoreError::NameTaken(name) => ApiError::Conflict(format!("a user named {name:?} exists")),
        other => other.into(),
    })?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("user.created", true)
            .actor(&principal)
            .ip(&ip)
            .target(&user.id)
            .detail(format!("{} as {}", user.username, body.role.as_str())),
    );
    let location = format!("/v1/users/{}", user.id);
    let mut response = etag::json(&HeaderMap::new(), &User::in_org(user, &principal.org))?;
    *response.status_mut() = StatusCode::CREATED;
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// List the organization's members (admin), oldest first.
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "auth",
    params(("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of users", body = Listing<User>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<User>>, ApiError> {
    let page = Page::new(query)?;
    let mut users = state.store.users().await?;
    users.retain(|u| u.role_in(&principal.org).is_some());
    let total = users.len();
    let data = users
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(|u| User::in_org(u, &principal.org))
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// The caller's own user (for an API key, its owner), with the
/// organizations they belong to.
#[utoipa::path(get, path = "/v1/users/me", operation_id = "getMe", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid credential", body = ErrorEnvelope),
        (status = 404, description = "Authentication is off: there is no user", body = ErrorEnvelope),
    ))]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let id = principal
        .user_id()
        .ok_or_else(|| ApiError::NotFound("authentication is off; there is no user".into()))?;
    let user = find_anywhere(&state, &id).await?;
    let mut organizations = Vec::with_capacity(user.memberships.len());
    for membership in &user.memberships {
        // A membership of an organization deleted meanwhile is left out.
        if let Some(org) = state.store.org(&membership.org).await? {
            organizations.push(MyOrganization {
                id: org.id,
                name: org.name,
                role: membership.role,
            });
        }
    }
    let me = Me {
        organization: principal.org.clone(),
        organizations,
        user: User::in_org(user, &principal.org),
    };
    etag::json(&HeaderMap::new(), &me)
}

/// The caller, as `GET /v1/users/me` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    #[serde(flatten)]
    user: User,
    /// The id of the organization this request acted in.
    organization: String,
    /// Every organization the user belongs to, the first being where a
    /// request without `X-Kiln-Organization` acts.
    organizations: Vec<MyOrganization>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyOrganization {
    id: String,
    name: String,
    role: Role,
}

/// Change the caller's own password, giving the current one. Every other
/// login session of the user ends (the caller's own goes on); with
/// `revoke_keys`, so do their API keys. Attempts are limited as logins are.
#[utoipa::path(put, path = "/v1/users/me", operation_id = "changeOwnPassword", tag = "auth",
    request_body = ChangeOwnPassword,
    responses(
        (status = 200, description = "Changed", body = User),
        (status = 400, description = "The new password is too short, too long or the current one", body = ErrorEnvelope),
        (status = 401, description = "No valid credential", body = ErrorEnvelope),
        (status = 403, description = "The current password is wrong", body = ErrorEnvelope),
        (status = 404, description = "Authentication is off: there is no user", body = ErrorEnvelope),
        (status = 429, description = "Too many attempts for this user or from this IP", body = ErrorEnvelope,
            headers(("Retry-After" = String))),
    ))]
async fn change_own_password(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<ChangeOwnPassword>,
) -> Result<Response, ApiError> {
    check_password(&body.password)?;
    if body.password == body.current_password {
        return Err(ApiError::invalid(
            "password",
            "must differ from the current password",
        ));
    }
    let user = confirm_password(
        &state,
        &principal,
        &ip,
        body.current_password,
        "user.password_changed",
    )
    .await?;
    let id = user.id;
    let password_hash = hash(body.password).await?;
    let now = crate::now();
    let updated = state
        .store
        .update_user(&id, &|current| {
            let mut user = current.clone();
            user.password_hash.clone_from(&password_hash);
            user.updated_at.clone_from(&now);
            Ok(user)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?;
    let sessions = state
        .store
        .revoke_user_sessions(&id, principal.session_id())
        .await?;
    let keys = if body.revoke_keys {
        revoke_keys(&state, &id).await?
    } else {
        0
    };
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("user.password_changed", true)
            .actor(&principal)
            .ip(&ip)
            .target(&id)
            .detail(format!(
                "{sessions} other sessions ended, {keys} keys revoked"
            )),
    );
    etag::json(&HeaderMap::new(), &User::in_org(updated, &principal.org))
}

/// The caller's own user, after checking `password` is theirs: counted as
/// a login attempt first (a stolen token must not become a way to guess the
/// password), a wrong one audited as a failed `action`.
pub(super) async fn confirm_password(
    state: &AppState,
    principal: &Principal,
    ip: &ClientIp,
    password: String,
    action: &str,
) -> Result<UserRecord, ApiError> {
    let id = principal
        .user_id()
        .ok_or_else(|| ApiError::NotFound("authentication is off; there is no user".into()))?;
    let wrong = || ApiError::PermissionDenied("the current password is wrong".into());
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(wrong());
    }
    let user = find_anywhere(state, &id).await?;
    let checked = super::auth::limited_password_check(state, ip, &user.username, password).await?;
    if let Err(e) = checked {
        if !matches!(e, crate::auth::AuthError::Unauthenticated(_)) {
            return Err(ApiError::Internal(e.to_string()));
        }
        audit::record(
            state,
            Entry::new(action, false)
                .actor(principal)
                .ip(ip)
                .target(&id)
                .detail("the current password was wrong"),
        );
        return Err(wrong());
    }
    Ok(user)
}

/// Revokes every API key of `user_id`; how many there were.
async fn revoke_keys(state: &AppState, user_id: &str) -> Result<usize, ApiError> {
    Ok(state.store.revoke_user_keys(user_id).await?)
}

/// Read a user (admin).
#[utoipa::path(get, path = "/v1/users/{id}", operation_id = "getUser", tag = "auth",
    params(("id" = String, Path, description = "The user's id or username")),
    responses(
        (status = 200, description = "The user", body = User,
            headers(("ETag" = String, description = "Strong ETag of this representation"))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 404, description = "No such user", body = ErrorEnvelope),
    ))]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = find(&state, &principal.org, &id).await?;
    etag::json(&headers, &User::in_org(user, &principal.org))
}

/// Change a user's role, password, disabled flag or one-time codes
/// (admin). A new password, disabling or enabling again ends the user's
/// login sessions and revokes their API keys.
#[utoipa::path(put, path = "/v1/users/{id}", operation_id = "updateUser", tag = "auth",
    params(("id" = String, Path, description = "The user's id or username"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "The user belongs to another organization too, or is a node operator: a node operator changes their account", body = ErrorEnvelope),
        (status = 404, description = "No such user in the organization", body = ErrorEnvelope),
        (status = 409, description = "It would leave the organization no enabled admin, or the node no operator", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
async fn update(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Response, ApiError> {
    let org = principal.org.clone();
    let seen = find(&state, &org, &id).await?;
    let id = seen.id.clone();
    if headers.contains_key(header::IF_MATCH) {
        etag::check_if_match(&headers, &etag::of_json(&User::in_org(seen.clone(), &org))?)?;
    }
    let account = body.password.is_some() || body.disabled.is_some() || body.totp.is_some();
    if account && !may_manage_account(&principal, &seen) {
        return Err(ApiError::PermissionDenied(
            "this user belongs to another organization too, or is a node operator: a node \
             operator changes their password, codes or disabled flag"
                .into(),
        ));
    }
    if body.operator.is_some() && !principal.operator {
        return Err(ApiError::PermissionDenied(
            "only a node operator makes or unmakes operators".into(),
        ));
    }
    if body.totp == Some(true) {
        return Err(ApiError::invalid(
            "totp",
            "only the user turns one-time codes on (POST /v1/users/me/totp)",
        ));
    }
    let password_hash = match body.password {
        Some(password) => {
            check_password(&password)?;
            Some(hash(password).await?)
        }
        None => None,
    };
    let now = crate::now();
    let change = |current: &UserRecord| {
        let mut user = current.clone();
        if let Some(role) = body.role {
            for membership in user.memberships.iter_mut().filter(|m| m.org == org) {
                membership.role = role;
            }
        }
        if let Some(operator) = body.operator {
            user.operator = operator;
        }
        if let Some(disabled) = body.disabled {
            user.disabled = disabled;
        }
        if let Some(hash) = &password_hash {
            user.password_hash.clone_from(hash);
        }
        if body.totp == Some(false) {
            user.totp = None;
        }
        user.updated_at.clone_from(&now);
        user
    };
    let updated = {
        let _admins = state.auth.admin_changes().await;
        keep_admins(
            &state,
            &org,
            &id,
            Some(&change(&find(&state, &org, &id).await?)),
        )
        .await?;
        state
            .store
            .update_user(&id, &|current| Ok(change(current)))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?
    };
    // A reset password or a disabled account may have been someone else's
    // hands: what they could have made with it goes too. Enabling a user
    // again revokes too, for keys kept by a disable from before keys were
    // revoked at disable.
    let reenabled = seen.disabled && body.disabled == Some(false);
    let revoked = if password_hash.is_some() || body.disabled == Some(true) || reenabled {
        state.store.revoke_user_sessions(&id, None).await?;
        revoke_keys(&state, &id).await?
    } else {
        0
    };
    state.store.flush().await?;
    let mut changed = Vec::new();
    if let Some(role) = body.role {
        changed.push(format!("role={}", role.as_str()));
    }
    if let Some(operator) = body.operator {
        changed.push(format!("operator={operator}"));
    }
    if let Some(disabled) = body.disabled {
        changed.push(format!("disabled={disabled}"));
    }
    if body.totp == Some(false) {
        changed.push("totp=false".to_owned());
    }
    if password_hash.is_some() {
        changed.push("password".to_owned());
    }
    if revoked > 0 {
        changed.push(format!("{revoked} keys revoked"));
    }
    audit::record(
        &state,
        Entry::new("user.updated", true)
            .actor(&principal)
            .ip(&ip)
            .target(&id)
            .detail(changed.join(", ")),
    );
    etag::json(&HeaderMap::new(), &User::in_org(updated, &org))
}

/// Delete a user with their API keys and sessions (admin); one who belongs
/// to another organization too, or is a node operator, is only removed from
/// this one (with their keys here).
#[utoipa::path(delete, path = "/v1/users/{id}", operation_id = "deleteUser", tag = "auth",
    params(("id" = String, Path, description = "The user's id or username"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user in the organization", body = ErrorEnvelope),
        (status = 409, description = "It would leave the organization no enabled admin, or the node no operator", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let org = principal.org.clone();
    let seen = find(&state, &org, &id).await?;
    let id = seen.id.clone();
    if headers.contains_key(header::IF_MATCH) {
        etag::check_if_match(&headers, &etag::of_json(&User::in_org(seen.clone(), &org))?)?;
    }
    let whole = may_manage_account(&principal, &seen) && seen.memberships.len() <= 1;
    if whole {
        let _admins = state.auth.admin_changes().await;
        keep_admins(&state, &org, &id, None).await?;
        state
            .store
            .delete_user(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?;
    } else {
        remove_member(&state, &org, &id).await?;
    }
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new(
            if whole {
                "user.deleted"
            } else {
                "user.removed"
            },
            true,
        )
        .actor(&principal)
        .ip(&ip)
        .target(&id),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Takes user `id` out of organization `org`, with their API keys there;
/// refused if it would leave the organization no enabled admin.
pub(super) async fn remove_member(
    state: &AppState,
    org: &str,
    id: &str,
) -> Result<usize, ApiError> {
    let _admins = state.auth.admin_changes().await;
    let mut after = find(state, org, id).await?;
    after.memberships.retain(|m| m.org != org);
    keep_admins(state, org, id, Some(&after)).await?;
    state
        .store
        .update_user(id, &|current| {
            let mut user = current.clone();
            user.memberships.retain(|m| m.org != org);
            Ok(user)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?;
    let mut revoked = 0;
    for key in state.store.api_keys().await? {
        if key.owner_id == id
            && key.org() == org
            && state.store.delete_api_key(&key.id).await?.is_some()
        {
            revoked += 1;
        }
    }
    Ok(revoked)
}

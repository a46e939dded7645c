//! `/v1/users` (admin) and `/v1/users/me` (anyone). Passwords are hashed
//! with Argon2id off the async threads; no response ever carries a hash.

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
    role: Role,
}

impl UserSummary {
    pub fn of(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.role,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    id: String,
    username: String,
    role: Role,
    disabled: bool,
    created_at: String,
    updated_at: String,
    last_login_at: Option<String>,
    /// Whether logins ask for a one-time code.
    totp: bool,
}

impl User {
    fn of(user: UserRecord) -> Self {
        Self {
            id: user.id,
            username: user.username,
            role: user.role,
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
    role: Option<Role>,
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

/// A user by id, else by username.
pub(super) fn find(state: &AppState, id_or_name: &str) -> Result<UserRecord, ApiError> {
    let user = match state.store.user(id_or_name)? {
        Some(user) => Some(user),
        None => state.store.user_by_name(id_or_name)?,
    };
    user.ok_or_else(|| ApiError::NotFound(format!("no user {id_or_name:?}")))
}

/// Refuses a change that would leave no enabled admin.
fn keep_an_admin(state: &AppState, id: &str, after: Option<&UserRecord>) -> Result<(), ApiError> {
    let still_admin = after.is_some_and(|u| u.role == Role::Admin && !u.disabled);
    if still_admin {
        return Ok(());
    }
    let others = state
        .store
        .users()?
        .into_iter()
        .any(|u| u.id != id && u.role == Role::Admin && !u.disabled);
    if others {
        Ok(())
    } else {
        Err(ApiError::Conflict(
            "this would leave no enabled admin; make another admin first".into(),
        ))
    }
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
        role: body.role,
        password_hash: hash(body.password).await?,
        disabled: false,
        created_at: now.clone(),
        updated_at: now,
        last_login_at: None,
        totp: None,
    };
    state.store.create_user(&user).map_err(|e| match e {
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
            .detail(format!("{} as {}", user.username, user.role.as_str())),
    );
    let location = format!("/v1/users/{}", user.id);
    let mut response = etag::json(&HeaderMap::new(), &User::of(user))?;
    *response.status_mut() = StatusCode::CREATED;
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// List users (admin), oldest first.
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "auth",
    params(("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of users", body = Listing<User>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<User>>, ApiError> {
    let page = Page::new(query)?;
    let users = state.store.users()?;
    let total = users.len();
    let data = users
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(User::of)
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// The caller's own user (for an API key, its owner).
#[utoipa::path(get, path = "/v1/users/me", operation_id = "getMe", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "No valid credential", body = ErrorEnvelope),
        (status = 404, description = "Authentication is off: there is no user", body = ErrorEnvelope),
    ))]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let id = principal
        .user_id()
        .ok_or_else(|| ApiError::NotFound("authentication is off; there is no user".into()))?;
    etag::json(&HeaderMap::new(), &User::of(find(&state, &id)?))
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
        })?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?;
    let sessions = state
        .store
        .revoke_user_sessions(&id, principal.session_id())?;
    let keys = if body.revoke_keys {
        revoke_keys(&state, &id)?
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
    etag::json(&HeaderMap::new(), &User::of(updated))
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
    let user = find(state, &id)?;
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
fn revoke_keys(state: &AppState, user_id: &str) -> Result<usize, ApiError> {
    Ok(state.store.revoke_user_keys(user_id)?)
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
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    etag::json(&headers, &User::of(find(&state, &id)?))
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
        (status = 404, description = "No such user", body = ErrorEnvelope),
        (status = 409, description = "It would leave no enabled admin", body = ErrorEnvelope),
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
    let seen = find(&state, &id)?;
    let id = seen.id.clone();
    if headers.contains_key(header::IF_MATCH) {
        etag::check_if_match(&headers, &etag::of_json(&User::of(seen.clone()))?)?;
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
            user.role = role;
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
        let _admins = state.auth.admin_changes();
        keep_an_admin(&state, &id, Some(&change(&find(&state, &id)?)))?;
        state
            .store
            .update_user(&id, &|current| Ok(change(current)))?
            .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?
    };
    // A reset password or a disabled account may have been someone else's
    // hands: what they could have made with it goes too. Enabling a user
    // again revokes too, for keys kept by a disable from before keys were
    // revoked at disable.
    let reenabled = seen.disabled && body.disabled == Some(false);
    let revoked = if password_hash.is_some() || body.disabled == Some(true) || reenabled {
        state.store.revoke_user_sessions(&id, None)?;
        revoke_keys(&state, &id)?
    } else {
        0
    };
    state.store.flush().await?;
    let mut changed = Vec::new();
    if body.role.is_some() {
        changed.push(format!("role={}", updated.role.as_str()));
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
    etag::json(&HeaderMap::new(), &User::of(updated))
}

/// Delete a user with their API keys and sessions (admin).
#[utoipa::path(delete, path = "/v1/users/{id}", operation_id = "deleteUser", tag = "auth",
    params(("id" = String, Path, description = "The user's id or username"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        (status = 409, description = "It would leave no enabled admin", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let seen = find(&state, &id)?;
    let id = seen.id.clone();
    if headers.contains_key(header::IF_MATCH) {
        etag::check_if_match(&headers, &etag::of_json(&User::of(seen))?)?;
    }
    {
        let _admins = state.auth.admin_changes();
        keep_an_admin(&state, &id, None)?;
        state
            .store
            .delete_user(&id)?
            .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?;
    }
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("user.deleted", true)
            .actor(&principal)
            .ip(&ip)
            .target(&id),
    );
    Ok(StatusCode::NO_CONTENT)
}

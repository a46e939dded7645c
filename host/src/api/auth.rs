//! `POST /v1/auth/login`, `/refresh` and `/logout`.

use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::audit::{self, Entry};
use super::error::ErrorEnvelope;
use super::users::{MAX_PASSWORD_CHARS, UserSummary};
use super::{ApiError, ApiJson, AppState};
use crate::auth::{AuthError, Principal, TokenPair};
use crate::store::auth::UserRecord;

/// Bodies of the auth routes: a username, a password or a refresh token.
const AUTH_BODY_BYTES: usize = 8 << 10;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .layer(axum::extract::DefaultBodyLimit::max(AUTH_BODY_BYTES))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(pattern = "^[a-zA-Z0-9_.-]{1,64}$")]
    username: String,
    #[schema(max_length = 1024)]
    password: String,
    /// For an account with one-time codes on: the app's current code, or a
    /// recovery code. Without it such a login answers 401 `OTP_REQUIRED`.
    #[schema(max_length = 64)]
    otp: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    refresh_token: String,
    #[schema(example = "bearer")]
    token_type: &'static str,
    /// Seconds the access token is valid for.
    expires_in: u64,
    user: UserSummary,
}

impl TokenResponse {
    fn new(pair: TokenPair, user: &UserRecord) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "bearer",
            expires_in: pair.expires_in,
            user: UserSummary::of(user),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    #[schema(example = "logged out")]
    status: &'static str,
}

/// A password check as a login makes it: the attempt counted per username
/// and client address first (a burst of parallel guesses gets no more
/// checks), then Argon2 off the async threads. The outer error is a refusal
/// or a failure to check; the inner one is the check's answer.
pub(super) async fn limited_password_check(
    state: &AppState,
    ip: &ClientIp,
    username: &str,
    password: String,
) -> Result<Result<UserRecord, AuthError>, ApiError> {
    if let Some(refused) = state.limits.login_attempt(username, &ip.0) {
        state.metrics.rate_limited("login");
        return Err(ApiError::RateLimited(refused));
    }
    Ok(state.auth.check_password(username, &password).await)
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Unauthenticated(message) => ApiError::Unauthenticated(message.into()),
        AuthError::RefreshReuse { .. } => ApiError::Unauthenticated(e.to_string()),
        AuthError::Store(e) => e.into(),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Log in with a username and password; returns an access token (1 h) and
/// a refresh token (30 days). Attempts are limited per username and per
/// client IP (`rate_limit.login_per_minute`), counted before the password is
/// checked.
#[utoipa::path(post, path = "/v1/auth/login", operation_id = "login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "A malformed body, or a username or password no account can have (too long, or a username outside ^[a-zA-Z0-9_.-]{1,64}$)", body = ErrorEnvelope),
        (status = 401, description = "Wrong username or password (the same answer for both); a wrong or used one-time code; `OTP_REQUIRED` when the password was right and the account wants a code", body = ErrorEnvelope),
        (status = 429, description = "Too many failed attempts for this username or from this IP, or too many wrong one-time codes for this user", body = ErrorEnvelope,
            headers(("Retry-After" = String))),
    ))]
async fn login(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    // Refused before anything is counted, checked or written: no user has
    // such a name, and the audit log keeps the name of a failed attempt.
    super::check_identifier("username", &body.username, super::users::MAX_USERNAME)?;
    if body.password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    // A new data dir makes its admin just after start-up.
    state.auth.first_admin_made().await.map_err(auth_error)?;
    let checked = limited_password_check(&state, &ip, &body.username, body.password).await?;
    let user = match checked {
        Ok(user) => user,
        Err(e) => {
            if matches!(e, AuthError::Unauthenticated(_)) {
                // Filed in the user's first organization when there is such
                // a user; a made-up name goes into the node's (default) log.
                let entry = match state.store.user_by_name(&body.username).await {
                    Ok(Some(user)) => Entry::new("login.failed", false)
                        .user(&user)
                        .actor_named(None, &body.username),
                    _ => Entry::new("login.failed", false).actor_named(None, &body.username),
                };
                audit::record(&state, entry.ip(&ip));
            }
            return Err(auth_error(e));
        }
    };
    // Asked only after the password was right, so a guesser of passwords
    // learns nothing of who has codes on.
    super::totp::second_factor(&state, &ip, &user, body.otp.as_deref(), "login.failed").await?;
    let now = crate::now();
    let user = state
        .store
        .update_user(&user.id, &|u| {
            Ok(UserRecord {
                last_login_at: Some(now.clone()),
                ..u.clone()
            })
        })
        .await?
        .unwrap_or(user);
    let pair = state.auth.start_session(&user).await.map_err(auth_error)?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("login.succeeded", true).user(&user).ip(&ip),
    );
    Ok(axum::Json(TokenResponse::new(pair, &user)))
}

/// Exchange a refresh token for a new pair. The token is used up; showing
/// a used one again revokes its whole login session.
#[utoipa::path(post, path = "/v1/auth/refresh", operation_id = "refreshToken", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokenResponse),
        (status = 400, description = "A malformed body", body = ErrorEnvelope),
        (status = 401, description = "Unknown, expired, revoked or already used", body = ErrorEnvelope),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    match state.auth.refresh(&body.refresh_token).await {
        Ok((pair, user)) => {
            state.store.flush().await?;
            Ok(axum::Json(TokenResponse::new(pair, &user)))
        }
        Err(AuthError::RefreshReuse { user_id }) => {
            state.store.flush().await?;
            let entry = match state.store.user(&user_id).await {
                Ok(Some(user)) => Entry::new("refresh.reused", false).user(&user),
                _ => Entry::new("refresh.reused", false).actor_named(Some(&user_id), &user_id),
            };
            audit::record(
                &state,
                entry
                    .ip(&ip)
                    .detail("a used refresh token was presented; its session is revoked"),
            );
            Err(auth_error(AuthError::RefreshReuse { user_id }))
        }
        Err(e) => Err(auth_error(e)),
    }
}

/// End the caller's login session: its refresh tokens and the access
/// tokens issued in it stop working at once.
#[utoipa::path(post, path = "/v1/auth/logout", operation_id = "logout", tag = "auth",
    responses(
        (status = 200, description = "Logged out", body = LoggedOut),
        (status = 400, description = "The caller used an API key, which has no session (revoke the key instead)", body = ErrorEnvelope),
        (status = 401, description = "No valid credential", body = ErrorEnvelope),
    ))]
async fn logout(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
) -> Result<axum::Json<LoggedOut>, ApiError> {
    if !state.auth.logout(&principal).await.map_err(auth_error)? {
        return Err(ApiError::Validation(
            "only a login session can log out; revoke an API key with DELETE /v1/api-keys/{id}"
                .into(),
            Vec::new(),
        ));
    }
    state.store.flush().await?;
    audit::record(&state, Entry::new("logout", true).actor(&principal).ip(&ip));
    Ok(axum::Json(LoggedOut {
        status: "logged out",
    }))
}

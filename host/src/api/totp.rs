//! `/v1/users/me/totp`: a user turns one-time codes on (a secret for their
//! app, then a code from it, which gives them recovery codes) and off; and
//! the login's second step, [`second_factor`]. The secret is sealed by the
//! vault; recovery codes are kept as hashes and shown once.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::audit::{self, Entry};
use super::error::ErrorEnvelope;
use super::users::confirm_password;
use super::{ApiError, ApiJson, AppState};
use crate::auth::{Principal, totp};
use crate::ratelimit::Standing;
use crate::store::StoreError;
use crate::store::auth::{TotpRecord, UserRecord};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(begin, remove))
        .routes(routes!(confirm))
}

/// The vault slot of a user's secret.
fn slot(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// The most a code field may hold (a recovery code typed with spaces).
const MAX_CODE_CHARS: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginTotp {
    current_password: String,
}

/// What the user's authenticator app needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetup {
    /// The shared secret, base32 (to type into the app).
    secret: String,
    /// The same as an `otpauth://` URI (for a QR code).
    otpauth_uri: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotp {
    /// A code the app shows now.
    #[schema(example = "123456")]
    code: String,
}

/// Shown once: each works one time, in place of a code.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveTotp {
    current_password: String,
    /// A code from the app, or a recovery code.
    otp: String,
}

/// Start setting up one-time codes: a new secret for the caller's app.
/// Logins do not ask for codes until one confirms it; starting again
/// replaces an unconfirmed secret. `Idempotency-Key` is ignored here: the
/// response holds the secret.
#[utoipa::path(post, path = "/v1/users/me/totp", operation_id = "beginTotp", tag = "auth",
    request_body = BeginTotp,
    responses(
        (status = 200, description = "The secret, for the app", body = TotpSetup),
        (status = 403, description = "The current password is wrong", body = ErrorEnvelope),
        (status = 404, description = "Authentication is off: there is no user", body = ErrorEnvelope),
        (status = 409, description = "One-time codes are on already", body = ErrorEnvelope),
        (status = 429, description = "Too many password attempts", body = ErrorEnvelope, headers(("Retry-After" = String))),
    ))]
async fn begin(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<BeginTotp>,
) -> Result<Response, ApiError> {
    let user = confirm_password(
        &state,
        &principal,
        &ip,
        body.current_password,
        "user.totp_started",
    )
    .await?;
    let secret = totp::new_secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let sealed = state.vault.seal(&slot(&user.id), &secret);
    state
        .store
        .update_user(&user.id, &|current| {
            if current.totp.as_ref().is_some_and(|t| t.confirmed) {
                return Err(StoreError::Refused("on already".into()));
            }
            let mut next = current.clone();
            next.totp = Some(TotpRecord {
                secret: sealed.clone(),
                confirmed: false,
                last_step: 0,
                recovery: Vec::new(),
                failures: 0,
                locked_until_ms: 0,
                lockouts: 0,
            });
            Ok(next)
        })
        .await
        .map_err(|e| match e {
            StoreError::Refused(_) => ApiError::Conflict(
                "one-time codes are on already; turn them off first to change the app".into(),
            ),
            other => other.into(),
        })?;
    state.store.flush().await?;
    let setup = TotpSetup {
        otpauth_uri: totp::uri(&secret, &user.username),
        secret,
    };
    Ok(axum::Json(setup).into_response())
}

/// Turn one-time codes on with a code from the app; answers the recovery
/// codes, once (`Idempotency-Key` is ignored here). The user's other login
/// sessions end, as they were made without a code; five wrong codes drop
/// the setup.
#[utoipa::path(post, path = "/v1/users/me/totp/confirm", operation_id = "confirmTotp", tag = "auth",
    request_body = ConfirmTotp,
    responses(
        (status = 200, description = "On; the recovery codes", body = RecoveryCodes),
        (status = 400, description = "The code is not the app's current one", body = ErrorEnvelope),
        (status = 404, description = "Authentication is off: there is no user", body = ErrorEnvelope),
        (status = 409, description = "No setup was started, or codes are on already", body = ErrorEnvelope),
    ))]
async fn confirm(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<ConfirmTotp>,
) -> Result<axum::Json<RecoveryCodes>, ApiError> {
    let id = principal
        .user_id()
        .ok_or_else(|| ApiError::NotFound("authentication is off; there is no user".into()))?;
    let user = state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id:?}")))?;
    let pending = user.totp.filter(|t| !t.confirmed).ok_or_else(|| {
        ApiError::Conflict("no setup to confirm: start one at POST /v1/users/me/totp".into())
    })?;
    let secret = state
        .vault
        .open_value(&slot(&id), &pending.secret)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(step) = time_step(&secret, &body.code)? else {
        // Counted on the setup: past the bound it is dropped, so a session
        // that is not the user's cannot guess its way into turning codes on.
        let dropped = Noted::new(false);
        state
            .store
            .update_user(&id, &|current| {
                dropped.set(false);
                let mut next = current.clone();
                if let Some(t) = next.totp.as_mut().filter(|t| !t.confirmed) {
                    t.failures += 1;
                    if t.failures >= totp::MAX_FAILURES {
                        next.totp = None;
                        dropped.set(true);
                    }
                }
                Ok(next)
            })
            .await?;
        state.store.flush().await?;
        let message = if dropped.get() {
            "not the app's current code; after too many wrong ones the setup is dropped: start again"
        } else {
            "not the app's current code; check the phone's clock"
        };
        return Err(ApiError::invalid("code", message));
    };
    let codes = totp::new_recovery_codes().map_err(|e| ApiError::Internal(e.to_string()))?;
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| recovery_hash(&state, &id, c))
        .collect();
    state
        .store
        .update_user(&id, &|current| {
            let mut next = current.clone();
            match next.totp.as_mut() {
                // The same setup the code was checked against.
                Some(t) if !t.confirmed && t.secret == pending.secret => {
                    t.confirmed = true;
                    t.last_step = step;
                    t.failures = 0;
                    t.recovery.clone_from(&hashes);
                }
                _ => return Err(StoreError::Refused(String::new())),
            }
            Ok(next)
        })
        .await
        .map_err(|e| match e {
            StoreError::Refused(_) => {
                ApiError::Conflict("the setup changed meanwhile: start again".into())
            }
            other => other.into(),
        })?;
    // Sessions from before codes were on would not have needed one: they
    // end, the caller's own goes on.
    // Codes are on whatever happens here: a failure is logged, and the
    // recovery codes still go to the caller, who sees them only now.
    if let Err(e) = state
        .store
        .revoke_user_sessions(&id, principal.session_id())
        .await
    {
        tracing::error!(error = %e, user = %id, "cannot end the sessions made without a code");
    }
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("user.totp_enabled", true)
            .actor(&principal)
            .ip(&ip)
            .target(&id),
    );
    Ok(axum::Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Turn one-time codes off, with the password and a code (or a recovery
/// code). An admin can also turn them off for a user who lost both
/// (`PUT /v1/users/{id}` with `"totp": false`).
#[utoipa::path(delete, path = "/v1/users/me/totp", operation_id = "removeTotp", tag = "auth",
    request_body = RemoveTotp,
    responses(
        (status = 204, description = "Off"),
        (status = 403, description = "The current password or the code is wrong", body = ErrorEnvelope),
        (status = 404, description = "Authentication is off: there is no user", body = ErrorEnvelope),
        (status = 409, description = "One-time codes are not on", body = ErrorEnvelope),
        (status = 429, description = "Too many attempts", body = ErrorEnvelope, headers(("Retry-After" = String))),
    ))]
async fn remove(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<RemoveTotp>,
) -> Result<StatusCode, ApiError> {
    let user = confirm_password(
        &state,
        &principal,
        &ip,
        body.current_password,
        "user.totp_disabled",
    )
    .await?;
    if !user.totp.as_ref().is_some_and(|t| t.confirmed) {
        return Err(ApiError::Conflict("one-time codes are not on".into()));
    }
    // The caller is signed in already: a wrong code is a refusal, not a
    // missing credential (a client would renew its token on a 401).
    second_factor(&state, &ip, &user, Some(&body.otp), "user.totp_disabled")
        .await
        .map_err(|e| match e {
            ApiError::Unauthenticated(_) => ApiError::PermissionDenied("the code is wrong".into()),
            other => other,
        })?;
    state
        .store
        .update_user(&user.id, &|current| {
            Ok(UserRecord {
                totp: None,
                ..current.clone()
            })
        })
        .await?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("user.totp_disabled", true)
            .actor(&principal)
            .ip(&ip)
            .target(&user.id),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The step `code` is the app's code for, now; none for a wrong one or
/// one too long to be any.
fn time_step(secret: &str, code: &str) -> Result<Option<u64>, ApiError> {
    if code.chars().count() > MAX_CODE_CHARS {
        return Ok(None);
    }
    totp::matching_step(secret, code, crate::now_ms() / 1000)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// What a user's recovery code is kept as.
fn recovery_hash(state: &AppState, user_id: &str, code: &str) -> String {
    state.vault.keyed_hash(
        &format!("recovery:{user_id}"),
        &totp::normal_recovery_code(code),
    )
}

/// What a presented code turned out to be.
#[derive(Debug, Clone)]
enum Presented {
    Step(u64),
    Recovery(String),
    Wrong,
}

/// The second step of a login for a user with one-time codes on: `code`
/// must be a time code for a later step than the last one taken, or an
/// unused recovery code. Taken in the store's swap of the user, so a code
/// is good once even for two logins at once; [`totp::MAX_FAILURES`] wrong
/// ones in a row pause the user's logins, longer each time. A code used
/// already is refused without counting (a second device a moment late).
/// `action` names a failure in the audit log.
pub(super) async fn second_factor(
    state: &AppState,
    ip: &ClientIp,
    user: &UserRecord,
    code: Option<&str>,
    action: &str,
) -> Result<(), ApiError> {
    let Some(record) = user.totp.as_ref().filter(|t| t.confirmed) else {
        return Ok(());
    };
    let Some(code) = code else {
        return Err(ApiError::OtpRequired);
    };
    let now_ms = crate::now_ms();
    if let Some(left) = totp::locked_for(record, now_ms) {
        return Err(paused(left, record.lockouts));
    }
    let presented = if code.chars().count() > MAX_CODE_CHARS {
        Presented::Wrong
    } else if totp::is_time_code(code) {
        let secret = state
            .vault
            .open_value(&slot(&user.id), &record.secret)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        time_step(&secret, code)?.map_or(Presented::Wrong, Presented::Step)
    } else {
        Presented::Recovery(recovery_hash(state, &user.id, code))
    };
    let verdict = Noted::new(Verdict::Wrong);
    let left = Noted::new(0);
    let lockouts = Noted::new(0);
    let locked_until = Noted::new(0);
    let updated = state
        .store
        .update_user(&user.id, &|current| {
            let mut next = current.clone();
            let Some(t) = next.totp.as_mut().filter(|t| t.confirmed) else {
                // Turned off meanwhile: nothing to take.
                verdict.set(Verdict::Wrong);
                return Ok(next);
            };
            let paused_before = t.locked_until_ms > now_ms;
            let outcome = if paused_before {
                Verdict::Paused
            } else {
                match &presented {
                    Presented::Step(step) if *step > t.last_step => {
                        t.last_step = *step;
                        Verdict::Right
                    }
                    Presented::Step(_) => Verdict::Used,
                    Presented::Recovery(hash) if t.recovery.contains(hash) => {
                        t.recovery.retain(|h| h != hash);
                        Verdict::Right
                    }
                    Presented::Recovery(_) | Presented::Wrong => Verdict::Wrong,
                }
            };
            match outcome {
                Verdict::Right => {
                    t.failures = 0;
                    t.lockouts = 0;
                }
                Verdict::Wrong => {
                    t.failures += 1;
                    if t.failures >= totp::MAX_FAILURES {
                        t.failures = 0;
                        t.lockouts = t.lockouts.saturating_add(1);
                        t.locked_until_ms = now_ms + totp::pause_ms(t.lockouts);
                    }
                }
                Verdict::Used | Verdict::Paused | Verdict::PausedNow => {}
            }
            verdict.set(if outcome == Verdict::Wrong && t.locked_until_ms > now_ms {
                Verdict::PausedNow
            } else {
                outcome
            });
            left.set(t.recovery.len());
            lockouts.set(t.lockouts);
            locked_until.set(t.locked_until_ms);
            Ok(next)
        })
        .await?;
    let wrong = || ApiError::Unauthenticated("the one-time code is wrong or used already".into());
    let audit_failure = |detail: &str| {
        audit::record(
            state,
            Entry::new(action, false).user(user).ip(ip).detail(detail),
        );
    };
    match (updated, verdict.get()) {
        (None, _) => Err(wrong()),
        (Some(_), Verdict::Right) => {
            if matches!(presented, Presented::Recovery(_)) {
                audit::record(
                    state,
                    Entry::new("user.recovery_code_used", true)
                        .user(user)
                        .ip(ip)
                        .detail(format!("{} left", left.get())),
                );
            }
            Ok(())
        }
        (Some(_), Verdict::Used) => {
            audit_failure("a one-time code used already");
            Err(wrong())
        }
        (Some(_), Verdict::Wrong) => {
            audit_failure("a wrong one-time code");
            Err(wrong())
        }
        (Some(_), Verdict::PausedNow) => {
            audit_failure("a wrong one-time code; logins paused");
            Err(paused(totp::pause_ms(lockouts.get()), lockouts.get()))
        }
        // Paused by another attempt meanwhile: the code was not looked at.
        (Some(_), Verdict::Paused) => Err(paused(
            locked_until.get().saturating_sub(now_ms),
            lockouts.get(),
        )),
    }
}

/// How a presented code was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Right,
    Wrong,
    /// Right, but for a step taken already.
    Used,
    /// Logins were paused already; the code was not looked at.
    Paused,
    /// Wrong, and the pause starts with it.
    PausedNow,
}

/// 429 while a user's logins are paused (the `lockouts`-th pause).
fn paused(left_ms: u64, lockouts: u32) -> ApiError {
    let secs = left_ms.div_ceil(1000).max(1);
    ApiError::RateLimited(Standing {
        limit: totp::MAX_FAILURES,
        window_secs: totp::pause_ms(lockouts.max(1)) / 1000,
        remaining: 0,
        reset_secs: secs,
        retry_after_secs: Some(secs),
    })
}

/// What a store's change closure notes for the code after it: the closure
/// may run more than once (and must be `Sync`), the last run's value counts.
struct Noted<T>(std::sync::Mutex<T>);

impl<T: Copy> Noted<T> {
    fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    fn set(&self, value: T) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }

    fn get(&self) -> T {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

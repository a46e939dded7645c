//! Who is calling. The router's guard (`api/access.rs`) authenticates every
//! request to a protected route and leaves the [`Principal`] in the
//! request's extensions; handlers take it as an extractor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{Role, Scopes};
use crate::api::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An access token of a login session.
    Session {
        session_id: String,
    },
    ApiKey {
        key_id: String,
    },
    /// Authentication is turned off (`auth.enabled = false`).
    Open,
    /// The server itself (the scheduler).
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user, or the API key's owner.
    pub user_id: Option<String>,
    /// A name for logs and the audit log: a username, or `key:<name>`.
    pub name: String,
    pub role: Role,
    /// What this caller may do now: the credential's scopes capped by the
    /// user's current role.
    pub scopes: Scopes,
    pub via: Via,
}

impl Principal {
    /// Every caller when authentication is off.
    pub fn open() -> Self {
        Self {
            user_id: None,
            name: "anonymous".into(),
            role: Role::Admin,
            scopes: Scopes::all(),
            via: Via::Open,
        }
    }

    /// The server acting on its own (scheduled runs).
    pub fn system() -> Self {
        Self {
            user_id: None,
            name: "system".into(),
            role: Role::Admin,
            scopes: Scopes::all(),
            via: Via::System,
        }
    }

    /// The caller the guard left on a request, if any.
    pub fn of(parts: &Parts) -> Option<Self> {
        parts.extensions.get::<Self>().cloned()
    }

    /// The user id written into `created_by`.
    pub fn user_id(&self) -> Option<String> {
        self.user_id.clone()
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.allows(super::Scope::Admin)
    }

    /// The rate-limit bucket: one per user, whichever of its sessions and
    /// API keys it comes by, so more keys are not more requests.
    pub fn rate_key(&self) -> String {
        match (&self.via, &self.user_id) {
            (_, Some(user)) => format!("user:{user}"),
            (Via::System, None) => "system".into(),
            _ => "anonymous".into(),
        }
    }

    /// What per-caller state (idempotency keys) is keyed by: each API key
    /// apart from its owner's sessions.
    pub fn scope_key(&self) -> String {
        match (&self.via, &self.user_id) {
            (Via::ApiKey { key_id }, _) => format!("key:{key_id}"),
            (_, Some(user)) => format!("user:{user}"),
            (Via::System, None) => "system".into(),
            _ => "anonymous".into(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // No principal means the route is not behind the guard: refuse
        // rather than act for nobody.
        Self::of(parts)
            .ok_or_else(|| ApiError::Unauthenticated("this route needs a credential".into()))
    }
}

//! Who is calling. The router's guard (`api/access.rs`) authenticates every
//! request to a protected route and leaves the [`Principal`] in the
//! request's extensions; handlers take it as an extractor (`api/access.rs`).

use axum::http::request::Parts;

use super::{Role, Scopes};
use crate::store::orgs::DEFAULT_ORG;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user, or the API key's owner.
    pub user_id: Option<String>,
    /// A name for logs and the audit log: a username, or `key:<name>`.
    pub name: String,
    /// The organization the request acts in (`X-Kiln-Organization`, the
    /// API key's, or the user's first).
    pub org: String,
    /// The caller's role there; `None` for a node operator who is no member.
    pub role: Option<Role>,
    /// A node operator (`UserRecord::operator`).
    pub operator: bool,
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
            org: DEFAULT_ORG.into(),
            role: Some(Role::Admin),
            operator: true,
            scopes: Scopes::all(),
            via: Via::Open,
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

    /// The login session the caller came by, if it came by one.
    pub fn session_id(&self) -> Option<&str> {
        match &self.via {
            Via::Session { session_id } => Some(session_id),
            Via::ApiKey { .. } | Via::Open => None,
        }
    }

    /// A caller signed in with a password, for tests.
    #[cfg(test)]
    pub fn signed_in(user_id: &str, role: Role) -> Self {
        Self {
            user_id: Some(user_id.into()),
            name: user_id.into(),
            org: DEFAULT_ORG.into(),
            role: Some(role),
            operator: false,
            scopes: role.scopes(),
            via: Via::Session {
                session_id: "s".into(),
            },
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.allows(super::Scope::Admin)
    }

    /// The rate-limit bucket: one per user, whichever of its sessions and
    /// API keys it comes by, so more keys are not more requests.
    pub fn rate_key(&self) -> String {
        match &self.user_id {
            Some(user) => format!("user:{user}"),
            None => "anonymous".into(),
        }
    }

    /// What per-caller state (idempotency keys) is keyed by: each API key
    /// apart from its owner's sessions, and a user's requests in one
    /// organization apart from those in another.
    pub fn scope_key(&self) -> String {
        match (&self.via, &self.user_id) {
            (Via::ApiKey { key_id }, _) => format!("key:{key_id}"),
            (_, Some(user)) => format!("user:{user}@{}", self.org),
            _ => format!("anonymous@{}", self.org),
        }
    }
}

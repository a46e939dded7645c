//! Who is calling. Authentication is not built yet, so every request is the
//! anonymous principal, allowed everything. Handlers that record or scope by
//! caller already take a [`Principal`]; the auth work replaces
//! [`Principal::of`] and nothing else has to move.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
}

impl Principal {
    /// The caller of a request.
    pub fn of(_parts: &Parts) -> Self {
        Principal::Anonymous
    }

    /// The user id written into `created_by`; none for anonymous callers.
    pub fn user_id(&self) -> Option<String> {
        match self {
            Principal::Anonymous => None,
        }
    }

    /// What per-caller state (idempotency keys) is scoped by.
    pub fn scope_key(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Principal::of(parts))
    }
}

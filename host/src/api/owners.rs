//! Who may change what a user made, beyond what their role's scopes allow:
//! a schedule or a webhook is changed or deleted by its creator or an admin
//! (scripts, which can be shared, are `scripts/ownership.rs`). A schedule
//! runs on its creator's behalf and a webhook sends its creator's events, so
//! another user who could retarget them would act as that creator.

use super::access::ClientIp;
use super::audit::{self, Entry};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::StoreError;

/// Whether `principal` made the record (`created_by`) or is an admin; as the
/// store's precondition. A record nobody made (authentication was off) is
/// admins' only.
pub fn creator_or_admin(
    principal: &Principal,
    created_by: Option<&str>,
    what: &str,
) -> Result<(), StoreError> {
    let made_it = principal
        .user_id
        .as_deref()
        .is_some_and(|me| created_by == Some(me));
    if made_it || principal.is_admin() {
        return Ok(());
    }
    Err(StoreError::Forbidden(format!(
        "only the user who made this {what} and admins may change it"
    )))
}

/// Writes a refusal into the audit log as the access guard writes its own
/// (`target` is what was refused, e.g. `script:<id>`), and passes the error
/// on; any other error passes untouched.
pub fn audited(
    state: &AppState,
    principal: &Principal,
    ip: &ClientIp,
    action: &str,
    target: String,
    error: ApiError,
) -> ApiError {
    if let ApiError::PermissionDenied(message) = &error {
        audit::record(
            state,
            Entry::new("permission.denied", false)
                .actor(principal)
                .ip(ip)
                .target(target)
                .detail(format!("{action}: {message}")),
        );
    }
    error
}

/// Writes a change someone made into the audit log: `action` (e.g.
/// `schedule.updated`) on `target`, with `detail` made of names, never
/// values (a parameter or URL may hold a secret).
pub fn changed(
    state: &AppState,
    principal: &Principal,
    ip: &ClientIp,
    action: &str,
    target: String,
    detail: String,
) {
    audit::record(
        state,
        Entry::new(action, true)
            .actor(principal)
            .ip(ip)
            .target(target)
            .detail(detail),
    );
}

/// The names of the fields a change gives, for [`changed`]'s detail.
pub fn fields_given(fields: &[(&str, bool)]) -> String {
    let given: Vec<&str> = fields
        .iter()
        .filter(|(_, given)| *given)
        .map(|(name, _)| *name)
        .collect();
    if given.is_empty() {
        "nothing".to_owned()
    } else {
        given.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn the_creator_and_admins_change_what_was_made() {
        let caller = Principal::signed_in;
        let alice = caller("alice", Role::Developer);
        let bob = caller("bob", Role::Developer);
        let admin = caller("root", Role::Admin);
        assert!(creator_or_admin(&alice, Some("alice"), "schedule").is_ok());
        assert!(creator_or_admin(&admin, Some("alice"), "schedule").is_ok());
        assert!(matches!(
            creator_or_admin(&bob, Some("alice"), "webhook"),
            Err(StoreError::Forbidden(m)) if m.contains("webhook")
        ));
        assert!(creator_or_admin(&bob, None, "schedule").is_err());
        assert!(creator_or_admin(&Principal::open(), None, "schedule").is_ok());
    }
}

//! Who may change a script: its owner, its editors and admins (any role
//! that reads scripts still reads it). Who may name its owner and editors:
//! its owner and admins. A script's config values reach its runs, so only
//! those who may change it may change its content, its config or its
//! allowed hosts; otherwise any `write:scripts` user could swap the content
//! for one that prints the config.

use crate::api::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::{ScriptRecord, StoreError};

/// Editors of one script, at most.
pub const MAX_EDITORS: usize = 32;

fn is_owner(principal: &Principal, script: &ScriptRecord) -> bool {
    principal
        .user_id
        .as_deref()
        .is_some_and(|me| script.owner() == Some(me))
}

/// Whether `principal` may change `script`'s content, fields, config or
/// delete it.
pub fn may_change(principal: &Principal, script: &ScriptRecord) -> bool {
    principal.is_admin()
        || is_owner(principal, script)
        || principal
            .user_id
            .as_deref()
            .is_some_and(|me| script.editors.iter().any(|e| e == me))
}

/// Whether `principal` may name `script`'s owner and editors.
pub fn may_share(principal: &Principal, script: &ScriptRecord) -> bool {
    principal.is_admin() || is_owner(principal, script)
}

/// [`may_change`] as the store's precondition, so it holds for the record
/// that is written, not only for the one read before.
pub fn check_change(principal: &Principal, script: &ScriptRecord) -> Result<(), StoreError> {
    if may_change(principal, script) {
        return Ok(());
    }
    Err(StoreError::Forbidden(format!(
        "only the owner of script {:?}, its editors and admins may change it",
        script.name
    )))
}

/// [`may_share`] as the store's precondition.
pub fn check_share(principal: &Principal, script: &ScriptRecord) -> Result<(), StoreError> {
    if may_share(principal, script) {
        return Ok(());
    }
    Err(StoreError::Forbidden(format!(
        "only the owner of script {:?} and admins may change its owner or editors",
        script.name
    )))
}

/// [`crate::api::owners::audited`] against the script.
pub fn audited(
    state: &AppState,
    principal: &Principal,
    ip: &crate::api::access::ClientIp,
    action: &str,
    script_id: &str,
    error: ApiError,
) -> ApiError {
    let target = format!("script:{script_id}");
    crate::api::owners::audited(state, principal, ip, action, target, error)
}

/// A member of organization `org` named by id or username, as its id
/// (`field` names it in errors).
pub async fn user_id(
    state: &AppState,
    org: &str,
    field: &str,
    id_or_name: &str,
) -> Result<String, ApiError> {
    match crate::api::users::find(state, org, id_or_name).await {
        Ok(user) => Ok(user.id),
        Err(ApiError::NotFound(_)) => {
            Err(ApiError::invalid(field, format!("no user {id_or_name:?}")))
        }
        Err(other) => Err(other),
    }
}

/// Editors named by id or username, as distinct ids in the order given.
pub async fn editor_ids(
    state: &AppState,
    org: &str,
    names: &[String],
) -> Result<Vec<String>, ApiError> {
    if names.len() > MAX_EDITORS {
        return Err(ApiError::invalid(
            "editors",
            format!("at most {MAX_EDITORS} editors"),
        ));
    }
    let mut ids: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let id = user_id(state, org, "editors", name).await?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn caller(id: &str, role: Role) -> Principal {
        Principal::signed_in(id, role)
    }

    #[test]
    fn owners_editors_and_admins_change_a_script_and_only_owners_and_admins_share_it() {
        let mut script = crate::store::testing::script("s1", "report", 1);
        script.created_by = Some("alice".into());
        script.editors = vec!["bob".into()];
        let alice = caller("alice", Role::Developer);
        let bob = caller("bob", Role::Developer);
        let carol = caller("carol", Role::Developer);
        let admin = caller("root", Role::Admin);
        assert!(may_change(&alice, &script) && may_share(&alice, &script));
        assert!(may_change(&bob, &script) && !may_share(&bob, &script));
        assert!(!may_change(&carol, &script) && !may_share(&carol, &script));
        assert!(may_change(&admin, &script) && may_share(&admin, &script));
        assert!(matches!(
            check_change(&carol, &script),
            Err(StoreError::Forbidden(m)) if m.contains("report")
        ));

        // Named owner wins over the creator.
        script.owner = Some("carol".into());
        assert!(!may_share(&alice, &script) && may_share(&carol, &script));
        // An admin's key without the admin scope is its owner's hands only.
        let mut limited = caller("root", Role::Admin);
        limited.scopes = Role::Developer.scopes();
        assert!(!may_change(&limited, &script));
        // A script nobody owns (made with authentication off) is admins'.
        let orphan = crate::store::testing::script("s2", "orphan", 1);
        assert!(!may_change(&alice, &orphan) && may_change(&admin, &orphan));
        assert!(may_change(&Principal::open(), &orphan));
    }

    #[test]
    fn a_script_stored_before_owners_is_its_creators() {
        let mut script = crate::store::testing::script("s1", "old", 3);
        script.created_by = Some("alice".into());
        let mut stored = serde_json::to_value(&script).expect("encodes");
        let fields = stored.as_object_mut().expect("an object");
        // What the previous release wrote: none of the three fields.
        assert!(
            ["owner", "editors", "version_by"]
                .iter()
                .all(|f| !fields.contains_key(*f))
        );
        fields.remove("owner");
        let read: ScriptRecord = serde_json::from_value(stored).expect("decodes");
        assert_eq!(read.owner(), Some("alice"));
        assert!(read.editors.is_empty());
        let version = crate::store::VersionRecord::current(&read);
        assert_eq!(version.created_by.as_deref(), Some("alice"));
    }
}

//! The audit log: every auth decision worth a later look (logins, refresh
//! reuse, keys and users changed, permission denied), kept in the store and
//! readable by admins. Entries are built from names and ids only; nothing
//! here ever takes a password, token or key.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::error::ErrorEnvelope;
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiQuery, AppState};
use crate::auth::Principal;
use crate::store::auth::AuditRecord;
use crate::store::orgs::org_field;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// An audit record being put together.
#[derive(Debug)]
pub struct Entry(AuditRecord);

impl Entry {
    pub fn new(action: &str, success: bool) -> Self {
        Self(AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            // The actor's, once one is named; node-wide events stay here.
            org: None,
            at: crate::now(),
            action: action.to_owned(),
            outcome: if success { "success" } else { "failure" }.to_owned(),
            actor_id: None,
            actor: None,
            ip: None,
            target: None,
            detail: None,
            request_id: None,
        })
    }

    pub fn actor(mut self, principal: &Principal) -> Self {
        self.0.org = org_field(&principal.org);
        self.0.actor_id = principal.user_id();
        self.0.actor = Some(principal.name.clone());
        self
    }

    /// The user who acted, filed in their first organization's log.
    pub fn user(mut self, user: &crate::store::auth::UserRecord) -> Self {
        self.0.org = user.home_org().and_then(org_field);
        self.0.actor_id = Some(user.id.clone());
        self.0.actor = Some(user.username.clone());
        self
    }

    pub fn actor_named(mut self, id: Option<&str>, name: &str) -> Self {
        self.0.actor_id = id.map(str::to_owned);
        self.0.actor = Some(name.to_owned());
        self
    }

    /// The organization whose log it goes into.
    pub fn org(mut self, org: &str) -> Self {
        self.0.org = org_field(org);
        self
    }

    pub fn ip(mut self, ip: &ClientIp) -> Self {
        self.0.ip = Some(ip.0.clone());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.0.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }
}

/// Appends an entry. A store failure is logged, not returned: the decision
/// it records has been made either way.
pub fn record(state: &AppState, entry: Entry) {
    let record = entry.0;
    tracing::info!(action = %record.action, outcome = %record.outcome,
        actor = record.actor.as_deref().unwrap_or("-"), target = record.target.as_deref().unwrap_or("-"),
        "audit");
    if let Err(e) = state.store.append_audit(&record) {
        tracing::error!(error = %e, action = %record.action, "cannot write the audit log");
    }
}

/// The audit log of the caller's organization, newest first (admin).
#[utoipa::path(get, path = "/v1/audit", operation_id = "listAudit", tag = "auth",
    params(("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of audit records", body = Listing<AuditRecord>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
        (status = 401, description = "No valid credential", body = ErrorEnvelope),
        (status = 403, description = "Not an admin", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<AuditRecord>>, ApiError> {
    let page = Page::new(query)?;
    let (data, total) = state
        .store
        .audit_page(&principal.org, page.skip(), page.size)
        .await?;
    Ok(axum::Json(page.envelope(data, total)))
}

//! `/v1/organizations`: the node operator's view of the node's tenants
//! (create, rename, delete; who belongs with which role), and
//! `/v1/organizations/current`: the organization a request acts in, as
//! its members see it.

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
use super::pagination::{Listing, Page, PageQuery};
use super::users::{User, find_anywhere, keep_admins, remove_member};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, etag};
use crate::auth::{Principal, Role};
use crate::quotas::Quota;
use crate::store::StoreError;
use crate::store::executions::ExecutionIndex;
use crate::store::orgs::{
    DEFAULT_ORG, InOrg as _, MAX_MEMBERSHIPS, MAX_ORGS, Membership, OrgRecord, QuotaLimits, Tier,
};

/// Organization names are identifiers, as script names are (so never a `:`,
/// which `/fn/<organization>:<function>` splits on).
const MAX_NAME: usize = 64;
const MAX_DESCRIPTION: usize = 1000;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(current, update_current))
        .routes(routes!(read, update, delete))
        .routes(routes!(members))
        .routes(routes!(put_member, delete_member))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Organization {
    /// `default` for the node's first organization, else a UUIDv7.
    id: String,
    name: String,
    description: Option<String>,
    tier: Tier,
    /// Its quotas in force: the tier's, with its own over them (absent:
    /// no bound).
    quotas: QuotaLimits,
    created_at: String,
    updated_at: String,
    created_by: Option<String>,
}

impl From<OrgRecord> for Organization {
    fn from(o: OrgRecord) -> Self {
        Self {
            quotas: o.limits(),
            id: o.id,
            name: o.name,
            description: o.description,
            tier: o.tier,
            created_at: o.created_at,
            updated_at: o.updated_at,
            created_by: o.created_by,
        }
    }
}

/// The organization a request acts in, with the caller's role there and
/// what it has used of its quotas.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentOrganization {
    #[serde(flatten)]
    organization: Organization,
    /// The caller's role here (none: a node operator who is no member).
    role: Option<Role>,
    /// Requests per hour (the seed's API quota); absent: no bound.
    api_quota_limit: Option<u64>,
    /// Requests counted in this hour.
    api_quota_used: u64,
    /// When the hour's count starts again (RFC 3339).
    api_quota_resets_at: String,
    /// Every quota: its limit, what is used, and when a windowed one resets.
    usage: Vec<QuotaUse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUse {
    /// `requests_per_hour`, `executions_per_day`, `fuel_per_day`,
    /// `concurrent_executions`, `stored_bytes`, `scripts`, `schedules`,
    /// `webhooks` or `api_keys`.
    quota: &'static str,
    /// Absent: no bound.
    limit: Option<u64>,
    used: u64,
    /// For a windowed quota: when its window ends (RFC 3339).
    resets_at: Option<String>,
}

/// `org` as its members see it, with its quotas' standing.
async fn current_view(
    state: &AppState,
    org: OrgRecord,
    role: Option<Role>,
) -> Result<CurrentOrganization, ApiError> {
    let (quotas, id) = (state.quotas.clone(), org.id.clone());
    // Stored bytes read every version's record: off the async threads.
    let usage = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(quotas.standing(&id))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the quota standing failed: {e}")))??;
    let requests = usage
        .iter()
        .find(|u| u.quota == Quota::RequestsPerHour)
        .copied();
    let resets = Quota::RequestsPerHour
        .resets_at_ms(crate::now_ms())
        .unwrap_or_default();
    Ok(CurrentOrganization {
        organization: org.into(),
        role,
        api_quota_limit: requests.and_then(|u| u.limit),
        api_quota_used: requests.map_or(0, |u| u.used),
        api_quota_resets_at: crate::time_of_ms(resets),
        usage: usage
            .into_iter()
            .map(|u| QuotaUse {
                quota: u.quota.as_str(),
                limit: u.limit,
                used: u.used,
                resets_at: u.resets_at_ms.map(crate::time_of_ms),
            })
            .collect(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    /// 1–64 of `[A-Za-z0-9_.-]`, unique on the node.
    #[schema(pattern = "^[a-zA-Z0-9_.-]{1,64}$")]
    name: String,
    /// Up to 1000 characters.
    description: Option<String>,
    /// A user (id or username) to make its first admin.
    admin: Option<String>,
    /// Default `free`.
    tier: Option<Tier>,
    /// Quotas of its own over the tier's (for `custom`, all it has).
    quotas: Option<QuotaLimits>,
}

/// A change of an organization by a node operator.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrganization {
    #[schema(pattern = "^[a-zA-Z0-9_.-]{1,64}$")]
    name: Option<String>,
    /// Up to 1000 characters; an empty one removes it.
    description: Option<String>,
    tier: Option<Tier>,
    /// Replaces its own quotas (`{}`: the tier's alone).
    quotas: Option<QuotaLimits>,
}

/// A change of the organization a request acts in, by its admins. Its
/// name is a node operator's to change: it is in its functions' URLs, and
/// a name given up could be taken by another tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCurrentOrganization {
    /// Up to 1000 characters; an empty one removes it.
    description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMember {
    role: Role,
}

fn check_fields(name: Option<&str>, description: Option<&str>) -> Result<(), ApiError> {
    if let Some(name) = name {
        super::check_identifier("name", name, MAX_NAME)?;
        // The default organization's id: another named so would be found
        // in its place by a name lookup that tries ids first.
        if name == DEFAULT_ORG {
            return Err(ApiError::invalid(
                "name",
                "\"default\" is the default organization's id",
            ));
        }
    }
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(ApiError::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

async fn find(state: &AppState, id_or_name: &str) -> Result<OrgRecord, ApiError> {
    state
        .store
        .org(id_or_name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no organization {id_or_name:?}")))
}

fn name_taken(e: StoreError) -> ApiError {
    match e {
        StoreError::NameTaken(name) => {
            ApiError::Conflict(format!("an organization named {name:?} exists"))
        }
        other => other.into(),
    }
}

/// Adds `user` to `org` with `role`, or changes their role there.
async fn set_membership(
    state: &AppState,
    org: &str,
    user_id: &str,
    role: Role,
) -> Result<crate::store::auth::UserRecord, ApiError> {
    let _admins = state.auth.admin_changes().await;
    let mut after = find_anywhere(state, user_id).await?;
    let held = after.memberships.len();
    match after.memberships.iter_mut().find(|m| m.org == org) {
        Some(membership) => membership.role = role,
        None if held >= MAX_MEMBERSHIPS => {
            return Err(ApiError::Conflict(format!(
                "a user belongs to at most {MAX_MEMBERSHIPS} organizations"
            )));
        }
        None => after.memberships.push(Membership {
            org: org.to_owned(),
            role,
        }),
    }
    keep_admins(state, org, user_id, Some(&after)).await?;
    let memberships = after.memberships.clone();
    state
        .store
        .update_user(user_id, &|current| {
            let mut user = current.clone();
            user.memberships.clone_from(&memberships);
            Ok(user)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id:?}")))
}

/// Every organization on the node (node operators).
#[utoipa::path(get, path = "/v1/organizations", operation_id = "listOrganizations", tag = "auth",
    params(("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of organizations, the default first", body = Listing<Organization>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<Organization>>, ApiError> {
    let page = Page::new(query)?;
    let orgs = state.store.orgs().await?;
    let total = orgs.len();
    let data = orgs
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(Organization::from)
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// Create an organization (node operators), optionally with its first admin.
#[utoipa::path(post, path = "/v1/organizations", operation_id = "createOrganization", tag = "auth",
    request_body = CreateOrganization,
    responses(
        (status = 201, description = "Created", body = Organization, headers(("Location" = String))),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 404, description = "`admin` names no user", body = ErrorEnvelope),
        (status = 409, description = "The name is taken, or the node holds 10 000 organizations", body = ErrorEnvelope),
    ))]
async fn create(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateOrganization>,
) -> Result<Response, ApiError> {
    check_fields(Some(&body.name), body.description.as_deref())?;
    let admin = match body.admin.as_deref() {
        Some(admin) => Some(find_anywhere(&state, admin).await?),
        None => None,
    };
    if state.store.orgs().await?.len() >= MAX_ORGS {
        return Err(ApiError::Conflict(format!(
            "the node holds {MAX_ORGS} organizations, the most it keeps"
        )));
    }
    let now = crate::now();
    let org = OrgRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: body.name,
        description: body.description.filter(|d| !d.is_empty()),
        tier: body.tier.unwrap_or_default(),
        quotas: body.quotas.unwrap_or_default(),
        created_at: now.clone(),
        updated_at: now,
        created_by: principal.user_id(),
    };
    state.store.create_org(&org).await.map_err(name_taken)?;
    state.auth.orgs_changed();
    state.quotas.changed(&org.id).await?;
    if let Some(admin) = &admin {
        set_membership(&state, &org.id, &admin.id, Role::Admin).await?;
    }
    state.store.flush().await?;
    let detail = match &admin {
        Some(admin) => format!("{}, admin {}", org.name, admin.username),
        None => org.name.clone(),
    };
    audit::record(
        &state,
        Entry::new("organization.created", true)
            .actor(&principal)
            .org(&org.id)
            .ip(&ip)
            .target(format!("organization:{}", org.id))
            .detail(detail),
    );
    let location = format!("/v1/organizations/{}", org.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(Organization::from(org)),
    )
        .into_response())
}

/// The organization the request acts in, and the caller's role there.
#[utoipa::path(get, path = "/v1/organizations/current", operation_id = "getCurrentOrganization", tag = "auth",
    responses((status = 200, description = "The organization", body = CurrentOrganization)))]
async fn current(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = find(&state, &principal.org).await?;
    etag::json(&headers, &current_view(&state, org, principal.role).await?)
}

/// Describe the organization the request acts in (its admins).
#[utoipa::path(put, path = "/v1/organizations/current", operation_id = "updateCurrentOrganization", tag = "auth",
    request_body = UpdateCurrentOrganization,
    responses(
        (status = 200, description = "The organization", body = CurrentOrganization),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 409, description = "The name is taken", body = ErrorEnvelope),
    ))]
async fn update_current(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<UpdateCurrentOrganization>,
) -> Result<Response, ApiError> {
    let change_of = UpdateOrganization {
        description: body.description,
        ..UpdateOrganization::default()
    };
    let org = change(&state, &principal, &ip, &principal.org, change_of).await?;
    etag::json(
        &HeaderMap::new(),
        &current_view(&state, org, principal.role).await?,
    )
}

async fn change(
    state: &AppState,
    principal: &Principal,
    ip: &ClientIp,
    id: &str,
    body: UpdateOrganization,
) -> Result<OrgRecord, ApiError> {
    check_fields(body.name.as_deref(), body.description.as_deref())?;
    let now = crate::now();
    let updated = state
        .store
        .update_org(id, &|current| {
            let mut org = current.clone();
            if let Some(name) = &body.name {
                org.name.clone_from(name);
            }
            if let Some(description) = &body.description {
                org.description = Some(description.clone()).filter(|d| !d.is_empty());
            }
            if let Some(tier) = body.tier {
                org.tier = tier;
            }
            if let Some(quotas) = body.quotas {
                org.quotas = quotas;
            }
            org.updated_at.clone_from(&now);
            Ok(org)
        })
        .await
        .map_err(name_taken)?
        .ok_or_else(|| ApiError::NotFound(format!("no organization {id:?}")))?;
    if body.name.is_some() {
        state.auth.orgs_changed();
    }
    state.quotas.changed(id).await?;
    state.store.flush().await?;
    let mut fields = super::owners::fields_given(&[
        ("name", body.name.is_some()),
        ("description", body.description.is_some()),
        ("quotas", body.quotas.is_some()),
    ]);
    if let Some(tier) = body.tier {
        fields.push_str(&format!(", tier={}", tier.as_str()));
    }
    audit::record(
        state,
        Entry::new("organization.updated", true)
            .actor(principal)
            .org(id)
            .ip(ip)
            .target(format!("organization:{id}"))
            .detail(fields),
    );
    Ok(updated)
}

/// Read an organization (node operators).
#[utoipa::path(get, path = "/v1/organizations/{id}", operation_id = "getOrganization", tag = "auth",
    params(("id" = String, Path, description = "The organization's id or name")),
    responses(
        (status = 200, description = "The organization", body = Organization),
        (status = 404, description = "No such organization", body = ErrorEnvelope),
    ))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    etag::json(&headers, &Organization::from(find(&state, &id).await?))
}

/// Rename or describe an organization (node operators).
#[utoipa::path(put, path = "/v1/organizations/{id}", operation_id = "updateOrganization", tag = "auth",
    params(("id" = String, Path, description = "The organization's id or name")),
    request_body = UpdateOrganization,
    responses(
        (status = 200, description = "The organization", body = Organization),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 404, description = "No such organization", body = ErrorEnvelope),
        (status = 409, description = "The name is taken", body = ErrorEnvelope),
    ))]
async fn update(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateOrganization>,
) -> Result<axum::Json<Organization>, ApiError> {
    let org = find(&state, &id).await?;
    let updated = change(&state, &principal, &ip, &org.id, body).await?;
    Ok(axum::Json(updated.into()))
}

/// Delete an empty organization (node operators): it must hold no
/// scripts, schedules, webhooks, shared secrets or executions. Its members
/// are removed from it, with their API keys there. The default one stays.
#[utoipa::path(delete, path = "/v1/organizations/{id}", operation_id = "deleteOrganization", tag = "auth",
    params(("id" = String, Path, description = "The organization's id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such organization", body = ErrorEnvelope),
        (status = 409, description = "It is the default one, or not empty (the message says what it holds)", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let org = find(&state, &id).await?;
    if org.id == DEFAULT_ORG {
        return Err(ApiError::Conflict(
            "the default organization is the node's own; it stays".into(),
        ));
    }
    let held = holdings(&state, &org.id).await?;
    if !held.is_empty() {
        return Err(ApiError::Conflict(format!(
            "organization {:?} still holds {}; delete them first",
            org.name,
            held.join(", ")
        )));
    }
    let mut removed = 0;
    for user in state.store.users().await? {
        if user.role_in(&org.id).is_some() {
            remove_from_deleted(&state, &org.id, &user.id).await?;
            removed += 1;
        }
    }
    for key in state.store.api_keys().await? {
        if key.org() == org.id {
            state.store.delete_api_key(&key.id).await?;
        }
    }
    state.store.delete_org(&org.id).await?;
    state.auth.orgs_changed();
    state.quotas.changed(&org.id).await?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("organization.deleted", true)
            .actor(&principal)
            .ip(&ip)
            .target(format!("organization:{}", org.id))
            .detail(format!("{}, {removed} members removed", org.name)),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// What an organization still holds, as "3 scripts"-like phrases.
async fn holdings(state: &AppState, org: &str) -> Result<Vec<String>, ApiError> {
    let mut counts = Vec::new();
    // Counted as its quotas count them.
    for (quota, what) in [
        (Quota::Scripts, "scripts"),
        (Quota::Schedules, "schedules"),
        (Quota::Webhooks, "webhooks"),
    ] {
        counts.push((state.quotas.held(org, quota).await?, what));
    }
    let secrets = state.store.shared_secrets().await?;
    let secrets = secrets.iter().filter(|s| s.org() == org).count();
    counts.push((u64::try_from(secrets).unwrap_or(u64::MAX), "shared secrets"));
    let executions = state
        .store
        .count_executions(&ExecutionIndex::Org(org.to_owned()));
    counts.push((executions, "executions"));
    Ok(counts
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect())
}

/// Takes a member out of an organization being deleted: no admin need stay.
async fn remove_from_deleted(state: &AppState, org: &str, user_id: &str) -> Result<(), ApiError> {
    state
        .store
        .update_user(user_id, &|current| {
            let mut user = current.clone();
            user.memberships.retain(|m| m.org != org);
            Ok(user)
        })
        .await?;
    Ok(())
}

/// An organization's members with their role there (node operators).
#[utoipa::path(get, path = "/v1/organizations/{id}/members", operation_id = "listOrganizationMembers", tag = "auth",
    params(("id" = String, Path, description = "The organization's id or name"),
        ("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of members", body = Listing<User>),
        (status = 404, description = "No such organization", body = ErrorEnvelope),
    ))]
async fn members(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<User>>, ApiError> {
    let page = Page::new(query)?;
    let org = find(&state, &id).await?;
    let mut users = state.store.users().await?;
    users.retain(|u| u.role_in(&org.id).is_some());
    let total = users.len();
    let data = users
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(|u| User::in_org(u, &org.id))
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// Add a user to an organization with a role, or change their role there
/// (node operators).
#[utoipa::path(put, path = "/v1/organizations/{id}/members/{user}", operation_id = "putOrganizationMember", tag = "auth",
    params(("id" = String, Path, description = "The organization's id or name"),
        ("user" = String, Path, description = "The user's id or username")),
    request_body = PutMember,
    responses(
        (status = 200, description = "The member", body = User),
        (status = 404, description = "No such organization or user", body = ErrorEnvelope),
        (status = 409, description = "It would leave the organization no enabled admin, or the user in 100 organizations", body = ErrorEnvelope),
    ))]
async fn put_member(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath((id, user)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutMember>,
) -> Result<axum::Json<User>, ApiError> {
    let org = find(&state, &id).await?;
    let user = find_anywhere(&state, &user).await?;
    let updated = set_membership(&state, &org.id, &user.id, body.role).await?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("organization.member_set", true)
            .actor(&principal)
            .org(&org.id)
            .ip(&ip)
            .target(&user.id)
            .detail(format!("{} as {}", user.username, body.role.as_str())),
    );
    Ok(axum::Json(User::in_org(updated, &org.id)))
}

/// Remove a user from an organization, with their API keys there (node
/// operators).
#[utoipa::path(delete, path = "/v1/organizations/{id}/members/{user}", operation_id = "deleteOrganizationMember", tag = "auth",
    params(("id" = String, Path, description = "The organization's id or name"),
        ("user" = String, Path, description = "The user's id or username")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such organization, or the user is no member", body = ErrorEnvelope),
        (status = 409, description = "It would leave the organization no enabled admin", body = ErrorEnvelope),
    ))]
async fn delete_member(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath((id, user)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = find(&state, &id).await?;
    let user = super::users::find(&state, &org.id, &user).await?;
    let revoked = remove_member(&state, &org.id, &user.id).await?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("organization.member_removed", true)
            .actor(&principal)
            .org(&org.id)
            .ip(&ip)
            .target(&user.id)
            .detail(format!("{}, {revoked} keys revoked", user.username)),
    );
    Ok(StatusCode::NO_CONTENT)
}

//! `/v1/api-keys`: keys for programs. The key is shown once, at creation;
//! the store keeps only its BLAKE3 hash. A key never gets a scope its
//! creator lacks, and on every use it is capped again by its owner's
//! current role.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::audit::{self, Entry};
use super::error::ErrorEnvelope;
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::{API_KEY_CHARS, API_KEY_PREFIX, Principal, Scope, Scopes, Via, secrets};
use crate::store::auth::ApiKeyRecord;
use crate::store::orgs::{InOrg as _, org_field};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

const MAX_DAYS: u32 = 3650;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1–128 characters, for people to tell keys apart.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// At least one; each must be one the caller has.
    #[schema(min_items = 1)]
    scopes: Vec<Scope>,
    /// 1–3650; no value: the key does not expire.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    id: String,
    name: String,
    /// The key's first characters, to recognise it.
    #[schema(example = "kiln_AbC1")]
    prefix: String,
    scopes: Vec<Scope>,
    owner_id: String,
    created_at: String,
    expires_at: Option<String>,
}

impl ApiKeyView {
    fn of(key: ApiKeyRecord) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes,
            owner_id: key.owner_id,
            created_at: key.created_at,
            expires_at: key.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    view: ApiKeyView,
    /// The key itself. It is shown this once; store it now.
    #[schema(example = "kiln_0123456789ABCDEFGHIJKLMNOPQRSTUV")]
    key: String,
}

/// Create an API key for the caller, with some or all of the caller's scopes.
/// Only a login session can create keys (a key cannot mint another that
/// outlives it). `Idempotency-Key` is ignored here: the response holds the
/// key, which is not kept anywhere in clear.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "createApiKey", tag = "auth",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedApiKey),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "A scope the caller does not have was asked for", body = ErrorEnvelope),
        (status = 409, description = "The caller already holds `limits.api_keys_per_user` unexpired keys", body = ErrorEnvelope),
    ))]
async fn create(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    if matches!(principal.via, Via::ApiKey { .. }) {
        return Err(ApiError::PermissionDenied(
            "an API key cannot create API keys; log in to create one".into(),
        ));
    }
    let owner_id = principal.user_id().ok_or_else(|| {
        ApiError::Validation(
            "authentication is off; there is no user to own a key".into(),
            Vec::new(),
        )
    })?;
    if !(1..=128).contains(&body.name.chars().count()) {
        return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "must name at least one scope"));
    }
    let asked: Scopes = body.scopes.iter().copied().collect();
    if !principal.scopes.covers(asked) {
        let beyond: Vec<&str> = asked
            .iter()
            .filter(|s| !principal.scopes.allows(*s))
            .map(Scope::as_str)
            .collect();
        audit::record(
            &state,
            Entry::new("permission.denied", false)
                .actor(&principal)
                .ip(&ip)
                .target("POST /v1/api-keys")
                .detail(format!("asked for a key with {}", beyond.join(", "))),
        );
        return Err(ApiError::PermissionDenied(format!(
            "a key cannot have scopes its creator lacks: {}",
            beyond.join(", ")
        )));
    }
    let expires_ms = match body.expires_in_days {
        Some(days) if !(1..=MAX_DAYS).contains(&days) => {
            return Err(ApiError::invalid(
                "expires_in_days",
                format!("must be between 1 and {MAX_DAYS}"),
            ));
        }
        Some(days) => Some(crate::now_ms().saturating_add(u64::from(days) * 86_400_000)),
        None => None,
    };
    let key = format!(
        "{API_KEY_PREFIX}{}",
        secrets::random_base62(API_KEY_CHARS).map_err(|e| ApiError::Internal(e.to_string()))?
    );
    let record = ApiKeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        // A key acts in the organization it was made in, and only there.
        org: org_field(&principal.org),
        name: body.name,
        owner_id,
        prefix: key.chars().take(API_KEY_PREFIX.len() + 4).collect(),
        hash: secrets::token_hash(&key),
        scopes: asked.to_vec(),
        created_at: crate::now(),
        expires_at: expires_ms.map(|ms| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        }),
        expires_ms,
    };
    let now = crate::now_ms();
    super::create_within_cap(
        Some(&record.owner_id),
        state.config.limits.api_keys_per_user,
        "limits.api_keys_per_user",
        "unexpired API keys",
        async |owner| {
            Ok(state
                .store
                .api_keys()
                .await?
                .iter()
                .filter(|k| k.owner_id == owner && k.expires_ms.is_none_or(|e| e > now))
                .count())
        },
        async || {
            state
                .quotas
                .allow_more(&principal.org, crate::quotas::Quota::ApiKeys, 1)
                .await?;
            Ok(state.store.create_api_key(&record).await?)
        },
    )
    .await?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("api_key.created", true)
            .actor(&principal)
            .ip(&ip)
            .target(&record.id)
            .detail(format!(
                "{:?} with {}",
                record.name,
                scope_list(&record.scopes)
            )),
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey {
            view: ApiKeyView::of(record),
            key,
        }),
    ))
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The caller's API keys (an admin sees everyone's), oldest first. Keys
/// themselves are never shown again.
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "listApiKeys", tag = "auth",
    params(("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of keys", body = Listing<ApiKeyView>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<ApiKeyView>>, ApiError> {
    let page = Page::new(query)?;
    let mine: Vec<_> = state
        .store
        .api_keys()
        .await?
        .into_iter()
        .filter(|k| k.org() == principal.org)
        .filter(|k| principal.is_admin() || Some(&k.owner_id) == principal.user_id.as_ref())
        .collect();
    let total = mine.len();
    let data = mine
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(ApiKeyView::of)
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// Revoke a key at once (one's own; an admin, anyone's).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "revokeApiKey", tag = "auth",
    params(("id" = String, Path, description = "The key's id (not the key)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key of the caller's", body = ErrorEnvelope),
    ))]
async fn revoke(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("no API key {id:?}"));
    let key = state
        .store
        .api_key(&id)
        .await?
        .filter(|k| k.org() == principal.org)
        .ok_or_else(not_found)?;
    if !principal.is_admin() && Some(&key.owner_id) != principal.user_id.as_ref() {
        return Err(not_found());
    }
    state
        .store
        .delete_api_key(&id)
        .await?
        .ok_or_else(not_found)?;
    state.store.flush().await?;
    audit::record(
        &state,
        Entry::new("api_key.revoked", true)
            .actor(&principal)
            .ip(&ip)
            .target(&id)
            .detail(format!("{:?}", key.name)),
    );
    Ok(StatusCode::NO_CONTENT)
}

//! Shared secrets: a value an admin keeps once (an API token many scripts
//! use) and grants to scripts by name, or to every script. A granted
//! script's runs read it as they read their own config values (env vars,
//! the `kiln:script` config import), its own config winning on a name both
//! have; it is masked in their output like those. Values are write-only:
//! sealed at rest (the vault), never returned, logged or audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{self, Entry};
use super::error::ErrorEnvelope;
use super::{ApiError, ApiJson, ApiPath, AppState};
use crate::auth::Principal;
use crate::store::orgs::{InOrg as _, name_key, org_field};
use crate::store::script_data::SharedSecretRecord;

/// Serializes changes (few, by admins): see `put`.
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// At most this many shared secrets on a server.
pub const MAX_SHARED_SECRETS: usize = 100;
/// A value is at most this many bytes (as a script's config value).
const MAX_VALUE_BYTES: usize = 4096;
/// A secret is granted to at most this many scripts by name.
const MAX_GRANTS: usize = 1000;
const MAX_NAME_CHARS: usize = 128;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, put, delete))
}

/// A shared secret as the API shows it: never its value.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SharedSecret)]
pub struct SecretView {
    #[schema(example = "STRIPE_KEY")]
    name: String,
    /// The ids of the scripts granted it, or `["*"]` for every script.
    scripts: Vec<String>,
    created_at: String,
    updated_at: String,
    created_by: Option<String>,
}

impl From<SharedSecretRecord> for SecretView {
    fn from(r: SharedSecretRecord) -> Self {
        Self {
            name: r.name,
            scripts: r.scripts,
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretList {
    data: Vec<SecretView>,
}

/// A shared secret's value and grants. Creating one needs both; an update
/// may leave out `value` to change only who is granted it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// Up to 4096 bytes of text.
    #[schema(example = "sk_live_…")]
    value: Option<String>,
    /// Scripts, by name or id, whose runs get it; `["*"]` for every
    /// script, including those created later by anyone who may create
    /// scripts. A grant follows the script, whoever changes its content
    /// next. Up to 1000.
    #[schema(example = json!(["*"]), max_items = 1000)]
    scripts: Vec<String>,
}

/// The shared secrets (never their values).
#[utoipa::path(get, path = "/v1/secrets", operation_id = "listSecrets", tag = "scripts",
    responses((status = 200, description = "Every shared secret, by name", body = SecretList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<SecretList>, ApiError> {
    let data = state
        .store
        .shared_secrets()
        .await?
        .iter()
        .filter(|s| s.org() == principal.org)
        .cloned()
        .map(SecretView::from)
        .collect();
    Ok(axum::Json(SecretList { data }))
}

/// One shared secret (never its value).
#[utoipa::path(get, path = "/v1/secrets/{name}", operation_id = "getSecret", tag = "scripts",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 200, description = "The secret", body = SecretView),
        (status = 404, description = "No such secret", body = ErrorEnvelope),
    ))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<SecretView>, ApiError> {
    let secret = state
        .store
        .shared_secret(&principal.org, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no secret {name:?}")))?;
    Ok(axum::Json(secret.into()))
}

/// Create or replace a shared secret and say which scripts get it. Its
/// value is sealed at once and never returned, logged or audited.
#[utoipa::path(put, path = "/v1/secrets/{name}", operation_id = "putSecret", tag = "scripts",
    params(("name" = String, Path, description = "1..128 of [A-Za-z0-9_.-], as the variable scripts read")),
    request_body = SecretInput,
    responses(
        (status = 200, description = "Replaced", body = SecretView),
        (status = 201, description = "Created", body = SecretView),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 404, description = "`scripts` names a script that does not exist", body = ErrorEnvelope),
        (status = 409, description = "The organization holds 100 shared secrets already", body = ErrorEnvelope),
    ))]
async fn put(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    principal: Principal,
    ApiJson(input): ApiJson<SecretInput>,
) -> Result<Response, ApiError> {
    crate::api::check_identifier("name", &name, MAX_NAME_CHARS)?;
    if let Some(value) = &input.value
        && value.len() > MAX_VALUE_BYTES
    {
        return Err(ApiError::invalid(
            "value",
            format!("at most {MAX_VALUE_BYTES} bytes"),
        ));
    }
    let scripts = grants(&state, &principal.org, &input.scripts).await?;
    // One change at a time: the count checked is the count written, and
    // two puts of one name do not both create it.
    let _writing = WRITES.lock().await;
    let current = state.store.shared_secret(&principal.org, &name).await?;
    let slot = crate::vault::shared_slot(&name_key(&principal.org, &name));
    let created = current.is_none();
    let now = crate::now();
    let record = match (current, input.value) {
        (Some(current), value) => SharedSecretRecord {
            value: value.map_or(current.value, |v| state.vault.seal(&slot, &v)),
            scripts,
            updated_at: now,
            ..current
        },
        (None, Some(value)) => {
            let held = state.store.shared_secrets().await?;
            if held.iter().filter(|s| s.org() == principal.org).count() >= MAX_SHARED_SECRETS {
                return Err(ApiError::Conflict(format!(
                    "the organization holds {MAX_SHARED_SECRETS} shared secrets, the most it keeps"
                )));
            }
            SharedSecretRecord {
                org: org_field(&principal.org),
                value: state.vault.seal(&slot, &value),
                name: name.clone(),
                scripts,
                created_at: now.clone(),
                updated_at: now,
                created_by: principal.user_id(),
            }
        }
        (None, None) => {
            return Err(ApiError::invalid("value", "a new secret needs its value"));
        }
    };
    state.store.put_shared_secret(&record).await?;
    audit::record(
        &state,
        Entry::new("secret.updated", true)
            .actor(&principal)
            .target(format!("secret:{name}"))
            .detail(format!("scripts: {}", record.scripts.join(", "))),
    );
    state.store.flush().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(SecretView::from(record))).into_response())
}

/// Delete a shared secret: runs that start after it go without it.
#[utoipa::path(delete, path = "/v1/secrets/{name}", operation_id = "deleteSecret", tag = "scripts",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such secret", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    principal: Principal,
) -> Result<StatusCode, ApiError> {
    if !state
        .store
        .delete_shared_secret(&principal.org, &name)
        .await?
    {
        return Err(ApiError::NotFound(format!("no secret {name:?}")));
    }
    audit::record(
        &state,
        Entry::new("secret.deleted", true)
            .actor(&principal)
            .target(format!("secret:{name}")),
    );
    state.store.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Script names or ids of organization `org` as the ids stored, or `*` alone.
async fn grants(state: &AppState, org: &str, scripts: &[String]) -> Result<Vec<String>, ApiError> {
    if scripts.len() > MAX_GRANTS {
        return Err(ApiError::invalid(
            "scripts",
            format!("at most {MAX_GRANTS} scripts; grant `*` for every one"),
        ));
    }
    if scripts.iter().any(|s| s == "*") {
        if scripts.len() > 1 {
            return Err(ApiError::invalid(
                "scripts",
                "`*` grants every script: give it alone",
            ));
        }
        return Ok(vec!["*".into()]);
    }
    let mut ids = Vec::with_capacity(scripts.len());
    for script in scripts {
        let found = state
            .store
            .script(org, script)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("scripts: no script {script:?}")))?;
        if !ids.contains(&found.id) {
            ids.push(found.id);
        }
    }
    Ok(ids)
}

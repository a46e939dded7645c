//! What a script keeps beside its content: config values (`PUT`/`GET
//! /v1/scripts/{id}/config`), read by its `kiln:script` runs, and the
//! key-value entries those runs wrote (`GET /v1/scripts/{id}/kv`, admins).
//! Config values are write-only through the API: they may be secrets, so
//! only their keys are ever shown, logged or audited.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::find;
use super::ownership::{audited, check_change};
use crate::api::access::ClientIp;
use crate::api::audit::{self, Entry};
use crate::api::error::ErrorEnvelope;
use crate::api::{ApiError, ApiJson, ApiPath, AppState};
use crate::auth::Principal;
use crate::store::StoreError;

const MAX_CONFIG_VALUES: usize = 100;
const MAX_CONFIG_KEY_CHARS: usize = 128;
const MAX_CONFIG_VALUE_BYTES: usize = 4096;

/// A script's config values; they replace the previous ones entirely.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    /// Up to 100 keys of `[A-Za-z0-9_.-]` (1..128 characters), each with a
    /// text value of at most 4096 bytes.
    #[schema(example = json!({"greeting": "hello", "api_token": "s3cr3t"}))]
    values: BTreeMap<String, String>,
}

/// The config keys a script has; values are never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigKeys {
    keys: Vec<String>,
}

/// Set a script's config values (its `kiln:script` runs read them with
/// `config::get`). Values are never returned, logged or audited.
#[utoipa::path(put, path = "/v1/scripts/{id_or_name}/config", operation_id = "putScriptConfig", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name")),
    request_body = ConfigInput,
    responses(
        (status = 200, description = "The keys now set", body = ConfigKeys),
        (status = 400, description = "A key or value is invalid", body = ErrorEnvelope),
        (status = 403, description = "The caller is not the script's owner, an editor or an admin", body = ErrorEnvelope),
        (status = 404, description = "No such script", body = ErrorEnvelope),
    ))]
pub(super) async fn put_config(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiPath(id_or_name): ApiPath<String>,
    principal: Principal,
    ApiJson(input): ApiJson<ConfigInput>,
) -> Result<Response, ApiError> {
    validate(&input.values)?;
    let script = find(&state, &principal.org, &id_or_name).await?;
    if let Err(e) = check_change(&principal, &script) {
        return Err(audited(
            &state,
            &principal,
            &ip,
            "config",
            &script.id,
            e.into(),
        ));
    }
    let sealed: BTreeMap<String, String> = input
        .values
        .iter()
        .map(|(key, value)| {
            let slot = crate::vault::config_slot(&script.id, key);
            (key.clone(), state.vault.seal(&slot, value))
        })
        .collect();
    state
        .store
        .set_script_config(&script.id, &sealed, &|now| check_change(&principal, now))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(format!("no script {id_or_name:?}")),
            other => audited(&state, &principal, &ip, "config", &script.id, other.into()),
        })?;
    let keys: Vec<String> = input.values.into_keys().collect();
    audit::record(
        &state,
        Entry::new("script.config.updated", true)
            .actor(&principal)
            .ip(&ip)
            .target(format!("script:{}", script.id))
            .detail(format!(
                "keys: {}; at version {}",
                keys.join(", "),
                script.version
            )),
    );
    state.store.flush().await?;
    Ok(axum::Json(ConfigKeys { keys }).into_response())
}

/// The config keys of a script (never the values).
#[utoipa::path(get, path = "/v1/scripts/{id_or_name}/config", operation_id = "getScriptConfig", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name")),
    responses(
        (status = 200, description = "The keys set", body = ConfigKeys),
        (status = 404, description = "No such script", body = ErrorEnvelope),
    ))]
pub(super) async fn get_config(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id_or_name): ApiPath<String>,
) -> Result<axum::Json<ConfigKeys>, ApiError> {
    let script = find(&state, &principal.org, &id_or_name).await?;
    let keys = state
        .store
        .script_config(&script.id)
        .await?
        .into_keys()
        .collect();
    Ok(axum::Json(ConfigKeys { keys }))
}

fn validate(values: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if values.len() > MAX_CONFIG_VALUES {
        return Err(ApiError::invalid(
            "values",
            format!("at most {MAX_CONFIG_VALUES} keys"),
        ));
    }
    for (key, value) in values {
        let field = format!("values.{key}");
        let well_formed = (1..=MAX_CONFIG_KEY_CHARS).contains(&key.chars().count())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !well_formed {
            return Err(ApiError::invalid(
                &field,
                format!("a key is 1..{MAX_CONFIG_KEY_CHARS} of [A-Za-z0-9_.-]"),
            ));
        }
        if value.len() > MAX_CONFIG_VALUE_BYTES {
            return Err(ApiError::invalid(
                &field,
                format!("a value is at most {MAX_CONFIG_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// One key-value entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct KvEntry {
    key: String,
    size_bytes: u64,
    /// The value, when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// The value as base64, when it is not text.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// A script's key-value store.
#[derive(Debug, Serialize, ToSchema)]
pub struct KvContents {
    entries: Vec<KvEntry>,
    /// Keys and values together, as the quota counts them.
    total_bytes: u64,
}

/// What a script's runs keep in its key-value store (admins only).
#[utoipa::path(get, path = "/v1/scripts/{id_or_name}/kv", operation_id = "getScriptKv", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name")),
    responses(
        (status = 200, description = "Every entry, in key order", body = KvContents),
        (status = 404, description = "No such script", body = ErrorEnvelope),
    ))]
pub(super) async fn get_kv(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id_or_name): ApiPath<String>,
) -> Result<axum::Json<KvContents>, ApiError> {
    let script = find(&state, &principal.org, &id_or_name).await?;
    let mut total_bytes = 0;
    let entries = state
        .store
        .kv_entries(&script.id)
        .await?
        .into_iter()
        .map(|(key, value)| {
            let size_bytes = value.len() as u64;
            total_bytes += (key.len() + value.len()) as u64;
            let (value, value_base64) = match String::from_utf8(value) {
                Ok(text) => (Some(text), None),
                Err(bytes) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes())),
                ),
            };
            KvEntry {
                key,
                size_bytes,
                value,
                value_base64,
            }
        })
        .collect();
    Ok(axum::Json(KvContents {
        entries,
        total_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn config_keys_values_and_counts_are_bounded() {
        assert!(validate(&values(&[("api.token-2_x", "v".into())])).is_ok());
        let long_key = "k".repeat(MAX_CONFIG_KEY_CHARS + 1);
        for bad in [
            values(&[("", "v".into())]),
            values(&[("has space", "v".into())]),
            values(&[(long_key.as_str(), "v".into())]),
            values(&[("k", "v".repeat(MAX_CONFIG_VALUE_BYTES + 1))]),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_CONFIG_VALUES)
            .map(|n| (format!("k{n}"), String::new()))
            .collect();
        assert!(validate(&many).is_err());
    }
}

//! Create, update and delete. Content is compiled (components) or parsed by
//! its language runtime (source) before anything is stored, so a script that
//! cannot run is refused with 422 and the stored one stays as it was.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_runtime::{Limits, Source};

use super::ScriptView;
use super::body::{
    Content, ScriptBody, ScriptFields, WasmUploadQuery, allowed_hosts, check_public, parse_language,
};
use super::ownership::{self, audited, check_change, check_share, editor_ids};
use crate::api::access::ClientIp;
use crate::api::audit::{self, Entry};
use crate::api::error::{Detail, ErrorEnvelope};
use crate::api::{ApiError, ApiPath, AppState, etag};
use crate::auth::Principal;
use crate::quotas::Quota;
use crate::runtimes::kind_of;
use crate::store::orgs::org_field;
use crate::store::{Language, ScriptKind, ScriptRecord, StoreError};

/// Create a script. Its content is compiled (components) or parsed (source)
/// first: `422` stores nothing.
#[utoipa::path(post, path = "/v1/scripts", operation_id = "createScript", tag = "scripts",
    params(WasmUploadQuery),
    request_body(description = "JSON with `content`, `content_base64` or `files` (a bundle); \
        multipart with a `file` and a `meta` (JSON) part; the raw component, JavaScript \
        or Python source with `?name=`; or a bundle's zip, tar or tar.gz with \
        `?name=&language=&entry=`",
        content((ScriptFields = "application/json"), ("multipart/form-data"), ("application/wasm"),
            ("application/javascript"), ("text/x-python"),
            ("application/zip"), ("application/x-tar"), ("application/gzip"))),
    responses(
        (status = 201, description = "Created", body = ScriptView,
            headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "`owner` names someone else and the caller is not an admin", body = ErrorEnvelope),
        (status = 409, description = "The name is taken, the caller holds `limits.scripts_per_user` scripts, or the Idempotency-Key was used for another request", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit", body = ErrorEnvelope),
        (status = 415, description = "Not JSON, multipart, a component, JavaScript or Python source, or an archive", body = ErrorEnvelope),
        (status = 422, description = "It does not compile, or passes a compile limit; `details` says where or which", body = ErrorEnvelope),
        (status = 429, description = "The caller has `limits.compiles_per_user` compiles in flight", body = ErrorEnvelope),
        (status = 503, description = "The compile queue, or the slots scripts are parsed in, are full", body = ErrorEnvelope),
    ))]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    let ScriptBody { fields, content } = ScriptBody::read(request, &state).await?;
    fields.validate(&state.config.limits)?;
    let name = fields
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    let language = fields
        .language
        .as_deref()
        .ok_or_else(|| ApiError::invalid("language", "is required"))
        .and_then(parse_language)?;
    let content = content.ok_or_else(|| {
        ApiError::invalid(
            "content",
            "give exactly one of content, content_base64 and files",
        )
    })?;
    let (content, source) = stored(content, language).await?;
    let (owner, editors) = sharing_of(&state, &principal.org, &fields).await?;
    // A script is made as the caller's; giving it away comes after, so no
    // one is made the owner of code they never saw.
    if owner.is_some() && owner != principal.user_id() && !principal.is_admin() {
        let refused = ApiError::PermissionDenied(
            "only admins create a script owned by someone else; create it, then give it away"
                .into(),
        );
        let target = format!("script name {:?}", fields.name.as_deref().unwrap_or(""));
        return Err(crate::api::owners::audited(
            &state, &principal, &ip, "create", target, refused,
        ));
    }
    let editors = editors.unwrap_or_default();
    // Before the compile, so a user at the cap spends nothing; counted
    // again when the script is created.
    crate::api::create_within_cap(
        principal.user_id().as_deref(),
        state.config.limits.scripts_per_user,
        "limits.scripts_per_user",
        "scripts",
        async |owner| scripts_of(&state, owner).await,
        async || Ok(()),
    )
    .await?;
    let within_quotas = async || -> Result<(), ApiError> {
        let quotas = &state.quotas;
        quotas.allow_more(&principal.org, Quota::Scripts, 1).await?;
        quotas
            .allow_more(&principal.org, Quota::StoredBytes, content.len() as u64)
            .await?;
        Ok(())
    };
    within_quotas().await?;
    let kind = compile(&state, language, &content, source.as_ref(), &principal).await?;
    let public = fields.public.unwrap_or(false);
    check_public(public, kind, language)?;

    let now = crate::now();
    let record = ScriptRecord {
        id: uuid::Uuid::now_v7().to_string(),
        org: org_field(&principal.org),
        name,
        language,
        kind,
        public,
        description: fields.description.flatten(),
        tags: fields.tags.unwrap_or_default(),
        metadata: fields.metadata.unwrap_or_default(),
        status: fields.status.unwrap_or_default(),
        limits: fields.limits.flatten(),
        allowed_hosts: allowed_hosts(fields.allowed_hosts.as_deref().unwrap_or_default())?,
        created_by: principal.user_id(),
        owner: owner.filter(|o| Some(o) != principal.user_id.as_ref()),
        editors,
        version_by: principal.user_id(),
        version: 1,
        content_hash: blake3::hash(&content).to_hex().to_string(),
        size_bytes: content.len() as u64,
        created_at: now.clone(),
        updated_at: now,
        execution_count: 0,
        last_executed_at: None,
    };
    crate::api::create_within_cap(
        record.created_by.as_deref(),
        state.config.limits.scripts_per_user,
        "limits.scripts_per_user",
        "scripts",
        async |owner| scripts_of(&state, owner).await,
        async || {
            within_quotas().await?;
            Ok(state.store.create_script(&record, &content).await?)
        },
    )
    .await?;
    let location = format!("/v1/scripts/{}", record.id);
    let entry = Entry::new("script.created", true)
        .actor(&principal)
        .ip(&ip)
        .target(format!("script:{}", record.id))
        .detail(format!("{}, version 1", record.name));
    let view = ScriptView::from(record);
    state.emit(&principal.org, "script.created", &view).await;
    state.store.flush().await?;
    audit::record(&state, entry);
    let tag = etag::of_json(&view)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::ETAG, tag)],
        axum::Json(view),
    )
        .into_response())
}

/// Update some fields of a script (its owner, its editors and admins). New
/// content (different from the current) is compiled first and becomes the
/// next version.
#[utoipa::path(put, path = "/v1/scripts/{id_or_name}", operation_id = "updateScript", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    request_body(content((ScriptFields = "application/json"), ("application/wasm"))),
    responses(
        (status = 200, description = "The updated script", body = ScriptView, headers(("ETag" = String))),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "The caller is not the script's owner, an editor or an admin (or, to change `owner` or `editors`, its owner or an admin)", body = ErrorEnvelope),
        (status = 404, description = "No such script", body = ErrorEnvelope),
        (status = 409, description = "The new name is taken", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
        (status = 422, description = "The new content does not compile, or passes a compile limit; nothing changed", body = ErrorEnvelope),
        (status = 429, description = "The caller has `limits.compiles_per_user` compiles in flight", body = ErrorEnvelope),
        (status = 503, description = "The compile queue, or the slots scripts are parsed in, are full", body = ErrorEnvelope),
    ))]
pub(super) async fn update(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let ScriptBody { fields, content } = ScriptBody::read(request, &state).await?;
    fields.validate(&state.config.limits)?;
    let current = state
        .store
        .script(&principal.org, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no script {id:?}")))?;
    let sharing = fields.owner.is_some() || fields.editors.is_some();
    // Before anything is compiled; again in the store's swap below.
    let allowed = check_change(&principal, &current).and_then(|()| {
        if sharing {
            check_share(&principal, &current)
        } else {
            Ok(())
        }
    });
    if let Err(e) = allowed {
        return Err(audited(
            &state,
            &principal,
            &ip,
            "update",
            &current.id,
            e.into(),
        ));
    }
    let (owner, editors) = sharing_of(&state, &principal.org, &fields).await?;
    if let Some(language) = fields.language.as_deref()
        && parse_language(language)? != current.language
    {
        return Err(ApiError::invalid(
            "language",
            "a script's language cannot change; create a new script",
        ));
    }
    // Compile before the store is touched: 422 leaves the script as it was.
    let content = match content {
        Some(content) => Some(stored(content, current.language).await?),
        None => None,
    };
    if let Some((content, _)) = &content {
        // Every version is kept: a new one adds its bytes.
        state
            .quotas
            .allow_more(&principal.org, Quota::StoredBytes, content.len() as u64)
            .await?;
    }
    let (content, kind) = match content {
        Some((content, source))
            if blake3::hash(&content).to_hex().as_str() != current.content_hash =>
        {
            let source = source.as_ref();
            let kind = compile(&state, current.language, &content, source, &principal).await?;
            (Some(content), kind)
        }
        _ => (None, current.kind),
    };
    check_public(
        fields.public.unwrap_or(current.public),
        kind,
        current.language,
    )?;
    let hosts = fields
        .allowed_hosts
        .as_deref()
        .map(allowed_hosts)
        .transpose()?;
    let now = crate::now();
    let change = |script: &ScriptRecord| {
        if_match(&headers, script)?;
        check_change(&principal, script)?;
        if sharing {
            check_share(&principal, script)?;
        }
        let mut next = script.clone();
        if let Some(name) = &fields.name {
            next.name.clone_from(name);
        }
        if let Some(description) = &fields.description {
            next.description.clone_from(description);
        }
        if let Some(tags) = &fields.tags {
            next.tags.clone_from(tags);
        }
        if let Some(metadata) = &fields.metadata {
            next.metadata.clone_from(metadata);
        }
        if let Some(status) = fields.status {
            next.status = status;
        }
        if let Some(limits) = fields.limits {
            next.limits = limits;
        }
        if let Some(public) = fields.public {
            next.public = public;
        }
        if let Some(hosts) = &hosts {
            next.allowed_hosts.clone_from(hosts);
        }
        if let Some(owner) = &owner {
            next.owner = Some(owner.clone());
        }
        if let Some(editors) = &editors {
            next.editors.clone_from(editors);
        }
        if let Some(content) = &content {
            next.version = script.version + 1;
            next.kind = kind;
            next.content_hash = blake3::hash(content).to_hex().to_string();
            next.size_bytes = content.len() as u64;
            next.created_by = next.created_by.clone().or_else(|| principal.user_id());
            next.version_by = principal.user_id();
        }
        if next != *script {
            next.updated_at.clone_from(&now);
        }
        Ok(next)
    };
    let updated = state
        .store
        .update_script(&current.id, &change, content.as_deref())
        .await
        .map_err(|e| audited(&state, &principal, &ip, "update", &current.id, e.into()))?;
    let entry = Entry::new("script.updated", true)
        .actor(&principal)
        .ip(&ip)
        .target(format!("script:{}", updated.id))
        .detail(changes(&current, &updated));
    let view = ScriptView::from(updated);
    state.emit(&principal.org, "script.updated", &view).await;
    state.store.flush().await?;
    audit::record(&state, entry);
    etag::json(&HeaderMap::new(), &view)
}

/// Delete a script, all its versions and its schedules (its owner, its
/// editors and admins). Its executions stay readable.
#[utoipa::path(delete, path = "/v1/scripts/{id_or_name}", operation_id = "deleteScript", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller is not the script's owner, an editor or an admin", body = ErrorEnvelope),
        (status = 404, description = "No such script", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let allow = |script: &ScriptRecord| {
        check_change(&principal, script)?;
        if_match(&headers, script)
    };
    let missing = || ApiError::NotFound(format!("no script {id:?}"));
    let found = state
        .store
        .script(&principal.org, &id)
        .await?
        .ok_or_else(missing)?;
    let deleted = state
        .store
        .delete_script(&found.id, &allow)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => missing(),
            // The refusal is filed under the script's id, as the others are.
            other => audited(&state, &principal, &ip, "delete", &found.id, other.into()),
        })?;
    // Its schedules go with it (API.md). A crash before this is repaired by
    // the scheduler, which drops a schedule whose script is gone.
    for schedule in state.store.schedules().await? {
        if schedule.script_id == deleted.id {
            state
                .store
                .delete_schedule(&schedule.id, &|_| Ok(()))
                .await?;
        }
    }
    let entry = Entry::new("script.deleted", true)
        .actor(&principal)
        .ip(&ip)
        .target(format!("script:{}", deleted.id))
        .detail(format!("{}, at version {}", deleted.name, deleted.version));
    state
        .emit(&principal.org, "script.deleted", &ScriptView::from(deleted))
        .await;
    state.store.flush().await?;
    audit::record(&state, entry);
    state.schedules_changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// The owner and editors a request names, as user ids.
async fn sharing_of(
    state: &AppState,
    org: &str,
    fields: &ScriptFields,
) -> Result<(Option<String>, Option<Vec<String>>), ApiError> {
    let owner = match fields.owner.as_deref() {
        Some(owner) => Some(ownership::user_id(state, org, "owner", owner).await?),
        None => None,
    };
    let editors = match fields.editors.as_deref() {
        Some(names) => Some(editor_ids(state, org, names).await?),
        None => None,
    };
    Ok((owner, editors))
}

/// What an update changed, for the audit log: names of fields and the new
/// version, never values (a description or metadata may be anything).
fn changes(before: &ScriptRecord, after: &ScriptRecord) -> String {
    let mut changed = Vec::new();
    if after.version != before.version {
        changed.push("content".to_owned());
    }
    let fields = [
        ("name", before.name != after.name),
        ("description", before.description != after.description),
        ("tags", before.tags != after.tags),
        ("metadata", before.metadata != after.metadata),
        ("status", before.status != after.status),
        ("limits", before.limits != after.limits),
        ("public", before.public != after.public),
        ("allowed_hosts", before.allowed_hosts != after.allowed_hosts),
        ("owner", before.owner() != after.owner()),
        ("editors", before.editors != after.editors),
    ];
    changed.extend(
        fields
            .into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| name.to_owned()),
    );
    let changed = if changed.is_empty() {
        "nothing".to_owned()
    } else {
        changed.join(", ")
    };
    if after.version != before.version {
        format!("{changed}; now version {}", after.version)
    } else {
        format!("{changed}; at version {}", after.version)
    }
}

/// How many scripts `owner` created.
async fn scripts_of(state: &AppState, owner: &str) -> Result<usize, StoreError> {
    Ok(crate::api::count_by(state.store.scripts().await?, |s| {
        s.created_by.as_deref() == Some(owner)
    }))
}

/// The `If-Match` precondition against the script's current representation.
fn if_match(headers: &HeaderMap, script: &ScriptRecord) -> Result<(), StoreError> {
    let view = ScriptView::from(script.clone());
    let tag = etag::of_json(&view).map_err(|e| StoreError::Backend(e.to_string()))?;
    etag::check_if_match(headers, &tag).map_err(|e| StoreError::Refused(e.to_string()))
}

/// Compiles a component, or parses a source script with its runtime: a
/// script that cannot run is refused with 422. Returns how it is called.
async fn compile(
    state: &AppState,
    language: Language,
    content: &[u8],
    source: Option<&Source>,
    principal: &Principal,
) -> Result<ScriptKind, ApiError> {
    let artifact = match language {
        Language::Wasm => state
            .runtimes
            .load(content, Some(&principal.rate_key()))
            .await
            .map_err(ApiError::from)?,
        Language::Javascript | Language::Python => {
            state
                .runtimes
                .get(language)
                .await
                .map_err(|e| {
                    ApiError::Internal(format!("the language runtime does not load: {e}"))
                })?
                .artifact
        }
    };
    let Some(kind) = kind_of(language, artifact.shape()) else {
        let message = "the component exports none of wasi:cli/run (a command), kiln:script's run \
            and wasi:http/incoming-handler (an HTTP function)";
        return Err(ApiError::Compile(
            message.into(),
            vec![Detail::field("content", message)],
        ));
    };
    if language == Language::Wasm {
        return Ok(kind);
    }
    let source = source
        .ok_or_else(|| ApiError::Internal("a source script came without its source".into()))?;
    let limits = Limits {
        fuel: Some(CHECK_FUEL),
        ..Limits::default()
    };
    // The parse runs guest code (the runtime's parser): it takes a turn of
    // the same slots HTTP functions run in, so uploads cannot take more
    // cores than the workers have.
    let _slot = state.jobs.function_slot().await?;
    match state.sandbox.check(&artifact, source, limits).await {
        Ok(None) => Ok(kind),
        Ok(Some(error)) => {
            let detail = Detail {
                line: error.line,
                column: error.column,
                ..Detail::field("content", error.message.clone())
            };
            Err(ApiError::Compile(error.message, vec![detail]))
        }
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// What `content` is stored as; off the async threads, since unpacking an
/// archive inflates up to a bundle's bound.
async fn stored(
    content: Content,
    language: Language,
) -> Result<(Vec<u8>, Option<Source>), ApiError> {
    tokio::task::spawn_blocking(move || content.into_stored(language))
        .await
        .map_err(|e| ApiError::Internal(format!("the upload's unpacking failed: {e}")))?
}

/// Parsing 100 000 characters takes a few million instructions; this bounds a
/// parser fed something pathological.
const CHECK_FUEL: u64 = 2_000_000_000;

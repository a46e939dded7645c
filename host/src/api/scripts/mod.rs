//! `/v1/scripts`: create, read, list, update (with versions) and delete.
//! Request bodies are parsed in `body.rs`; writes are in `write.rs`.

mod body;
pub(crate) mod bundle;
mod data;
pub(crate) mod ownership;
mod write;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use kiln_runtime::Source;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) use self::body::{LanguageName, allowed_hosts, decode_content, parse_language};
use super::error::ErrorEnvelope;
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiPath, ApiQuery, AppState, etag};
use crate::auth::Principal;
use crate::store::orgs::InOrg as _;
use crate::store::{Language, ScriptKind, ScriptLimits, ScriptRecord, ScriptStatus, VersionRecord};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, write::create))
        .routes(routes!(languages))
        .routes(routes!(read, write::update, write::delete))
        .routes(routes!(content))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(data::put_config, data::get_config))
        .routes(routes!(data::get_kv))
}

/// A named, versioned script (its content is at `/content`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Script)]
pub struct ScriptView {
    id: String,
    name: String,
    /// `javascript`, `python` or `wasm`.
    #[schema(value_type = String, example = "javascript")]
    language: &'static str,
    /// Named after what was uploaded, found from the content: `source`
    /// (JavaScript or Python), `command` (a wasi:cli component) and `sdk`
    /// (a kiln:script component, the guest SDK's: JSON in and out) run
    /// through the execution API; `http` (a wasi:http/proxy component)
    /// answers at `/fn/{name}/…`.
    #[schema(value_type = String, example = "source")]
    kind: &'static str,
    /// An HTTP function anyone may call without a credential.
    public: bool,
    description: Option<String>,
    tags: Vec<String>,
    #[schema(value_type = Object)]
    metadata: serde_json::Map<String, serde_json::Value>,
    status: ScriptStatus,
    version: u32,
    /// BLAKE3 of the current version's content, hex.
    content_hash: String,
    size_bytes: u64,
    limits: Option<ScriptLimits>,
    /// The hosts its runs may send HTTP requests to.
    allowed_hosts: Vec<String>,
    created_by: Option<String>,
    /// The user who owns it; with its `editors` and admins, the only ones
    /// who may change it.
    owner: Option<String>,
    /// Users who may change it as its owner does (ids).
    editors: Vec<String>,
    created_at: String,
    updated_at: String,
    execution_count: u64,
    last_executed_at: Option<String>,
}

impl From<ScriptRecord> for ScriptView {
    fn from(s: ScriptRecord) -> Self {
        Self {
            owner: s.owner().map(str::to_owned),
            kind: s.kind.api_name(s.language),
            public: s.public,
            language: s.language.as_str(),
            id: s.id,
            name: s.name,
            description: s.description,
            tags: s.tags,
            metadata: s.metadata,
            status: s.status,
            version: s.version,
            content_hash: s.content_hash,
            size_bytes: s.size_bytes,
            limits: s.limits,
            allowed_hosts: s.allowed_hosts,
            created_by: s.created_by,
            editors: s.editors,
            created_at: s.created_at,
            updated_at: s.updated_at,
            execution_count: s.execution_count,
            last_executed_at: s.last_executed_at,
        }
    }
}

/// One version of a script's content.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ScriptVersion)]
pub struct VersionView {
    version: u32,
    current: bool,
    content_hash: String,
    size_bytes: u64,
    created_at: String,
    created_by: Option<String>,
    /// The source (for a single version of a source script).
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// The component bytes (for a single version of a wasm script).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_base64: Option<String>,
    /// A bundle's file that runs (for a single version that is a bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<String>,
    /// A bundle's files, path to text (for a single version that is a
    /// bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<std::collections::BTreeMap<String, String>>,
}

impl VersionView {
    fn new(v: VersionRecord, script: &ScriptRecord) -> Self {
        Self {
            current: v.version == script.version,
            version: v.version,
            content_hash: v.content_hash,
            size_bytes: v.size_bytes,
            created_at: v.created_at,
            created_by: v.created_by,
            content: None,
            content_base64: None,
            entry: None,
            files: None,
        }
    }
}

/// The script of organization `org` with this id or name.
async fn find(state: &AppState, org: &str, id_or_name: &str) -> Result<ScriptRecord, ApiError> {
    state
        .store
        .script(org, id_or_name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no script {id_or_name:?}")))
}

/// Read a script by id or name.
#[utoipa::path(get, path = "/v1/scripts/{id_or_name}", operation_id = "getScript", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name")),
    responses(
        (status = 200, description = "The script", body = ScriptView,
            headers(("ETag" = String, description = "Strong ETag of this representation"))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 404, description = "No such script", body = ErrorEnvelope),
    ))]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id_or_name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let script = find(&state, &principal.org, &id_or_name).await?;
    etag::json(&headers, &ScriptView::from(script))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    /// A version other than the current one.
    version: Option<u32>,
}

/// The source as text, the component as `application/wasm`, or a bundle as
/// JSON (`entry` and `files`); the current version unless `?version=N`. Its
/// ETag is the content's BLAKE3 hash.
#[utoipa::path(get, path = "/v1/scripts/{id_or_name}/content", operation_id = "getScriptContent", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name"), ContentQuery),
    responses(
        (status = 200, description = "The source text, or the component bytes",
            content(("text/javascript"), ("text/x-python"), ("application/wasm"), ("application/json")),
            headers(("ETag" = String, description = "The content's BLAKE3 hash"))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 400, description = "Bad query parameter", body = ErrorEnvelope),
        (status = 404, description = "No such script or version", body = ErrorEnvelope),
    ))]
async fn content(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id_or_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ContentQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let script = find(&state, &principal.org, &id_or_name).await?;
    let version = query.version.unwrap_or(script.version);
    let bytes = state
        .store
        .script_content(&script.id, version)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("script {id_or_name:?} has no version {version}"))
        })?;
    let tag = format!("\"{}\"", blake3::hash(&bytes).to_hex());
    if bytes.starts_with(kiln_runtime::BUNDLE_MAGIC) {
        let Ok(Source::Bundle(bundle)) = Source::decode(bytes) else {
            return Err(ApiError::Internal("the stored bundle is damaged".into()));
        };
        let shown = serde_json::json!({ "entry": bundle.entry, "files": bundle.files });
        let json = serde_json::to_vec(&shown)
            .map_err(|e| ApiError::Internal(format!("cannot encode the bundle: {e}")))?;
        return Ok(etag::respond(&headers, &tag, "application/json", json));
    }
    let content_type = match script.language {
        Language::Wasm => "application/wasm",
        Language::Javascript => "text/javascript; charset=utf-8",
        Language::Python => "text/x-python; charset=utf-8",
    };
    Ok(etag::respond(&headers, &tag, content_type, bytes))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// Page number, from 1.
    page: Option<usize>,
    /// Page size, 1..=100 (default 20).
    size: Option<usize>,
    /// `asc` or `desc` (default: newest first).
    #[param(pattern = "^(asc|desc)$")]
    order: Option<String>,
}

/// Every version of a script, newest first unless `?order=asc`.
#[utoipa::path(get, path = "/v1/scripts/{id_or_name}/versions", operation_id = "listScriptVersions", tag = "scripts",
    params(("id_or_name" = String, Path, description = "The script's id or name"), VersionsQuery),
    responses(
        (status = 200, description = "A page of versions", body = Listing<VersionView>),
        (status = 400, description = "Bad query parameter", body = ErrorEnvelope),
        (status = 404, description = "No such script", body = ErrorEnvelope),
    ))]
async fn versions(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id_or_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<VersionsQuery>,
) -> Result<axum::Json<Listing<VersionView>>, ApiError> {
    let page = Page::new(PageQuery {
        page: query.page,
        size: query.size,
    })?;
    let descending = parse_order(query.order.as_deref())?;
    let script = find(&state, &principal.org, &id_or_name).await?;
    let mut versions = state.store.script_versions(&script.id).await?;
    if descending {
        versions.reverse();
    }
    let total = versions.len();
    let data = versions
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(|v| VersionView::new(v, &script))
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// One version with its content (text, or base64 for a component).
#[utoipa::path(get, path = "/v1/scripts/{id_or_name}/versions/{version}", operation_id = "getScriptVersion", tag = "scripts",
    params(
        ("id_or_name" = String, Path, description = "The script's id or name"),
        ("version" = u32, Path, description = "The version number, from 1"),
    ),
    responses(
        (status = 200, description = "The version and its content", body = VersionView,
            headers(("ETag" = String))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 404, description = "No such script or version", body = ErrorEnvelope),
    ))]
async fn version(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id_or_name, number)): ApiPath<(String, u32)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let script = find(&state, &principal.org, &id_or_name).await?;
    let missing = || ApiError::NotFound(format!("script {id_or_name:?} has no version {number}"));
    let record = state
        .store
        .script_version(&script.id, number)
        .await?
        .ok_or_else(missing)?;
    let bytes = state
        .store
        .script_content(&script.id, number)
        .await?
        .ok_or_else(missing)?;
    let mut view = VersionView::new(record, &script);
    match script.language {
        Language::Wasm => {
            view.content_base64 = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
        Language::Javascript | Language::Python => match Source::decode(bytes) {
            Ok(Source::File(text)) => view.content = Some(text),
            Ok(Source::Bundle(bundle)) => {
                view.entry = Some(bundle.entry);
                view.files = Some(bundle.files);
            }
            Err(e) => return Err(ApiError::Internal(format!("the stored script: {e}"))),
        },
    }
    etag::json(&headers, &view)
}

fn parse_order(order: Option<&str>) -> Result<bool, ApiError> {
    match order {
        None | Some("desc") => Ok(true),
        Some("asc") => Ok(false),
        Some(_) => Err(ApiError::invalid("order", "asc or desc")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page number, from 1.
    page: Option<usize>,
    /// Page size, 1..=100 (default 20).
    size: Option<usize>,
    status: Option<ScriptStatus>,
    /// `javascript`, `python` or `wasm`.
    #[param(pattern = "^(javascript|python|wasm)$")]
    language: Option<String>,
    /// Scripts carrying this tag.
    tag: Option<String>,
    created_by: Option<String>,
    /// At least 2 characters, matched case-insensitively in name and description.
    #[param(min_length = 2)]
    search: Option<String>,
    /// `name`, `created_at` (default), `updated_at` or `execution_count`.
    #[param(pattern = "^(name|created_at|updated_at|execution_count)$")]
    sort: Option<String>,
    /// `asc` or `desc` (default).
    #[param(pattern = "^(asc|desc)$")]
    order: Option<String>,
}

/// List scripts (without their content).
#[utoipa::path(get, path = "/v1/scripts", operation_id = "listScripts", tag = "scripts", params(ListQuery),
    responses(
        (status = 200, description = "A page of scripts", body = Listing<ScriptView>),
        (status = 400, description = "Bad query parameter", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<Listing<ScriptView>>, ApiError> {
    let page = Page::new(PageQuery {
        page: query.page,
        size: query.size,
    })?;
    let language = query.language.as_deref().map(parse_language).transpose()?;
    let search = match query.search.as_deref().map(str::trim) {
        Some(s) if s.chars().count() < 2 => {
            return Err(ApiError::invalid("search", "at least 2 characters"));
        }
        other => other.map(str::to_lowercase),
    };
    let descending = parse_order(query.order.as_deref())?;
    let sort = query.sort.as_deref().unwrap_or("created_at");
    if !matches!(
        sort,
        "name" | "created_at" | "updated_at" | "execution_count"
    ) {
        return Err(ApiError::invalid(
            "sort",
            "one of name, created_at, updated_at, execution_count",
        ));
    }

    let mut scripts: Vec<ScriptRecord> = state
        .store
        .scripts()
        .await?
        .into_iter()
        .filter(|s| s.org() == principal.org)
        .filter(|s| query.status.is_none_or(|status| s.status == status))
        .filter(|s| {
            query
                .created_by
                .as_ref()
                .is_none_or(|by| s.created_by.as_ref() == Some(by))
        })
        .filter(|s| language.is_none_or(|l| s.language == l))
        .filter(|s| query.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .filter(|s| {
            search.as_ref().is_none_or(|needle| {
                s.name.to_lowercase().contains(needle)
                    || s.description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(needle))
            })
        })
        .collect();
    scripts.sort_by(|a, b| {
        match sort {
            "name" => a.name.cmp(&b.name),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "execution_count" => a.execution_count.cmp(&b.execution_count),
            _ => a.created_at.cmp(&b.created_at),
        }
        .then_with(|| a.id.cmp(&b.id))
    });
    if descending {
        scripts.reverse();
    }
    let total = scripts.len();
    let data = scripts
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(ScriptView::from)
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// A language scripts can be written in.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Language)]
pub struct LanguageView {
    id: &'static str,
    version: &'static str,
    extensions: &'static [&'static str],
    /// The kinds a script of this language can have (a script's `kind`).
    kinds: Vec<&'static str>,
    /// The standard library modules a script may import (Python); an
    /// import of any other is refused at upload. A bundle's own modules
    /// come on top.
    #[serde(skip_serializing_if = "Option::is_none")]
    modules: Option<&'static [&'static str]>,
    /// Whether a script may be several files (`files`, or an archive).
    bundles: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Languages {
    languages: Vec<LanguageView>,
}

/// What [`ScriptKind::api_name`] calls the kinds a script of `language`
/// can be found to have at upload.
fn kinds_of(language: Language) -> Vec<&'static str> {
    let kinds: &[ScriptKind] = match language {
        Language::Wasm => &[ScriptKind::Command, ScriptKind::Script, ScriptKind::Http],
        Language::Javascript | Language::Python => &[ScriptKind::Command],
    };
    kinds.iter().map(|kind| kind.api_name(language)).collect()
}

/// The languages this server runs.
#[utoipa::path(get, path = "/v1/languages", operation_id = "listLanguages", tag = "scripts",
    responses((status = 200, description = "Languages and their runtimes", body = Languages)))]
async fn languages() -> axum::Json<Languages> {
    let language = |id, version, extensions, kinds| LanguageView {
        id,
        version,
        extensions,
        kinds,
        modules: None,
        bundles: id != "wasm",
    };
    axum::Json(Languages {
        languages: vec![
            language(
                "javascript",
                "QuickJS (rquickjs 0.14)",
                &[".js", ".mjs"],
                kinds_of(Language::Javascript),
            ),
            LanguageView {
                modules: Some(kiln_components::PYTHON_MODULES),
                ..language(
                    "python",
                    "CPython 3.14 (componentize-py 0.25.1), IANA time zones 2026f",
                    &[".py"],
                    kinds_of(Language::Python),
                )
            },
            language(
                "wasm",
                "WASI 0.2 components and preview1 modules (wasmtime 48)",
                &[".wasm", ".wat"],
                kinds_of(Language::Wasm),
            ),
        ],
    })
}

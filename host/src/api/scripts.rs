//! `/v1/scripts`: create (compiled or checked before anything is stored) and read.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use kiln_runtime::Limits;
use serde::{Deserialize, Serialize};

use super::error::Detail;
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::runtimes::{load, shape_fits};
use crate::store::{Language, ScriptRecord};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/scripts", post(create).get(list))
        .route("/v1/languages", get(languages))
        .route("/v1/scripts/{id_or_name}", get(read))
}

/// Source scripts are at most this many characters (API.md).
const MAX_SOURCE_CHARS: usize = 100_000;
const MAX_TAGS: usize = 10;
const MAX_TAG_CHARS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateScript {
    name: String,
    language: String,
    content: Option<String>,
    content_base64: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The API's Script.
#[derive(Debug, Serialize)]
pub struct ScriptView {
    id: String,
    name: String,
    language: &'static str,
    kind: &'static str,
    description: Option<String>,
    tags: Vec<String>,
    metadata: serde_json::Value,
    status: &'static str,
    version: u32,
    content_hash: String,
    size_bytes: u64,
    limits: Option<serde_json::Value>,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
    execution_count: u64,
    last_executed_at: Option<String>,
}

impl From<ScriptRecord> for ScriptView {
    fn from(s: ScriptRecord) -> Self {
        Self {
            // Source scripts and wasi:cli components are both "command" (as in
            // API.md's /v1/languages example); "script" and "http" are the
            // kiln:script and wasi:http component worlds.
            kind: "command",
            language: s.language.as_str(),
            id: s.id,
            name: s.name,
            description: s.description,
            tags: s.tags,
            metadata: serde_json::Value::Object(Default::default()),
            status: "active",
            version: s.version,
            content_hash: s.content_hash,
            size_bytes: s.size_bytes,
            limits: None,
            created_by: None,
            created_at: s.created_at,
            updated_at: s.updated_at,
            execution_count: s.execution_count,
            last_executed_at: s.last_executed_at,
        }
    }
}

pub(super) fn parse_language(language: &str) -> Result<Language, ApiError> {
    match language {
        "javascript" | "js" => Ok(Language::Javascript),
        "python" | "py" => Ok(Language::Python),
        "wasm" => Ok(Language::Wasm),
        other => Err(ApiError::invalid(
            "language",
            format!("unknown language {other:?}; one of javascript, python, wasm"),
        )),
    }
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "must match ^[a-zA-Z0-9_.-]{1,255}$",
        ))
    }
}

fn validate_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    if tags
        .iter()
        .any(|t| t.is_empty() || t.chars().count() > MAX_TAG_CHARS)
    {
        return Err(ApiError::invalid(
            "tags",
            format!("each tag is 1..{MAX_TAG_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Text or base64 bytes, exactly one of them, not empty.
pub(super) fn decode_content(
    text: Option<String>,
    base64: Option<String>,
    field: &str,
) -> Result<Vec<u8>, ApiError> {
    let content = match (text, base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| {
                ApiError::invalid(&format!("{field}_base64"), format!("not base64: {e}"))
            })?,
        _ => {
            return Err(ApiError::invalid(
                field,
                format!("give exactly one of {field} and {field}_base64"),
            ));
        }
    };
    if content.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    Ok(content)
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateScript>,
) -> Result<Response, ApiError> {
    validate_name(&body.name)?;
    validate_tags(&body.tags)?;
    let language = parse_language(&body.language)?;
    let content = decode_content(body.content, body.content_base64, "content")?;
    if language != Language::Wasm {
        let source = std::str::from_utf8(&content)
            .map_err(|_| ApiError::invalid("content", "must be UTF-8 text"))?;
        if source.chars().count() > MAX_SOURCE_CHARS {
            return Err(ApiError::invalid(
                "content",
                format!("at most {MAX_SOURCE_CHARS} characters"),
            ));
        }
    }
    compile(&state, language, &content).await?;

    let now = crate::now();
    let record = ScriptRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: body.name,
        language,
        description: body.description,
        tags: body.tags,
        version: 1,
        content_hash: blake3::hash(&content).to_hex().to_string(),
        size_bytes: content.len() as u64,
        created_at: now.clone(),
        updated_at: now,
        execution_count: 0,
        last_executed_at: None,
    };
    state.store.create_script(&record, &content)?;
    state.store.flush().await?;
    let location = format!("/v1/scripts/{}", record.id);
    let view = ScriptView::from(record);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view),
    )
        .into_response())
}

/// Compiles a component, or parses a source script with its runtime, before
/// anything is stored: a script that cannot run is refused with 422.
async fn compile(state: &AppState, language: Language, content: &[u8]) -> Result<(), ApiError> {
    let artifact = match language {
        Language::Wasm => load(&state.sandbox, content.to_vec()).await.map_err(|e| {
            ApiError::Compile(e.to_string(), vec![Detail::field("content", e.to_string())])
        })?,
        Language::Javascript | Language::Python => {
            state.runtimes.get(language).await.map_err(|e| {
                ApiError::Internal(format!("the language runtime does not load: {e}"))
            })?
        }
    };
    if !shape_fits(language, artifact.shape()) {
        let message = "the component is not a wasi:cli/command (it must export wasi:cli/run)";
        return Err(ApiError::Compile(
            message.into(),
            vec![Detail::field("content", message)],
        ));
    }
    if language == Language::Wasm {
        return Ok(());
    }
    let source = String::from_utf8_lossy(content);
    let limits = Limits {
        fuel: Some(CHECK_FUEL),
        ..Limits::default()
    };
    match state.sandbox.check(&artifact, &source, limits).await {
        Ok(None) => Ok(()),
        Ok(Some(error)) => {
            let detail = Detail {
                field: Some("content".into()),
                message: error.message.clone(),
                line: error.line,
                column: error.column,
            };
            Err(ApiError::Compile(error.message, vec![detail]))
        }
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// Parsing 100 000 characters takes a few million instructions; this bounds a
/// parser fed something pathological.
const CHECK_FUEL: u64 = 2_000_000_000;

async fn read(
    State(state): State<AppState>,
    ApiPath(id_or_name): ApiPath<String>,
) -> Result<axum::Json<ScriptView>, ApiError> {
    let script = state
        .store
        .script(&id_or_name)?
        .ok_or_else(|| ApiError::NotFound(format!("no script {id_or_name:?}")))?;
    Ok(axum::Json(script.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    page: Option<usize>,
    size: Option<usize>,
    status: Option<String>,
    language: Option<String>,
    tag: Option<String>,
    created_by: Option<String>,
    search: Option<String>,
    sort: Option<String>,
    order: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<Listing<ScriptView>>, ApiError> {
    let page = Page::new(PageQuery {
        page: query.page,
        size: query.size,
    })?;
    let language = query.language.as_deref().map(parse_language).transpose()?;
    if let Some(status) = query.status.as_deref()
        && !matches!(status, "draft" | "active" | "archived")
    {
        return Err(ApiError::invalid(
            "status",
            "one of draft, active, archived",
        ));
    }
    let search = match query.search.as_deref().map(str::trim) {
        Some(s) if s.chars().count() < 2 => {
            return Err(ApiError::invalid("search", "at least 2 characters"));
        }
        other => other.map(str::to_lowercase),
    };
    let descending = match query.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::invalid("order", "asc or desc")),
    };
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
        .scripts()?
        .into_iter()
        // Every script is "active" and has no recorded creator until
        // versions and auth exist.
        .filter(|_| {
            query
                .status
                .as_deref()
                .is_none_or(|status| status == "active")
        })
        .filter(|_| query.created_by.is_none())
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

async fn languages() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"languages": [
        {"id": "javascript", "version": "QuickJS (rquickjs 0.14)", "extensions": [".js", ".mjs"], "kinds": ["command"]},
        {"id": "python", "version": "CPython 3.14 (componentize-py 0.25.1)", "extensions": [".py"], "kinds": ["command"]},
        {"id": "wasm", "version": "WASI 0.2 components and preview1 modules (wasmtime 48)", "extensions": [".wasm", ".wat"], "kinds": ["command"]},
    ]}))
}

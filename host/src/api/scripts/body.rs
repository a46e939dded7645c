//! What a create or update request says, from any of its encodings: JSON
//! (`content`, `content_base64`, or `files` with an `entry`),
//! `multipart/form-data` (a `file` part and a `meta` JSON part), a raw
//! `application/wasm`, `application/javascript` or `text/x-python` body, or a
//! raw zip / tar / tar.gz bundle, the raw ones with `?name=` (and an
//! archive's `&language=`). Validation of each field lives here too.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::header;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use crate::api::{ApiError, AppState};
use crate::config::LimitsConfig;
use crate::store::{Language, ScriptKind, ScriptLimits, ScriptStatus};

/// Source scripts are at most this many characters (API.md).
const MAX_SOURCE_CHARS: usize = 100_000;
const MAX_TAGS: usize = 10;
const MAX_TAG_CHARS: usize = 50;
const MAX_DESCRIPTION_CHARS: usize = 2_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The fields of a create or an update. A create needs `name`, `language`
/// and one of `content` / `content_base64`; an update takes any of them
/// (`null` clears `description` and `limits`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ScriptInput)]
#[serde(deny_unknown_fields)]
pub struct ScriptFields {
    /// 1..255 of `[a-zA-Z0-9_.-]`, unique.
    #[schema(example = "hello", pattern = "^[a-zA-Z0-9_.-]{1,255}$")]
    pub name: Option<String>,
    /// `javascript`, `python` or `wasm`; it cannot change.
    #[schema(value_type = Option<LanguageName>, example = "javascript")]
    pub language: Option<String>,
    /// Source text, up to 100 000 characters.
    content: Option<String>,
    /// The content as base64 (a component, source, or a zip / tar / tar.gz
    /// of a bundle's files).
    content_base64: Option<String>,
    /// A script of several files (a bundle), instead of `content`: path
    /// (`lib/util.js`, `pkg/__init__.py`) to text. At most 1 000 files and
    /// 5 MiB.
    #[schema(value_type = Option<Object>, example = json!({"main.js": "import { twice } from './lib.js';\nexport default (p) => twice(p.n);", "lib.js": "export const twice = (n) => 2 * n;"}))]
    files: Option<std::collections::BTreeMap<String, String>>,
    /// The bundle's file that runs; by default `main.js` / `index.js`
    /// (`main.py` / `__main__.py` in Python), or its only file at the root.
    #[schema(example = "main.js")]
    entry: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Up to 10 tags of up to 50 characters.
    pub tags: Option<Vec<String>>,
    /// Free JSON, up to 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub status: Option<ScriptStatus>,
    /// Defaults for this script's executions, within the server's maxima.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ScriptLimits>)]
    pub limits: Option<Option<ScriptLimits>>,
    /// Whether anyone may call this HTTP function without a credential;
    /// only `http` scripts can be public.
    pub public: Option<bool>,
    /// The hosts its runs may send HTTP requests to (`fetch`, `kiln.http`,
    /// `wasi:http`), up to 64: `api.example.com` (ports 80 and 443),
    /// `api.example.com:8443`, `*.example.org` (subdomains), `host:*` (any
    /// port). None by default: every outbound request is refused.
    #[schema(example = json!(["api.example.com", "*.example.org:8443"]))]
    pub allowed_hosts: Option<Vec<String>>,
    /// Who owns it (a user's id or username): its creator unless changed.
    /// Only the owner and admins may change this and `editors`.
    pub owner: Option<String>,
    /// Users (ids or usernames, at most 32) who may change it as its owner
    /// does: content, fields, config, delete.
    pub editors: Option<Vec<String>>,
}

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Only HTTP functions are reachable without a credential.
pub fn check_public(public: bool, kind: ScriptKind, language: Language) -> Result<(), ApiError> {
    if public && kind != ScriptKind::Http {
        return Err(ApiError::invalid(
            "public",
            format!(
                "only scripts of kind http can be public; this one is of kind {}",
                kind.api_name(language)
            ),
        ));
    }
    Ok(())
}

/// A request's fields and its new content, if it brings any.
#[derive(Debug)]
pub struct ScriptBody {
    pub fields: ScriptFields,
    pub content: Option<Content>,
}

/// New content as sent; what it is stored as depends on the script's
/// language, which an update does not repeat.
#[derive(Debug)]
pub enum Content {
    /// A component, one source file, or an archive of a bundle's files.
    Bytes {
        bytes: Vec<u8>,
        entry: Option<String>,
    },
    /// A bundle sent as a JSON map of files.
    Files {
        files: std::collections::BTreeMap<String, String>,
        entry: Option<String>,
    },
}

impl Content {
    /// The bytes stored for a script of `language`: a component or one
    /// source file as they are, a bundle in its encoding
    /// ([`kiln_runtime::Source`]), all checked; and, for a source language,
    /// the source the runtime is to parse, so it is not decoded again.
    pub fn into_stored(
        self,
        language: Language,
    ) -> Result<(Vec<u8>, Option<kiln_runtime::Source>), ApiError> {
        let bundle = match self {
            Self::Bytes { bytes, entry } => {
                let source_language = language != Language::Wasm;
                if source_language && super::bundle::is_archive(&bytes) {
                    super::bundle::from_archive(language, entry, &bytes)?
                } else if entry.is_some() {
                    return Err(ApiError::invalid(
                        "entry",
                        "only a bundle (`files`, or an archive) has an entry",
                    ));
                } else {
                    validate_content(language, &bytes)?;
                    let source = match language {
                        Language::Wasm => None,
                        _ => Some(kiln_runtime::Source::File(
                            String::from_utf8_lossy(&bytes).into_owned(),
                        )),
                    };
                    return Ok((bytes, source));
                }
            }
            Self::Files { files, entry } => {
                if language == Language::Wasm {
                    return Err(ApiError::invalid(
                        "files",
                        "a component is one file: send it as `content_base64`",
                    ));
                }
                super::bundle::from_map(language, entry, files)?
            }
        };
        let source = kiln_runtime::Source::Bundle(bundle);
        Ok((source.encode(), Some(source)))
    }
}

/// With a raw body (a component, one source file or an archive), the
/// fields come in the query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WasmUploadQuery {
    /// The script's name (raw uploads only).
    name: Option<String>,
    /// `wasm` for a component; `javascript` or `python` for an archive
    /// (raw uploads only).
    language: Option<String>,
    /// Raw uploads only.
    description: Option<String>,
    /// The bundle's file that runs (raw archive uploads only).
    entry: Option<String>,
    /// Whether anyone may call this HTTP function without a credential
    /// (raw uploads only).
    public: Option<bool>,
}

impl ScriptBody {
    /// Reads the body in whichever encoding its `Content-Type` names.
    pub async fn read(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            "application/json" => {
                let crate::api::ApiJson(mut fields) =
                    crate::api::ApiJson::<ScriptFields>::from_request(request, state).await?;
                let content = fields.take_content()?;
                Ok(Self { fields, content })
            }
            "multipart/form-data" => Self::multipart(request, state).await,
            "application/wasm"
            | "application/javascript"
            | "text/javascript"
            | "text/x-python"
            | "application/x-python"
            | "application/zip"
            | "application/x-tar"
            | "application/gzip"
            | "application/x-gzip" => {
                // A body of one kind names its language; an archive's is in the query.
                let implied = match essence {
                    "application/wasm" => Some("wasm"),
                    "application/javascript" | "text/javascript" => Some("javascript"),
                    "text/x-python" | "application/x-python" => Some("python"),
                    _ => None,
                };
                let Query(query) = Query::<WasmUploadQuery>::try_from_uri(request.uri())
                    .map_err(ApiError::from)?;
                let body =
                    Bytes::from_request(request, state)
                        .await
                        .map_err(|e| match e.status() {
                            axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                            _ => ApiError::Validation(e.body_text(), Vec::new()),
                        })?;
                let language = if let Some(implied) = implied {
                    if query.language.as_deref().is_some_and(|l| l != implied) {
                        return Err(ApiError::invalid(
                            "language",
                            format!("an {essence} body is language={implied}"),
                        ));
                    }
                    if query.entry.is_some() {
                        return Err(ApiError::invalid(
                            "entry",
                            "one file has no entry; a bundle is sent as an archive",
                        ));
                    }
                    Some(implied.to_owned())
                } else {
                    if query.language.as_deref() == Some("wasm") {
                        return Err(ApiError::invalid(
                            "language",
                            "an archive is a bundle of javascript or python files",
                        ));
                    }
                    if !super::bundle::is_archive(&body) {
                        return Err(ApiError::invalid(
                            "content",
                            format!("the {essence} body is not a zip, tar or gzipped tar archive"),
                        ));
                    }
                    query.language
                };
                let fields = ScriptFields {
                    name: query.name,
                    language,
                    description: query.description.map(Some),
                    public: query.public,
                    ..ScriptFields::default()
                };
                Ok(Self {
                    fields,
                    content: Some(Content::Bytes {
                        bytes: body.to_vec(),
                        entry: query.entry,
                    }),
                })
            }
            _ => Err(ApiError::UnsupportedMediaType(
                "send the script as application/json, multipart/form-data, application/wasm, \
                 application/javascript, text/x-python, or a bundle as application/zip, \
                 application/x-tar or application/gzip"
                    .into(),
            )),
        }
    }

    async fn multipart(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::Validation(e.body_text(), Vec::new()))?;
        let (mut fields, mut file) = (None, None);
        while let Some(part) = multipart.next_field().await.map_err(multipart_error)? {
            match part.name() {
                Some("meta") => {
                    let bytes = part.bytes().await.map_err(multipart_error)?;
                    let meta: ScriptFields = crate::api::parse_json("the meta part", &bytes)?;
                    fields = Some(meta);
                }
                Some("file") => file = Some(part.bytes().await.map_err(multipart_error)?.to_vec()),
                other => {
                    return Err(ApiError::invalid(
                        other.unwrap_or("(unnamed part)"),
                        "unknown part; send `file` and `meta`",
                    ));
                }
            }
        }
        let mut fields = fields.ok_or_else(|| ApiError::invalid("meta", "the part is missing"))?;
        if fields.content.is_some() || fields.content_base64.is_some() || fields.files.is_some() {
            return Err(ApiError::invalid(
                "meta",
                "the content goes in the `file` part, not in `meta`",
            ));
        }
        let content = file.ok_or_else(|| ApiError::invalid("file", "the part is missing"))?;
        if content.is_empty() {
            return Err(ApiError::invalid("file", "must not be empty"));
        }
        let entry = fields.entry.take();
        Ok(Self {
            fields,
            content: Some(Content::Bytes {
                bytes: content,
                entry,
            }),
        })
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::Validation(format!("bad multipart body: {}", e.body_text()), Vec::new()),
    }
}

/// Text or base64 bytes, at most one of them (exactly one when `required`),
/// not empty.
pub fn decode_content(
    text: Option<String>,
    base64: Option<String>,
    field: &str,
    required: bool,
) -> Result<Option<Vec<u8>>, ApiError> {
    let content = match (text, base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| {
                ApiError::invalid(&format!("{field}_base64"), format!("not base64: {e}"))
            })?,
        (None, None) if !required => return Ok(None),
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
    Ok(Some(content))
}

/// A language as a request names it: `js` and `py` are short for
/// `javascript` and `python`.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the names parse_language takes")]
pub enum LanguageName {
    Javascript,
    Js,
    Python,
    Py,
    Wasm,
}

pub fn parse_language(language: &str) -> Result<Language, ApiError> {
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

pub fn validate_name(name: &str) -> Result<(), ApiError> {
    crate::api::check_identifier("name", name, 255)
}

/// Source must be UTF-8 text of at most 100 000 characters (a bundle, up
/// to 5 MiB, is checked by `bundle.rs`).
pub fn validate_content(language: Language, content: &[u8]) -> Result<(), ApiError> {
    if language == Language::Wasm {
        return Ok(());
    }
    let source = std::str::from_utf8(content)
        .map_err(|_| ApiError::invalid("content", "must be UTF-8 text"))?;
    // Neither language allows one, and the stored form of a bundle starts
    // with one (kiln_runtime::BUNDLE_MAGIC).
    if source.contains('\0') {
        return Err(ApiError::invalid(
            "content",
            "source text has no NUL characters",
        ));
    }
    if source.chars().count() > MAX_SOURCE_CHARS {
        return Err(ApiError::invalid(
            "content",
            format!("at most {MAX_SOURCE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Host patterns as given, checked and normalized as they are stored.
pub fn allowed_hosts(patterns: &[String]) -> Result<Vec<String>, ApiError> {
    crate::egress::allowlist::normalize(patterns).map_err(|e| ApiError::invalid("allowed_hosts", e))
}

impl ScriptFields {
    /// The content a JSON body brings: exactly one of `content`,
    /// `content_base64` and `files`, or none.
    fn take_content(&mut self) -> Result<Option<Content>, ApiError> {
        let entry = self.entry.take();
        let bytes = decode_content(
            self.content.take(),
            self.content_base64.take(),
            "content",
            false,
        );
        match (bytes?, self.files.take()) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "files",
                "give one of content, content_base64 and files",
            )),
            (None, Some(files)) => Ok(Some(Content::Files { files, entry })),
            (Some(bytes), None) => Ok(Some(Content::Bytes { bytes, entry })),
            (None, None) if entry.is_some() => Err(ApiError::invalid(
                "entry",
                "an entry comes with the bundle's files",
            )),
            (None, None) => Ok(None),
        }
    }

    /// Checks every field that is present.
    pub fn validate(&self, maxima: &LimitsConfig) -> Result<(), ApiError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(hosts) = &self.allowed_hosts {
            allowed_hosts(hosts)?;
        }
        if let Some(tags) = &self.tags {
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
        }
        if let Some(Some(description)) = &self.description
            && description.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return Err(ApiError::invalid(
                "description",
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if let Some(metadata) = &self.metadata
            && serde_json::to_vec(metadata).map_or(0, |v| v.len()) > MAX_METADATA_BYTES
        {
            return Err(ApiError::invalid(
                "metadata",
                format!("at most {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
        if let Some(Some(limits)) = &self.limits {
            validate_limits(limits, maxima)?;
        }
        Ok(())
    }
}

fn validate_limits(limits: &ScriptLimits, maxima: &LimitsConfig) -> Result<(), ApiError> {
    let checks = [
        (
            "limits.timeout_ms",
            limits.timeout_ms,
            Some(maxima.max_timeout_ms),
        ),
        (
            "limits.memory_mb",
            limits.memory_mb,
            Some(maxima.max_memory_mb),
        ),
        ("limits.fuel", limits.fuel, maxima.max_fuel),
    ];
    for (field, value, max) in checks {
        match (value, max) {
            (Some(0), _) => return Err(ApiError::invalid(field, "must be at least 1")),
            (Some(v), Some(max)) if v > max => {
                return Err(ApiError::invalid(
                    field,
                    format!("at most {max} on this server"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

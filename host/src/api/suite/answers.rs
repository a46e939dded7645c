//! Every answer the suite gets is held to the OpenAPI document the node
//! serves: its status must be one its operation documents, its media type
//! one that status documents, and a JSON body must match the documented
//! schema. The suite's calls (hundreds, of every operation, with good and
//! bad input) are the corpus; `openapi.rs` checks that each operation is
//! among them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

/// One operation of the document, its path split into segments.
struct Operation {
    method: String,
    path: String,
    segments: Vec<String>,
    responses: Value,
}

struct Document {
    components: Value,
    operations: Vec<Operation>,
    /// Compiled schemas by (operation, status, media type).
    validators: Mutex<HashMap<(usize, u16, String), Arc<jsonschema::Validator>>>,
}

fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let document = super::super::rendered(super::super::routes_and_document().1);
        let mut operations = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                operations.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    segments: path.split('/').map(str::to_owned).collect(),
                    responses: operation["responses"].clone(),
                });
            }
        }
        Document {
            components: document["components"].clone(),
            operations,
            validators: Mutex::new(HashMap::new()),
        }
    })
}

/// The operation a request reached: the one whose template matches with
/// the most literal segments (`/v1/scripts/search` before
/// `/v1/scripts/{id_or_name}`). `{path}`, last, takes the rest.
fn operation_of(method: &Method, path: &str) -> Option<usize> {
    let path = path.split('?').next().unwrap_or_default();
    let asked: Vec<&str> = path.split('/').collect();
    let method = method.as_str();
    let mut best: Option<(usize, usize)> = None;
    for (index, operation) in document().operations.iter().enumerate() {
        if operation.method != method {
            continue;
        }
        let Some(literal) = matches(&operation.segments, &asked) else {
            continue;
        };
        if best.is_none_or(|(_, most)| literal > most) {
            best = Some((index, literal));
        }
    }
    best.map(|(index, _)| index)
}

/// How many literal segments of `template` match `asked`; `None` if it
/// does not match.
fn matches(template: &[String], asked: &[&str]) -> Option<usize> {
    let mut literal = 0;
    for (i, segment) in template.iter().enumerate() {
        if segment == "{path}" && i + 1 == template.len() {
            return (asked.len() > i).then_some(literal);
        }
        let given = asked.get(i)?;
        if segment.starts_with('{') {
            if given.is_empty() {
                return None;
            }
        } else if segment == given {
            literal += 1;
        } else {
            return None;
        }
    }
    (asked.len() == template.len()).then_some(literal)
}

/// What the suite's call reached, as `METHOD /template`; `None` for a path
/// that is no operation (then it must have answered 404 or 405).
///
/// # Panics
///
/// When the answer is not what the document says this operation answers.
pub(super) fn check(
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<String> {
    let document = document();
    let Some(index) = operation_of(method, path) else {
        // Only a route the server does not have, a CORS preflight (the
        // CORS layer's, before any route), or the web console's files (a
        // page, not the API: `api/console.rs`) may be missing from the
        // document.
        let preflight =
            method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS);
        let console = method == Method::GET && (path == "/" || path.starts_with("/assets/"));
        assert!(
            matches!(status.as_u16(), 404 | 405) || preflight || console,
            "{method} {path} answered {status}, but the document has no such operation"
        );
        return None;
    };
    let operation = &document.operations[index];
    let name = format!("{} {}", operation.method, operation.path);
    let shown = || String::from_utf8_lossy(&body[..body.len().min(2_000)]).into_owned();
    let code = status.as_u16();
    let Some(response) = operation
        .responses
        .get(code.to_string())
        .or_else(|| operation.responses.get(format!("{}XX", code / 100)))
        .or_else(|| operation.responses.get("default"))
    else {
        panic!(
            "{name} ({path}) answered {code}, which its document does not list: {}",
            shown()
        );
    };
    // A compressed body was checked uncompressed by the call that did not
    // ask for compression (`http.rs` compares the two).
    if body.is_empty() || method == Method::HEAD || headers.contains_key(header::CONTENT_ENCODING) {
        return Some(name);
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let content = response.get("content").and_then(Value::as_object);
    let Some(documented) = content.and_then(|c| c.get(&media).or_else(|| c.get("*/*"))) else {
        panic!(
            "{name} ({path}) answered {code} with {media:?}, which its document does not list for that status (it lists {:?}): {}",
            content.map(|c| c.keys().collect::<Vec<_>>()),
            shown()
        );
    };
    let Some(schema) = documented.get("schema") else {
        return Some(name);
    };
    if !media.ends_with("json") {
        return Some(name);
    }
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{name} ({path}) answered {code} with JSON that is not: {e}"));
    let validator = {
        let mut validators = document
            .validators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        validators
            .entry((index, code, media.clone()))
            .or_insert_with(|| {
                let mut root = json!({ "components": document.components });
                if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
                    root.extend(schema.clone());
                }
                Arc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|e| {
                    panic!("{name} {code}: the document's schema does not compile: {e}")
                }))
            })
            .clone()
    };
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .take(5)
        .collect();
    assert!(
        errors.is_empty(),
        "{name} ({path}) answered {code} with a body its schema refuses:\n{}\n{}",
        errors.join("\n"),
        shown()
    );
    Some(name)
}

#[test]
fn a_path_finds_the_operation_with_the_most_literal_segments() {
    let name = |method: Method, path: &str| {
        operation_of(&method, path).map(|i| {
            let operation = &document().operations[i];
            format!("{} {}", operation.method, operation.path)
        })
    };
    assert_eq!(
        name(Method::GET, "/v1/scripts/hello?x=1").as_deref(),
        Some("GET /v1/scripts/{id_or_name}")
    );
    assert_eq!(
        name(Method::POST, "/v1/scripts/hello/execute").as_deref(),
        Some("POST /v1/scripts/{id_or_name}/execute")
    );
    assert_eq!(
        name(Method::GET, "/fn/web/a/b/c").as_deref(),
        Some("GET /fn/{name}/{path}")
    );
    assert_eq!(name(Method::GET, "/v1/nothing/here"), None);
    assert_eq!(name(Method::GET, "/v1/scripts//versions"), None);
}

//! JSON request bodies: a body that says it is something else is a 415,
//! and a body that does not parse is a 400 whose `details` name the field
//! (or the line and column) and why.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};

use super::ApiError;
use super::error::Detail;

/// JSON body extractor whose rejections are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !says_json(request.headers()) {
            return Err(not_json());
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                    _ => ApiError::Validation(rejection.body_text(), Vec::new()),
                })?;
        parse_json("the body", &bytes).map(ApiJson)
    }
}

/// The 415 of a JSON route given another media type.
pub fn not_json() -> ApiError {
    ApiError::UnsupportedMediaType(
        "send the body as JSON with Content-Type: application/json".into(),
    )
}

/// Whether `Content-Type` is `application/json` or a `+json` type.
pub fn says_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// Parses a JSON body (or part of one), naming the field that is wrong.
///
/// # Errors
///
/// `VALIDATION_ERROR`: `details` has the field's path, or, for a body that
/// is not JSON at all, the line and column where it stops being JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = detail_of(&path, &inner);
        let message = match &detail.field {
            Some(field) => format!("{what} is not valid: {field}: {}", detail.message),
            None => format!("{what} is not valid: {}", detail.message),
        };
        ApiError::Validation(message, vec![detail])
    })
}

/// The field (or position) and the reason, from serde's error.
fn detail_of(path: &str, error: &serde_json::Error) -> Detail {
    // serde_json's text ends with the position, which `details` gives apart.
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let reason = text.strip_suffix(&position).unwrap_or(&text).to_owned();
    let within = |field: &str| match path {
        "." => field.to_owned(),
        _ => format!("{path}.{field}"),
    };
    let quoted = |prefix: &str| {
        reason
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, rest)| (name.to_owned(), rest.to_owned()))
    };
    if let Some((name, _)) = quoted("missing field `") {
        return Detail::field(&within(&name), "is required");
    }
    if let Some((name, rest)) = quoted("unknown field `") {
        // The path already ends at the unknown field.
        let field = if path.ends_with(name.as_str()) {
            path.to_owned()
        } else {
            within(&name)
        };
        let expected = rest.trim_start_matches(", ");
        return Detail::field(&field, format!("unknown field; {expected}"));
    }
    let mut detail = Detail::field(path, reason);
    if path == "." {
        detail.field = None;
    }
    if error.is_syntax() || error.is_eof() {
        detail.line = u32::try_from(error.line()).ok();
        detail.column = u32::try_from(error.column()).ok();
    }
    detail
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only parsed")]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only parsed")]
    struct Inner {
        n: u32,
    }

    fn detail(body: &str) -> Detail {
        match parse_json::<Body>("the body", body.as_bytes()) {
            Err(ApiError::Validation(_, details)) => details[0].clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_body_error_says_where_and_why() {
        let missing = detail("{}");
        assert_eq!(
            (missing.field.as_deref(), missing.message.as_str()),
            (Some("name"), "is required")
        );
        let unknown = detail(r#"{"name": "a", "nmae": "b"}"#);
        assert_eq!(unknown.field.as_deref(), Some("nmae"));
        assert!(
            unknown
                .message
                .starts_with("unknown field; expected `name`"),
            "{}",
            unknown.message
        );
        let nested = detail(r#"{"name": "a", "inner": {}}"#);
        assert_eq!(nested.field.as_deref(), Some("inner.n"));
        let typed = detail(r#"{"name": 5}"#);
        assert_eq!(typed.field.as_deref(), Some("name"));
        assert!(
            typed.message.starts_with("invalid type: integer `5`"),
            "{}",
            typed.message
        );
        assert!(!typed.message.contains("line"), "{}", typed.message);
        let broken = detail("{\n  \"name\": ");
        assert_eq!((broken.line, broken.column), (Some(2), Some(10)));
        let garbage = detail("name=x");
        assert_eq!(garbage.field, None);
        assert_eq!((garbage.line, garbage.column), (Some(1), Some(2)));
    }

    #[test]
    fn json_is_application_json_or_a_json_suffix() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            says_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("text/plain"));
        assert!(!says_json(&HeaderMap::new()));
    }
}

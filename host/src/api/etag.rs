//! Strong ETags for single resources: `If-None-Match` on reads gives 304,
//! `If-Match` on writes gives 412 when the caller's copy is stale.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;

/// The ETag of a representation: a hash of exactly the bytes sent, so it
/// changes whenever anything a client can see changes.
pub fn of_bytes(bytes: &[u8]) -> String {
    let hash = blake3::hash(bytes).to_hex();
    format!("\"{}\"", &hash.as_str()[..32])
}

/// The ETag of a value as it is rendered to JSON.
pub fn of_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_vec(value)
        .map(|bytes| of_bytes(&bytes))
        .map_err(|e| ApiError::Internal(format!("cannot render a response: {e}")))
}

/// Tags in an `If-Match` / `If-None-Match` list, without weak markers.
fn listed(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").to_string())
        .filter(|t| !t.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// `If-Match` against the current ETag: `412 PRECONDITION_FAILED` if the
/// client's copy is stale. No header means no precondition.
pub fn check_if_match(headers: &HeaderMap, current: &str) -> Result<(), ApiError> {
    match listed(headers, header::IF_MATCH) {
        Some(tags) if !tags.iter().any(|t| t == "*" || t == current) => {
            Err(ApiError::PreconditionFailed(format!(
                "the resource changed: its ETag is now {current}"
            )))
        }
        _ => Ok(()),
    }
}

/// Inside a store's compare-and-swap: the record about to be changed is
/// still the one an `If-Match` was checked against (`seen`; `None` when the
/// request had no precondition), else the write is refused (412), so the
/// precondition holds for what is written, not only for what was read.
pub fn unchanged<T: PartialEq>(
    seen: Option<&T>,
    current: &T,
    what: &str,
) -> Result<(), crate::store::StoreError> {
    match seen {
        Some(seen) if seen != current => Err(crate::store::StoreError::Refused(format!(
            "the {what} changed while this request was being handled"
        ))),
        _ => Ok(()),
    }
}

/// A 200 response carrying `body` and its ETag, or a bare 304 when the
/// client's `If-None-Match` already names that ETag.
pub fn respond(
    headers: &HeaderMap,
    tag: &str,
    content_type: &'static str,
    body: impl IntoResponse,
) -> Response {
    let value = HeaderValue::from_str(tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let fresh = listed(headers, header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.iter().any(|t| t == "*" || t == tag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, value)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, value),
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        ],
        body,
    )
        .into_response()
}

/// A JSON single resource with its ETag (see [`respond`]).
pub fn json<T: Serialize>(headers: &HeaderMap, value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("cannot render a response: {e}")))?;
    let tag = of_bytes(&body);
    Ok(respond(headers, &tag, JSON, body))
}

pub const JSON: &str = "application/json; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_under_a_precondition_is_refused_if_the_record_moved_meanwhile() {
        assert!(unchanged(Some(&1), &1, "schedule").is_ok());
        assert!(unchanged(None, &2, "schedule").is_ok(), "no precondition");
        let refused = unchanged(Some(&1), &2, "schedule");
        assert!(
            matches!(refused, Err(crate::store::StoreError::Refused(m)) if m.contains("schedule"))
        );
    }

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_hits_give_304_and_misses_200() {
        let tag = of_bytes(b"x");
        let hit = respond(
            &with(header::IF_NONE_MATCH, &format!("\"a\", {tag}")),
            &tag,
            JSON,
            b"x".to_vec(),
        );
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        let weak = respond(
            &with(header::IF_NONE_MATCH, &format!("W/{tag}")),
            &tag,
            JSON,
            b"x".to_vec(),
        );
        assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
        let miss = respond(
            &with(header::IF_NONE_MATCH, "\"other\""),
            &tag,
            JSON,
            b"x".to_vec(),
        );
        assert_eq!(miss.status(), StatusCode::OK);
        assert_eq!(miss.headers()[header::ETAG], tag.as_str());
    }

    #[test]
    fn if_match_refuses_stale_tags_only() {
        let tag = of_bytes(b"x");
        assert!(check_if_match(&HeaderMap::new(), &tag).is_ok());
        assert!(check_if_match(&with(header::IF_MATCH, &tag), &tag).is_ok());
        assert!(check_if_match(&with(header::IF_MATCH, "*"), &tag).is_ok());
        let stale = check_if_match(&with(header::IF_MATCH, "\"old\""), &tag);
        assert!(matches!(stale, Err(ApiError::PreconditionFailed(_))));
    }
}

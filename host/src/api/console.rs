//! The web console: `GET /` and `/assets/{file}`, the files `console/`
//! builds into (host/build.rs), embedded in the binary. It calls only the
//! public API, with the signed-in user's own token, so it has no access of
//! its own; these routes serve static files to anyone.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, ApiPath};

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Only the page's own script and style sheets run, by the nonce index.html
/// carries on them (not merely anything from this origin: HTTP functions
/// share it), and the editor's `<style>` elements, which carry it too;
/// nothing from another origin, no framing. `{nonce}` is filled in per page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'nonce-{nonce}'; \
    style-src 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Where index.html takes the page's nonce: on its script and style sheet,
/// and in a `<meta>` the editor reads (CodeMirror mounts its styles in
/// `<style>` elements).
const NONCE_SLOT: &str = "__CSP_NONCE__";

/// The console's routes, for `router` to merge when `server.console`
/// is on.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

/// The page, with a fresh nonce in its policy and its `<meta>`; never
/// cached, since no two are the same.
async fn index() -> Response {
    let Some((_, bytes)) = ASSETS.iter().find(|(name, _)| *name == "index.html") else {
        return ApiError::NotFound("this kiln was built without the web console".into())
            .into_response();
    };
    let nonce = match nonce() {
        Ok(nonce) => nonce,
        Err(e) => return ApiError::Internal(format!("no random nonce: {e}")).into_response(),
    };
    // Never a page without its policy.
    let Ok(policy) = HeaderValue::from_str(&CONTENT_SECURITY_POLICY.replace("{nonce}", &nonce))
    else {
        return ApiError::Internal("the console's policy is not a header value".into())
            .into_response();
    };
    let page = String::from_utf8_lossy(bytes).replace(NONCE_SLOT, &nonce);
    let mut response = ([(header::CONTENT_TYPE, content_type("index.html"))], page).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    // A page opened from an HTTP function (same origin) gets no handle on
    // the console's window, and the console none on it.
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    guard(headers);
    response
}

/// 128 random bits, base64.
fn nonce() -> Result<String, getrandom::Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// What every console answer carries: no sniffing, no framing, no referrer.
fn guard(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

async fn asset(ApiPath(file): ApiPath<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return ApiError::NotFound(format!("no console asset {file:?}")).into_response();
    }
    serve(&file, &headers).unwrap_or_else(|e| e.into_response())
}

/// Each asset with its ETag, computed once.
fn table() -> &'static [(&'static str, &'static [u8], String)] {
    static TABLE: OnceLock<Vec<(&str, &[u8], String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|&(name, bytes)| {
                let hash = blake3::hash(bytes).to_hex();
                (name, bytes, format!("\"{}\"", &hash[..32]))
            })
            .collect()
    })
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// One asset, or 304 when the client's copy is current. Names are not
/// hashed, so every use revalidates (`no-cache`): a new binary's console is
/// seen at the next load. The page itself is `index`'s.
fn serve(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let Some((_, bytes, etag)) = table().iter().find(|(n, _, _)| *n == name) else {
        return Err(ApiError::NotFound(format!("no console asset {name:?}")));
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type(name))], *bytes).into_response()
    };
    let headers = response.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    headers.insert(header::ETAG, value(etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    guard(headers);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_embedded_whole() {
        let names: Vec<&str> = ASSETS.iter().map(|(name, _)| *name).collect();
        for needed in ["index.html", "app.js", "app.css", "favicon.svg"] {
            assert!(names.contains(&needed), "{needed} missing from {names:?}");
        }
        let index = ASSETS
            .iter()
            .find(|(n, _)| *n == "index.html")
            .map(|(_, b)| *b);
        let index = String::from_utf8_lossy(index.unwrap_or_default());
        assert!(index.contains("/assets/app.js") && !index.contains("<script>"));
    }

    #[tokio::test]
    async fn each_page_gets_a_fresh_nonce_that_its_policy_names() {
        async fn page() -> (String, String) {
            let response = index().await;
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers();
            assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let policy = headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            (policy, String::from_utf8_lossy(&body).into_owned())
        }
        let (policy, body) = page().await;
        let nonce = policy
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(nonce.len(), 24, "{policy}");
        assert!(policy.contains("script-src 'nonce-") && !policy.contains("'unsafe"));
        // On the script, the style sheet and the editor's <meta>.
        assert_eq!(body.matches(&nonce).count(), 3, "{body}");
        assert!(!body.contains(NONCE_SLOT));
        let (again, _) = page().await;
        assert!(!again.contains(&nonce), "a nonce is never reused");
    }

    #[test]
    fn a_current_copy_is_not_sent_again() {
        let first = serve("app.css", &HeaderMap::new()).map(|r| r.status());
        assert_eq!(first.ok(), Some(StatusCode::OK));
        let etag = table()
            .iter()
            .find(|(n, _, _)| *n == "app.css")
            .map(|t| t.2.clone());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&etag.unwrap_or_default())
                .unwrap_or(HeaderValue::from_static("")),
        );
        let again = serve("app.css", &headers).map(|r| r.status());
        assert_eq!(again.ok(), Some(StatusCode::NOT_MODIFIED));
        assert!(serve("nope.js", &HeaderMap::new()).is_err());
    }
}

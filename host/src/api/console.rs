//! The web console: `GET /` and `/assets/{file}`, the files `console/`
//! builds into (host/build.rs), embedded in the binary. It calls only the
//! public API, with the signed-in user's own token, so it has no access of
//! its own; these routes serve static files to anyone.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, ApiPath, etag};

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
fn nonce() -> Result<String, crate::auth::secrets::SecretError> {
    use base64::Engine as _;
    let bytes = crate::auth::secrets::random_bytes::<16>()?;
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

/// One embedded file as served: its bytes and ETag, and the same gzipped
/// with its own ETag (text files only), made once per process so that no
/// request compresses 0.6 MB again (these routes are open to anyone).
struct Asset {
    name: &'static str,
    bytes: &'static [u8],
    etag: String,
    gzip: Option<(Vec<u8>, String)>,
}

fn table() -> &'static [Asset] {
    static TABLE: OnceLock<Vec<Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|&(name, bytes)| {
                let gzip = (content_type(name) != "application/octet-stream")
                    .then(|| gzipped(bytes))
                    .flatten()
                    .map(|zipped| {
                        let tag = etag::of_bytes(&zipped);
                        (zipped, tag)
                    });
                Asset {
                    name,
                    bytes,
                    etag: etag::of_bytes(bytes),
                    gzip,
                }
            })
            .collect()
    })
}

fn gzipped(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// Whether `Accept-Encoding` takes gzip (and does not refuse it with `q=0`).
fn takes_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
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

/// One asset, gzipped when the client takes it, or 304 when its copy is
/// current. Names are not hashed, so every use revalidates (`no-cache`): a
/// new binary's console is seen at the next load. The page itself is
/// `index`'s.
fn serve(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let Some(asset) = table().iter().find(|a| a.name == name) else {
        return Err(ApiError::NotFound(format!("no console asset {name:?}")));
    };
    let kind = content_type(name);
    let mut response = match &asset.gzip {
        Some((zipped, tag)) if takes_gzip(request) => {
            let mut response = etag::respond(request, tag, kind, zipped.as_slice());
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        _ => etag::respond(request, &asset.etag, kind, asset.bytes),
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    guard(headers);
    Ok(response)
}

#[cfg(all(test, not(kiln_no_console)))]
mod tests {
    use axum::http::StatusCode;

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
    fn a_current_copy_is_not_sent_again_and_gzip_is_made_once() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(
                    name,
                    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
                );
            }
            map
        };
        let plain = serve("app.js", &HeaderMap::new()).ok();
        let plain = plain.map(|r| (r.status(), r.headers().clone()));
        let (status, plain) = plain.unwrap_or_default();
        assert_eq!(status, StatusCode::OK);
        assert!(plain.get(header::CONTENT_ENCODING).is_none());
        let zipped = serve(
            "app.js",
            &headers(&[(header::ACCEPT_ENCODING, "br, gzip;q=0.8")]),
        );
        let zipped = zipped.map(|r| r.headers().clone()).unwrap_or_default();
        assert_eq!(zipped[header::CONTENT_ENCODING], "gzip");
        assert_ne!(
            zipped[header::ETAG],
            plain[header::ETAG],
            "one tag per representation"
        );
        let refused = serve("app.js", &headers(&[(header::ACCEPT_ENCODING, "gzip;q=0")]));
        assert!(
            refused
                .map(|r| r.headers().get(header::CONTENT_ENCODING).is_none())
                .unwrap_or(false)
        );
        // The gzipped copy is the file.
        let asset = table().iter().find(|a| a.name == "app.js");
        let unzipped = asset.and_then(|a| a.gzip.as_ref()).map(|(z, _)| {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(z.as_slice())
                .read_to_end(&mut out)
                .map(|_| out)
                .ok()
        });
        assert_eq!(unzipped.flatten().as_deref(), asset.map(|a| a.bytes));

        let tag = plain[header::ETAG].to_str().unwrap_or_default().to_owned();
        let again = serve("app.js", &headers(&[(header::IF_NONE_MATCH, &tag)]));
        assert_eq!(
            again.map(|r| r.status()).ok(),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert!(serve("nope.js", &HeaderMap::new()).is_err());
    }
}

#[cfg(all(test, kiln_no_console))]
mod without_files {
    #[tokio::test]
    async fn the_page_says_there_is_no_console() {
        let response = super::index().await;
        assert_eq!(response.status(), axum::http::StatusCode::NOT_FOUND);
    }
}

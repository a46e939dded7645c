//! HTTP around the API: CORS for the configured origins only, and
//! compression when the client asks for it, never for event streams.

use std::io::Read as _;

use axum::http::Method;
use serde_json::json;

use super::TestApp;

const CONSOLE: &str = "https://console.example";

fn preflight<'a>(app: &'a TestApp, path: &str, origin: &str) -> super::Call<'a> {
    app.anonymous(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
}

#[tokio::test]
async fn without_configured_origins_no_page_may_call_the_api() {
    let app = TestApp::new().await;
    let answer = app
        .get("/v1/scripts")
        .header("origin", CONSOLE)
        .send()
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.header("access-control-allow-origin"), "");
    let preflight = preflight(&app, "/v1/scripts", CONSOLE).send().await;
    assert_ne!(preflight.status(), 200);
    assert_eq!(preflight.header("access-control-allow-origin"), "");
}

#[tokio::test]
async fn a_configured_origin_gets_preflights_and_readable_answers() {
    let app = TestApp::with(|c| c.server.cors_origins = vec![CONSOLE.into()]).await;
    // The preflight has no credential and is answered before the guard.
    let answer = preflight(&app, "/v1/scripts", CONSOLE).send().await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.header("access-control-allow-origin"), CONSOLE);
    assert!(
        answer
            .header("access-control-allow-methods")
            .contains("POST")
    );
    let headers = answer.header("access-control-allow-headers");
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(answer.header("access-control-max-age"), "600");

    let listed = app
        .get("/v1/scripts")
        .header("origin", CONSOLE)
        .send()
        .await;
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.header("access-control-allow-origin"), CONSOLE);
    assert!(
        listed
            .header("access-control-expose-headers")
            .contains("x-request-id")
    );
    // An error is readable too, so the page can show it.
    let refused = app
        .anonymous(Method::GET, "/v1/scripts")
        .header("origin", CONSOLE)
        .send()
        .await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.header("access-control-allow-origin"), CONSOLE);

    // Another origin gets nothing that lets its page read the answer.
    let other = preflight(&app, "/v1/scripts", "https://evil.example")
        .send()
        .await;
    assert_eq!(other.header("access-control-allow-origin"), "");
    let other = app
        .get("/v1/scripts")
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(other.header("access-control-allow-origin"), "");
    // HTTP functions answer their own preflights: this one does not exist.
    let function = preflight(&app, "/fn/nope/", CONSOLE).send().await;
    assert_eq!(function.status(), 404, "{}", function.text());
    assert_eq!(function.header("access-control-allow-origin"), "");
}

#[tokio::test]
async fn answers_are_compressed_as_asked_and_event_streams_never() {
    let app = TestApp::new().await;
    for i in 0..5 {
        app.create_script(
            &format!("s{i}"),
            "javascript",
            "function main() { return 1; }",
        )
        .await;
    }
    let plain = app.get("/v1/scripts").send().await;
    assert_eq!(plain.header("content-encoding"), "");
    let gzipped = app
        .get("/v1/scripts")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(gzipped.status(), 200);
    assert_eq!(gzipped.header("content-encoding"), "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gzipped.bytes())
        .read_to_string(&mut text)
        .unwrap();
    let decoded: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(decoded["data"], plain.json()["data"]);
    assert!(gzipped.bytes().len() < plain.bytes().len());
    for (asked, given) in [("br", "br"), ("zstd", "zstd"), ("zstd;q=0.5, br;q=1", "br")] {
        let answer = app
            .get("/v1/scripts")
            .header("accept-encoding", asked)
            .send()
            .await;
        assert_eq!(answer.header("content-encoding"), given, "{asked}");
    }

    let run = app.run("s0", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let events = app
        .get(&format!("/v1/executions/{id}/events"))
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(events.status(), 200);
    assert!(
        events
            .header("content-type")
            .starts_with("text/event-stream")
    );
    assert_eq!(
        events.header("content-encoding"),
        "",
        "SSE goes as it is written"
    );
    assert!(events.text().contains("event: done"));
}

#[cfg(not(kiln_no_console))]
#[tokio::test]
async fn the_console_is_served_at_the_root_and_can_be_turned_off() {
    let app = TestApp::new().await;
    let page = app.anonymous(Method::GET, "/").send().await;
    assert_eq!(page.status(), 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'nonce-")
    );
    assert_eq!(page.header("cross-origin-opener-policy"), "same-origin");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert!(page.text().contains("/assets/app.js"));

    let css = app.anonymous(Method::GET, "/assets/app.css").send().await;
    assert_eq!(css.status(), 200);
    assert!(css.header("content-type").starts_with("text/css"));
    let etag = css.header("etag");
    let again = app
        .anonymous(Method::GET, "/assets/app.css")
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(again.status(), 304);
    // The page's template (its nonce slot unfilled) and anything outside
    // the table are not files to be had.
    for path in [
        "/assets/index.html",
        "/assets/..%2FCargo.toml",
        "/assets/nope.js",
    ] {
        app.anonymous(Method::GET, path)
            .send()
            .await
            .error(404, "RESOURCE_NOT_FOUND");
    }

    let off = TestApp::with(|c| c.server.console = false).await;
    for path in ["/", "/assets/app.js"] {
        off.anonymous(Method::GET, path)
            .send()
            .await
            .error(404, "RESOURCE_NOT_FOUND");
    }
}

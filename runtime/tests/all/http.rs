//! HTTP functions: the `http_hello` component (built with the `wasi` crate)
//! answering requests through `Sandbox::handle`, and stopped by the limits.

use std::time::Duration;

use bytes::Bytes;
use kiln_runtime::{CancelHandle, ErrorCode, HttpInvocation, HttpOutcome, Limits, Shape, Status};

use super::{read_guest, sandbox};

async fn send(request: http::Request<Bytes>, limits: Limits) -> HttpOutcome {
    send_with(request, limits, 1 << 20, None).await
}

async fn send_with(
    request: http::Request<Bytes>,
    limits: Limits,
    max_response_bytes: usize,
    cancel: Option<CancelHandle>,
) -> HttpOutcome {
    let (artifact, _) = sandbox()
        .load(&read_guest(kiln_components::HTTP_HELLO))
        .unwrap();
    assert_eq!(artifact.shape(), Shape::Http);
    sandbox()
        .handle(
            &artifact,
            HttpInvocation {
                request,
                env: vec![("GREETING".into(), "hi".into())],
                limits,
                max_response_bytes,
                cancel,
                egress: None,
            },
        )
        .await
        .unwrap()
}

fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(format!("http://fn.test{path}"))
        .body(Bytes::new())
        .unwrap()
}

fn short(timeout_ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        ..Limits::default()
    }
}

#[tokio::test]
async fn method_path_headers_and_body_reach_the_guest_and_its_answer_comes_back() {
    let request = http::Request::put("http://fn.test/echo?a=1")
        .header("x-one", "1")
        .header("content-type", "text/plain")
        .body(Bytes::from_static(b"the body"))
        .unwrap();
    let HttpOutcome { outcome, response } = send(request, Limits::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    let response = response.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echoed"], "1");
    assert_eq!(
        std::str::from_utf8(response.body()).unwrap(),
        "PUT /echo?a=1\nx-one: 1\n\nthe body"
    );
    assert_eq!(outcome.result.as_deref(), Some(r#"{"status":201}"#));
    assert!(outcome.fuel_consumed > 0);
}

#[tokio::test]
async fn the_status_the_guest_chooses_is_kept_and_output_is_captured() {
    let HttpOutcome { outcome, response } = send(get("/status?418"), Limits::default()).await;
    assert_eq!(response.unwrap().status(), 418);
    assert_eq!(outcome.status, Status::Completed);

    let HttpOutcome { outcome, .. } = send(get("/print"), Limits::default()).await;
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "to stdout\n");
    assert_eq!(String::from_utf8_lossy(&outcome.stderr), "to stderr\n");
}

#[tokio::test]
async fn a_spinning_function_is_stopped_at_the_deadline_and_by_fuel() {
    let HttpOutcome { outcome, response } = send(get("/spin"), short(200)).await;
    assert_eq!(outcome.status, Status::Timeout);
    assert!(response.is_none());

    let limits = Limits {
        fuel: Some(50_000_000),
        ..Limits::default()
    };
    let HttpOutcome { outcome, .. } = send(get("/spin"), limits).await;
    assert_eq!(outcome.error_code(), Some(ErrorCode::FuelExhausted));
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_at_the_cap() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let HttpOutcome { outcome, response } = send(get("/grow"), limits).await;
    assert_eq!(
        outcome.error_code(),
        Some(ErrorCode::MemoryLimit),
        "{:?}",
        outcome.error
    );
    assert!(outcome.peak_memory_bytes <= 32 << 20);
    assert!(response.is_none());
}

#[tokio::test]
async fn header_fields_the_host_would_hold_are_capped_as_memory() {
    // 60 KB values pass the size of one set of fields; 15 KB ones fit it,
    // and the 8 000 sets pass the number of resources a run may hold.
    for size in [60 << 10, 15 << 10] {
        let HttpOutcome { outcome, response } =
            send(get(&format!("/fields?{size}")), Limits::default()).await;
        assert_eq!(
            outcome.error_code(),
            Some(ErrorCode::MemoryLimit),
            "{size}: {:?}",
            outcome.error
        );
        assert!(response.is_none());
    }
}

/// Any component may import `wasi:http` (its requests go through the run's
/// egress: the `fetch` guest, `egress.rs`); an import the sandbox does not
/// offer is refused when the component is loaded.
#[tokio::test]
async fn an_import_the_sandbox_does_not_offer_is_refused_at_load() {
    let unknown = br#"(component
        (import "wasi:sockets/tcp@0.2.0" (instance (export "nothing" (type (sub resource))))))"#;
    let err = sandbox().load(unknown).unwrap_err();
    assert!(
        matches!(err, kiln_runtime::Error::Link(ref m) if m.contains("wasi:sockets/tcp")),
        "{err}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_fails_the_request_without_waiting_for_the_deadline() {
    let started = std::time::Instant::now();
    let HttpOutcome { outcome, response } =
        send_with(get("/big?4"), short(10_000), 1 << 20, None).await;
    assert_eq!(outcome.error_code(), Some(ErrorCode::ResponseError));
    assert!(
        outcome
            .error
            .unwrap()
            .message
            .contains("larger than 1048576 bytes"),
    );
    assert!(response.is_none());
    assert!(started.elapsed() < Duration::from_secs(5));

    let HttpOutcome { outcome, response } =
        send_with(get("/big?4"), Limits::default(), 8 << 20, None).await;
    assert_eq!(outcome.status, Status::Completed);
    assert_eq!(response.unwrap().body().len(), 4 << 20);
}

#[tokio::test]
async fn returning_without_a_response_is_a_response_error() {
    let HttpOutcome { outcome, response } = send(get("/none"), short(5_000)).await;
    assert_eq!(outcome.error_code(), Some(ErrorCode::ResponseError));
    assert!(response.is_none());
}

#[tokio::test]
async fn outgoing_requests_are_refused() {
    let HttpOutcome { outcome, response } = send(get("/fetch"), Limits::default()).await;
    assert_eq!(outcome.status, Status::Completed);
    let body = response.unwrap().into_body();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "refused: ErrorCode::HttpRequestDenied"
    );
}

#[tokio::test]
async fn a_cancelled_request_stops() {
    let cancel = CancelHandle::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stopper.cancel();
    });
    let HttpOutcome { outcome, .. } =
        send_with(get("/spin"), short(10_000), 1 << 20, Some(cancel)).await;
    assert_eq!(outcome.status, Status::Cancelled);
}

#[tokio::test]
async fn a_command_is_not_an_http_function() {
    let (artifact, _) = sandbox().load(&read_guest(kiln_components::HELLO)).unwrap();
    let err = sandbox()
        .handle(
            &artifact,
            HttpInvocation {
                request: get("/"),
                env: Vec::new(),
                limits: Limits::default(),
                max_response_bytes: 1024,
                cancel: None,
                egress: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Command"), "{err}");
}

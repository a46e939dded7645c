//! Outbound HTTP through an [`Egress`]: a component's `wasi:http` request
//! and a script's `fetch` both reach the embedder's one implementation, and
//! without an egress every request is refused.

use std::sync::{Arc, Mutex};

use kiln_runtime::{
    Artifact, Egress, EgressError, EgressErrorKind, EgressFuture, EgressRequest, EgressResponse,
    Invocation, Limits, Outcome, Status,
};

use super::{read_guest, sandbox, script, text};

type Answer = fn(&EgressRequest) -> Result<EgressResponse, EgressError>;

/// An egress that answers from a function and keeps what it was sent.
pub(super) struct FakeEgress {
    pub(super) seen: Mutex<Vec<EgressRequest>>,
    answer: Answer,
}

impl FakeEgress {
    pub(super) fn new(answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::default(),
            answer,
        })
    }

    pub(super) fn seen(&self) -> Vec<EgressRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Egress for FakeEgress {
    fn send(&self, request: EgressRequest) -> EgressFuture {
        let answer = (self.answer)(&request);
        self.seen.lock().unwrap().push(request);
        Box::pin(async move { answer })
    }

    fn max_request_body_bytes(&self) -> usize {
        1 << 10
    }
}

/// Echoes the request: its method, URL, headers and body as JSON.
pub(super) fn echo(request: &EgressRequest) -> Result<EgressResponse, EgressError> {
    let body = serde_json::json!({
        "method": request.method,
        "url": request.url,
        "headers": request.headers,
        "body": String::from_utf8_lossy(&request.body),
        "timeout_ms": request.timeout.map(|t| t.as_millis() as u64),
    });
    Ok(EgressResponse {
        status: 201,
        url: request.url.clone(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-seen".into(), "yes".into()),
        ],
        body: body.to_string().into_bytes(),
    })
}

pub(super) fn refuse(request: &EgressRequest) -> Result<EgressResponse, EgressError> {
    Err(EgressError::new(
        EgressErrorKind::Denied,
        format!("{} is not in the script's allowed hosts", request.url),
    ))
}

async fn run_fetch_guest(env: &[(&str, &str)], egress: Option<Arc<dyn Egress>>) -> Outcome {
    let (artifact, _) = sandbox().load(&read_guest(kiln_components::FETCH)).unwrap();
    let invocation = Invocation {
        args: vec!["fetch".into()],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        egress,
        ..Invocation::default()
    };
    sandbox().run(&artifact, invocation).await.unwrap()
}

#[tokio::test]
pub(super) async fn a_components_request_goes_through_the_egress_with_its_body() {
    let egress = FakeEgress::new(echo);
    let outcome = run_fetch_guest(
        &[
            ("FETCH_URL", "http://api.test:8080/items?q=1"),
            ("FETCH_BODY", "hello"),
        ],
        Some(egress.clone()),
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    let stdout = text(&outcome.stdout);
    assert!(stdout.starts_with("status 201\n"), "{stdout}");
    let seen = egress.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].url, "http://api.test:8080/items?q=1");
    assert_eq!(seen[0].body, b"hello");
    assert!(stdout.contains(r#""body":"hello""#), "{stdout}");
}

#[tokio::test]
async fn a_component_without_an_egress_is_refused() {
    let outcome = run_fetch_guest(&[("FETCH_URL", "http://api.test/")], None).await;
    assert_eq!(
        text(&outcome.stdout),
        "error ErrorCode::HttpRequestDenied\n"
    );
    assert_eq!(outcome.status, Status::Failed);
}

#[tokio::test]
async fn a_refusal_reaches_the_component_as_its_error_code() {
    let egress = FakeEgress::new(refuse);
    let outcome = run_fetch_guest(&[("FETCH_URL", "http://elsewhere.test/")], Some(egress)).await;
    assert_eq!(
        text(&outcome.stdout),
        "error ErrorCode::HttpRequestDenied\n"
    );
}

#[tokio::test]
async fn a_request_body_past_the_egress_cap_is_refused_before_it_is_sent() {
    let egress = FakeEgress::new(echo);
    let big = "x".repeat(2 << 10);
    let outcome = run_fetch_guest(
        &[("FETCH_URL", "http://api.test/"), ("FETCH_BODY", &big)],
        Some(egress.clone()),
    )
    .await;
    assert_eq!(
        text(&outcome.stdout),
        "error ErrorCode::HttpRequestBodySize(None)\n",
        "{outcome:?}"
    );
    assert!(egress.seen().is_empty());
}

async fn run_script_with_egress(
    runtime: &Artifact,
    source: &str,
    egress: Option<Arc<dyn Egress>>,
) -> Outcome {
    let invocation = Invocation {
        limits: Limits::default(),
        egress,
        ..script(source, "{}")
    };
    sandbox().run(runtime, invocation).await.unwrap()
}

#[tokio::test]
async fn javascript_fetch_sends_and_reads_a_response() {
    let egress = FakeEgress::new(echo);
    let source = r#"
        export default async function () {
          const r = await fetch("http://api.test/x", {
            method: "post",
            headers: { "X-Token": "abc" },
            body: JSON.stringify({ a: 1 }),
            signal: AbortSignal.timeout(1500),
          });
          const seen = await r.json();
          return { status: r.status, ok: r.ok, type: r.headers.get("Content-Type"),
                   seen: r.headers.get("x-seen"), used: r.bodyUsed, echo: seen };
        }"#;
    let outcome =
        run_script_with_egress(&super::javascript::runtime(), source, Some(egress.clone())).await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    let result: serde_json::Value =
        serde_json::from_str(outcome.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["status"], 201);
    assert_eq!(result["ok"], true);
    assert_eq!(result["type"], "application/json");
    assert_eq!(result["seen"], "yes");
    assert_eq!(result["used"], true);
    assert_eq!(result["echo"]["method"], "POST");
    assert_eq!(result["echo"]["body"], r#"{"a":1}"#);
    assert_eq!(result["echo"]["timeout_ms"], 1500);
    let headers = &egress.seen()[0].headers;
    assert!(
        headers.contains(&("x-token".into(), "abc".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("content-type".into(), "text/plain;charset=UTF-8".into())),
        "{headers:?}"
    );
}

#[tokio::test]
async fn javascript_fetch_rejects_with_the_hosts_reason() {
    let source = r#"
        export default async function () {
          try { await fetch("http://elsewhere.test/"); return "fetched"; }
          catch (e) { return { name: e.name, message: e.message, cause: e.cause }; }
        }"#;
    let runtime = super::javascript::runtime();
    let refused = run_script_with_egress(&runtime, source, Some(FakeEgress::new(refuse))).await;
    assert_eq!(
        refused.result.as_deref(),
        Some(
            r#"{"name":"TypeError","message":"fetch http://elsewhere.test/: http://elsewhere.test/ is not in the script's allowed hosts","cause":"denied"}"#
        ),
        "{refused:?}"
    );
    let without = run_script_with_egress(&runtime, source, None).await;
    assert!(
        without
            .result
            .as_deref()
            .is_some_and(|r| r.contains("outbound HTTP is not enabled for this run")),
        "{without:?}"
    );
}

#[tokio::test]
async fn javascript_text_encoder_and_decoder_round_trip_utf8() {
    let source = r#"
        function main() {
          const bytes = new TextEncoder().encode("héllo ✓");
          const strict = new TextDecoder("utf-8", { fatal: true });
          let refused = null;
          try { strict.decode(new Uint8Array([0xff])); } catch (e) { refused = e.name; }
          return { length: bytes.length, back: new TextDecoder().decode(bytes),
                   lossy: new TextDecoder().decode(new Uint8Array([0x61, 0xff])),
                   bom: new TextDecoder().decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x62])), refused };
        }"#;
    let outcome = run_script_with_egress(&super::javascript::runtime(), source, None).await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"length":10,"back":"héllo ✓","lossy":"a�","bom":"b","refused":"TypeError"}"#),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn python_kiln_http_sends_and_reads_a_response() {
    let egress = FakeEgress::new(echo);
    let source = r#"
import kiln.http

def main():
    r = kiln.http.post("http://api.test/x", params={"q": "a b"}, json={"a": 1},
                       headers={"X-Token": "abc"}, timeout=1.5)
    r.raise_for_status()
    return {"status": r.status_code, "ok": r.ok, "type": r.headers["Content-Type"],
            "echo": r.json()}
"#;
    let outcome =
        run_script_with_egress(&super::python::runtime(), source, Some(egress.clone())).await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    let result: serde_json::Value =
        serde_json::from_str(outcome.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["status"], 201);
    assert_eq!(result["type"], "application/json");
    assert_eq!(result["echo"]["method"], "POST");
    assert_eq!(result["echo"]["url"], "http://api.test/x?q=a+b");
    assert_eq!(result["echo"]["body"], r#"{"a": 1}"#);
    assert_eq!(result["echo"]["timeout_ms"], 1500);
    let headers = &egress.seen()[0].headers;
    assert!(
        headers.contains(&("X-Token".into(), "abc".into())),
        "{headers:?}"
    );
}

#[tokio::test]
async fn python_kiln_http_raises_with_the_hosts_reason() {
    let source = r#"
import kiln.http

def main():
    try:
        kiln.http.get("http://elsewhere.test/")
    except kiln.http.HTTPError as e:
        return {"kind": e.kind, "message": str(e)}
"#;
    let outcome = run_script_with_egress(
        &super::python::runtime(),
        source,
        Some(FakeEgress::new(refuse)),
    )
    .await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(
            r#"{"kind": "denied", "message": "GET http://elsewhere.test/: http://elsewhere.test/ is not in the script's allowed hosts"}"#
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn oversized_fetch_headers_or_urls_are_refused_before_the_egress() {
    let egress = FakeEgress::new(echo);
    let source = r#"
        export default async function () {
          const out = [];
          for (const init of [[`http://api.test/${"p".repeat(9000)}`, {}],
                              ["http://api.test/", { headers: { "x-big": "v".repeat(17000) } }]]) {
            try { await fetch(...init); out.push("sent"); } catch (e) { out.push(e.cause); }
          }
          return out;
        }"#;
    let outcome =
        run_script_with_egress(&super::javascript::runtime(), source, Some(egress.clone())).await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"["limit","limit"]"#),
        "{outcome:?}"
    );
    assert!(egress.seen().is_empty());
}

//! Outbound HTTP, as the embedder allows it. A run reaches the network
//! only through the [`Egress`] its [`Invocation`](crate::Invocation) carries:
//! a component through `wasi:http/outgoing-handler`, a script through its
//! runtime's `kiln:language/http` import. Both become one [`EgressRequest`]
//! with its body read whole, so the embedder applies one policy (which hosts,
//! how many requests, how many bytes) to every kind of guest. This crate opens
//! no connection itself: without an `Egress` every request is refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use wasmtime_wasi_http::{RequestOptions, WasiBody};

use crate::bindings::kiln::language::http as wit;
use crate::wasi::{MAX_FIELDS_BYTES, State};

/// The longest URL a script's `fetch` may send (as browsers and most
/// servers accept).
const MAX_URL_BYTES: usize = 8 << 10;

/// One request a guest asked for, body included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRequest {
    /// The method, as the guest spelled it (`GET`, `POST`, …).
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// Header fields in the guest's order.
    pub headers: Vec<(String, String)>,
    /// The whole request body (empty for none).
    pub body: Vec<u8>,
    /// The guest's own time limit for this request, if it set one.
    pub timeout: Option<Duration>,
}

/// The answer to an [`EgressRequest`], body read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressResponse {
    /// The HTTP status.
    pub status: u16,
    /// Where the answer came from, after any redirects.
    pub url: String,
    /// Header fields as received.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressErrorKind {
    /// The policy refuses it: the host is not allowed, or its address is.
    Denied,
    /// A limit of the run was reached: requests, bytes, or a body too large.
    Limit,
    /// No answer within the request's time.
    Timeout,
    /// The connection failed or the answer was not HTTP.
    Network,
    /// The request itself is malformed (URL, method, header).
    Invalid,
}

/// Why a request got no answer, and a message for the script's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EgressError {
    /// What kind of failure.
    pub kind: EgressErrorKind,
    /// What happened, naming the rule or limit.
    pub message: String,
}

impl EgressError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: EgressErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What [`Egress::send`] returns: a future that owns what it needs.
pub type EgressFuture = Pin<Box<dyn Future<Output = Result<EgressResponse, EgressError>> + Send>>;

/// The embedder's side of one run's outbound HTTP. One value serves one run,
/// so it can count that run's requests and bytes and keep their log.
pub trait Egress: Send + Sync {
    /// Sends `request` if the policy allows it.
    fn send(&self, request: EgressRequest) -> EgressFuture;

    /// The largest request body accepted; a larger one fails before
    /// [`send`](Self::send) is called.
    fn max_request_body_bytes(&self) -> usize;
}

/// Refuses a request for a run without an egress.
fn no_egress() -> EgressError {
    EgressError::new(
        EgressErrorKind::Denied,
        "outbound HTTP is not enabled for this run",
    )
}

/// The `wasi:http` hooks of one run: outgoing requests go to its [`Egress`].
pub(crate) struct OutgoingHooks {
    pub(crate) egress: Option<Arc<dyn Egress>>,
}

pub(crate) type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl wasmtime_wasi_http::WasiHttpHooks for OutgoingHooks {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::wasi::OUTGOING_BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _finished: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Sent {
        let egress = self.egress.clone();
        Box::new(async move {
            let Some(egress) = egress else {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            };
            let request = outgoing_request(request, options, egress.max_request_body_bytes())
                .await
                .map_err(http_error)?;
            let response = egress.send(request).await.map_err(http_error)?;
            let response = incoming_response(response).map_err(http_error)?;
            let done: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// A `wasi:http` request as an [`EgressRequest`]: its body read whole (the
/// guest writes it meanwhile), up to `max_body` bytes.
async fn outgoing_request(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    max_body: usize,
) -> Result<EgressRequest, EgressError> {
    let (parts, body) = request.into_parts();
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = value.to_str().map_err(|_| {
            EgressError::new(
                EgressErrorKind::Invalid,
                format!("the value of header {name} is not visible ASCII"),
            )
        })?;
        headers.push((name.as_str().to_owned(), value.to_owned()));
    }
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                EgressError::new(
                    EgressErrorKind::Limit,
                    format!("the request body is over {max_body} bytes"),
                )
            } else {
                EgressError::new(
                    EgressErrorKind::Invalid,
                    format!("the request body failed: {e}"),
                )
            }
        })?
        .to_bytes();
    let timeout = options.and_then(|o| o.first_byte_timeout.or(o.connect_timeout));
    Ok(EgressRequest {
        method: parts.method.as_str().to_owned(),
        url: parts.uri.to_string(),
        headers,
        body: body.to_vec(),
        timeout,
    })
}

fn incoming_response(response: EgressResponse) -> Result<http::Response<WasiBody>, EgressError> {
    let invalid = |e: http::Error| {
        EgressError::new(
            EgressErrorKind::Network,
            format!("the response cannot be handed over: {e}"),
        )
    };
    let mut builder = http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = Full::new(Bytes::from(response.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    builder.body(body).map_err(invalid)
}

fn http_error(error: EgressError) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error as E;
    match error.kind {
        EgressErrorKind::Denied => E::HttpRequestDenied,
        EgressErrorKind::Timeout => E::ConnectionTimeout,
        EgressErrorKind::Invalid => E::HttpRequestUriInvalid,
        EgressErrorKind::Limit if error.message.contains("response") => {
            E::HttpResponseBodySize(None)
        }
        EgressErrorKind::Limit if error.message.contains("request body") => {
            E::HttpRequestBodySize(None)
        }
        EgressErrorKind::Limit => E::ConnectionLimitReached,
        EgressErrorKind::Network => E::InternalError(Some(error.message)),
    }
}

/// `kiln:language/http`: a script runtime's `fetch`, answered whole.
impl wit::Host for State {
    async fn fetch(&mut self, request: wit::Request) -> Result<wit::Response, wit::HttpError> {
        let Some(egress) = self.hooks.egress.clone() else {
            return Err(wit_error(no_egress()));
        };
        let max_body = egress.max_request_body_bytes();
        if request.body.len() > max_body {
            return Err(wit_error(EgressError::new(
                EgressErrorKind::Limit,
                format!("the request body is over {max_body} bytes"),
            )));
        }
        // The same caps a component's request meets in `wasi:http`: the
        // host holds these, so they are bounded before anything is built.
        let header_bytes: usize = request.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        if header_bytes > MAX_FIELDS_BYTES || request.url.len() > MAX_URL_BYTES {
            return Err(wit_error(EgressError::new(
                EgressErrorKind::Limit,
                format!(
                    "the request's headers are over {MAX_FIELDS_BYTES} bytes or its URL over {MAX_URL_BYTES}"
                ),
            )));
        }
        let request = EgressRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout: request
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.into())),
        };
        match egress.send(request).await {
            Ok(response) => Ok(wit::Response {
                status: response.status,
                url: response.url,
                headers: response.headers,
                body: response.body,
            }),
            Err(e) => Err(wit_error(e)),
        }
    }
}

fn wit_error(error: EgressError) -> wit::HttpError {
    let kind = match error.kind {
        EgressErrorKind::Denied => wit::ErrorKind::Denied,
        EgressErrorKind::Limit => wit::ErrorKind::Limit,
        EgressErrorKind::Timeout => wit::ErrorKind::Timeout,
        EgressErrorKind::Network => wit::ErrorKind::Network,
        EgressErrorKind::Invalid => wit::ErrorKind::Invalid,
    };
    wit::HttpError {
        kind,
        message: error.message,
    }
}

//! HTTP functions: one request into a `wasi:http/proxy` component, its
//! response collected whole under the same limits as any run.
//!
//! The response body is buffered, not streamed to the client: the outcome
//! (completed, trapped, out of fuel) is known before the first byte leaves,
//! so a function that fails half-way through its body never sends half a
//! body with a 200.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use tokio::sync::oneshot;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as HttpErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::artifact::{Artifact, Entry};
use crate::cancel::CancelHandle;
use crate::error::{Error, chain};
use crate::limits::Limits;
use crate::outcome::{self, Ending, ErrorCode, GuestError, Outcome, Status};
use crate::sandbox::{Sandbox, Usage, evidence};
use crate::stdin::Stdin;

/// One request to an HTTP function.
pub struct HttpInvocation {
    /// The request as the guest sees it; its URI must carry an authority
    /// (or the request a `Host` header).
    pub request: http::Request<Bytes>,
    /// The complete environment the guest sees.
    pub env: Vec<(String, String)>,
    /// Resource limits for this request.
    pub limits: Limits,
    /// The largest response body kept; a larger one fails the request.
    pub max_response_bytes: usize,
    /// Stops the request when cancelled.
    pub cancel: Option<CancelHandle>,
    /// Where the function's own outgoing requests go; none refuses them.
    pub egress: Option<std::sync::Arc<dyn crate::Egress>>,
}

impl std::fmt::Debug for HttpInvocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInvocation")
            .field("request", &self.request)
            .field("limits", &self.limits)
            .field("egress", &self.egress.is_some())
            .finish_non_exhaustive()
    }
}

/// What an HTTP function did with one request.
#[derive(Debug)]
pub struct HttpOutcome {
    /// Status, output and consumption, as for any run. A completed one has
    /// `result` = `{"status": <the response's status>}`.
    pub outcome: Outcome,
    /// The response with its whole body; present exactly when the outcome
    /// is completed.
    pub response: Option<http::Response<Bytes>>,
}

type Answer = Result<http::Response<HyperOutgoingBody>, HttpErrorCode>;

impl Sandbox {
    /// Hands one request to an HTTP function and waits for its whole
    /// response, or until a limit stops it.
    ///
    /// # Errors
    ///
    /// [`Error::Link`] when the artifact is not a `wasi:http/proxy`
    /// component, [`Error::Internal`] when the request cannot be handed over.
    pub async fn handle(
        &self,
        artifact: &Artifact,
        invocation: HttpInvocation,
    ) -> Result<HttpOutcome, Error> {
        let started = Instant::now();
        let Entry::Http(pre) = &artifact.entry else {
            return Err(Error::Link(format!(
                "cannot send a request to a {:?} component",
                artifact.shape()
            )));
        };
        let HttpInvocation {
            request,
            env,
            limits,
            max_response_bytes,
            cancel,
            egress,
        } = invocation;
        let (mut store, stdout, stderr) =
            self.store(Stdin::Fixed(Vec::new()), &[], &env, &limits, None, None)?;
        store.data_mut().hooks.egress = egress;
        let internal = |e: wasmtime::Error| Error::Internal(chain(&e));
        let fuel_start = store.get_fuel().map_err(internal)?;
        let (answer, answered) = oneshot::channel::<Answer>();
        let (request, response_out) = {
            let mut http = store.data_mut().http();
            let body = Full::new(request.body().clone())
                .map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
            let request = http
                .new_incoming_request(Scheme::Http, request.map(|_| body))
                .map_err(internal)?;
            (
                request,
                http.new_response_outparam(answer).map_err(internal)?,
            )
        };

        let cancel = cancel.unwrap_or_default();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let mut collecting = std::pin::pin!(collect(answered, max_response_bytes));
        let mut collected = None;
        let mut ending = {
            let mut calling = std::pin::pin!(async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, response_out)
                    .await
            });
            // The body is read while the guest writes it: it blocks on a
            // full pipe until the host takes the chunk.
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break Ending::Cancelled,
                    () = tokio::time::sleep_until(deadline) => break Ending::TimedOut(limits.timeout),
                    returned = &mut calling => {
                        break returned.map_or_else(Ending::Trapped, |()| Ending::Exited(Ok(())));
                    }
                    answer = &mut collecting, if collected.is_none() => collected = Some(answer),
                }
            }
        };
        // The guest has returned or was stopped; whatever it still held
        // (an unfinished body, an unset response) goes now, so the answer
        // below cannot wait on it.
        store.data_mut().drop_resources();
        if collected.is_none() && matches!(ending, Ending::Exited(Ok(()))) {
            match tokio::time::timeout_at(deadline, &mut collecting).await {
                Ok(answer) => collected = Some(answer),
                Err(_) => ending = Ending::TimedOut(limits.timeout),
            }
        }

        let usage = Usage::of(&store, fuel_start, started);
        let mut verdict = outcome::classify(ending, &evidence(&store));
        drop(store);
        let mut response = None;
        if verdict.status == Status::Completed {
            match collected {
                Some(Ok(answer)) => {
                    verdict.result = Some(format!("{{\"status\":{}}}", answer.status().as_u16()));
                    response = Some(answer);
                }
                Some(Err(message)) => {
                    verdict.fail(GuestError::new(ErrorCode::ResponseError, message))
                }
                None => verdict.fail(GuestError::new(
                    ErrorCode::ResponseError,
                    "the function returned without a response",
                )),
            }
        }
        Ok(HttpOutcome {
            outcome: usage.outcome(verdict, &stdout, &stderr),
            response,
        })
    }
}

/// Waits for the guest's response and reads its whole body, at most `max`
/// bytes of it. `Err` says, for people, why there is no usable response.
async fn collect(
    answered: oneshot::Receiver<Answer>,
    max: usize,
) -> Result<http::Response<Bytes>, String> {
    let response = match answered.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => return Err(format!("the function answered with an error: {code:?}")),
        Err(_) => return Err("the function returned without a response".into()),
    };
    let (parts, mut body) = response.into_parts();
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the response body broke off: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len().saturating_add(data.len()) > max {
                // Dropping the body closes the guest's stream: its next
                // write fails instead of blocking until the deadline.
                return Err(format!("the response body is larger than {max} bytes"));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(http::Response::from_parts(parts, bytes.freeze()))
}

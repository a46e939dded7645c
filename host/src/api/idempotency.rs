//! `Idempotency-Key` on POST: the first response of a key is kept (24 h) and
//! given again to a retry with the same request; the same key with another
//! request is `409`. Keys are scoped to the caller. Only successful responses
//! are kept: an error is worth retrying for real.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::{Claim, StoredResponse};

const KEY: &str = "idempotency-key";
/// Set on a response that is a replay of an earlier one.
const REPLAYED: &str = "idempotent-replayed";
/// Response headers a replay carries again.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// POSTs whose response carries a credential or secret: keeping it for a
/// replay would store in clear what is otherwise kept only as a hash, and a
/// replayed refresh or logout would skip rotation and revocation. These run
/// every time; the header is ignored (the OpenAPI document says so).
const NOT_KEPT: [&str; 7] = [
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/auth/logout",
    "/v1/api-keys",
    "/v1/webhooks",
    // A one-time code secret, and the recovery codes.
    "/v1/users/me/totp",
    "/v1/users/me/totp/confirm",
];

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // HTTP functions give the header whatever meaning they like: it is
    // theirs, not Kiln's.
    let secret_bearing_or_function = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|route| {
            NOT_KEPT.contains(&route.as_str()) || super::access::is_function(route.as_str())
        });
    if request.method() != Method::POST
        || !request.headers().contains_key(KEY)
        || secret_bearing_or_function
    {
        return next.run(request).await;
    }
    match idempotent(state, request, next).await {
        Ok(response) | Err(Refusal::Response(response)) => response,
        Err(Refusal::Error(e)) => e.into_response(),
    }
}

enum Refusal {
    Error(ApiError),
    Response(Response),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e)
    }
}

async fn idempotent(state: AppState, request: Request, next: Next) -> Result<Response, Refusal> {
    let key = request
        .headers()
        .get(KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::invalid("Idempotency-Key", "1 to 255 visible ASCII characters"))?
        .to_string();
    let (parts, body) = request.into_parts();
    let caller = Principal::of(&parts).map_or_else(|| "anonymous".to_owned(), |p| p.scope_key());
    let body = axum::body::to_bytes(body, state.config.server.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;

    let mut hasher = blake3::Hasher::new();
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"?");
    hasher.update(parts.uri.query().unwrap_or("").as_bytes());
    hasher.update(b"\n");
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        hasher.update(content_type.as_bytes());
    }
    hasher.update(b"\n");
    hasher.update(&body);
    let fingerprint = hasher.finalize().to_hex().to_string();
    let scoped = format!("{caller}/{key}");

    match state
        .store
        .claim_idempotency_key(&scoped, &fingerprint, crate::now_ms())
        .await
        .map_err(ApiError::from)?
    {
        Claim::Replay(stored) => return Ok(replay(stored)),
        Claim::Mismatch => {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was already used with a different request".into(),
            )
            .into());
        }
        Claim::InFlight => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly".into(),
            )
            .into());
        }
        Claim::Claimed => {}
    }

    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if !response.status().is_success() {
        state
            .store
            .settle_idempotency_key(&scoped, None)
            .await
            .map_err(ApiError::from)?;
        return Err(Refusal::Response(response));
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot read a response body: {e}")))?;
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_string(), value.to_string()))
            })
            .collect(),
        body: body.to_vec(),
    };
    state
        .store
        .settle_idempotency_key(&scoped, Some(&stored))
        .await
        .map_err(ApiError::from)?;
    // Durable before the client hears of it, like the resource itself.
    state.store.flush().await.map_err(ApiError::from)?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

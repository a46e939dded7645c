//! `ApiError`: the only place errors become HTTP responses, in the contract's
//! shape `{"error": {code, message, details, request_id, timestamp}}`.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::jobs::JobError;
use crate::store::StoreError;

/// One field-level problem, as in `details`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// On `RATE_LIMIT_EXCEEDED`: the bucket's size per minute; on
    /// `QUOTA_EXCEEDED`: the quota (its name is `field`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Seconds to wait before trying again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Detail {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
            line: None,
            column: None,
            limit: None,
            remaining: None,
            retry_after: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String, Vec<Detail>),
    #[error("{0}")]
    Unauthenticated(String),
    /// The password was right; the account also wants a one-time code.
    #[error("this account wants a one-time code as well: send it as `otp`")]
    OtpRequired,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Compile(String, Vec<Detail>),
    /// A plain request to a WebSocket route: 426 with `Upgrade: websocket`.
    #[error("{0}")]
    UpgradeRequired(String),
    #[error("too many requests; retry in {} s", .0.retry_after_secs.unwrap_or(1))]
    RateLimited(crate::ratelimit::Standing),
    /// The caller has as much of something in flight as it may (compiles):
    /// 429, to retry when one is done.
    #[error("{0}")]
    Busy(String),
    /// The organization has spent a quota: 429 with `Retry-After`.
    #[error(transparent)]
    QuotaExceeded(#[from] crate::quotas::Exceeded),
    #[error("the execution queue is full; retry shortly")]
    QueueFull,
    #[error("{0}")]
    Unavailable(String),
    /// An HTTP function gave no response: the status a gateway would
    /// answer, the run's error code and its message.
    #[error("{2}")]
    Function(StatusCode, &'static str, String),
    /// The message is for the log only; clients get a fixed sentence.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Validation(
            format!("{field}: {message}"),
            vec![Detail::field(field, message)],
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(..) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) | ApiError::OtpRequired => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) | ApiError::Busy(_) | ApiError::QuotaExceeded(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Compile(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::QueueFull | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Function(status, ..) => *status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(..) => "VALIDATION_ERROR",
            ApiError::Unauthenticated(_) => "AUTHENTICATION_REQUIRED",
            ApiError::OtpRequired => "OTP_REQUIRED",
            ApiError::PermissionDenied(_) => "PERMISSION_DENIED",
            ApiError::RateLimited(_) | ApiError::Busy(_) => "RATE_LIMIT_EXCEEDED",
            ApiError::QuotaExceeded(_) => "QUOTA_EXCEEDED",
            ApiError::NotFound(_) => "RESOURCE_NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::PreconditionFailed(_) => "PRECONDITION_FAILED",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Compile(..) => "COMPILE_ERROR",
            ApiError::UpgradeRequired(_) => "UPGRADE_REQUIRED",
            ApiError::QueueFull => "QUEUE_FULL",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
            ApiError::Function(_, code, _) => code,
        }
    }
}

/// Every error response's body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorObject {
    /// A stable code, e.g. `VALIDATION_ERROR`, `RESOURCE_NOT_FOUND`, `COMPILE_ERROR`.
    #[schema(example = "VALIDATION_ERROR")]
    pub code: String,
    /// A sentence for humans.
    pub message: String,
    pub details: Vec<Detail>,
    /// The `X-Request-Id` of the request; the server log has it too.
    pub request_id: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
}

/// What a response carries until `finish` adds the request id and time.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Detail>,
}

impl ApiError {
    /// What the envelope's `details` say: the fields or limits at fault.
    pub fn details(&self) -> Vec<Detail> {
        match self {
            ApiError::Validation(_, d) | ApiError::Compile(_, d) => d.clone(),
            ApiError::OtpRequired => vec![Detail::field(
                "otp",
                "a code from the authenticator app, or a recovery code",
            )],
            ApiError::QuotaExceeded(spent) => vec![Detail {
                limit: Some(spent.limit),
                remaining: Some(0),
                retry_after: Some(spent.retry_after_secs),
                ..Detail::field(
                    spent.quota.as_str(),
                    "the organization's quota is spent for now",
                )
            }],
            ApiError::RateLimited(standing) => vec![Detail {
                limit: Some(standing.limit.into()),
                remaining: Some(standing.remaining.into()),
                retry_after: standing.retry_after_secs,
                ..Detail::field(
                    "rate_limit",
                    "the caller's bucket for this route class is empty",
                )
            }],
            _ => Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "an internal error occurred; the server log has the details under this request id"
                    .into()
            }
            other => other.to_string(),
        };
        let details = self.details();
        let mut response = self.status().into_response();
        if matches!(
            self,
            ApiError::QueueFull | ApiError::Unavailable(_) | ApiError::Busy(_)
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::UpgradeRequired(_) = self {
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        if let ApiError::RateLimited(standing) = &self {
            crate::api::access::rate_headers(response.headers_mut(), standing);
        }
        if let ApiError::QuotaExceeded(spent) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(spent.retry_after_secs),
            );
        }
        if matches!(self, ApiError::Unauthenticated(_) | ApiError::OtpRequired) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kiln\""),
            );
        }
        response.extensions_mut().insert(ErrorBody {
            code: self.code(),
            message,
            details,
        });
        response
    }
}

/// Renders an error response's body in the contract's shape. Responses the
/// router makes itself (unknown path, wrong method, body over the limit) get
/// one derived from their status.
pub fn finish(mut response: Response, request_id: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let body = response
        .extensions_mut()
        .remove::<ErrorBody>()
        .unwrap_or_else(|| ErrorBody {
            code: match status {
                StatusCode::UNAUTHORIZED => "AUTHENTICATION_REQUIRED",
                StatusCode::FORBIDDEN => "PERMISSION_DENIED",
                StatusCode::TOO_MANY_REQUESTS => "RATE_LIMIT_EXCEEDED",
                StatusCode::NOT_FOUND => "RESOURCE_NOT_FOUND",
                StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
                StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
                StatusCode::PRECONDITION_FAILED => "PRECONDITION_FAILED",
                StatusCode::CONFLICT => "CONFLICT",
                s if s.is_client_error() => "VALIDATION_ERROR",
                _ => "INTERNAL_ERROR",
            },
            message: match status {
                StatusCode::NOT_FOUND => "no such resource".into(),
                StatusCode::METHOD_NOT_ALLOWED => {
                    "this method is not allowed on this resource".into()
                }
                StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the limit".into(),
                _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
            },
            details: Vec::new(),
        });
    let json = ErrorEnvelope {
        error: ErrorObject {
            code: body.code.to_owned(),
            message: body.message,
            details: body.details,
            request_id: request_id.to_owned(),
            timestamp: crate::now(),
        },
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let rendered = Json(json).into_response();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Response::from_parts(parts, rendered.into_body())
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Validation(rejection.body_text(), Vec::new())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Validation(
            format!("bad query parameter: {}", rejection.body_text()),
            Vec::new(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken(_) => ApiError::Conflict(e.to_string()),
            StoreError::NotFound => ApiError::NotFound(e.to_string()),
            StoreError::Refused(message) => ApiError::PreconditionFailed(message),
            StoreError::Forbidden(message) => ApiError::PermissionDenied(message),
            StoreError::Unavailable(detail) => {
                // What failed is for the log, not for whoever asked.
                tracing::warn!(error = %detail, "the store does not answer");
                ApiError::Unavailable("the store does not answer; retry shortly".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::quotas::QuotaError> for ApiError {
    fn from(e: crate::quotas::QuotaError) -> Self {
        match e {
            crate::quotas::QuotaError::Exceeded(spent) => spent.into(),
            crate::quotas::QuotaError::Store(e) => e.into(),
        }
    }
}

impl From<crate::executions::SubmitError> for ApiError {
    fn from(e: crate::executions::SubmitError) -> Self {
        use crate::executions::SubmitError;
        match e {
            SubmitError::Invalid { field, message } => ApiError::invalid(field, message),
            SubmitError::Refused(e) => e.into(),
            SubmitError::Quota(e) => e.into(),
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::QueueFull => ApiError::QueueFull,
            JobError::TenantFull(_) | JobError::OrgFull(_) => ApiError::Busy(e.to_string()),
            JobError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            JobError::Store(e) => e.into(),
        }
    }
}

/// A load's failure: what is wrong with the bytes is the caller's 422;
/// being busy is 429 or 503; the rest is Kiln's.
impl From<crate::compiler::LoadError> for ApiError {
    fn from(e: crate::compiler::LoadError) -> Self {
        use crate::compiler::LoadError;
        match e {
            LoadError::Sandbox(_) | LoadError::Bounds { .. } => {
                let message = e.to_string();
                let detail = match &e {
                    LoadError::Bounds { limit, .. } => Detail::field(limit, message.clone()),
                    _ => Detail::field("content", message.clone()),
                };
                ApiError::Compile(message, vec![detail])
            }
            LoadError::Busy(_) => ApiError::Busy(e.to_string()),
            LoadError::QueueFull => ApiError::Unavailable(e.to_string()),
            LoadError::Internal(message) => ApiError::Internal(message),
            LoadError::Abandoned => ApiError::Internal(e.to_string()),
        }
    }
}

/// An error answer of `operation`, in the envelope, unless it documents
/// its own for that status.
pub fn document_refusal(operation: &mut utoipa::openapi::path::Operation, status: &str, why: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build()
                .into()
        });
}

/// The refusals of input every operation can give before its handler
/// runs, from its extractors: 400 for a parameter or body that does not
/// parse or is out of bounds (`details` name the field), 413 for a body
/// over its limit, 415 for a body that is not of the media type asked.
pub fn document_input_refusals(document: &mut utoipa::openapi::OpenApi) {
    for item in document.paths.paths.values_mut() {
        for operation in super::document::operations_mut(item) {
            let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let body = operation.request_body.is_some();
            if has_parameters || body {
                document_refusal(
                    operation,
                    "400",
                    "A parameter or the body does not parse or is out of bounds; `details` name the field",
                );
            }
            if body {
                document_refusal(operation, "413", "The body is over its limit");
                document_refusal(
                    operation,
                    "415",
                    "The body is not of a media type this operation takes (`Content-Type`)",
                );
            }
        }
    }
}

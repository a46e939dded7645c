//! Who may call which route: [`RULES`] is the one table that says it, the
//! [`guard`] layer enforces it (authenticate, rate-limit, authorize) before
//! any handler runs, and [`document_security`] writes it into the OpenAPI
//! document. A route with no rule is refused, so a new route cannot be
//! public by accident.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};

use super::{ApiError, AppState, audit};
use crate::auth::{AuthError, Scope};
use crate::ratelimit::{self, Class, Standing};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; under `/v1` limited per client IP.
    Public,
    /// Any valid credential.
    Authenticated,
    Needs(Scope),
    /// Both scopes (ad-hoc code is written and run in one request).
    NeedsBoth(Scope, Scope),
    /// A node operator (`UserRecord::operator`), whatever their role.
    Operator,
    /// An HTTP function: a valid credential makes the caller known, an
    /// invalid or missing one leaves them anonymous; the handler lets anyone
    /// call a public function and needs `execute:scripts` for the others.
    Function,
}

impl Access {
    /// The scopes a caller must hold, all of them.
    pub fn scopes(self) -> Vec<Scope> {
        match self {
            Public | Authenticated | Function | Operator => Vec::new(),
            Needs(scope) => vec![scope],
            NeedsBoth(a, b) => vec![a, b],
        }
    }
}

use Access::{Authenticated, Function, Needs, NeedsBoth, Operator, Public};
use Scope::{
    Admin, ExecuteScripts, ManageSchedules, ManageWebhooks, ReadExecutions, ReadScripts,
    WriteScripts,
};

/// Every route, the method it answers and what it needs (API.md
/// "Authentication and authorization").
pub const RULES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/openapi.json", Public),
    ("POST", "/v1/auth/login", Public),
    ("POST", "/v1/auth/refresh", Public),
    ("POST", "/v1/auth/logout", Authenticated),
    ("GET", "/v1/users/me", Authenticated),
    // The handler asks for the current password.
    ("PUT", "/v1/users/me", Authenticated),
    ("POST", "/v1/users/me/totp", Authenticated),
    ("DELETE", "/v1/users/me/totp", Authenticated),
    ("POST", "/v1/users/me/totp/confirm", Authenticated),
    ("GET", "/v1/users", Needs(Admin)),
    ("POST", "/v1/users", Needs(Admin)),
    ("GET", "/v1/users/{id}", Needs(Admin)),
    ("PUT", "/v1/users/{id}", Needs(Admin)),
    ("DELETE", "/v1/users/{id}", Needs(Admin)),
    // Anyone may hold keys; the handler caps a key's scopes by the caller's.
    ("GET", "/v1/api-keys", Authenticated),
    ("POST", "/v1/api-keys", Authenticated),
    ("DELETE", "/v1/api-keys/{id}", Authenticated),
    ("GET", "/v1/organizations", Operator),
    ("POST", "/v1/organizations", Operator),
    ("GET", "/v1/organizations/current", Authenticated),
    ("PUT", "/v1/organizations/current", Needs(Admin)),
    ("GET", "/v1/organizations/{id}", Operator),
    ("PUT", "/v1/organizations/{id}", Operator),
    ("DELETE", "/v1/organizations/{id}", Operator),
    ("GET", "/v1/organizations/{id}/members", Operator),
    ("PUT", "/v1/organizations/{id}/members/{user}", Operator),
    ("DELETE", "/v1/organizations/{id}/members/{user}", Operator),
    ("GET", "/v1/audit", Needs(Admin)),
    // Node-wide figures: above any one organization.
    ("GET", "/v1/status", Operator),
    ("GET", "/v1/languages", Authenticated),
    ("GET", "/v1/analytics/usage", Needs(ReadExecutions)),
    ("GET", "/v1/scripts", Needs(ReadScripts)),
    ("POST", "/v1/scripts", Needs(WriteScripts)),
    ("GET", "/v1/scripts/{id_or_name}", Needs(ReadScripts)),
    ("PUT", "/v1/scripts/{id_or_name}", Needs(WriteScripts)),
    ("DELETE", "/v1/scripts/{id_or_name}", Needs(WriteScripts)),
    (
        "GET",
        "/v1/scripts/{id_or_name}/content",
        Needs(ReadScripts),
    ),
    (
        "GET",
        "/v1/scripts/{id_or_name}/versions",
        Needs(ReadScripts),
    ),
    (
        "GET",
        "/v1/scripts/{id_or_name}/versions/{version}",
        Needs(ReadScripts),
    ),
    (
        "PUT",
        "/v1/scripts/{id_or_name}/config",
        Needs(WriteScripts),
    ),
    ("GET", "/v1/scripts/{id_or_name}/config", Needs(ReadScripts)),
    ("GET", "/v1/scripts/{id_or_name}/kv", Needs(Admin)),
    ("GET", "/v1/secrets", Needs(Admin)),
    ("GET", "/v1/secrets/{name}", Needs(Admin)),
    ("PUT", "/v1/secrets/{name}", Needs(Admin)),
    ("DELETE", "/v1/secrets/{name}", Needs(Admin)),
    (
        "POST",
        "/v1/scripts/{id_or_name}/execute",
        Needs(ExecuteScripts),
    ),
    (
        "POST",
        "/v1/execute",
        NeedsBoth(ExecuteScripts, WriteScripts),
    ),
    ("GET", "/v1/executions", Needs(ReadExecutions)),
    ("DELETE", "/v1/executions", Needs(Admin)),
    ("GET", "/v1/executions/{id}", Needs(ReadExecutions)),
    // The handler lets the execution's creator or an admin.
    ("DELETE", "/v1/executions/{id}", Needs(ExecuteScripts)),
    ("GET", "/v1/executions/{id}/events", Needs(ReadExecutions)),
    // Sending stdin over it needs more; the handler checks.
    ("GET", "/v1/executions/{id}/ws", Needs(ReadExecutions)),
    ("POST", "/v1/executions/{id}/cancel", Needs(ExecuteScripts)),
    ("GET", "/v1/schedules", Needs(ManageSchedules)),
    ("POST", "/v1/schedules", Needs(ManageSchedules)),
    ("GET", "/v1/schedules/preview", Needs(ManageSchedules)),
    ("GET", "/v1/schedules/{id}", Needs(ManageSchedules)),
    ("PUT", "/v1/schedules/{id}", Needs(ManageSchedules)),
    ("DELETE", "/v1/schedules/{id}", Needs(ManageSchedules)),
    ("GET", "/v1/webhooks", Needs(ManageWebhooks)),
    ("POST", "/v1/webhooks", Needs(ManageWebhooks)),
    ("GET", "/v1/webhooks/{id}", Needs(ManageWebhooks)),
    ("PUT", "/v1/webhooks/{id}", Needs(ManageWebhooks)),
    ("DELETE", "/v1/webhooks/{id}", Needs(ManageWebhooks)),
    ("GET", "/v1/webhooks/{id}/deliveries", Needs(ManageWebhooks)),
    ("POST", "/v1/webhooks/{id}/test", Needs(ManageWebhooks)),
    ("ANY", "/fn/{name}", Function),
    ("ANY", "/fn/{name}/", Function),
    ("ANY", "/fn/{name}/{*path}", Function),
];

pub fn rule(method: &Method, route: &str) -> Option<Access> {
    // axum answers HEAD with the GET handler, so it needs what GET needs.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    RULES
        .iter()
        .find(|(m, r, _)| *r == route && (*m == method || *m == "ANY"))
        .map(|(_, _, access)| *access)
}

/// `405` with `Allow` for a method a known route does not answer.
fn method_not_allowed(route: &str) -> Response {
    let allowed: Vec<&str> = RULES
        .iter()
        .filter(|(_, r, _)| *r == route)
        .map(|(m, _, _)| *m)
        .collect();
    let mut response = axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// API.md's route classes: `execute` for the routes that start runs,
/// `read` for GET, `write` for the rest.
pub fn class(method: &Method, route: &str) -> Class {
    if route.ends_with("/execute") || is_function(route) {
        Class::Execute
    } else if method == Method::GET || method == Method::HEAD {
        Class::Read
    } else {
        Class::Write
    }
}

/// Whether `route` is an HTTP function's (its rule is [`Access::Function`]).
pub fn is_function(route: &str) -> bool {
    RULES
        .iter()
        .any(|(_, r, access)| *r == route && *access == Function)
}

/// The client's address: the connection's peer, or what a trusted proxy
/// says (`client_ip.rs`).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl ClientIp {
    fn of(state: &AppState, request: &Request) -> Self {
        Self(state.trusted_proxies.client(
            request.extensions().get::<ConnectInfo<SocketAddr>>(),
            request.headers(),
        ))
    }
}

/// `X-RateLimit-*` on every response of a limited class, `Retry-After` on a refusal.
pub fn rate_headers(headers: &mut HeaderMap, standing: &Standing) {
    let mut put = |name: &'static str, value: u64| {
        headers.insert(name, HeaderValue::from(value));
    };
    put("x-ratelimit-limit", u64::from(standing.limit));
    put("x-ratelimit-remaining", u64::from(standing.remaining));
    put("x-ratelimit-reset", standing.reset_secs);
    put("x-ratelimit-window", standing.window_secs);
    if let Some(retry) = standing.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
}

/// An organization's hour of requests as the `X-RateLimit-*` headers say it.
fn hour_standing(hour: &crate::quotas::Use, retry_after_secs: Option<u64>) -> Standing {
    let limit = hour.limit.unwrap_or(u64::MAX);
    let now = crate::now_ms();
    Standing {
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        window_secs: 3_600,
        remaining: u32::try_from(limit.saturating_sub(hour.used)).unwrap_or(u32::MAX),
        reset_secs: hour
            .resets_at_ms
            .map_or(0, |end| end.saturating_sub(now).div_ceil(1000)),
        retry_after_secs,
    }
}

/// The layer in front of every routed request.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return ApiError::Internal("a request reached the guard unrouted".into()).into_response();
    };
    let Some(access) = rule(&method, &route) else {
        // No handler answers without a rule (a unit test holds every
        // operation to one), so this is a method the route lacks.
        return method_not_allowed(&route);
    };
    let ip = ClientIp::of(&state, &request);
    request.extensions_mut().insert(ip.clone());

    let (principal, bucket_key) = if access == Public {
        if !route.starts_with("/v1/") {
            return next.run(request).await;
        }
        (None, ratelimit::ip_key(&ip.0))
    } else {
        let credential = has_credential(request.headers());
        let blocked = credential
            .then(|| state.limits.auth_blocked(&ip.0))
            .flatten();
        if let Some(refused) = blocked.filter(|_| access != Function) {
            state.metrics.rate_limited("failed_auth");
            return ApiError::RateLimited(refused).into_response();
        }
        // A blocked address calls functions as nobody: its credential is
        // not looked at there either.
        let outcome = if blocked.is_some() {
            Err(AuthError::Unauthenticated("this address is blocked"))
        } else {
            state.auth.authenticate(request.headers()).await
        };
        match outcome {
            Ok(principal) => {
                let key = principal.rate_key();
                (Some(principal), key)
            }
            // A public function needs no credential, and its callers may
            // send their own Authorization for it; the handler refuses the
            // others. (With authentication off every caller has one.)
            Err(AuthError::Unauthenticated(_) | AuthError::NoOrganization(_))
                if access == Function =>
            {
                (None, ratelimit::ip_key(&ip.0))
            }
            // The credential is good; the organization it names is not its.
            Err(e @ AuthError::NoOrganization(_)) => {
                return ApiError::NotFound(e.to_string()).into_response();
            }
            Err(AuthError::Unauthenticated(message)) => {
                if credential && let Some(refused) = state.limits.auth_failed(&ip.0) {
                    state.metrics.rate_limited("failed_auth");
                    return ApiError::RateLimited(refused).into_response();
                }
                return ApiError::Unauthenticated(message.into()).into_response();
            }
            // A store that does not answer is 503, not Kiln's fault.
            Err(AuthError::Store(e)) => return ApiError::from(e).into_response(),
            Err(e) => return ApiError::Internal(e.to_string()).into_response(),
        }
    };

    let standing = state.limits.check(class(&method, &route), &bucket_key);
    if let Some(standing) = standing.filter(|s| s.retry_after_secs.is_some()) {
        state.metrics.rate_limited(class(&method, &route).as_str());
        return ApiError::RateLimited(standing).into_response();
    }
    // The organization's hourly requests (its tier's), which the
    // `X-RateLimit-*` headers then report. Not counted: reading the quota
    // itself, and a node operator's work above organizations.
    let counted = principal.as_ref().filter(|_| {
        access != Operator && !(method == Method::GET && route == "/v1/organizations/current")
    });
    let hour = match counted {
        Some(p) => Some(state.quotas.request(&p.org, crate::now_ms()).await),
        None => None,
    };
    let standing = match hour {
        None | Some(Ok(None)) => standing,
        Some(Ok(Some(hour))) => Some(hour_standing(&hour, None)),
        Some(Err(crate::quotas::QuotaError::Exceeded(spent))) => {
            state.metrics.rate_limited("quota");
            let mut refused = ApiError::QuotaExceeded(spent.clone()).into_response();
            let hour = crate::quotas::Use {
                quota: spent.quota,
                limit: Some(spent.limit),
                used: spent.used,
                resets_at_ms: spent.quota.resets_at_ms(crate::now_ms()),
            };
            rate_headers(
                refused.headers_mut(),
                &hour_standing(&hour, Some(spent.retry_after_secs)),
            );
            return refused;
        }
        Some(Err(crate::quotas::QuotaError::Store(e))) => {
            return ApiError::from(e).into_response();
        }
    };

    let missing: Vec<&str> = match &principal {
        Some(principal) if access == Operator && !principal.operator => vec!["node operator"],
        Some(principal) => access
            .scopes()
            .into_iter()
            .filter(|scope| !principal.scopes.allows(*scope))
            .map(Scope::as_str)
            .collect(),
        None => Vec::new(),
    };
    if let (Some(principal), false) = (&principal, missing.is_empty()) {
        let missing = missing.join(" and ");
        audit::record(
            &state,
            audit::Entry::new("permission.denied", false)
                .actor(principal)
                .ip(&ip)
                .target(format!("{method} {route}"))
                .detail(format!("needs {missing}")),
        );
        return with_standing(
            ApiError::PermissionDenied(format!(
                "this needs the {missing} scope, which this credential does not have"
            ))
            .into_response(),
            standing.as_ref(),
        );
    }
    if let Some(principal) = principal {
        tracing::debug!(principal = %principal.name, %route, "authenticated");
        request.extensions_mut().insert(principal);
    }
    with_standing(next.run(request).await, standing.as_ref())
}

/// Whether the request carries a Kiln credential (a wrong one is a guess;
/// none at all is not).
fn has_credential(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key")
}

/// The class's standing on a response, unless the response carries rate
/// headers of its own: a login refused on its own limit (whose figures
/// the body gives too), or an HTTP function's own headers.
fn with_standing(mut response: Response, standing: Option<&Standing>) -> Response {
    if let Some(standing) = standing
        && !response.headers().contains_key("x-ratelimit-limit")
    {
        rate_headers(response.headers_mut(), standing);
    }
    response
}

/// Puts the security schemes into the document and, on every operation,
/// what [`RULES`] says it needs.
pub fn document_security(document: &mut utoipa::openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token from POST /v1/auth/login or /v1/auth/refresh",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "A key from POST /v1/api-keys: kiln_ and 32 base62 characters",
        ))),
    );
    for (path, item) in &mut document.paths.paths {
        for (method, operation) in [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
        ] {
            let Some(operation) = operation else { continue };
            let access = rule(&method, path);
            // The guard limits every /v1 route, with a credential or not.
            if access.is_some() && path.starts_with("/v1/") {
                super::error::document_refusal(
                    operation,
                    "429",
                    "Over a rate limit (`X-RateLimit-*` and `Retry-After` say which and for how long), \
                     or too many failed credentials from this address",
                );
            }
            let scopes: Vec<&str> = match access {
                None | Some(Public) => continue,
                Some(access) => access.scopes().into_iter().map(Scope::as_str).collect(),
            };
            super::error::document_refusal(
                operation,
                "401",
                "No credential, or one that is unknown, expired or revoked",
            );
            if !scopes.is_empty() {
                super::error::document_refusal(
                    operation,
                    "403",
                    "The credential lacks a scope this operation needs",
                );
            }
            if access == Some(Operator) {
                super::error::document_refusal(operation, "403", "The caller is no node operator");
            }
            document_org_header(operation);
            operation.security = Some(vec![
                SecurityRequirement::new("bearer", scopes.clone()),
                SecurityRequirement::new("api_key", scopes),
            ]);
        }
    }
}

/// The header that picks the organization a request acts in.
fn document_org_header(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    let header = ParameterBuilder::new()
        .name("X-Kiln-Organization")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "The organization (id or name) the request acts in: one the user belongs to, or the \
             API key's own. Without it a session acts in the user's first organization and a key \
             in its own. One the credential may not act in is a 404.",
        ))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        ))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(utoipa::openapi::RefOr::T(header));
    super::error::document_refusal(
        operation,
        "404",
        "`X-Kiln-Organization` names no organization this credential may act in",
    );
}

/// Handlers take the caller as an extractor: the [`guard`] left it in the
/// request's extensions.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for crate::auth::Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // No principal means the route is not behind the guard: refuse
        // rather than act for nobody.
        Self::of(parts)
            .ok_or_else(|| ApiError::Unauthenticated("this route needs a credential".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_contract() {
        assert_eq!(class(&Method::POST, "/v1/execute"), Class::Execute);
        assert_eq!(class(&Method::GET, "/fn/{name}/{*path}"), Class::Execute);
        assert_eq!(class(&Method::GET, "/fn/{name}"), Class::Execute);
        assert_eq!(
            class(&Method::POST, "/v1/scripts/{id_or_name}/execute"),
            Class::Execute
        );
        assert_eq!(class(&Method::GET, "/v1/scripts"), Class::Read);
        assert_eq!(
            class(&Method::POST, "/v1/executions/{id}/cancel"),
            Class::Write
        );
        assert_eq!(
            class(&Method::DELETE, "/v1/scripts/{id_or_name}"),
            Class::Write
        );
    }

    #[test]
    fn every_v1_route_but_login_and_refresh_needs_a_credential() {
        for (method, route, access) in RULES {
            // A function decides for itself (public or execute:scripts).
            let public = matches!(access, Public | Function);
            let open_by_contract = !route.starts_with("/v1/")
                || *route == "/v1/auth/login"
                || *route == "/v1/auth/refresh";
            assert_eq!(public, open_by_contract, "{method} {route}");
        }
        let mut seen = std::collections::HashSet::new();
        for (method, route, _) in RULES {
            assert!(
                seen.insert((method, route)),
                "{method} {route} listed twice"
            );
        }
    }
}

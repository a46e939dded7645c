//! `/v1/webhooks`: subscriptions to events, their attempt logs, and a test
//! ping. The secret is shown once, when it is made.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::ClientIp;
use super::error::ErrorEnvelope;
use super::executions::ExecutionView;
use super::owners::{audited, changed, creator_or_admin, fields_given};
use super::pagination::{Listing, Page, PageQuery};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, etag};
use crate::auth::Principal;
use crate::egress::ssrf;
use crate::store::orgs::{InOrg as _, org_field};
use crate::store::webhooks::{AttemptRecord, WebhookRecord};
use crate::store::{ExecutionRecord, ExecutionStatus, Trigger};
use crate::webhooks::{EVENTS, PING, Webhooks, sign};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, delete))
        .routes(routes!(deliveries))
        .routes(routes!(test))
}

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    id: String,
    url: String,
    events: Vec<String>,
    active: bool,
    description: Option<String>,
    created_at: String,
    updated_at: String,
    created_by: Option<String>,
}

impl From<WebhookRecord> for WebhookView {
    fn from(w: WebhookRecord) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            active: w.active,
            description: w.description,
            created_at: w.created_at,
            updated_at: w.updated_at,
            created_by: w.created_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: WebhookView,
    /// The signing secret (Standard Webhooks form). Shown this once.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http or https; loopback, private, link-local and metadata addresses
    /// are refused unless the server allows private destinations.
    #[schema(format = "uri", max_length = 2048)]
    url: String,
    /// At least one of `execution.completed`, `execution.failed`,
    /// `execution.timeout`, `execution.cancelled`, `schedule.failed`,
    /// `script.created`, `script.updated`, `script.deleted`.
    #[schema(min_items = 1)]
    events: Vec<String>,
    /// `whsec_` + base64 of 24–64 bytes; made for you when absent.
    secret: Option<String>,
    active: Option<bool>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[schema(format = "uri", max_length = 2048)]
    url: Option<String>,
    #[schema(min_items = 1)]
    events: Option<Vec<String>>,
    /// A new secret; the old one stops signing at once.
    secret: Option<String>,
    active: Option<bool>,
    description: Option<String>,
}

async fn check_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_URL {
        return Err(ApiError::invalid(
            "url",
            format!("must be at most {MAX_URL} characters"),
        ));
    }
    let parsed = ssrf::parse(url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    ssrf::resolve(&parsed, state.webhooks.config.allow_private)
        .await
        .map_err(|e| ApiError::invalid("url", crate::webhooks::refusal(&e)))?;
    Ok(())
}

fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid("events", "must name at least one event"));
    }
    if let Some(unknown) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::invalid(
            "events",
            format!("{unknown:?} is not one of {}", EVENTS.join(", ")),
        ));
    }
    let mut unique: Vec<String> = Vec::new();
    for event in events {
        if !unique.contains(event) {
            unique.push(event.clone());
        }
    }
    Ok(unique)
}

/// Events carry what they are about: subscribing to execution events
/// needs `read:executions`, to script events `read:scripts`.
fn check_event_scopes(principal: &Principal, events: &[String]) -> Result<(), ApiError> {
    for event in events {
        let needs = crate::webhooks::event_scope(event);
        if !principal.scopes.allows(needs) {
            return Err(ApiError::PermissionDenied(format!(
                "subscribing to {event} needs the {} scope, which this credential does not have",
                needs.as_str()
            )));
        }
    }
    Ok(())
}

fn check_description(description: Option<&String>) -> Result<(), ApiError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )),
        _ => Ok(()),
    }
}

fn check_secret(secret: &str) -> Result<(), ApiError> {
    sign::key_of(secret)
        .map(|_| ())
        .map_err(|e| ApiError::invalid("secret", e.to_string()))
}

/// The webhook `id` of organization `org`: another's is no webhook at all.
async fn find(state: &AppState, org: &str, id: &str) -> Result<WebhookRecord, ApiError> {
    state
        .store
        .webhook(id)
        .await?
        .filter(|record| record.org() == org)
        .ok_or_else(|| ApiError::NotFound(format!("no webhook {id:?}")))
}

async fn reload(state: &AppState) -> Result<(), ApiError> {
    state.webhooks.reload().await.map_err(ApiError::from)
}

/// Subscribe a URL to events. Execution and schedule events need the
/// caller to hold `read:executions`, script events `read:scripts`.
/// `Idempotency-Key` is ignored here: the response holds the secret.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = CreatedWebhook),
        (status = 400, description = "A field is invalid, or the URL is an address webhooks may not reach", body = ErrorEnvelope),
        (status = 403, description = "An event the caller may not read", body = ErrorEnvelope),
        (status = 409, description = "The caller holds `limits.webhooks_per_user` webhooks", body = ErrorEnvelope),
    ))]
async fn create(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, axum::Json<CreatedWebhook>), ApiError> {
    let events = check_events(&body.events)?;
    check_event_scopes(&principal, &events)?;
    check_description(body.description.as_ref())?;
    let secret = match body.secret {
        Some(secret) => {
            check_secret(&secret)?;
            secret
        }
        None => sign::new_secret().map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    check_url(&state, &body.url).await?;
    let now = crate::now();
    let id = uuid::Uuid::now_v7().to_string();
    let record = WebhookRecord {
        secret: state.vault.seal(&crate::vault::webhook_slot(&id), &secret),
        id,
        org: org_field(&principal.org),
        url: body.url,
        events,
        active: body.active.unwrap_or(true),
        description: body.description,
        created_at: now.clone(),
        updated_at: now,
        created_by: principal.user_id(),
    };
    super::create_within_cap(
        record.created_by.as_deref(),
        state.config.limits.webhooks_per_user,
        "limits.webhooks_per_user",
        "webhooks",
        async |owner| {
            Ok(super::count_by(state.store.webhooks().await?, |w| {
                w.created_by.as_deref() == Some(owner)
            }))
        },
        async || {
            state
                .quotas
                .allow_more(&principal.org, crate::quotas::Quota::Webhooks, 1)
                .await?;
            Ok(state.store.create_webhook(&record).await?)
        },
    )
    .await?;
    state.store.flush().await?;
    changed(
        &state,
        &principal,
        &ip,
        "webhook.created",
        format!("webhook:{}", record.id),
        format!("events: {}", record.events.join(", ")),
    );
    reload(&state).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhook {
            webhook: record.into(),
            secret,
        }),
    ))
}

/// List webhooks, oldest first.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    params(("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of webhooks", body = Listing<WebhookView>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<WebhookView>>, ApiError> {
    let page = Page::new(query)?;
    let mut all = state.store.webhooks().await?;
    all.retain(|w| w.org() == principal.org);
    let total = all.len();
    let data = all
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .map(WebhookView::from)
        .collect();
    Ok(axum::Json(page.envelope(data, total)))
}

/// Read a webhook (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView, headers(("ETag" = String))),
        (status = 304, description = "It still matches `If-None-Match`"),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    ))]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    etag::json(
        &headers,
        &WebhookView::from(find(&state, &principal.org, &id).await?),
    )
}

/// Change a webhook's URL, events, secret, description, or pause it.
#[utoipa::path(put, path = "/v1/webhooks/{id}", operation_id = "updateWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id"),
        ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless this is the current ETag")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "A field is invalid", body = ErrorEnvelope),
        (status = 403, description = "The caller neither made the webhook nor is an admin, or an event the caller may not read", body = ErrorEnvelope),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` is stale", body = ErrorEnvelope),
    ))]
async fn update(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<Response, ApiError> {
    let seen = find(&state, &principal.org, &id).await?;
    // Its creator never changes, so the record read answers for the write.
    creator_of(&state, &principal, &ip, "update", &seen)?;
    let checked = headers.contains_key(header::IF_MATCH).then_some(&seen);
    if checked.is_some() {
        etag::check_if_match(&headers, &etag::of_json(&WebhookView::from(seen.clone()))?)?;
    }
    let events = body.events.as_deref().map(check_events).transpose()?;
    if let Some(events) = &events {
        check_event_scopes(&principal, events)?;
    }
    check_description(body.description.as_ref())?;
    if let Some(secret) = &body.secret {
        check_secret(secret)?;
    }
    if let Some(url) = &body.url {
        check_url(&state, url).await?;
    }
    let now = crate::now();
    // Sealed once: the change below may run again on a concurrent write.
    let sealed = body
        .secret
        .as_ref()
        .map(|secret| state.vault.seal(&crate::vault::webhook_slot(&id), secret));
    let updated = state
        .store
        .update_webhook(&id, &|current| {
            etag::unchanged(checked, current, "webhook")?;
            let mut next = current.clone();
            if let Some(url) = &body.url {
                next.url.clone_from(url);
            }
            if let Some(events) = &events {
                next.events.clone_from(events);
            }
            if let Some(sealed) = &sealed {
                next.secret.clone_from(sealed);
            }
            if let Some(active) = body.active {
                next.active = active;
            }
            if body.description.is_some() {
                next.description.clone_from(&body.description);
            }
            next.updated_at.clone_from(&now);
            Ok(next)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook {id:?}")))?;
    state.store.flush().await?;
    let given = fields_given(&[
        ("url", body.url.is_some()),
        ("events", body.events.is_some()),
        ("secret", body.secret.is_some()),
        ("active", body.active.is_some()),
        ("description", body.description.is_some()),
    ]);
    changed(
        &state,
        &principal,
        &ip,
        "webhook.updated",
        format!("webhook:{id}"),
        given,
    );
    reload(&state).await?;
    etag::json(&HeaderMap::new(), &WebhookView::from(updated))
}

/// Delete a webhook with its pending deliveries and its attempt log.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller neither made the webhook nor is an admin", body = ErrorEnvelope),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    ))]
async fn delete(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let webhook = find(&state, &principal.org, &id).await?;
    creator_of(&state, &principal, &ip, "delete", &webhook)?;
    state
        .store
        .delete_webhook(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook {id:?}")))?;
    state.store.flush().await?;
    changed(
        &state,
        &principal,
        &ip,
        "webhook.deleted",
        format!("webhook:{id}"),
        format!("events: {}", webhook.events.join(", ")),
    );
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every delivery attempt to a webhook, newest first: when, the receiver's
/// status, how long it took, and what went wrong.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id"),
        ("page" = Option<usize>, Query), ("size" = Option<usize>, Query)),
    responses(
        (status = 200, description = "A page of attempts", body = Listing<AttemptRecord>),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    ))]
async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<AttemptRecord>>, ApiError> {
    let page = Page::new(query)?;
    find(&state, &principal.org, &id).await?;
    let (data, total) = state.store.attempts(&id, page.skip(), page.size).await?;
    Ok(axum::Json(page.envelope(data, total)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedDelivery {
    /// The delivery; its attempts appear under `/deliveries`.
    delivery_id: String,
    /// The `webhook-id` header it is sent with.
    msg_id: String,
    #[schema(example = "ping")]
    event_type: String,
}

/// Send a `ping` event to a webhook now (paused or not subscribed to anything
/// in particular), to check the receiver and its signature verification.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", operation_id = "testWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 202, description = "The ping is queued", body = QueuedDelivery),
        (status = 403, description = "The caller neither made the webhook nor is an admin", body = ErrorEnvelope),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    ))]
async fn test(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, axum::Json<QueuedDelivery>), ApiError> {
    let webhook = find(&state, &principal.org, &id).await?;
    creator_of(&state, &principal, &ip, "test", &webhook)?;
    let delivery = state
        .webhooks
        .enqueue(
            &webhook,
            PING,
            &json!({"webhook_id": webhook.id, "message": "a test event from Kiln"}),
        )
        .await?;
    state.store.flush().await?;
    state.webhooks.wake();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(QueuedDelivery {
            delivery_id: delivery.id,
            msg_id: delivery.msg_id,
            event_type: delivery.event_type,
        }),
    ))
}

/// Refuses (403, audited) a caller who neither made `webhook` nor is an
/// admin.
fn creator_of(
    state: &AppState,
    principal: &Principal,
    ip: &ClientIp,
    action: &str,
    webhook: &WebhookRecord,
) -> Result<(), ApiError> {
    creator_or_admin(principal, webhook.created_by.as_deref(), "webhook").map_err(|e| {
        audited(
            state,
            principal,
            ip,
            action,
            format!("webhook:{}", webhook.id),
            e.into(),
        )
    })
}

/// The webhook deliveries of an execution that just became final, stored
/// with its record by `jobs` (`FinalEvents`).
pub struct ExecutionEvents(pub std::sync::Arc<Webhooks>);

impl crate::jobs::FinalEvents for ExecutionEvents {
    fn deliveries<'a>(
        &'a self,
        record: &'a ExecutionRecord,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Vec<crate::store::webhooks::DeliveryRecord>, crate::store::StoreError>,
    > {
        Box::pin(execution_deliveries(&self.0, record))
    }

    fn stored(&self) {
        self.0.wake();
    }
}

/// The deliveries of an execution's end: its own event, and
/// `schedule.failed` for a scheduled run that did not complete. A store
/// that does not answer fails them (the record waits with them); any other
/// failure drops that event (logged), not the record.
async fn execution_deliveries(
    webhooks: &Webhooks,
    record: &ExecutionRecord,
) -> Result<Vec<crate::store::webhooks::DeliveryRecord>, crate::store::StoreError> {
    let event = match record.status {
        ExecutionStatus::Completed => "execution.completed",
        ExecutionStatus::Failed => "execution.failed",
        ExecutionStatus::Timeout => "execution.timeout",
        ExecutionStatus::Cancelled => "execution.cancelled",
        ExecutionStatus::Queued | ExecutionStatus::Running => return Ok(Vec::new()),
    };
    let schedule_failed = record.trigger == Trigger::Schedule
        && matches!(
            record.status,
            ExecutionStatus::Failed | ExecutionStatus::Timeout
        );
    let wanted = webhooks.wants(event) || (schedule_failed && webhooks.wants("schedule.failed"));
    if !wanted {
        return Ok(Vec::new());
    }
    let execution = match serde_json::to_value(ExecutionView::from(record.clone())) {
        Ok(value) => excerpt(value),
        Err(e) => {
            tracing::error!(error = %e, "cannot render an execution for its webhook event");
            return Ok(Vec::new());
        }
    };
    let mut events = vec![(event, execution.clone())];
    if schedule_failed {
        let schedule_id = record.schedule_id.clone();
        events.push((
            "schedule.failed",
            json!({"schedule_id": schedule_id, "execution": execution}),
        ));
    }
    let mut deliveries = Vec::new();
    for (event, data) in &events {
        match webhooks.deliveries(record.org(), event, data).await {
            Ok(made) => deliveries.extend(made),
            Err(e @ crate::store::StoreError::Unavailable(_)) => return Err(e),
            Err(e) => tracing::error!(error = %e, event, "cannot make a webhook event"),
        }
    }
    Ok(deliveries)
}

/// Output kept in an execution event, per stream.
const EVENT_OUTPUT_BYTES: usize = 4 << 10;
/// The largest result an execution event carries (as JSON).
const EVENT_RESULT_BYTES: usize = 16 << 10;

/// An execution as its events carry it: every field, but stdout and stderr
/// cut to their first [`EVENT_OUTPUT_BYTES`] (`*_truncated` set) and a
/// result past [`EVENT_RESULT_BYTES`] left out (`result_truncated`). An
/// event is stored once per webhook until delivered, so the whole output of
/// every execution times every webhook would be a lot to keep; the receiver
/// reads the rest at `GET /v1/executions/{id}`.
fn excerpt(mut execution: serde_json::Value) -> serde_json::Value {
    for stream in ["stdout", "stderr"] {
        let Some(serde_json::Value::String(text)) = execution.get_mut(stream) else {
            continue;
        };
        if text.len() > EVENT_OUTPUT_BYTES {
            let mut end = EVENT_OUTPUT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            execution[format!("{stream}_truncated")] = json!(true);
        }
    }
    let large = execution
        .get("result")
        .is_some_and(|result| result.to_string().len() > EVENT_RESULT_BYTES);
    if large {
        execution["result"] = serde_json::Value::Null;
        execution["result_truncated"] = json!(true);
    }
    execution
}

/// Queues events of organization `org`, logging (not failing on) a store error: the change they
/// report has happened either way.
pub async fn emit_all(webhooks: &Webhooks, org: &str, events: &[(&str, Value)]) {
    let mut queued = 0;
    for (event, data) in events {
        match webhooks.emit(org, event, data).await {
            Ok(n) => queued += n,
            Err(e) => tracing::error!(error = %e, event, "cannot queue a webhook event"),
        }
    }
    if queued > 0 {
        webhooks.wake();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn execution_events_carry_an_excerpt_of_large_output_and_results() {
        let big = "é".repeat(10_000);
        let small = json!({"id": "e1", "status": "completed", "stdout": "hi\n",
            "stderr": "", "result": {"n": 1}, "stdout_truncated": false});
        assert_eq!(super::excerpt(small.clone()), small);
        let cut = super::excerpt(json!({"id": "e2", "status": "completed", "stdout": big,
            "stderr": big, "result": {"blob": big}, "stdout_truncated": false}));
        for stream in ["stdout", "stderr"] {
            let text = cut[stream].as_str().unwrap();
            assert!(text.len() <= super::EVENT_OUTPUT_BYTES && text.len() > 4000);
            assert_eq!(cut[format!("{stream}_truncated")], true);
        }
        assert_eq!(cut["result"], serde_json::Value::Null);
        assert_eq!(cut["result_truncated"], true);
        assert_eq!(
            (cut["id"].as_str(), cut["status"].as_str()),
            (Some("e2"), Some("completed"))
        );
    }
}

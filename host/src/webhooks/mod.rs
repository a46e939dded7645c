//! Outgoing webhooks. [`Webhooks::emit`] turns an event into one delivery per
//! subscribed webhook, stored in the outbox by the caller's own write (and
//! flushed with it), and wakes the delivery task (`deliver.rs`), which signs
//! (`sign.rs`), checks the destination (`egress/ssrf.rs`), sends, and retries with
//! backoff until the receiver answers 2xx or the attempts run out.

pub mod deliver;
pub mod sign;

use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::auth::Scope;
use crate::config::WebhooksConfig;
use crate::store::orgs::InOrg as _;
use crate::store::webhooks::{DeliveryRecord, WebhookRecord};
use crate::store::{Store, StoreError};

/// Every event a webhook can subscribe to (API.md "Webhooks").
pub const EVENTS: [&str; 8] = [
    "execution.completed",
    "execution.failed",
    "execution.timeout",
    "execution.cancelled",
    "schedule.failed",
    "script.created",
    "script.updated",
    "script.deleted",
];

/// Sent by `POST /v1/webhooks/{id}/test` only.
pub const PING: &str = "ping";

fn subscribed(webhook: &WebhookRecord, event_type: &str) -> bool {
    webhook.active && webhook.events.iter().any(|e| e == event_type)
}

/// What reading an event's contents needs: script events carry scripts,
/// the others executions (and their output).
pub fn event_scope(event_type: &str) -> Scope {
    if event_type.starts_with("script.") {
        Scope::ReadScripts
    } else {
        Scope::ReadExecutions
    }
}

pub struct Webhooks {
    store: Arc<dyn Store>,
    /// Opens each webhook's sealed signing secret at delivery.
    vault: Arc<crate::vault::Vault>,
    pub config: WebhooksConfig,
    /// The subscriptions, read on every event; reloaded on every change.
    subscriptions: RwLock<Arc<Vec<WebhookRecord>>>,
    wake: tokio::sync::Notify,
    pub metrics: crate::metrics::WebhookMetrics,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhooks")
    }
}

impl Webhooks {
    /// # Errors
    ///
    /// The store cannot list the webhooks.
    pub async fn new(
        store: Arc<dyn Store>,
        vault: Arc<crate::vault::Vault>,
        config: WebhooksConfig,
        metrics: crate::metrics::WebhookMetrics,
    ) -> Result<Arc<Self>, StoreError> {
        let webhooks = Arc::new(Self {
            store,
            vault,
            config,
            subscriptions: RwLock::new(Arc::new(Vec::new())),
            wake: tokio::sync::Notify::new(),
            metrics,
        });
        webhooks.reload().await?;
        Ok(webhooks)
    }

    /// Re-reads the subscriptions after a webhook changed.
    ///
    /// # Errors
    ///
    /// The store cannot list the webhooks.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let all = Arc::new(self.store.webhooks().await?);
        *self
            .subscriptions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = all;
        Ok(())
    }

    /// Whether any active webhook subscribes to `event_type`: the caller can
    /// skip rendering an event nobody wants (the usual case, on every run).
    pub fn wants(&self, event_type: &str) -> bool {
        self.subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|w| subscribed(w, event_type))
    }

    /// Queues `event_type` with `data` for every active webhook subscribed
    /// to it. The caller flushes the store (with its own change) and then
    /// calls [`Webhooks::wake`].
    ///
    /// # Errors
    ///
    /// The store cannot write the outbox.
    pub async fn emit(
        &self,
        org: &str,
        event_type: &str,
        data: &Value,
    ) -> Result<usize, StoreError> {
        let deliveries = self.deliveries(org, event_type, data).await?;
        for delivery in &deliveries {
            self.store.put_delivery(delivery).await?;
        }
        Ok(deliveries.len())
    }

    /// The deliveries of `event_type` with `data`, one per active webhook
    /// of `org` subscribed to it whose creator may still read it; not
    /// stored (the caller stores them, with what made the event).
    ///
    /// # Errors
    ///
    /// The store cannot read a creator.
    pub async fn deliveries(
        &self,
        org: &str,
        event_type: &str,
        data: &Value,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut deliveries = Vec::new();
        // Only the event's organization's webhooks hear of it.
        let theirs = subscriptions.iter().filter(|w| w.org() == org);
        for webhook in theirs.filter(|w| subscribed(w, event_type)) {
            // Checked per event, so a demotion or a disabled account stops
            // the events at once.
            let scope = event_scope(event_type);
            let creator = webhook.created_by.as_deref();
            if !crate::auth::creator_may(self.store.as_ref(), org, creator, scope).await? {
                tracing::debug!(webhook = %webhook.id, event_type, "not sent: its creator may no longer read it");
                continue;
            }
            deliveries.push(delivery(webhook, event_type, data));
        }
        Ok(deliveries)
    }

    /// Queues one event for one webhook, whatever it subscribes to.
    ///
    /// # Errors
    ///
    /// The store cannot write the outbox.
    pub async fn enqueue(
        &self,
        webhook: &WebhookRecord,
        event_type: &str,
        data: &Value,
    ) -> Result<DeliveryRecord, StoreError> {
        let delivery = delivery(webhook, event_type, data);
        self.store.put_delivery(&delivery).await?;
        Ok(delivery)
    }

    /// Tells the delivery task to look at the outbox now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// A new delivery of `event_type` with `data` to `webhook`, due at once.
fn delivery(webhook: &WebhookRecord, event_type: &str, data: &Value) -> DeliveryRecord {
    let id = uuid::Uuid::now_v7();
    let body = json!({"type": event_type, "timestamp": crate::now(), "data": data});
    DeliveryRecord {
        id: id.to_string(),
        webhook_id: webhook.id.clone(),
        msg_id: format!("msg_{}", id.simple()),
        event_type: event_type.to_owned(),
        body: body.to_string(),
        created_ms: crate::now_ms(),
        attempts: 0,
        next_attempt_ms: 0,
    }
}

/// Why a receiver's URL is refused, naming the setting that would allow
/// it when one would (private and loopback addresses, not cloud metadata).
pub fn refusal(e: &crate::egress::ssrf::Refused) -> String {
    match e {
        crate::egress::ssrf::Refused::Address { ip, .. }
            if crate::egress::ssrf::refused_kind(*ip, true).is_none() =>
        {
            format!("{e}; webhooks.allow_private = true lets deliveries go there")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::store::SledStore;
    use crate::store::auth::UserRecord;
    use crate::store::orgs::{DEFAULT_ORG, Membership};

    fn user(id: &str, role: Role, disabled: bool) -> UserRecord {
        UserRecord {
            id: id.into(),
            username: id.into(),
            memberships: vec![Membership {
                org: DEFAULT_ORG.into(),
                role,
            }],
            operator: false,
            password_hash: String::new(),
            disabled,
            created_at: String::new(),
            updated_at: String::new(),
            last_login_at: None,
            totp: None,
        }
    }

    fn webhook(id: &str, created_by: Option<&str>) -> WebhookRecord {
        WebhookRecord {
            id: id.into(),
            org: None,
            url: "https://example.com/hook".into(),
            events: vec!["execution.completed".into(), "script.created".into()],
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            active: true,
            description: None,
            created_at: String::new(),
            updated_at: String::new(),
            created_by: created_by.map(Into::into),
        }
    }

    /// The webhooks of a node with default settings on `store`, its vault
    /// in `dir`.
    pub(super) async fn webhooks_on(
        store: &Arc<dyn Store>,
        dir: &std::path::Path,
    ) -> Arc<Webhooks> {
        let vault = crate::vault::Vault::open(None, dir).unwrap();
        Webhooks::new(
            store.clone(),
            Arc::new(vault),
            crate::config::Config::default().webhooks,
            crate::metrics::Metrics::new().webhooks(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn events_reach_only_creators_who_may_still_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&dir.path().join("db"), 8 << 20).unwrap());
        store
            .create_user(&user("analyst", Role::Analyst, false))
            .await
            .unwrap();
        store
            .create_user(&user("demoted", Role::Viewer, false))
            .await
            .unwrap();
        store
            .create_user(&user("disabled", Role::Developer, true))
            .await
            .unwrap();
        for (id, creator) in [
            ("by-analyst", Some("analyst")),
            ("by-demoted", Some("demoted")),
            ("by-disabled", Some("disabled")),
            ("by-deleted", Some("deleted")),
            ("auth-off", None),
        ] {
            store.create_webhook(&webhook(id, creator)).await.unwrap();
        }
        let webhooks = webhooks_on(&store, dir.path()).await;

        let receivers = async |event: &str| {
            let before: Vec<_> = store.pending_deliveries().await.unwrap();
            webhooks.emit(DEFAULT_ORG, event, &json!({})).await.unwrap();
            let mut got: Vec<String> = store
                .pending_deliveries()
                .await
                .unwrap()
                .into_iter()
                .filter(|d| !before.iter().any(|b| b.id == d.id))
                .map(|d| d.webhook_id)
                .collect();
            got.sort();
            got
        };
        // A viewer may read scripts but not executions.
        assert_eq!(
            receivers("execution.completed").await,
            ["auth-off", "by-analyst"]
        );
        assert_eq!(
            receivers("script.created").await,
            ["auth-off", "by-analyst", "by-demoted"]
        );
    }
}

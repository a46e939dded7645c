//! Outgoing webhooks: the subscriptions, the outbox of deliveries not yet
//! done (a delivery is stored before its first attempt, so a crash never
//! loses one), and the log of every attempt.

use serde::{Deserialize, Serialize};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_` + base64 of the key: kept in clear, as signing needs it.
    pub secret: String,
    pub active: bool,
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: Option<String>,
}

/// One event on its way to one webhook. The body and `msg_id` stay the
/// same on every attempt; only the timestamp and signature are new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: String,
    /// The `webhook-id` header.
    pub msg_id: String,
    pub event_type: String,
    pub body: String,
    pub created_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub id: String,
    pub delivery_id: String,
    pub webhook_id: String,
    /// The `webhook-id` header the attempt carried.
    pub msg_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: String,
    /// The receiver's status, when it answered.
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// `delivered`, `retrying` (another attempt is scheduled) or `failed` (given up).
    pub outcome: String,
    /// When the next attempt is due, if there is one.
    pub next_attempt_at: Option<String>,
}

#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError>;
    async fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError>;
    /// Every webhook, in id (creation) order.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;
    /// Replaces a webhook with what `change` makes of it, atomically;
    /// `None` if there is no such webhook.
    async fn update_webhook(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r WebhookRecord) -> Result<WebhookRecord, StoreError> + Send + Sync
         ),
    ) -> Result<Option<WebhookRecord>, StoreError>;
    /// Deletes a webhook, its pending deliveries and its attempt log.
    async fn delete_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError>;

    /// Stores (or replaces) a delivery in the outbox.
    async fn put_delivery(&self, delivery: &DeliveryRecord) -> Result<(), StoreError>;
    /// Every delivery in the outbox, oldest first.
    async fn pending_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Up to `limit` deliveries due at `now_ms` that `skip` does not name,
    /// the longest due first, and when the first one not yet due is due:
    /// read by due time, so the cost is what is due, not the outbox.
    async fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &(dyn for<'r> Fn(&'r str) -> bool + Send + Sync),
    ) -> Result<(Vec<DeliveryRecord>, Option<u64>), StoreError>;
    /// Takes a delivery for one attempt if the outbox still holds it as
    /// `seen`: its next attempt moves to `until_ms`, so no other deliverer
    /// (on any node) takes it meanwhile, and one that was not done by then
    /// (its node went away) is due again. The claimed record, or `None`.
    async fn claim_delivery(
        &self,
        seen: &DeliveryRecord,
        until_ms: u64,
    ) -> Result<Option<DeliveryRecord>, StoreError>;
    /// Takes a delivery out of the outbox (delivered or given up).
    async fn remove_delivery(&self, id: &str) -> Result<(), StoreError>;

    async fn append_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError>;
    /// Removes up to `limit` attempts made before `before_ms` (Unix ms),
    /// each webhook's oldest first; how many it removed.
    async fn remove_attempts_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError>;
    /// A webhook's attempts, newest first: the `take` after the first `skip`,
    /// and how many there are.
    async fn attempts(
        &self,
        webhook_id: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AttemptRecord>, usize), StoreError>;
}

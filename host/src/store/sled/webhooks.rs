//! The sled side of [`WebhookStore`]: `webhooks` by id, `outbox` by
//! delivery id (UUIDv7, so oldest first), `deliveries` (the attempt log) by
//! `<webhook id>/<attempt id>`.

use super::{SledStore, backend, decode, encode, put, remove_older};
use crate::store::StoreError;
use crate::store::webhooks::{AttemptRecord, DeliveryRecord, WebhookRecord, WebhookStore};

impl WebhookStore for SledStore {
    fn create_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        put(&self.webhooks, webhook.id.as_bytes(), webhook)
    }

    fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        Self::get_decoded(&self.webhooks, id)
    }

    fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        Self::all_decoded(&self.webhooks)
    }

    fn update_webhook(
        &self,
        id: &str,
        change: &dyn Fn(&WebhookRecord) -> Result<WebhookRecord, StoreError>,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let updated = super::update(&self.webhooks, id.as_bytes(), change)?;
        Ok(updated.map(|(_, after)| after))
    }

    fn delete_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let Some(bytes) = self.webhooks.remove(id).map_err(backend)? else {
            return Ok(None);
        };
        for delivery in self.pending_deliveries()? {
            if delivery.webhook_id == id {
                self.remove_delivery(&delivery.id)?;
            }
        }
        for entry in self.deliveries.scan_prefix(format!("{id}/")) {
            let (key, _) = entry.map_err(backend)?;
            self.deliveries.remove(key).map_err(backend)?;
        }
        decode(&bytes).map(Some)
    }

    fn put_delivery(&self, delivery: &DeliveryRecord) -> Result<(), StoreError> {
        put(&self.outbox, delivery.id.as_bytes(), delivery)
    }

    fn delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        Self::get_decoded(&self.outbox, id)
    }

    fn pending_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        Self::all_decoded(&self.outbox)
    }

    fn remove_delivery(&self, id: &str) -> Result<(), StoreError> {
        self.outbox.remove(id).map_err(backend)?;
        Ok(())
    }

    fn append_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError> {
        self.deliveries
            .insert(
                format!("{}/{}", attempt.webhook_id, attempt.id).as_bytes(),
                encode(attempt)?,
            )
            .map_err(backend)?;
        Ok(())
    }

    fn remove_attempts_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.webhooks.iter() {
            if removed == limit {
                break;
            }
            let (id, _) = entry.map_err(backend)?;
            let prefix = [&id[..], b"/"].concat();
            removed += remove_older(&self.deliveries, &prefix, before_ms, limit - removed)?;
        }
        Ok(removed)
    }

    fn attempts(
        &self,
        webhook_id: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AttemptRecord>, usize), StoreError> {
        let (mut page, mut total) = (Vec::new(), 0);
        for entry in self.deliveries.scan_prefix(format!("{webhook_id}/")).rev() {
            let (_, bytes) = entry.map_err(backend)?;
            if total >= skip && page.len() < take {
                page.push(decode(&bytes)?);
            }
            total += 1;
        }
        Ok((page, total))
    }
}

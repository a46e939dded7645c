//! The sled side of [`WebhookStore`]: `webhooks` by id, `outbox` by
//! delivery id (UUIDv7, so oldest first) and, in the same tree, by due time
//! (`0x01 <next attempt ms, big-endian> <id>` → nothing, sorting before
//! every id), `deliveries` (the attempt log) by `<webhook id>/<attempt id>`.
//! A due entry is written before its record and a stale one removed after
//! it, so a crash leaves at most an entry too many: readers check each
//! against its record, and an open after a crash drops the strays.

use std::sync::PoisonError;

use super::{SledStore, backend, decode, encode, put, remove_older};
use crate::store::StoreError;
use crate::store::webhooks::{AttemptRecord, DeliveryRecord, WebhookRecord, WebhookStore};

const DUE: u8 = 1;
const ID_LEN: usize = 36;
/// The keys of the deliveries (ids are lowercase hex and dashes), not of
/// their due entries.
const DELIVERIES: std::ops::RangeFrom<&[u8]> = b"0".as_slice()..;

fn due_key(at_ms: u64, id: &str) -> Vec<u8> {
    [&[DUE][..], &at_ms.to_be_bytes(), id.as_bytes()].concat()
}

/// The due time and delivery id of a due entry.
fn parse_due(key: &[u8]) -> Option<(u64, &str)> {
    let at = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    Some((at, std::str::from_utf8(key.get(9..)?).ok()?))
}

/// Writes the due entry of every delivery: what an outbox of schema 3
/// lacks. Safe to run twice.
pub(super) fn index_outbox(outbox: &sled::Tree) -> Result<(), StoreError> {
    for entry in outbox.range(DELIVERIES) {
        let (_, bytes) = entry.map_err(backend)?;
        if let Ok(delivery) = decode::<DeliveryRecord>(&bytes) {
            outbox
                .insert(due_key(delivery.next_attempt_ms, &delivery.id), &[])
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Drops the due entries whose delivery is gone or due at another time:
/// what a crash between the writes of `put_delivery` can leave.
pub(super) fn repair_outbox(outbox: &sled::Tree) -> Result<usize, StoreError> {
    let mut dropped = 0;
    for entry in outbox.range([DUE].as_slice()..[DUE + 1].as_slice()) {
        let (key, _) = entry.map_err(backend)?;
        let holds = match parse_due(&key) {
            Some((at, id)) => match outbox.get(id).map_err(backend)? {
                Some(bytes) => {
                    decode::<DeliveryRecord>(&bytes).is_ok_and(|d| d.next_attempt_ms == at)
                }
                None => false,
            },
            None => false,
        };
        if !holds {
            outbox.remove(key).map_err(backend)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

impl SledStore {
    /// A delivery of the outbox, read where a lock is held.
    fn outbox_entry(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        if id.len() != ID_LEN {
            return Ok(None);
        }
        Self::get_decoded(&self.outbox, id)
    }

    /// Writes `delivery` over `before` (what the outbox holds of it), with
    /// `outbox_writes` held.
    fn put_delivery_over(
        &self,
        delivery: &DeliveryRecord,
        before: Option<DeliveryRecord>,
    ) -> Result<(), StoreError> {
        let id = delivery.id.as_str();
        let due = due_key(delivery.next_attempt_ms, id);
        self.outbox.insert(&due, &[]).map_err(backend)?;
        put(&self.outbox, id.as_bytes(), delivery)?;
        if let Some(before) = before.filter(|b| b.next_attempt_ms != delivery.next_attempt_ms) {
            self.outbox
                .remove(due_key(before.next_attempt_ms, id))
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl SledStore {
    /// Puts `delivery` in the outbox unless it is there (a replay of the
    /// journal); whether it was put.
    pub(super) fn put_delivery_if_missing(
        &self,
        delivery: &DeliveryRecord,
    ) -> Result<bool, StoreError> {
        let _writing = self
            .outbox_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.outbox_entry(&delivery.id)?.is_some() {
            return Ok(false);
        }
        self.put_delivery_over(delivery, None)?;
        Ok(true)
    }
}

#[async_trait::async_trait]
impl WebhookStore for SledStore {
    async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        put(&self.webhooks, webhook.id.as_bytes(), webhook)
    }

    async fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        Self::get_decoded(&self.webhooks, id)
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        Self::all_decoded(&self.webhooks)
    }

    async fn update_webhook(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r WebhookRecord) -> Result<WebhookRecord, StoreError> + Send + Sync
         ),
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let updated = super::update(&self.webhooks, id.as_bytes(), change)?;
        Ok(updated.map(|(_, after)| after))
    }

    async fn delete_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let Some(bytes) = self.webhooks.remove(id).map_err(backend)? else {
            return Ok(None);
        };
        let pending: Vec<DeliveryRecord> = self.pending_deliveries().await?;
        for delivery in pending.iter().filter(|d| d.webhook_id == id) {
            self.remove_delivery(&delivery.id).await?;
        }
        for entry in self.deliveries.scan_prefix(format!("{id}/")) {
            let (key, _) = entry.map_err(backend)?;
            if self.deliveries.remove(key).map_err(backend)?.is_some() {
                super::Counted::remove(&self.counted.attempts, 1);
            }
        }
        decode(&bytes).map(Some)
    }

    async fn put_delivery(&self, delivery: &DeliveryRecord) -> Result<(), StoreError> {
        let _writing = self
            .outbox_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before: Option<DeliveryRecord> = self.outbox_entry(&delivery.id)?;
        self.put_delivery_over(delivery, before)
    }

    async fn claim_delivery(
        &self,
        seen: &DeliveryRecord,
        until_ms: u64,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let _writing = self
            .outbox_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = self.outbox_entry(&seen.id)?;
        if before.as_ref() != Some(seen) {
            return Ok(None);
        }
        let claimed = DeliveryRecord {
            next_attempt_ms: until_ms,
            ..seen.clone()
        };
        self.put_delivery_over(&claimed, before)?;
        Ok(Some(claimed))
    }

    async fn pending_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.outbox
            .range(DELIVERIES)
            .map(|entry| decode(&entry.map_err(backend)?.1))
            .collect()
    }

    async fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &(dyn for<'r> Fn(&'r str) -> bool + Send + Sync),
    ) -> Result<(Vec<DeliveryRecord>, Option<u64>), StoreError> {
        let not_yet = due_key(now_ms.saturating_add(1), "");
        let mut due = Vec::new();
        for entry in self.outbox.range([DUE].as_slice()..not_yet.as_slice()) {
            if due.len() == limit {
                break;
            }
            let (key, _) = entry.map_err(backend)?;
            let Some((at, id)) = parse_due(&key) else {
                continue;
            };
            if skip(id) {
                continue;
            }
            // An entry a crash left, or one replaced meanwhile, is skipped.
            if let Some(delivery) = self.outbox_entry(id)?.filter(|d| d.next_attempt_ms == at) {
                due.push(delivery);
            }
        }
        let next = match self
            .outbox
            .range(not_yet.as_slice()..[DUE + 1].as_slice())
            .next()
        {
            Some(entry) => parse_due(&entry.map_err(backend)?.0).map(|(at, _)| at),
            None => None,
        };
        Ok((due, next))
    }

    async fn remove_delivery(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self
            .outbox_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(before) = self.outbox_entry(id)? else {
            return Ok(());
        };
        self.outbox.remove(id).map_err(backend)?;
        self.outbox
            .remove(due_key(before.next_attempt_ms, id))
            .map_err(backend)?;
        Ok(())
    }

    async fn append_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError> {
        let before = self
            .deliveries
            .insert(
                format!("{}/{}", attempt.webhook_id, attempt.id).as_bytes(),
                encode(attempt)?,
            )
            .map_err(backend)?;
        if before.is_none() {
            super::Counted::add(&self.counted.attempts, 1);
        }
        Ok(())
    }

    async fn remove_attempts_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.webhooks.iter() {
            if removed == limit {
                break;
            }
            let (id, _) = entry.map_err(backend)?;
            let prefix = [&id[..], b"/"].concat();
            removed += remove_older(&self.deliveries, &prefix, before_ms, limit - removed)?;
        }
        super::Counted::remove(&self.counted.attempts, removed);
        Ok(removed)
    }

    async fn attempts(
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

#[cfg(test)]
mod tests {
    use super::super::tests::{TEST_CACHE_BYTES, reopen};
    use super::*;
    use crate::store::testing::id_at;

    fn delivery(id: &str, due: u64) -> DeliveryRecord {
        DeliveryRecord {
            id: id.into(),
            webhook_id: "w".into(),
            msg_id: format!("msg_{id}"),
            event_type: "execution.completed".into(),
            body: "{}".into(),
            created_ms: 0,
            attempts: 0,
            next_attempt_ms: due,
        }
    }

    fn ids(found: &[DeliveryRecord]) -> Vec<&str> {
        found.iter().map(|d| d.id.as_str()).collect()
    }

    #[tokio::test]
    async fn the_outbox_is_read_by_due_time_and_its_entries_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let (a, b, c) = (id_at(1, 0), id_at(2, 0), id_at(3, 0));
        store.put_delivery(&delivery(&a, 100)).await.unwrap();
        store.put_delivery(&delivery(&b, 50)).await.unwrap();
        store.put_delivery(&delivery(&c, 300)).await.unwrap();
        let none = |_: &str| false;
        let (due, next) = store.due_deliveries(200, 10, &none).await.unwrap();
        assert_eq!(ids(&due), [b.as_str(), a.as_str()]);
        assert_eq!(next, Some(300));
        let (due, _) = store.due_deliveries(200, 1, &none).await.unwrap();
        assert_eq!(ids(&due), [b.as_str()]);
        let (due, _) = store.due_deliveries(200, 10, &|id| id == b).await.unwrap();
        assert_eq!(ids(&due), [a.as_str()]);

        // A retry moves its entry; a removal takes it away.
        store.put_delivery(&delivery(&b, 400)).await.unwrap();
        store.remove_delivery(&a).await.unwrap();
        let (due, next) = store.due_deliveries(350, 10, &none).await.unwrap();
        assert_eq!(ids(&due), [c.as_str()]);
        assert_eq!(next, Some(400));
        assert_eq!(store.pending_deliveries().await.unwrap().len(), 2);

        // An entry a crash left is skipped, and dropped at the next open.
        store.outbox.insert(due_key(10, &a), &[]).unwrap();
        let (due, _) = store.due_deliveries(350, 10, &none).await.unwrap();
        assert_eq!(ids(&due), [c.as_str()]);
        store.db.flush().unwrap();
        drop(store);
        let store = reopen(dir.path()).unwrap();
        assert!(store.outbox.get(due_key(10, &a)).unwrap().is_none());
        let (due, next) = store.due_deliveries(u64::MAX - 1, 10, &none).await.unwrap();
        assert_eq!(ids(&due), [c.as_str(), b.as_str()]);
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn attempts_are_counted_as_they_are_logged_and_removed_with_their_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let webhook = WebhookRecord {
            id: "w1".into(),
            org: None,
            url: "https://example.com/hook".into(),
            events: vec!["*".into()],
            secret: "whsec_x".into(),
            active: true,
            description: None,
            created_at: String::new(),
            updated_at: String::new(),
            created_by: None,
        };
        store.create_webhook(&webhook).await.unwrap();
        for (n, webhook_id) in ["w1", "w1", "w2"].into_iter().enumerate() {
            let attempt = AttemptRecord {
                id: id_at(1_000, u8::try_from(n).unwrap()),
                delivery_id: "d".into(),
                webhook_id: webhook_id.into(),
                msg_id: "m".into(),
                event_type: "ping".into(),
                attempt: 1,
                at: String::new(),
                status_code: Some(200),
                duration_ms: 1,
                error: None,
                outcome: "delivered".into(),
                next_attempt_at: None,
            };
            store.append_attempt(&attempt).await.unwrap();
        }
        use crate::store::Store;
        assert_eq!(store.record_counts().webhook_attempts, 3);
        store.delete_webhook("w1").await.unwrap();
        assert_eq!(store.record_counts().webhook_attempts, 1);
        drop(store);
        let store = reopen(dir.path()).unwrap();
        assert_eq!(store.record_counts().webhook_attempts, 1, "counted at open");
    }
}

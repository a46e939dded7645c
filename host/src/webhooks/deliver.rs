//! The delivery task: takes due deliveries from the outbox, at most
//! [`IN_FLIGHT`] at a time, and records every attempt. A delivery leaves the
//! outbox only when the receiver answered 2xx or its attempts ran out, so
//! what was pending at a crash is sent after the restart (at least once).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Webhooks, sign};
use crate::egress::ssrf;
use crate::store::webhooks::{AttemptRecord, DeliveryRecord};

const IN_FLIGHT: usize = 8;
/// Deliveries one pass over the outbox takes: the turns and as many
/// waiting for one.
const DUE_PER_PASS: usize = 2 * IN_FLIGHT;
/// How often a paused webhook's held deliveries look again.
const PAUSED_RECHECK_MS: u64 = 60_000;
/// Retries are spaced `retry_base_ms × 4^(n-1)`, at most this much.
const MAX_DELAY_MS: u64 = 12 * 60 * 60 * 1000;
/// How much of a receiver's answer is read (and then dropped).
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// The wait before attempt `attempts + 1`, jittered by ±20 % so that
/// deliveries failed together do not all come back together.
pub fn backoff_ms(base_ms: u64, attempts: u32, jitter: f64) -> u64 {
    let exponent = attempts.saturating_sub(1).min(20);
    let delay = base_ms
        .saturating_mul(4u64.saturating_pow(exponent))
        .min(MAX_DELAY_MS);
    // Float only for the jitter factor; the delay stays far below 2^52.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let jittered = (delay as f64 * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))) as u64;
    jittered
}

fn jitter() -> f64 {
    let bytes = crate::auth::secrets::random_bytes::<4>().unwrap_or([0x80, 0, 0, 0]);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

/// How long past its timeout an attempt's claim on a delivery lasts.
const CLAIM_MARGIN_MS: u64 = 30_000;

/// Runs until `stopping` turns true.
pub async fn run(webhooks: Arc<Webhooks>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    // A tokio lock: the outbox is read while it is held.
    let in_flight: Arc<tokio::sync::Mutex<HashSet<String>>> = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        if *stopping.borrow() {
            return;
        }
        let now = crate::now_ms();
        let (due, next) = {
            // Read the outbox while holding the in-flight set: an attempt
            // writes its result before it leaves the set, so what is read
            // here is either in flight (skipped) or already up to date.
            let busy = in_flight.lock().await;
            let skip = |id: &str| busy.contains(id);
            match webhooks
                .store
                .due_deliveries(now, DUE_PER_PASS, &skip)
                .await
            {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the webhook outbox");
                    (Vec::new(), None)
                }
            }
        };
        let more = due.len() == DUE_PER_PASS;
        if !due.is_empty() {
            // The outbox entries must be on disk before anyone is told of them.
            if let Err(e) = webhooks.store.flush().await {
                tracing::error!(error = %e, "cannot flush the webhook outbox");
            }
        }
        for delivery in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            in_flight.lock().await.insert(delivery.id.clone());
            let (webhooks, in_flight) = (webhooks.clone(), in_flight.clone());
            tokio::spawn(async move {
                let id = delivery.id.clone();
                attempt(&webhooks, delivery).await;
                in_flight.lock().await.remove(&id);
                drop(permit);
                webhooks.wake();
            });
        }
        // More due than one pass took: look again soon, else when the next
        // is due (or a new delivery or a freed turn wakes the task).
        let wait = match next {
            _ if more => 10,
            Some(at) => at.saturating_sub(now).clamp(10, 60_000),
            None => 60_000,
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            () = webhooks.wake.notified() => {}
            _ = stopping.changed() => {}
        }
    }
}

/// One attempt of one delivery, recorded, and the outbox updated.
async fn attempt(webhooks: &Webhooks, seen: DeliveryRecord) {
    let store = &webhooks.store;
    // Claimed first, on the copy in the outbox: one already delivered, or
    // attempted again, or taken by another node's deliverer, is left
    // alone; one whose attempt this node does not finish (it went away) is
    // due again once the claim runs out.
    let until = crate::now_ms()
        .saturating_add(webhooks.config.timeout_ms)
        .saturating_add(CLAIM_MARGIN_MS);
    let mut delivery = match store.claim_delivery(&seen, until).await {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot claim a webhook delivery");
            return;
        }
    };
    let webhook = match store.webhook(&delivery.webhook_id).await {
        Ok(Some(webhook)) => webhook,
        Ok(None) => {
            // Deleted since: nothing to deliver to.
            let _ = store.remove_delivery(&delivery.id).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a webhook");
            return;
        }
    };
    if !webhook.active && delivery.event_type != super::PING {
        // Paused: hold the delivery without spending its attempts.
        delivery.next_attempt_ms = crate::now_ms().saturating_add(PAUSED_RECHECK_MS);
        if let Err(e) = store.put_delivery(&delivery).await {
            tracing::error!(error = %e, "cannot hold a webhook delivery");
        }
        return;
    }
    let started = Instant::now();
    let at = crate::now();
    let result = match webhooks
        .vault
        .open_value(&crate::vault::webhook_slot(&webhook.id), &webhook.secret)
    {
        Ok(secret) => send(webhooks, &webhook.url, &secret, &delivery).await,
        Err(e) => Err(format!("cannot open the webhook's signing secret: {e}")),
    };
    delivery.attempts += 1;
    let status_code = result.as_ref().ok().copied();
    let delivered = status_code.is_some_and(|s| (200..300).contains(&s));
    let give_up = !delivered && delivery.attempts >= webhooks.config.max_attempts;
    let outcome = if delivered {
        "delivered"
    } else if give_up {
        "failed"
    } else {
        "retrying"
    };
    let next_attempt_at = (!delivered && !give_up).then(|| {
        let delay = backoff_ms(webhooks.config.retry_base_ms, delivery.attempts, jitter());
        delivery.next_attempt_ms = crate::now_ms().saturating_add(delay);
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(delivery.next_attempt_ms),
        )
        .to_string()
    });
    let record = AttemptRecord {
        id: uuid::Uuid::now_v7().to_string(),
        delivery_id: delivery.id.clone(),
        webhook_id: delivery.webhook_id.clone(),
        msg_id: delivery.msg_id.clone(),
        event_type: delivery.event_type.clone(),
        attempt: delivery.attempts,
        at,
        status_code,
        duration_ms: crate::millis(started.elapsed()),
        error: match &result {
            Ok(status) if !delivered => Some(format!("the receiver answered {status}")),
            Ok(_) => None,
            Err(e) => Some(e.clone()),
        },
        outcome: outcome.to_owned(),
        next_attempt_at,
    };
    webhooks.metrics.attempt(outcome);
    let written = match store.append_attempt(&record).await {
        Ok(()) if delivered || give_up => store.remove_delivery(&delivery.id).await,
        Ok(()) => store.put_delivery(&delivery).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::error!(error = %e, delivery = %delivery.id, "cannot record a webhook attempt");
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "cannot flush a webhook attempt");
    }
}

/// Sends one attempt; the receiver's status, or why there was none.
async fn send(
    webhooks: &Webhooks,
    url: &str,
    secret: &str,
    delivery: &DeliveryRecord,
) -> Result<u16, String> {
    let url = ssrf::parse(url).map_err(|e| e.to_string())?;
    let addrs = ssrf::resolve(&url, webhooks.config.allow_private)
        .await
        .map_err(|e| super::refusal(&e))?;
    let key = sign::key_of(secret).map_err(|e| e.to_string())?;
    let mut client = reqwest::Client::builder()
        // A proxy would resolve the name itself, around the pinning below.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(webhooks.config.timeout_ms))
        .user_agent(concat!("Kiln-Webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(host) = url.domain() {
        // Connect to the addresses just checked, not to a fresh lookup.
        client = client.resolve_to_addrs(host, &addrs);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let timestamp = crate::now_ms() / 1000;
    let signature = sign::sign(&key, &delivery.msg_id, timestamp, delivery.body.as_bytes());
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "the receiver did not answer in time".to_owned()
            } else {
                format!("cannot reach the receiver: {e}")
            }
        })?;
    let status = response.status().as_u16();
    // Read a little of the answer so the connection ends cleanly; ignore it.
    let mut response = response;
    let mut read = 0;
    while read < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use crate::store::Store;

    /// A delivery whose webhook is gone (deleted between its end and its
    /// attempt, or put back by a replay after a crash) leaves the outbox
    /// unsent, with no attempt logged.
    #[tokio::test]
    async fn a_delivery_whose_webhook_is_gone_leaves_the_outbox_unsent() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&dir.path().join("db"), 8 << 20).unwrap());
        let webhooks = super::super::tests::webhooks_on(&store, dir.path()).await;
        let id = uuid::Uuid::now_v7().to_string();
        let delivery = DeliveryRecord {
            msg_id: format!("msg_{id}"),
            id,
            webhook_id: uuid::Uuid::now_v7().to_string(),
            event_type: "execution.completed".into(),
            body: "{}".into(),
            created_ms: 1,
            attempts: 0,
            next_attempt_ms: 1,
        };
        store.put_delivery(&delivery).await.unwrap();
        attempt(&webhooks, delivery).await;
        assert!(store.pending_deliveries().await.unwrap().is_empty());
        assert_eq!(store.record_counts().webhook_attempts, 0);
    }

    #[test]
    fn backoff_grows_fourfold_with_jitter_and_a_cap() {
        assert_eq!(backoff_ms(15_000, 1, 0.5), 15_000);
        assert_eq!(backoff_ms(15_000, 2, 0.5), 60_000);
        assert_eq!(backoff_ms(15_000, 3, 0.0), 192_000);
        assert_eq!(backoff_ms(15_000, 3, 1.0), 288_000);
        assert_eq!(backoff_ms(15_000, 30, 0.5), MAX_DELAY_MS);
        // The default schedule: 8 attempts over about a day.
        let total: u64 = (1..8).map(|n| backoff_ms(15_000, n, 0.5)).sum();
        assert!(
            (16 * 3600 * 1000..30 * 3600 * 1000).contains(&total),
            "{total}"
        );
    }
}

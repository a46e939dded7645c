//! What every [`Store`] must do, checked through the trait alone: one
//! function per record family, each on a fresh, empty store. The sled store
//! runs them (`sled.rs`); a store on another engine runs the same ones.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::auth::{
    ApiKeyRecord, AuditRecord, RefreshRecord, RefreshUse, SessionRecord, UserRecord,
};
use super::executions::{ExecutionIndex, ExecutionWalk, Removal};
use super::idempotency::IDEMPOTENCY_ABANDONED_MS;
use super::orgs::{DEFAULT_ORG, Membership, OrgRecord, Tier};
use super::script_data::{KvRefusal, SharedSecretRecord};
use super::testing::{execution, id_at, schedule, script};
use super::usage::{Grain, Scope};
use super::webhooks::{AttemptRecord, DeliveryRecord, WebhookRecord};
use super::{
    Claim, ExecutionStatus, IDEMPOTENCY_TTL_MS, ScheduleRecord, Store, StoreError, StoredResponse,
    VersionRecord,
};
use crate::store::scopes::Role;

const AT: &str = "2026-01-01T00:00:00.000Z";

fn org(id: &str, name: &str) -> OrgRecord {
    OrgRecord {
        id: id.into(),
        name: name.into(),
        description: None,
        tier: Tier::Pro,
        quotas: super::orgs::QuotaLimits::default(),
        created_at: AT.into(),
        updated_at: AT.into(),
        created_by: None,
    }
}

fn in_org(org: &str) -> Option<String> {
    super::orgs::org_field(org)
}

/// The ids a walk visits, in its order.
pub async fn ids(store: &dyn Store, walk: &ExecutionWalk) -> Vec<String> {
    let mut found = Vec::new();
    store
        .walk_executions(walk, &mut |e| {
            found.push(e.id);
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    found
}

/// Organizations: the default one is there from the start and first; names
/// are unique and follow a rename; a lookup takes the id or the name.
pub async fn orgs(store: &(impl super::orgs::OrgStore + ?Sized)) {
    let all = store.orgs().await.unwrap();
    assert_eq!(
        all[0].id, DEFAULT_ORG,
        "the default organization exists and is first"
    );
    store.create_org(&org("o1", "acme")).await.unwrap();
    assert!(matches!(
        store.create_org(&org("o2", "acme")).await,
        Err(StoreError::NameTaken(_))
    ));
    assert_eq!(store.org("acme").await.unwrap().unwrap().id, "o1");
    assert_eq!(store.org("o1").await.unwrap().unwrap().name, "acme");
    let renamed = store
        .update_org("o1", &|o| {
            Ok(OrgRecord {
                name: "acme-2".into(),
                ..o.clone()
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "acme-2");
    assert!(
        store.org("acme").await.unwrap().is_none(),
        "the old name is free"
    );
    store.create_org(&org("o2", "acme")).await.unwrap();
    assert!(
        store
            .update_org("nobody", &|o| Ok(o.clone()))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.delete_org("o1").await.unwrap().unwrap().id, "o1");
    assert!(store.org("acme-2").await.unwrap().is_none());
    let ids: Vec<String> = store
        .orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, [DEFAULT_ORG, "o2"]);
}

/// Scripts: names unique per organization, versions with their content,
/// compare-and-swap updates, deletes a precondition can refuse.
pub async fn scripts(store: &dyn Store) {
    let mut s1 = script("s1", "hello", 1);
    store.create_script(&s1, b"v1").await.unwrap();
    let mut theirs = script("s2", "hello", 1);
    theirs.org = in_org("acme");
    store.create_script(&theirs, b"t1").await.unwrap();
    assert!(matches!(
        store.create_script(&script("s3", "hello", 1), b"x").await,
        Err(StoreError::NameTaken(_))
    ));
    assert_eq!(
        store
            .script(DEFAULT_ORG, "hello")
            .await
            .unwrap()
            .unwrap()
            .id,
        "s1"
    );
    assert_eq!(
        store.script("acme", "hello").await.unwrap().unwrap().id,
        "s2"
    );
    assert!(
        store.script("acme", "s1").await.unwrap().is_none(),
        "another organization's id"
    );
    s1.version = 2;
    s1.content_hash = "h2".into();
    let updated = store
        .update_script("s1", &|_| Ok(s1.clone()), Some(b"v2"))
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(store.script_content("s1", 1).await.unwrap().unwrap(), b"v1");
    assert_eq!(store.script_content("s1", 2).await.unwrap().unwrap(), b"v2");
    let versions: Vec<u32> = store
        .script_versions("s1")
        .await
        .unwrap()
        .iter()
        .map(|v: &VersionRecord| v.version)
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(
        store
            .script_version("s1", 2)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    let refused = store
        .update_script("s1", &|_| Err(StoreError::Refused("no".into())), None)
        .await;
    assert!(matches!(refused, Err(StoreError::Refused(_))));
    // A rename frees the old name and claims the new one.
    let renamed = store
        .update_script(
            "s1",
            &|s| {
                Ok(crate::store::ScriptRecord {
                    name: "hi".into(),
                    ..s.clone()
                })
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "hi");
    assert!(store.script(DEFAULT_ORG, "hello").await.unwrap().is_none());
    store.note_execution("s1", AT).await.unwrap();
    assert_eq!(
        store
            .script(DEFAULT_ORG, "s1")
            .await
            .unwrap()
            .unwrap()
            .execution_count,
        1
    );
    assert_eq!(
        store
            .remove_versions_below("s1", 2, &|_| false, 10)
            .await
            .unwrap(),
        1
    );
    assert!(store.script_content("s1", 1).await.unwrap().is_none());
    let listed: Vec<String> = store
        .scripts()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, ["s1", "s2"]);
    let kept = store
        .delete_script("s1", &|_| Err(StoreError::Forbidden("not yours".into())))
        .await;
    assert!(matches!(kept, Err(StoreError::Forbidden(_))));
    store.delete_script("s1", &|_| Ok(())).await.unwrap();
    assert!(store.script(DEFAULT_ORG, "s1").await.unwrap().is_none());
    assert!(store.script_content("s1", 2).await.unwrap().is_none());
    assert!(matches!(
        store.delete_script("s1", &|_| Ok(())).await,
        Err(StoreError::NotFound)
    ));
}

/// Executions: each index walks what it holds, in creation order either
/// way, from a cursor and within time bounds; counters follow; only final
/// ones are deleted; held ones are seen before they are written.
pub async fn executions(store: &dyn Store) {
    let t = 1_700_000_000_000;
    let a = id_at(t, 1);
    let b = id_at(t + 10, 2);
    let c = id_at(t + 20, 3);
    store
        .put_execution(&execution(&a, Some("s1"), ExecutionStatus::Completed))
        .await
        .unwrap();
    store
        .put_execution(&execution(&b, None, ExecutionStatus::Queued))
        .await
        .unwrap();
    let mut theirs = execution(&c, Some("s2"), ExecutionStatus::Failed);
    theirs.org = in_org("acme");
    store.put_execution(&theirs).await.unwrap();

    let all = ExecutionWalk::new(ExecutionIndex::All, false);
    assert_eq!(ids(store, &all).await, [a.clone(), b.clone(), c.clone()]);
    let newest = ExecutionWalk::new(ExecutionIndex::All, true);
    assert_eq!(ids(store, &newest).await, [c.clone(), b.clone(), a.clone()]);
    let mut after = ExecutionWalk::new(ExecutionIndex::All, false);
    after.after = Some(a.clone());
    assert_eq!(ids(store, &after).await, [b.clone(), c.clone()]);
    let mut bounded = ExecutionWalk::new(ExecutionIndex::All, false);
    bounded.created_from_ms = Some(t + 5);
    bounded.created_until_ms = Some(t + 15);
    assert_eq!(ids(store, &bounded).await, [b.as_str()]);
    let script = ExecutionWalk::new(ExecutionIndex::Script(Some("s1".into())), false);
    assert_eq!(ids(store, &script).await, [a.as_str()]);
    let ad_hoc = ExecutionWalk::new(ExecutionIndex::Script(None), false);
    assert_eq!(ids(store, &ad_hoc).await, [b.as_str()]);
    let failed = ExecutionWalk::new(ExecutionIndex::Status(ExecutionStatus::Failed), false);
    assert_eq!(ids(store, &failed).await, [c.as_str()]);
    let acme = ExecutionWalk::new(ExecutionIndex::Org("acme".into()), false);
    assert_eq!(ids(store, &acme).await, [c.as_str()]);
    assert_eq!(store.count_executions(&ExecutionIndex::All), 3);
    assert_eq!(
        store.count_executions(&ExecutionIndex::Org("acme".into())),
        1
    );
    assert_eq!(
        store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Queued)),
        1
    );

    // A state change moves it between the status indexes.
    let mut done = execution(&b, None, ExecutionStatus::Completed);
    done.status = ExecutionStatus::Completed;
    assert!(matches!(
        store.delete_execution(&b).await.unwrap(),
        Removal::NotFinal(ExecutionStatus::Queued)
    ));
    store.put_execution(&done).await.unwrap();
    assert_eq!(
        store.execution(&b).await.unwrap().unwrap().status,
        ExecutionStatus::Completed
    );
    assert_eq!(
        store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Queued)),
        0
    );
    assert!(matches!(
        store.delete_execution(&b).await.unwrap(),
        Removal::Removed
    ));
    assert!(matches!(
        store.delete_execution(&b).await.unwrap(),
        Removal::Missing
    ));
    assert!(store.execution(&b).await.unwrap().is_none());
    assert_eq!(ids(store, &all).await, [a.clone(), c.clone()]);

    // Held: seen by readers and walks, written when final or kept.
    let d = id_at(t + 30, 4);
    let held = execution(&d, Some("s1"), ExecutionStatus::Queued);
    store.hold_execution(&held).await.unwrap();
    assert!(store.execution(&d).await.unwrap().is_some());
    assert_eq!(ids(store, &script).await, [a.clone(), d.clone()]);
    let queued = store
        .executions_in(&[ExecutionStatus::Queued])
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    store.keep_execution(&d).await.unwrap();
    store
        .put_execution(&execution(&d, Some("s1"), ExecutionStatus::Completed))
        .await
        .unwrap();
    assert_eq!(
        store.execution(&d).await.unwrap().unwrap().status,
        ExecutionStatus::Completed
    );
    let per_script = store.executions_per_script();
    assert!(
        per_script.contains(&(Some("s1".into()), 2)),
        "{per_script:?}"
    );

    // A result's keys keep the order the script built them in.
    let mut ordered = execution(&id_at(t + 40, 5), None, ExecutionStatus::Completed);
    ordered.result = Some(serde_json::json!({"zebra": 1, "apple": {"y": 2, "x": 3}}));
    store.put_execution(&ordered).await.unwrap();
    let read = store.execution(&ordered.id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(&read.result).unwrap(),
        r#"{"zebra":1,"apple":{"y":2,"x":3}}"#
    );

    // A compare-and-swap writes only what `change` decides on the record
    // as it is: of two claims, one wins.
    let e = id_at(t + 50, 6);
    store
        .put_execution(&execution(&e, Some("s1"), ExecutionStatus::Queued))
        .await
        .unwrap();
    let claim = |current: &crate::store::ExecutionRecord| {
        (current.status == ExecutionStatus::Queued).then(|| crate::store::ExecutionRecord {
            status: ExecutionStatus::Running,
            node: Some("n1".into()),
            ..current.clone()
        })
    };
    let claimed = store.update_execution(&e, &claim).await.unwrap().unwrap();
    assert_eq!(claimed.status, ExecutionStatus::Running);
    assert!(store.update_execution(&e, &claim).await.unwrap().is_none());
    let missing = id_at(t + 60, 7);
    assert!(
        store
            .update_execution(&missing, &claim)
            .await
            .unwrap()
            .is_none()
    );
    let read = store.execution(&e).await.unwrap().unwrap();
    assert_eq!(read.node.as_deref(), Some("n1"));
    assert_eq!(
        store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Running)),
        1
    );
    assert_eq!(
        store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Queued)),
        0
    );
}

/// Schedules: compare-and-swap updates and deletes under a precondition;
/// a firing only at the due time of an active schedule, with its run.
pub async fn schedules(store: &(impl Store + ?Sized)) {
    store.create_schedule(&schedule("a")).await.unwrap();
    store.create_schedule(&schedule("b")).await.unwrap();
    let run = execution(&id_at(5_000, 1), None, ExecutionStatus::Queued);
    let made_from = schedule("a").updated_at;
    let firing = |due, run| super::schedules::Firing {
        due,
        made_from: &made_from,
        next: Some(9_000),
        run,
        at: AT,
    };
    assert!(
        store
            .fire_schedule("a", firing(999, Some(&run)))
            .await
            .unwrap()
            .is_none(),
        "not due then"
    );
    assert!(store.execution(&run.id).await.unwrap().is_none());
    let changed = super::schedules::Firing {
        made_from: "2026-02-02T00:00:00.000Z",
        ..firing(1_000, Some(&run))
    };
    assert!(
        store.fire_schedule("a", changed).await.unwrap().is_none(),
        "changed since its run was made"
    );
    let fired = store
        .fire_schedule("a", firing(1_000, Some(&run)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fired.next_run_ms, Some(9_000));
    assert_eq!(fired.last_execution_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(store.schedule("a").await.unwrap().unwrap(), fired);
    assert_eq!(store.execution(&run.id).await.unwrap().unwrap(), run);
    assert_eq!(
        store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Queued)),
        1,
        "counted as any stored run"
    );
    assert!(
        store
            .fire_schedule("a", firing(1_000, None))
            .await
            .unwrap()
            .is_none(),
        "fired once"
    );
    // A skip moves it on without a run.
    let skipped = store
        .fire_schedule("b", firing(1_000, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(skipped.next_run_ms, Some(9_000));
    assert_eq!(skipped.last_execution_id, None);
    assert!(
        store
            .fire_schedule("z", firing(1_000, None))
            .await
            .unwrap()
            .is_none()
    );
    let moved = store
        .update_schedule("a", &|s| {
            Ok(ScheduleRecord {
                next_run_ms: Some(2_000),
                ..s.clone()
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.next_run_ms, Some(2_000));
    assert_eq!(
        store.schedule("a").await.unwrap().unwrap().next_run_ms,
        Some(2_000)
    );
    assert!(
        store
            .update_schedule("z", &|s| Ok(s.clone()))
            .await
            .unwrap()
            .is_none()
    );
    let refused = store
        .delete_schedule("a", &|_| Err(StoreError::Refused("changed".into())))
        .await;
    assert!(matches!(refused, Err(StoreError::Refused(_))));
    assert!(
        store
            .delete_schedule("a", &|_| Ok(()))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .delete_schedule("a", &|_| Ok(()))
            .await
            .unwrap()
            .is_none()
    );
    let left: Vec<String> = store
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ["b"]);
}

/// Idempotency keys: one claim, the same request replayed, another
/// refused; a response kept for the TTL, a claim until it looks abandoned.
pub async fn idempotency(store: &(impl super::idempotency::IdempotencyStore + ?Sized)) {
    assert_eq!(
        store.claim_idempotency_key("k", "f", 1_000).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.claim_idempotency_key("k", "f", 1_001).await.unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        store.claim_idempotency_key("k", "g", 1_001).await.unwrap(),
        Claim::Mismatch
    );
    let response = StoredResponse {
        status: 201,
        headers: vec![("location".into(), "/x".into())],
        body: b"{}".to_vec(),
    };
    store
        .settle_idempotency_key("k", Some(&response))
        .await
        .unwrap();
    assert_eq!(
        store.claim_idempotency_key("k", "f", 2_000).await.unwrap(),
        Claim::Replay(response)
    );
    // After the TTL the key is new again.
    let later = 1_000 + IDEMPOTENCY_TTL_MS;
    assert_eq!(
        store.claim_idempotency_key("k", "g", later).await.unwrap(),
        Claim::Claimed
    );
    // A released claim can be taken at once; an abandoned one after a while.
    store.settle_idempotency_key("k", None).await.unwrap();
    assert_eq!(
        store.claim_idempotency_key("k", "h", later).await.unwrap(),
        Claim::Claimed
    );
    let abandoned = later + IDEMPOTENCY_ABANDONED_MS;
    assert_eq!(
        store
            .claim_idempotency_key("k", "h", abandoned)
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.expire_idempotency_keys(abandoned + 1).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .claim_idempotency_key("k", "f", abandoned)
            .await
            .unwrap(),
        Claim::Claimed
    );
}

fn webhook(id: &str) -> WebhookRecord {
    WebhookRecord {
        id: id.into(),
        org: None,
        url: "https://example.com/hook".into(),
        events: vec!["execution.completed".into()],
        secret: "whsec_x".into(),
        active: true,
        description: None,
        created_at: AT.into(),
        updated_at: AT.into(),
        created_by: None,
    }
}

/// A final record stored with the deliveries its end makes, or (under a
/// precondition that does not hold) neither.
pub async fn final_records(store: &dyn Store) {
    let id = id_at(1_700_000_000_000, 9);
    let mut running = execution(&id, Some("s1"), ExecutionStatus::Running);
    running.node = Some("a".into());
    store.put_execution(&running).await.unwrap();
    let done = super::ExecutionRecord {
        status: ExecutionStatus::Completed,
        ..running.clone()
    };
    let theirs = |current: &super::ExecutionRecord| current.node.as_deref() == Some("b");
    let refused = store
        .finish_execution(&done, Some(&theirs), &[delivery(1, "w", 0)])
        .await
        .unwrap();
    assert!(!refused);
    assert_eq!(store.execution(&id).await.unwrap().unwrap(), running);
    assert!(
        store.pending_deliveries().await.unwrap().is_empty(),
        "nor its events"
    );

    let mine = |current: &super::ExecutionRecord| {
        current.status == ExecutionStatus::Running && current.node.as_deref() == Some("a")
    };
    let outbox = [delivery(1, "w", 0), delivery(2, "v", 0)];
    assert!(
        store
            .finish_execution(&done, Some(&mine), &outbox)
            .await
            .unwrap()
    );
    assert_eq!(store.execution(&id).await.unwrap().unwrap(), done);
    assert_eq!(store.pending_deliveries().await.unwrap(), outbox);
    assert_eq!(
        store.count_executions(&ExecutionIndex::Status(ExecutionStatus::Completed)),
        1
    );
    assert!(
        !store
            .finish_execution(&done, Some(&mine), &[])
            .await
            .unwrap(),
        "once"
    );
    // Without a precondition: an HTTP function's record, never stored before.
    let function = execution(
        &id_at(1_700_000_000_000, 10),
        None,
        ExecutionStatus::Completed,
    );
    assert!(store.finish_execution(&function, None, &[]).await.unwrap());
    assert_eq!(
        store.execution(&function.id).await.unwrap().unwrap(),
        function
    );
}

fn delivery(n: u8, webhook: &str, due: u64) -> DeliveryRecord {
    DeliveryRecord {
        id: id_at(1_700_000_000_000, n),
        webhook_id: webhook.into(),
        msg_id: format!("msg_{n}"),
        event_type: "execution.completed".into(),
        body: "{}".into(),
        created_ms: 0,
        attempts: 0,
        next_attempt_ms: due,
    }
}

fn attempt(n: u8, webhook: &str) -> AttemptRecord {
    AttemptRecord {
        id: id_at(1_700_000_000_000 + u64::from(n), n),
        delivery_id: "d".into(),
        webhook_id: webhook.into(),
        msg_id: "m".into(),
        event_type: "execution.completed".into(),
        attempt: 1,
        at: crate::time_of_ms(1_700_000_000_000 + u64::from(n)),
        status_code: Some(200),
        duration_ms: 1,
        error: None,
        outcome: "delivered".into(),
        next_attempt_at: None,
    }
}

/// Webhooks, their outbox by due time, and their attempt log.
pub async fn webhooks(store: &(impl super::webhooks::WebhookStore + ?Sized)) {
    store.create_webhook(&webhook("w1")).await.unwrap();
    store.create_webhook(&webhook("w2")).await.unwrap();
    let off = store
        .update_webhook("w2", &|w| {
            Ok(WebhookRecord {
                active: false,
                ..w.clone()
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!off.active);
    let (early, late, other) = (
        delivery(1, "w1", 100),
        delivery(2, "w1", 300),
        delivery(3, "w2", 200),
    );
    for d in [&early, &late, &other] {
        store.put_delivery(d).await.unwrap();
    }
    let (due, next) = store.due_deliveries(250, 10, &|_| false).await.unwrap();
    let due: Vec<String> = due.into_iter().map(|d| d.id).collect();
    assert_eq!(
        due,
        [early.id.clone(), other.id.clone()],
        "the longest due first"
    );
    assert_eq!(next, Some(300));
    let (skipped, _) = store
        .due_deliveries(250, 10, &|id| id == early.id)
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    // A retry moves its due time.
    store
        .put_delivery(&DeliveryRecord {
            attempts: 1,
            next_attempt_ms: 1_000,
            ..early.clone()
        })
        .await
        .unwrap();
    let (due, _) = store.due_deliveries(250, 10, &|_| false).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        store
            .pending_deliveries()
            .await
            .unwrap()
            .iter()
            .find(|d| d.id == early.id)
            .unwrap()
            .attempts,
        1
    );
    // One deliverer claims an attempt; a second, with the same copy, gets
    // nothing, and the claimed one is not due until its claim runs out.
    let claimed = store.claim_delivery(&other, 5_000).await.unwrap().unwrap();
    assert_eq!(claimed.next_attempt_ms, 5_000);
    assert!(store.claim_delivery(&other, 6_000).await.unwrap().is_none());
    let (due, _) = store.due_deliveries(4_000, 10, &|_| false).await.unwrap();
    assert!(due.iter().all(|d| d.id != other.id));
    let (due, _) = store.due_deliveries(5_000, 10, &|_| false).await.unwrap();
    assert!(due.iter().any(|d| d.id == other.id));
    store.remove_delivery(&late.id).await.unwrap();
    assert_eq!(store.pending_deliveries().await.unwrap().len(), 2);

    for n in 1..=3 {
        store.append_attempt(&attempt(n, "w1")).await.unwrap();
    }
    let (page, total) = store.attempts("w1", 1, 1).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(page[0].id, attempt(2, "w1").id, "newest first");
    assert_eq!(
        store
            .remove_attempts_before(1_700_000_000_002, 10)
            .await
            .unwrap(),
        1
    );
    // A webhook goes with its outbox entries and attempts.
    store.delete_webhook("w1").await.unwrap().unwrap();
    assert!(store.webhook("w1").await.unwrap().is_none());
    assert_eq!(store.attempts("w1", 0, 10).await.unwrap().1, 0);
    let left: Vec<String> = store
        .pending_deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.webhook_id)
        .collect();
    assert_eq!(left, ["w2"]);
    assert_eq!(store.webhooks().await.unwrap().len(), 1);
}

fn user(id: &str, name: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        username: name.into(),
        memberships: vec![Membership {
            org: DEFAULT_ORG.into(),
            role: Role::Developer,
        }],
        operator: false,
        password_hash: "$argon2id$x".into(),
        disabled: false,
        created_at: AT.into(),
        updated_at: AT.into(),
        last_login_at: None,
        totp: None,
    }
}

fn key(id: &str, owner: &str, hash: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        org: None,
        name: "ci".into(),
        owner_id: owner.into(),
        prefix: "kiln_abc".into(),
        hash: hash.into(),
        scopes: Vec::new(),
        created_at: AT.into(),
        expires_at: None,
        expires_ms: None,
    }
}

fn audit(n: u8, org: &str) -> AuditRecord {
    AuditRecord {
        id: id_at(1_700_000_000_000 + u64::from(n), n),
        org: in_org(org),
        at: AT.into(),
        action: "login".into(),
        outcome: "success".into(),
        actor_id: None,
        actor: None,
        ip: None,
        target: None,
        detail: None,
        request_id: None,
    }
}

/// Users, keys, sessions, refresh tokens and the audit log.
pub async fn auth(store: &(impl super::auth::AuthStore + ?Sized)) {
    store.create_user(&user("u1", "ada")).await.unwrap();
    assert!(matches!(
        store.create_user(&user("u2", "ada")).await,
        Err(StoreError::NameTaken(_))
    ));
    store.create_user(&user("u2", "bob")).await.unwrap();
    assert_eq!(store.user_by_name("ada").await.unwrap().unwrap().id, "u1");
    let off = store
        .update_user("u1", &|u| {
            Ok(UserRecord {
                disabled: true,
                ..u.clone()
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert!(off.disabled && store.user("u1").await.unwrap().unwrap().disabled);

    store.create_api_key(&key("k1", "u1", "h1")).await.unwrap();
    store.create_api_key(&key("k2", "u2", "h2")).await.unwrap();
    assert_eq!(store.api_key_by_hash("h1").await.unwrap().unwrap().id, "k1");
    assert_eq!(store.revoke_user_keys("u1").await.unwrap(), 1);
    assert!(store.api_key_by_hash("h1").await.unwrap().is_none());
    assert!(store.delete_api_key("k2").await.unwrap().is_some());
    assert!(store.api_keys().await.unwrap().is_empty());

    let session = |id: &str| SessionRecord {
        id: id.into(),
        user_id: "u2".into(),
        created_ms: 0,
        expires_ms: 1_000,
        revoked: false,
    };
    store.put_session(&session("s1")).await.unwrap();
    store.put_session(&session("s2")).await.unwrap();
    assert_eq!(
        store
            .extend_session("s1", 5_000)
            .await
            .unwrap()
            .unwrap()
            .expires_ms,
        5_000
    );
    let refresh = RefreshRecord {
        session_id: "s1".into(),
        user_id: "u2".into(),
        expires_ms: 5_000,
        used: false,
    };
    store.put_refresh_token("t1", &refresh).await.unwrap();
    assert!(matches!(
        store.use_refresh_token("t1").await.unwrap(),
        RefreshUse::Fresh(_)
    ));
    assert!(matches!(
        store.use_refresh_token("t1").await.unwrap(),
        RefreshUse::Reused(_)
    ));
    assert!(matches!(
        store.use_refresh_token("t9").await.unwrap(),
        RefreshUse::Unknown
    ));
    assert_eq!(
        store.revoke_user_sessions("u2", Some("s1")).await.unwrap(),
        1
    );
    assert!(store.session("s2").await.unwrap().unwrap().revoked);
    store.revoke_session("s1").await.unwrap();
    assert!(
        store.extend_session("s1", 9_000).await.unwrap().is_none(),
        "revoked"
    );
    assert_eq!(
        store.expire_sessions(2_000).await.unwrap(),
        1,
        "s2 expired at 1 000"
    );

    for n in 1..=3 {
        store.append_audit(&audit(n, DEFAULT_ORG)).unwrap();
    }
    store.append_audit(&audit(4, "acme")).unwrap();
    let (page, total) = store.audit_page(DEFAULT_ORG, 0, 2).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(page[0].id, audit(3, DEFAULT_ORG).id, "newest first");
    assert_eq!(store.audit_page("acme", 0, 10).await.unwrap().1, 1);
    assert_eq!(
        store
            .remove_audit_before(1_700_000_000_002, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.audit_page(DEFAULT_ORG, 0, 10).await.unwrap().1, 2);

    assert!(store.delete_user("u2").await.unwrap().is_some());
    assert!(store.user_by_name("bob").await.unwrap().is_none());
    assert_eq!(store.users().await.unwrap().len(), 1);
}

/// A script's key-value entries within a quota, its config behind a
/// precondition, and shared secrets per organization.
pub async fn script_data(store: &dyn Store) {
    store
        .create_script(&script("s1", "kv", 1), b"x")
        .await
        .unwrap();
    store.kv_set("s1", "a/1", b"one", 100).await.unwrap();
    store.kv_set("s1", "a/2", b"two", 100).await.unwrap();
    store.kv_set("s1", "b", b"three", 100).await.unwrap();
    assert!(matches!(
        store.kv_set("s1", "c", &[0; 90], 100).await,
        Err(KvRefusal::OverQuota { .. })
    ));
    assert_eq!(store.kv_get("s1", "a/2").await.unwrap().unwrap(), b"two");
    assert_eq!(store.kv_keys("s1", "a/", 10).await.unwrap(), ["a/1", "a/2"]);
    assert_eq!(store.kv_keys("s1", "", 1).await.unwrap(), ["a/1"]);
    assert!(store.kv_delete("s1", "b").await.unwrap());
    assert!(!store.kv_delete("s1", "b").await.unwrap());
    assert_eq!(store.kv_entries("s1").await.unwrap().len(), 2);

    let values = BTreeMap::from([("TOKEN".to_owned(), "sealed".to_owned())]);
    let refused = store
        .set_script_config("s1", &values, &|_| Err(StoreError::Forbidden("no".into())))
        .await;
    assert!(matches!(refused, Err(StoreError::Forbidden(_))));
    assert!(store.script_config("s1").await.unwrap().is_empty());
    store
        .set_script_config("s1", &values, &|_| Ok(()))
        .await
        .unwrap();
    assert_eq!(store.script_config("s1").await.unwrap(), values);
    assert!(matches!(
        store.set_script_config("nope", &values, &|_| Ok(())).await,
        Err(StoreError::NotFound)
    ));
    // A deleted script's data goes with it.
    store.delete_script("s1", &|_| Ok(())).await.unwrap();
    assert!(store.kv_get("s1", "a/1").await.unwrap().is_none());
    assert!(store.script_config("s1").await.unwrap().is_empty());

    let secret = |org: &str, value: &str| SharedSecretRecord {
        name: "DB".into(),
        org: in_org(org),
        value: value.into(),
        scripts: vec!["*".into()],
        created_at: AT.into(),
        updated_at: AT.into(),
        created_by: None,
    };
    store
        .put_shared_secret(&secret(DEFAULT_ORG, "one"))
        .await
        .unwrap();
    store
        .put_shared_secret(&secret("acme", "theirs"))
        .await
        .unwrap();
    store
        .put_shared_secret(&secret(DEFAULT_ORG, "two"))
        .await
        .unwrap();
    assert_eq!(
        store
            .shared_secret(DEFAULT_ORG, "DB")
            .await
            .unwrap()
            .unwrap()
            .value,
        "two"
    );
    assert_eq!(
        store
            .shared_secret("acme", "DB")
            .await
            .unwrap()
            .unwrap()
            .value,
        "theirs"
    );
    assert_eq!(store.shared_secrets().await.unwrap().len(), 2);
    assert!(store.delete_shared_secret("acme", "DB").await.unwrap());
    assert!(store.shared_secret("acme", "DB").await.unwrap().is_none());
    assert!(
        store
            .shared_secret(DEFAULT_ORG, "DB")
            .await
            .unwrap()
            .is_some()
    );
}

/// Usage rollups: what ended is counted per organization and per script.
pub async fn usage(store: &dyn Store) {
    let t = 1_700_000_000_000;
    store
        .put_execution(&execution(
            &id_at(t, 1),
            Some("s1"),
            ExecutionStatus::Completed,
        ))
        .await
        .unwrap();
    store
        .put_execution(&execution(
            &id_at(t, 2),
            Some("s1"),
            ExecutionStatus::Failed,
        ))
        .await
        .unwrap();
    let mut theirs = execution(&id_at(t, 3), None, ExecutionStatus::Completed);
    theirs.org = in_org("acme");
    store.put_execution(&theirs).await.unwrap();
    store
        .put_execution(&execution(&id_at(t, 4), None, ExecutionStatus::Queued))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let total = store
        .usage(Grain::Day, t, t, Scope::Total(DEFAULT_ORG))
        .await
        .unwrap();
    assert_eq!(total.len(), 1);
    assert_eq!(
        total[0].usage.executions(),
        2,
        "the queued one has not ended"
    );
    assert_eq!(total[0].usage.failures(), 1);
    let acme = store
        .usage(Grain::Hour, t, t, Scope::Total("acme"))
        .await
        .unwrap();
    assert_eq!(acme[0].usage.executions(), 1);
    let one = store
        .usage(Grain::Hour, t, t, Scope::Script(DEFAULT_ORG, Some("s1")))
        .await
        .unwrap();
    assert_eq!(one[0].usage.executions(), 2);
    assert_eq!(
        store
            .remove_usage_before(t + 2 * 86_400_000, 100)
            .await
            .unwrap(),
        8
    );
    assert!(
        store
            .usage(Grain::Day, t, t, Scope::Total(DEFAULT_ORG))
            .await
            .unwrap()
            .is_empty()
    );
}

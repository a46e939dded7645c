//! Every answer that reports a final record comes after a completed sync of
//! that record's bytes. The store's files are synced through a
//! [`CoverageSyncer`] on a slow disk: a sync that is missing, or that is no
//! longer awaited before the answer, leaves the record uncovered when the
//! answer arrives.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::TestApp;
use crate::store::testing::CoverageSyncer;

/// Writes its input reversed: the marker a test watches for is then in the
/// final record only, not in the queued one that carries the parameters.
const REVERSER: &str = "function main(p) {
    const out = p.m.split('').reverse().join('');
    console.log('x'.repeat(p.pad) + out);
    return out;
}";

async fn node(syncer: &Arc<CoverageSyncer>) -> TestApp {
    let app = TestApp::syncing_with(syncer.clone(), |_| {}).await;
    app.create_script("reverser", "javascript", REVERSER).await;
    app
}

/// A marker and the parameters that make the script write it.
fn marked(syncer: &CoverageSyncer, pad: usize) -> (String, serde_json::Value) {
    let m = uuid::Uuid::new_v4().simple().to_string();
    let marker: String = m.chars().rev().collect();
    syncer.watch(&marker);
    (marker, json!({"parameters": {"m": m, "pad": pad}}))
}

#[tokio::test]
async fn a_waited_run_is_answered_after_its_final_record_is_synced() {
    let syncer = Arc::new(CoverageSyncer::slow(Duration::from_millis(150)));
    let app = node(&syncer).await;
    // Small enough for the log; large enough for a blob file of its own.
    for pad in [0, 300_000] {
        let (marker, body) = marked(&syncer, pad);
        let run = app.run("reverser", body).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["result"], marker.as_str());
        assert!(
            syncer.covered(&marker),
            "a {pad}-byte output was answered before a sync covered it"
        );
    }
}

/// A run whose final record cannot be synced is never answered as
/// finished: its waiter gets a 500, whichever of its own sync and its
/// worker's fails first.
#[tokio::test]
async fn a_waited_run_whose_record_cannot_be_synced_is_a_500() {
    let syncer = Arc::new(CoverageSyncer::default());
    let app = node(&syncer).await;
    syncer.fail();
    let (_, body) = marked(&syncer, 0);
    app.execute("reverser", "?wait=true", body)
        .await
        .error(500, "INTERNAL_ERROR");
}

/// An asynchronous run's final record is flushed by its worker while the
/// next one runs; a read that reports it first must wait for that flush.
#[tokio::test]
async fn a_read_reports_a_final_record_only_once_it_is_synced() {
    let syncer = Arc::new(CoverageSyncer::slow(Duration::from_millis(150)));
    let app = node(&syncer).await;
    for read in ["one", "list"] {
        let (marker, body) = marked(&syncer, 0);
        let id = app.execute("reverser", "", body).await.expect(202)["execution_id"]
            .as_str()
            .expect("an id")
            .to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = match read {
                "one" => app
                    .get(&format!("/v1/executions/{id}"))
                    .send()
                    .await
                    .expect(200)["status"]
                    .clone(),
                _ => app.get("/v1/executions?size=1").send().await.expect(200)["data"][0]["status"]
                    .clone(),
            };
            if status == "completed" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            syncer.covered(&marker),
            "a {read} read reported a final record before a sync covered it"
        );
    }
}

/// An accepted (202) run is on disk before the client hears of it: its
/// queued record, parameters and all.
#[tokio::test]
async fn an_accepted_run_is_synced_before_its_202() {
    let syncer = Arc::new(CoverageSyncer::slow(Duration::from_millis(150)));
    let app = node(&syncer).await;
    let m = uuid::Uuid::new_v4().simple().to_string();
    syncer.watch(&m);
    app.execute("reverser", "", json!({"parameters": {"m": m, "pad": 0}}))
        .await
        .expect(202);
    assert!(
        syncer.covered(&m),
        "a 202 came before its record was synced"
    );
}

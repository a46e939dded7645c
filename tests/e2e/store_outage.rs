//! The PostgreSQL store going away under a running node and coming back.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Kiln, eventually};

#[test]
fn a_database_outage_makes_the_node_unready_until_it_returns_and_loses_nothing() {
    // A cluster of this test's own, so stopping it stops no other test.
    let cluster = kiln_testpg::Cluster::start();
    let url = cluster.database("outage");
    let (kiln, _dir) = Kiln::start(&[("KILN_STORE_URL", &url)]);
    kiln.create_script("echo", "javascript", "function main(p) { return p.n; }");
    let answered = kiln.run("echo", json!({"parameters": {"n": 7}}));
    let readyz = || kiln.anonymous(Method::GET, "/readyz").send().unwrap();
    let ready = readyz();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().unwrap();
    assert_eq!(body["store"], json!({"kind": "postgres", "status": "ok"}));

    cluster.pause();
    // Its last answer stands for a second.
    let down = eventually("unready", || {
        let answer = readyz();
        (answer.status() == 503).then_some(answer)
    });
    let error: Value = down.json().unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("store (postgres)"), "{message}");
    // What needs the store fails in the error shape, and the node lives on.
    let refused = kiln.execute("echo", "?wait=true", json!({"parameters": {"n": 8}}));
    assert!(refused.status().is_server_error(), "{}", refused.status());
    let _: Value = refused.json().unwrap();
    std::thread::sleep(Duration::from_secs(5));

    cluster.resume();
    eventually("ready again", || (readyz().status() == 200).then_some(()));
    let status: Value = kiln.get("/v1/status").send().unwrap().json().unwrap();
    assert_eq!(status["store"], json!({"kind": "postgres", "status": "ok"}));
    let kept = kiln.execution(answered["id"].as_str().unwrap());
    assert_eq!(kept["result"], 7, "{kept}");
    assert_eq!(
        kiln.run("echo", json!({"parameters": {"n": 9}}))["result"],
        9
    );
}

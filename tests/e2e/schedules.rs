//! `/v1/schedules`: cron schedules fire executions with `trigger: "schedule"`,
//! pause and resume, survive a restart, and refuse bad input.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Kiln, error_body, eventually};

fn create_schedule(kiln: &Kiln, body: Value) -> Value {
    let response = kiln.post("/v1/schedules").json(&body).send().unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let schedule: Value = response.json().unwrap();
    assert_eq!(
        location,
        format!("/v1/schedules/{}", schedule["id"].as_str().unwrap())
    );
    schedule
}

fn update_schedule(kiln: &Kiln, id: &str, body: Value) -> Value {
    let response = kiln
        .request(Method::PUT, &format!("/v1/schedules/{id}"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

/// The scheduled executions of a script, oldest last.
fn scheduled_runs(kiln: &Kiln, script_id: &str) -> Vec<Value> {
    let page: Value = kiln
        .get(&format!(
            "/v1/executions?script_id={script_id}&trigger=schedule&size=100"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    page["data"].as_array().unwrap().clone()
}

fn wait_until_final(kiln: &Kiln, runs: &[Value]) {
    for run in runs {
        kiln.poll_until_final(run["id"].as_str().unwrap());
    }
}

#[test]
fn a_schedule_every_second_fires_pauses_resumes_and_is_deleted() {
    let (kiln, _dir) = Kiln::start(&[]);
    let script = kiln.create_script(
        "tick",
        "javascript",
        "function main(p) { return { n: p.n, schedule: process.env.KILN_SCHEDULE_ID }; }",
    );
    let script_id = script["id"].as_str().unwrap();
    let schedule = create_schedule(
        &kiln,
        json!({"name": "every second", "script_id": "tick", "cron": "* * * * * *",
               "parameters": {"n": 7}}),
    );
    let id = schedule["id"].as_str().unwrap();
    assert_eq!(schedule["script_id"], script_id);
    assert_eq!(schedule["timezone"], "UTC");
    assert_eq!(schedule["active"], true);
    assert_eq!(schedule["overlap"], "skip");
    assert!(schedule["next_run_at"].as_str().unwrap().ends_with('Z'));

    let runs = eventually("two scheduled runs", || {
        let runs = scheduled_runs(&kiln, script_id);
        (runs.len() >= 2).then_some(runs)
    });
    wait_until_final(&kiln, &runs);
    let last = kiln.poll_until_final(runs[0]["id"].as_str().unwrap());
    assert_eq!(last["trigger"], "schedule");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["result"], json!({"n": 7, "schedule": id}));

    // Pausing stops it: no run starts while it is paused.
    let paused = update_schedule(&kiln, id, json!({"active": false}));
    assert_eq!(paused["active"], false);
    assert!(paused["next_run_at"].is_null());
    assert!(paused["last_execution_id"].is_string());
    assert!(paused["last_run_at"].is_string());
    // A run the scheduler was starting as the pause landed may still appear.
    std::thread::sleep(Duration::from_millis(300));
    let before = scheduled_runs(&kiln, script_id);
    wait_until_final(&kiln, &before);
    let listed: Value = kiln
        .get("/v1/schedules?active=false")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["data"][0]["id"], id);
    assert_eq!(listed["data"][0]["last_status"], "completed", "{listed}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(scheduled_runs(&kiln, script_id).len(), before.len());

    // Resuming runs it again.
    let resumed = update_schedule(&kiln, id, json!({"active": true}));
    assert!(resumed["next_run_at"].is_string());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(scheduled_runs(&kiln, script_id).len() > before.len());

    let deleted = kiln
        .request(Method::DELETE, &format!("/v1/schedules/{id}"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    error_body(
        kiln.get(&format!("/v1/schedules/{id}")).send().unwrap(),
        404,
        "RESOURCE_NOT_FOUND",
    );
    std::thread::sleep(Duration::from_millis(300));
    let after_delete = scheduled_runs(&kiln, script_id).len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(scheduled_runs(&kiln, script_id).len(), after_delete);
}

#[test]
fn a_schedule_stops_running_when_its_creator_is_disabled() {
    let (kiln, _dir) = Kiln::start(&[]);
    let script = kiln.create_script("tick", "javascript", "function main() { return 1; }");
    let script_id = script["id"].as_str().unwrap();
    let (developer, token) = kiln.create_user("dev", "developer");
    let response = kiln
        .with_token(&token, Method::POST, "/v1/schedules")
        .json(&json!({"name": "theirs", "script_id": "tick", "cron": "* * * * * *"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!scheduled_runs(&kiln, script_id).is_empty());

    let disabled = kiln
        .request(Method::PUT, &format!("/v1/users/{developer}"))
        .json(&json!({"disabled": true}))
        .send()
        .unwrap();
    assert_eq!(disabled.status(), 200);
    // A run the scheduler was starting as the change landed may still appear.
    std::thread::sleep(Duration::from_millis(300));
    let before = scheduled_runs(&kiln, script_id);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(scheduled_runs(&kiln, script_id).len(), before.len());
}

#[test]
fn a_schedule_survives_a_restart_and_keeps_firing() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = Kiln::start_in(dir.path(), &[]);
    let script = kiln.create_script("later", "python", "def main():\n    return 'ran'\n");
    let script_id = script["id"].as_str().unwrap().to_owned();
    let schedule = create_schedule(
        &kiln,
        json!({"name": "nightly", "script_id": script_id, "cron": "@daily",
               "timezone": "Europe/Berlin", "overlap": "allow"}),
    );
    let id = schedule["id"].as_str().unwrap().to_owned();
    // Berlin midnight is 23:00 or 22:00 UTC, depending on the season.
    let next = schedule["next_run_at"].as_str().unwrap();
    assert!(
        next.ends_with("T23:00:00.000Z") || next.ends_with("T22:00:00.000Z"),
        "{next}"
    );
    assert!(kiln.terminate().success());

    let kiln = Kiln::start_in(dir.path(), &[]);
    let kept: Value = kiln
        .get(&format!("/v1/schedules/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(kept["next_run_at"], schedule["next_run_at"]);
    assert_eq!(kept["overlap"], "allow");
    // Switched to every second after the restart, it fires.
    update_schedule(
        &kiln,
        &id,
        json!({"cron": "* * * * * *", "timezone": "UTC"}),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let runs = scheduled_runs(&kiln, &script_id);
    assert!(!runs.is_empty());
    let run = kiln.poll_until_final(runs[0]["id"].as_str().unwrap());
    assert_eq!(run["result"], "ran", "{run}");
}

#[test]
fn missed_runs_during_downtime_fire_once() {
    // Three slots, three to five seconds from now, all in one minute; none
    // again until tomorrow. The server is down through (at least the last of) them.
    let mut now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now % 60 > 48 {
        std::thread::sleep(Duration::from_secs(61 - now % 60));
        now += 61 - now % 60;
    }
    let (second, minute, hour) = (now % 60, now / 60 % 60, now / 3600 % 24);
    let cron = format!(
        "{},{},{} {minute} {hour} * * *",
        second + 3,
        second + 4,
        second + 5
    );
    let dir = tempfile::tempdir().unwrap();
    let kiln = Kiln::start_in(dir.path(), &[]);
    let script = kiln.create_script("catch-up", "javascript", "function main() { return 1; }");
    let script_id = script["id"].as_str().unwrap().to_owned();
    create_schedule(
        &kiln,
        json!({"name": "three slots", "script_id": script_id, "cron": cron, "overlap": "allow"}),
    );
    let before = scheduled_runs(&kiln, &script_id).len();
    assert!(kiln.terminate().success());
    let past_the_slots = now + 7;
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        < past_the_slots
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let kiln = Kiln::start_in(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let runs = scheduled_runs(&kiln, &script_id);
    assert_eq!(runs.len() - before, 1, "missed slots, one run: {runs:?}");
    wait_until_final(&kiln, &runs);
}

/// With `overlap: skip` (the default), a firing while the last run is still
/// running is skipped: each scheduled run starts after the one before it
/// ended, though the cron fires every second and each run takes 1.5 s.
#[test]
fn a_skipping_schedule_never_runs_twice_at_once() {
    let (kiln, _dir) = Kiln::start(&[("KILN_WORKERS_COUNT", "2")]);
    let script = kiln.create_script(
        "slow",
        "javascript",
        "function main() { const end = Date.now() + 1500; while (Date.now() < end) {} return 1; }",
    );
    let script_id = script["id"].as_str().unwrap();
    let schedule = create_schedule(
        &kiln,
        json!({"name": "slow", "script_id": "slow", "cron": "* * * * * *"}),
    );
    assert_eq!(schedule["overlap"], "skip");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = scheduled_runs(&kiln, script_id);
        let finished = runs.iter().filter(|r| r["status"] == "completed").count();
        if finished >= 3 {
            break runs;
        }
        assert!(std::time::Instant::now() < deadline, "{runs:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = schedule["id"].as_str().unwrap();
    let deleted = kiln
        .request(Method::DELETE, &format!("/v1/schedules/{id}"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // Newest first: each run was created after the one before it ended.
    let finished: Vec<&Value> = runs.iter().filter(|r| r["status"] == "completed").collect();
    for pair in finished.windows(2) {
        let (later, earlier) = (pair[0], pair[1]);
        assert!(
            later["created_at"].as_str() >= earlier["completed_at"].as_str(),
            "overlapping runs: {earlier} and {later}"
        );
    }
}

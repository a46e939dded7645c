//! Schedules that are refused: crons, zones, scripts and fields.

use axum::http::Method;
use serde_json::{Value, json};

use super::{TestApp, error_body};

async fn create_schedule(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/schedules").json(&body).send().await;
    let location = response.header("location");
    let schedule = response.expect(201);
    assert_eq!(
        location,
        format!("/v1/schedules/{}", schedule["id"].as_str().unwrap())
    );
    schedule
}

#[tokio::test]
async fn bad_crons_zones_scripts_and_fields_are_refused() {
    let app = TestApp::new().await;
    app.create_script("s", "javascript", "function main() { return 1; }")
        .await;
    let refused = async |body: Value, field: &str| {
        let error = error_body(
            app.post("/v1/schedules").json(&body).send().await,
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["error"]["details"][0]["field"], field, "{error}");
    };
    refused(
        json!({"name": "x", "script_id": "s", "cron": "61 * * * *"}),
        "cron",
    )
    .await;
    refused(
        json!({"name": "x", "script_id": "s", "cron": "every day"}),
        "cron",
    )
    .await;
    refused(
        json!({"name": "x", "script_id": "s", "cron": "@daily", "timezone": "Mars/Olympus"}),
        "timezone",
    )
    .await;
    // A script that is not there is not found, as on its own routes.
    let missing = error_body(
        app.post("/v1/schedules")
            .json(&json!({"name": "x", "script_id": "nope", "cron": "@daily"}))
            .send()
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("script_id: no script"),
        "{missing}"
    );
    refused(
        json!({"name": "x", "script_id": "s", "cron": "0 0 30 2 *"}),
        "cron",
    )
    .await;
    // Long but otherwise valid: refused for its length.
    let long_cron = format!("0 {}0 * * *", "0,".repeat(150));
    let error = error_body(
        app.post("/v1/schedules")
            .json(&json!({"name": "x", "script_id": "s", "cron": long_cron}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 256"),
        "{error}"
    );
    refused(
        json!({"name": "n".repeat(129), "script_id": "s", "cron": "@daily"}),
        "name",
    )
    .await;
    refused(
        json!({"name": "x", "script_id": "s", "cron": "@daily",
               "parameters": {"blob": "x".repeat(70_000)}}),
        "parameters",
    )
    .await;
    refused(
        json!({"name": " ", "script_id": "s", "cron": "@daily"}),
        "name",
    )
    .await;
    refused(
        json!({"name": "x", "script_id": "s", "cron": "@daily", "parameters": [1]}),
        "parameters",
    )
    .await;
    error_body(
        app.post("/v1/schedules")
            .json(&json!({"name": "x", "script_id": "s", "cron": "@daily", "color": "red"}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    error_body(
        app.post("/v1/schedules")
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );

    // A refused change leaves the schedule as it was.
    let schedule = create_schedule(
        &app,
        json!({"name": "x", "script_id": "s", "cron": "@hourly", "active": false}),
    )
    .await;
    assert!(schedule["next_run_at"].is_null());
    let id = schedule["id"].as_str().unwrap();
    error_body(
        app.request(Method::PUT, &format!("/v1/schedules/{id}"))
            .json(&json!({"cron": "* * *"}))
            .send()
            .await,
        400,
        "VALIDATION_ERROR",
    );
    // Deleting a script deletes its schedules.
    app.create_script("doomed", "javascript", "function main() { return 1; }")
        .await;
    let doomed = create_schedule(
        &app,
        json!({"name": "d", "script_id": "doomed", "cron": "@daily"}),
    )
    .await;
    let gone = app
        .request(Method::DELETE, "/v1/scripts/doomed")
        .send()
        .await;
    assert_eq!(gone.status(), 204);
    error_body(
        app.get(&format!("/v1/schedules/{}", doomed["id"].as_str().unwrap()))
            .send()
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    );

    let read = app.get(&format!("/v1/schedules/{id}")).send().await;
    let tag = read.headers()["etag"].to_str().unwrap().to_owned();
    let unchanged: Value = read.json();
    assert_eq!(unchanged["cron"], "@hourly");

    // ETags: 304 when unchanged, 412 for a stale If-Match on PUT and DELETE.
    let again = app
        .get(&format!("/v1/schedules/{id}"))
        .header("if-none-match", &tag)
        .send()
        .await;
    assert_eq!(again.status(), 304);
    for method in [Method::PUT, Method::DELETE] {
        error_body(
            app.request(method, &format!("/v1/schedules/{id}"))
                .header("if-match", "\"stale\"")
                .json(&json!({"name": "y"}))
                .send()
                .await,
            412,
            "PRECONDITION_FAILED",
        );
    }
    let renamed = app
        .request(Method::PUT, &format!("/v1/schedules/{id}"))
        .header("if-match", &tag)
        .json(&json!({"name": "y"}))
        .send()
        .await;
    assert_eq!(renamed.status(), 200);
    assert_ne!(renamed.headers()["etag"].to_str().unwrap(), tag);
    error_body(
        app.request(Method::PUT, "/v1/schedules/none")
            .json(&json!({"active": true}))
            .send()
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    );
}

/// The UTC hours 09:00 in Berlin falls on: 08 in winter, 07 in summer.
fn is_nine_in_berlin_on_a_weekday(at: &str) -> bool {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
        return false;
    };
    use chrono::{Datelike, Timelike};
    let weekday = at.weekday().num_days_from_monday() < 5;
    weekday && [7, 8].contains(&at.hour()) && at.minute() == 0
}

#[tokio::test]
async fn a_cron_is_previewed_and_a_schedule_lists_its_next_five_runs() {
    let app = TestApp::new().await;
    app.create_script("s", "javascript", "function main() { return 1; }")
        .await;
    let preview = app
        .get("/v1/schedules/preview?cron=0+9+*+*+1-5&timezone=Europe/Berlin")
        .send()
        .await
        .expect(200);
    let times: Vec<&str> = preview["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 5, "{preview}");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(
        times.iter().all(|t| is_nine_in_berlin_on_a_weekday(t)),
        "{times:?}"
    );
    assert!(
        times[0]
            > crate::schedules::format_ms(crate::now_ms())
                .unwrap()
                .as_str()
    );
    // The zone defaults to UTC, as on a schedule.
    let utc = app
        .get("/v1/schedules/preview?cron=@daily")
        .send()
        .await
        .expect(200);
    assert_eq!(utc["timezone"], "UTC");
    assert!(
        utc["next_runs"][0]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00.000Z")
    );
    // A bad cron or zone is the 400 that creating the schedule gets.
    for (query, field) in [
        ("cron=61+*+*+*+*", "cron"),
        ("cron=@daily&timezone=Mars/Olympus", "timezone"),
        ("cron=0+0+30+2+*", "cron"),
        (
            &format!("cron=@daily&timezone={}", "Z".repeat(65)),
            "timezone",
        ),
    ] {
        let error = error_body(
            app.get(&format!("/v1/schedules/preview?{query}"))
                .send()
                .await,
            400,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["error"]["details"][0]["field"], field, "{error}");
    }

    let schedule = create_schedule(
        &app,
        json!({"name": "mornings", "script_id": "s", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}),
    )
    .await;
    let runs = schedule["next_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "{schedule}");
    assert_eq!(runs[0], schedule["next_run_at"]);
    assert_eq!(runs, preview["next_runs"].as_array().unwrap());
    // Paused, it has no next runs.
    let id = schedule["id"].as_str().unwrap();
    let paused = app
        .request(Method::PUT, &format!("/v1/schedules/{id}"))
        .json(&json!({"active": false}))
        .send()
        .await
        .expect(200);
    assert_eq!(paused["next_runs"], json!([]), "{paused}");
}

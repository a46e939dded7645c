//! The OpenAPI document says what the server does: the refusals the guard
//! gives on every secured operation, the bounds it enforces on pages, and
//! results of any JSON type.

use axum::http::Method;
use serde_json::{Value, json};

use super::{TestApp, error_body, json_of};

/// The document a node serves.
async fn served(app: &TestApp) -> Value {
    json_of(
        app.anonymous(axum::http::Method::GET, "/openapi.json")
            .send()
            .await,
        200,
    )
}

/// Every operation of the document, with its path and method.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    all
}

#[tokio::test]
async fn every_secured_operation_documents_the_guards_refusals() {
    let app = TestApp::new().await;
    let document = served(&app).await;
    let mut secured = 0;
    for (path, method, operation) in operations(&document) {
        let responses = &operation["responses"];
        let Some(security) = operation["security"].as_array() else {
            if path.starts_with("/v1/") {
                assert!(responses.get("429").is_some(), "{method} {path} has no 429");
            }
            continue;
        };
        secured += 1;
        for status in ["401", "429"] {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} has no {status}"
            );
        }
        let needs_scope = security
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|requirement| requirement.values())
            .any(|scopes| scopes.as_array().is_some_and(|s| !s.is_empty()));
        if needs_scope {
            assert!(responses.get("403").is_some(), "{method} {path} has no 403");
        }
    }
    assert!(secured >= 48, "{secured} secured operations");
    // HTTP functions, with a path and without, by every method they answer.
    for path in ["/fn/{name}/{path}", "/fn/{name}"] {
        for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
            let operation = &document["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is undocumented");
            assert!(
                operation["responses"].get("429").is_some(),
                "{method} {path}"
            );
        }
    }
    let root_parameters: Vec<&str> = document["paths"]["/fn/{name}"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(root_parameters, ["name"]);
}

#[tokio::test]
async fn page_parameters_carry_the_enforced_bounds() {
    let app = TestApp::new().await;
    let document = served(&app).await;
    let mut seen = 0;
    for (path, method, operation) in operations(&document) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap();
            let schema = &parameter["schema"];
            let expected = match name {
                "page" => (json!(1), json!(usize::MAX)),
                "size" | "limit" => (json!(1), json!(100)),
                "offset" => (json!(0), json!(10_000)),
                _ => continue,
            };
            seen += 1;
            assert_eq!(
                (schema["minimum"].clone(), schema["maximum"].clone()),
                expected,
                "{method} {path} {name}"
            );
        }
    }
    assert!(seen >= 10, "{seen}");
    // And the server refuses what the document excludes.
    for query in ["page=0", "size=0", "size=101", "page=18446744073709551616"] {
        let answer = app.get(&format!("/v1/scripts?{query}")).send().await;
        assert_eq!(answer.status(), 400, "{query}");
    }
    let too_far = app.get("/v1/executions?offset=10001&limit=1").send().await;
    assert_eq!(too_far.status(), 400);
    let last = app.get("/v1/executions?offset=10000&limit=1").send().await;
    assert_eq!(last.status(), 200);
    let deepest = format!("/v1/scripts?page={}", usize::MAX);
    assert_eq!(app.get(&deepest).send().await.status(), 200);
}

#[tokio::test]
async fn a_result_may_be_any_json_value() {
    let app = TestApp::new().await;
    let document = served(&app).await;
    let result = &document["components"]["schemas"]["Execution"]["properties"]["result"];
    assert!(result.get("type").is_none(), "result is typed: {result}");
    app.create_script("answer", "javascript", "function main() { return 42; }")
        .await;
    assert_eq!(app.run("answer", json!({})).await["result"], 42);
}

/// Every operation of the document, called the way a user would, each
/// answer held to its documented status, media type and schema
/// (`answers.rs` checks every call of the suite; this test is the one that
/// reaches them all).
#[tokio::test]
async fn every_operation_answers_as_its_document_says() {
    let app = TestApp::with(|config| config.webhooks.allow_private = true).await;
    let document = served(&app).await;
    let (user, _) = app.create_user("tourist", "developer").await;
    let key = app
        .post("/v1/api-keys")
        .json(&json!({"name": "tour", "scopes": ["read:scripts"]}))
        .send()
        .await
        .expect(201);
    app.create_script("tour", "javascript", "function main(p) { return p; }")
        .await;
    app.create_component("counter", kiln_components::COUNTER)
        .await;
    app.create_component("web", kiln_components::HTTP_HELLO)
        .await;
    let waited = app.run("tour", json!({"parameters": {"n": 1}})).await;
    let execution = waited["id"].as_str().unwrap().to_owned();
    let schedule = app
        .post("/v1/schedules")
        .json(&json!({"name": "tour", "script_id": "tour", "cron": "@daily"}))
        .send()
        .await
        .expect(201);
    let webhook = app
        .post("/v1/webhooks")
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["script.created"]}))
        .send()
        .await
        .expect(201);
    let login = app.login("admin", super::ADMIN_PASSWORD).await.json();
    let (schedule, webhook, key) = (
        schedule["id"].as_str().unwrap(),
        webhook["id"].as_str().unwrap(),
        key["id"].as_str().unwrap(),
    );
    let calls: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, "/healthz".into(), None, 200),
        (Method::GET, "/readyz".into(), None, 200),
        (Method::GET, "/metrics".into(), None, 200),
        (Method::GET, "/openapi.json".into(), None, 200),
        (Method::GET, "/v1/status".into(), None, 200),
        (Method::GET, "/v1/languages".into(), None, 200),
        (Method::GET, "/v1/analytics/usage".into(), None, 200),
        (Method::GET, "/v1/audit".into(), None, 200),
        (Method::GET, "/v1/users".into(), None, 200),
        (Method::GET, "/v1/users/me".into(), None, 200),
        (
            Method::PUT,
            "/v1/users/me".into(),
            Some(json!({"current_password": "a wrong guess", "password": "a new password"})),
            403,
        ),
        (
            Method::POST,
            "/v1/users/me/totp/confirm".into(),
            Some(json!({"code": "123456"})),
            409,
        ),
        (
            Method::POST,
            "/v1/users/me/totp".into(),
            Some(json!({"current_password": "a wrong guess"})),
            403,
        ),
        (
            Method::DELETE,
            "/v1/users/me/totp".into(),
            Some(json!({"current_password": "a wrong guess", "otp": "123456"})),
            403,
        ),
        (Method::GET, format!("/v1/users/{user}"), None, 200),
        (
            Method::PUT,
            format!("/v1/users/{user}"),
            Some(json!({"role": "viewer"})),
            200,
        ),
        (Method::GET, "/v1/api-keys".into(), None, 200),
        (Method::GET, "/v1/scripts".into(), None, 200),
        (Method::GET, "/v1/scripts/tour".into(), None, 200),
        (
            Method::PUT,
            "/v1/scripts/tour".into(),
            Some(json!({"content": "function main() { return 2; }"})),
            200,
        ),
        (Method::GET, "/v1/scripts/tour/content".into(), None, 200),
        (Method::GET, "/v1/scripts/tour/versions".into(), None, 200),
        (Method::GET, "/v1/scripts/tour/versions/1".into(), None, 200),
        (
            Method::PUT,
            "/v1/scripts/counter/config".into(),
            Some(json!({"values": {"greeting": "hello"}})),
            200,
        ),
        (Method::GET, "/v1/scripts/counter/config".into(), None, 200),
        (
            Method::POST,
            "/v1/scripts/counter/execute?wait=true".into(),
            Some(json!({})),
            200,
        ),
        (Method::GET, "/v1/scripts/counter/kv".into(), None, 200),
        (
            Method::POST,
            "/v1/execute".into(),
            Some(json!({"language": "javascript", "code": "function main() { return [1]; }"})),
            200,
        ),
        (Method::GET, "/v1/executions".into(), None, 200),
        (
            Method::GET,
            format!("/v1/executions/{execution}"),
            None,
            200,
        ),
        (
            Method::GET,
            format!("/v1/executions/{execution}/events"),
            None,
            200,
        ),
        // In process there is no connection to upgrade: tests/e2e/sockets.rs
        // has the 101.
        (
            Method::GET,
            format!("/v1/executions/{execution}/ws"),
            None,
            426,
        ),
        (
            Method::POST,
            format!("/v1/executions/{execution}/cancel"),
            None,
            409,
        ),
        (Method::GET, "/v1/schedules".into(), None, 200),
        (
            Method::GET,
            "/v1/schedules/preview?cron=0+9+*+*+1-5&timezone=Europe/Berlin".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/v1/schedules/preview?cron=61+*+*+*+*".into(),
            None,
            400,
        ),
        (Method::GET, format!("/v1/schedules/{schedule}"), None, 200),
        (
            Method::PUT,
            format!("/v1/schedules/{schedule}"),
            Some(json!({"active": false})),
            200,
        ),
        (
            Method::PUT,
            "/v1/secrets/token".into(),
            Some(json!({"value": "s3cret-value", "scripts": ["*"]})),
            201,
        ),
        (Method::GET, "/v1/secrets".into(), None, 200),
        (Method::GET, "/v1/secrets/token".into(), None, 200),
        (Method::GET, "/v1/webhooks".into(), None, 200),
        (Method::GET, format!("/v1/webhooks/{webhook}"), None, 200),
        (
            Method::PUT,
            format!("/v1/webhooks/{webhook}"),
            Some(json!({"description": "tour"})),
            200,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{webhook}/test"),
            None,
            202,
        ),
        (
            Method::GET,
            format!("/v1/webhooks/{webhook}/deliveries"),
            None,
            200,
        ),
        (Method::GET, "/fn/web".into(), None, 200),
        (Method::GET, "/fn/web/a/b".into(), None, 200),
        (Method::HEAD, "/fn/web".into(), None, 200),
        (Method::HEAD, "/fn/web/a".into(), None, 200),
        (Method::OPTIONS, "/fn/web".into(), None, 200),
        (Method::OPTIONS, "/fn/web/a".into(), None, 200),
        (Method::POST, "/fn/web".into(), Some(json!({"a": 1})), 200),
        (Method::POST, "/fn/web/a".into(), Some(json!({"a": 1})), 200),
        (Method::PUT, "/fn/web".into(), Some(json!({"a": 1})), 200),
        (Method::PUT, "/fn/web/a".into(), Some(json!({"a": 1})), 200),
        (Method::PATCH, "/fn/web".into(), Some(json!({"a": 1})), 200),
        (
            Method::PATCH,
            "/fn/web/a".into(),
            Some(json!({"a": 1})),
            200,
        ),
        (Method::DELETE, "/fn/web".into(), None, 200),
        (Method::DELETE, "/fn/web/a".into(), None, 200),
        (Method::DELETE, format!("/v1/webhooks/{webhook}"), None, 204),
        (Method::DELETE, "/v1/secrets/token".into(), None, 204),
        (
            Method::DELETE,
            format!("/v1/schedules/{schedule}"),
            None,
            204,
        ),
        (
            Method::DELETE,
            format!("/v1/executions/{execution}"),
            None,
            204,
        ),
        (
            Method::DELETE,
            "/v1/executions?before=2100-01-01T00:00:00Z".into(),
            None,
            200,
        ),
        (Method::GET, "/v1/organizations/current".into(), None, 200),
        (
            Method::PUT,
            "/v1/organizations/current".into(),
            Some(json!({"description": "the first"})),
            200,
        ),
        (
            Method::POST,
            "/v1/organizations".into(),
            Some(json!({"name": "tour-org"})),
            201,
        ),
        (Method::GET, "/v1/organizations".into(), None, 200),
        (Method::GET, "/v1/organizations/tour-org".into(), None, 200),
        (
            Method::PUT,
            "/v1/organizations/tour-org".into(),
            Some(json!({"description": "a tour"})),
            200,
        ),
        (
            Method::PUT,
            format!("/v1/organizations/tour-org/members/{user}"),
            Some(json!({"role": "developer"})),
            200,
        ),
        (
            Method::GET,
            "/v1/organizations/tour-org/members".into(),
            None,
            200,
        ),
        (
            Method::DELETE,
            format!("/v1/organizations/tour-org/members/{user}"),
            None,
            204,
        ),
        (
            Method::DELETE,
            "/v1/organizations/tour-org".into(),
            None,
            204,
        ),
        (Method::DELETE, format!("/v1/api-keys/{key}"), None, 204),
        (Method::DELETE, format!("/v1/users/{user}"), None, 204),
        (Method::DELETE, "/v1/scripts/counter".into(), None, 204),
        (
            Method::POST,
            "/v1/auth/refresh".into(),
            Some(json!({"refresh_token": login["refresh_token"]})),
            200,
        ),
        (Method::POST, "/v1/auth/logout".into(), None, 200),
    ];
    for (method, path, body, expected) in calls {
        let call = app.request(method.clone(), &path);
        let call = match &body {
            Some(body) => call.json(body),
            None => call,
        };
        let answer = call.send().await;
        assert_eq!(
            answer.status().as_u16(),
            expected,
            "{method} {path}: {}",
            answer.text()
        );
    }
    let every: std::collections::BTreeSet<String> = operations(&document)
        .into_iter()
        .map(|(path, method, _)| format!("{} {path}", method.to_uppercase()))
        .collect();
    let answered = app.answered.lock().unwrap().clone();
    let missed: Vec<&String> = every.difference(&answered).collect();
    assert!(missed.is_empty(), "operations never called: {missed:?}");
}

/// The operation of `document` with `id`: its path, method and body.
fn operation_with_id<'a>(document: &'a Value, id: &str) -> Option<(String, String, &'a Value)> {
    document["paths"]
        .as_object()?
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, operation)| (path, method, operation))
        })
        .find(|(_, _, operation)| operation["operationId"] == id)
        .map(|(path, method, operation)| (path.clone(), method.clone(), operation))
}

/// Whether `schema` (a reference, or all of several) has `property`.
fn has_property(schema: &Value, schemas: &Value, property: &str) -> bool {
    if let Some(named) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        return has_property(&schemas[named], schemas, property);
    }
    schema["properties"].get(property).is_some()
        || schema["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|part| has_property(part, schemas, property))
}

/// Every answer that names a new resource links to the operations that
/// take that name; each link names a real operation and parameter, and a
/// property its answer has. Followed with a real answer, the reads answer.
#[tokio::test]
async fn creates_link_to_the_operations_on_what_they_made() {
    let app = TestApp::new().await;
    let document = served(&app).await;
    let schemas = &document["components"]["schemas"];
    let mut links = 0;
    for (path, method, operation) in operations(&document) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            let found = response["links"].as_object();
            if status == "201" {
                assert!(
                    found.is_some_and(|l| !l.is_empty()),
                    "{method} {path} 201 links nowhere"
                );
            }
            for (name, link) in found.into_iter().flatten() {
                links += 1;
                let to = link["operationId"].as_str().unwrap();
                let (_, _, target) = operation_with_id(&document, to)
                    .unwrap_or_else(|| panic!("{name}: no operation {to}"));
                for (parameter, value) in link["parameters"].as_object().unwrap() {
                    let takes = target["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == *parameter && p["in"] == "path");
                    assert!(takes, "{name}: {to} takes no {parameter}");
                    let value = value.as_str().unwrap();
                    if let Some(property) = value.strip_prefix("$response.body#/") {
                        let schema = &response["content"]["application/json"]["schema"];
                        assert!(
                            has_property(schema, schemas, property),
                            "{method} {path} {status} has no {property} for {name}"
                        );
                    } else {
                        let parameter = value.strip_prefix("$request.path.").unwrap();
                        let has = operation["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == parameter);
                        assert!(has, "{method} {path} has no path parameter {parameter}");
                    }
                }
            }
        }
    }
    assert!(links > 0, "no links at all");

    // Followed from real answers: every read a create or an execute links to.
    let script = app
        .create_script("linked", "javascript", "function main() { return 1; }")
        .await;
    let execution = app.run("linked", json!({})).await;
    for (from, status, answer) in [
        ("createScript", "201", &script),
        ("executeScript", "200", &execution),
    ] {
        let (_, _, operation) = operation_with_id(&document, from).unwrap();
        for (name, link) in operation["responses"][status]["links"].as_object().unwrap() {
            let (path, method, _) =
                operation_with_id(&document, link["operationId"].as_str().unwrap()).unwrap();
            if method != "get" || path.ends_with("/events") || path.ends_with("/kv") {
                continue;
            }
            let mut concrete = path.clone();
            for (parameter, value) in link["parameters"].as_object().unwrap() {
                let pointer = value
                    .as_str()
                    .unwrap()
                    .trim_start_matches("$response.body#");
                let value = answer.pointer(pointer).and_then(Value::as_str).unwrap();
                concrete = concrete.replace(&format!("{{{parameter}}}"), value);
            }
            let answered = app.get(&concrete).send().await;
            assert_eq!(
                answered.status(),
                200,
                "{name}: GET {concrete}: {}",
                answered.text()
            );
        }
    }
}

/// A bound the document states on a body field is the one the server
/// enforces: the value just past it is a 400 naming the field, the value
/// at it is not.
#[tokio::test]
async fn body_bounds_in_the_document_are_the_enforced_ones() {
    let app = TestApp::new().await;
    let document = served(&app).await;
    app.create_script("bounded", "javascript", "function main() { return 1; }")
        .await;
    app.post("/v1/scripts/bounded/execute?wait=true")
        .json(&json!({}))
        .send()
        .await
        .expect(200);
    // (schema, property, keyword, route, body past the bound, body at it)
    let long = |n: usize| "x".repeat(n);
    let key = |name: Value, scopes: Value, days: Value| json!({"name": name, "scopes": scopes, "expires_in_days": days});
    let cases: Vec<(&str, &str, &str, Value, &str, Value, Value)> = vec![
        (
            "CreateUser",
            "username",
            "pattern",
            json!("^[a-zA-Z0-9_.-]{1,64}$"),
            "/v1/users",
            json!({"username": long(65), "password": long(8), "role": "viewer"}),
            json!({"username": "u64", "password": long(8), "role": "viewer"}),
        ),
        (
            "CreateUser",
            "password",
            "maxLength",
            json!(1024),
            "/v1/users",
            json!({"username": "u2", "password": long(1025), "role": "viewer"}),
            json!({"username": "u2", "password": long(1024), "role": "viewer"}),
        ),
        (
            "CreateSchedule",
            "name",
            "pattern",
            json!("\\S"),
            "/v1/schedules",
            json!({"name": "   ", "script_id": "bounded", "cron": "@daily"}),
            json!({"name": "daily", "script_id": "bounded", "cron": "@daily"}),
        ),
        (
            "CreateApiKey",
            "name",
            "minLength",
            json!(1),
            "/v1/api-keys",
            key(json!(""), json!(["read:scripts"]), json!(1)),
            key(json!("k"), json!(["read:scripts"]), json!(1)),
        ),
        (
            "CreateApiKey",
            "name",
            "maxLength",
            json!(128),
            "/v1/api-keys",
            key(json!(long(129)), json!(["read:scripts"]), json!(1)),
            key(json!(long(128)), json!(["read:scripts"]), json!(1)),
        ),
        (
            "CreateApiKey",
            "scopes",
            "minItems",
            json!(1),
            "/v1/api-keys",
            key(json!("k"), json!([]), json!(1)),
            key(json!("k"), json!(["read:scripts"]), json!(1)),
        ),
        (
            "CreateApiKey",
            "expires_in_days",
            "maximum",
            json!(3650),
            "/v1/api-keys",
            key(json!("k"), json!(["read:scripts"]), json!(3651)),
            key(json!("k"), json!(["read:scripts"]), json!(3650)),
        ),
        (
            "CreateApiKey",
            "expires_in_days",
            "minimum",
            json!(1),
            "/v1/api-keys",
            key(json!("k"), json!(["read:scripts"]), json!(0)),
            key(json!("k"), json!(["read:scripts"]), json!(1)),
        ),
        (
            "CreateUser",
            "password",
            "minLength",
            json!(8),
            "/v1/users",
            json!({"username": "u1", "password": long(7), "role": "viewer"}),
            json!({"username": "u1", "password": long(8), "role": "viewer"}),
        ),
        (
            "CreateUser",
            "username",
            "pattern",
            json!("^[a-zA-Z0-9_.-]{1,64}$"),
            "/v1/users",
            json!({"username": "a b", "password": long(8), "role": "viewer"}),
            json!({"username": long(64), "password": long(8), "role": "viewer"}),
        ),
        (
            "CreateSchedule",
            "name",
            "maxLength",
            json!(128),
            "/v1/schedules",
            json!({"name": long(129), "script_id": "bounded", "cron": "@daily"}),
            json!({"name": long(128), "script_id": "bounded", "cron": "@daily"}),
        ),
        (
            "ExecuteRequest",
            "timeout_ms",
            "minimum",
            json!(1),
            "/v1/scripts/bounded/execute",
            json!({"timeout_ms": 0}),
            json!({"timeout_ms": 1}),
        ),
        (
            "ExecuteRequest",
            "version",
            "minimum",
            json!(1),
            "/v1/scripts/bounded/execute",
            json!({"version": 0}),
            json!({"version": 1}),
        ),
        (
            "AdHocExecution",
            "fuel",
            "minimum",
            json!(1),
            "/v1/execute?async=true",
            json!({"language": "javascript", "code": "1", "fuel": 0}),
            json!({"language": "javascript", "code": "function main() { return 1; }", "fuel": 1}),
        ),
    ];
    for (schema, property, keyword, bound, route, past, at) in cases {
        let stated = &document["components"]["schemas"][schema]["properties"][property][keyword];
        assert_eq!(stated, &bound, "{schema}.{property} {keyword}");
        let refused = app.post(route).json(&past).send().await;
        let body = error_body(refused, 400, "VALIDATION_ERROR");
        assert_eq!(
            body["error"]["details"][0]["field"], property,
            "{route} {past}"
        );
        let accepted = app.post(route).json(&at).send().await;
        assert!(
            accepted.status().is_success(),
            "{route} {at}: {} {}",
            accepted.status(),
            accepted.text()
        );
    }
    // Logins: refused before anything is checked.
    for (past, field) in [
        (json!({"username": "", "password": "p"}), "username"),
        (
            json!({"username": "admin", "password": long(1025)}),
            "password",
        ),
    ] {
        let refused = app
            .anonymous(Method::POST, "/v1/auth/login")
            .json(&past)
            .send()
            .await;
        let body = error_body(refused, 400, "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"][0]["field"], field);
    }
    let login = &document["components"]["schemas"]["LoginRequest"]["properties"];
    assert_eq!(login["password"]["maxLength"], 1024);
    assert_eq!(login["username"]["pattern"], "^[a-zA-Z0-9_.-]{1,64}$");
}

/// The query and header parameters whose values the server restricts say
/// so in the document (a pattern or a format), and a value outside is a
/// 400 naming the parameter.
#[tokio::test]
async fn restricted_parameters_say_how_in_the_document() {
    let app = TestApp::new().await;
    let document = served(&app).await;
    let parameter = |path: &str, method: &str, name: &str| {
        document["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no {name}"))
            .clone()
    };
    for (path, method, name, keyword, stated, refused) in [
        (
            "/v1/scripts",
            "get",
            "language",
            "pattern",
            json!("^(javascript|python|wasm)$"),
            "/v1/scripts?language=rust",
        ),
        (
            "/v1/scripts",
            "get",
            "order",
            "pattern",
            json!("^(asc|desc)$"),
            "/v1/scripts?order=up",
        ),
        (
            "/v1/scripts",
            "get",
            "sort",
            "pattern",
            json!("^(name|created_at|updated_at|execution_count)$"),
            "/v1/scripts?sort=size",
        ),
        (
            "/v1/scripts",
            "get",
            "search",
            "minLength",
            json!(2),
            "/v1/scripts?search=a",
        ),
        (
            "/v1/scripts/{id_or_name}/versions",
            "get",
            "order",
            "pattern",
            json!("^(asc|desc)$"),
            "/v1/scripts/x/versions?order=up",
        ),
    ] {
        let documented = parameter(path, method, name);
        assert_eq!(
            documented["schema"][keyword], stated,
            "{method} {path} {name}"
        );
        let body = error_body(app.get(refused).send().await, 400, "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"][0]["field"], name, "{refused}");
    }
    let before = parameter("/v1/executions", "delete", "before");
    assert_eq!(
        (&before["required"], &before["schema"]["format"]),
        (&json!(true), &json!("date-time"))
    );
    let key = parameter("/v1/execute", "post", "Idempotency-Key");
    assert_eq!(key["schema"]["pattern"], "^[!-~]{1,255}$");
    let refused = app
        .post("/v1/execute")
        .header("idempotency-key", "two words")
        .json(&json!({"language": "javascript", "code": "1"}))
        .send()
        .await;
    let body = error_body(refused, 400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"][0]["field"], "Idempotency-Key");
}

/// The rules across a body's fields that the document states (one way to
/// give code, `entry` only with `files`, the webhook events, no unknown
/// field) are the server's: each body the document's schema refuses, the
/// server refuses with 400, and each it takes, the server takes.
#[tokio::test]
async fn cross_field_rules_in_the_document_are_the_server_s() {
    let app = TestApp::with(|config| config.webhooks.allow_private = true).await;
    let document = served(&app).await;
    let schema_of = |template: &str, method: &str| {
        let schema = &document["paths"][template][method]["requestBody"]["content"]["application/json"]
            ["schema"];
        let mut root = json!({ "components": document["components"] });
        root.as_object_mut()
            .unwrap()
            .extend(schema.as_object().unwrap().clone());
        jsonschema::draft202012::new(&root).unwrap()
    };
    let main = "function main() { return 1; }";
    let archive = {
        use base64::Engine as _;
        let mut out = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        writer
            .start_file("lib.js", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut writer, main.as_bytes()).unwrap();
        writer.finish().unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    };
    let cases = [
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "zipped", "language": "javascript", "content_base64": archive, "entry": "lib.js"}),
            true,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "javascript", "code": main, "interactive": null}),
            true,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "javascript", "code": main}),
            true,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "javascript", "code": main, "code_base64": "eA=="}),
            false,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "javascript", "code": null, "code_base64": null}),
            false,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "javascript", "code": ""}),
            false,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "javascript", "code": main, "extra": 1}),
            false,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "a", "language": "javascript", "content": main}),
            true,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "b", "language": "javascript", "files": {"lib.js": main}, "entry": "lib.js"}),
            true,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "c", "language": "javascript", "content": main, "entry": "main.js"}),
            false,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "d", "language": "javascript", "content": main, "files": {"main.js": main}}),
            false,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "e", "language": "javascript", "content": null}),
            false,
        ),
        (
            "/v1/scripts/{id_or_name}",
            "put",
            "/v1/scripts/a",
            json!({"description": "only this"}),
            true,
        ),
        (
            "/v1/scripts/{id_or_name}",
            "put",
            "/v1/scripts/a",
            json!({"content": main, "content_base64": "eA=="}),
            false,
        ),
        (
            "/v1/scripts/{id_or_name}",
            "put",
            "/v1/scripts/a",
            json!({"entry": "main.js"}),
            false,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"language": "javascript", "content": main}),
            false,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "f", "language": "ruby", "content": main}),
            false,
        ),
        (
            "/v1/scripts",
            "post",
            "/v1/scripts",
            json!({"name": "a b", "language": "js", "content": main}),
            false,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "py", "code": "def main():\n    return 1\n"}),
            true,
        ),
        (
            "/v1/execute",
            "post",
            "/v1/execute",
            json!({"language": "ruby", "code": main}),
            false,
        ),
        (
            "/v1/scripts/{id_or_name}/config",
            "put",
            "/v1/scripts/a/config",
            json!({"values": {"ok.key-1": "x"}}),
            true,
        ),
        (
            "/v1/scripts/{id_or_name}/config",
            "put",
            "/v1/scripts/a/config",
            json!({"values": {"": "x"}}),
            false,
        ),
        (
            "/v1/scripts/{id_or_name}/config",
            "put",
            "/v1/scripts/a/config",
            json!({"values": {"a b": "x"}}),
            false,
        ),
        (
            "/v1/webhooks",
            "post",
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/h", "events": ["script.created"]}),
            true,
        ),
        (
            "/v1/webhooks",
            "post",
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/h", "events": [""]}),
            false,
        ),
    ];
    for (template, method, path, body, valid) in cases {
        assert_eq!(
            schema_of(template, method).is_valid(&body),
            valid,
            "{method} {path} {body}: the document"
        );
        let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let answer = app.request(verb, path).json(&body).send().await;
        let status = answer.status().as_u16();
        if valid {
            assert!(
                status < 300,
                "{method} {path} {body}: {status} {}",
                answer.text()
            );
        } else {
            assert_eq!(status, 400, "{method} {path} {body}: {}", answer.text());
        }
    }
}

//! The OpenAPI document says what the server does: the refusals the guard
//! gives on every secured operation, the bounds it enforces on pages, and
//! results of any JSON type.

use serde_json::{Value, json};

use super::{TestApp, json_of};

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
                "page" => (json!(1), Value::Null),
                "size" | "limit" => (json!(1), json!(100)),
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
    for query in ["page=0", "size=0", "size=101"] {
        let answer = app.get(&format!("/v1/scripts?{query}")).send().await;
        assert_eq!(answer.status(), 400, "{query}");
    }
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

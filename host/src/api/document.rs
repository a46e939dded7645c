//! What the OpenAPI document's passes share, beside the annotations: a
//! walk over every operation, the schemas of raw bodies, and the rules
//! across a body's fields.

use serde_json::{Value, json};

/// Every operation of a path item, whatever its method: the document's
/// passes below go over them all alike.
pub(super) fn operations_mut(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Bytes of any media type, as the document says them.
pub(super) fn bytes_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Binary,
        )))
        .build()
}

/// Gives every request body of a media type without a schema (a raw
/// upload, a function's body) the schema of what it is, so generated
/// clients take it: text for source code, binary for the rest, a `file`
/// and a `meta` part for multipart.
pub(super) fn raw_bodies(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let text = || ObjectBuilder::new().schema_type(SchemaType::new(Type::String));
    for item in document.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let Some(RefOr::T(body)) = &mut operation.request_body else {
                continue;
            };
            for (media, content) in &mut body.content {
                let RefOr::T(content) = content else { continue };
                if content.schema.is_some() {
                    continue;
                }
                let schema = match media.as_str() {
                    "multipart/form-data" => ObjectBuilder::new()
                        .property("file", bytes_schema())
                        .property(
                            "meta",
                            text().description(Some("The script's fields as JSON")),
                        )
                        .required("file")
                        .build(),
                    "application/javascript" | "text/javascript" | "text/x-python" => {
                        text().build()
                    }
                    _ => bytes_schema(),
                };
                content.schema = Some(RefOr::T(schema.into()));
            }
        }
    }
}

/// The rules the server checks across a body's fields, which the
/// annotations cannot say, in JSON Schema: exactly one of the ways to give
/// code (at most one in an update), an `entry` only with a bundle (`files`, or an archive in `content_base64`), the
/// events a webhook can name, no field the server does not know.
pub(super) fn cross_field_rules(document: &mut Value) {
    // Given: present and not null (the server reads null as absent).
    let given = |field: &str, kind: &str| json!({"required": [field], "properties": {field: {"type": kind}}});
    let schemas = &mut document["components"]["schemas"];
    if let Some(ad_hoc) = schemas["AdHocExecution"].as_object_mut() {
        ad_hoc.insert("additionalProperties".into(), json!(false));
    }
    if let Some(script) = schemas["ScriptInput"].as_object_mut() {
        script.insert("if".into(), given("entry", "string"));
        // A bundle's files, or an archive of them as base64.
        script.insert(
            "then".into(),
            json!({"anyOf": [given("files", "object"), given("content_base64", "string")]}),
        );
    }
    // Code is never empty; base64 says so.
    for (schema, field) in [
        ("AdHocExecution", "code"),
        ("AdHocExecution", "code_base64"),
        ("ScriptInput", "content"),
        ("ScriptInput", "content_base64"),
    ] {
        if let Some(property) = schemas[schema]["properties"][field].as_object_mut() {
            property.insert("minLength".into(), json!(1));
            if field.ends_with("_base64") {
                property.insert("contentEncoding".into(), json!("base64"));
            }
        }
    }
    if let Some(values) = schemas["ConfigInput"]["properties"]["values"].as_object_mut() {
        values.insert(
            "propertyNames".into(),
            json!({"pattern": "^[A-Za-z0-9_.-]{1,128}$"}),
        );
        values.insert("maxProperties".into(), json!(100));
    }
    for webhook in ["CreateWebhook", "UpdateWebhook"] {
        let items = &mut schemas[webhook]["properties"]["events"]["items"];
        if let Some(items) = items.as_object_mut() {
            items.insert("enum".into(), json!(crate::webhooks::EVENTS));
        }
    }
    // On the operations' bodies, not the shared schemas: generated clients
    // keep one model of the fields (an object schema with a `oneOf` of its
    // own becomes a union of its branches, which lose the other fields).
    let code = vec![given("code", "string"), given("code_base64", "string")];
    also_on_body(document, "/v1/execute", "post", &[json!({"oneOf": code})]);
    let contents = vec![
        given("content", "string"),
        given("content_base64", "string"),
        given("files", "object"),
    ];
    let mut at_most_one = contents.clone();
    at_most_one.push(json!({"not": {"anyOf": contents}}));
    // A create names the script and its language; an update need not.
    // (`not` rather than a type on the properties: generators cannot merge
    // a string with the shared schema's nullable one.)
    let is_null =
        |field: &str| json!({"required": [field], "properties": {field: {"type": "null"}}});
    let named = json!({
        "required": ["name", "language"],
        "not": {"anyOf": [is_null("name"), is_null("language")]},
    });
    also_on_body(
        document,
        "/v1/scripts",
        "post",
        &[json!({"oneOf": contents}), named],
    );
    also_on_body(
        document,
        "/v1/scripts/{id_or_name}",
        "put",
        &[json!({"oneOf": at_most_one})],
    );
}

/// Makes the JSON body of `method path` also match every schema of `also`.
fn also_on_body(document: &mut Value, path: &str, method: &str, also: &[Value]) {
    let schema = &mut document["paths"][path][method]["requestBody"]["content"]["application/json"]
        ["schema"];
    if let Some(reference) = schema.as_object_mut().map(std::mem::take) {
        let mut all = vec![Value::Object(reference)];
        all.extend_from_slice(also);
        *schema = json!({ "allOf": all });
    }
}

#[cfg(test)]
mod tests {
    /// Each rule finds the schema or body it is written into: one renamed
    /// would otherwise drop its rule without a word.
    #[test]
    fn every_cross_field_rule_lands() {
        let document = super::super::rendered(super::super::routes_and_document().1);
        let schemas = &document["components"]["schemas"];
        let body = |path: &str, method: &str| {
            &document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        };
        assert_eq!(schemas["AdHocExecution"]["additionalProperties"], false);
        assert!(schemas["ScriptInput"]["if"].is_object());
        assert!(schemas["ScriptInput"]["then"]["anyOf"].is_array());
        for field in [
            ("AdHocExecution", "code"),
            ("ScriptInput", "content_base64"),
        ] {
            assert_eq!(
                schemas[field.0]["properties"][field.1]["minLength"], 1,
                "{field:?}"
            );
        }
        let values = &schemas["ConfigInput"]["properties"]["values"];
        assert_eq!(values["maxProperties"], 100);
        assert!(values["propertyNames"]["pattern"].is_string());
        for webhook in ["CreateWebhook", "UpdateWebhook"] {
            let events = &schemas[webhook]["properties"]["events"]["items"]["enum"];
            assert_eq!(events.as_array().map(Vec::len), Some(8), "{webhook}");
        }
        for (path, method, parts) in [
            ("/v1/execute", "post", 2),
            ("/v1/scripts", "post", 3),
            ("/v1/scripts/{id_or_name}", "put", 2),
        ] {
            let all = body(path, method)["allOf"].as_array().map(Vec::len);
            assert_eq!(all, Some(parts), "{method} {path}");
        }
    }
}

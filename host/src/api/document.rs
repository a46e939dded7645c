//! What the OpenAPI document's passes share, beside the annotations: a
//! walk over every operation, and the schemas of raw bodies.

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

//! The OpenAPI document's links: from an answer that names a resource (a
//! create's, an execute's) to the operations that take that name, so a
//! client generator or a stateful tester (schemathesis) can go from a
//! create to its reads, updates and deletes.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::{OpenApi, RefOr};

/// Where a resource's name is found in an answer (or the request), and
/// which parameter of the linked operations it fills.
struct Source {
    operation: &'static str,
    statuses: &'static [&'static str],
    parameter: &'static str,
    value: &'static str,
    to: &'static [&'static str],
}

const SCRIPT_OPERATIONS: &[&str] = &[
    "getScript",
    "updateScript",
    "deleteScript",
    "executeScript",
    "getScriptContent",
    "listScriptVersions",
    "putScriptConfig",
    "getScriptConfig",
    "getScriptKv",
];

const EXECUTION_OPERATIONS: &[&str] = &[
    "getExecution",
    "cancelExecution",
    "streamExecutionEvents",
    "deleteExecution",
];

const SOURCES: &[Source] = &[
    Source {
        operation: "createScript",
        statuses: &["201"],
        parameter: "id_or_name",
        value: "$response.body#/id",
        to: SCRIPT_OPERATIONS,
    },
    Source {
        operation: "executeScript",
        statuses: &["200"],
        parameter: "id",
        value: "$response.body#/id",
        to: EXECUTION_OPERATIONS,
    },
    Source {
        operation: "executeScript",
        statuses: &["202"],
        parameter: "id",
        value: "$response.body#/execution_id",
        to: EXECUTION_OPERATIONS,
    },
    Source {
        operation: "executeCode",
        statuses: &["200"],
        parameter: "id",
        value: "$response.body#/id",
        to: EXECUTION_OPERATIONS,
    },
    Source {
        operation: "executeCode",
        statuses: &["202"],
        parameter: "id",
        value: "$response.body#/execution_id",
        to: EXECUTION_OPERATIONS,
    },
    Source {
        operation: "createUser",
        statuses: &["201"],
        parameter: "id",
        value: "$response.body#/id",
        to: &["getUser", "updateUser", "deleteUser"],
    },
    Source {
        operation: "createOrganization",
        statuses: &["201"],
        parameter: "id",
        value: "$response.body#/id",
        to: &[
            "getOrganization",
            "updateOrganization",
            "deleteOrganization",
            "listOrganizationMembers",
        ],
    },
    Source {
        operation: "createApiKey",
        statuses: &["201"],
        parameter: "id",
        value: "$response.body#/id",
        to: &["revokeApiKey"],
    },
    Source {
        operation: "createSchedule",
        statuses: &["201"],
        parameter: "id",
        value: "$response.body#/id",
        to: &["getSchedule", "updateSchedule", "deleteSchedule"],
    },
    Source {
        operation: "createWebhook",
        statuses: &["201"],
        parameter: "id",
        value: "$response.body#/id",
        to: &[
            "getWebhook",
            "updateWebhook",
            "deleteWebhook",
            "testWebhook",
            "listWebhookDeliveries",
        ],
    },
    Source {
        operation: "putSecret",
        statuses: &["200", "201"],
        parameter: "name",
        value: "$request.path.name",
        to: &["getSecret", "deleteSecret"],
    },
];

/// Adds the links of [`SOURCES`] to the answers they start from; each link
/// is named after the operation it leads to, with a capital first letter
/// (`GetScript`).
pub fn document(document: &mut OpenApi) {
    for item in document.paths.paths.values_mut() {
        for operation in super::document::operations_mut(item) {
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            for source in SOURCES.iter().filter(|s| s.operation == id) {
                for status in source.statuses {
                    let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status)
                    else {
                        continue;
                    };
                    for to in source.to {
                        let link = LinkBuilder::new()
                            .operation_id(*to)
                            .parameter(source.parameter, source.value)
                            .build();
                        response.links.insert(capitalized(to), link.into());
                    }
                }
            }
        }
    }
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_uppercase().to_string() + chars.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose operation or status was renamed would add nothing,
    /// silently: each must give every one of its links.
    #[test]
    fn every_source_links_from_a_documented_answer() {
        let document = super::super::rendered(super::super::routes_and_document().1);
        for source in SOURCES {
            let operation = document["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .find(|operation| operation["operationId"] == source.operation)
                .unwrap_or_else(|| panic!("no operation {}", source.operation));
            for status in source.statuses {
                for to in source.to {
                    let link = &operation["responses"][status]["links"][capitalized(to)];
                    assert_eq!(
                        link["operationId"], *to,
                        "{} {status} → {to}",
                        source.operation
                    );
                }
            }
        }
    }
}

//! The OpenAPI 3.1 document of the HTTP API (`GET /v1/openapi.json`, SPEC 11.3), generated
//! with utoipa from the code: the resource routes from their handlers' annotations, one
//! `POST /v1/commands/<name>` per admin command with the schema of the type its args are read
//! into (`admin::args_schema`), and the reply object from [`Reply`]. Not hand-written: a new
//! command or a new argument shows up here by itself.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi};

use super::api;
use crate::domain::ErrorCode;
use crate::wire::{Reply, ReplyError, COMMAND_NAMES};

/// The error answers every operation may give, with why.
const ERRORS: [(&str, &str); 9] = [
    ("400", "INVALID_REQUEST or UNKNOWN_COMMAND (malformed JSON, bad args, a bad Idempotency-Key)"),
    ("401", "UNAUTHENTICATED: no bearer token, or an unknown one"),
    ("403", "FORBIDDEN (the token's scope, the channel's allowed commands) or FORBIDDEN_STATUS_CHANGE"),
    ("404", "NOT_FOUND"),
    ("409", "CONFLICT (an Idempotency-Key reused with another body, ...), INVALID_STATE or CLOCK_NOT_SIMULATED"),
    ("413", "the body is larger than 1 MiB"),
    ("415", "the body is not JSON (Content-Type: application/json)"),
    ("500", "INTERNAL: retry with the same Idempotency-Key"),
    ("503", "UNAVAILABLE (starting, stopping, a partition changing hands): retry with the same Idempotency-Key"),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "recur",
        description = "The HTTP API of recur, a subscription-order scheduler (SPEC 11.3). Every \
                       answer's body is the admin reply object `{id, ok, result | error}`; \
                       `Idempotency-Key` is the request id (a retry with the same key and body \
                       gets the first reply; another body, 409 CONFLICT).",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        api::create_order,
        api::list_orders,
        api::get_order,
        api::delete_order,
        api::order_events,
        api::customer_stats,
        api::clock,
        api::whoami,
        api::daemons,
        api::openapi,
    ),
    components(schemas(Reply, ReplyError, ErrorCode)),
    modifiers(&Commands),
    security(("bearer" = [])),
    tags(
        (name = "commands", description = "Every admin command, its body the command's args"),
        (name = "orders"),
        (name = "customers"),
        (name = "clock"),
        (name = "meta"),
    )
)]
struct ApiDoc;

/// Adds what the annotations cannot say: one path per admin command, the bearer scheme, the
/// `Idempotency-Key` header and the error answers of every operation.
struct Commands;

impl Modify for Commands {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (status, why) in ERRORS {
            let response = ResponseBuilder::new()
                .description(why)
                .content("application/json", reply_content())
                .build();
            components
                .responses
                .insert(format!("Error{status}"), RefOr::T(response));
        }
        for name in COMMAND_NAMES {
            let (schema, named) = crate::admin::args_schema(name).unwrap_or_else(|| {
                let any = Schema::Object(ObjectBuilder::new().build());
                (RefOr::T(any), Vec::new())
            });
            for (schema_name, schema) in named {
                components.schemas.entry(schema_name).or_insert(schema);
            }
            let created = name == "createOrder";
            let status = if created { "201" } else { "200" };
            let body = RequestBodyBuilder::new()
                .description(Some(format!("The args of {name}")))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .required(Some(Required::False))
                .build();
            let operation = OperationBuilder::new()
                .operation_id(Some(name))
                .tag("commands")
                .summary(Some(format!("Run {name}")))
                .request_body(Some(body))
                .responses(
                    ResponsesBuilder::new()
                        .response(
                            status,
                            ResponseBuilder::new()
                                .description(format!("The reply of {name}"))
                                .content("application/json", reply_content())
                                .build(),
                        )
                        .build(),
                );
            doc.paths.add_path_operation(
                format!("/v1/commands/{name}"),
                vec![HttpMethod::Post],
                operation,
            );
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == "/v1/openapi.json" {
                continue;
            }
            let operations = [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()];
            for operation in operations.into_iter().flatten() {
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(idempotency_key());
                for (status, _) in ERRORS {
                    operation.responses.responses.insert(
                        status.to_string(),
                        RefOr::Ref(Ref::from_response_name(format!("Error{status}"))),
                    );
                }
            }
        }
    }
}

fn reply_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(RefOr::Ref(Ref::from_schema_name("Reply"))))
        .build()
}

fn idempotency_key() -> utoipa::openapi::path::Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[A-Za-z0-9_.@-]{1,128}$"))
        .build();
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The request id: a retry with the same key and body gets the first reply; the \
             same key with another body is 409 CONFLICT. Without it, a fresh id is used.",
        ))
        .schema(Some(schema))
        .build()
}

/// The document.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document as JSON.
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!(r#"{{"error": "cannot render the OpenAPI document: {e}"}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_route_is_in_the_document() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for name in COMMAND_NAMES {
            let op = &doc["paths"][format!("/v1/commands/{name}")]["post"];
            assert_eq!(op["operationId"], name, "{name}");
        }
        for path in [
            "/v1/orders",
            "/v1/orders/{orderId}",
            "/v1/orders/{orderId}/events",
            "/v1/customers/{customerId}/stats",
            "/v1/clock",
            "/v1/whoami",
            "/v1/daemons",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let create = &doc["components"]["schemas"]["CreateOrderArgs"];
        assert!(create["properties"]["customerId"].is_object(), "{create}");
        assert!(doc["components"]["schemas"]["PriceArgs"].is_object());
    }
}

//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type,
        path::{Operation, ParameterIn},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use hilt_shared::storage::jobs::JobState;

use crate::routes::{admin, health, memberships, ops, payments, products, receipts, support, webhook_endpoints};

#[derive(OpenApi)]
#[openapi(
    info(title = "Hilt", description = "Post-payment delivery, receipts and delivery rescue."),
    paths(
        health::healthz, health::readyz,
        admin::create_merchant,
        products::create_product, products::list_products, products::get_product, products::update_product,
        payments::create_payment, payments::get_payment, payments::confirm_payment,
        ops::list_queues, ops::list_jobs, ops::get_job, ops::retry_job, ops::discard_job, ops::pause_queue,
        ops::resume_queue, ops::attention, ops::audit, ops::metrics, ops::bulk_retry, ops::bulk_discard, ops::queue_graph,
        ops::search, ops::provider_pauses, ops::resume_provider, ops::rate_limits,
        memberships::get_membership, memberships::list_attempts, memberships::retry_delivery,
        memberships::delivery_support_ticket, memberships::delivery_diagnostics,
        memberships::list_memberships, memberships::lookup_memberships, memberships::update_notes,
        memberships::update_profile, memberships::gift_membership, memberships::renewal_intelligence,
        memberships::cancel_membership, memberships::resume_membership, memberships::update_subscription,
        receipts::list_receipts, receipts::get_receipt, receipts::update_invoice_metadata, receipts::get_receipt_pdf,
        receipts::send_proof,
        receipts::get_public_receipt, receipts::verify_receipt, receipts::receipt_keys,
        support::create_ticket, support::list_tickets, support::get_ticket, support::update_ticket,
        support::add_ticket_message,
        webhook_endpoints::create_webhook_endpoint, webhook_endpoints::list_webhook_endpoints,
        webhook_endpoints::get_webhook_endpoint, webhook_endpoints::delete_webhook_endpoint,
        webhook_endpoints::rotate_webhook_secret, webhook_endpoints::list_webhook_deliveries,
        webhook_endpoints::retry_webhook_delivery,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security, &Constraints, &Errors)
)]
pub struct ApiDoc;

/// Every error answer (SPEC §3): `{"error": {"code", "message", "param"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorFields,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorFields {
    /// `invalid_json`, `unauthorized`, `not_found`, `method_not_allowed`, `conflict`,
    /// `request_timeout`, `payload_too_large`, `validation_failed`, `rate_limited`,
    /// `unavailable`.
    pub code: String,
    pub message: String,
    /// The field or query parameter to blame, when one is.
    pub param: Option<String>,
}

/// Documents on every operation the error statuses it can answer, with the error schema, so a
/// generated client knows them: what each handler's annotation lists, plus those every route of
/// its kind shares (authentication, bodies, path ids, rate limits, a database that is down).
struct Errors;

impl Errors {
    fn shared_statuses(path: &str, method: &str, op: &Operation) -> Vec<(&'static str, &'static str)> {
        let mut statuses = vec![("503", "unavailable: a backing service is down; nothing changed")];
        if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
            statuses.push(("401", "unauthorized: missing or wrong credentials"));
            statuses.push(("429", "rate_limited: over HILT_RATE_LIMIT (see Retry-After)"));
        }
        let has_query = op.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Query);
        if has_query && op.request_body.is_none() {
            statuses.push(("422", "validation_failed: a query parameter is invalid (see param)"));
        }
        if op.request_body.is_some() {
            statuses.push(("400", "invalid_json: the body is not JSON"));
            statuses.push(("408", "request_timeout: the body did not arrive within HILT_READ_TIMEOUT"));
            statuses.push(("413", "payload_too_large: the body is over 1 MiB"));
            statuses.push(("422", "validation_failed: a field is missing, of the wrong type or invalid (see param)"));
        }
        if path.contains('{') {
            statuses.push(("404", "not_found: no such object (or another merchant's)"));
        }
        if method == "post" {
            statuses.push(("409", "conflict: the state forbids it, or the Idempotency-Key was used with another request"));
        }
        statuses
    }
}

impl Modify for Errors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {

        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [("get", &mut item.get), ("post", &mut item.post), ("patch", &mut item.patch), ("delete", &mut item.delete), ("put", &mut item.put)];
            for (method, op) in operations {
                let Some(op) = op.as_mut() else { continue };
                let mut wanted: std::collections::BTreeMap<String, String> =
                    Self::shared_statuses(path, method, op).into_iter().map(|(s, d)| (s.to_owned(), d.to_owned())).collect();
                // Error statuses a handler lists without a body get the error schema too.
                for (status, response) in &op.responses.responses {
                    if let RefOr::T(r) = response
                        && (status.starts_with('4') || status.starts_with('5'))
                        && r.content.is_empty()
                    {
                        wanted.entry(status.clone()).or_insert_with(|| r.description.clone());
                    }
                }
                for (status, description) in wanted {
                    let documented = matches!(op.responses.responses.get(&status), Some(RefOr::T(r)) if !r.content.is_empty());
                    if documented {
                        continue;
                    }
                    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
                    let response = ResponseBuilder::new().description(description).content("application/json", content).build();
                    op.responses.responses.insert(status, RefOr::T(response));
                }
            }
        }
    }
}

/// What the routes accept beyond the types of their annotations, declared once: each query
/// parameter's values (the routes check them by hand: `extract::Page` and each route's filters)
/// and the rules of bodies utoipa cannot derive.
struct Constraints;

impl Modify for Constraints {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put].into_iter().flatten() {
                for parameter in op.parameters.iter_mut().flatten() {
                    if parameter.parameter_in == ParameterIn::Query
                        && let Some(schema) = query_schema(path, &parameter.name)
                    {
                        parameter.schema = Some(schema);
                    }
                }
            }
        }
        // A bulk action's filter: the job list's query parameters, as a body.
        if let Some(components) = openapi.components.as_mut()
            && let Some(RefOr::T(utoipa::openapi::Schema::Object(filter))) = components.schemas.get_mut("BulkFilter")
        {
            for (name, property) in filter.properties.iter_mut() {
                if let Some(RefOr::T(utoipa::openapi::Schema::Object(mut schema))) = query_schema("/v1/ops/queues/{queue}/jobs", name) {
                    // Each field may be null (absent), as its `Option` reads.
                    schema.schema_type = utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]);
                    if let Some(values) = schema.enum_values.as_mut() {
                        values.push(serde_json::Value::Null);
                    }
                    *property = RefOr::T(utoipa::openapi::Schema::Object(schema));
                }
            }
        }
        // A profile correction names at least one field (`{}` is 422).
        if let Some(components) = openapi.components.as_mut()
            && let Some(RefOr::T(utoipa::openapi::Schema::Object(profile))) = components.schemas.get_mut("UpdateProfile")
        {
            profile.min_properties = Some(1);
        }
    }
}

/// A time filter: empty, an RFC 3339 time, or a span back from now (`15m`, `1h`, `7d`).
fn time_or_span() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(concat!(
            r"^\s*(|[0-9]{1,3}(ms|s|m|h|d)|[0-9]{1,2}w",
            r"|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]))\s*$"
        )))
}

/// The values a query parameter accepts.
fn query_schema(path: &str, name: &str) -> Option<RefOr<utoipa::openapi::Schema>> {
    let integer = |min: i64, max: Option<i64>| ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(min)).maximum(max);
    let one_of = |values: &[&str]| ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.to_vec()));
    let schema = match (name, path) {
        ("limit", _) => integer(1, Some(200)),
        ("offset", _) => integer(0, Some(i64::MAX)),
        ("within_days", _) => integer(1, Some(365)),
        ("platform", _) => one_of(&["telegram", "discord"]),
        ("kind", _) => one_of(&["general", "delivery"]),
        ("status", "/v1/memberships") => one_of(&["active", "grace", "expired", "cancelled"]),
        ("status", "/v1/support/tickets") => one_of(&["open", "pending", "resolved"]),
        ("status", "/v1/ops/queues/{queue}/jobs") => one_of(&[&[""][..], &JobState::ALL.map(JobState::as_str)].concat()),
        ("provider", _) => one_of(&["", "telegram", "discord"]),
        ("since" | "until", _) => time_or_span(),
        ("q", "/v1/ops/search") => return Some(RefOr::T(hilt_shared::service::schema::text(200, true).into())),
        ("status", _) => return None,
        // Searches and ids: `optional_text(…, 200)`.
        _ => return Some(RefOr::T(hilt_shared::service::schema::text(200, false).into())),
    };
    Some(RefOr::T(schema.build().into()))
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [("api_key", "Merchant API key"), ("admin_token", "Platform admin token")] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build()),
            );
        }
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

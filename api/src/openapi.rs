//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

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
        ops::resume_queue, ops::attention, ops::metrics,
        memberships::get_membership, memberships::list_attempts, memberships::retry_delivery,
        memberships::delivery_support_ticket, memberships::delivery_diagnostics,
        memberships::list_memberships, memberships::lookup_memberships, memberships::update_notes,
        memberships::update_profile, memberships::gift_membership, memberships::renewal_intelligence,
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
    modifiers(&Security)
)]
pub struct ApiDoc;

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

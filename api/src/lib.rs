//! The HTTP API: router, extractors, one error type, and one module per resource.

pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;

use std::{any::Any, future::Future};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware::{from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{error::ApiError, routes::*, state::AppState};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/admin/merchants", post(admin::create_merchant))
        .route("/v1/products", post(products::create_product).get(products::list_products))
        .route("/v1/products/{id}", get(products::get_product).patch(products::update_product))
        .route("/v1/payments", post(payments::create_payment))
        .route("/v1/payments/{id}", get(payments::get_payment))
        .route("/v1/payments/{id}/confirm", post(payments::confirm_payment))
        .route("/v1/memberships/{id}", get(memberships::get_membership))
        .route("/v1/memberships/{id}/attempts", get(memberships::list_attempts))
        .route("/v1/memberships/{id}/retry-delivery", post(memberships::retry_delivery))
        .route("/v1/memberships/{id}/delivery-support-ticket", post(memberships::delivery_support_ticket))
        .route("/v1/receipts", get(receipts::list_receipts))
        .route("/v1/receipt/{id}", get(receipts::get_receipt))
        .route("/v1/receipt/{id}/invoice-metadata", patch(receipts::update_invoice_metadata))
        .route("/v1/receipt/{id}/pdf", get(receipts::get_receipt_pdf))
        .route("/v1/receipt/{id}/send-proof", post(receipts::send_proof))
        .route("/v1/receipt/{id}/public", get(receipts::get_public_receipt))
        .route("/v1/receipt/{id}/verify", get(receipts::verify_receipt))
        .route("/.well-known/hilt-receipt-keys", get(receipts::receipt_keys))
        .route("/v1/support/tickets", post(support::create_ticket).get(support::list_tickets))
        .route("/v1/support/tickets/{id}", get(support::get_ticket).patch(support::update_ticket))
        .route("/v1/support/tickets/{id}/message", post(support::add_ticket_message))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), middleware::idempotency))
        .layer(from_fn(middleware::limit_body))
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::Internal.into_response()
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

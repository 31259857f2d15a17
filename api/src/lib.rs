//! The HTTP API: router, extractors, one error type, and one module per resource.

pub mod error;
pub mod extract;
pub mod idempotency;
pub mod middleware;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod state;

use std::{any::Any, future::Future};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{error::ApiError, routes::*, state::AppState};

pub fn router(state: AppState) -> Router {
    hilt_shared::metrics::handle(); // counting from the first request
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
        .route("/v1/memberships", get(memberships::list_memberships))
        // Static segments: axum 0.8 matches them before `/v1/memberships/{id}`.
        .route("/v1/memberships/lookup", get(memberships::lookup_memberships))
        .route("/v1/memberships/renewal-intelligence", get(memberships::renewal_intelligence))
        .route("/v1/memberships/{id}", get(memberships::get_membership))
        .route("/v1/memberships/{id}/notes", patch(memberships::update_notes))
        .route("/v1/memberships/{id}/profile", patch(memberships::update_profile))
        .route("/v1/memberships/{id}/gift", post(memberships::gift_membership))
        .route("/v1/memberships/{id}/cancel", post(memberships::cancel_membership))
        .route("/v1/memberships/{id}/resume", post(memberships::resume_membership))
        .route("/v1/memberships/{id}/subscription", patch(memberships::update_subscription))
        .route("/v1/ops/queues", get(ops::list_queues))
        .route("/v1/ops/queues/{queue}/jobs", get(ops::list_jobs))
        .route("/v1/ops/queues/{queue}/jobs/retry", post(ops::bulk_retry))
        .route("/v1/ops/queues/{queue}/jobs/discard", post(ops::bulk_discard))
        .route("/v1/ops/queues/{queue}/graph", get(ops::queue_graph))
        .route("/v1/ops/queues/{queue}/pause", post(ops::pause_queue))
        .route("/v1/ops/queues/{queue}/resume", post(ops::resume_queue))
        .route("/v1/ops/jobs/{id}", get(ops::get_job))
        .route("/v1/ops/jobs/{id}/retry", post(ops::retry_job))
        .route("/v1/ops/jobs/{id}/discard", post(ops::discard_job))
        .route("/v1/ops/attention", get(ops::attention))
        .route("/v1/ops/audit", get(ops::audit))
        .route("/v1/ops/search", get(ops::search))
        .route("/v1/ops/providers", get(ops::provider_pauses))
        .route("/v1/ops/rate-limits", get(ops::rate_limits))
        .route("/v1/ops/providers/{provider}/resume", post(ops::resume_provider))
        .route("/metrics", get(ops::metrics))
        .route("/ops", get(ops_pages::overview))
        .route("/ops/search", get(ops_pages::search_page))
        .route("/ops/queues/{queue}", get(ops_pages::queue_page))
        .route("/ops/queues/{queue}/confirm", get(ops_pages::confirm_page))
        .route("/ops/queues/{queue}/jobs/{action}", post(ops_pages::bulk_action))
        .route("/ops/queues/{queue}/{action}", post(ops_pages::page_queue_action))
        .route("/ops/jobs/{id}", get(ops_pages::job_page))
        .route("/ops/jobs/{id}/retry", post(ops_pages::page_retry))
        .route("/ops/jobs/{id}/discard", post(ops_pages::page_discard))
        .route("/ops/memberships/{id}", get(ops_pages::membership_page))
        .route("/ops/memberships/{id}/retry-delivery", post(ops_pages::page_retry_delivery))
        .route("/ops/memberships/{id}/ticket", post(ops_pages::page_open_ticket))
        .route("/ops/providers/{provider}/resume", post(ops_pages::page_resume_provider))
        .route("/v1/memberships/{id}/attempts", get(memberships::list_attempts))
        .route("/v1/memberships/{id}/retry-delivery", post(memberships::retry_delivery))
        .route("/v1/memberships/{id}/delivery-support-ticket", post(memberships::delivery_support_ticket))
        .route("/v1/memberships/{id}/delivery-diagnostics", get(memberships::delivery_diagnostics))
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
        .route("/v1/webhook-endpoints", post(webhook_endpoints::create_webhook_endpoint).get(webhook_endpoints::list_webhook_endpoints))
        .route("/v1/webhook-endpoints/{id}", get(webhook_endpoints::get_webhook_endpoint).delete(webhook_endpoints::delete_webhook_endpoint))
        .route("/v1/webhook-endpoints/{id}/rotate-secret", post(webhook_endpoints::rotate_webhook_secret))
        .route("/v1/webhook-endpoints/{id}/deliveries", get(webhook_endpoints::list_webhook_deliveries))
        .route("/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry", post(webhook_endpoints::retry_webhook_delivery))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(idempotency::idempotency_key))
        .layer(from_fn_with_state(state.clone(), middleware::limit_body))
        .layer(from_fn_with_state(rate_limit::RateLimits::from_config(&state.config), rate_limit::rate_limit))
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .with_state(state)
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::Internal.into_response()
}

/// Serves HTTP/1.1 until `shutdown` resolves, then finishes in-flight requests. A client must
/// send its request headers within `HILT_READ_TIMEOUT` or the connection is closed (and its
/// body within it again, `middleware::limit_body`), so slow senders cannot hold connections.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(state.config.read_timeout.0);
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        // The client's address, for the per-address limits (`rate_limit`).
        let app = app.clone();
        let with_peer = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        let connection = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

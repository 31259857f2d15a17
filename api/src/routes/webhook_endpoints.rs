//! Merchant webhook endpoints (SPEC §8): the secret is shown at creation and rotation only;
//! each endpoint's delivery attempts can be read and retried.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::Response,
};
use hilt_shared::{
    service::webhooks::{self, CreateEndpoint},
    views::webhooks::{WebhookDeliveryView, EndpointView, EndpointWithSecret},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::List;
use crate::{
    error::ApiError,
    extract::{ApiJson, Merchant, Page, QueryPairs, Path},
    idempotency::RequestTx,
    state::AppState,
};

/// Create an endpoint; the answer carries its `whsec_` signing secret, shown this once.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, body = EndpointWithSecret), (status = 422)), security(("api_key" = [])))]
pub async fn create_webhook_endpoint(
    merchant: Merchant,
    State(state): State<AppState>,
    mut tx: RequestTx,
    ApiJson(input): ApiJson<CreateEndpoint>,
) -> Result<Response, ApiError> {
    let created = webhooks::create(&mut tx, &merchant.id, input, state.config.webhook_allow_private).await?;
    tx.commit(StatusCode::CREATED, &created).await
}

/// The merchant's endpoints, newest first, without secrets.
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks",
    params(("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = List<EndpointView>), (status = 422)), security(("api_key" = [])))]
pub async fn list_webhook_endpoints(
    merchant: Merchant,
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<List<EndpointView>>, ApiError> {
    let page = Page::from_query(&query)?;
    let (data, total) = webhooks::list(&state.db, &merchant.id, page.limit, page.offset).await?;
    Ok(Json(List { data, total, limit: page.limit, offset: page.offset }))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404)), security(("api_key" = [])))]
pub async fn get_webhook_endpoint(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(webhooks::get(&state.db, &merchant.id, &id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

/// Delete an endpoint: nothing more is sent to it. Its delivery record is kept.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404)), security(("api_key" = [])))]
pub async fn delete_webhook_endpoint(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
) -> Result<Response, ApiError> {
    webhooks::delete(&mut tx, &merchant.id, &id).await?;
    tx.commit(StatusCode::OK, &Deleted { id, deleted: true }).await
}

/// A new signing secret, shown this once; the previous one keeps signing beside it for 24 hours
/// (`webhook-signature` then carries both signatures).
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = EndpointWithSecret), (status = 404)), security(("api_key" = [])))]
pub async fn rotate_webhook_secret(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
) -> Result<Response, ApiError> {
    let rotated = webhooks::rotate_secret(&mut tx, &merchant.id, &id).await?;
    tx.commit(StatusCode::OK, &rotated).await
}

/// Every attempt to send an event to the endpoint, newest first: status code, latency, error.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", params(("id" = String, Path),
        ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = List<WebhookDeliveryView>), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn list_webhook_deliveries(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<List<WebhookDeliveryView>>, ApiError> {
    let page = Page::from_query(&query)?;
    let (data, total) = webhooks::deliveries(&state.db, &merchant.id, &id, page.limit, page.offset).await?;
    Ok(Json(List { data, total, limit: page.limit, offset: page.offset }))
}

#[derive(Serialize, ToSchema)]
pub struct RetryQueued {
    /// The queued job that sends the event again (same `webhook-id`).
    pub job_id: String,
    pub endpoint_id: String,
    pub event_id: String,
}

/// Send the attempt's event to the endpoint again now, with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = RetryQueued), (status = 404),
        (status = 409, description = "an attempt is in flight, or the endpoint is disabled")),
    security(("api_key" = [])))]
pub async fn retry_webhook_delivery(
    merchant: Merchant,
    Path((id, delivery_id)): Path<(String, String)>,
    mut tx: RequestTx,
) -> Result<Response, ApiError> {
    let (delivery, job_id) = webhooks::retry_delivery(&mut tx, &merchant.id, &id, &delivery_id).await?;
    let queued = RetryQueued { job_id: job_id.to_string(), endpoint_id: delivery.endpoint_id, event_id: delivery.event_id };
    tx.commit(StatusCode::ACCEPTED, &queued).await
}

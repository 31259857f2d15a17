use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use hilt_shared::{
    service::{delivery, diagnostics},
    storage,
    views::{AttemptView, MembershipView, diagnostics::DeliveryDiagnostics, support::TicketView},
};

use crate::{error::ApiError, extract::Merchant, state::AppState};

#[utoipa::path(get, path = "/v1/memberships/{id}", tag = "memberships", params(("id" = String, Path)),
    responses((status = 200, body = MembershipView), (status = 404)), security(("api_key" = [])))]
pub async fn get_membership(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MembershipView>, ApiError> {
    let m = storage::memberships::get(&mut *state.db.conn().await?, &merchant.id, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(MembershipView::from(&m)))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AttemptList {
    pub data: Vec<AttemptView>,
}

/// The delivery attempt history, oldest first.
#[utoipa::path(get, path = "/v1/memberships/{id}/attempts", tag = "delivery", params(("id" = String, Path)),
    responses((status = 200, body = AttemptList), (status = 404)), security(("api_key" = [])))]
pub async fn list_attempts(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AttemptList>, ApiError> {
    let rows = delivery::attempts(&state.db, &merchant.id, &id).await?;
    Ok(Json(AttemptList { data: rows.iter().map(AttemptView::from).collect() }))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RetryAccepted {
    /// The queued job that runs the manual attempt.
    pub job_id: String,
    pub membership: MembershipView,
}

/// Push delivery now (trigger `manual`), from any state including `manual_review`.
#[utoipa::path(post, path = "/v1/memberships/{id}/retry-delivery", tag = "delivery", params(("id" = String, Path)),
    responses((status = 202, body = RetryAccepted), (status = 404), (status = 409, description = "an attempt is in flight")),
    security(("api_key" = [])))]
pub async fn retry_delivery(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RetryAccepted>), ApiError> {
    let (m, job_id) = delivery::retry(&state.db, &merchant.id, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(RetryAccepted { job_id: job_id.to_string(), membership: MembershipView::from(&m) })))
}

/// Open (201) or reuse (200) the membership's delivery support ticket.
#[utoipa::path(post, path = "/v1/memberships/{id}/delivery-support-ticket", tag = "delivery", params(("id" = String, Path)),
    responses((status = 201, body = TicketView), (status = 200, body = TicketView), (status = 404)),
    security(("api_key" = [])))]
pub async fn delivery_support_ticket(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TicketView>), ApiError> {
    let (ticket, created) = delivery::support_ticket(&state.db, &merchant.id, &id, &state.config.public_base_url()).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(ticket)))
}

/// Ask the provider, live, whether delivery can work for this membership: five checks
/// (`automation_configured`, `bot_permissions`, `member_identity`, `member_access`,
/// `fallback_link`) and the suggested next steps. A provider that does not answer within the
/// short timeout is a `warn` check, never an error of this route.
#[utoipa::path(get, path = "/v1/memberships/{id}/delivery-diagnostics", tag = "delivery", params(("id" = String, Path)),
    responses((status = 200, body = DeliveryDiagnostics), (status = 404)), security(("api_key" = [])))]
pub async fn delivery_diagnostics(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDiagnostics>, ApiError> {
    Ok(Json(diagnostics::diagnose(&state.db, &state.providers, &merchant.id, &id).await?))
}

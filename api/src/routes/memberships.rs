use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::Response,
};
use hilt_shared::{
    service::{delivery, diagnostics},
    storage,
    views::{AttemptView, MembershipView, diagnostics::DeliveryDiagnostics, support::TicketView},
};

use crate::{
    error::ApiError,
    extract::{Merchant, Path},
    idempotency::RequestTx,
    state::AppState,
};

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
    Path(id): Path<String>,
    mut tx: RequestTx,
) -> Result<Response, ApiError> {
    let (m, job_id) = delivery::retry(&mut tx, &merchant.id, &id).await?;
    tx.commit(StatusCode::ACCEPTED, &RetryAccepted { job_id: job_id.to_string(), membership: MembershipView::from(&m) }).await
}

/// Open (201) or reuse (200) the membership's delivery support ticket.
#[utoipa::path(post, path = "/v1/memberships/{id}/delivery-support-ticket", tag = "delivery", params(("id" = String, Path)),
    responses((status = 201, body = TicketView), (status = 200, body = TicketView), (status = 404)),
    security(("api_key" = [])))]
pub async fn delivery_support_ticket(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut tx: RequestTx,
) -> Result<Response, ApiError> {
    let (ticket, created) = delivery::support_ticket(&mut tx, &merchant.id, &id, &state.config.public_base_url()).await?;
    tx.commit(if created { StatusCode::CREATED } else { StatusCode::OK }, &ticket).await
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

// ── Ledger, lookup, notes, profile, gifts and renewal intelligence ─────────────────────────

/// The membership ledger, newest first.
#[utoipa::path(get, path = "/v1/memberships", tag = "memberships",
    params(("product_id" = Option<String>, Query), ("status" = Option<String>, Query, description = "active, grace, expired or cancelled"),
        ("platform" = Option<String>, Query, description = "telegram or discord"),
        ("q" = Option<String>, Query, description = "Search handle, label, wallet, Telegram/Discord user id, membership and payment ids"),
        ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = super::List<MembershipView>), (status = 422)), security(("api_key" = [])))]
pub async fn list_memberships(
    merchant: Merchant,
    State(state): State<AppState>,
    crate::extract::QueryPairs(query): crate::extract::QueryPairs,
) -> Result<Json<super::List<MembershipView>>, ApiError> {
    let page = crate::extract::Page::from_query(&query)?;
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let filter = hilt_shared::service::memberships::ListMemberships {
        product_id: get("product_id"),
        status: get("status"),
        platform: get("platform"),
        q: get("q"),
    };
    let (rows, total) = hilt_shared::service::memberships::list(&state.db, &merchant.id, filter, page.limit, page.offset).await?;
    Ok(Json(super::List { data: rows.iter().map(MembershipView::from).collect(), total, limit: page.limit, offset: page.offset }))
}

/// Find a buyer's memberships by exactly one of `wallet`, `identity` (Telegram or Discord user
/// id, or handle) or `tx_signature` (of any of their payments). 404 when none match.
#[utoipa::path(get, path = "/v1/memberships/lookup", tag = "memberships",
    params(("wallet" = Option<String>, Query), ("identity" = Option<String>, Query), ("tx_signature" = Option<String>, Query),
        ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = super::List<MembershipView>), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn lookup_memberships(
    merchant: Merchant,
    State(state): State<AppState>,
    crate::extract::QueryPairs(query): crate::extract::QueryPairs,
) -> Result<Json<super::List<MembershipView>>, ApiError> {
    let page = crate::extract::Page::from_query(&query)?;
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let by = hilt_shared::service::memberships::LookupMembership {
        wallet: get("wallet"),
        identity: get("identity"),
        tx_signature: get("tx_signature"),
    };
    let (rows, total) = hilt_shared::service::memberships::lookup(&state.db, &merchant.id, by, page.limit, page.offset).await?;
    Ok(Json(super::List { data: rows.iter().map(MembershipView::from).collect(), total, limit: page.limit, offset: page.offset }))
}

/// Merchant-only notes; `null` or "" clears them.
#[utoipa::path(patch, path = "/v1/memberships/{id}/notes", tag = "memberships", params(("id" = String, Path)),
    request_body = hilt_shared::service::memberships::UpdateNotes,
    responses((status = 200, body = MembershipView), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn update_notes(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
    crate::extract::ApiJson(input): crate::extract::ApiJson<hilt_shared::service::memberships::UpdateNotes>,
) -> Result<Response, ApiError> {
    let m = hilt_shared::service::memberships::update_notes(&mut tx, &merchant.id, &id, input).await?;
    tx.commit(StatusCode::OK, &MembershipView::from(&m)).await
}

/// Display corrections: `handle`, `label`. Absent fields are kept; `null` or "" clears one.
#[utoipa::path(patch, path = "/v1/memberships/{id}/profile", tag = "memberships", params(("id" = String, Path)),
    request_body = hilt_shared::service::memberships::UpdateProfile,
    responses((status = 200, body = MembershipView), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn update_profile(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
    crate::extract::ApiJson(input): crate::extract::ApiJson<hilt_shared::service::memberships::UpdateProfile>,
) -> Result<Response, ApiError> {
    let m = hilt_shared::service::memberships::update_profile(&mut tx, &merchant.id, &id, input).await?;
    tx.commit(StatusCode::OK, &MembershipView::from(&m)).await
}

/// Extend access by `days` without a payment, from max(now, current_period_end). Access becomes
/// active again; access that was revoked is delivered again (trigger `renewal`). 409 for
/// lifetime access.
#[utoipa::path(post, path = "/v1/memberships/{id}/gift", tag = "memberships", params(("id" = String, Path)),
    request_body = hilt_shared::service::memberships::Gift,
    responses((status = 200, body = MembershipView), (status = 404), (status = 409), (status = 422)), security(("api_key" = [])))]
pub async fn gift_membership(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
    crate::extract::ApiJson(input): crate::extract::ApiJson<hilt_shared::service::memberships::Gift>,
) -> Result<Response, ApiError> {
    let m = hilt_shared::service::memberships::gift(&mut tx, &merchant.id, &id, input).await?;
    tx.commit(StatusCode::OK, &MembershipView::from(&m)).await
}

/// Who is about to lapse, who is in grace, what churned and what renewed.
#[utoipa::path(get, path = "/v1/memberships/renewal-intelligence", tag = "memberships",
    params(("product_id" = Option<String>, Query),
        ("within_days" = Option<i64>, Query, description = "Window of expiring memberships, 1 to 365 (default 30)")),
    responses((status = 200, body = hilt_shared::views::renewals::RenewalIntelligence), (status = 422)), security(("api_key" = [])))]
pub async fn renewal_intelligence(
    merchant: Merchant,
    State(state): State<AppState>,
    crate::extract::QueryPairs(query): crate::extract::QueryPairs,
) -> Result<Json<hilt_shared::views::renewals::RenewalIntelligence>, ApiError> {
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let filter = hilt_shared::service::renewals::IntelligenceQuery { product_id: get("product_id"), within_days: get("within_days") };
    Ok(Json(hilt_shared::service::renewals::intelligence(&state.db, &merchant.id, filter).await?))
}

/// Cancel: at period end (access stays until `current_period_end`, then ends without grace or
/// reminders; `…/resume` undoes it) or now (`cancelled` and access removed at once). 409 when
/// the membership's state forbids it (see the message).
#[utoipa::path(post, path = "/v1/memberships/{id}/cancel", tag = "memberships", params(("id" = String, Path)),
    request_body = hilt_shared::service::memberships::Cancel,
    responses((status = 200, body = MembershipView), (status = 404), (status = 409), (status = 422)), security(("api_key" = [])))]
pub async fn cancel_membership(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
    crate::extract::ApiJson(input): crate::extract::ApiJson<hilt_shared::service::memberships::Cancel>,
) -> Result<Response, ApiError> {
    let m = hilt_shared::service::memberships::cancel(&mut tx, &merchant.id, &id, input).await?;
    tx.commit(StatusCode::OK, &MembershipView::from(&m)).await
}

/// Undo a cancellation scheduled at period end, before the period ends (409 after, or when
/// none is scheduled).
#[utoipa::path(post, path = "/v1/memberships/{id}/resume", tag = "memberships", params(("id" = String, Path)),
    responses((status = 200, body = MembershipView), (status = 404), (status = 409)), security(("api_key" = [])))]
pub async fn resume_membership(merchant: Merchant, Path(id): Path<String>, mut tx: RequestTx) -> Result<Response, ApiError> {
    let m = hilt_shared::service::memberships::resume(&mut tx, &merchant.id, &id).await?;
    tx.commit(StatusCode::OK, &MembershipView::from(&m)).await
}

/// The payment processor's word on a renewal: `collection_state` `paid`, `past_due` or
/// `unpaid` (event `subscription.<state>` when it changes). Access follows the period and the
/// grace period, not this field.
#[utoipa::path(patch, path = "/v1/memberships/{id}/subscription", tag = "platform", params(("id" = String, Path)),
    request_body = hilt_shared::service::memberships::UpdateSubscription,
    responses((status = 200, body = MembershipView), (status = 404), (status = 422)), security(("admin_token" = [])))]
pub async fn update_subscription(
    _: crate::extract::Admin,
    Path(id): Path<String>,
    mut tx: RequestTx,
    crate::extract::ApiJson(input): crate::extract::ApiJson<hilt_shared::service::memberships::UpdateSubscription>,
) -> Result<Response, ApiError> {
    let m = hilt_shared::service::memberships::update_subscription(&mut tx, &id, input).await?;
    tx.commit(StatusCode::OK, &MembershipView::from(&m)).await
}

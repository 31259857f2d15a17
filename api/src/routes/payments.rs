use axum::{
    Json,
    extract::State,
    http::StatusCode,
};
use hilt_shared::{
    service::payments::{self, ConfirmPayment, CreatePayment},
    views::PaymentView,
};

use crate::{
    error::ApiError,
    extract::{Admin, ApiJson, Merchant, Path},
    state::AppState,
};

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePayment,
    responses((status = 201, body = PaymentView), (status = 422)), security(("api_key" = [])))]
pub async fn create_payment(
    merchant: Merchant,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<CreatePayment>,
) -> Result<(StatusCode, Json<PaymentView>), ApiError> {
    let payment = payments::create(&state.db, state.config.encryption_key.as_ref(), &merchant.id, input).await?;
    Ok((StatusCode::CREATED, Json(PaymentView::from(&payment))))
}

#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments", params(("id" = String, Path)),
    responses((status = 200, body = PaymentView), (status = 404)), security(("api_key" = [])))]
pub async fn get_payment(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    let payment = payments::get(&state.db, &merchant.id, &id).await?;
    Ok(Json(PaymentView::from(&payment)))
}

/// The payment processor's call. Idempotent: a second confirm returns the same payment.
#[utoipa::path(post, path = "/v1/payments/{id}/confirm", tag = "platform", params(("id" = String, Path)),
    request_body = ConfirmPayment,
    responses((status = 200, body = PaymentView), (status = 404), (status = 409), (status = 422)),
    security(("admin_token" = [])))]
pub async fn confirm_payment(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ConfirmPayment>,
) -> Result<Json<PaymentView>, ApiError> {
    let payment = payments::confirm(&state.db, &state.receipt_signer, &id, &input.tx_signature).await?;
    Ok(Json(PaymentView::from(&payment)))
}

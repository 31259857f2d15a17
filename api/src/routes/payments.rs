use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::Response,
};
use hilt_shared::{
    service::payments::{self, ConfirmPayment, CreatePayment},
    views::PaymentView,
};

use crate::{
    error::ApiError,
    extract::{Admin, ApiJson, Merchant, Path},
    idempotency::RequestTx,
    state::AppState,
};

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePayment,
    responses((status = 201, body = PaymentView), (status = 422)), security(("api_key" = [])))]
pub async fn create_payment(
    merchant: Merchant,
    State(state): State<AppState>,
    mut tx: RequestTx,
    ApiJson(input): ApiJson<CreatePayment>,
) -> Result<Response, ApiError> {
    let payment = payments::create(&mut tx, state.config.encryption_key.as_ref(), &merchant.id, input).await?;
    tx.commit(StatusCode::CREATED, &PaymentView::from(&payment)).await
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
    mut tx: RequestTx,
    ApiJson(input): ApiJson<ConfirmPayment>,
) -> Result<Response, ApiError> {
    let payment = payments::confirm(&mut tx, &state.receipt_signer, &id, &input.tx_signature).await?;
    tx.commit(StatusCode::OK, &PaymentView::from(&payment)).await
}

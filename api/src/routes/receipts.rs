//! Receipts: the merchant's ledger and invoice details, the PDF proof, and the public proof,
//! verification and key routes that need no credentials (SPEC §5).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hilt_shared::{
    service::{
        proof_emails::{self, SendProof},
        receipts::{self, InvoiceMetadataPatch, ListReceipts},
    },
    views::{
        proof_emails::ProofEmailView,
        receipts::{Jwks, PublicReceiptView, ReceiptView, VerificationView},
    },
};

use super::List;
use crate::{
    error::ApiError,
    extract::{ApiJson, Merchant, Page, QueryPairs, parse_json, Path},
    idempotency::RequestTx,
    state::AppState,
};

#[utoipa::path(get, path = "/v1/receipts", tag = "receipts",
    params(("wallet" = Option<String>, Query), ("product_id" = Option<String>, Query),
        ("q" = Option<String>, Query, description = "Search ids, wallet, tx_signature and invoice fields"),
        ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = List<ReceiptView>), (status = 422)), security(("api_key" = [])))]
pub async fn list_receipts(
    merchant: Merchant,
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<List<ReceiptView>>, ApiError> {
    let page = Page::from_query(&query)?;
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let filter = ListReceipts { wallet: get("wallet"), product_id: get("product_id"), q: get("q") };
    let base = state.config.public_base_url();
    let (data, total) = receipts::list(&state.db, &merchant.id, filter, page.limit, page.offset, &base).await?;
    Ok(Json(List { data, total, limit: page.limit, offset: page.offset }))
}

#[utoipa::path(get, path = "/v1/receipt/{id}", tag = "receipts", params(("id" = String, Path)),
    responses((status = 200, body = ReceiptView), (status = 404)), security(("api_key" = [])))]
pub async fn get_receipt(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReceiptView>, ApiError> {
    Ok(Json(receipts::get(&state.db, &merchant.id, &id, &state.config.public_base_url()).await?))
}

/// Attach buyer/invoice details. Absent fields are kept; `null` or "" clears one.
#[utoipa::path(patch, path = "/v1/receipt/{id}/invoice-metadata", tag = "receipts", params(("id" = String, Path)),
    request_body = InvoiceMetadataPatch,
    responses((status = 200, body = ReceiptView), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn update_invoice_metadata(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut tx: RequestTx,
    ApiJson(patch): ApiJson<InvoiceMetadataPatch>,
) -> Result<Response, ApiError> {
    let base = state.config.public_base_url();
    let receipt = receipts::update_invoice_metadata(&mut tx, &merchant.id, &id, patch, &base).await?;
    tx.commit(StatusCode::OK, &receipt).await
}

/// The proof document: purchase, invoice details, signature fingerprint, verification URL and QR.
#[utoipa::path(get, path = "/v1/receipt/{id}/pdf", tag = "receipts", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/pdf", body = Vec<u8>), (status = 404)),
    security(("api_key" = [])))]
pub async fn get_receipt_pdf(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = receipts::pdf(&state.db, &merchant.id, &id, &state.config.public_base_url()).await?;
    let disposition = format!("inline; filename=\"{id}.pdf\"");
    Ok(([(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes))
}

/// Public, by the unguessable receipt id: the signed payload, its proof, whether it verifies
/// now, and the invoice details. No merchant-only fields.
#[utoipa::path(get, path = "/v1/receipt/{id}/public", tag = "public", params(("id" = String, Path)),
    responses((status = 200, body = PublicReceiptView), (status = 404)))]
pub async fn get_public_receipt(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PublicReceiptView>, ApiError> {
    Ok(Json(receipts::public(&state.db, &id, &state.config.public_base_url()).await?))
}

/// Public: checks the signature, the payload hash and that the payment is still confirmed.
#[utoipa::path(get, path = "/v1/receipt/{id}/verify", tag = "public", params(("id" = String, Path)),
    responses((status = 200, body = VerificationView), (status = 404)))]
pub async fn verify_receipt(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VerificationView>, ApiError> {
    Ok(Json(receipts::verify(&state.db, &id, &state.config.public_base_url()).await?))
}

/// Public: every receipt signing key as a JWKS (RFC 8037 `OKP`/`Ed25519`), `kid` = `proof.key_id`.
#[utoipa::path(get, path = "/.well-known/hilt-receipt-keys", tag = "public", responses((status = 200, body = Jwks)))]
pub async fn receipt_keys(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let jwks = receipts::jwks(&state.db).await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(jwks)))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SendProofAccepted {
    /// The queued `proof_email` job that sends it.
    pub job_id: String,
    pub proof_email: ProofEmailView,
}

/// Email the receipt's verification link (202; a `proof_email` job sends it once). The address
/// is `email`, else the invoice billing email, else the buyer's email; none known → 422.
#[utoipa::path(post, path = "/v1/receipt/{id}/send-proof", tag = "receipts", params(("id" = String, Path)),
    request_body(content = Option<SendProof>, description = "Optional: no body is `{}`"),
    responses((status = 202, body = SendProofAccepted), (status = 404), (status = 422, description = "no or a malformed address")),
    security(("api_key" = [])))]
pub async fn send_proof(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: SendProof = if body.is_empty() { SendProof::default() } else { parse_json(&body)? };
    let (request, job_id) = proof_emails::request(&mut tx, &merchant.id, &id, body).await?;
    tx.commit(StatusCode::ACCEPTED, &SendProofAccepted { job_id: job_id.to_string(), proof_email: ProofEmailView::from(&request) }).await
}

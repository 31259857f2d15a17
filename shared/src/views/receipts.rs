//! Receipts as the API returns them (SPEC §4 "Receipt", §5 "Receipt proof format").

use serde::Serialize;
use utoipa::ToSchema;

use crate::{clock::rfc3339, signing::ALGORITHM, storage::receipts::ReceiptRow};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProofView {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The `kid` of the signing key in `/.well-known/hilt-receipt-keys`.
    pub key_id: Option<String>,
    /// Hex SHA-256 of the RFC 8785 canonical payload bytes: the receipt's fingerprint.
    pub payload_sha256: String,
    /// Ed25519 signature of the same bytes, base64url without padding.
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvoiceMetadataView {
    pub invoice_number: Option<String>,
    pub billing_name: Option<String>,
    pub billing_email: Option<String>,
    pub billing_reference: Option<String>,
    pub notes: Option<String>,
}

/// The full stored receipt (merchant API).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReceiptView {
    pub id: String,
    pub payment_id: String,
    pub membership_id: String,
    pub product_id: String,
    pub wallet: Option<String>,
    pub tx_signature: String,
    pub amount: String,
    pub currency: String,
    pub issued_at: String,
    /// The signed proof, as a JSON object; its RFC 8785 canonical form is what was signed.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub proof: ProofView,
    pub verification_url: String,
    pub invoice_metadata: InvoiceMetadataView,
    /// Proof email requests, oldest first (`GET /v1/receipt/{id}` only; absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof_emails: Option<Vec<super::proof_emails::ProofEmailView>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationCheck {
    /// `signature`, `payload_hash` or `payment_confirmed`.
    pub name: String,
    /// `pass` or `fail`.
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationView {
    /// True when every check passes.
    pub valid: bool,
    pub verification_url: String,
    pub checks: Vec<VerificationCheck>,
}

/// What anyone holding the receipt id may see: the signed payload, its proof, whether it
/// verifies now, and the invoice details the merchant attached. Nothing merchant-only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublicReceiptView {
    pub id: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub proof: ProofView,
    pub verification_url: String,
    /// The JWKS holding the public key named by `proof.key_id`.
    pub keys_url: String,
    pub verification: VerificationView,
    pub invoice_metadata: InvoiceMetadataView,
}

/// One public key (RFC 8037 `OKP` / `Ed25519`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The raw public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

pub fn verification_url(public_base_url: &str, receipt_id: &str) -> String {
    format!("{public_base_url}/v1/receipt/{receipt_id}/verify")
}

impl ProofView {
    pub fn new(r: &ReceiptRow) -> Self {
        Self {
            algorithm: ALGORITHM.into(),
            key_id: r.key_id.clone(),
            payload_sha256: r.payload_sha256.clone(),
            signature: r.signature.clone(),
        }
    }
}

impl InvoiceMetadataView {
    pub fn new(r: &ReceiptRow) -> Self {
        Self {
            invoice_number: r.invoice_number.clone(),
            billing_name: r.billing_name.clone(),
            billing_email: r.billing_email.clone(),
            billing_reference: r.billing_reference.clone(),
            notes: r.invoice_notes.clone(),
        }
    }
}

/// The stored payload as JSON; a payload that no longer parses is shown as its text.
pub fn payload_json(r: &ReceiptRow) -> serde_json::Value {
    serde_json::from_str(&r.payload).unwrap_or_else(|_| serde_json::Value::String(r.payload.clone()))
}

impl ReceiptView {
    pub fn new(r: &ReceiptRow, public_base_url: &str) -> Self {
        Self {
            id: r.id.clone(),
            payment_id: r.payment_id.clone(),
            membership_id: r.membership_id.clone(),
            product_id: r.product_id.clone(),
            wallet: r.wallet.clone(),
            tx_signature: r.tx_signature.clone(),
            amount: r.amount.clone(),
            currency: r.currency.clone(),
            issued_at: rfc3339(r.issued_at),
            payload: payload_json(r),
            proof: ProofView::new(r),
            verification_url: verification_url(public_base_url, &r.id),
            invoice_metadata: InvoiceMetadataView::new(r),
            proof_emails: None,
        }
    }
}

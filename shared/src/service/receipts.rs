//! Receipts: the merchant's ledger, invoice details, the public proof, verification and the
//! PDF proof document. Receipts are issued and signed at confirmation (`service::payments`).

mod pdf;

use serde::{Deserialize, Deserializer};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{ServiceError, email, invalid, optional_text};
use crate::{
    domain::PaymentStatus,
    signing::{self, ALGORITHM},
    storage::{
        Db, like_pattern, merchants, payments, receipt_keys,
        receipts::{self, ReceiptFilter, ReceiptRow},
    },
    views::receipts::{
        InvoiceMetadataView, Jwk, Jwks, ProofView, PublicReceiptView, ReceiptView, VerificationCheck,
        VerificationView, payload_json, verification_url,
    },
};

/// `PATCH /v1/receipt/{id}/invoice-metadata`: an absent field is left as it is; `null` or an
/// empty string clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InvoiceMetadataPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_line_64)]
    pub invoice_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_line_200)]
    pub billing_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_email)]
    pub billing_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_line_128)]
    pub billing_reference: Option<Option<String>>,
    /// Printed on the PDF and shown on the public proof: not a place for private notes.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_text_2000)]
    pub notes: Option<Option<String>>,
}

/// Tells a field given as `null` (Some(None)) from an absent one (None).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// List filters as given in the query string.
#[derive(Debug, Default)]
pub struct ListReceipts<'a> {
    pub wallet: Option<&'a str>,
    pub product_id: Option<&'a str>,
    pub q: Option<&'a str>,
}

pub async fn list(
    db: &Db,
    merchant_id: &str,
    filter: ListReceipts<'_>,
    limit: i64,
    offset: i64,
    public_base_url: &str,
) -> Result<(Vec<ReceiptView>, i64), ServiceError> {
    let q = optional_text("q", filter.q, 200)?;
    let filter = ReceiptFilter {
        wallet: optional_text("wallet", filter.wallet, 200)?,
        product_id: optional_text("product_id", filter.product_id, 200)?,
        q: q.as_deref().map(like_pattern),
    };
    let (rows, total) = receipts::list(&mut *db.conn().await?, merchant_id, &filter, limit, offset).await?;
    Ok((rows.iter().map(|r| ReceiptView::new(r, public_base_url)).collect(), total))
}

pub async fn get(db: &Db, merchant_id: &str, id: &str, public_base_url: &str) -> Result<ReceiptView, ServiceError> {
    let mut conn = db.conn().await?;
    let row = receipts::get(&mut conn, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let sent = crate::storage::proof_emails::list_for_receipt(&mut conn, &row.id).await?;
    let mut view = ReceiptView::new(&row, public_base_url);
    view.proof_emails = Some(sent.iter().map(Into::into).collect());
    Ok(view)
}

pub async fn update_invoice_metadata(
    tx: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
    patch: InvoiceMetadataPatch,
    public_base_url: &str,
) -> Result<ReceiptView, ServiceError> {
    // Validate before touching the database, so a bad field changes nothing.
    let one_line = |param: &str, value: Option<Option<String>>, max: usize| -> Result<Option<Option<String>>, ServiceError> {
        let Some(value) = value else { return Ok(None) };
        let text = optional_text(param, value.as_deref(), max)?;
        if text.as_deref().is_some_and(|t| t.contains(['\n', '\t'])) {
            return Err(invalid(param, "must be a single line"));
        }
        Ok(Some(text))
    };
    let invoice_number = one_line("invoice_number", patch.invoice_number, 64)?;
    let billing_name = one_line("billing_name", patch.billing_name, 200)?;
    let billing_reference = one_line("billing_reference", patch.billing_reference, 128)?;
    let billing_email = patch.billing_email.map(|e| email("billing_email", e.as_deref())).transpose()?;
    let notes = patch.notes.map(|n| optional_text("notes", n.as_deref(), 2000)).transpose()?;
    let mut row = receipts::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let set = |field: &mut Option<String>, value: Option<Option<String>>| {
        if let Some(v) = value {
            *field = v;
        }
    };
    set(&mut row.invoice_number, invoice_number);
    set(&mut row.billing_name, billing_name);
    set(&mut row.billing_email, billing_email);
    set(&mut row.billing_reference, billing_reference);
    set(&mut row.invoice_notes, notes);
    receipts::update_invoice_metadata(&mut *tx, &row).await?;
    Ok(ReceiptView::new(&row, public_base_url))
}

/// The public proof by receipt id alone (no auth).
pub async fn public(db: &Db, id: &str, public_base_url: &str) -> Result<PublicReceiptView, ServiceError> {
    let mut conn = db.conn().await?;
    let row = receipts::get_any(&mut conn, id).await?.ok_or(ServiceError::NotFound)?;
    let verification = check(&mut conn, &row, public_base_url).await?;
    Ok(PublicReceiptView {
        id: row.id.clone(),
        payload: payload_json(&row),
        proof: ProofView::new(&row),
        verification_url: verification_url(public_base_url, &row.id),
        keys_url: format!("{public_base_url}/.well-known/hilt-receipt-keys"),
        verification,
        invoice_metadata: InvoiceMetadataView::new(&row),
    })
}

pub async fn verify(db: &Db, id: &str, public_base_url: &str) -> Result<VerificationView, ServiceError> {
    let mut conn = db.conn().await?;
    let row = receipts::get_any(&mut conn, id).await?.ok_or(ServiceError::NotFound)?;
    check(&mut conn, &row, public_base_url).await
}

/// Every published signing key, newest first.
pub async fn jwks(db: &Db) -> Result<Jwks, ServiceError> {
    let rows = receipt_keys::list(&mut *db.conn().await?).await?;
    let keys = rows
        .into_iter()
        .filter(|k| k.algorithm == ALGORITHM)
        .map(|k| Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: k.public_key,
            kid: k.key_id,
            use_: "sig".into(),
            alg: "EdDSA".into(),
        })
        .collect();
    Ok(Jwks { keys })
}

/// The PDF proof document of a merchant's receipt.
pub async fn pdf(db: &Db, merchant_id: &str, id: &str, public_base_url: &str) -> Result<Vec<u8>, ServiceError> {
    let mut conn = db.conn().await?;
    let row = receipts::get(&mut conn, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let verification = check(&mut conn, &row, public_base_url).await?;
    let payload = payload_json(&row);
    let text = |key: &str| payload.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let merchant_name = match text("merchant_name") {
        Some(name) => name,
        None => merchants::get(&mut conn, merchant_id).await?.map(|m| m.name).unwrap_or_default(),
    };
    let document = pdf::ReceiptDocument {
        receipt: &row,
        merchant_name: &merchant_name,
        product_name: &text("product_name").unwrap_or_else(|| row.product_id.clone()),
        verification_url: &verification.verification_url,
        keys_url: &format!("{public_base_url}/.well-known/hilt-receipt-keys"),
        verified: verification.valid,
    };
    Ok(pdf::render(&document))
}

/// Signature, payload hash and payment state, each reported as a check.
async fn check(conn: &mut AnyConnection, r: &ReceiptRow, public_base_url: &str) -> Result<VerificationView, ServiceError> {
    let check = |name: &str, pass: bool, detail: String| VerificationCheck {
        name: name.into(),
        status: if pass { "pass" } else { "fail" }.into(),
        detail,
    };
    let bytes = r.payload.as_bytes();
    let signature = match (&r.key_id, &r.signature) {
        (Some(key_id), Some(sig)) => match receipt_keys::get(conn, key_id).await? {
            Some(key) if signing::verify(&key.public_key, bytes, sig) => {
                check("signature", true, format!("Ed25519 signature by key {key_id} is valid"))
            }
            Some(_) => check("signature", false, "the signature does not match the payload".into()),
            None => check("signature", false, format!("signing key {key_id} is not published")),
        },
        _ => check("signature", false, "the receipt is not signed".into()),
    };
    let digest = signing::sha256_hex(bytes);
    let hash = if digest == r.payload_sha256 {
        check("payload_hash", true, "SHA-256 of the canonical payload matches payload_sha256".into())
    } else {
        check("payload_hash", false, "SHA-256 of the payload does not match payload_sha256".into())
    };
    let payment = payments::get(conn, None, &r.payment_id).await?;
    let confirmed = payment.as_ref().is_some_and(|p| {
        p.payment.status == PaymentStatus::Confirmed.as_str() && p.payment.tx_signature.as_deref() == Some(r.tx_signature.as_str())
    });
    let payment_check = match (&payment, confirmed) {
        (_, true) => check("payment_confirmed", true, "the payment is confirmed by this transaction".into()),
        (Some(p), false) => check("payment_confirmed", false, format!("the payment is {}", p.payment.status)),
        (None, false) => check("payment_confirmed", false, "the payment no longer exists".into()),
    };
    let checks = vec![signature, hash, payment_check];
    Ok(VerificationView {
        valid: checks.iter().all(|c| c.status == "pass"),
        verification_url: verification_url(public_base_url, &r.id),
        checks,
    })
}

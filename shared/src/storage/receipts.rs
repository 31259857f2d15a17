use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct ReceiptRow {
    pub id: String,
    pub merchant_id: String,
    pub payment_id: String,
    pub membership_id: String,
    pub product_id: String,
    pub wallet: Option<String>,
    pub tx_signature: String,
    pub amount: String,
    pub currency: String,
    pub issued_at: i64,
    pub payload: String,
    pub key_id: Option<String>,
    pub payload_sha256: String,
    pub signature: Option<String>,
    pub invoice_number: Option<String>,
    pub billing_name: Option<String>,
    pub billing_email: Option<String>,
    pub billing_reference: Option<String>,
    pub invoice_notes: Option<String>,
}

pub async fn insert(conn: &mut AnyConnection, r: &ReceiptRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO receipts (id, merchant_id, payment_id, membership_id, product_id, wallet, \
         tx_signature, amount, currency, issued_at, payload, key_id, payload_sha256, signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&r.id)
    .bind(&r.merchant_id)
    .bind(&r.payment_id)
    .bind(&r.membership_id)
    .bind(&r.product_id)
    .bind(&r.wallet)
    .bind(&r.tx_signature)
    .bind(&r.amount)
    .bind(&r.currency)
    .bind(r.issued_at)
    .bind(&r.payload)
    .bind(&r.key_id)
    .bind(&r.payload_sha256)
    .bind(&r.signature)
    .execute(conn)
    .await?;
    Ok(())
}

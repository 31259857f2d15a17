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

const COLUMNS: &str = "id, merchant_id, payment_id, membership_id, product_id, wallet, tx_signature, \
    amount, currency, issued_at, payload, key_id, payload_sha256, signature, invoice_number, \
    billing_name, billing_email, billing_reference, invoice_notes";

pub async fn get(conn: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<Option<ReceiptRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM receipts WHERE id = $1 AND merchant_id = $2")))
        .bind(id)
        .bind(merchant_id)
        .fetch_optional(conn)
        .await
}

/// By the unguessable id alone, for the public proof and verify routes.
pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<ReceiptRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM receipts WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn get_by_payment(conn: &mut AnyConnection, payment_id: &str) -> Result<Option<ReceiptRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM receipts WHERE payment_id = $1")))
        .bind(payment_id)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Default, Clone)]
pub struct ReceiptFilter {
    pub wallet: Option<String>,
    pub product_id: Option<String>,
    /// A LIKE pattern (see `storage::like_pattern`) over ids, wallet, tx_signature and invoice fields.
    pub q: Option<String>,
}

pub async fn list(
    conn: &mut AnyConnection,
    merchant_id: &str,
    filter: &ReceiptFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ReceiptRow>, i64), sqlx::Error> {
    let filters = "merchant_id = $1 AND ($2 IS NULL OR wallet = $2) AND ($3 IS NULL OR product_id = $3) \
        AND ($4 IS NULL OR LOWER(id) LIKE $4 ESCAPE '\\' OR LOWER(payment_id) LIKE $4 ESCAPE '\\' \
        OR LOWER(membership_id) LIKE $4 ESCAPE '\\' OR LOWER(product_id) LIKE $4 ESCAPE '\\' \
        OR LOWER(COALESCE(wallet, '')) LIKE $4 ESCAPE '\\' OR LOWER(tx_signature) LIKE $4 ESCAPE '\\' \
        OR LOWER(COALESCE(invoice_number, '')) LIKE $4 ESCAPE '\\' \
        OR LOWER(COALESCE(billing_name, '')) LIKE $4 ESCAPE '\\' \
        OR LOWER(COALESCE(billing_email, '')) LIKE $4 ESCAPE '\\' \
        OR LOWER(COALESCE(billing_reference, '')) LIKE $4 ESCAPE '\\')";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM receipts WHERE {filters} ORDER BY issued_at DESC, id LIMIT $5 OFFSET $6"
    )))
    .bind(merchant_id)
    .bind(&filter.wallet)
    .bind(&filter.product_id)
    .bind(&filter.q)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM receipts WHERE {filters}")))
        .bind(merchant_id)
        .bind(&filter.wallet)
        .bind(&filter.product_id)
        .bind(&filter.q)
        .fetch_one(conn)
        .await?;
    Ok((rows, total))
}

pub async fn update_invoice_metadata(conn: &mut AnyConnection, r: &ReceiptRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE receipts SET invoice_number = $1, billing_name = $2, billing_email = $3, \
         billing_reference = $4, invoice_notes = $5 WHERE id = $6 AND merchant_id = $7",
    )
    .bind(&r.invoice_number)
    .bind(&r.billing_name)
    .bind(&r.billing_email)
    .bind(&r.billing_reference)
    .bind(&r.invoice_notes)
    .bind(&r.id)
    .bind(&r.merchant_id)
    .execute(conn)
    .await?;
    Ok(())
}

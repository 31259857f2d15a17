use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub merchant_id: String,
    pub product_id: String,
    pub amount: String,
    pub currency: String,
    pub status: String,
    pub wallet: Option<String>,
    pub tx_signature: Option<String>,
    pub buyer_email: Option<String>,
    pub buyer_telegram_user_id: Option<i64>,
    pub buyer_discord_user_id: Option<String>,
    pub buyer_discord_access_token: Option<String>,
    pub buyer_handle: Option<String>,
    pub metadata: Option<String>,
    pub membership_id: Option<String>,
    pub receipt_id: Option<String>,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
}

/// A payment with the delivery status of its membership (the payment mirrors it).
#[derive(Debug, Clone, FromRow)]
pub struct PaymentWithDelivery {
    #[sqlx(flatten)]
    pub payment: PaymentRow,
    pub delivery_status: Option<String>,
}

const COLUMNS: &str = "p.id, p.merchant_id, p.product_id, p.amount, p.currency, p.status, p.wallet, \
    p.tx_signature, p.buyer_email, p.buyer_telegram_user_id, p.buyer_discord_user_id, \
    p.buyer_discord_access_token, p.buyer_handle, p.metadata, p.membership_id, p.receipt_id, \
    p.created_at, p.confirmed_at, m.delivery_status";

pub async fn insert(conn: &mut AnyConnection, p: &PaymentRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments (id, merchant_id, product_id, amount, currency, status, wallet, \
         tx_signature, buyer_email, buyer_telegram_user_id, buyer_discord_user_id, \
         buyer_discord_access_token, buyer_handle, metadata, membership_id, receipt_id, created_at, \
         confirmed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(&p.id)
    .bind(&p.merchant_id)
    .bind(&p.product_id)
    .bind(&p.amount)
    .bind(&p.currency)
    .bind(&p.status)
    .bind(&p.wallet)
    .bind(&p.tx_signature)
    .bind(&p.buyer_email)
    .bind(p.buyer_telegram_user_id)
    .bind(&p.buyer_discord_user_id)
    .bind(&p.buyer_discord_access_token)
    .bind(&p.buyer_handle)
    .bind(&p.metadata)
    .bind(&p.membership_id)
    .bind(&p.receipt_id)
    .bind(p.created_at)
    .bind(p.confirmed_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// `merchant_id` None is the platform's view (admin token): any merchant's payment.
pub async fn get(
    conn: &mut AnyConnection,
    merchant_id: Option<&str>,
    id: &str,
) -> Result<Option<PaymentWithDelivery>, sqlx::Error> {
    let base = format!("SELECT {COLUMNS} FROM payments p LEFT JOIN memberships m ON m.id = p.membership_id WHERE p.id = $1");
    match merchant_id {
        Some(merchant_id) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{base} AND p.merchant_id = $2")))
                .bind(id)
                .bind(merchant_id)
                .fetch_optional(conn)
                .await
        }
        None => sqlx::query_as(sqlx::AssertSqlSafe(base)).bind(id).fetch_optional(conn).await,
    }
}

/// Moves a pending payment to confirmed; false if it was not pending (someone else won).
pub async fn mark_confirmed(
    conn: &mut AnyConnection,
    id: &str,
    tx_signature: &str,
    membership_id: &str,
    receipt_id: &str,
    confirmed_at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payments SET status = 'confirmed', tx_signature = $1, membership_id = $2, \
         receipt_id = $3, confirmed_at = $4 WHERE id = $5 AND status = 'pending'",
    )
    .bind(tx_signature)
    .bind(membership_id)
    .bind(receipt_id)
    .bind(confirmed_at)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct MembershipRow {
    pub id: String,
    pub merchant_id: String,
    pub product_id: String,
    pub platform: String,
    pub buyer_key: String,
    pub status: String,
    pub wallet: Option<String>,
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
    pub discord_user_id: Option<String>,
    pub discord_access_token: Option<String>,
    pub handle: Option<String>,
    pub label: Option<String>,
    pub current_period_end: Option<i64>,
    pub last_payment_id: String,
    pub notes: Option<String>,
    pub delivery_status: String,
    pub delivery_attempts: i64,
    pub last_attempt_at: Option<i64>,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    pub last_error_retryable: Option<i64>,
    pub next_retry_at: Option<i64>,
    pub invite_url: Option<String>,
    pub fallback_used: i64,
    pub delivered_at: Option<i64>,
    pub support_ticket_id: Option<String>,
    pub cancel_at_period_end: i64,
    pub collection_state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub attempt_lock_job: Option<String>,
    pub attempt_lock_until: Option<i64>,
}

const COLUMNS: &str = "id, merchant_id, product_id, platform, buyer_key, status, wallet, email, \
    telegram_user_id, discord_user_id, discord_access_token, handle, label, current_period_end, \
    last_payment_id, notes, delivery_status, delivery_attempts, last_attempt_at, last_error_code, \
    last_error_message, last_error_retryable, next_retry_at, invite_url, fallback_used, \
    delivered_at, support_ticket_id, cancel_at_period_end, collection_state, created_at, updated_at, \
    attempt_lock_job, attempt_lock_until";

/// Inserts the membership unless one exists for (merchant, product, buyer); true if inserted.
pub async fn insert_if_absent(conn: &mut AnyConnection, m: &MembershipRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO memberships (id, merchant_id, product_id, platform, buyer_key, status, wallet, \
         email, telegram_user_id, discord_user_id, discord_access_token, handle, label, \
         current_period_end, last_payment_id, delivery_status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         ON CONFLICT (merchant_id, product_id, buyer_key) DO NOTHING",
    )
    .bind(&m.id)
    .bind(&m.merchant_id)
    .bind(&m.product_id)
    .bind(&m.platform)
    .bind(&m.buyer_key)
    .bind(&m.status)
    .bind(&m.wallet)
    .bind(&m.email)
    .bind(m.telegram_user_id)
    .bind(&m.discord_user_id)
    .bind(&m.discord_access_token)
    .bind(&m.handle)
    .bind(&m.label)
    .bind(m.current_period_end)
    .bind(&m.last_payment_id)
    .bind(&m.delivery_status)
    .bind(m.created_at)
    .bind(m.updated_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(
    conn: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(id)
    .bind(merchant_id)
    .fetch_optional(conn)
    .await
}

/// For workers, which act on ids from job payloads whatever the merchant.
pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM memberships WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn get_by_buyer(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: &str,
    buyer_key: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE merchant_id = $1 AND product_id = $2 AND buyer_key = $3"
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(buyer_key)
    .fetch_optional(conn)
    .await
}

/// Records a paid period: access is active until `period_end`, a fresh delivery is pending,
/// and buyer details given with this payment replace older ones.
pub async fn update_for_payment(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET status = $1, current_period_end = $2, last_payment_id = $3, \
         delivery_status = $4, next_retry_at = NULL, wallet = $5, email = $6, telegram_user_id = $7, \
         discord_user_id = $8, discord_access_token = $9, handle = $10, updated_at = $11 WHERE id = $12",
    )
    .bind(&m.status)
    .bind(m.current_period_end)
    .bind(&m.last_payment_id)
    .bind(&m.delivery_status)
    .bind(&m.wallet)
    .bind(&m.email)
    .bind(m.telegram_user_id)
    .bind(&m.discord_user_id)
    .bind(&m.discord_access_token)
    .bind(&m.handle)
    .bind(m.updated_at)
    .bind(&m.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the membership's attempt lock for a job: no two attempts for one membership run at
/// once. False while another job's lock is live.
pub async fn lock_for_attempt(conn: &mut AnyConnection, id: &str, job_id: &str, now: i64, until: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE memberships SET attempt_lock_job = $1, attempt_lock_until = $2 WHERE id = $3 \
         AND (attempt_lock_job IS NULL OR attempt_lock_until < $4 OR attempt_lock_job = $1)",
    )
    .bind(job_id)
    .bind(until)
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn unlock(conn: &mut AnyConnection, id: &str, job_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET attempt_lock_job = NULL, attempt_lock_until = NULL WHERE id = $1 AND attempt_lock_job = $2")
        .bind(id)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an attempt for the membership is running right now.
pub async fn attempt_in_flight(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE id = $1 AND attempt_lock_job IS NOT NULL AND attempt_lock_until >= $2",
    )
    .bind(id)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// Writes the delivery fields after an attempt and releases the attempt lock.
pub async fn update_delivery(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET delivery_status = $1, delivery_attempts = $2, last_attempt_at = $3, \
         last_error_code = $4, last_error_message = $5, last_error_retryable = $6, next_retry_at = $7, \
         invite_url = $8, fallback_used = $9, delivered_at = $10, support_ticket_id = $11, updated_at = $12, \
         attempt_lock_job = NULL, attempt_lock_until = NULL WHERE id = $13",
    )
    .bind(&m.delivery_status)
    .bind(m.delivery_attempts)
    .bind(m.last_attempt_at)
    .bind(&m.last_error_code)
    .bind(&m.last_error_message)
    .bind(m.last_error_retryable)
    .bind(m.next_retry_at)
    .bind(&m.invite_url)
    .bind(m.fallback_used)
    .bind(m.delivered_at)
    .bind(&m.support_ticket_id)
    .bind(m.updated_at)
    .bind(&m.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Memberships whose delivery is owed (pending or failed) but that no waiting or running job
/// holds: after a lost queue, a crash between steps, or a deploy. The sweeper re-enqueues them.
pub async fn owed_without_job(conn: &mut AnyConnection, limit: i64) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships m WHERE m.delivery_status IN ('pending', 'failed') \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.membership_id = m.id AND j.queue = 'delivery' \
           AND j.status IN ('queued', 'enqueued', 'running')) \
         ORDER BY m.updated_at LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(conn)
    .await
}

//! Renewal reminders: one row per (membership, period end, offset), written with the job that
//! sends it and claimed (`sending`) before the message goes out, so each reminder of a paid
//! period is sent at most once however often its job runs.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct ReminderRow {
    pub membership_id: String,
    pub period_end: i64,
    pub offset_ms: i64,
    pub merchant_id: String,
    /// `queued`, `sending`, `sent`, `failed` or `skipped`.
    pub status: String,
    /// `telegram`, `email` or `none`.
    pub channel: String,
    pub error_code: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Sends started (a retry after a transient failure is another).
    pub attempts: i64,
    /// While `sending`: until when the claiming run may still be talking to the provider.
    pub sending_until: Option<i64>,
}

const COLUMNS: &str = "membership_id, period_end, offset_ms, merchant_id, status, channel, error_code, created_at, \
    finished_at, attempts, sending_until";

/// The reminder `key` = (membership, period end, offset).
pub async fn get(conn: &mut AnyConnection, membership_id: &str, period_end: i64, offset_ms: i64) -> Result<Option<ReminderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM renewal_reminders WHERE membership_id = $1 AND period_end = $2 AND offset_ms = $3"
    )))
    .bind(membership_id)
    .bind(period_end)
    .bind(offset_ms)
    .fetch_optional(conn)
    .await
}

/// `queued` → `sending` (attempts + 1) until `until`; false when it was not `queued`.
pub async fn start_sending(conn: &mut AnyConnection, r: &ReminderRow, until: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE renewal_reminders SET status = 'sending', attempts = attempts + 1, sending_until = $1 \
         WHERE membership_id = $2 AND period_end = $3 AND offset_ms = $4 AND status = 'queued'",
    )
    .bind(until)
    .bind(&r.membership_id)
    .bind(r.period_end)
    .bind(r.offset_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims the reminder; false when a row for it already exists (sent, being sent, or skipped).
pub async fn claim(conn: &mut AnyConnection, r: &ReminderRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO renewal_reminders (membership_id, period_end, offset_ms, merchant_id, status, channel, \
         error_code, created_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (membership_id, period_end, offset_ms) DO NOTHING",
    )
    .bind(&r.membership_id)
    .bind(r.period_end)
    .bind(r.offset_ms)
    .bind(&r.merchant_id)
    .bind(&r.status)
    .bind(&r.channel)
    .bind(&r.error_code)
    .bind(r.created_at)
    .bind(r.finished_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records how a claimed reminder went (`queued` again when it will be retried).
pub async fn finish(conn: &mut AnyConnection, r: &ReminderRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE renewal_reminders SET status = $1, channel = $2, error_code = $3, finished_at = $4, sending_until = NULL \
         WHERE membership_id = $5 AND period_end = $6 AND offset_ms = $7",
    )
    .bind(&r.status)
    .bind(&r.channel)
    .bind(&r.error_code)
    .bind(r.finished_at)
    .bind(&r.membership_id)
    .bind(r.period_end)
    .bind(r.offset_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Offsets already recorded for one paid period of a membership.
pub async fn recorded_offsets(conn: &mut AnyConnection, membership_id: &str, period_end: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT offset_ms FROM renewal_reminders WHERE membership_id = $1 AND period_end = $2")
        .bind(membership_id)
        .bind(period_end)
        .fetch_all(conn)
        .await
}

pub async fn list_for_membership(conn: &mut AnyConnection, membership_id: &str) -> Result<Vec<ReminderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM renewal_reminders WHERE membership_id = $1 ORDER BY period_end, offset_ms DESC"
    )))
    .bind(membership_id)
    .fetch_all(conn)
    .await
}

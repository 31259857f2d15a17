//! Delivery attempts: a row written before the provider call, finished after it.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub merchant_id: String,
    pub membership_id: String,
    pub payment_id: Option<String>,
    pub job_id: Option<String>,
    pub number: i64,
    pub trigger_kind: String,
    pub provider: String,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_retryable: Option<i64>,
    pub request_summary: Option<String>,
    pub response_summary: Option<String>,
    pub worker_id: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The invite link this attempt created (Telegram), recorded before it is sent anywhere.
    pub invite_link: Option<String>,
    /// Unix milliseconds; when that link stopped admitting anyone (revoked by a later attempt
    /// or at the end of access).
    pub invite_link_revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, merchant_id, membership_id, payment_id, job_id, number, trigger_kind, provider, \
    outcome, error_code, error_message, error_retryable, request_summary, response_summary, worker_id, \
    started_at, finished_at, duration_ms, invite_link, invite_link_revoked_at";

pub async fn insert(conn: &mut AnyConnection, a: &AttemptRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO delivery_attempts (id, merchant_id, membership_id, payment_id, job_id, number, trigger_kind, \
         provider, request_summary, worker_id, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&a.id)
    .bind(&a.merchant_id)
    .bind(&a.membership_id)
    .bind(&a.payment_id)
    .bind(&a.job_id)
    .bind(a.number)
    .bind(&a.trigger_kind)
    .bind(&a.provider)
    .bind(&a.request_summary)
    .bind(&a.worker_id)
    .bind(a.started_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts an attempt whole (one that called no provider, so nothing had to be recorded
/// first), numbered after the membership's last attempt; returns the number it got. Callers
/// hold the membership's attempt lock, so numbers do not collide.
pub async fn insert_finished(conn: &mut AnyConnection, a: &AttemptRow) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO delivery_attempts (id, merchant_id, membership_id, payment_id, job_id, number, trigger_kind, \
         provider, outcome, error_code, error_message, error_retryable, request_summary, response_summary, worker_id, \
         started_at, finished_at, duration_ms) \
         SELECT $1, $2, $3, $4, $5, COALESCE(MAX(number), 0) + 1, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17 \
         FROM delivery_attempts WHERE membership_id = $3 RETURNING number",
    )
    .bind(&a.id)
    .bind(&a.merchant_id)
    .bind(&a.membership_id)
    .bind(&a.payment_id)
    .bind(&a.job_id)
    .bind(&a.trigger_kind)
    .bind(&a.provider)
    .bind(&a.outcome)
    .bind(&a.error_code)
    .bind(&a.error_message)
    .bind(a.error_retryable)
    .bind(&a.request_summary)
    .bind(&a.response_summary)
    .bind(&a.worker_id)
    .bind(a.started_at)
    .bind(a.finished_at)
    .bind(a.duration_ms)
    .fetch_one(conn)
    .await
}

pub async fn finish(conn: &mut AnyConnection, a: &AttemptRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery_attempts SET outcome = $1, error_code = $2, error_message = $3, error_retryable = $4, \
         response_summary = $5, provider = $6, finished_at = $7, duration_ms = $8 WHERE id = $9",
    )
    .bind(&a.outcome)
    .bind(&a.error_code)
    .bind(&a.error_message)
    .bind(a.error_retryable)
    .bind(&a.response_summary)
    .bind(&a.provider)
    .bind(a.finished_at)
    .bind(a.duration_ms)
    .bind(&a.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the invite link an attempt just created, in a statement of its own (committed before
/// the link is sent, so whatever happens next, a later attempt knows to revoke it).
pub async fn set_invite_link(conn: &mut AnyConnection, attempt_id: &str, link: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE delivery_attempts SET invite_link = $1 WHERE id = $2").bind(link).bind(attempt_id).execute(conn).await?;
    Ok(())
}

/// The membership's invite links that may still admit someone: `(attempt id, link)`, oldest first.
pub async fn live_invite_links(conn: &mut AnyConnection, membership_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, invite_link FROM delivery_attempts WHERE membership_id = $1 AND invite_link IS NOT NULL \
         AND invite_link_revoked_at IS NULL ORDER BY number",
    )
    .bind(membership_id)
    .fetch_all(conn)
    .await
}

pub async fn mark_invite_link_revoked(conn: &mut AnyConnection, attempt_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE delivery_attempts SET invite_link_revoked_at = $1 WHERE id = $2 AND invite_link_revoked_at IS NULL")
        .bind(now)
        .bind(attempt_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn list_for_membership(conn: &mut AnyConnection, membership_id: &str) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM delivery_attempts WHERE membership_id = $1 ORDER BY number, started_at"
    )))
    .bind(membership_id)
    .fetch_all(conn)
    .await
}

pub async fn max_number(conn: &mut AnyConnection, membership_id: &str) -> Result<i64, sqlx::Error> {
    let n: Option<i64> = sqlx::query_scalar("SELECT MAX(number) FROM delivery_attempts WHERE membership_id = $1")
        .bind(membership_id)
        .fetch_one(conn)
        .await?;
    Ok(n.unwrap_or(0))
}

/// The job's attempts left unfinished by runs that failed inside the worker: marked failed
/// (`internal_error`, not retryable) once the job's internal-error budget is spent.
pub async fn fail_unfinished_for_job(conn: &mut AnyConnection, job_id: &str, message: &str, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE delivery_attempts SET outcome = 'failed', error_code = 'internal_error', error_message = $1, \
         error_retryable = 0, finished_at = $2 WHERE job_id = $3 AND outcome IS NULL",
    )
    .bind(message)
    .bind(now)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Attempts left unfinished by a worker that died mid-call: the outcome is unknown.
/// Marked failed (`worker_lost`, retryable) for all these jobs in one statement.
pub async fn abandon_for_jobs(conn: &mut AnyConnection, job_ids: &[String], now: i64) -> Result<u64, sqlx::Error> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "UPDATE delivery_attempts SET outcome = 'failed', error_code = 'worker_lost', \
         error_message = 'the worker stopped during this attempt; the outcome at the provider is unknown', \
         error_retryable = 1, finished_at = $1 WHERE outcome IS NULL AND {}",
        super::in_list(conn, "job_id", 2)
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(super::json_list(job_ids)).execute(conn).await?.rows_affected())
}


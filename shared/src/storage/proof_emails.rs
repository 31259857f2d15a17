//! `proof_emails`: one row per send-proof request, and the idempotency record of its email.
//!
//! `queued` → `sending` (claimed by one job run, `attempts` + 1, `sending_until` set) → `sent`,
//! back to `queued` for a retry, or `failed`. Every transition out of `sending` names the claim
//! (`attempts`) it finishes, so a stale run cannot overwrite a newer outcome.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct ProofEmailRow {
    pub id: String,
    pub merchant_id: String,
    pub receipt_id: String,
    pub address: String,
    pub status: String,
    pub attempts: i64,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub job_id: Option<String>,
    pub sending_until: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub sent_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, merchant_id, receipt_id, address, status, attempts, last_error_code, \
    last_error, job_id, sending_until, next_attempt_at, sent_at, created_at, updated_at";

pub async fn insert(conn: &mut AnyConnection, p: &ProofEmailRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO proof_emails (id, merchant_id, receipt_id, address, status, attempts, job_id, \
         next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9)",
    )
    .bind(&p.id)
    .bind(&p.merchant_id)
    .bind(&p.receipt_id)
    .bind(&p.address)
    .bind(&p.status)
    .bind(&p.job_id)
    .bind(p.next_attempt_at)
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<ProofEmailRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM proof_emails WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A receipt's requests, oldest first.
pub async fn list_for_receipt(conn: &mut AnyConnection, receipt_id: &str) -> Result<Vec<ProofEmailRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM proof_emails WHERE receipt_id = $1 ORDER BY created_at, id"
    )))
    .bind(receipt_id)
    .fetch_all(conn)
    .await
}

/// The idempotency claim: `queued` → `sending`, or a `sending` row whose claim expired before
/// `now` (only when the caller may safely send again). Returns the claimed row, or None when
/// another run holds it or it is finished.
pub async fn claim(
    conn: &mut AnyConnection,
    id: &str,
    job_id: &str,
    now: i64,
    sending_until: i64,
    reclaim_expired: bool,
) -> Result<Option<ProofEmailRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE proof_emails SET status = 'sending', attempts = attempts + 1, job_id = $1, \
         sending_until = $2, next_attempt_at = NULL, updated_at = $3 \
         WHERE id = $4 AND (status = 'queued' OR ($5 = 1 AND status = 'sending' AND sending_until < $3)) \
         RETURNING {COLUMNS}"
    )))
    .bind(job_id)
    .bind(sending_until)
    .bind(now)
    .bind(id)
    .bind(i64::from(reclaim_expired))
    .fetch_optional(conn)
    .await
}

/// The outcome of claim number `attempt`: `sent`, `queued` (retry at `next_attempt_at`) or
/// `failed`. False when the claim is no longer current (nothing was changed).
pub async fn finish_attempt(
    conn: &mut AnyConnection,
    p: &ProofEmailRow,
    attempt: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE proof_emails SET status = $1, last_error_code = $2, last_error = $3, sending_until = NULL, \
         next_attempt_at = $4, sent_at = $5, updated_at = $6 \
         WHERE id = $7 AND status = 'sending' AND attempts = $8",
    )
    .bind(&p.status)
    .bind(&p.last_error_code)
    .bind(&p.last_error)
    .bind(p.next_attempt_at)
    .bind(p.sent_at)
    .bind(p.updated_at)
    .bind(&p.id)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

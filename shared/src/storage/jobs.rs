//! The transactional outbox and job registry. A job row is written in the same transaction as
//! the state change that causes it; the relay hands due rows to the queue transport; a worker
//! claims a row before running it, so a job delivered twice by the transport runs once.
//!
//! Status: `queued` (due at `run_at`, not in transport) → `enqueued` (handed to the transport)
//! → `running` (claimed, `locked_until` renewed while it runs) → `done` | `dead` | `discarded`,
//! or back to `queued` with a later `run_at` for a retry.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub payload: String,
    pub merchant_id: Option<String>,
    pub membership_id: Option<String>,
    pub status: String,
    pub run_at: i64,
    pub attempts: i64,
    pub failures: i64,
    pub last_error: Option<String>,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, queue, payload, merchant_id, membership_id, status, run_at, attempts, failures, \
    last_error, locked_by, locked_until, created_at, updated_at";

pub async fn insert(conn: &mut AnyConnection, j: &JobRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (id, queue, payload, merchant_id, membership_id, status, run_at, attempts, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
    )
    .bind(&j.id)
    .bind(&j.queue)
    .bind(&j.payload)
    .bind(&j.merchant_id)
    .bind(&j.membership_id)
    .bind(&j.status)
    .bind(j.run_at)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM jobs WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn list_for_membership(conn: &mut AnyConnection, membership_id: &str) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE membership_id = $1 ORDER BY created_at, id"
    )))
    .bind(membership_id)
    .fetch_all(conn)
    .await
}

/// Marks up to `limit` due jobs of a queue as handed to the transport and returns their ids.
pub async fn take_due(conn: &mut AnyConnection, queue: &str, now: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE jobs SET status = 'enqueued', updated_at = $1 \
         WHERE status = 'queued' AND queue = $2 AND id IN \
           (SELECT id FROM jobs WHERE status = 'queued' AND queue = $2 AND run_at <= $1 ORDER BY run_at, id LIMIT $3) \
         RETURNING id",
    )
    .bind(now)
    .bind(queue)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Jobs handed to the transport and not yet claimed: the size of the transport's window.
pub async fn count_enqueued(conn: &mut AnyConnection, queue: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'enqueued' AND queue = $1")
        .bind(queue)
        .fetch_one(conn)
        .await
}

/// Puts a job the transport could not take back into the outbox.
pub async fn return_to_outbox(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET status = 'queued', updated_at = $1 WHERE id = $2 AND status = 'enqueued'")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims a job for one run; None if it is finished, running elsewhere, or not yet due.
pub async fn claim(
    conn: &mut AnyConnection,
    id: &str,
    worker_id: &str,
    now: i64,
    lease_ms: i64,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, \
         updated_at = $3 WHERE id = $4 AND status IN ('queued', 'enqueued') AND run_at <= $3 \
         RETURNING {COLUMNS}"
    )))
    .bind(worker_id)
    .bind(now + lease_ms)
    .bind(now)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Extends the lease of a running job; false if the job is no longer ours.
pub async fn renew_lease(conn: &mut AnyConnection, id: &str, worker_id: &str, until: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE jobs SET locked_until = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running'")
        .bind(until)
        .bind(id)
        .bind(worker_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What happens to a claimed job after its run.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Done,
    /// Run again at this time; `failed` counts the run against the retry budget.
    RetryAt { at: i64, error: Option<String>, failed: bool },
    /// Out of retries or not retryable: kept for operators.
    Dead { error: String },
}

pub async fn finish(conn: &mut AnyConnection, id: &str, worker_id: &str, finish: &Finish, now: i64) -> Result<bool, sqlx::Error> {
    let (status, run_at, error, failed) = match finish {
        Finish::Done => ("done", None, None, false),
        Finish::RetryAt { at, error, failed } => ("queued", Some(*at), error.clone(), *failed),
        Finish::Dead { error } => ("dead", None, Some(error.clone()), true),
    };
    let done = sqlx::query(
        "UPDATE jobs SET status = $1, run_at = COALESCE($2, run_at), last_error = COALESCE($3, last_error), \
         failures = failures + $4, locked_by = NULL, locked_until = NULL, updated_at = $5 \
         WHERE id = $6 AND locked_by = $7 AND status = 'running'",
    )
    .bind(status)
    .bind(run_at)
    .bind(error)
    .bind(i64::from(failed))
    .bind(now)
    .bind(id)
    .bind(worker_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Running jobs whose worker stopped renewing the lease (killed, hung, partitioned).
pub async fn expired_leases(conn: &mut AnyConnection, now: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE status = 'running' AND locked_until < $1"
    )))
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Gives a job whose worker died back to the outbox; false if someone else already did.
pub async fn recover(conn: &mut AnyConnection, job: &JobRow, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = $1, last_error = 'worker_lost', locked_by = NULL, \
         locked_until = NULL, updated_at = $1 WHERE id = $2 AND status = 'running' AND locked_by = $3",
    )
    .bind(now)
    .bind(&job.id)
    .bind(&job.locked_by)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Jobs handed to the transport long ago and never claimed: the transport lost them
/// (Redis flushed or restarted without persistence). Back to the outbox.
pub async fn requeue_stale_enqueued(conn: &mut AnyConnection, older_than: i64, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE jobs SET status = 'queued', updated_at = $1 WHERE status = 'enqueued' AND updated_at < $2")
        .bind(now)
        .bind(older_than)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Gives back the jobs a stopping worker still holds.
pub async fn release_worker(conn: &mut AnyConnection, worker_id: &str, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, updated_at = $1 \
         WHERE locked_by = $2 AND status = 'running'",
    )
    .bind(now)
    .bind(worker_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Discards the waiting delivery jobs of a membership (a manual retry supersedes them).
pub async fn discard_waiting(conn: &mut AnyConnection, membership_id: &str, queue: &str, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'discarded', updated_at = $1 \
         WHERE membership_id = $2 AND queue = $3 AND status IN ('queued', 'enqueued')",
    )
    .bind(now)
    .bind(membership_id)
    .bind(queue)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Whether a job of this queue for the membership is waiting or running.
pub async fn has_live(conn: &mut AnyConnection, membership_id: &str, queue: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = $2 AND status IN ('queued', 'enqueued', 'running')",
    )
    .bind(membership_id)
    .bind(queue)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// Counts by status for one queue (dashboards, metrics, tests).
pub async fn counts(conn: &mut AnyConnection, queue: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, COUNT(*) FROM jobs WHERE queue = $1 GROUP BY status")
        .bind(queue)
        .fetch_all(conn)
        .await
}

/// Jobs of a queue with exactly this payload, by status: `(waiting, running)`.
pub async fn count_live_with_payload(conn: &mut AnyConnection, queue: &str, payload: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN status IN ('queued', 'enqueued') THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) \
         FROM jobs WHERE queue = $1 AND payload = $2 AND status IN ('queued', 'enqueued', 'running')",
    )
    .bind(queue)
    .bind(payload)
    .fetch_one(conn)
    .await
}

/// Discards the waiting jobs of a queue with exactly this payload (a manual retry supersedes them).
pub async fn discard_waiting_with_payload(conn: &mut AnyConnection, queue: &str, payload: &str, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'discarded', updated_at = $1 \
         WHERE queue = $2 AND payload = $3 AND status IN ('queued', 'enqueued')",
    )
    .bind(now)
    .bind(queue)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub async fn list_recent(conn: &mut AnyConnection, queue: &str, status: Option<&str>, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    match status {
        Some(status) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM jobs WHERE queue = $1 AND status = $2 ORDER BY updated_at DESC, id LIMIT $3"
            )))
            .bind(queue)
            .bind(status)
            .bind(limit)
            .fetch_all(conn)
            .await
        }
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM jobs WHERE queue = $1 ORDER BY updated_at DESC, id LIMIT $2"
            )))
            .bind(queue)
            .bind(limit)
            .fetch_all(conn)
            .await
        }
    }
}

/// An operator's "retry now"; false if the job is running or finished successfully.
pub async fn retry_now(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = $1, updated_at = $1 \
         WHERE id = $2 AND status IN ('queued', 'enqueued', 'dead', 'discarded')",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An operator's "discard"; false if the job is running or already finished.
pub async fn discard(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'discarded', updated_at = $1 WHERE id = $2 AND status IN ('queued', 'enqueued', 'dead')",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

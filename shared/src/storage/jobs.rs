//! The job table: the outbox and the queue in one. A job row is written in the same transaction
//! as the state change that causes it; workers claim due rows in batches (PostgreSQL
//! `FOR UPDATE SKIP LOCKED`, SQLite's single writer), hold them under a lease renewed per worker,
//! and a completer finishes them many per transaction. See `docs/JOBS.md`.

use sqlx::{AnyConnection, FromRow};

use super::{in_list, is_postgres, json_list, locked_subquery};

/// Where a job is in its life: `queued` (due at `run_at`) → `running` (claimed under a lease)
/// → `done` | `dead` | `discarded`, or back to `queued` with a later `run_at` for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    /// Out of retries or not retryable: kept for operators.
    Dead,
    /// Superseded (a manual retry) or dropped by an operator.
    Discarded,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [JobStatus::Queued, JobStatus::Running, JobStatus::Done, JobStatus::Dead, JobStatus::Discarded];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
            JobStatus::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for JobStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or_else(|| format!("unknown job status {s:?}"))
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    /// The job's payload as JSON text (ids and intent only).
    pub payload: String,
    pub merchant_id: Option<String>,
    pub membership_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// Unix milliseconds; not claimed before.
    pub run_at: i64,
    /// Times a worker claimed it.
    pub attempts: i64,
    /// Failed runs: the index into the retry schedule.
    pub failures: i64,
    /// Runs that failed inside the worker (not at the provider): counted against their own
    /// budget (`Finish::InternalError`).
    pub internal_errors: i64,
    pub last_error: Option<String>,
    /// The worker holding the lease: set exactly while `running`, so `locked_by = $worker`
    /// alone says "still ours" (and keeps the planner on the primary key rather than the
    /// `jobs_running` index, which holds an entry for every job that ran since the last vacuum).
    pub locked_by: Option<String>,
    /// Unix milliseconds; the lease ends here unless the worker renews it.
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, queue, payload, merchant_id, membership_id, status, run_at, attempts, failures, \
    internal_errors, last_error, locked_by, locked_until, created_at, updated_at";

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
    .bind(j.status.as_str())
    .bind(j.run_at)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The PostgreSQL channel on which a committed job wakes idle workers (payload: queue name).
pub const WAKE_CHANNEL: &str = "hilt_jobs";

/// On PostgreSQL, tells listening workers that `queue` has new work. `NOTIFY` is delivered at
/// commit (and not at all on rollback), so a worker never wakes before it can see the row.
/// False on SQLite, where the caller wakes workers of its own process instead.
pub async fn notify(conn: &mut AnyConnection, queue: &str) -> Result<bool, sqlx::Error> {
    if !is_postgres(conn) {
        return Ok(false);
    }
    sqlx::query("SELECT pg_notify($1, $2)").bind(WAKE_CHANNEL).bind(queue).execute(conn).await?;
    Ok(true)
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

/// Claims up to `limit` due jobs of a queue for one worker in one statement, oldest first:
/// `queued` → `running` under a lease until `now + lease_ms`; none while an operator has the
/// queue paused. Concurrent claimers on PostgreSQL skip each other's rows (`FOR UPDATE SKIP
/// LOCKED`); SQLite has one writer. Served by the partial index `jobs_queued (queue, run_at)`.
pub async fn claim_batch(
    conn: &mut AnyConnection,
    queue: &str,
    worker_id: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let due = "SELECT id FROM jobs WHERE queue = $4 AND status = 'queued' AND run_at <= $3 \
               AND NOT EXISTS (SELECT 1 FROM queue_controls WHERE queue = $4 AND paused = 1) ORDER BY run_at LIMIT $5";
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, updated_at = $3 \
         WHERE {} RETURNING {COLUMNS}",
        locked_subquery(conn, due)
    )))
    .bind(worker_id)
    .bind(now + lease_ms)
    .bind(now)
    .bind(queue)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Claims one job by id, if it is queued and due (an operator's or a test's "run it now").
pub async fn claim_one(conn: &mut AnyConnection, id: &str, worker_id: &str, now: i64, lease_ms: i64) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, updated_at = $3 \
         WHERE id = $4 AND status = 'queued' AND run_at <= $3 RETURNING {COLUMNS}"
    )))
    .bind(worker_id)
    .bind(now + lease_ms)
    .bind(now)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Extends to `until` the leases of the jobs `ids` this worker still holds that end before
/// `due` (unix ms; a lease taken moments ago is left alone, which spares a row write per job in
/// a fast-draining backlog), and the attempt locks of their memberships with them (so a lock
/// never ends before its lease): two statements per batch of ids. On PostgreSQL rows a
/// completer is finishing right now are skipped, not waited for (they are about to be released;
/// waiting could deadlock with the completer).
pub async fn renew_leases(conn: &mut AnyConnection, worker_id: &str, ids: &[&str], until: i64, due: i64) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = json_list(ids);
    let held = format!("SELECT id FROM jobs WHERE {} AND locked_by = $2 AND locked_until < $4", in_list(conn, "id", 3));
    let sql = format!("UPDATE jobs SET locked_until = $1 WHERE {}", locked_subquery(conn, &held));
    let renewed = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(until).bind(worker_id).bind(&ids).bind(due).execute(&mut *conn).await?.rows_affected();
    let locks = format!("SELECT id FROM memberships WHERE {} AND attempt_lock_until < $3", in_list(conn, "attempt_lock_job", 2));
    let sql = format!("UPDATE memberships SET attempt_lock_until = $1 WHERE {}", locked_subquery(conn, &locks));
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(until).bind(&ids).bind(due).execute(conn).await?;
    Ok(renewed)
}

/// What happens to a claimed job after its run.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Done,
    /// Run again at this time (unix milliseconds); `failed` counts the run against the retry budget.
    RetryAt { at: i64, error: Option<String>, failed: bool },
    /// Our own failure (database, bug, panic): run again at this time (unix milliseconds),
    /// counted in `internal_errors`, not against the retry budget.
    InternalError { at: i64, error: String },
    /// Out of retries or not retryable: kept for operators.
    Dead { error: String },
}

/// Finishes one job this worker holds; false if the lease was lost (the job is no longer ours).
pub async fn finish(conn: &mut AnyConnection, id: &str, worker_id: &str, finish: &Finish, now: i64) -> Result<bool, sqlx::Error> {
    let (status, run_at, error, failed, internal) = match finish {
        Finish::Done => (JobStatus::Done, None, None, false, false),
        Finish::RetryAt { at, error, failed } => (JobStatus::Queued, Some(*at), error.clone(), *failed, false),
        Finish::InternalError { at, error } => (JobStatus::Queued, Some(*at), Some(error.clone()), false, true),
        Finish::Dead { error } => (JobStatus::Dead, None, Some(error.clone()), true, false),
    };
    let done = sqlx::query(
        "UPDATE jobs SET status = $1, run_at = COALESCE($2, run_at), last_error = COALESCE($3, last_error), \
         failures = failures + $4, internal_errors = internal_errors + $8, locked_by = NULL, locked_until = NULL, \
         updated_at = $5 WHERE id = $6 AND locked_by = $7",
    )
    .bind(status.as_str())
    .bind(run_at)
    .bind(error)
    .bind(i64::from(failed))
    .bind(now)
    .bind(id)
    .bind(worker_id)
    .bind(i64::from(internal))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks many jobs this worker holds `done` in one statement; returns the ids that were still
/// ours (a job whose lease was lost belongs to whoever recovered it).
pub async fn finish_done(conn: &mut AnyConnection, ids: &[&str], worker_id: &str, now: i64) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, updated_at = $1 \
         WHERE {} AND locked_by = $2 RETURNING id",
        in_list(conn, "id", 3)
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now).bind(worker_id).bind(json_list(ids)).fetch_all(conn).await
}

/// Gives up to `limit` jobs whose worker stopped renewing the lease (killed, hung,
/// partitioned) back to the queue, due now, in one statement; returns `(id, queue)` of each.
pub async fn recover_expired(conn: &mut AnyConnection, now: i64, limit: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
    let expired = "SELECT id FROM jobs WHERE status = 'running' AND locked_until < $1 LIMIT $2";
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'queued', run_at = $1, last_error = 'worker_lost', locked_by = NULL, locked_until = NULL, \
         updated_at = $1 WHERE {} RETURNING id, queue",
        locked_subquery(conn, expired)
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Gives back the jobs a stopping worker still holds, due now; returns `(id, queue)` of each.
pub async fn release_worker(conn: &mut AnyConnection, worker_id: &str, now: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE jobs SET status = 'queued', run_at = $1, locked_by = NULL, locked_until = NULL, updated_at = $1 \
         WHERE locked_by = $2 RETURNING id, queue",
    )
    .bind(now)
    .bind(worker_id)
    .fetch_all(conn)
    .await
}

/// Discards the waiting delivery jobs of a membership (a manual retry supersedes them).
pub async fn discard_waiting(conn: &mut AnyConnection, membership_id: &str, queue: &str, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'discarded', updated_at = $1 \
         WHERE membership_id = $2 AND queue = $3 AND status = 'queued'",
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
        "SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = $2 AND status IN ('queued', 'running')",
    )
    .bind(membership_id)
    .bind(queue)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// Jobs of a queue with exactly this payload, by status: `(waiting, running)`.
pub async fn count_live_with_payload(conn: &mut AnyConnection, queue: &str, payload: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) \
         FROM jobs WHERE queue = $1 AND payload = $2 AND (status = 'queued' OR status = 'running')",
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
         WHERE queue = $2 AND payload = $3 AND status = 'queued'",
    )
    .bind(now)
    .bind(queue)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Jobs of a queue, newest first (by `updated_at`), at most `limit`; one status or all. Each
/// status is read through its own partial index, so the engine's hot path keeps no index
/// ordered for dashboards.
pub async fn list_recent(conn: &mut AnyConnection, queue: &str, status: Option<JobStatus>, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    let statuses = match status {
        Some(status) => vec![status],
        None => JobStatus::ALL.to_vec(),
    };
    let mut rows = Vec::new();
    for status in statuses {
        let newest: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE queue = $1 AND status = $2 ORDER BY updated_at DESC, id LIMIT $3"
        )))
        .bind(queue)
        .bind(status.as_str())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        rows.extend(newest);
    }
    rows.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.id.cmp(&b.id)));
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(rows)
}

/// An operator's "retry now"; false if the job is running or finished successfully.
pub async fn retry_now(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', run_at = $1, updated_at = $1 \
         WHERE id = $2 AND status IN ('queued', 'dead', 'discarded')",
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
        "UPDATE jobs SET status = 'discarded', updated_at = $1 WHERE id = $2 AND status IN ('queued', 'dead')",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

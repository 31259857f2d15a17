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

/// What operators see a job as: the one vocabulary of the dashboard, `/v1/ops` (filters
/// included), `/metrics` and `docs/JOBS.md`. A `queued` row is `pending` (due, waiting for a
/// worker), `scheduled` (first run in the future) or `retrying` (failed at least once, waiting
/// for its next run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Scheduled,
    Running,
    Retrying,
    Done,
    Dead,
    Discarded,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retrying,
        JobState::Done,
        JobState::Dead,
        JobState::Discarded,
    ];
    /// What an operator's retry can take: anything not running and not done.
    pub const RETRYABLE: [JobState; 5] = [JobState::Pending, JobState::Scheduled, JobState::Retrying, JobState::Dead, JobState::Discarded];
    /// What an operator's discard can take: anything waiting, and dead jobs.
    pub const DISCARDABLE: [JobState; 4] = [JobState::Pending, JobState::Scheduled, JobState::Retrying, JobState::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The names, for error messages: "pending, scheduled, …".
    pub fn names() -> String {
        Self::ALL.map(JobState::as_str).join(", ")
    }

    /// The state of a row at `now` (unix milliseconds).
    pub fn of(job: &JobRow, now: i64) -> Self {
        match job.status {
            JobStatus::Queued if job.failures > 0 => JobState::Retrying,
            JobStatus::Queued if job.run_at > now => JobState::Scheduled,
            JobStatus::Queued => JobState::Pending,
            JobStatus::Running => JobState::Running,
            JobStatus::Done => JobState::Done,
            JobStatus::Dead => JobState::Dead,
            JobStatus::Discarded => JobState::Discarded,
        }
    }

    /// The SQL condition for rows in this state; `now` names the parameter holding the time.
    /// Each reads through its status's partial index.
    fn condition(self, now: &str) -> String {
        match self {
            JobState::Pending => format!("status = 'queued' AND failures = 0 AND run_at <= {now}"),
            JobState::Scheduled => format!("status = 'queued' AND failures = 0 AND run_at > {now}"),
            JobState::Retrying => "status = 'queued' AND failures > 0".to_owned(),
            JobState::Running => "status = 'running'".to_owned(),
            JobState::Done => "status = 'done'".to_owned(),
            JobState::Dead => "status = 'dead'".to_owned(),
            JobState::Discarded => "status = 'discarded'".to_owned(),
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which jobs of a queue an operator looks at, or acts on in bulk. Every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Empty: every state.
    pub states: Vec<JobState>,
    pub merchant_id: Option<String>,
    /// The membership's platform: `telegram` or `discord`.
    pub provider: Option<String>,
    /// The last error starts with this (error codes come first: `user_blocked_bot`, `http_502: …`).
    pub error_code: Option<String>,
    /// Last changed at or after, unix milliseconds.
    pub since: Option<i64>,
    /// Last changed before, unix milliseconds.
    pub until: Option<i64>,
}

enum Bound {
    Text(String),
    Int(i64),
}

/// A statement over `jobs` with its bound values, built from a [`JobFilter`].
struct Filtered {
    conditions: Vec<String>,
    values: Vec<Bound>,
    now: i64,
}

impl Filtered {
    fn new(queue: &str, filter: &JobFilter, now: i64) -> Self {
        let mut f = Filtered { conditions: Vec::new(), values: Vec::new(), now };
        let queue = f.bind(Bound::Text(queue.to_owned()));
        f.conditions.push(format!("queue = {queue}"));
        if let Some(m) = &filter.merchant_id {
            let p = f.bind(Bound::Text(m.clone()));
            f.conditions.push(format!("merchant_id = {p}"));
        }
        if let Some(provider) = &filter.provider {
            let p = f.bind(Bound::Text(provider.clone()));
            f.conditions.push(format!("membership_id IN (SELECT id FROM memberships WHERE platform = {p})"));
        }
        if let Some(code) = &filter.error_code {
            let escaped = code.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            let p = f.bind(Bound::Text(format!("{escaped}%")));
            f.conditions.push(format!("last_error LIKE {p} ESCAPE '\\'"));
        }
        if let Some(since) = filter.since {
            let p = f.bind(Bound::Int(since));
            f.conditions.push(format!("updated_at >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = f.bind(Bound::Int(until));
            f.conditions.push(format!("updated_at < {p}"));
        }
        f
    }

    fn bind(&mut self, value: Bound) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    /// The conditions, with rows in one of `states`; binds `now` when a state needs it.
    fn in_states(&mut self, states: &[JobState]) -> String {
        let now = if states.iter().any(|s| matches!(s, JobState::Pending | JobState::Scheduled)) {
            self.bind(Bound::Int(self.now))
        } else {
            String::new()
        };
        let any: Vec<String> = states.iter().map(|s| format!("({})", s.condition(&now))).collect();
        format!("{} AND ({})", self.conditions.join(" AND "), any.join(" OR "))
    }
}

macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut q = $query;
        for value in $values {
            q = match value {
                Bound::Text(t) => q.bind(t.clone()),
                Bound::Int(n) => q.bind(*n),
            };
        }
        q
    }};
}

/// Jobs of a queue matching `filter`, newest first (by `updated_at`): `limit` from `offset`.
/// Each state is read through its own partial index, so the engine's hot path keeps no index
/// ordered for dashboards.
pub async fn list_filtered(
    conn: &mut AnyConnection,
    queue: &str,
    filter: &JobFilter,
    now: i64,
    limit: i64,
    offset: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let states = if filter.states.is_empty() { JobState::ALL.to_vec() } else { filter.states.clone() };
    let mut rows = Vec::new();
    for state in states {
        let mut f = Filtered::new(queue, filter, now);
        let conditions = f.in_states(&[state]);
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE {conditions} ORDER BY updated_at DESC, id LIMIT ${}", f.values.len() + 1);
        let newest: Vec<JobRow> = bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &f.values).bind(offset.saturating_add(limit)).fetch_all(&mut *conn).await?;
        rows.extend(newest);
    }
    rows.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.id.cmp(&b.id)));
    Ok(rows.into_iter().skip(usize::try_from(offset).unwrap_or(0)).take(usize::try_from(limit).unwrap_or(0)).collect())
}

/// How many jobs of a queue match `filter` (its `states` ignored), in each state.
pub async fn count_by_state(conn: &mut AnyConnection, queue: &str, filter: &JobFilter, now: i64) -> Result<Vec<(JobState, i64)>, sqlx::Error> {
    let mut counts = Vec::new();
    for state in JobState::ALL {
        let mut f = Filtered::new(queue, filter, now);
        let sql = format!("SELECT COUNT(*) FROM jobs WHERE {}", f.in_states(&[state]));
        counts.push((state, bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), &f.values).fetch_one(&mut *conn).await?));
    }
    Ok(counts)
}

/// An operator's bulk action on the jobs of a queue matching `filter`, limited to the states
/// the action can take: retry (queued, due now) or discard. Returns how many jobs it changed.
pub async fn act_on_filtered(
    conn: &mut AnyConnection,
    queue: &str,
    filter: &JobFilter,
    retry: bool,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let allowed: &[JobState] = if retry { &JobState::RETRYABLE } else { &JobState::DISCARDABLE };
    let states: Vec<JobState> = allowed.iter().copied().filter(|s| filter.states.is_empty() || filter.states.contains(s)).collect();
    if states.is_empty() {
        return Ok(0);
    }
    let mut f = Filtered::new(queue, filter, now);
    let conditions = f.in_states(&states);
    let at = f.bind(Bound::Int(now));
    let set = if retry { format!("status = 'queued', run_at = {at}, updated_at = {at}") } else { format!("status = 'discarded', updated_at = {at}") };
    let sql = format!("UPDATE jobs SET {set} WHERE {conditions}");
    Ok(bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), &f.values).execute(conn).await?.rows_affected())
}

/// Jobs that wait for a provider's pause (`provider_paused`) run now: the pause ended.
pub async fn wake_paused(conn: &mut AnyConnection, now: i64) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE jobs SET run_at = $1 WHERE status = 'queued' AND last_error = 'provider_paused' AND run_at > $1";
    Ok(sqlx::query(sql).bind(now).execute(conn).await?.rows_affected())
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

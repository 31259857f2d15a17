//! Operations: queue health, job detail and actions, and Prometheus metrics — all read from the
//! database, which every API and worker process shares, so any process answers for all of them.

use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::ServiceError;
use crate::{
    clock::{now_ms, rfc3339, rfc3339_opt},
    queue::Queue,
    storage::{
        Db, attempts,
        job_minutes::{self, Minute},
        jobs::{self, JobFilter, JobRow, JobState},
        queue_controls, workers,
    },
    views::AttemptView,
};

/// A queue's jobs by state (disjoint; the names of [`JobState`]) and what its runs came to
/// over the last five minutes, on every worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStats {
    pub name: String,
    pub paused: bool,
    /// Due, waiting for a worker.
    pub pending: i64,
    /// First run in the future.
    pub scheduled: i64,
    pub running: i64,
    /// Failed at least once, waiting for the next run on the retry schedule.
    pub retrying: i64,
    /// Out of retries or not retryable; kept for operators.
    pub dead: i64,
    /// Runs that finished a job in the last five minutes.
    pub done_last_5m: i64,
    /// Runs that failed in the last five minutes (retried or dead): a queue failing every
    /// run is busy, not idle.
    pub failed_last_5m: i64,
    /// Runs per minute (done and failed) over the last five minutes.
    pub runs_per_min: f64,
    /// 95th percentile run time over the last five minutes, milliseconds.
    pub run_ms_p95: Option<f64>,
    /// When the oldest pending job became due (RFC 3339).
    pub oldest_pending_since: Option<String>,
    /// How long the oldest pending job has waited, seconds.
    pub oldest_pending_age_s: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub concurrency: i64,
    pub started_at: String,
    pub heartbeat_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesView {
    pub queues: Vec<QueueStats>,
    /// Each merchant's share of the work in hand (due and running jobs), busiest first (at most 10).
    pub merchants: Vec<MerchantShare>,
    /// Workers that heartbeated in the last 30 s.
    pub workers: Vec<WorkerView>,
    pub generated_at: String,
}

/// One merchant's jobs in one queue: what a noisy merchant takes shows here.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantShare {
    pub queue: String,
    /// `null` for platform jobs that belong to no merchant.
    pub merchant_id: Option<String>,
    /// Due jobs no worker has taken yet (pending and retrying now).
    pub due: i64,
    pub running: i64,
    /// This merchant's part of the queue's due and running jobs, 0.0–1.0.
    pub share: f64,
}

/// The `limit` merchants with the most due or running jobs, over every queue.
pub async fn merchant_shares(conn: &mut AnyConnection, limit: i64, now: i64) -> Result<Vec<MerchantShare>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT queue, merchant_id, \
           COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) \
         FROM jobs WHERE (status = 'queued' AND run_at <= $1) OR status = 'running' \
         GROUP BY queue, merchant_id",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut totals = std::collections::HashMap::<&str, i64>::new();
    for (queue, _, due, running) in &rows {
        *totals.entry(queue.as_str()).or_default() += due + running;
    }
    let mut out: Vec<MerchantShare> = rows
        .iter()
        .map(|(queue, merchant_id, due, running)| MerchantShare {
            queue: queue.clone(),
            merchant_id: merchant_id.clone(),
            due: *due,
            running: *running,
            share: (due + running) as f64 / totals.get(queue.as_str()).copied().unwrap_or(1).max(1) as f64,
        })
        .collect();
    out.sort_by(|a, b| (b.due + b.running).cmp(&(a.due + a.running)).then_with(|| a.queue.cmp(&b.queue)));
    out.truncate(usize::try_from(limit).unwrap_or(10));
    Ok(out)
}

const WINDOW_MS: i64 = 5 * 60_000;

pub async fn queues(db: &Db) -> Result<QueuesView, ServiceError> {
    let now = now_ms();
    let mut conn = db.conn().await?;
    let paused = queue_controls::paused(&mut conn).await?;
    let mut out = Vec::new();
    for queue in Queue::ALL {
        out.push(queue_stats(&mut conn, queue.as_str(), paused.iter().any(|p| p == queue.as_str()), now).await?);
    }
    let workers = workers::live(&mut conn, now - 30_000)
        .await?
        .into_iter()
        .map(|w| WorkerView {
            id: w.id,
            concurrency: w.concurrency,
            started_at: rfc3339(w.started_at),
            heartbeat_at: rfc3339(w.heartbeat_at),
        })
        .collect();
    let merchants = merchant_shares(&mut conn, 10, now).await?;
    Ok(QueuesView { queues: out, merchants, workers, generated_at: rfc3339(now) })
}

async fn queue_stats(conn: &mut AnyConnection, queue: &str, paused: bool, now: i64) -> Result<QueueStats, sqlx::Error> {
    // One statement per state, each served by that state's partial index (see migrations 0007, 0008).
    let waiting: (i64, i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT \
           COALESCE(SUM(CASE WHEN failures = 0 AND run_at <= $2 THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN failures = 0 AND run_at > $2 THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN failures > 0 THEN 1 ELSE 0 END), 0), \
           MIN(CASE WHEN run_at <= $2 THEN run_at END) \
         FROM jobs WHERE queue = $1 AND status = 'queued'",
    )
    .bind(queue)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE queue = $1 AND status = 'running'")
        .bind(queue)
        .fetch_one(&mut *conn)
        .await?;
    let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE queue = $1 AND status = 'dead'")
        .bind(queue)
        .fetch_one(&mut *conn)
        .await?;
    let mut recent = Minute::default();
    for (_, m) in job_minutes::since(&mut *conn, queue, now - WINDOW_MS).await? {
        recent.add(&m);
    }
    Ok(QueueStats {
        name: queue.to_owned(),
        paused,
        pending: waiting.0,
        scheduled: waiting.1,
        running,
        retrying: waiting.2,
        dead,
        done_last_5m: recent.done,
        failed_last_5m: recent.failed,
        runs_per_min: (recent.done + recent.failed) as f64 / 5.0,
        run_ms_p95: recent.run_ms_quantile(0.95),
        oldest_pending_since: rfc3339_opt(waiting.3),
        oldest_pending_age_s: waiting.3.map(|at| (now - at).max(0) / 1000),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    /// `pending`, `scheduled`, `running`, `retrying`, `done`, `dead` or `discarded`.
    pub status: String,
    pub merchant_id: Option<String>,
    pub membership_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub run_at: String,
    /// Times a worker claimed it.
    pub runs: i64,
    /// Failed runs, the index into the retry schedule.
    pub failures: i64,
    pub last_error: Option<String>,
    pub locked_by: Option<String>,
    pub locked_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl JobView {
    fn of(j: &JobRow, now: i64) -> Self {
        Self {
            id: j.id.clone(),
            queue: j.queue.clone(),
            status: JobState::of(j, now).as_str().to_owned(),
            merchant_id: j.merchant_id.clone(),
            membership_id: j.membership_id.clone(),
            payload: serde_json::from_str(&j.payload).unwrap_or(serde_json::Value::Null),
            run_at: rfc3339(j.run_at),
            runs: j.attempts,
            failures: j.failures,
            last_error: j.last_error.clone(),
            locked_by: j.locked_by.clone(),
            locked_until: rfc3339_opt(j.locked_until),
            created_at: rfc3339(j.created_at),
            updated_at: rfc3339(j.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    /// Delivery attempts this job made (delivery and revoke queues).
    pub attempts: Vec<AttemptView>,
}

pub async fn job(tx: &mut AnyConnection, id: &str) -> Result<JobDetail, ServiceError> {
    let job = jobs::get(&mut *tx, id).await?.ok_or(ServiceError::NotFound)?;
    let attempts = match &job.membership_id {
        Some(m) => attempts::list_for_membership(&mut *tx, m)
            .await?
            .into_iter()
            .filter(|a| a.job_id.as_deref() == Some(id))
            .map(|a| AttemptView::from(&a))
            .collect(),
        None => Vec::new(),
    };
    Ok(JobDetail { job: JobView::of(&job, now_ms()), attempts })
}

/// How many jobs match a filter, in one state.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateCount {
    pub status: String,
    pub count: i64,
}

/// One page of a queue's jobs matching a filter, newest first, and how many match in each state.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub data: Vec<JobView>,
    /// Jobs matching the filter in the states asked for (all states when none was).
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    /// Jobs matching every filter but the status, per status.
    pub by_status: Vec<StateCount>,
}

fn known_queue(queue: &str) -> Result<(), ServiceError> {
    if Queue::ALL.iter().any(|q| q.as_str() == queue) { Ok(()) } else { Err(ServiceError::NotFound) }
}

/// A queue's jobs matching `filter`, newest first. 404 for an unknown queue.
pub async fn list_jobs(db: &Db, queue: &str, filter: &JobFilter, limit: i64, offset: i64) -> Result<JobPage, ServiceError> {
    known_queue(queue)?;
    let now = now_ms();
    let mut conn = db.conn().await?;
    let rows = jobs::list_filtered(&mut conn, queue, filter, now, limit, offset).await?;
    let counts = jobs::count_by_state(&mut conn, queue, filter, now).await?;
    let total = counts.iter().filter(|(s, _)| filter.states.is_empty() || filter.states.contains(s)).map(|(_, n)| n).sum();
    Ok(JobPage {
        data: rows.iter().map(|j| JobView::of(j, now)).collect(),
        total,
        limit,
        offset,
        by_status: counts.into_iter().map(|(s, count)| StateCount { status: s.as_str().to_owned(), count }).collect(),
    })
}

/// The newest jobs of every queue, for the dashboard's front page.
pub async fn recent_jobs(db: &Db, limit: i64) -> Result<Vec<JobView>, ServiceError> {
    let now = now_ms();
    let mut conn = db.conn().await?;
    let mut recent = Vec::new();
    for queue in Queue::ALL {
        recent.extend(jobs::list_filtered(&mut conn, queue.as_str(), &JobFilter::default(), now, limit, 0).await?);
    }
    recent.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    recent.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(recent.iter().map(|j| JobView::of(j, now)).collect())
}

/// Retries (runs now) or discards every job of a queue matching `filter` that the action can
/// take; returns how many it changed. 404 for an unknown queue.
pub async fn act_on_jobs(tx: &mut AnyConnection, queue: &str, filter: &JobFilter, retry: bool) -> Result<u64, ServiceError> {
    known_queue(queue)?;
    let changed = jobs::act_on_filtered(&mut *tx, queue, filter, retry, now_ms()).await?;
    if retry && changed > 0 {
        if let Some(q) = Queue::parse(queue) {
            crate::queue::wake_workers(&mut *tx, q).await?;
        }
    } else if !retry {
        crate::metrics::jobs_discarded(queue, changed);
    }
    Ok(changed)
}

/// One minute of a queue's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphPoint {
    /// The minute's start, unix milliseconds.
    pub minute: i64,
    /// Runs that finished a job.
    pub done: i64,
    /// Runs that failed (retried or dead).
    pub failed: i64,
    /// Median run time, milliseconds.
    pub run_ms_p50: Option<f64>,
    /// 95th percentile run time, milliseconds.
    pub run_ms_p95: Option<f64>,
}

/// A queue's last hour, minute by minute (60 points, oldest first; quiet minutes are zero),
/// from every worker's saved run counts.
pub async fn queue_graph(db: &Db, queue: &str) -> Result<Vec<GraphPoint>, ServiceError> {
    known_queue(queue)?;
    let now = now_ms();
    let first = now - now.rem_euclid(60_000) - 59 * 60_000;
    let saved = job_minutes::since(&mut *db.conn().await?, queue, first).await?;
    Ok((0..60)
        .map(|i| {
            let minute = first + i * 60_000;
            let m = saved.iter().find(|(at, _)| *at == minute).map(|(_, m)| m.clone()).unwrap_or_default();
            GraphPoint { minute, done: m.done, failed: m.failed, run_ms_p50: m.run_ms_quantile(0.5), run_ms_p95: m.run_ms_quantile(0.95) }
        })
        .collect())
}

/// Retry now: a waiting, failed or dead job runs again at once. A running job is left alone.
pub async fn retry_job(tx: &mut AnyConnection, id: &str) -> Result<JobView, ServiceError> {
    if !jobs::retry_now(&mut *tx, id, now_ms()).await? {
        return Err(match jobs::get(&mut *tx, id).await? {
            None => ServiceError::NotFound,
            Some(j) => ServiceError::Conflict(format!("a {} job cannot be retried", j.status)),
        });
    }
    job(tx, id).await.map(|d| d.job)
}

/// Discard: a waiting, failed or dead job will not run. A running job is left alone.
pub async fn discard_job(tx: &mut AnyConnection, id: &str) -> Result<JobView, ServiceError> {
    if !jobs::discard(&mut *tx, id, now_ms()).await? {
        return Err(match jobs::get(&mut *tx, id).await? {
            None => ServiceError::NotFound,
            Some(j) => ServiceError::Conflict(format!("a {} job cannot be discarded", j.status)),
        });
    }
    job(tx, id).await.map(|d| d.job)
}

pub async fn set_paused(tx: &mut AnyConnection, queue: &str, paused: bool) -> Result<(), ServiceError> {
    let Some(queue) = Queue::ALL.into_iter().find(|q| q.as_str() == queue) else {
        return Err(ServiceError::NotFound);
    };
    queue_controls::set_paused(&mut *tx, queue.as_str(), paused, now_ms()).await?;
    if !paused {
        crate::queue::wake_workers(&mut *tx, queue).await?;
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    pub attempt_id: String,
    pub job_id: Option<String>,
    pub membership_id: String,
    pub merchant_id: String,
    pub provider: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    pub membership_id: String,
    pub merchant_id: String,
    pub product_id: String,
    pub attempts: i64,
    pub last_error_code: Option<String>,
    pub support_ticket_id: Option<String>,
    pub updated_at: String,
}

pub async fn recent_failures(db: &Db, limit: i64) -> Result<Vec<FailureView>, ServiceError> {
    let rows: Vec<(String, Option<String>, String, String, String, Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, job_id, membership_id, merchant_id, provider, error_code, error_message, finished_at \
         FROM delivery_attempts WHERE outcome = 'failed' ORDER BY finished_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| FailureView {
            attempt_id: r.0,
            job_id: r.1,
            membership_id: r.2,
            merchant_id: r.3,
            provider: r.4,
            error_code: r.5,
            error_message: r.6,
            finished_at: rfc3339_opt(r.7),
        })
        .collect())
}

pub async fn manual_review(db: &Db, limit: i64) -> Result<Vec<ReviewView>, ServiceError> {
    let rows: Vec<(String, String, String, i64, Option<String>, Option<String>, i64)> = sqlx::query_as(
        "SELECT id, merchant_id, product_id, delivery_attempts, last_error_code, support_ticket_id, updated_at \
         FROM memberships WHERE delivery_status = 'manual_review' ORDER BY updated_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReviewView {
            membership_id: r.0,
            merchant_id: r.1,
            product_id: r.2,
            attempts: r.3,
            last_error_code: r.4,
            support_ticket_id: r.5,
            updated_at: rfc3339(r.6),
        })
        .collect())
}

/// A buyer a renewal reminder did not reach (failed, or no channel to try).
#[derive(Debug, Serialize, ToSchema)]
pub struct UnreachedView {
    pub membership_id: String,
    pub merchant_id: String,
    /// `telegram`, `email` or `none` (no Telegram id the bot can use, no email address).
    pub channel: String,
    /// The provider's code (`bot_blocked`, `identity_missing`, `outcome_unknown`, …).
    pub error_code: Option<String>,
    /// The period end the reminder was for.
    pub period_end: String,
    pub at: String,
}

/// Renewal reminders that reached nobody, newest first.
pub async fn unreached_buyers(db: &Db, limit: i64) -> Result<Vec<UnreachedView>, ServiceError> {
    let rows: Vec<(String, String, String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT membership_id, merchant_id, channel, error_code, period_end, COALESCE(finished_at, created_at) \
         FROM renewal_reminders WHERE status = 'failed' OR (status = 'skipped' AND channel = 'none' AND error_code IS NULL) \
         ORDER BY COALESCE(finished_at, created_at) DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| UnreachedView {
            membership_id: r.0,
            merchant_id: r.1,
            channel: r.2,
            error_code: r.3.or_else(|| Some("identity_missing".to_owned())),
            period_end: rfc3339(r.4),
            at: rfc3339(r.5),
        })
        .collect())
}

/// `/metrics`: the database-wide gauges (set from the shared database at each scrape, the same
/// from any API process) and this process's counters and histograms, in the Prometheus text
/// format (see [`crate::metrics`]).
pub async fn prometheus(db: &Db, limits: &crate::ratelimit::RateLimits) -> Result<String, ServiceError> {
    use ::metrics::{counter, gauge};
    crate::metrics::handle(); // installed before the gauges are set
    let now = now_ms();
    let mut conn = db.conn().await?;
    for queue in Queue::ALL {
        let s = queue_stats(&mut conn, queue.as_str(), false, now).await?;
        for (state, n) in [
            (JobState::Pending, s.pending),
            (JobState::Scheduled, s.scheduled),
            (JobState::Running, s.running),
            (JobState::Retrying, s.retrying),
            (JobState::Dead, s.dead),
        ] {
            gauge!("hilt_queue_jobs", "queue" => queue.as_str(), "state" => state.as_str()).set(n as f64);
        }
        gauge!("hilt_queue_oldest_pending_seconds", "queue" => queue.as_str()).set(s.oldest_pending_age_s.unwrap_or(0) as f64);
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(created_at) FROM jobs WHERE queue = $1 AND status IN ('queued', 'running') AND (run_at <= $2 OR failures > 0 OR status = 'running')")
            .bind(queue.as_str())
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
        gauge!("hilt_outbox_lag_seconds", "queue" => queue.as_str()).set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0));
    }
    let review: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'manual_review'").fetch_one(&mut *conn).await?;
    gauge!("hilt_manual_review_memberships").set(review as f64);
    gauge!("hilt_workers_live").set(workers::live(&mut conn, now - 30_000).await?.len() as f64);
    let pauses = crate::storage::provider_pauses::all(&mut conn).await?;
    for provider in ["telegram", "discord"] {
        let paused = pauses.iter().any(|p| p.provider == provider && p.paused_until > now);
        gauge!("hilt_provider_paused", "provider" => provider).set(if paused { 1.0 } else { 0.0 });
    }
    for m in merchant_shares(&mut conn, 10, now).await? {
        let merchant = m.merchant_id.unwrap_or_else(|| "none".into());
        gauge!("hilt_queue_merchant_jobs", "queue" => m.queue.clone(), "merchant" => merchant.clone(), "state" => "due").set(m.due as f64);
        gauge!("hilt_queue_merchant_jobs", "queue" => m.queue, "merchant" => merchant, "state" => "running").set(m.running as f64);
    }
    // Bots, global and route limits; one buyer's chat is not worth a series.
    for key in limits.states(200).await.unwrap_or_default().into_iter().filter(|k| !k.key.contains(":chat:")) {
        gauge!("hilt_rate_limit_fill", "limit" => key.key.clone()).set(key.fill);
        gauge!("hilt_rate_limit_wait_seconds", "limit" => key.key).set(key.wait_ms as f64 / 1000.0);
    }
    for (table, n) in crate::storage::retention::pruned_totals(&mut conn).await? {
        counter!("hilt_pruned_rows_total", "table" => table).absolute(u64::try_from(n).unwrap_or(0));
    }
    Ok(crate::metrics::render())
}

/// One operations action in the audit log (`GET /v1/ops/audit`, the dashboard).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// RFC 3339.
    pub at: String,
    /// Who: a fingerprint of the admin credential used (never the credential itself).
    pub actor: String,
    /// `queue.pause`, `queue.resume`, `job.retry` or `job.discard`.
    pub action: String,
    /// The queue name or job id acted on.
    pub target: String,
    /// From where: the client's address and whether through the dashboard or the API.
    pub source: String,
}

/// Writes an action to the audit log at the current time.
pub async fn record_action(tx: &mut AnyConnection, actor: &str, action: &str, target: &str, source: &str) -> Result<(), ServiceError> {
    let row = crate::storage::ops_audit::AuditRow {
        id: crate::domain::AuditId::generate().to_string(),
        at: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        source: source.to_owned(),
    };
    crate::storage::ops_audit::insert(&mut *tx, &row).await?;
    tracing::info!(actor, action, target, source, "operations action");
    Ok(())
}

/// The audit log, newest first, with the total count.
pub async fn audit_log(db: &Db, limit: i64, offset: i64) -> Result<(Vec<AuditEntry>, i64), ServiceError> {
    let (rows, total) = crate::storage::ops_audit::list(&mut *db.conn().await?, limit, offset).await?;
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry { id: r.id, at: rfc3339(r.at), actor: r.actor, action: r.action, target: r.target, source: r.source })
        .collect();
    Ok((entries, total))
}

/// Everything an operator needs about one membership: the timeline behind a manual-review row.
#[derive(Debug)]
pub struct MembershipTimeline {
    pub membership: crate::storage::memberships::MembershipRow,
    /// Every delivery and removal attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Every job for the membership, oldest first.
    pub jobs: Vec<JobView>,
    /// Events, oldest first: `(type, RFC 3339)`.
    pub events: Vec<(String, String)>,
    /// The linked support ticket: `(id, subject, status)`.
    pub ticket: Option<(String, String, String)>,
}

pub async fn membership_timeline(conn: &mut AnyConnection, id: &str) -> Result<MembershipTimeline, ServiceError> {
    use crate::storage::{events, memberships, support};
    let membership = memberships::get_any(&mut *conn, id).await?.ok_or(ServiceError::NotFound)?;
    let now = now_ms();
    let attempts = attempts::list_for_membership(&mut *conn, id).await?.iter().map(AttemptView::from).collect();
    let jobs = jobs::list_for_membership(&mut *conn, id).await?.iter().map(|j| JobView::of(j, now)).collect();
    let events = events::list_for_membership(&mut *conn, id).await?.into_iter().map(|e| (e.kind, rfc3339(e.created_at))).collect();
    let ticket = match &membership.support_ticket_id {
        Some(t) => support::get_any(&mut *conn, t).await?.map(|t| (t.id, t.subject, t.status)),
        None => None,
    };
    Ok(MembershipTimeline { membership, attempts, jobs, events, ticket })
}

/// Where an operator's search leads.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// `job`, `membership`, `payment`, `ticket` or `attempt`.
    pub kind: String,
    pub id: String,
    /// What it is, in a few words.
    pub summary: String,
    /// The /ops page to open.
    pub page: String,
}

/// Finds what `q` names: a job, membership, payment, ticket or attempt id (by its prefix), or
/// the memberships of a buyer by handle (`@` optional), Telegram user id or Discord user id,
/// across merchants. At most 50 hits.
pub async fn search(conn: &mut AnyConnection, q: &str) -> Result<Vec<SearchHit>, ServiceError> {
    let q = q.trim();
    let hit = |kind: &str, id: &str, summary: String, page: String| SearchHit { kind: kind.into(), id: id.into(), summary, page };
    let membership_page = |id: &str| format!("/ops/memberships/{id}");
    let found = match q.split_once('_').map(|(prefix, _)| prefix) {
        Some("job") => jobs::get(&mut *conn, q).await?.map(|j| {
            let state = JobState::of(&j, now_ms());
            hit("job", q, format!("{} job, {state}", j.queue), format!("/ops/jobs/{q}"))
        }),
        Some("mem") => crate::storage::memberships::get_any(&mut *conn, q)
            .await?
            .map(|m| hit("membership", q, format!("{} membership, delivery {}", m.platform, m.delivery_status), membership_page(q))),
        Some("pay") => {
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT status, membership_id FROM payments WHERE id = $1").bind(q).fetch_optional(&mut *conn).await?;
            row.map(|(status, membership)| {
                let page = membership.as_deref().map_or_else(|| "/ops".to_owned(), membership_page);
                hit("payment", q, format!("payment, {status}"), page)
            })
        }
        Some("tkt") => crate::storage::support::get_any(&mut *conn, q).await?.map(|t| {
            let page = t.membership_id.as_deref().map_or_else(|| "/ops".to_owned(), membership_page);
            hit("ticket", q, format!("ticket \u{201c}{}\u{201d}, {}", t.subject, t.status), page)
        }),
        Some("att") => {
            let row: Option<(Option<String>, String)> =
                sqlx::query_as("SELECT job_id, membership_id FROM delivery_attempts WHERE id = $1").bind(q).fetch_optional(&mut *conn).await?;
            row.map(|(job, membership)| {
                let page = job.map_or_else(|| membership_page(&membership), |j| format!("/ops/jobs/{j}"));
                hit("attempt", q, "delivery attempt".into(), page)
            })
        }
        _ => None,
    };
    if let Some(found) = found {
        return Ok(vec![found]);
    }
    let buyer = q.trim_start_matches('@').to_lowercase();
    if buyer.is_empty() {
        return Ok(Vec::new());
    }
    // Joined to merchants, so each merchant's part reads its lookup index (migration 0014).
    let number = q.parse::<i64>().ok();
    let by_user = if number.is_some() { "m.discord_user_id = $1 OR m.telegram_user_id = $3" } else { "m.discord_user_id = $1" };
    let sql = format!(
        "SELECT m.id, m.platform, m.delivery_status, m.handle FROM merchants x JOIN memberships m ON m.merchant_id = x.id \
         WHERE {by_user} OR LOWER(LTRIM(COALESCE(m.handle, ''), '@')) = $2 ORDER BY m.created_at DESC LIMIT 50"
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(q).bind(&buyer);
    if let Some(n) = number {
        query = query.bind(n);
    }
    let rows: Vec<(String, String, String, Option<String>)> = query.fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|(id, platform, delivery, handle)| {
            let who = handle.map(|h| format!(" of {h}")).unwrap_or_default();
            hit("membership", &id, format!("{platform} membership{who}, delivery {delivery}"), membership_page(&id))
        })
        .collect())
}

/// A provider's bot paused in every worker after a burst of 401/403 answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseView {
    /// `telegram` or `discord`.
    pub provider: String,
    /// `paused` (no call before `paused_until`) or `probing` (the pause is over; the next call
    /// decides: a success ends it, a 401/403 pauses again).
    pub state: String,
    /// RFC 3339.
    pub paused_until: String,
    /// Why, e.g. "20 answers 401/403 from discord within 60 s (last: HTTP 401)".
    pub reason: String,
    /// RFC 3339.
    pub opened_at: String,
    /// The worker that saw the burst.
    pub opened_by: String,
}

pub async fn provider_pauses(db: &Db) -> Result<Vec<PauseView>, ServiceError> {
    let now = now_ms();
    let rows = crate::storage::provider_pauses::all(&mut *db.conn().await?).await?;
    Ok(rows
        .into_iter()
        .map(|r| PauseView {
            state: if r.paused_until > now { "paused" } else { "probing" }.to_owned(),
            provider: r.provider,
            paused_until: rfc3339(r.paused_until),
            reason: r.reason,
            opened_at: rfc3339(r.opened_at),
            opened_by: r.opened_by,
        })
        .collect())
}

/// The provider rate limits every worker shares, as `GET /v1/ops/rate-limits` shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitsView {
    /// Where the slots live: `redis` (`REDIS_URL`) or `database`.
    pub store: String,
    /// The busiest limit keys first (at most 50): `telegram:bot`, `telegram:chat:{id}`,
    /// `discord:global`, `discord:route:{METHOD path}`; keys idle for a minute are gone.
    pub keys: Vec<crate::ratelimit::KeyState>,
    /// Jobs rescheduled for their provider slot (`rate_limit_wait`), not yet run again.
    pub jobs_waiting: i64,
    /// The store could not be read (Redis down): calls go unpaced until it is back.
    pub error: Option<String>,
}

/// The limiter's busiest keys and the jobs waiting for a slot.
pub async fn rate_limits(db: &Db, limits: &crate::ratelimit::RateLimits) -> Result<RateLimitsView, ServiceError> {
    let jobs_waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND last_error = 'rate_limit_wait' AND run_at > $1")
        .bind(now_ms())
        .fetch_one(&mut *db.conn().await?)
        .await?;
    let (keys, error) = match limits.states(50).await {
        Ok(keys) => (keys, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(RateLimitsView { store: limits.store_name().to_owned(), keys, jobs_waiting, error })
}

/// An operator ends a provider's pause: every worker calls it again within a second, and the
/// jobs that waited for the pause run now. 404 when the provider is not paused.
pub async fn resume_provider(tx: &mut AnyConnection, provider: &str) -> Result<u64, ServiceError> {
    if !crate::storage::provider_pauses::clear(&mut *tx, provider).await? {
        return Err(ServiceError::NotFound);
    }
    let woken = jobs::wake_paused(&mut *tx, now_ms()).await?;
    for queue in [Queue::Delivery, Queue::Revoke] {
        crate::queue::wake_workers(&mut *tx, queue).await?;
    }
    Ok(woken)
}

//! Operations: queue health, job detail and actions, and Prometheus metrics — all read from the
//! database, which every API and worker process shares, so any process answers for all of them.

use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::ServiceError;
use crate::{
    clock::{now_ms, rfc3339, rfc3339_opt},
    queue::Queue,
    storage::{Db, attempts, jobs::{self, JobRow, JobStatus}, queue_controls, workers},
    views::AttemptView,
};

/// Jobs per state, disjoint: `pending` (due, waiting for a worker), `scheduled` (first run in
/// the future), `running`, `failed` (failed at least once, waiting for its retry), `dead`
/// (out of retries or not retryable; kept for operators).
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStats {
    pub name: String,
    pub paused: bool,
    pub pending: i64,
    pub scheduled: i64,
    pub running: i64,
    pub failed: i64,
    pub dead: i64,
    pub done_last_5m: i64,
    /// Jobs finished per minute over the last five minutes.
    pub throughput_per_min: f64,
    /// Mean time from due to finished, over jobs finished in the last five minutes.
    pub latency_ms_avg: Option<f64>,
    pub oldest_waiting_since: Option<String>,
    pub oldest_waiting_age_s: Option<i64>,
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
    /// Workers that heartbeated in the last 30 s.
    pub workers: Vec<WorkerView>,
    pub generated_at: String,
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
    Ok(QueuesView { queues: out, workers, generated_at: rfc3339(now) })
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
    let (done, latency_sum): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), CAST(SUM(updated_at - run_at) AS BIGINT) FROM jobs WHERE queue = $1 AND status = 'done' AND updated_at >= $2",
    )
    .bind(queue)
    .bind(now - WINDOW_MS)
    .fetch_one(conn)
    .await?;
    Ok(QueueStats {
        name: queue.to_owned(),
        paused,
        pending: waiting.0,
        scheduled: waiting.1,
        running,
        failed: waiting.2,
        dead,
        done_last_5m: done,
        throughput_per_min: done as f64 / 5.0,
        latency_ms_avg: latency_sum.filter(|_| done > 0).map(|sum| sum as f64 / done as f64),
        oldest_waiting_since: rfc3339_opt(waiting.3),
        oldest_waiting_age_s: waiting.3.map(|at| (now - at).max(0) / 1000),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    /// `queued`, `running`, `done`, `dead` or `discarded`.
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

impl From<&JobRow> for JobView {
    fn from(j: &JobRow) -> Self {
        Self {
            id: j.id.clone(),
            queue: j.queue.clone(),
            status: j.status.as_str().to_owned(),
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
    Ok(JobDetail { job: JobView::from(&job), attempts })
}

/// Jobs of a queue (optionally one status), newest first.
pub async fn list_jobs(db: &Db, queue: &str, status: Option<JobStatus>, limit: i64) -> Result<Vec<JobView>, ServiceError> {
    let rows = jobs::list_recent(&mut *db.conn().await?, queue, status, limit).await?;
    Ok(rows.iter().map(JobView::from).collect())
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

/// Upper bounds (ms) of the attempt latency histogram.
const LATENCY_BUCKETS_MS: [i64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Prometheus text exposition (format 0.0.4), computed from the shared database so that one
/// scrape of any API process covers every worker.
pub async fn prometheus(db: &Db) -> Result<String, ServiceError> {
    let now = now_ms();
    let mut conn = db.conn().await?;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    family("hilt_queue_jobs", "gauge", "Jobs by queue and state (pending, scheduled, running, failed, dead).");
    let mut lines = Vec::new();
    for queue in Queue::ALL {
        let s = queue_stats(&mut conn, queue.as_str(), false, now).await?;
        for (state, n) in [("pending", s.pending), ("scheduled", s.scheduled), ("running", s.running), ("failed", s.failed), ("dead", s.dead)] {
            lines.push(format!("hilt_queue_jobs{{queue=\"{}\",state=\"{state}\"}} {n}\n", s.name));
        }
        lines.push(format!("hilt_queue_oldest_waiting_seconds{{queue=\"{}\"}} {}\n", s.name, s.oldest_waiting_age_s.unwrap_or(0)));
    }
    let (gauges, oldest): (Vec<_>, Vec<_>) = lines.into_iter().partition(|l| l.starts_with("hilt_queue_jobs"));
    out.push_str(&gauges.concat());
    out.push_str("# HELP hilt_queue_oldest_waiting_seconds Age of the oldest due job not yet running.\n# TYPE hilt_queue_oldest_waiting_seconds gauge\n");
    out.push_str(&oldest.concat());

    let outcomes: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT queue, status, COUNT(*) FROM jobs WHERE status IN ('done', 'dead', 'discarded') GROUP BY queue, status ORDER BY queue, status")
            .fetch_all(&mut *conn)
            .await?;
    out.push_str("# HELP hilt_jobs_finished_total Jobs finished, by queue and outcome.\n# TYPE hilt_jobs_finished_total counter\n");
    for (queue, status, n) in outcomes {
        out.push_str(&format!("hilt_jobs_finished_total{{queue=\"{queue}\",outcome=\"{status}\"}} {n}\n"));
    }

    let deliveries: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT provider, outcome, COALESCE(error_code, ''), COUNT(*) FROM delivery_attempts WHERE outcome IS NOT NULL \
         GROUP BY provider, outcome, error_code ORDER BY provider, outcome",
    )
    .fetch_all(&mut *conn)
    .await?;
    out.push_str("# HELP hilt_delivery_attempts_total Delivery attempts by provider, outcome and error code.\n# TYPE hilt_delivery_attempts_total counter\n");
    for (provider, outcome, code, n) in deliveries {
        out.push_str(&format!("hilt_delivery_attempts_total{{provider=\"{provider}\",outcome=\"{outcome}\",error_code=\"{code}\"}} {n}\n"));
    }

    out.push_str("# HELP hilt_delivery_attempt_duration_seconds Provider call latency of delivery attempts.\n# TYPE hilt_delivery_attempt_duration_seconds histogram\n");
    let providers: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT provider, COUNT(*), CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) FROM delivery_attempts WHERE duration_ms IS NOT NULL GROUP BY provider ORDER BY provider",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (provider, count, sum_ms) in providers {
        for bound in LATENCY_BUCKETS_MS {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivery_attempts WHERE provider = $1 AND duration_ms <= $2")
                .bind(&provider)
                .bind(bound)
                .fetch_one(&mut *conn)
                .await?;
            out.push_str(&format!(
                "hilt_delivery_attempt_duration_seconds_bucket{{provider=\"{provider}\",le=\"{}\"}} {n}\n",
                bound as f64 / 1000.0
            ));
        }
        out.push_str(&format!("hilt_delivery_attempt_duration_seconds_bucket{{provider=\"{provider}\",le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!("hilt_delivery_attempt_duration_seconds_sum{{provider=\"{provider}\"}} {}\n", sum_ms as f64 / 1000.0));
        out.push_str(&format!("hilt_delivery_attempt_duration_seconds_count{{provider=\"{provider}\"}} {count}\n"));
    }
    out.push_str("# HELP hilt_pruned_rows_total Rows pruned after HILT_RETENTION, by table.\n# TYPE hilt_pruned_rows_total counter\n");
    for (table, n) in crate::storage::retention::pruned_totals(&mut conn).await? {
        out.push_str(&format!("hilt_pruned_rows_total{{table=\"{table}\"}} {n}\n"));
    }
    let live = workers::live(&mut conn, now - 30_000).await?.len();
    out.push_str(&format!("# HELP hilt_workers_live Workers that heartbeated in the last 30 s.\n# TYPE hilt_workers_live gauge\nhilt_workers_live {live}\n"));
    Ok(out)
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

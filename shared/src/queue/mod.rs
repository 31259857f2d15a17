//! Job payloads (ids and intent only) and the one way to enqueue: a row in the job table,
//! written inside the caller's transaction, that wakes idle workers once it commits.

pub mod wake;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::{
    clock::Millis,
    domain::JobId,
    storage::jobs::{self, JobRow, JobStatus},
};

/// The queues of SPEC §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    Delivery,
    Revoke,
    ProofEmail,
    Renewal,
    Webhook,
    /// Does nothing: the bench measures the engine alone with it.
    Noop,
}

impl Queue {
    /// The queues of SPEC §9, as dashboards and metrics list them.
    pub const ALL: [Queue; 5] = [Queue::Delivery, Queue::Revoke, Queue::ProofEmail, Queue::Renewal, Queue::Webhook];
    /// The queues that hold job rows. `renewal` holds the reminder jobs; the renewal run that
    /// writes them (and moves memberships to grace and expiry) is a lease-guarded loop.
    pub const WITH_JOBS: [Queue; 6] =
        [Queue::Delivery, Queue::Revoke, Queue::ProofEmail, Queue::Renewal, Queue::Webhook, Queue::Noop];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Delivery => "delivery",
            Queue::Revoke => "revoke",
            Queue::ProofEmail => "proof_email",
            Queue::Renewal => "renewal",
            Queue::Webhook => "webhook",
            Queue::Noop => "noop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::WITH_JOBS.into_iter().find(|q| q.as_str() == s)
    }
}

/// Why a delivery attempt runs (the attempt's `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Automatic,
    Manual,
    Renewal,
    Revoke,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Automatic => "automatic",
            Trigger::Manual => "manual",
            Trigger::Renewal => "renewal",
            Trigger::Revoke => "revoke",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub membership_id: String,
    pub payment_id: Option<String>,
    pub trigger: Trigger,
}

/// Writes a delivery job; idle workers wake when the transaction commits.
pub async fn enqueue_delivery(
    conn: &mut AnyConnection,
    merchant_id: &str,
    job: &DeliveryJob,
    run_at: Millis,
) -> Result<JobId, sqlx::Error> {
    let payload = serde_json::to_string(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    enqueue(conn, Queue::Delivery, Some(merchant_id), Some(&job.membership_id), payload, run_at).await
}

/// The one way to enqueue: a row in `jobs`, inside the caller's transaction, and a wake for
/// idle workers (PostgreSQL `NOTIFY` at commit; this process's fetchers on SQLite).
pub async fn enqueue(
    conn: &mut AnyConnection,
    queue: Queue,
    merchant_id: Option<&str>,
    membership_id: Option<&str>,
    payload: String,
    run_at: Millis,
) -> Result<JobId, sqlx::Error> {
    let id = JobId::generate();
    let now = crate::clock::now_ms();
    jobs::insert(
        conn,
        &JobRow {
            id: id.to_string(),
            queue: queue.as_str().to_owned(),
            payload,
            merchant_id: merchant_id.map(str::to_owned),
            membership_id: membership_id.map(str::to_owned),
            status: JobStatus::Queued,
            run_at,
            attempts: 0,
            failures: 0,
            internal_errors: 0,
            last_error: None,
            locked_by: None,
            locked_until: None,
            created_at: now,
            updated_at: now,
        },
    )
    .await?;
    wake_workers(conn, queue).await?;
    Ok(id)
}

/// Wakes idle workers of `queue` once the caller's transaction commits: PostgreSQL `NOTIFY`
/// (every worker process), or on SQLite the fetchers of this process.
pub async fn wake_workers(conn: &mut AnyConnection, queue: Queue) -> Result<(), sqlx::Error> {
    if !jobs::notify(conn, queue.as_str()).await? {
        wake::wake(queue);
    }
    Ok(())
}

/// Send one renewal reminder: the `renewal_reminders` row (membership, period end, offset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderJob {
    pub membership_id: String,
    pub period_end: Millis,
    pub offset_ms: i64,
}

/// Send one event to one endpoint. The event id is the `webhook-id` of every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    pub endpoint_id: String,
    pub event_id: String,
    /// `automatic` (fan-out of the event) or `manual` (a merchant's retry).
    pub trigger: Trigger,
}

pub async fn enqueue_webhook(
    conn: &mut AnyConnection,
    merchant_id: &str,
    membership_id: Option<&str>,
    job: &WebhookJob,
    run_at: Millis,
) -> Result<JobId, sqlx::Error> {
    let payload = serde_json::to_string(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    enqueue(conn, Queue::Webhook, Some(merchant_id), membership_id, payload, run_at).await
}

/// A proof email to send: the request row holds the address and is the idempotency record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofEmailJob {
    pub proof_email_id: String,
}

/// Take away access that ended (SPEC §8): Telegram removal without a permanent ban, Discord
/// role removal. The handler checks the membership again: a renewed one keeps its access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeJob {
    pub membership_id: String,
    /// The paid-through time that ran out, for the record.
    pub period_end: Option<Millis>,
}

pub async fn enqueue_revoke(conn: &mut AnyConnection, merchant_id: &str, job: &RevokeJob, run_at: Millis) -> Result<JobId, sqlx::Error> {
    let payload = serde_json::to_string(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    enqueue(conn, Queue::Revoke, Some(merchant_id), Some(&job.membership_id), payload, run_at).await
}

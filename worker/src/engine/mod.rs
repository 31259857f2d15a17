//! The job engine: claim, lease, complete, sweep and wake, and the one shape every job takes.
//!
//! ```text
//!  transaction that causes work ──INSERT jobs + NOTIFY──▶ commit ──wake──▶ idle fetchers
//!                                                                            │
//!  fetch (per queue): one UPDATE … FOR UPDATE SKIP LOCKED claims as many due  ▼
//!  jobs as the worker has room for ──▶ apalis worker (concurrency C) ──▶ Job::run
//!                                                                            │ Outcome
//!  complete: outcomes of many jobs in one transaction (group commit) ◀───────┘
//!  upkeep: renews the leases of the jobs this worker holds (and their attempt locks)
//!  sweep (one worker at a time): expired leases back to `queued`, owed deliveries re-created
//! ```
//!
//! The database is the source of truth and the queue: a committed job is never lost (a missed
//! wake is caught by the `poll_backstop`), a crashed worker's jobs come back when their lease
//! ends, and a job runs again rather than twice at once. See `docs/JOBS.md`.

pub mod complete;
pub mod fetch;
pub mod listen;
pub mod run;
pub mod stats;
pub mod sweep;
pub mod upkeep;

use std::future::Future;

use futures::future::BoxFuture;
use hilt_shared::{
    queue::Queue,
    service::delivery,
    storage::jobs::{Finish, JobRow},
};
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;

use crate::JobContext;

/// Claims the job `job_id` if it is queued and due, runs it and writes its outcome, as a
/// worker would; false when it could not be claimed. For tests and one-off runs.
pub async fn run_once(ctx: &JobContext, job_id: &str) -> anyhow::Result<bool> {
    let now = hilt_shared::clock::now_ms();
    let claimed = hilt_shared::storage::jobs::claim_one(&mut *ctx.db.conn().await?, job_id, &ctx.worker_id, now, ctx.lease_ms()).await?;
    let Some(job) = claimed else { return Ok(false) };
    let started = std::time::Instant::now();
    let outcome = crate::jobs::execute(ctx, &job).await;
    complete::complete_now(ctx, job, outcome, started.elapsed()).await;
    Ok(true)
}

/// The pool size a process gets from its `HILT_DB_MAX_CONNECTIONS` budget: a process that
/// runs workers on PostgreSQL keeps one connection of it for the wake listener.
pub fn pool_size(config: &hilt_shared::config::Config, runs_workers: bool) -> u32 {
    let listener = runs_workers && !config.database_url.starts_with("sqlite:");
    config.db_max_connections - u32::from(listener)
}

/// A kind of job: its queue, its payload, and what running it decides.
///
/// `run` does the work (provider calls included) outside any transaction and returns an
/// [`Outcome`]; the completer writes that outcome together with the job row. A `run` that
/// must record something before a side effect (an attempt row before a provider call) commits
/// that itself.
pub trait Job: Send + Sync + 'static {
    const QUEUE: Queue;
    /// The job row's `payload`, as JSON.
    type Payload: DeserializeOwned + Send;

    fn run(ctx: &JobContext, job: &JobRow, payload: Self::Payload) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

/// What a run decided.
pub enum Outcome {
    /// Only the job row changes.
    Finish(Finish),
    /// Rows to write beside the job row, deciding its finish inside the completer's transaction.
    Record(Box<dyn Record>),
}

impl Outcome {
    /// Our own failure (database, bug, panic), not the provider's: see [`internal_error_retry`].
    /// Once the job's internal-error budget is spent, a delivery or access removal goes to
    /// manual review with a support ticket (so the sweeper does not start it again unseen).
    pub fn internal_error(ctx: &JobContext, job: &JobRow, error: &str) -> Self {
        match internal_error_retry(&ctx.tuning, job, error) {
            Finish::Dead { error } => match Queue::parse(&job.queue) {
                Some(queue @ (Queue::Delivery | Queue::Revoke)) => {
                    Outcome::record(GiveUp { queue, job_id: job.id.clone(), membership_id: job.membership_id.clone(), error })
                }
                _ => Outcome::Finish(Finish::Dead { error }),
            },
            retry => Outcome::Finish(retry),
        }
    }

    pub fn done() -> Self {
        Outcome::Finish(Finish::Done)
    }

    pub fn dead(error: impl Into<String>) -> Self {
        Outcome::Finish(Finish::Dead { error: error.into() })
    }

    pub fn record(record: impl Record + 'static) -> Self {
        Outcome::Record(Box::new(record))
    }
}

/// How a run that failed inside the worker finishes: again after an exponential backoff with
/// jitter (`Tuning::internal_error_backoff`: 5 s doubling to at most 5 min), or `dead` with
/// `internal_error: …` once the job has failed this way `internal_error_budget` times.
pub fn internal_error_retry(tuning: &crate::Tuning, job: &JobRow, error: &str) -> Finish {
    let error: String = format!("internal_error: {error}").chars().take(500).collect();
    let spent = usize::try_from(job.internal_errors).unwrap_or(usize::MAX);
    match backon::BackoffBuilder::build(tuning.internal_error_backoff).nth(spent) {
        Some(delay) => {
            let at = hilt_shared::clock::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            Finish::InternalError { at, error }
        }
        None => Finish::Dead { error },
    }
}

/// A delivery or access removal whose internal-error budget is spent: manual review and a
/// ticket, written by the completer ([`delivery::stop_after_internal_errors`]).
struct GiveUp {
    queue: Queue,
    job_id: String,
    membership_id: Option<String>,
    error: String,
}

impl Record for GiveUp {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(async move {
            if let Some(membership_id) = &self.membership_id {
                let removal = self.queue == Queue::Revoke;
                delivery::stop_after_internal_errors(conn, membership_id, &self.job_id, removal, &self.error, now).await?;
            }
            Ok(Finish::Dead { error: self.error.clone() })
        })
    }
}

/// The writes of an outcome, run inside a completer transaction that may hold many jobs.
///
/// `record` may run more than once (the completer retries a failed batch job by job, in a
/// transaction each), so it reads its own state and takes `&self`.
pub trait Record: Send + Sync {
    /// Writes the outcome at `now` (unix milliseconds) and returns how the job row finishes.
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>>;

    /// Whether the writes stand even when this worker lost the job's lease meanwhile (a fact
    /// about the outside world, such as an email that was sent). Otherwise they are rolled back
    /// and left to whoever holds the job now.
    fn keep_when_lease_lost(&self) -> bool {
        false
    }
}

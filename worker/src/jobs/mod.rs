//! Running one job: claim its row, keep the lease alive while it runs, dispatch by queue.
//! Handlers reload state by id and finish the job row in their final transaction.

pub mod attempt;
pub mod delivery;
pub mod proof_email;
pub mod revoke;
pub mod webhook;

use std::time::Duration;

use hilt_shared::{
    clock::now_ms,
    storage::jobs::{self, Finish, JobRow},
};
use tracing::Instrument;

use crate::JobContext;

/// Runs the job if this worker can claim it; a job that is finished, running elsewhere or not
/// yet due is left alone (the transport may deliver a job more than once).
pub async fn execute(ctx: &JobContext, job_id: &str) {
    let now = now_ms();
    let claimed = match ctx.db.conn().await {
        Ok(mut conn) => jobs::claim(&mut conn, job_id, &ctx.worker_id, now, ctx.lease_ms()).await,
        Err(e) => Err(e),
    };
    let job = match claimed {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(e) => {
            // Unclaimed, so still `enqueued`: the sweeper re-pushes it if the transport loses it.
            tracing::warn!(job.id = job_id, error = %e, "could not claim a job");
            return;
        }
    };
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        job.queue = %job.queue,
        job.attempt = job.attempts,
        membership.id = job.membership_id.as_deref().unwrap_or(""),
        worker.id = %ctx.worker_id,
    );
    run_claimed(ctx, job).instrument(span).await;
}

async fn run_claimed(ctx: &JobContext, job: JobRow) {
    let started = std::time::Instant::now();
    let _keeper = keep_lease(ctx, &job.id);
    let result = if ctx.is_paused(&job.queue) {
        finish_alone(ctx, &job, Finish::RetryAt { at: now_ms() + 1_000, error: None, failed: false }).await
    } else {
        match job.queue.as_str() {
            "delivery" => delivery::run(ctx, &job).await,
            "proof_email" => proof_email::run(ctx, &job).await,
            "revoke" => revoke::run(ctx, &job).await,
            "webhook" => webhook::run(ctx, &job).await,
            other => {
                finish_alone(ctx, &job, Finish::Dead { error: format!("no handler for queue {other}") }).await
            }
        }
    };
    match result {
        Ok(()) => tracing::info!(duration_ms = started.elapsed().as_millis() as u64, "job finished"),
        Err(e) => {
            // Our own failure (database, bug), not the provider's: try again soon without
            // counting it against the retry budget. If even this fails the lease expires and
            // the sweeper recovers the job.
            tracing::error!(error = %e, "job failed inside the worker");
            let retry = Finish::RetryAt { at: now_ms() + 5_000, error: Some("internal_error".into()), failed: false };
            if let Err(e) = finish_alone(ctx, &job, retry).await {
                tracing::error!(error = %e, "could not hand the job back");
            }
        }
    }
}

/// Finishes a job in a transaction of its own.
pub async fn finish_alone(ctx: &JobContext, job: &JobRow, finish: Finish) -> anyhow::Result<()> {
    let mut conn = ctx.db.conn().await?;
    jobs::finish(&mut conn, &job.id, &ctx.worker_id, &finish, now_ms()).await?;
    Ok(())
}

/// Stops renewing when dropped — also when the job's future is dropped mid-run (a queue worker
/// restarted under it), so the lease then expires and the sweeper recovers the job.
struct LeaseKeeper(tokio::task::JoinHandle<()>);

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the job's lease every third of its length while the job runs.
fn keep_lease(ctx: &JobContext, job_id: &str) -> LeaseKeeper {
    let db = ctx.db.clone();
    let worker = ctx.worker_id.clone();
    let id = job_id.to_owned();
    let lease = ctx.lease_ms();
    LeaseKeeper(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(u64::try_from(lease / 3).unwrap_or(5_000))).await;
            let renewed = match db.conn().await {
                Ok(mut conn) => jobs::renew_lease(&mut conn, &id, &worker, now_ms() + lease).await,
                Err(e) => Err(e),
            };
            if !matches!(renewed, Ok(true)) {
                tracing::warn!(job.id = %id, "could not renew the job lease");
            }
        }
    }))
}

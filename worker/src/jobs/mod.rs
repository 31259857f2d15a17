//! The jobs the engine runs, one [`Job`] implementation per queue.

pub mod attempt;
pub mod delivery;
pub mod noop;
pub mod proof_email;
pub mod revoke;
pub mod webhook;

use hilt_shared::{queue::Queue, storage::jobs::JobRow};

use crate::{
    JobContext,
    engine::{Job, Outcome},
};

/// Runs a claimed job and returns its outcome; errors of our own (database, bug) become a
/// retry that does not count against the job's budget.
pub async fn execute(ctx: &JobContext, job: &JobRow) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = match Queue::parse(&job.queue) {
        Some(Queue::Delivery) => run::<delivery::Delivery>(ctx, job).await,
        Some(Queue::Revoke) => run::<revoke::Revoke>(ctx, job).await,
        Some(Queue::ProofEmail) => run::<proof_email::ProofEmail>(ctx, job).await,
        Some(Queue::Webhook) => run::<webhook::Webhook>(ctx, job).await,
        Some(Queue::Noop) => run::<noop::Noop>(ctx, job).await,
        Some(Queue::Renewal) | None => Ok(Outcome::dead(format!("no handler for queue {}", job.queue))),
    };
    match outcome {
        Ok(outcome) => {
            tracing::debug!(duration_ms = started.elapsed().as_millis() as u64, "job ran");
            outcome
        }
        Err(e) => {
            tracing::error!(error = %e, "job failed inside the worker");
            Outcome::internal_error()
        }
    }
}

async fn run<J: Job>(ctx: &JobContext, job: &JobRow) -> anyhow::Result<Outcome> {
    match serde_json::from_str::<J::Payload>(&job.payload) {
        Ok(payload) => J::run(ctx, job, payload).await,
        Err(_) => Ok(Outcome::dead("unreadable job payload")),
    }
}

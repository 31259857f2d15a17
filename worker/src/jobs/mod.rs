//! The jobs the engine runs, one [`Job`] implementation per queue.

pub mod attempt;
pub mod delivery;
pub mod invite_links;
pub mod noop;
pub mod proof_email;
pub mod reminder;
pub mod revoke;
pub mod webhook;

use hilt_shared::{providers::ProviderError, queue::Queue, storage::jobs::JobRow};

use crate::{
    JobContext,
    engine::{Job, Outcome},
};

/// Runs a claimed job and returns its outcome; errors of our own (database, bug) become a
/// retry on the internal-error budget, not the job's retry budget.
pub async fn execute(ctx: &JobContext, job: &JobRow) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = match Queue::parse(&job.queue) {
        Some(Queue::Delivery) => run::<delivery::Delivery>(ctx, job).await,
        Some(Queue::Revoke) => run::<revoke::Revoke>(ctx, job).await,
        Some(Queue::ProofEmail) => run::<proof_email::ProofEmail>(ctx, job).await,
        Some(Queue::Webhook) => run::<webhook::Webhook>(ctx, job).await,
        Some(Queue::Noop) => run::<noop::Noop>(ctx, job).await,
        Some(Queue::Renewal) => run::<reminder::Reminder>(ctx, job).await,
        None => Ok(Outcome::dead(format!("no handler for queue {}", job.queue))),
    };
    match outcome {
        Ok(outcome) => {
            tracing::debug!(duration_ms = started.elapsed().as_millis() as u64, "job ran");
            outcome
        }
        Err(e) => {
            tracing::error!(error = %e, "job failed inside the worker");
            Outcome::internal_error(ctx, job, &e.to_string())
        }
    }
}

async fn run<J: Job>(ctx: &JobContext, job: &JobRow) -> anyhow::Result<Outcome> {
    match serde_json::from_str::<J::Payload>(&job.payload) {
        Ok(payload) => J::run(ctx, job, payload).await,
        Err(_) => Ok(Outcome::dead("unreadable job payload")),
    }
}

/// How a provider attempt can fail: the provider answered with an error (classified, retried
/// on the job's schedule), or we failed on our side (database, bug: the internal-error budget).
#[derive(Debug)]
pub enum AttemptError {
    Provider(ProviderError),
    Internal(anyhow::Error),
}

impl From<ProviderError> for AttemptError {
    fn from(e: ProviderError) -> Self {
        AttemptError::Provider(e)
    }
}

impl From<sqlx::Error> for AttemptError {
    fn from(e: sqlx::Error) -> Self {
        AttemptError::Internal(e.into())
    }
}

/// Splits an attempt's result: our own failure becomes the run's error (the internal-error
/// path), the provider's answer stays the attempt's result.
pub fn provider_result<T>(result: Result<T, AttemptError>) -> anyhow::Result<Result<T, ProviderError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(AttemptError::Provider(e)) => Ok(Err(e)),
        Err(AttemptError::Internal(e)) => Err(e),
    }
}

/// At most this long between two looks at a pause: a job put off on a view of the pause that an
/// operator's resume had just made stale runs at most this late.
const PAUSE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// When `provider`'s bot is paused in every worker (a burst of 401/403, `crate::breaker`): the
/// job waits for the pause's end (spread over a second, so the probe is not a stampede; looking
/// again at least every [`PAUSE_RECHECK`]) without an attempt and without counting against its
/// retries.
pub fn wait_for_pause(ctx: &JobContext, job: &JobRow, provider: &str, now: i64) -> Option<Outcome> {
    let left = ctx.auth_breaker.paused_for(provider)?.min(PAUSE_RECHECK);
    let at = now + i64::try_from(left.as_millis()).unwrap_or(i64::MAX / 2) + spread_ms(job, 1000);
    tracing::info!(provider, retry_at = at, "the provider is paused; the job waits for it");
    Some(Outcome::Finish(hilt_shared::storage::jobs::Finish::RetryAt { at, error: Some("provider_paused".into()), failed: false }))
}

/// Longest a job waits inside the worker for its provider slot (`ratelimit`); a job that would
/// wait longer is rescheduled for its slot instead, so it holds no worker meanwhile.
const SLOT_WAIT_IN_WORKER: std::time::Duration = std::time::Duration::from_secs(2);

/// When `provider`'s limits are booked beyond [`SLOT_WAIT_IN_WORKER`] (every worker's calls
/// count): the job waits for its slot as `rate_limit_wait`, without an attempt and without
/// counting against its retries. `guild`: the Discord guild whose role bucket the job uses.
pub async fn wait_for_slot(ctx: &JobContext, job: &JobRow, provider: &'static str, guild: Option<&str>, now: i64) -> Option<Outcome> {
    let wait = match (provider, guild) {
        ("telegram", _) => ctx.providers.telegram.as_ref()?.admission().await,
        ("discord", Some(guild)) => ctx.providers.discord.as_ref()?.admission(guild).await,
        _ => return None,
    };
    if wait <= SLOT_WAIT_IN_WORKER {
        return None;
    }
    hilt_shared::metrics::rate_limit_deferred(provider);
    let at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2) + spread_ms(job, 500);
    tracing::debug!(provider, retry_at = at, "the provider's rate limit is booked; the job waits for its slot");
    Some(Outcome::Finish(hilt_shared::storage::jobs::Finish::RetryAt { at, error: Some("rate_limit_wait".into()), failed: false }))
}

/// A delay below `within_ms` that is the same for a job every time (its id's hash): jobs put off
/// to the same moment come back spread out, not as a stampede.
fn spread_ms(job: &JobRow, within_ms: u16) -> i64 {
    i64::from(job.id.bytes().fold(0u16, |acc, b| acc.wrapping_mul(31).wrapping_add(u16::from(b))) % within_ms)
}

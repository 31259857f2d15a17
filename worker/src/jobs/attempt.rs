//! The start every provider attempt shares (delivery and revoke): reload the membership, skip
//! what needs nothing, take the membership's attempt lock, load the product, and write the
//! attempt row — committed before the provider is called.

use hilt_shared::{
    clock::Millis,
    domain::AttemptId,
    queue::Trigger,
    storage::{
        Tx,
        attempts::{self, AttemptRow},
        jobs::{Finish, JobRow},
        memberships::{self, MembershipRow},
        products::{self, ProductRow},
    },
};

use crate::JobContext;

/// A membership locked for this job's attempt, with its product, inside an open transaction.
pub struct Ready {
    pub tx: Tx,
    pub membership: MembershipRow,
    pub product: ProductRow,
}

/// `Err(finish)` when there is no attempt to make: membership gone or nothing to do (done),
/// another attempt holds the lock (tried again shortly), or the product is gone (dead).
pub async fn prepare(
    ctx: &JobContext,
    job: &JobRow,
    membership_id: &str,
    now: Millis,
    nothing_to_do: impl FnOnce(&MembershipRow) -> Option<&'static str>,
) -> anyhow::Result<Result<Ready, Finish>> {
    let mut tx = ctx.db.begin().await?;
    let outcome = match memberships::get_any(&mut tx, membership_id).await? {
        None => Finish::Done,
        Some(membership) => {
            if let Some(reason) = nothing_to_do(&membership) {
                tracing::info!(reason, "attempt not needed");
                Finish::Done
            } else if !memberships::lock_for_attempt(&mut tx, &membership.id, &job.id, now, now + ctx.lease_ms()).await? {
                let wait = now + i64::try_from(ctx.tuning.lock_wait.as_millis()).unwrap_or(1_000);
                Finish::RetryAt { at: wait, error: None, failed: false }
            } else if let Some(product) = products::get(&mut tx, &membership.merchant_id, &membership.product_id).await? {
                return Ok(Ok(Ready { tx, membership, product }));
            } else {
                memberships::unlock(&mut tx, &membership.id, &job.id).await?;
                Finish::Dead { error: "product no longer exists".into() }
            }
        }
    };
    tx.commit().await?;
    Ok(Err(outcome))
}

/// Writes the attempt row, counts it on the membership, and commits, so the attempt exists
/// before the provider is called. An attempt an earlier run of this job left unfinished (it
/// failed inside the worker) is closed first as `worker_lost`: its outcome is unknown.
pub async fn start(
    ctx: &JobContext,
    job: &JobRow,
    ready: Ready,
    trigger: Trigger,
    payment_id: Option<String>,
    provider: &str,
    request_summary: String,
    now: Millis,
) -> anyhow::Result<(AttemptRow, MembershipRow, ProductRow)> {
    let Ready { mut tx, membership, product } = ready;
    let mut attempt = new_attempt(ctx, job, &membership, trigger, payment_id, provider, request_summary, now);
    attempts::abandon_for_jobs(&mut tx, std::slice::from_ref(&job.id), now).await?;
    attempt.number = attempts::max_number(&mut tx, &membership.id).await? + 1;
    attempts::insert(&mut tx, &attempt).await?;
    memberships::count_attempt(&mut tx, &membership.id).await?;
    tx.commit().await?;
    Ok((attempt, membership, product))
}

/// An attempt starting `now`, not yet numbered (0) or finished.
#[allow(clippy::too_many_arguments)]
pub fn new_attempt(
    ctx: &JobContext,
    job: &JobRow,
    m: &MembershipRow,
    trigger: Trigger,
    payment_id: Option<String>,
    provider: &str,
    request_summary: String,
    now: Millis,
) -> AttemptRow {
    AttemptRow {
        id: AttemptId::generate().to_string(),
        merchant_id: m.merchant_id.clone(),
        membership_id: m.id.clone(),
        payment_id: payment_id.or_else(|| Some(m.last_payment_id.clone())),
        job_id: Some(job.id.clone()),
        number: 0,
        trigger_kind: trigger.as_str().to_owned(),
        provider: provider.to_owned(),
        outcome: None,
        error_code: None,
        error_message: None,
        error_retryable: None,
        request_summary: Some(request_summary),
        response_summary: None,
        worker_id: ctx.worker_id.clone(),
        started_at: now,
        finished_at: None,
        duration_ms: None,
        invite_link: None,
        invite_link_revoked_at: None,
    }
}

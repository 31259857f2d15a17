//! Proof email (SPEC §8): send a receipt's verification link once per request.
//!
//! Exactly-once rests on the `proof_emails` row, not on the job: the run claims the row
//! (`queued` → `sending`, attempts + 1) and commits *before* the message leaves, then records
//! the outcome (and finishes the job) in one transaction. A run that finds the row `sent` or
//! `failed` completes without sending; one that finds it `sending` does not send either:
//!
//! - the claim is still fresh (`sending_until` ahead): another run may be talking to the SMTP
//!   server right now, so this run comes back after the claim ends;
//! - the claim expired: a worker died between claiming and recording, and we cannot know
//!   whether the SMTP server accepted the message. Over SMTP we do not send again (a second
//!   email is worse than a missing one the merchant can re-request): the request is marked
//!   `failed` with `outcome_unknown`. Into the outbox folder a resend only rewrites the same
//!   `{id}.eml`, so there it is sent again and still makes one email.

use futures::future::BoxFuture;
use hilt_shared::{
    clock::now_ms,
    domain::retry::next_delay,
    providers::ProviderError,
    queue::{ProofEmailJob, Queue},
    service::proof_emails::{ProofEmailSend, compose, record_send},
    storage::{
        jobs::{Finish, JobRow},
        proof_emails::{self, ProofEmailRow},
        receipts,
    },
};

use sqlx::AnyConnection;

use crate::{
    JobContext,
    engine::{Job, Outcome, Record},
};

/// How long a claim protects a send in progress. The mailer bounds one SMTP exchange to three
/// times the provider timeout (30 s by default); past this the claiming run is surely over.
const SEND_LEASE_MS: i64 = 2 * 60_000;

pub struct ProofEmail;

impl Job for ProofEmail {
    const QUEUE: Queue = Queue::ProofEmail;
    type Payload = ProofEmailJob;

    async fn run(ctx: &JobContext, job: &JobRow, intent: ProofEmailJob) -> anyhow::Result<Outcome> {
        run(ctx, job, intent).await
    }
}

async fn run(ctx: &JobContext, job: &JobRow, intent: ProofEmailJob) -> anyhow::Result<Outcome> {
    let now = now_ms();
    let resend_is_harmless = ctx.providers.mailer.outbox_dir().is_some();

    // 1. Claim the request (the idempotency record) and commit before anything is sent.
    let mut tx = ctx.db.begin().await?;
    let Some(request) = proof_emails::get(&mut tx, &intent.proof_email_id).await? else {
        return Ok(Outcome::done());
    };
    let early = match request.status.as_str() {
        "sent" | "failed" => Some(Finish::Done),
        "sending" => match request.sending_until {
            Some(until) if until >= now => Some(Finish::RetryAt { at: until + 1, error: None, failed: false }),
            _ if resend_is_harmless => None,
            _ => {
                let unknown = ProofEmailRow {
                    status: "failed".into(),
                    last_error_code: Some("outcome_unknown".into()),
                    last_error: Some(
                        "a worker stopped while sending; the message may or may not have been delivered, \
                         so it is not sent again (request a new proof email if the buyer did not get it)"
                            .into(),
                    ),
                    next_attempt_at: None,
                    updated_at: now,
                    ..request.clone()
                };
                proof_emails::finish_attempt(&mut tx, &unknown, request.attempts).await?;
                tracing::warn!(proof_email.id = %request.id, "proof email outcome unknown after a lost claim; not resent");
                Some(Finish::Dead { error: "outcome_unknown".into() })
            }
        },
        _ => None,
    };
    if let Some(finish) = early {
        tx.commit().await?;
        return Ok(Outcome::Finish(finish));
    }
    let Some(receipt) = receipts::get_any(&mut tx, &request.receipt_id).await? else {
        return Ok(Outcome::dead("receipt no longer exists"));
    };
    let Some(claimed) =
        proof_emails::claim(&mut tx, &request.id, &job.id, now, now + SEND_LEASE_MS, resend_is_harmless).await?
    else {
        // Changed under us (another run claimed it first): look again shortly.
        return Ok(Outcome::Finish(Finish::RetryAt { at: now + 1_000, error: None, failed: false }));
    };
    tx.commit().await?;

    // 2. Send, outside any transaction. The request id is the Message-ID and the file name.
    let message = compose(&receipt, &ctx.config.public_base_url());
    let result = ctx
        .providers
        .mailer
        .send(&claimed.address, &message.subject, &message.text, Some(&message.html), &claimed.id)
        .await;

    // 3. The outcome and the job's next step, written together by the completer.
    Ok(Outcome::record(outcome(ctx, claimed, result)))
}

/// The request's outcome, written by the completer (see [`record_send`]); it
/// stands even when the job's lease was lost.
impl Record for ProofEmailSend {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(async move { Ok(record_send(conn, now, self).await?) })
    }

    fn keep_when_lease_lost(&self) -> bool {
        true
    }
}

fn outcome(ctx: &JobContext, claimed: ProofEmailRow, result: Result<(), ProviderError>) -> ProofEmailSend {
    let now = now_ms();
    let attempt = claimed.attempts;
    let mut row = ProofEmailRow { sending_until: None, updated_at: now, ..claimed };
    let finish = match result {
        Ok(()) => {
            row.status = "sent".into();
            row.sent_at = Some(now);
            row.last_error_code = None;
            row.last_error = None;
            row.next_attempt_at = None;
            tracing::info!(proof_email.id = %row.id, attempt, "proof email sent");
            Finish::Done
        }
        Err(e) => {
            row.last_error_code = Some(e.code.clone());
            row.last_error = Some(e.message.clone());
            let failures = usize::try_from(attempt).unwrap_or(usize::MAX);
            let delay = if e.retryable() { next_delay(&ctx.tuning.proof_email_schedule, failures, e.retry_after) } else { None };
            match delay {
                Some(delay) => {
                    let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    row.status = "queued".into();
                    row.next_attempt_at = Some(at);
                    tracing::warn!(proof_email.id = %row.id, attempt, error.code = %e.code, "proof email deferred; retry scheduled");
                    Finish::RetryAt { at, error: Some(e.code.clone()), failed: true }
                }
                None => {
                    row.status = "failed".into();
                    row.next_attempt_at = None;
                    tracing::warn!(proof_email.id = %row.id, attempt, error.code = %e.code, class = e.class.as_str(), "proof email failed");
                    Finish::Dead { error: e.code.clone() }
                }
            }
        }
    };
    ProofEmailSend { row, attempt, finish }
}

//! Delivery rescue from the merchant's side (attempt history, manual retry, the linked ticket)
//! and what the worker's attempts write when they finish: a delivery, or a removal of access
//! (`revoke`, recorded as a delivery attempt with trigger `revoke`).

use sqlx::AnyConnection;

use super::{ServiceError, payments::record_event, support};
use crate::{
    clock::{now_ms, rfc3339},
    domain::{DeliveryStatus, JobId, MembershipStatus, Period, retry::next_delay},
    providers::{ErrorClass, ProviderError},
    queue::{self, DeliveryJob, Queue, Trigger},
    storage::{
        Db,
        attempts::{self, AttemptRow},
        jobs::{self, Finish},
        memberships::{self, MembershipRow},
        products,
    },
    views::{MembershipView, support::TicketView},
};

pub async fn attempts(db: &Db, merchant_id: &str, membership_id: &str) -> Result<Vec<AttemptRow>, ServiceError> {
    let mut conn = db.conn().await?;
    memberships::get(&mut conn, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    Ok(attempts::list_for_membership(&mut conn, membership_id).await?)
}

/// Queues an attempt with trigger `manual` to run now, from any state (manual review
/// included). 409 while an attempt for the membership is in flight.
pub async fn retry(tx: &mut AnyConnection, merchant_id: &str, membership_id: &str) -> Result<(MembershipRow, JobId), ServiceError> {
    let now = now_ms();
    let m = memberships::get(&mut *tx, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = 'delivery' AND status = 'running'",
    )
    .bind(&m.id)
    .fetch_one(&mut *tx)
    .await?;
    if running > 0 || memberships::attempt_in_flight(&mut *tx, &m.id, now).await? {
        return Err(ServiceError::Conflict("a delivery attempt for this membership is in flight; try again when it finishes".into()));
    }
    // The manual push replaces whatever automatic retry was waiting.
    jobs::discard_waiting(&mut *tx, &m.id, Queue::Delivery.as_str(), now).await?;
    let job = DeliveryJob { membership_id: m.id.clone(), payment_id: Some(m.last_payment_id.clone()), trigger: Trigger::Manual };
    let job_id = queue::enqueue_delivery(&mut *tx, merchant_id, &job, now).await?;
    sqlx::query("UPDATE memberships SET next_retry_at = $1, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&m.id)
        .execute(&mut *tx)
        .await?;
    let m = memberships::get(&mut *tx, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    Ok((m, job_id))
}

/// Opens the membership's delivery ticket, or returns the open one; true when created.
pub async fn support_ticket(
    tx: &mut AnyConnection,
    merchant_id: &str,
    membership_id: &str,
    public_base_url: &str,
) -> Result<(TicketView, bool), ServiceError> {
    let now = now_ms();
    let m = memberships::get(&mut *tx, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    let summary = format!(
        "Delivery ticket requested by the merchant. Delivery status: {}; {} attempt(s){}{}.",
        m.delivery_status,
        m.delivery_attempts,
        m.last_error_code.as_ref().map(|c| format!("; last error: {c} — {}", m.last_error_message.as_deref().unwrap_or(""))).unwrap_or_default(),
        m.next_retry_at.map(|at| format!("; next automatic retry at {}", rfc3339(at))).unwrap_or_default(),
    );
    let linked_open = match &m.support_ticket_id {
        Some(id) => support::load(&mut *tx, merchant_id, id, public_base_url).await.ok().filter(|t| t.status != "resolved"),
        None => None,
    };
    let (ticket_id, created) = match linked_open {
        Some(ticket) => (ticket.id, false),
        None => support::open_or_reuse_delivery_ticket(&mut *tx, &m, "Delivery needs attention", &summary, now).await?,
    };
    let ticket = support::load(tx, merchant_id, &ticket_id, public_base_url).await?;
    Ok((ticket, created))
}

/// Why a delivery attempt for `m` is not needed (no access, or already delivered and not a
/// manual push), or None when it is.
pub fn no_delivery_needed(m: &MembershipRow, trigger: Trigger) -> Option<&'static str> {
    let access = matches!(MembershipStatus::parse(&m.status), Some(MembershipStatus::Active | MembershipStatus::Grace));
    if !access {
        return Some("membership has no access (expired or cancelled)");
    }
    if trigger != Trigger::Manual && m.delivery_status == DeliveryStatus::Delivered.as_str() {
        return Some("already delivered");
    }
    None
}

/// What a successful delivery handed over.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub invite_url: Option<String>,
    pub fallback_used: bool,
    /// How the buyer was reached, for the attempt's response summary.
    pub via: &'static str,
}

/// A finished delivery attempt, as the worker saw it.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub job_id: String,
    /// The job's failed runs before this one.
    pub failures: i64,
    pub trigger: Trigger,
    /// Not yet finished; numbered when `attempt_recorded`.
    pub attempt: AttemptRow,
    /// False when the attempt row is first written here (no provider call was made).
    pub attempt_recorded: bool,
    pub result: Result<Delivered, ProviderError>,
    pub retry_schedule: Vec<Period>,
    /// How long to wait when another attempt holds the lock, in milliseconds.
    pub lock_wait_ms: i64,
}

/// Writes a delivery attempt's outcome at `now` (unix ms) inside the caller's transaction: the
/// attempt, the membership's delivery state, events (and their webhook fan-out), the delivery
/// ticket on manual review. Returns how the job finishes: done, retry on the schedule, or dead
/// (manual review). Safe to run again on a fresh transaction. Errors are database errors.
pub async fn record_delivery(tx: &mut AnyConnection, now: i64, input: &DeliveryAttempt) -> Result<Finish, ServiceError> {
    let mut attempt = input.attempt.clone();
    let mut m = if input.attempt_recorded {
        let Some(m) = memberships::get_any(tx, &attempt.membership_id).await? else { return Ok(Finish::Done) };
        m
    } else {
        // No provider attempt held the lock for this one: read the membership under a row
        // lock, so no other attempt commits between our read and our write.
        let Some(m) = memberships::get_for_attempt(tx, &attempt.membership_id, &input.job_id, now).await? else {
            let exists = memberships::get_any(tx, &attempt.membership_id).await?.is_some();
            return Ok(if exists { Finish::RetryAt { at: now + input.lock_wait_ms, error: None, failed: false } } else { Finish::Done });
        };
        if let Some(reason) = no_delivery_needed(&m, input.trigger) {
            // Another job delivered it meanwhile: nothing to record.
            tracing::info!(reason, "attempt not needed");
            memberships::unlock(tx, &m.id, &input.job_id).await?;
            return Ok(Finish::Done);
        }
        if input.result.is_err() {
            // A failure's ticket summary names this attempt's number before it is written.
            attempt.number = attempts::max_number(tx, &m.id).await? + 1;
        }
        m
    };
    let was_in_review = m.delivery_status == DeliveryStatus::ManualReview.as_str();
    attempt.finished_at = Some(now);
    if !input.attempt_recorded {
        // An attempt written before its call was counted with its row (`count_attempt`).
        m.delivery_attempts += 1;
    }
    m.last_attempt_at = Some(now);
    m.updated_at = now;

    let mut delivered_note = None;
    let (finish, events): (Finish, Vec<&str>) = match &input.result {
        Ok(delivered) => {
            attempt.outcome = Some("succeeded".into());
            attempt.response_summary = Some(format!("delivered via {}", delivered.via));
            m.delivery_status = DeliveryStatus::Delivered.as_str().into();
            m.last_error_code = None;
            m.last_error_message = None;
            m.last_error_retryable = None;
            m.next_retry_at = None;
            m.invite_url = delivered.invite_url.clone().or(m.invite_url);
            m.fallback_used = i64::from(delivered.fallback_used);
            m.delivered_at = Some(now);
            if let Some(ticket) = m.support_ticket_id.clone().filter(|_| was_in_review || input.trigger == Trigger::Manual) {
                delivered_note = Some((ticket, delivered.via));
            }
            (Finish::Done, vec!["delivery.succeeded"])
        }
        Err(e) => {
            record_failure(&mut attempt, &mut m, e);
            // A manual push from manual review is one try: failing leaves it in review.
            let stays_in_review = was_in_review && input.trigger == Trigger::Manual;
            let followed = follow_chat_migration(tx, &m, e, now).await?;
            let retry = retry_at(now, &input.retry_schedule, input.failures, e, !stays_in_review);
            // With the product on the new chat, the next attempt need not wait.
            match retry.map(|at| if followed { now } else { at }) {
                Some(at) => {
                    m.delivery_status = DeliveryStatus::Failed.as_str().into();
                    m.next_retry_at = Some(at);
                    tracing::warn!(error.code = %e.code, class = e.class.as_str(), retry_at = %rfc3339(at), "delivery failed; retry scheduled");
                    (Finish::RetryAt { at, error: Some(e.code.clone()), failed: true }, vec!["delivery.failed"])
                }
                None => {
                    m.delivery_status = DeliveryStatus::ManualReview.as_str().into();
                    m.next_retry_at = None;
                    tracing::warn!(error.code = %e.code, class = e.class.as_str(), "delivery moved to manual review");
                    let summary = review_summary(tx, &m, &attempt, e).await?;
                    let (ticket, _) = support::open_or_reuse_delivery_ticket(tx, &m, "Delivery needs attention", &summary, now).await?;
                    m.support_ticket_id = Some(ticket);
                    let mut events = vec!["delivery.failed"];
                    if !was_in_review {
                        events.push("delivery.manual_review");
                    }
                    (Finish::Dead { error: e.code.clone() }, events)
                }
            }
        }
    };

    memberships::update_delivery(tx, &m).await?;
    if input.attempt_recorded {
        attempts::finish(tx, &attempt).await?;
    } else {
        attempt.number = attempts::insert_finished(tx, &attempt).await?;
    }
    if let Some((ticket, via)) = delivered_note {
        let note = format!("Delivered on attempt #{} ({} trigger, via {via}).", attempt.number, attempt.trigger_kind);
        support::add_system_message(tx, &ticket, &note, now).await?;
    }
    let data = serde_json::to_value(MembershipView::from(&m)).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    for kind in events {
        record_event(tx, &m.merchant_id, kind, Some(&m.id), attempt.payment_id.as_deref(), data.clone(), now).await?;
    }
    Ok(finish)
}

/// After a delivery (with `removal`, an access removal) failed inside the worker on every run
/// its internal-error budget allowed (a database error, a bug: not the provider): its
/// unfinished attempts end as `internal_error`, the attempt lock is released, and a support
/// ticket says what happened. A delivery goes to manual review (`delivery.manual_review`), so
/// the sweeper does not start it again unseen; a merchant's "retry delivery" starts it again.
pub async fn stop_after_internal_errors(
    tx: &mut AnyConnection,
    membership_id: &str,
    job_id: &str,
    removal: bool,
    error: &str,
    now: i64,
) -> Result<(), ServiceError> {
    attempts::fail_unfinished_for_job(tx, job_id, error, now).await?;
    memberships::unlock(tx, membership_id, job_id).await?;
    let Some(mut m) = memberships::get_any(tx, membership_id).await? else { return Ok(()) };
    let owed = [DeliveryStatus::Pending, DeliveryStatus::Failed].iter().any(|s| s.as_str() == m.delivery_status);
    if !removal && !owed {
        return Ok(());
    }
    let what = if removal { "Access removal" } else { "Automated delivery" };
    let note = format!(
        "{what} stopped: the worker failed on its own side on every run of job {job_id} ({error}); \
         the provider was not the cause. Next step: an engineer checks the worker's logs for this job; \
         once fixed, retry delivery{}.",
        if removal { " or remove the buyer by hand" } else { "" }
    );
    let subject = if removal { "Access removal needs attention" } else { "Delivery needs attention" };
    let (ticket, _) = support::open_or_reuse_delivery_ticket(tx, &m, subject, &note, now).await?;
    m.support_ticket_id = Some(ticket);
    m.last_error_code = Some("internal_error".into());
    m.last_error_message = Some(error.to_owned());
    m.last_error_retryable = Some(0);
    m.next_retry_at = None;
    m.updated_at = now;
    if !removal {
        m.delivery_status = DeliveryStatus::ManualReview.as_str().into();
    }
    memberships::update_delivery(tx, &m).await?;
    if !removal {
        let data = serde_json::to_value(MembershipView::from(&m)).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        record_event(tx, &m.merchant_id, "delivery.manual_review", Some(&m.id), None, data, now).await?;
    }
    Ok(())
}

/// Telegram named the supergroup the product's group became (`chat_migrated`): the product
/// follows it in the outcome's transaction, with a `product.chat_migrated` event (data:
/// product_id, old_chat_id, new_chat_id), so the next attempt calls the new chat instead of
/// retrying the dead id. True when the product was moved now.
async fn follow_chat_migration(tx: &mut AnyConnection, m: &MembershipRow, e: &ProviderError, now: i64) -> Result<bool, ServiceError> {
    let Some(new) = e.migrated_to_chat_id else { return Ok(false) };
    let Some(product) = products::get(tx, &m.merchant_id, &m.product_id).await? else { return Ok(false) };
    let Some(old) = product.telegram_chat_id.filter(|old| *old != new) else { return Ok(false) };
    if !products::follow_chat_migration(tx, &product.id, old, new, now).await? {
        return Ok(false);
    }
    tracing::warn!(product.id = %product.id, old_chat_id = old, new_chat_id = new, "Telegram group became a supergroup; product follows it");
    let data = serde_json::json!({ "product_id": product.id, "old_chat_id": old, "new_chat_id": new });
    record_event(tx, &m.merchant_id, "product.chat_migrated", None, None, data, now).await?;
    Ok(true)
}

/// The system message on the delivery ticket: what was tried, what failed, what to do next.
async fn review_summary(
    tx: &mut AnyConnection,
    m: &MembershipRow,
    current: &AttemptRow,
    error: &ProviderError,
) -> Result<String, ServiceError> {
    let history = attempts::list_for_membership(tx, &m.id).await?;
    // The current attempt may not be written yet (no provider call to record it before).
    let tried = history.iter().filter(|a| a.id != current.id).count() + 1;
    let mut lines = vec![format!(
        "Automated delivery stopped after {tried} attempt(s). Last error: {} — {} ({}).",
        error.code,
        error.message,
        error.class.as_str()
    )];
    for a in history.iter().filter(|a| a.id != current.id).chain(std::iter::once(current)) {
        lines.push(format!(
            "#{} {} {} via {}: {}",
            a.number,
            rfc3339(a.started_at),
            a.trigger_kind,
            a.provider,
            match (&a.outcome, &a.error_code) {
                (Some(o), Some(code)) => format!("{o} ({code})"),
                (Some(o), None) => o.clone(),
                (None, _) => "unfinished".into(),
            }
        ));
    }
    lines.push(next_step(error));
    Ok(lines.join("\n"))
}

/// What a person should do about a provider error, on the delivery ticket (`docs/PROVIDERS.md`
/// lists the same per error code).
pub fn next_step(error: &ProviderError) -> String {
    let step = match error.code.as_str() {
        "user_blocked_bot" | "user_not_started_bot" => "ask the buyer to open the bot and press Start (or unblock it), then retry delivery",
        "user_deactivated" => "the buyer's Telegram account is deleted: ask for their current account, update the membership, then retry delivery",
        "unknown_user" | "identity_missing" | "identity_invalid" => "add the buyer's correct platform id to the membership, then retry delivery",
        "member_not_in_guild" => "ask the buyer to join the Discord server (or sign in with Discord again so Hilt can add them), then retry delivery",
        "invalid_oauth_token" => "ask the buyer to sign in with Discord again (the authorisation expired or was revoked), then retry delivery",
        "user_guild_limit" => "ask the buyer to leave one Discord server (they are in 100, Discord's limit), then retry delivery",
        "user_banned" => "the buyer is banned from the Discord server: a moderator lifts the ban if they should get in, then retry delivery",
        "member_is_admin" => "the buyer is an owner or administrator of the chat, which a bot cannot remove: remove them by hand if needed",
        "chat_migrated" => "none: Hilt moved the product to the supergroup's new chat id and tries again at once",
        "chat_not_found" | "bot_not_in_chat" | "missing_access" => {
            "add the bot to the chat or server (on Telegram as an administrator), then retry delivery"
        }
        "missing_permissions" => {
            "give the bot the rights it needs (Telegram: invite users and ban users; Discord: Manage Roles, with the bot's role above the product's role), then retry delivery"
        }
        "invalid_bot_token" => "set a valid bot token (HILT_TELEGRAM_BOT_TOKEN or HILT_DISCORD_BOT_TOKEN) and restart, then retry delivery",
        "unknown_guild" | "unknown_role" => "fix the product's Discord server or role id, then retry delivery",
        "not_configured" => "configure a bot token and the product's chat or server, or a fallback invite link, then retry delivery",
        "rate_limited" => "none: Hilt waits as long as the provider asks before trying again",
        _ if error.class == ErrorClass::Transient => {
            "none yet: Hilt retries on its schedule; if it keeps failing, check the provider's status and the delivery diagnostics"
        }
        _ => "check the delivery diagnostics, then retry delivery",
    };
    format!("Next step: {step}.")
}

/// A finished removal of access (trigger `revoke`), as the worker saw it; `Ok` carries the
/// response summary.
#[derive(Debug, Clone)]
pub struct RevokeAttempt {
    /// The job's failed runs before this one.
    pub failures: i64,
    /// Already recorded (numbered) before the provider call.
    pub attempt: AttemptRow,
    pub result: Result<String, ProviderError>,
    pub retry_schedule: Vec<Period>,
}

/// Writes a removal attempt's outcome at `now` (unix ms) inside the caller's transaction: the
/// attempt, the membership (revoked, or delivering again when it was renewed meanwhile, with a
/// delivery job queued), the `membership.revoked` event or a support ticket when removal is
/// stuck. Returns how the job finishes. Errors are database errors.
pub async fn record_revoke(tx: &mut AnyConnection, now: i64, input: &RevokeAttempt) -> Result<Finish, ServiceError> {
    let mut attempt = input.attempt.clone();
    let Some(mut m) = memberships::get_any(tx, &attempt.membership_id).await? else {
        return Ok(Finish::Done);
    };
    // Counted when its row was written, before the call (`count_attempt`).
    attempt.finished_at = Some(now);
    m.last_attempt_at = Some(now);
    m.updated_at = now;
    let renewed_meanwhile =
        matches!(MembershipStatus::parse(&m.status), Some(MembershipStatus::Active | MembershipStatus::Grace));

    // Written after the membership row, whose update orders this membership's events.
    let mut revoked_event = None;
    let finish = match &input.result {
        Ok(summary) => {
            attempt.outcome = Some("succeeded".into());
            attempt.response_summary = Some(summary.clone());
            m.last_error_code = None;
            m.last_error_message = None;
            m.last_error_retryable = None;
            m.next_retry_at = None;
            if renewed_meanwhile {
                // Paid again while the removal was in flight: hand access over again.
                tracing::warn!("membership renewed during the removal; delivering again");
                m.delivery_status = DeliveryStatus::Pending.as_str().into();
                if !jobs::has_live(tx, &m.id, Queue::Delivery.as_str()).await? {
                    let job = DeliveryJob { membership_id: m.id.clone(), payment_id: Some(m.last_payment_id.clone()), trigger: Trigger::Renewal };
                    queue::enqueue_delivery(tx, &m.merchant_id, &job, now).await?;
                }
            } else {
                m.delivery_status = DeliveryStatus::Revoked.as_str().into();
                let data = serde_json::json!({
                    "membership_id": m.id,
                    "provider": attempt.provider,
                    "attempt_id": attempt.id,
                });
                revoked_event = Some(data);
            }
            Finish::Done
        }
        Err(e) => {
            record_failure(&mut attempt, &mut m, e);
            let followed = follow_chat_migration(tx, &m, e, now).await?;
            match retry_at(now, &input.retry_schedule, input.failures, e, !renewed_meanwhile).map(|at| if followed { now } else { at }) {
                Some(at) => {
                    m.next_retry_at = Some(at);
                    tracing::warn!(error.code = %e.code, "access removal failed; retry scheduled");
                    Finish::RetryAt { at, error: Some(e.code.clone()), failed: true }
                }
                None if renewed_meanwhile => Finish::Done,
                None => {
                    // Removal is stuck: a person has to take the buyer out by hand.
                    m.next_retry_at = None;
                    tracing::warn!(error.code = %e.code, "access removal stopped; support ticket opened");
                    let note = format!(
                        "Access expired but could not be removed after {} attempt(s). Last error: {} — {} ({}). \
                         Next step: remove the buyer by hand (or fix the bot's rights and contact support).",
                        failed_runs(input.failures),
                        e.code,
                        e.message,
                        e.class.as_str()
                    );
                    let (ticket, _) = support::open_or_reuse_delivery_ticket(tx, &m, "Access removal needs attention", &note, now).await?;
                    m.support_ticket_id = Some(ticket);
                    Finish::Dead { error: e.code.clone() }
                }
            }
        }
    };

    attempts::finish(tx, &attempt).await?;
    memberships::update_delivery(tx, &m).await?;
    if let Some(data) = revoked_event {
        record_event(tx, &m.merchant_id, "membership.revoked", Some(&m.id), None, data, now).await?;
    }
    Ok(finish)
}

/// Failed runs including this one, for the retry schedule.
fn failed_runs(failures_before: i64) -> usize {
    usize::try_from(failures_before + 1).unwrap_or(usize::MAX)
}

/// When to try again (unix ms) after this run failed with `e`, or None when it should stop:
/// not retryable, `may_retry` false, or the schedule used up.
fn retry_at(now: i64, schedule: &[Period], failures_before: i64, e: &ProviderError, may_retry: bool) -> Option<i64> {
    if !(e.retryable() && may_retry) {
        return None;
    }
    let delay = next_delay(schedule, failed_runs(failures_before), e.retry_after)?;
    Some(now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

/// Writes a provider failure onto the attempt row and the membership's `last_error`.
fn record_failure(attempt: &mut AttemptRow, membership: &mut MembershipRow, e: &ProviderError) {
    attempt.outcome = Some("failed".into());
    attempt.error_code = Some(e.code.clone());
    attempt.error_message = Some(e.message.clone());
    attempt.error_retryable = Some(i64::from(e.retryable()));
    attempt.response_summary = Some(match e.http_status {
        Some(status) => format!("{} ({}), provider answered {status}", e.code, e.class.as_str()),
        None => format!("{} ({})", e.code, e.class.as_str()),
    });
    membership.last_error_code = Some(e.code.clone());
    membership.last_error_message = Some(e.message.clone());
    membership.last_error_retryable = Some(i64::from(e.retryable()));
}

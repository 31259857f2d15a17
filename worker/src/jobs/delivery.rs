//! Delivery: hand over access after a payment (SPEC §6), record every attempt, and decide the
//! next step — delivered, retry on the schedule, or manual review with a support ticket.

use std::time::Instant;

use futures::future::BoxFuture;
use hilt_shared::{
    clock::{now_ms, rfc3339},
    domain::{DeliveryStatus, MembershipStatus, Period, Platform, retry::next_delay},
    providers::{ErrorClass, ProviderError},
    queue::{DeliveryJob, Queue, Trigger},
    service::{payments::record_event, support},
    storage::{
        attempts::{self, AttemptRow},
        jobs::{Finish, JobRow},
        memberships::{self, MembershipRow},
        products::{self, ProductRow},
    },
    views::MembershipView,
};
use sqlx::AnyConnection;
use tracing::Instrument;

use super::attempt;
use crate::{
    JobContext,
    engine::{Job, Outcome, Record},
};

/// Invite links stay valid this long; a buyer who misses it gets a new one from a retry.
const INVITE_VALIDITY_MS: i64 = 7 * 86_400_000;

/// How access is handed over for a product, given what is configured.
enum Plan {
    Telegram { chat_id: i64 },
    Discord { guild_id: String, role_id: String },
    Fallback { url: String },
    NotConfigured,
}

impl Plan {
    fn for_product(ctx: &JobContext, product: &ProductRow) -> Self {
        let fallback = || match &product.fallback_invite_url {
            Some(url) => Plan::Fallback { url: url.clone() },
            None => Plan::NotConfigured,
        };
        match Platform::parse(&product.platform) {
            Some(Platform::Telegram) => match (&ctx.providers.telegram, product.telegram_chat_id) {
                (Some(_), Some(chat_id)) => Plan::Telegram { chat_id },
                _ => fallback(),
            },
            Some(Platform::Discord) => match (&ctx.providers.discord, &product.discord_guild_id, &product.discord_role_id) {
                (Some(_), Some(g), Some(r)) => Plan::Discord { guild_id: g.clone(), role_id: r.clone() },
                _ => fallback(),
            },
            None => fallback(),
        }
    }

    /// Whether the attempt reaches outside (a provider or an email), so its row must be
    /// committed before the call.
    fn calls_out(&self, m: &MembershipRow) -> bool {
        match self {
            Plan::Telegram { .. } | Plan::Discord { .. } => true,
            Plan::Fallback { .. } => m.email.is_some(),
            Plan::NotConfigured => false,
        }
    }

    fn provider(&self) -> &'static str {
        match self {
            Plan::Telegram { .. } => "telegram",
            Plan::Discord { .. } => "discord",
            Plan::Fallback { .. } => "fallback",
            Plan::NotConfigured => "none",
        }
    }
}

/// What a successful attempt handed over.
struct Delivered {
    invite_url: Option<String>,
    fallback_used: bool,
    /// How the buyer was reached, for the attempt's response summary.
    via: &'static str,
}

pub struct Delivery;

impl Job for Delivery {
    const QUEUE: Queue = Queue::Delivery;
    type Payload = DeliveryJob;

    async fn run(ctx: &JobContext, job: &JobRow, intent: DeliveryJob) -> anyhow::Result<Outcome> {
        let now = now_ms();
        let (membership, product) = {
            let mut conn = ctx.db.conn().await?;
            let Some(m) = memberships::get_any(&mut conn, &intent.membership_id).await? else { return Ok(Outcome::done()) };
            let product = products::get(&mut conn, &m.merchant_id, &m.product_id).await?;
            (m, product)
        };
        if let Some(reason) = nothing_to_do(&membership, intent.trigger) {
            tracing::info!(reason, "attempt not needed");
            return Ok(Outcome::done());
        }
        let Some(product) = product else { return Ok(Outcome::dead("product no longer exists")) };
        let plan = Plan::for_product(ctx, &product);
        if !plan.calls_out(&membership) {
            // Nothing leaves the process (a fallback link to show, or nothing configured): the
            // attempt is written whole with its outcome, in the completer's transaction.
            let summary = request_summary(&plan, &membership);
            let mut attempt =
                attempt::new_attempt(ctx, job, &membership, intent.trigger, intent.payment_id.clone(), plan.provider(), summary, now);
            attempt.duration_ms = Some(0);
            let result = hand_over(ctx, &plan, &membership, &attempt.id).await;
            return Ok(Outcome::record(outcome(ctx, job, intent, attempt, result, false)));
        }

        // 1. Take the membership's attempt lock and write the attempt row, committed before the
        //    provider is called.
        let ready = match attempt::prepare(ctx, job, &intent.membership_id, now, |m| nothing_to_do(m, intent.trigger)).await? {
            Ok(ready) => ready,
            Err(finish) => return Ok(Outcome::Finish(finish)),
        };
        let plan = Plan::for_product(ctx, &ready.product);
        let summary = request_summary(&plan, &ready.membership);
        let (mut attempt, membership, _) =
            attempt::start(ctx, job, ready, intent.trigger, intent.payment_id.clone(), plan.provider(), summary, now).await?;

        // 2. The provider call, outside any transaction.
        let started = Instant::now();
        let span = tracing::info_span!("attempt", attempt.id = %attempt.id, provider = plan.provider());
        let result = hand_over(ctx, &plan, &membership, &attempt.id).instrument(span).await;
        attempt.duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        if let Err(e) = &result {
            ctx.auth_breaker.record(plan.provider(), e.http_status);
        }

        // 3. The outcome and the next step, written by the completer.
        Ok(Outcome::record(outcome(ctx, job, intent, attempt, result, true)))
    }
}

fn outcome(
    ctx: &JobContext,
    job: &JobRow,
    intent: DeliveryJob,
    attempt: AttemptRow,
    result: Result<Delivered, ProviderError>,
    attempt_recorded: bool,
) -> DeliveryOutcome {
    DeliveryOutcome {
        job_id: job.id.clone(),
        failures: job.failures,
        intent,
        attempt,
        attempt_recorded,
        result,
        retry_schedule: ctx.tuning.retry_schedule.clone(),
        lease_ms: ctx.lease_ms(),
        lock_wait_ms: i64::try_from(ctx.tuning.lock_wait.as_millis()).unwrap_or(1_000),
    }
}

/// A job for a membership that needs nothing completes without calling the provider.
fn nothing_to_do(m: &MembershipRow, trigger: Trigger) -> Option<&'static str> {
    let access = matches!(MembershipStatus::parse(&m.status), Some(MembershipStatus::Active | MembershipStatus::Grace));
    if !access {
        return Some("membership has no access (expired or cancelled)");
    }
    if trigger != Trigger::Manual && m.delivery_status == DeliveryStatus::Delivered.as_str() {
        return Some("already delivered");
    }
    None
}

/// What the attempt asks of the provider, without secrets (no tokens, links or emails).
fn request_summary(plan: &Plan, m: &MembershipRow) -> String {
    match plan {
        Plan::Telegram { chat_id } => format!(
            "telegram chat {chat_id}: lift removal, single-use invite link, send to {}",
            if m.telegram_user_id.is_some() { "the buyer by DM" } else { "the buyer's email" }
        ),
        Plan::Discord { guild_id, role_id } => format!(
            "discord guild {guild_id}: role {role_id} for user {}{}",
            m.discord_user_id.as_deref().unwrap_or("(missing)"),
            if m.discord_access_token.is_some() { ", join with OAuth token if needed" } else { "" }
        ),
        Plan::Fallback { .. } => "no automation configured: deliver the product's fallback invite link".into(),
        Plan::NotConfigured => "no automation and no fallback link configured".into(),
    }
}

async fn hand_over(ctx: &JobContext, plan: &Plan, m: &MembershipRow, attempt_id: &str) -> Result<Delivered, ProviderError> {
    ctx.auth_breaker.check(plan.provider())?;
    match plan {
        Plan::Telegram { chat_id } => {
            let Some(tg) = &ctx.providers.telegram else { return Err(ProviderError::not_configured("telegram")) };
            if m.telegram_user_id.is_none() && m.email.is_none() {
                return Err(ProviderError::identity_missing("telegram_user_id or email"));
            }
            if let Some(user) = m.telegram_user_id {
                tg.lift_removal(*chat_id, user).await?;
            }
            let expire = chrono::DateTime::from_timestamp_millis(now_ms() + INVITE_VALIDITY_MS).unwrap_or_default();
            let link = tg.create_invite_link(*chat_id, expire, &m.id).await?;
            let text = invite_text(&link);
            let dm = match m.telegram_user_id {
                Some(user) => tg.send_message(user, &text).await,
                None => Err(ProviderError::identity_missing("telegram_user_id")),
            };
            match (dm, &m.email) {
                (Ok(()), _) => Ok(Delivered { invite_url: Some(link), fallback_used: false, via: "telegram_dm" }),
                // The buyer cannot be messaged (blocked the bot, never started it): email instead.
                (Err(e), Some(email)) if e.class == ErrorClass::MemberPermanent => {
                    ctx.providers.mailer.send(email, "Your access link", &text, None, attempt_id).await?;
                    Ok(Delivered { invite_url: Some(link), fallback_used: false, via: "email" })
                }
                (Err(e), _) => Err(e),
            }
        }
        Plan::Discord { guild_id, role_id } => {
            let Some(dc) = &ctx.providers.discord else { return Err(ProviderError::not_configured("discord")) };
            let Some(user) = &m.discord_user_id else { return Err(ProviderError::identity_missing("discord_user_id")) };
            dc.grant_role(guild_id, user, role_id, m.discord_access_token.as_deref()).await?;
            Ok(Delivered { invite_url: None, fallback_used: false, via: "discord_role" })
        }
        Plan::Fallback { url } => {
            // The link is on the membership for the merchant; email it too when we can.
            let via = match &m.email {
                Some(email) => match ctx.providers.mailer.send(email, "Your access link", &invite_text(url), None, attempt_id).await {
                    Ok(()) => "fallback_link_emailed",
                    Err(e) => {
                        tracing::warn!(error = %e, "could not email the fallback link; it stays on the membership");
                        "fallback_link"
                    }
                },
                None => "fallback_link",
            };
            Ok(Delivered { invite_url: Some(url.clone()), fallback_used: true, via })
        }
        Plan::NotConfigured => Err(ProviderError::not_configured(
            "delivery for this product (no bot token with a chat/guild, and no fallback_invite_url)",
        )),
    }
}

fn invite_text(link: &str) -> String {
    format!("Thanks for your purchase! Here is your access link (single use): {link}")
}

/// What a delivery attempt writes: the attempt, the membership's delivery state, events
/// (and their webhook fan-out), the delivery ticket on manual review; and the job's next run.
struct DeliveryOutcome {
    job_id: String,
    /// The job's failed runs before this one.
    failures: i64,
    intent: DeliveryJob,
    attempt: AttemptRow,
    /// False when the attempt row is first written here (no provider call was made).
    attempt_recorded: bool,
    result: Result<Delivered, ProviderError>,
    retry_schedule: Vec<Period>,
    lease_ms: i64,
    lock_wait_ms: i64,
}

impl Record for DeliveryOutcome {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(self.write(conn, now))
    }
}

impl DeliveryOutcome {
    async fn write(&self, tx: &mut AnyConnection, now: i64) -> anyhow::Result<Finish> {
        let intent = &self.intent;
        let mut attempt = self.attempt.clone();
        let mut m = if self.attempt_recorded {
            let Some(m) = memberships::get_any(tx, &attempt.membership_id).await? else { return Ok(Finish::Done) };
            m
        } else {
            // No provider attempt held the lock for this one: take it now and read the
            // membership under it, so no other attempt commits between our read and our write.
            // It is released by the membership update below.
            let until = now + self.lease_ms;
            let Some(m) = memberships::lock_for_attempt_and_get(tx, &attempt.membership_id, &self.job_id, now, until).await? else {
                let exists = memberships::get_any(tx, &attempt.membership_id).await?.is_some();
                return Ok(if exists { Finish::RetryAt { at: now + self.lock_wait_ms, error: None, failed: false } } else { Finish::Done });
            };
            if let Some(reason) = nothing_to_do(&m, intent.trigger) {
                // Another job delivered it meanwhile: nothing to record.
                tracing::info!(reason, "attempt not needed");
                memberships::unlock(tx, &m.id, &self.job_id).await?;
                return Ok(Finish::Done);
            }
            if self.result.is_err() {
                // A failure's ticket summary names this attempt's number before it is written.
                attempt.number = attempts::max_number(tx, &m.id).await? + 1;
            }
            m
        };
        let was_in_review = m.delivery_status == DeliveryStatus::ManualReview.as_str();
        attempt.finished_at = Some(now);
        m.delivery_attempts += 1;
        m.last_attempt_at = Some(now);
        m.updated_at = now;

        let mut delivered_note = None;
        let (finish, events): (Finish, Vec<&str>) = match &self.result {
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
                if let Some(ticket) = m.support_ticket_id.clone().filter(|_| was_in_review || intent.trigger == Trigger::Manual) {
                    delivered_note = Some((ticket, delivered.via));
                }
                (Finish::Done, vec!["delivery.succeeded"])
            }
            Err(e) => {
                attempt::record_failure(&mut attempt, &mut m, e);
                let failures = usize::try_from(self.failures + 1).unwrap_or(usize::MAX);
                // A manual push from manual review is one try: failing leaves it in review.
                let stays_in_review = was_in_review && intent.trigger == Trigger::Manual;
                let delay = if e.retryable() && !stays_in_review {
                    next_delay(&self.retry_schedule, failures, e.retry_after)
                } else {
                    None
                };
                match delay {
                    Some(delay) => {
                        let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
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
                        let (ticket, _) =
                            support::open_or_reuse_delivery_ticket(tx, &m, "Delivery needs attention", &summary, now).await?;
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
        if self.attempt_recorded {
            attempts::finish(tx, &attempt).await?;
        } else {
            attempt.number = attempts::insert_finished(tx, &attempt).await?;
        }
        if let Some((ticket, via)) = delivered_note {
            let note = format!("Delivered on attempt #{} ({} trigger, via {via}).", attempt.number, attempt.trigger_kind);
            support::add_system_message(tx, &ticket, &note, now).await?;
        }
        let data = serde_json::to_value(MembershipView::from(&m))?;
        for kind in events {
            record_event(tx, &m.merchant_id, kind, Some(&m.id), attempt.payment_id.as_deref(), data.clone(), now).await?;
        }
        Ok(finish)
    }
}

/// The system message on the delivery ticket: what was tried, what failed, what to do next.
async fn review_summary(
    tx: &mut sqlx::AnyConnection,
    m: &MembershipRow,
    current: &AttemptRow,
    error: &ProviderError,
) -> anyhow::Result<String> {
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
    lines.push(next_step(error).into());
    Ok(lines.join("\n"))
}

fn next_step(error: &ProviderError) -> &'static str {
    match (error.class, error.code.as_str()) {
        (_, "user_blocked_bot" | "user_not_started_bot") => {
            "Next step: ask the buyer to start (or unblock) the bot, then retry delivery."
        }
        (_, "member_not_in_guild" | "invalid_oauth_token") => {
            "Next step: ask the buyer to join the server or re-authorise, then retry delivery."
        }
        (_, "identity_missing" | "identity_invalid" | "unknown_user" | "user_deactivated") => "Next step: add the buyer's platform id to the membership, then retry delivery.",
        (ErrorClass::Configuration, _) => "Next step: fix the bot's access or rights (see delivery diagnostics), then retry delivery.",
        _ => "Next step: check delivery diagnostics, then retry delivery.",
    }
}

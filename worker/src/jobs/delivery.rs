//! Delivery: hand over access after a payment (SPEC §6), record every attempt, and decide the
//! next step — delivered, retry on the schedule, or manual review with a support ticket.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hilt_shared::{
    metrics,
    clock::now_ms,
    domain::Platform,
    providers::{ErrorClass, ProviderError},
    queue::{DeliveryJob, Queue, Trigger},
    service::delivery::{self, Delivered, DeliveryAttempt, no_delivery_needed},
    storage::{
        attempts::AttemptRow,
        jobs::{Finish, JobRow},
        memberships::{self, MembershipRow},
        products::{self, ProductRow},
    },
};
use sqlx::AnyConnection;
use tracing::Instrument;

use super::{AttemptError, attempt, invite_links, provider_result};
use crate::{
    JobContext,
    engine::{Job, Outcome, Record},
};

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

    /// The Discord guild whose buckets the attempt uses.
    fn guild(&self) -> Option<&str> {
        match self {
            Plan::Discord { guild_id, .. } => Some(guild_id),
            _ => None,
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
        if let Some(reason) = no_delivery_needed(&membership, intent.trigger) {
            tracing::info!(reason, "attempt not needed");
            return Ok(Outcome::done());
        }
        let Some(product) = product else { return Ok(Outcome::dead("product no longer exists")) };
        let plan = Plan::for_product(ctx, &product);
        if let Some(wait) = super::wait_for_pause(ctx, job, plan.provider(), now) {
            return Ok(wait);
        }
        if let Some(wait) = super::wait_for_slot(ctx, job, plan.provider(), plan.guild(), now).await {
            return Ok(wait);
        }
        if !plan.calls_out(&membership) {
            // Nothing leaves the process (a fallback link to show, or nothing configured): the
            // attempt is written whole with its outcome, in the completer's transaction.
            let summary = request_summary(&plan, &membership);
            let mut attempt =
                attempt::new_attempt(ctx, job, &membership, intent.trigger, intent.payment_id.clone(), plan.provider(), summary, now);
            attempt.duration_ms = Some(0);
            let result = provider_result(hand_over(ctx, &plan, &membership, &product, &attempt.id).await)?;
            return Ok(Outcome::record(outcome(ctx, job, intent, attempt, result, false)));
        }

        // 1. Take the membership's attempt lock and write the attempt row, committed before the
        //    provider is called.
        let ready = match attempt::prepare(ctx, job, &intent.membership_id, now, |m| no_delivery_needed(m, intent.trigger)).await? {
            Ok(ready) => ready,
            Err(finish) => return Ok(Outcome::Finish(finish)),
        };
        let plan = Plan::for_product(ctx, &ready.product);
        let summary = request_summary(&plan, &ready.membership);
        let (mut attempt, membership, product) =
            attempt::start(ctx, job, ready, intent.trigger, intent.payment_id.clone(), plan.provider(), summary, now).await?;

        // 2. The provider call, outside any transaction.
        let started = Instant::now();
        let span = tracing::info_span!("attempt", attempt.id = %attempt.id, provider = plan.provider());
        let result = provider_result(hand_over(ctx, &plan, &membership, &product, &attempt.id).instrument(span).await)?;
        attempt.duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        match &result {
            Ok(_) => {
                metrics::delivery_attempt(plan.provider(), "succeeded", "", started.elapsed());
                ctx.auth_breaker.record_success(&ctx.db, plan.provider()).await;
                if intent.trigger == Trigger::Automatic {
                    // The job was written in the transaction that confirmed the payment.
                    metrics::delivered(Duration::from_millis(u64::try_from(now_ms() - job.created_at).unwrap_or(0)));
                }
            }
            Err(e) => {
                metrics::delivery_attempt(plan.provider(), "failed", &e.code, started.elapsed());
                ctx.auth_breaker.record_failure(&ctx.db, &ctx.worker_id, plan.provider(), e.http_status).await;
            }
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
) -> DeliveryAttempt {
    DeliveryAttempt {
        job_id: job.id.clone(),
        failures: job.failures,
        trigger: intent.trigger,
        attempt,
        attempt_recorded,
        result,
        retry_schedule: ctx.tuning.retry_schedule.clone(),
        lock_wait_ms: i64::try_from(ctx.tuning.lock_wait.as_millis()).unwrap_or(1_000),
    }
}

/// What the attempt asks of the provider, without secrets (no tokens, links or emails).
fn request_summary(plan: &Plan, m: &MembershipRow) -> String {
    match plan {
        Plan::Telegram { chat_id } => format!(
            "telegram chat {chat_id}: lift removal, revoke earlier links, single-use invite link, send to {}",
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

async fn hand_over(ctx: &JobContext, plan: &Plan, m: &MembershipRow, product: &ProductRow, attempt_id: &str) -> Result<Delivered, AttemptError> {
    match plan {
        Plan::Telegram { chat_id } => {
            let Some(tg) = &ctx.providers.telegram else { return Err(ProviderError::not_configured("telegram").into()) };
            if m.telegram_user_id.is_none() && m.email.is_none() {
                return Err(ProviderError::identity_missing("telegram_user_id or email").into());
            }
            if let Some(user) = m.telegram_user_id {
                tg.lift_removal(*chat_id, user).await?;
            }
            // Whatever an earlier attempt handed out (or may have, if it was lost mid-call)
            // stops working before a new link exists: one live link per membership at most.
            invite_links::revoke_all(ctx, tg, *chat_id, &m.id).await?;
            let link = invite_links::create(ctx, tg, *chat_id, m, product, attempt_id).await?;
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
                (Err(e), _) => Err(e.into()),
            }
        }
        Plan::Discord { guild_id, role_id } => {
            let Some(dc) = &ctx.providers.discord else { return Err(ProviderError::not_configured("discord").into()) };
            let Some(user) = &m.discord_user_id else { return Err(ProviderError::identity_missing("discord_user_id").into()) };
            let token = oauth_token(ctx, m)?;
            dc.grant_role(guild_id, user, role_id, token.as_deref()).await?;
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
        )
        .into()),
    }
}

/// The buyer's Discord OAuth token, opened with `HILT_ENCRYPTION_KEY` (stored sealed, see
/// `hilt_shared::secrets`). A token that cannot be opened is our failure, not the buyer's.
fn oauth_token(ctx: &JobContext, m: &MembershipRow) -> Result<Option<String>, AttemptError> {
    let Some(sealed) = &m.discord_access_token else { return Ok(None) };
    let Some(key) = &ctx.config.encryption_key else {
        return Err(AttemptError::Internal(anyhow::anyhow!("HILT_ENCRYPTION_KEY is not set, but the membership holds a sealed OAuth token")));
    };
    key.open(sealed).map(Some).map_err(|e| AttemptError::Internal(e.into()))
}

fn invite_text(link: &str) -> String {
    format!("Thanks for your purchase! Here is your access link (single use): {link}")
}

/// The attempt, the membership's delivery state, events and the ticket on manual review,
/// written by the completer (see [`delivery::record_delivery`]).
impl Record for DeliveryAttempt {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(async move { Ok(delivery::record_delivery(conn, now, self).await?) })
    }
}

//! Revoke: take away access that expired (SPEC §8). Telegram: remove without a permanent ban
//! (ban + unban, so the buyer can come back after paying again); Discord: remove the role.
//! Every try is a delivery attempt with trigger `revoke`, retried on the delivery schedule.
//! A membership renewed (or gifted) in the meantime keeps its access: the job completes
//! without calling the provider.

use std::time::Instant;

use futures::future::BoxFuture;
use hilt_shared::{
    clock::now_ms,
    domain::{DeliveryStatus, MembershipStatus, Platform},
    providers::ProviderError,
    queue::{Queue, RevokeJob, Trigger},
    service::delivery::{self, RevokeAttempt},
    storage::{
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

/// What removing access means for a product, given what is configured and known.
enum Plan {
    /// Revoke the membership's live invite links, then remove the buyer when their id is known
    /// (a buyer who got the link by email is known to Telegram only through the link).
    Telegram { chat_id: i64, user_id: Option<i64> },
    Discord { guild_id: String, role_id: String, user_id: String },
    /// Nothing Hilt can remove: access was the product's fallback link, or an unknown user.
    Nothing { provider: &'static str, why: &'static str },
}

impl Plan {
    fn for_membership(ctx: &JobContext, product: &ProductRow, m: &MembershipRow) -> Self {
        match Platform::parse(&product.platform) {
            Some(Platform::Telegram) => match (&ctx.providers.telegram, product.telegram_chat_id) {
                (Some(_), Some(chat_id)) => Plan::Telegram { chat_id, user_id: m.telegram_user_id },
                _ => Plan::Nothing { provider: "fallback", why: "no Telegram automation for this product (fallback link only); nothing to remove" },
            },
            Some(Platform::Discord) => {
                match (&ctx.providers.discord, &product.discord_guild_id, &product.discord_role_id, &m.discord_user_id) {
                    (Some(_), Some(g), Some(r), Some(u)) => {
                        Plan::Discord { guild_id: g.clone(), role_id: r.clone(), user_id: u.clone() }
                    }
                    (Some(_), Some(_), Some(_), None) => {
                        Plan::Nothing { provider: "discord", why: "the buyer's Discord user id is unknown; nothing to remove" }
                    }
                    _ => Plan::Nothing { provider: "fallback", why: "no Discord automation for this product (fallback link only); nothing to remove" },
                }
            }
            None => Plan::Nothing { provider: "none", why: "unknown platform; nothing to remove" },
        }
    }

    fn provider(&self) -> &'static str {
        match self {
            Plan::Telegram { .. } => "telegram",
            Plan::Discord { .. } => "discord",
            Plan::Nothing { provider, .. } => provider,
        }
    }

    fn request_summary(&self) -> String {
        match self {
            Plan::Telegram { chat_id, user_id: Some(_) } => {
                format!("telegram chat {chat_id}: revoke the buyer's invite links, remove the buyer without a permanent ban (ban + unban)")
            }
            Plan::Telegram { chat_id, user_id: None } => format!(
                "telegram chat {chat_id}: revoke the buyer's invite links (the buyer's Telegram user id is unknown, so a member who joined cannot be removed)"
            ),
            Plan::Discord { guild_id, role_id, user_id } => format!("discord guild {guild_id}: remove role {role_id} from user {user_id}"),
            Plan::Nothing { why, .. } => (*why).to_owned(),
        }
    }
}

pub struct Revoke;

impl Job for Revoke {
    const QUEUE: Queue = Queue::Revoke;
    type Payload = RevokeJob;

    async fn run(ctx: &JobContext, job: &JobRow, intent: RevokeJob) -> anyhow::Result<Outcome> {
        let now = now_ms();
        // Before the membership is locked: a job waiting for its provider slot holds nothing.
        if let Some(wait) = wait_for_slot(ctx, job, &intent.membership_id, now).await? {
            return Ok(wait);
        }
        let ready = match attempt::prepare(ctx, job, &intent.membership_id, now, nothing_to_do).await? {
            Ok(ready) => ready,
            Err(finish) => return Ok(Outcome::Finish(finish)),
        };
        // The same per-membership lock as delivery: a removal never races a re-delivery.
        let plan = Plan::for_membership(ctx, &ready.product, &ready.membership);
        if let Some(wait) = super::wait_for_pause(ctx, job, plan.provider(), now) {
            return Ok(wait); // dropping `ready` rolls its lock back
        }
        let summary = plan.request_summary();
        let (mut attempt, _, _) = attempt::start(ctx, job, ready, Trigger::Revoke, None, plan.provider(), summary, now).await?;

        let started = Instant::now();
        let span = tracing::info_span!("attempt", attempt.id = %attempt.id, provider = plan.provider());
        let result = provider_result(remove(ctx, &plan, &intent.membership_id).instrument(span).await)?;
        attempt.duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        match &result {
            Ok(_) => {
                hilt_shared::metrics::delivery_attempt(plan.provider(), "succeeded", "", started.elapsed());
                ctx.auth_breaker.record_success(&ctx.db, plan.provider()).await;
            }
            Err(e) => {
                hilt_shared::metrics::delivery_attempt(plan.provider(), "failed", &e.code, started.elapsed());
                ctx.auth_breaker.record_failure(&ctx.db, &ctx.worker_id, plan.provider(), e.http_status).await;
            }
        }
        Ok(Outcome::record(RevokeAttempt { failures: job.failures, attempt, result, retry_schedule: ctx.tuning.retry_schedule.clone() }))
    }
}

/// [`super::wait_for_slot`] for the removal the membership's product would need.
async fn wait_for_slot(ctx: &JobContext, job: &JobRow, membership_id: &str, now: i64) -> anyhow::Result<Option<Outcome>> {
    let mut conn = ctx.db.conn().await?;
    let Some(m) = memberships::get_any(&mut conn, membership_id).await? else { return Ok(None) };
    let Some(product) = products::get(&mut conn, &m.merchant_id, &m.product_id).await? else { return Ok(None) };
    drop(conn);
    let plan = Plan::for_membership(ctx, &product, &m);
    let guild = match &plan {
        Plan::Discord { guild_id, .. } => Some(guild_id.as_str()),
        _ => None,
    };
    Ok(super::wait_for_slot(ctx, job, plan.provider(), guild, now).await)
}

/// Access that is current again, or already removed, needs no removal.
fn nothing_to_do(m: &MembershipRow) -> Option<&'static str> {
    match MembershipStatus::parse(&m.status) {
        Some(MembershipStatus::Active | MembershipStatus::Grace) => Some("membership has access again (renewed or gifted)"),
        _ if m.delivery_status == DeliveryStatus::Revoked.as_str() => Some("access already revoked"),
        _ => None,
    }
}

/// Calls the provider; `Ok` carries the response summary.
async fn remove(ctx: &JobContext, plan: &Plan, membership_id: &str) -> Result<String, AttemptError> {
    match plan {
        Plan::Telegram { chat_id, user_id } => {
            let Some(tg) = &ctx.providers.telegram else { return Err(ProviderError::not_configured("telegram").into()) };
            // Links first: a link left live would let the buyer straight back in.
            let links = invite_links::revoke_all(ctx, tg, *chat_id, membership_id).await?;
            let Some(user_id) = user_id else {
                return Ok(format!("{links} invite link(s) revoked; the buyer's Telegram user id is unknown, so nobody was removed"));
            };
            tg.remove_member(*chat_id, *user_id).await?;
            Ok(format!("{links} invite link(s) revoked; removed from the chat, the ban lifted so the buyer can rejoin after paying"))
        }
        Plan::Discord { guild_id, role_id, user_id } => {
            let Some(dc) = &ctx.providers.discord else { return Err(ProviderError::not_configured("discord").into()) };
            match dc.remove_role(guild_id, user_id, role_id).await {
                Ok(()) => Ok("role removed".into()),
                // Someone who left the guild has no role to remove.
                Err(e) if e.code == "member_not_in_guild" => Ok("the member already left the guild; no role to remove".into()),
                Err(e) => Err(e.into()),
            }
        }
        Plan::Nothing { why, .. } => Ok((*why).to_owned()),
    }
}

/// The attempt, the membership (revoked, or delivering again when renewed meanwhile), the
/// event or the ticket, written by the completer (see [`delivery::record_revoke`]).
impl Record for RevokeAttempt {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(async move { Ok(delivery::record_revoke(conn, now, self).await?) })
    }
}

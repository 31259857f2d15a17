//! A renewal reminder (queue `renewal`): one message before a paid period ends, carrying the
//! product's renewal link, by Telegram DM or else email.
//!
//! Exactly-once rests on the `renewal_reminders` row, as a proof email's does on its request:
//! the run claims it (`queued` → `sending`, attempts + 1) and commits before the message
//! leaves, then records the outcome with the job's finish. A run that finds the row `sent`,
//! `failed` or `skipped` completes without sending; one that finds it `sending` comes back
//! after the claim ends, and once it has ended (a worker died mid-send) marks it `failed`
//! with `outcome_unknown` rather than risk a second message. A transient provider error puts
//! the row back to `queued` and retries on `Tuning::reminder_schedule`; a buyer who cannot be
//! reached (blocked the bot, no address) is `failed` with the provider's code, listed on /ops.

use std::time::Duration;

use futures::future::BoxFuture;
use hilt_shared::{
    clock::{Millis, now_ms, rfc3339},
    domain::{MembershipStatus, retry::next_delay},
    providers::{ErrorClass, ProviderError},
    queue::{Queue, ReminderJob},
    storage::{
        jobs::{Finish, JobRow},
        memberships::{self, MembershipRow},
        products,
        renewal_reminders::{self, ReminderRow},
    },
};
use sqlx::AnyConnection;

use crate::{
    JobContext,
    engine::{Job, Outcome, Record},
};

/// How long a claim protects a send in progress (a Telegram call or one SMTP exchange).
const SEND_LEASE_MS: i64 = 2 * 60_000;

pub struct Reminder;

impl Job for Reminder {
    const QUEUE: Queue = Queue::Renewal;
    type Payload = ReminderJob;

    async fn run(ctx: &JobContext, _job: &JobRow, intent: ReminderJob) -> anyhow::Result<Outcome> {
        let now = now_ms();
        let mut tx = ctx.db.begin().await?;
        let Some(row) = renewal_reminders::get(&mut tx, &intent.membership_id, intent.period_end, intent.offset_ms).await? else {
            return Ok(Outcome::dead("no such reminder"));
        };
        match row.status.as_str() {
            "queued" => {}
            "sending" => {
                if let Some(until) = row.sending_until.filter(|until| *until >= now) {
                    return Ok(Outcome::Finish(Finish::RetryAt { at: until + 1, error: None, failed: false }));
                }
                let unknown = ReminderRow { status: "failed".into(), error_code: Some("outcome_unknown".into()), finished_at: Some(now), ..row };
                renewal_reminders::finish(&mut tx, &unknown).await?;
                tx.commit().await?;
                tracing::warn!(membership.id = %unknown.membership_id, "reminder outcome unknown after a lost claim; not resent");
                return Ok(Outcome::dead("outcome_unknown"));
            }
            _ => return Ok(Outcome::done()),
        }
        let Some(m) = memberships::get_any(&mut tx, &row.membership_id).await? else {
            return Ok(Outcome::dead("membership no longer exists"));
        };
        if let Some(why) = no_longer_due(&m, row.period_end) {
            let skipped = ReminderRow { status: "skipped".into(), error_code: Some(why.into()), finished_at: Some(now), ..row };
            renewal_reminders::finish(&mut tx, &skipped).await?;
            tx.commit().await?;
            return Ok(Outcome::done());
        }
        let product = products::get(&mut tx, &m.merchant_id, &m.product_id).await?;
        if !renewal_reminders::start_sending(&mut tx, &row, now + SEND_LEASE_MS).await? {
            return Ok(Outcome::Finish(Finish::RetryAt { at: now + 1_000, error: None, failed: false }));
        }
        tx.commit().await?;

        let name = product.as_ref().map_or("your membership", |p| p.name.as_str());
        let link = product.as_ref().and_then(|p| products::renewal_link(p, &m.id));
        let text = reminder_text(name, row.period_end, now, link.as_deref());
        let message_id = format!("reminder-{}-{}-{}", m.id, row.period_end, row.offset_ms);
        let (channel, result) = deliver(ctx, &m, &text, &message_id).await;
        Ok(Outcome::record(outcome(ctx, row, channel, result)))
    }
}

/// Why a queued reminder is no longer worth sending: the period was paid (a new period end), the
/// access ended, or a cancellation was scheduled meanwhile.
fn no_longer_due(m: &MembershipRow, period_end: Millis) -> Option<&'static str> {
    if m.current_period_end != Some(period_end) {
        Some("renewed")
    } else if MembershipStatus::parse(&m.status) != Some(MembershipStatus::Active) {
        Some("access_ended")
    } else if m.cancel_at_period_end != 0 {
        Some("cancellation_scheduled")
    } else {
        None
    }
}

/// The reminder's row after the send, written by the completer with the job's finish.
pub struct ReminderSend {
    row: ReminderRow,
    finish: Finish,
}

impl Record for ReminderSend {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, _now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(async move {
            renewal_reminders::finish(conn, &self.row).await?;
            Ok(self.finish.clone())
        })
    }

    fn keep_when_lease_lost(&self) -> bool {
        true
    }
}

fn outcome(ctx: &JobContext, claimed: ReminderRow, channel: &str, result: Result<(), ProviderError>) -> ReminderSend {
    let now = now_ms();
    let attempt = claimed.attempts + 1;
    let mut row = ReminderRow { channel: channel.to_owned(), sending_until: None, attempts: attempt, ..claimed };
    let finish = match result {
        Ok(()) => {
            row.status = "sent".into();
            row.error_code = None;
            row.finished_at = Some(now);
            tracing::info!(membership.id = %row.membership_id, attempt, channel, "renewal reminder sent");
            Finish::Done
        }
        Err(e) => {
            row.error_code = Some(e.code.clone());
            let failures = usize::try_from(attempt).unwrap_or(usize::MAX);
            let delay = if e.retryable() { next_delay(&ctx.tuning.reminder_schedule, failures, e.retry_after) } else { None };
            match delay {
                Some(delay) => {
                    row.status = "queued".into();
                    tracing::warn!(membership.id = %row.membership_id, attempt, error.code = %e.code, "renewal reminder deferred; retry scheduled");
                    let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    Finish::RetryAt { at, error: Some(e.code.clone()), failed: true }
                }
                None => {
                    row.status = "failed".into();
                    row.finished_at = Some(now);
                    tracing::warn!(membership.id = %row.membership_id, attempt, error.code = %e.code, "renewal reminder failed: the buyer was not reached");
                    Finish::Dead { error: e.code.clone() }
                }
            }
        }
    };
    ReminderSend { row, finish }
}

/// Telegram DM when the buyer's Telegram id is known and the bot is configured; a buyer the bot
/// cannot message gets the email when an address is known.
async fn deliver(ctx: &JobContext, m: &MembershipRow, text: &str, message_id: &str) -> (&'static str, Result<(), ProviderError>) {
    let subject = "Your access is ending soon";
    if let (Some(tg), Some(user)) = (&ctx.providers.telegram, m.telegram_user_id) {
        match tg.send_message(user, text).await {
            Ok(()) => return ("telegram", Ok(())),
            Err(e) if e.class == ErrorClass::MemberPermanent && m.email.is_some() => {}
            Err(e) => return ("telegram", Err(e)),
        }
    }
    match &m.email {
        Some(email) => ("email", ctx.providers.mailer.send(email, subject, text, None, message_id).await),
        None => ("none", Err(ProviderError::identity_missing("telegram_user_id or email"))),
    }
}

fn reminder_text(product: &str, period_end: Millis, now: Millis, renewal_link: Option<&str>) -> String {
    let when = chrono::DateTime::from_timestamp_millis(period_end)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| rfc3339(period_end));
    let renew = renewal_link.map(|link| format!(" Renew here: {link}")).unwrap_or_default();
    format!(
        "Your access to {product} ends on {when} (in {}). Renew before then to keep your access.{renew}",
        human(Duration::from_millis(u64::try_from(period_end - now).unwrap_or(0)))
    )
}

fn human(left: Duration) -> String {
    let secs = left.as_secs();
    let (n, unit) = match secs {
        s if s >= 86_400 => (s.div_ceil(86_400), "day"),
        s if s >= 3_600 => (s.div_ceil(3_600), "hour"),
        s if s >= 60 => (s.div_ceil(60), "minute"),
        s => (s.max(1), "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_naturally() {
        assert_eq!(human(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(human(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human(Duration::from_secs(5_000)), "2 hours");
        assert_eq!(human(Duration::from_millis(1_500)), "1 second");
    }
}

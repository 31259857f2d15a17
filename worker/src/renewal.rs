//! The renewal run (SPEC §8), every `HILT_RENEWAL_INTERVAL`, one run at a time across all
//! workers (the `renewal` lease):
//!
//! 1. `active` memberships whose paid period ended enter `grace` (`membership.grace`) and a
//!    recurring one becomes `past_due` (`subscription.past_due`); one whose cancellation was
//!    scheduled expires at once instead, without grace;
//! 2. `grace` memberships past the product's grace period expire (`membership.expired`; a
//!    recurring one becomes `unpaid`, `subscription.unpaid`) and a `revoke` job is written in
//!    the same transaction;
//! 3. reminders are due before period end at the `HILT_RENEWAL_REMINDERS` offsets: each one's
//!    `renewal_reminders` row (membership, period end, offset) and a job on the `renewal` queue
//!    are written together; the job sends it (`jobs::reminder`). A membership whose
//!    cancellation is scheduled gets none.
//!
//! Every transition is a conditional update (`WHERE status = …`), so a renewal confirmed at the
//! same moment wins and two overlapping runs cannot transition a membership twice; the lease
//! only keeps workers from doing the same scan at once.

use std::{collections::HashMap, sync::Arc};

use hilt_shared::{
    clock::{Millis, now_ms, rfc3339},
    domain::{MembershipStatus, Period},
    queue::{self, Queue, ReminderJob, RevokeJob},
    domain::CollectionState,
    service::{memberships::set_collection_state, payments::record_event},
    storage::{
        jobs, leases,
        memberships::{self, MembershipRow},
        products::{self, ProductRow},
        renewal_reminders::{self, ReminderRow},
    },
};
use tokio::sync::watch;

use crate::JobContext;

pub const LEASE_NAME: &str = "renewal";
/// Memberships handled per phase and run; the next run continues.
const BATCH: i64 = 500;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RenewalRun {
    pub entered_grace: usize,
    pub expired: usize,
    /// Reminder jobs written (the `renewal` queue sends them).
    pub reminders_queued: usize,
    pub reminders_skipped: usize,
}

/// The background loop every worker runs; only the lease holder does the work.
pub async fn run_loop(ctx: Arc<JobContext>, mut stop: watch::Receiver<bool>) {
    let every = ctx.config.renewal_interval.0;
    loop {
        if let Err(e) = tick(&ctx).await {
            tracing::warn!(error = %e, "renewal run failed; retrying next interval");
        }
        let _ = tokio::time::timeout(every, stop.wait_for(|s| *s)).await;
        if *stop.borrow() {
            return;
        }
    }
}

/// One run if this worker holds the `renewal` lease; None when another worker has it.
pub async fn tick(ctx: &JobContext) -> anyhow::Result<Option<RenewalRun>> {
    let now = now_ms();
    let hold = ctx.config.renewal_interval.as_millis().saturating_mul(3).max(1_000);
    if !leases::acquire(&mut *ctx.db.conn().await?, LEASE_NAME, &ctx.worker_id, now, now + hold).await? {
        return Ok(None);
    }
    let mut run = RenewalRun::default();
    let mut products = ProductCache::default();
    enter_grace(ctx, &mut products, &mut run).await?;
    expire(ctx, &mut products, &mut run).await?;
    send_reminders(ctx, &mut products, &mut run).await?;
    if run != RenewalRun::default() {
        tracing::info!(?run, "renewal run");
    }
    Ok(Some(run))
}

#[derive(Default)]
struct ProductCache(HashMap<String, Option<ProductRow>>);

impl ProductCache {
    async fn get(&mut self, ctx: &JobContext, m: &MembershipRow) -> anyhow::Result<Option<ProductRow>> {
        if let Some(p) = self.0.get(&m.product_id) {
            return Ok(p.clone());
        }
        let p = products::get(&mut *ctx.db.conn().await?, &m.merchant_id, &m.product_id).await?;
        self.0.insert(m.product_id.clone(), p.clone());
        Ok(p)
    }
}

async fn enter_grace(ctx: &JobContext, products: &mut ProductCache, run: &mut RenewalRun) -> anyhow::Result<()> {
    let now = now_ms();
    for m in memberships::period_ended(&mut *ctx.db.conn().await?, now, BATCH).await? {
        let product = products.get(ctx, &m).await?;
        let grace_ms = product.as_ref().map_or(0, |p| p.grace_period_ms);
        let mut tx = ctx.db.begin().await?;
        if m.cancel_at_period_end != 0 {
            // A scheduled cancellation: access ends at period end, no grace.
            if memberships::move_status(&mut tx, &m.id, MembershipStatus::Active.as_str(), MembershipStatus::Expired.as_str(), now, now).await? {
                end_access(&mut tx, &m, "cancelled at period end", now).await?;
                run.expired += 1;
                tracing::info!(membership.id = %m.id, "membership ended by its scheduled cancellation; access removal queued");
            }
            tx.commit().await?;
            continue;
        }
        let moved = memberships::move_status(&mut tx, &m.id, MembershipStatus::Active.as_str(), MembershipStatus::Grace.as_str(), now, now).await?;
        if moved {
            if product.as_ref().is_some_and(|p| p.recurring != 0) {
                set_collection_state(&mut tx, &m, CollectionState::PastDue, now).await?;
            }
            let end = m.current_period_end.unwrap_or(now);
            let data = serde_json::json!({
                "membership_id": m.id,
                "product_id": m.product_id,
                "current_period_end": rfc3339(end),
                "grace_ends_at": rfc3339(end + grace_ms),
            });
            record_event(&mut tx, &m.merchant_id, "membership.grace", Some(&m.id), None, data, now).await?;
            run.entered_grace += 1;
            tracing::info!(membership.id = %m.id, "membership entered grace");
        }
        tx.commit().await?;
    }
    Ok(())
}

async fn expire(ctx: &JobContext, products: &mut ProductCache, run: &mut RenewalRun) -> anyhow::Result<()> {
    let now = now_ms();
    for m in memberships::grace_ended(&mut *ctx.db.conn().await?, now, BATCH).await? {
        let Some(product) = products.get(ctx, &m).await? else { continue };
        let mut tx = ctx.db.begin().await?;
        let ended_before = now - product.grace_period_ms;
        let moved = memberships::move_status(&mut tx, &m.id, MembershipStatus::Grace.as_str(), MembershipStatus::Expired.as_str(), ended_before, now).await?;
        if moved {
            if product.recurring != 0 {
                set_collection_state(&mut tx, &m, CollectionState::Unpaid, now).await?;
            }
            end_access(&mut tx, &m, "grace ended", now).await?;
            run.expired += 1;
            tracing::info!(membership.id = %m.id, "membership expired; access removal queued");
        }
        tx.commit().await?;
    }
    Ok(())
}

/// `membership.expired` and the `revoke` job that removes access, in the caller's transaction.
async fn end_access(tx: &mut sqlx::AnyConnection, m: &MembershipRow, reason: &str, now: Millis) -> anyhow::Result<()> {
    let data = serde_json::json!({
        "membership_id": m.id,
        "product_id": m.product_id,
        "current_period_end": m.current_period_end.map(rfc3339),
        "delivery_status": m.delivery_status,
        "reason": reason,
    });
    record_event(&mut *tx, &m.merchant_id, "membership.expired", Some(&m.id), None, data, now).await?;
    if !jobs::has_live(&mut *tx, &m.id, Queue::Revoke.as_str()).await? {
        let job = RevokeJob { membership_id: m.id.clone(), period_end: m.current_period_end };
        queue::enqueue_revoke(&mut *tx, &m.merchant_id, &job, now).await?;
    }
    Ok(())
}

/// The reminder offsets due now for a period ending at `period_end`, smallest (most urgent)
/// first. An offset as long as the product's period or longer never applies (a 1-day pass
/// gets no "7 days left" reminder).
fn due_offsets(offsets: &[Period], period_end: Millis, period_ms: Option<i64>, now: Millis) -> Vec<i64> {
    let mut due: Vec<i64> = offsets
        .iter()
        .map(|o| o.as_millis())
        .filter(|o| *o > 0 && period_ms.is_none_or(|p| *o < p) && period_end - o <= now)
        .collect();
    due.sort_unstable();
    due.dedup();
    due
}

/// Which due offsets to send and which to record as skipped: only the most urgent threshold
/// not yet passed by a recorded one is sent; older thresholds crossed at the same time (a run
/// that was late, a short period) are superseded.
fn plan_reminders(due: &[i64], recorded: &[i64]) -> (Option<i64>, Vec<i64>) {
    let smallest_recorded = due.iter().copied().filter(|o| recorded.contains(o)).min();
    let pending: Vec<i64> = due.iter().copied().filter(|o| !recorded.contains(o)).collect();
    let send = pending.iter().copied().min().filter(|o| smallest_recorded.is_none_or(|r| *o < r));
    let skip = pending.into_iter().filter(|o| Some(*o) != send).collect();
    (send, skip)
}

async fn send_reminders(ctx: &JobContext, products: &mut ProductCache, run: &mut RenewalRun) -> anyhow::Result<()> {
    let offsets = &ctx.config.renewal_reminders.0;
    let Some(horizon) = offsets.iter().map(|o| o.as_millis()).max() else { return Ok(()) };
    let now = now_ms();
    for m in memberships::ending_within(&mut *ctx.db.conn().await?, now, horizon, BATCH).await? {
        let Some(period_end) = m.current_period_end else { continue };
        if m.cancel_at_period_end != 0 {
            continue;
        }
        let Some(product) = products.get(ctx, &m).await? else { continue };
        let due = due_offsets(offsets, period_end, product.period_ms, now);
        if due.is_empty() {
            continue;
        }
        let recorded = renewal_reminders::recorded_offsets(&mut *ctx.db.conn().await?, &m.id, period_end).await?;
        let (send, skip) = plan_reminders(&due, &recorded);
        if send.is_none() && skip.is_empty() {
            continue;
        }
        let channel = channel_for(ctx, &m);
        let row = |offset_ms: i64, status: &str, channel: &str| ReminderRow {
            membership_id: m.id.clone(),
            period_end,
            offset_ms,
            merchant_id: m.merchant_id.clone(),
            status: status.to_owned(),
            channel: channel.to_owned(),
            error_code: None,
            created_at: now,
            finished_at: (status == "skipped").then_some(now),
            attempts: 0,
            sending_until: None,
        };
        // The reminder's row and the job that sends it, in one transaction.
        let mut tx = ctx.db.begin().await?;
        for offset in &skip {
            if renewal_reminders::claim(&mut tx, &row(*offset, "skipped", "none")).await? {
                run.reminders_skipped += 1;
            }
        }
        match send {
            Some(offset) if channel == "none" => {
                // Nobody to tell: recorded as skipped so the merchant can see it.
                if renewal_reminders::claim(&mut tx, &row(offset, "skipped", "none")).await? {
                    run.reminders_skipped += 1;
                }
            }
            Some(offset) => {
                if renewal_reminders::claim(&mut tx, &row(offset, "queued", channel)).await? {
                    let job = ReminderJob { membership_id: m.id.clone(), period_end, offset_ms: offset };
                    let payload = serde_json::to_string(&job)?;
                    queue::enqueue(&mut tx, Queue::Renewal, Some(&m.merchant_id), Some(&m.id), payload, now).await?;
                    run.reminders_queued += 1;
                }
            }
            None => {}
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Telegram DM when the buyer's Telegram id is known and the bot is configured, else email.
fn channel_for(ctx: &JobContext, m: &MembershipRow) -> &'static str {
    if ctx.providers.telegram.is_some() && m.telegram_user_id.is_some() {
        "telegram"
    } else if m.email.is_some() {
        "email"
    } else {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periods(list: &str) -> Vec<Period> {
        hilt_shared::domain::duration::parse_list(list).expect("offsets")
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn only_thresholds_already_crossed_and_inside_the_period_are_due() {
        let offsets = periods("7d,3d,1d");
        let end = 100 * DAY;
        assert!(due_offsets(&offsets, end, Some(30 * DAY), end - 8 * DAY).is_empty());
        assert_eq!(due_offsets(&offsets, end, Some(30 * DAY), end - 5 * DAY), [7 * DAY]);
        assert_eq!(due_offsets(&offsets, end, Some(30 * DAY), end - DAY / 2), [DAY, 3 * DAY, 7 * DAY]);
        // A two-day pass never gets the 7- or 3-day reminder.
        assert_eq!(due_offsets(&offsets, end, Some(2 * DAY), end - DAY / 2), [DAY]);
    }

    #[test]
    fn the_most_urgent_unsent_threshold_is_sent_and_older_ones_are_skipped() {
        assert_eq!(plan_reminders(&[7], &[]), (Some(7), vec![]));
        assert_eq!(plan_reminders(&[3, 7], &[7]), (Some(3), vec![]));
        assert_eq!(plan_reminders(&[1, 3, 7], &[]), (Some(1), vec![3, 7]));
        assert_eq!(plan_reminders(&[3, 7], &[3, 7]), (None, vec![]));
        // Sent the 3-day one already: a 7-day one not on record is stale, not sent.
        assert_eq!(plan_reminders(&[3, 7], &[3]), (None, vec![7]));
    }
}

//! The sweeper (one at a time across all workers, under a lease): puts back what the database
//! says is owed but no live job holds — jobs of a dead worker (lease expired) and memberships
//! whose delivery has no job at all.

use hilt_shared::{
    clock::now_ms,
    queue::{self, DeliveryJob, Trigger},
    storage::{
        attempts, jobs, leases,
        memberships::{self, OwedCursor},
    },
};

use crate::JobContext;

pub const LEASE_NAME: &str = "sweeper";
/// Jobs recovered per transaction.
const RECOVER_BATCH: i64 = 500;
/// Owed memberships checked for a live job per page, and pages per pass of the backstop scan:
/// bounded work per pass however large the backlog (a pass resumes where the last one stopped).
const OWED_PAGE: i64 = 1_000;
const OWED_PAGES_PER_PASS: usize = 5;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub recovered_from_dead_workers: usize,
    pub reenqueued_owed_deliveries: usize,
}

/// One sweep if this worker holds the lease; None when another worker is sweeping.
/// `owed_scan` (where the last pass stopped) adds a pass of the backstop scan for owed
/// deliveries that no job holds, which the loop runs at the slower `owed_scan_every` cadence.
pub async fn tick(ctx: &JobContext, owed_scan: Option<&mut Option<OwedCursor>>) -> Result<Option<Swept>, sqlx::Error> {
    let now = now_ms();
    let hold = i64::try_from(ctx.tuning.sweep_every.as_millis() * 5).unwrap_or(i64::MAX);
    if !leases::acquire(&mut *ctx.db.conn().await?, LEASE_NAME, &ctx.worker_id, now, now + hold).await? {
        return Ok(None);
    }
    let mut swept = Swept::default();

    // Jobs of workers that stopped renewing their leases: back to the queue in batches, their
    // unfinished attempts marked `worker_lost`, their attempt locks released.
    loop {
        let mut tx = ctx.db.begin().await?;
        let recovered = jobs::recover_expired(&mut tx, now, RECOVER_BATCH).await?;
        put_back(&mut tx, &recovered, now).await?;
        tx.commit().await?;
        if !recovered.is_empty() {
            tracing::warn!(jobs = recovered.len(), "recovered jobs from a worker that stopped renewing its leases");
        }
        swept.recovered_from_dead_workers += recovered.len();
        if recovered.len() < RECOVER_BATCH as usize {
            break;
        }
    }

    if let Some(cursor) = owed_scan {
        swept.reenqueued_owed_deliveries = reenqueue_owed(ctx, cursor, now).await?;
    }
    if swept != Swept::default() {
        tracing::info!(?swept, "sweeper put work back");
    }
    Ok(Some(swept))
}

/// A pass of the backstop scan from `cursor` (up to `OWED_PAGES_PER_PASS` pages; back to the
/// start after the last page): each owed membership without a waiting or running delivery job
/// gets one again. Returns how many were re-enqueued.
async fn reenqueue_owed(ctx: &JobContext, cursor: &mut Option<OwedCursor>, now: i64) -> Result<usize, sqlx::Error> {
    let mut reenqueued = 0;
    for _ in 0..OWED_PAGES_PER_PASS {
        let page = memberships::owed_page(&mut *ctx.db.conn().await?, cursor.as_ref(), OWED_PAGE).await?;
        *cursor = if page.len() < OWED_PAGE as usize { None } else { page.last().cloned() };
        let ids: Vec<&str> = page.iter().map(|(_, id)| id.as_str()).collect();
        for m in memberships::without_live_delivery_job(&mut *ctx.db.conn().await?, &ids).await? {
            let mut tx = ctx.db.begin().await?;
            if !jobs::has_live(&mut tx, &m.id, "delivery").await? {
                let job = DeliveryJob { membership_id: m.id.clone(), payment_id: Some(m.last_payment_id.clone()), trigger: Trigger::Automatic };
                queue::enqueue_delivery(&mut tx, &m.merchant_id, &job, m.next_retry_at.unwrap_or(now).max(now)).await?;
                reenqueued += 1;
            }
            tx.commit().await?;
        }
        if cursor.is_none() {
            break;
        }
    }
    Ok(reenqueued)
}

/// What goes with jobs put back in the queue without their outcome (`(id, queue)` each): their
/// unfinished attempts are marked `worker_lost`, their attempt locks released, workers woken.
pub async fn put_back(tx: &mut sqlx::AnyConnection, jobs: &[(String, String)], now: i64) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
    for chunk in ids.chunks(RECOVER_BATCH as usize) {
        attempts::abandon_for_jobs(tx, chunk, now).await?;
        memberships::unlock_for_jobs(tx, chunk).await?;
    }
    let mut queues: Vec<&str> = jobs.iter().map(|(_, q)| q.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    for queue in queues.into_iter().filter_map(queue::Queue::parse) {
        queue::wake_workers(tx, queue).await?;
    }
    Ok(())
}

/// Sweeps every `sweep_every` (the owed-delivery scan every `owed_scan_every`) until `stop`.
pub async fn sweep_loop(ctx: std::sync::Arc<JobContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last_owed_scan = tokio::time::Instant::now();
    let mut owed_cursor = None;
    loop {
        let look_for_owed = last_owed_scan.elapsed() >= ctx.tuning.owed_scan_every;
        match tick(&ctx, look_for_owed.then_some(&mut owed_cursor)).await {
            Ok(Some(_)) if look_for_owed => last_owed_scan = tokio::time::Instant::now(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeper failed; retrying"),
        }
        if tokio::time::timeout(ctx.tuning.sweep_every, stop.wait_for(|s| *s)).await.is_ok() {
            return;
        }
    }
}

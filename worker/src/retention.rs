//! Retention: history older than `HILT_RETENTION` (finished jobs, delivery attempts, webhook
//! deliveries, events), `Idempotency-Key` claims older than 24 h and per-minute run counts older
//! than a day (`job_minutes`) are pruned by one worker at a time (the `retention` lease), every
//! `Tuning::retention_every`, in bounded batches per pass, so a large history is worked off
//! over several passes instead of one long delete. Totals are on `/metrics`
//! (`hilt_pruned_rows_total`).

use std::sync::Arc;

use hilt_shared::{
    clock::now_ms,
    storage::{leases, retention},
};
use tokio::sync::watch;

use crate::JobContext;

pub const LEASE_NAME: &str = "retention";
/// How long an `Idempotency-Key` replays its first response (SPEC §3).
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3_600_000;
/// Rows deleted per statement, and statements per table and pass.
const BATCH: i64 = 1_000;
const BATCHES_PER_PASS: usize = 10;

/// Rows pruned by one pass, by table (in `retention::TABLES` order).
pub type Pruned = Vec<(&'static str, u64)>;

/// The background loop every worker runs; only the lease holder prunes.
pub async fn run_loop(ctx: Arc<JobContext>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&ctx).await {
            tracing::warn!(error = %e, "retention pass failed; retrying next interval");
        }
        if tokio::time::timeout(ctx.tuning.retention_every, stop.wait_for(|s| *s)).await.is_ok() {
            return;
        }
    }
}

/// One pass if this worker holds the `retention` lease; None when another worker has it.
pub async fn tick(ctx: &JobContext) -> anyhow::Result<Option<Pruned>> {
    let now = now_ms();
    let hold = i64::try_from(ctx.tuning.retention_every.as_millis().saturating_mul(3)).unwrap_or(i64::MAX).max(1_000);
    if !leases::acquire(&mut *ctx.db.conn().await?, LEASE_NAME, &ctx.worker_id, now, now + hold).await? {
        return Ok(None);
    }
    let cutoff = now - ctx.config.retention.as_millis();
    let mut pruned = Vec::new();
    for table in retention::TABLES {
        let mut total = 0;
        for _ in 0..BATCHES_PER_PASS {
            let mut tx = ctx.db.begin().await?;
            let n = retention::prune(&mut tx, table, cutoff, BATCH).await?;
            if n > 0 {
                retention::count_pruned(&mut tx, table, n, now).await?;
            }
            tx.commit().await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        if total > 0 {
            tracing::info!(table, rows = total, "pruned history older than HILT_RETENTION");
        }
        pruned.push((table, total));
    }
    let mut tx = ctx.db.begin().await?;
    let keys = retention::prune_idempotency_keys(&mut tx, now - IDEMPOTENCY_TTL_MS).await?;
    if keys > 0 {
        retention::count_pruned(&mut tx, "idempotency_keys", keys, now).await?;
    }
    // The /ops graphs show the last hour; a day is kept.
    hilt_shared::storage::job_minutes::prune(&mut tx, now - 24 * 3_600_000).await?;
    tx.commit().await?;
    // Rate limit slots idle for a minute (one per buyer's chat); Redis expires its own.
    hilt_shared::ratelimit::RateLimits::database(&ctx.db).prune().await?;
    pruned.push(("idempotency_keys", keys));
    Ok(Some(pruned))
}

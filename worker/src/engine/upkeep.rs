//! Upkeep, every third of the lease: the leases of the jobs this worker holds are renewed once
//! a third of them has passed (and the membership attempt locks with them) in two statements,
//! the worker's heartbeat, and its run counts per minute (`job_minutes`, for the /ops graphs).

use std::sync::Arc;

use hilt_shared::{
    clock::now_ms,
    storage::{jobs, workers},
};
use tokio::sync::watch;

use crate::JobContext;

pub async fn upkeep_loop(ctx: Arc<JobContext>, mut stop: watch::Receiver<bool>) {
    let every = ctx.tuning.lease / 3;
    loop {
        if let Err(e) = tick(&ctx).await {
            tracing::warn!(error = %e, "could not renew leases; retrying");
        }
        if tokio::time::timeout(every, stop.wait_for(|s| *s)).await.is_ok() {
            return;
        }
    }
}

async fn tick(ctx: &JobContext) -> Result<(), sqlx::Error> {
    let mut conn = ctx.db.conn().await?;
    let now = now_ms();
    // Leases with more than two ticks left wait for the next tick: one tick late, they still
    // have a third of a lease to spare.
    let due = now + ctx.lease_ms() * 2 / 3;
    let held = ctx.held.ids();
    for chunk in held.chunks(512) {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        jobs::renew_leases(&mut conn, &ctx.worker_id, &ids, now + ctx.lease_ms(), due).await?;
    }
    workers::heartbeat(&mut conn, &ctx.worker_id, now).await?;
    ctx.runs.flush(&mut conn, &ctx.worker_id, now).await
}

//! The outbox relay: hands due jobs from the database to the transport, a bounded window at a
//! time, so the transport never holds more than `Tuning::window` jobs per queue.

use hilt_shared::{
    clock::now_ms,
    queue::{Queue, transport::Transport},
    storage::{jobs, queue_controls},
};

use crate::JobContext;

/// One pass over every queue; returns how many jobs were handed over.
pub async fn tick(ctx: &JobContext, transport: &Transport) -> Result<usize, sqlx::Error> {
    let mut conn = ctx.db.conn().await?;
    let paused = queue_controls::paused(&mut conn).await?;
    if let Ok(mut known) = ctx.paused.lock() {
        known.clone_from(&paused);
    }
    let mut pushed = 0;
    for queue in Queue::ALL {
        if paused.iter().any(|p| p == queue.as_str()) {
            continue;
        }
        let room = ctx.tuning.window - jobs::count_enqueued(&mut conn, queue.as_str()).await?;
        if room <= 0 {
            continue;
        }
        let ids = jobs::take_due(&mut conn, queue.as_str(), now_ms(), room).await?;
        for id in ids {
            match transport.push(queue, &id).await {
                Ok(()) => pushed += 1,
                Err(e) => {
                    tracing::warn!(job.id = %id, job.queue = queue.as_str(), error = %e, "transport refused a job; it stays in the outbox");
                    jobs::return_to_outbox(&mut conn, &id, now_ms()).await?;
                }
            }
        }
    }
    Ok(pushed)
}

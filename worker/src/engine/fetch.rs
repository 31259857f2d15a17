//! Fetching: fetchers per queue claim due jobs in batches into a bounded [`Window`] and
//! hand them to the apalis worker through [`ClaimedJobs`], a project-owned apalis backend.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use apalis::prelude::{Backend, Task, WorkerContext};
use apalis_core::{
    backend::{BackendConfig, finalize::Ephemeral},
    task::task_id::RandomId,
};
use hilt_shared::{
    clock::now_ms,
    queue::{Queue, wake},
    storage::jobs::{self, JobRow},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::layer::util::Identity;

use crate::JobContext;

/// The apalis backend of one queue in one worker: the jobs its fetchers claimed, in order.
/// apalis asks for the next one only when a concurrency slot is free; handing a job over
/// frees its place in the [`Window`].
pub struct ClaimedJobs {
    rx: mpsc::UnboundedReceiver<(JobRow, OwnedSemaphorePermit)>,
}

/// Jobs claimed but not yet started, bounded: each holds a permit from the claim until apalis
/// takes it (claimed jobs hold a lease while they wait, so the bound keeps them few).
#[derive(Clone)]
pub struct Window {
    room: Arc<Semaphore>,
    /// The smallest claim worth a statement while jobs are still waiting.
    min_claim: usize,
    tx: mpsc::UnboundedSender<(JobRow, OwnedSemaphorePermit)>,
}

impl ClaimedJobs {
    /// The backend and the window its fetchers fill: `size` jobs claimed ahead of a free slot,
    /// claims of at least `min_claim` while the worker still has jobs waiting.
    pub fn channel(size: usize, min_claim: usize) -> (Window, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let size = size.max(1);
        (Window { room: Arc::new(Semaphore::new(size)), min_claim: min_claim.clamp(1, size), tx }, Self { rx })
    }
}

impl Backend for ClaimedJobs {
    type Task = Task<JobRow>;
    type Error = std::io::Error;

    fn poll_ready(&mut self, _: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        // The permit drops here: the job has left the window for a concurrency slot.
        self.rx.poll_recv(cx).map(|job| job.map(|(job, _permit)| Ok(Task::new(job))))
    }

    fn poll_close(&mut self, _: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for ClaimedJobs {
    type Args = JobRow;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}

/// Fetchers per queue in one worker.
pub const FETCHERS_PER_QUEUE: usize = 2;

/// Claims due jobs of `queue` into `window` whenever it has room, until `stop`. A worker runs
/// [`FETCHERS_PER_QUEUE`] of these per queue, so one claim is in flight while the other's jobs are handed over:
/// with one, a worker running short jobs idles for a round trip per batch. Between claims it
/// sleeps until a wake for the queue (a committed job) or `poll_backstop` (retries coming due,
/// a wake that was missed), whichever comes first.
pub async fn fetch_loop(ctx: Arc<JobContext>, queue: Queue, window: Window, mut stop: watch::Receiver<bool>) {
    let waker = wake::waker(queue);
    let size = window.room.available_permits();
    loop {
        // Listen before looking, so a job committed during the claim still wakes us.
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let permits = tokio::select! {
            permits = take_room(&window, size) => match permits {
                Some(permits) => permits,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        match claim(&ctx, queue, permits.num_permits()).await {
            Ok(batch) if !batch.is_empty() => {
                let mut permits = permits;
                for job in batch {
                    if !ctx.held.take(&job.id) {
                        tracing::warn!(job.id = %job.id, "claimed a job this worker still runs (its lease had expired); the running copy finishes it");
                        continue;
                    }
                    // Cannot fail: the claim asked for no more jobs than it holds permits.
                    let Some(permit) = permits.split(1) else { break };
                    if window.tx.send((job, permit)).is_err() {
                        return; // the worker stopped; the job's lease expires and it is handed back
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job.queue = queue.as_str(), error = %e, "could not claim jobs; retrying"),
        }
        drop(permits);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(ctx.tuning.poll_backstop) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// All the room the window has, once it has `min_claim` (or any, when no job is waiting, so a
/// lone job is never held back); `None` when the window is closed.
async fn take_room(window: &Window, size: usize) -> Option<OwnedSemaphorePermit> {
    let idle = window.room.available_permits() == size;
    let first = if idle { 1 } else { window.min_claim };
    let mut permits = window.room.clone().acquire_many_owned(u32::try_from(first).ok()?).await.ok()?;
    let more = window.room.available_permits();
    if more > 0 {
        if let Ok(extra) = window.room.clone().try_acquire_many_owned(u32::try_from(more).ok()?) {
            permits.merge(extra);
        }
    }
    Some(permits)
}

async fn claim(ctx: &JobContext, queue: Queue, room: usize) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut conn = ctx.db.conn().await?;
    let limit = i64::try_from(room).unwrap_or(i64::MAX);
    jobs::claim_batch(&mut conn, queue.as_str(), &ctx.worker_id, now_ms(), ctx.lease_ms(), limit).await
}


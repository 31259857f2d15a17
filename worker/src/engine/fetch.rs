//! Fetching: a loop per queue claims due jobs in batches and hands them to the apalis worker
//! through [`ClaimedJobs`], a project-owned apalis backend.

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
use tokio::sync::{mpsc, watch};
use tower::layer::util::Identity;

use crate::JobContext;

/// The apalis backend of one queue in one worker: the jobs its fetch loop claimed, in order.
/// apalis asks for the next one only when a concurrency slot is free.
pub struct ClaimedJobs {
    rx: mpsc::Receiver<JobRow>,
}

impl ClaimedJobs {
    /// The backend and the sender its fetch loop fills; `room` bounds jobs claimed ahead of a
    /// free slot (they hold a lease while they wait).
    pub fn channel(room: usize) -> (mpsc::Sender<JobRow>, Self) {
        let (tx, rx) = mpsc::channel(room.max(1));
        (tx, Self { rx })
    }
}

impl Backend for ClaimedJobs {
    type Task = Task<JobRow>;
    type Error = std::io::Error;

    fn poll_ready(&mut self, _: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.rx.poll_recv(cx).map(|job| job.map(|job| Ok(Task::new(job))))
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

/// Claims due jobs of `queue` whenever the worker has room, until `stop`. Between claims it
/// sleeps until a wake for the queue (a committed job) or `poll_backstop` (retries coming due,
/// a wake that was missed), whichever comes first.
pub async fn fetch_loop(ctx: Arc<JobContext>, queue: Queue, tx: mpsc::Sender<JobRow>, mut stop: watch::Receiver<bool>) {
    let waker = wake::waker(queue);
    loop {
        // Listen before looking, so a job committed during the claim still wakes us.
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let permit = tokio::select! {
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let room = 1 + tx.capacity();
        match claim(&ctx, queue, room).await {
            Ok(batch) if !batch.is_empty() => {
                let mut batch = batch.into_iter().filter(|job| {
                    let fresh = ctx.held.take(&job.id);
                    if !fresh {
                        tracing::warn!(job.id = %job.id, "claimed a job this worker still runs (its lease had expired); the running copy finishes it");
                    }
                    fresh
                });
                if let Some(first) = batch.next() {
                    permit.send(first);
                }
                for job in batch {
                    // Cannot be full: this loop is the only sender and claimed no more than the room.
                    if let Err(e) = tx.try_send(job) {
                        let job = e.into_inner();
                        ctx.held.release(&job.id);
                        tracing::error!(job.id = %job.id, "a claimed job did not fit; its lease will expire and the sweeper will requeue it");
                    }
                }
                continue;
            }
            Ok(_) => drop(permit),
            Err(e) => {
                drop(permit);
                tracing::warn!(job.queue = queue.as_str(), error = %e, "could not claim jobs; retrying");
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(ctx.tuning.poll_backstop) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn claim(ctx: &JobContext, queue: Queue, room: usize) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut conn = ctx.db.conn().await?;
    let limit = i64::try_from(room).unwrap_or(i64::MAX);
    jobs::claim_batch(&mut conn, queue.as_str(), &ctx.worker_id, now_ms(), ctx.lease_ms(), limit).await
}


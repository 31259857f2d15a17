//! Fetching: fetchers per queue claim due jobs in batches into a bounded [`Window`] and
//! hand them to the apalis worker through [`ClaimedJobs`], a project-owned apalis backend.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, futures::Notified, mpsc, watch};
use tower::layer::util::Identity;

use crate::JobContext;

/// The apalis backend of one queue in one worker: the jobs its fetchers claimed, in order.
/// apalis asks for the next one only when a concurrency slot is free; handing a job over
/// frees its place in the [`Window`].
pub struct ClaimedJobs {
    rx: mpsc::UnboundedReceiver<(JobRow, OwnedSemaphorePermit)>,
    started: Arc<AtomicU64>,
}

/// How far ahead a worker claims: about this long of its recent pace.
const CLAIM_AHEAD_TIME: Duration = Duration::from_millis(100);

/// Jobs claimed but not yet started, bounded: each holds a permit from its claim until apalis
/// takes it. The bound follows the queue's pace — about [`CLAIM_AHEAD_TIME`] of work, between
/// the concurrency and `max` — so short jobs are claimed in large batches (a claim costs a
/// round trip) while slow ones (provider calls) are claimed a few at a time and a backlog is
/// shared among the workers rather than waiting behind one.
#[derive(Clone)]
pub struct Window {
    room: Arc<Semaphore>,
    /// Permits the window holds now, waiting jobs included: between `min` and `max`.
    size: Arc<Mutex<usize>>,
    min: usize,
    max: usize,
    /// Jobs handed to apalis so far: the pace the window follows.
    started: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<(JobRow, OwnedSemaphorePermit)>,
}

impl ClaimedJobs {
    /// The backend and the window its fetchers fill, `min` to `max` jobs claimed ahead of a
    /// free slot (`min` is also the smallest claim worth a statement while jobs are waiting).
    pub fn channel(min: usize, max: usize) -> (Window, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let min = min.max(1);
        let max = max.max(min);
        let started = Arc::new(AtomicU64::new(0));
        let window =
            Window { room: Arc::new(Semaphore::new(min)), size: Arc::new(Mutex::new(min)), min, max, started: started.clone(), tx };
        (window, Self { rx, started })
    }
}

impl Window {
    /// Grows or shrinks the window to `jobs`, within its bounds. Permits held by waiting jobs
    /// cannot be taken back: the window shrinks by them as they return.
    fn resize(&self, jobs: usize) {
        let jobs = jobs.clamp(self.min, self.max);
        let Ok(mut size) = self.size.lock() else { return };
        if jobs > *size {
            self.room.add_permits(jobs - *size);
            *size = jobs;
        } else if jobs < *size {
            *size -= self.room.forget_permits(*size - jobs);
        }
    }

    fn size(&self) -> usize {
        self.size.lock().map(|s| *s).unwrap_or(self.min)
    }
}

/// A fetcher's estimate of how many jobs per second the worker starts: it follows a rising
/// pace at once (a backlog arriving) and a falling one over about a second. Measured over at
/// least 20 ms, so the concurrency slots filling at once is not read as a pace.
struct Pace {
    at: Instant,
    started: u64,
    per_sec: f64,
}

impl Pace {
    fn new() -> Self {
        Self { at: Instant::now(), started: 0, per_sec: 0.0 }
    }

    /// The jobs to keep claimed ahead, given the window's count of started jobs.
    fn ahead(&mut self, started: u64) -> usize {
        let elapsed = self.at.elapsed().as_secs_f64();
        if elapsed >= 0.02 {
            let recent = started.saturating_sub(self.started) as f64 / elapsed;
            self.per_sec = recent.max(self.per_sec * (-elapsed).exp());
            (self.at, self.started) = (Instant::now(), started);
        }
        (self.per_sec * CLAIM_AHEAD_TIME.as_secs_f64()) as usize
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
        self.rx.poll_recv(cx).map(|job| {
            job.map(|(job, _permit)| {
                self.started.fetch_add(1, Ordering::Relaxed);
                Ok(Task::new(job))
            })
        })
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
/// [`FETCHERS_PER_QUEUE`] of these per queue (`index` counts from 0): when the queue runs fast,
/// one claim is in flight while the other's jobs are handed over; with one, a worker running
/// short jobs idles for a round trip per batch. Between claims it sleeps until a wake for the
/// queue (a committed job) or `poll_backstop` (retries coming due, a wake that was missed).
pub async fn fetch_loop(ctx: Arc<JobContext>, queue: Queue, window: Window, index: usize, mut stop: watch::Receiver<bool>) {
    let waker = wake::waker(queue);
    let mut pace = Pace::new();
    loop {
        window.resize(pace.ahead(window.started.load(Ordering::Relaxed)));
        // Listen before looking, so a job committed during the claim still wakes us.
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // Only the first fetcher claims while the queue is slow: at a slow pace a second one
        // adds empty claims that hold back the first (p99 confirm → delivered 7 ms → 45 ms).
        if index > 0 && window.size() <= window.min {
            if !idle(notified, ctx.tuning.poll_backstop, &mut stop).await {
                return;
            }
            continue;
        }

        let permits = tokio::select! {
            permits = take_room(&window) => match permits {
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
        if !idle(notified, ctx.tuning.poll_backstop, &mut stop).await {
            return;
        }
    }
}

/// Sleeps until a wake for the queue or `backstop`, whichever comes first; false when the
/// worker stops meanwhile.
async fn idle(notified: Pin<&mut Notified<'_>>, backstop: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = notified => true,
        _ = tokio::time::sleep(backstop) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// All the room the window has, once it has room for `min` jobs (or for one, when no job is
/// waiting, so a lone job is never held back); `None` when the window is closed.
async fn take_room(window: &Window) -> Option<OwnedSemaphorePermit> {
    let idle = window.room.available_permits() >= window.size();
    let first = if idle { 1 } else { window.min };
    let mut permits = window.room.clone().acquire_many_owned(u32::try_from(first).ok()?).await.ok()?;
    let more = window.room.available_permits();
    if more > 0
        && let Ok(extra) = window.room.clone().try_acquire_many_owned(u32::try_from(more).ok()?)
    {
        permits.merge(extra);
    }
    Some(permits)
}

async fn claim(ctx: &JobContext, queue: Queue, room: usize) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut conn = ctx.db.conn().await?;
    let limit = i64::try_from(room).unwrap_or(i64::MAX);
    jobs::claim_batch(&mut conn, queue.as_str(), &ctx.worker_id, now_ms(), ctx.lease_ms(), limit).await
}


//! Completing: outcomes of many jobs written in one transaction (group commit). A batch is
//! whatever arrived while the previous one was committing, so a quiet worker commits each job
//! at once and a busy one commits hundreds per transaction. No provider call is ever made here.

use std::{sync::Arc, time::Duration};

use hilt_shared::{
    clock::now_ms,
    storage::{
        Db,
        jobs::{self, Finish, JobRow},
    },
};
use tokio::sync::{mpsc, watch};

use super::Outcome;
use crate::JobContext;

/// Most jobs written per transaction.
const MAX_BATCH: usize = 256;
/// Outcomes that may wait for the completer before job handlers wait too (back-pressure).
const QUEUE_DEPTH: usize = MAX_BATCH;

struct Completion {
    job: JobRow,
    outcome: Outcome,
    /// How long the run took.
    ran: Duration,
}

/// Where job handlers send outcomes; cheap to clone.
#[derive(Clone)]
pub struct Completer {
    lanes: Arc<[mpsc::Sender<Completion>]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl Completer {
    /// Starts the completer of one worker with `lanes` transactions in flight at once (each
    /// on a connection of its own); it drains what it was sent and stops on `stop`.
    pub fn start(ctx: Arc<JobContext>, lanes: usize, stop: watch::Receiver<bool>) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (senders, tasks): (Vec<_>, Vec<_>) = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                (tx, tokio::spawn(complete_loop(ctx.clone(), rx, stop.clone())))
            })
            .unzip();
        (Self { lanes: senders.into(), next: Arc::default() }, tasks)
    }

    /// Hands over a job's outcome; waits while its lane is `QUEUE_DEPTH` behind.
    pub async fn send(&self, job: JobRow, outcome: Outcome, ran: Duration) {
        let lane = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.lanes.len();
        if self.lanes[lane].send(Completion { job, outcome, ran }).await.is_err() {
            // Stopped: the job stays `running` under our lease and is handed back at shutdown.
            tracing::warn!("completer stopped; outcome dropped, the job will run again");
        }
    }
}

/// Writes one job's outcome at once, outside any completer (`run_once`).
pub async fn complete_now(ctx: &JobContext, job: JobRow, outcome: Outcome, ran: Duration) {
    complete(ctx, vec![Completion { job, outcome, ran }]).await;
}

async fn complete_loop(ctx: Arc<JobContext>, mut rx: mpsc::Receiver<Completion>, mut stop: watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => Some(n),
            _ = stop.wait_for(|s| *s) => None,
        };
        let received = match received {
            Some(n) => n,
            None => {
                // Stopping: everything already sent is still written.
                rx.close();
                rx.recv_many(&mut batch, usize::MAX).await
            }
        };
        if received == 0 {
            return;
        }
        complete(&ctx, std::mem::take(&mut batch)).await;
    }
}

/// Writes a batch in one transaction; if that fails (or a job's lease was lost), each job again
/// in a transaction of its own, so one bad outcome never holds back the others.
async fn complete(ctx: &JobContext, batch: Vec<Completion>) {
    complete_batch(ctx, &batch).await;
    for completion in &batch {
        ctx.held.release(&completion.job.id);
    }
}

async fn complete_batch(ctx: &JobContext, batch: &[Completion]) {
    let (db, worker_id) = (&ctx.db, ctx.worker_id.as_str());
    match complete_together(db, worker_id, batch).await {
        Ok(Some((finishes, now))) => {
            for (completion, finish) in batch.iter().zip(&finishes) {
                ctx.runs.record(&completion.job.queue, finish, completion.ran, now);
            }
            return;
        }
        Ok(None) => tracing::info!(jobs = batch.len(), "a job's lease was lost; completing the batch job by job"),
        Err(e) => tracing::warn!(jobs = batch.len(), error = %e, "batch completion failed; completing job by job"),
    }
    for completion in batch {
        let written = complete_alone(db, worker_id, completion).await;
        if let Ok(Some((finish, now))) = &written {
            ctx.runs.record(&completion.job.queue, finish, completion.ran, *now);
        }
        if let Err(e) = written {
            let job = &completion.job;
            // Our own failure (database, bug), not the provider's: again after a backoff, on the
            // internal-error budget. If even this fails, the lease expires and the sweeper
            // recovers the job.
            tracing::error!(job.id = %job.id, job.queue = %job.queue, error = %e, "could not record a job's outcome");
            let retry = super::internal_error_retry(&ctx.tuning, job, &format!("could not record the outcome: {e}"));
            let handed_back = async { jobs::finish(&mut *db.conn().await?, &job.id, worker_id, &retry, now_ms()).await };
            if let Err(e) = handed_back.await {
                tracing::error!(job.id = %job.id, error = %e, "could not hand the job back");
            }
        }
    }
}

/// Each job's finish and the time, when every job was still ours and all outcomes committed
/// together; `None` when a lease was lost.
async fn complete_together(db: &Db, worker_id: &str, batch: &[Completion]) -> anyhow::Result<Option<(Vec<Finish>, i64)>> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut done = Vec::with_capacity(batch.len());
    let mut finishes = Vec::with_capacity(batch.len());
    for Completion { job, outcome, .. } in batch {
        let finish = match outcome {
            Outcome::Finish(finish) => finish.clone(),
            Outcome::Record(record) => record.record(&mut tx, now).await?,
        };
        if finish == Finish::Done {
            done.push(job.id.as_str());
        } else if !jobs::finish(&mut tx, &job.id, worker_id, &finish, now).await? {
            return Ok(None);
        }
        finishes.push(finish);
    }
    if jobs::finish_done(&mut tx, &done, worker_id, now).await?.len() != done.len() {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some((finishes, now)))
}

/// The job's finish and the time, when it was written.
async fn complete_alone(db: &Db, worker_id: &str, Completion { job, outcome, .. }: &Completion) -> anyhow::Result<Option<(Finish, i64)>> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let (finish, keep) = match outcome {
        Outcome::Finish(finish) => (finish.clone(), false),
        Outcome::Record(record) => (record.record(&mut tx, now).await?, record.keep_when_lease_lost()),
    };
    if jobs::finish(&mut tx, &job.id, worker_id, &finish, now).await? || keep {
        tx.commit().await?;
        return Ok(Some((finish, now)));
    }
    tracing::warn!(job.id = %job.id, job.queue = %job.queue, "job lease lost before its outcome was written; the outcome is left to whoever holds the job now");
    Ok(None)
}

//! A worker process's engine: per queue a fetch loop and an apalis worker, one completer, the
//! upkeep and sweep loops, and on PostgreSQL the wake listener — started and stopped together.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use hilt_shared::{
    clock::now_ms,
    config::Config,
    providers::Providers,
    storage::{Backend, Db, jobs::{self, JobRow}, leases, workers},
};
use tokio::sync::watch;
use tracing::Instrument;

use super::{complete::Completer, fetch, listen, sweep, upkeep};
use crate::{JobContext, Tuning};

/// How long in-flight jobs get to finish after SIGTERM before they are handed back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What every job handler gets from apalis.
#[derive(Clone)]
struct Runtime {
    ctx: Arc<JobContext>,
    completer: Completer,
}

/// Runs a worker on `db` until `shutdown` resolves.
pub async fn run(db: Db, config: Arc<Config>, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let limiter = hilt_shared::ratelimit::RateLimits::connect(config.redis_url.as_deref(), &db)
        .await
        .map_err(|e| anyhow::anyhow!("REDIS_URL (provider rate limits): {e}"))?;
    let providers = Providers::from_config(&config)
        .map_err(|e| anyhow::anyhow!("provider configuration: {e}"))?
        .with_rate_limits(&limiter, &config);
    let tuning = Tuning::from_config(&config);
    let ctx = Arc::new(JobContext::new(db, config, providers, tuning));
    run_with(ctx, shutdown).await
}

pub async fn run_with(ctx: Arc<JobContext>, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let concurrency = usize::try_from(ctx.config.worker_concurrency).unwrap_or(16);
    workers::register(&mut *ctx.db.conn().await?, &ctx.worker_id, i64::from(ctx.config.worker_concurrency), now_ms()).await?;
    tracing::info!(worker.id = %ctx.worker_id, concurrency, queues = ?ctx.tuning.queues, "worker started");

    // `stop_fetching` ends claims at the shutdown signal; `stop_rest` ends the completer and the
    // loops once the in-flight jobs are finished; upkeep renews leases until every outcome is
    // written, so no other worker recovers a job whose outcome is being written.
    let (stop_fetching, fetching) = watch::channel(false);
    let (stop_rest, rest) = watch::channel(false);
    let (stop_upkeep, upkeep_stop) = watch::channel(false);
    let (completer, completing) = Completer::start(ctx.clone(), ctx.tuning.completer_lanes, rest.clone());
    let upkeep = tokio::spawn(upkeep::upkeep_loop(ctx.clone(), upkeep_stop));
    let mut background = vec![
        tokio::spawn(sweep::sweep_loop(ctx.clone(), rest.clone())),
        tokio::spawn(crate::renewal::run_loop(ctx.clone(), rest.clone())),
        tokio::spawn(crate::retention::run_loop(ctx.clone(), rest.clone())),
        tokio::spawn(crate::breaker::refresh_loop(ctx.clone(), rest.clone())),
    ];
    if ctx.db.backend() == Backend::Postgres {
        let url = ctx.config.wake_database_url.clone().unwrap_or_else(|| ctx.config.database_url.clone());
        background.push(tokio::spawn(listen::listen_loop(url, rest.clone())));
    }

    let runtime = Runtime { ctx: ctx.clone(), completer };
    let mut monitor = Monitor::new().shutdown_timeout(SHUTDOWN_GRACE);
    for queue in ctx.tuning.queues.iter().copied() {
        let (window, claimed) = fetch::ClaimedJobs::channel(concurrency, concurrency * ctx.tuning.claim_ahead);
        for index in 0..fetch::FETCHERS_PER_QUEUE {
            background.push(tokio::spawn(fetch::fetch_loop(ctx.clone(), queue, window.clone(), index, fetching.clone())));
        }
        let name = format!("{}-{}", ctx.worker_id, queue.as_str());
        let claimed = std::sync::Mutex::new(Some(claimed));
        let runtime = runtime.clone();
        monitor = monitor.register(move |_| {
            // Built once: the monitor restarts no worker (a failed claim is retried in the fetch loop).
            let backend = claimed.lock().ok().and_then(|mut c| c.take()).unwrap_or_else(|| fetch::ClaimedJobs::channel(1, 1).1);
            WorkerBuilder::new(name.clone()).backend(backend).data(runtime.clone()).concurrency(concurrency).build(handle)
        });
    }
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            let _ = stop_fetching.send(true);
            Ok(())
        })
        .await;

    // Every handler has returned: write the outcomes they sent, then hand back the rest.
    let _ = stop_rest.send(true);
    for lane in completing {
        let _ = lane.await;
    }
    for task in background {
        let _ = task.await;
    }
    let _ = stop_upkeep.send(true);
    let _ = upkeep.await;
    let now = now_ms();
    let mut tx = ctx.db.begin().await?;
    let handed_back = jobs::release_worker(&mut tx, &ctx.worker_id, now).await?;
    sweep::put_back(&mut tx, &handed_back, now).await?;
    workers::mark_stopped(&mut tx, &ctx.worker_id, now).await?;
    ctx.runs.flush(&mut tx, &ctx.worker_id, now).await?;
    // The periodic duties this worker held pass to another worker at once, not when they expire.
    for lease in [sweep::LEASE_NAME, crate::renewal::LEASE_NAME, crate::retention::LEASE_NAME] {
        leases::release(&mut tx, lease, &ctx.worker_id).await?;
    }
    tx.commit().await?;
    tracing::info!(worker.id = %ctx.worker_id, handed_back = handed_back.len(), "worker stopped");
    result.map_err(|e| anyhow::anyhow!("worker monitor: {e}"))
}

/// The apalis handler: run the claimed job, hand its outcome to the completer. apalis never
/// retries (its retries would ignore our schedule): the outcome decides the next run.
async fn handle(job: JobRow, runtime: Data<Runtime>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        job.queue = %job.queue,
        job.attempt = job.attempts,
        membership.id = job.membership_id.as_deref().unwrap_or(""),
        worker.id = %runtime.ctx.worker_id,
    );
    let started = std::time::Instant::now();
    let run = std::panic::AssertUnwindSafe(crate::jobs::execute(&runtime.ctx, &job).instrument(span));
    let outcome = match futures::FutureExt::catch_unwind(run).await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::error!(job.id = %job.id, job.queue = %job.queue, "job panicked");
            super::Outcome::internal_error(&runtime.ctx, &job, "the job panicked")
        }
    };
    runtime.completer.send(job, outcome, started.elapsed()).await;
    Ok(())
}

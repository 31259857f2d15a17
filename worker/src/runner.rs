//! The worker process: apalis workers per queue on the transport, plus the outbox relay, the
//! sweeper and the heartbeat, all stopped together on shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::{BackendExt, BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_core::backend::ext::poll_strategy::BackoffConfig;
use hilt_shared::{
    clock::now_ms,
    config::Config,
    providers::Providers,
    queue::{Queue, transport::{JobRef, POLL_BUSY, POLL_IDLE_MAX, Transport}},
    storage::{Db, jobs, workers},
};
use tokio::sync::watch;

use crate::{JobContext, Tuning, relay, sweeper};

/// How long in-flight jobs get to finish after SIGTERM before they are handed back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// Runs a worker until `shutdown` resolves.
pub async fn run(db: Db, config: Arc<Config>, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let batch = usize::try_from(config.worker_concurrency).unwrap_or(16);
    let transport = Transport::connect(config.redis_url.as_deref(), &config.database_url, &config.queue_prefix, batch).await?;
    let providers = Providers::from_config(&config).map_err(|e| anyhow::anyhow!("provider configuration: {e}"))?;
    let tuning = Tuning::from_config(&config);
    let ctx = Arc::new(JobContext::new(db, config, providers, tuning));
    run_with(ctx, transport, shutdown).await
}

pub async fn run_with(ctx: Arc<JobContext>, transport: Transport, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let concurrency = usize::try_from(ctx.config.worker_concurrency).unwrap_or(16);
    workers::register(&mut *ctx.db.conn().await?, &ctx.worker_id, i64::from(ctx.config.worker_concurrency), now_ms()).await?;
    tracing::info!(worker.id = %ctx.worker_id, transport = transport.kind(), concurrency, "worker started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let background = [
        tokio::spawn(relay_loop(ctx.clone(), transport.clone(), stop_rx.clone())),
        tokio::spawn(sweeper_loop(ctx.clone(), transport.clone(), stop_rx.clone())),
        tokio::spawn(heartbeat_loop(ctx.clone(), stop_rx.clone())),
        tokio::spawn(crate::renewal::run_loop(ctx.clone(), stop_rx.clone())),
    ];

    // A worker whose transport failed under it (Redis restarted or flushed, which also drops its
    // registration) is rebuilt under a fresh name; the pause keeps a dead Redis from spinning.
    let mut monitor = Monitor::new().shutdown_timeout(SHUTDOWN_GRACE).should_restart(|worker, error| {
        tracing::warn!(worker = %worker.name(), restarts = worker.restarts(), error = %error, "queue worker failed; restarting");
        // The restart callback is synchronous; on the multi-threaded runtime of the binaries a
        // short blocking pause is allowed, elsewhere (single-threaded test runtimes) it would stall.
        if tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread) {
            tokio::task::block_in_place(|| std::thread::sleep(RESTART_PAUSE));
        }
        true
    });
    for queue in Queue::ALL {
        let base = format!("{}-{}", ctx.worker_id, queue.as_str());
        let data = ctx.clone();
        monitor = match (transport.redis_storage(queue), transport.sqlite_storage(queue)) {
            (Some(storage), _) => monitor.register(move |restarts| {
                WorkerBuilder::new(format!("{base}-r{restarts}"))
                    .backend(storage.clone().poll_with_backoff(POLL_BUSY, BackoffConfig::new(POLL_IDLE_MAX)))
                    .data(data.clone())
                    .concurrency(concurrency)
                    .build(handle)
            }),
            (None, Some(storage)) => monitor.register(move |restarts| {
                WorkerBuilder::new(format!("{base}-r{restarts}"))
                    .backend(storage.clone().poll_with_backoff(POLL_BUSY, BackoffConfig::new(POLL_IDLE_MAX)))
                    .data(data.clone())
                    .concurrency(concurrency)
                    .build(handle)
            }),
            (None, None) => monitor,
        };
    }
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await;

    let _ = stop_tx.send(true);
    for task in background {
        let _ = task.await;
    }
    let mut conn = ctx.db.conn().await?;
    let handed_back = jobs::release_worker(&mut conn, &ctx.worker_id, now_ms()).await?;
    workers::mark_stopped(&mut conn, &ctx.worker_id, now_ms()).await?;
    tracing::info!(worker.id = %ctx.worker_id, handed_back, "worker stopped");
    result.map_err(|e| anyhow::anyhow!("worker monitor: {e}"))
}

/// The apalis handler: the payload is a job id; the outcome lives in the database, so apalis
/// never retries (its retries would ignore our schedule).
async fn handle(job: JobRef, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    crate::jobs::execute(&ctx, &job.job_id).await;
    Ok(())
}

async fn relay_loop(ctx: Arc<JobContext>, transport: Transport, mut stop: watch::Receiver<bool>) {
    loop {
        let pause = match relay::tick(&ctx, &transport).await {
            Ok(0) => ctx.tuning.relay_idle,
            Ok(_) => Duration::from_millis(10),
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay failed; retrying");
                Duration::from_secs(1)
            }
        };
        if wait_or_stop(&mut stop, pause).await {
            return;
        }
    }
}

async fn sweeper_loop(ctx: Arc<JobContext>, transport: Transport, mut stop: watch::Receiver<bool>) {
    let mut last_slow_pass = tokio::time::Instant::now();
    loop {
        let slow_pass = last_slow_pass.elapsed() >= ctx.tuning.vacuum_every;
        match sweeper::tick(&ctx, slow_pass).await {
            Ok(Some(_)) if slow_pass => {
                last_slow_pass = tokio::time::Instant::now();
                if let Err(e) = transport.vacuum().await {
                    tracing::warn!(error = %e, "transport vacuum failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeper failed; retrying"),
        }
        if wait_or_stop(&mut stop, ctx.tuning.sweep_every).await {
            return;
        }
    }
}

async fn heartbeat_loop(ctx: Arc<JobContext>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Ok(mut conn) = ctx.db.conn().await {
            let _ = workers::heartbeat(&mut conn, &ctx.worker_id, now_ms()).await;
        }
        if wait_or_stop(&mut stop, Duration::from_secs(5)).await {
            return;
        }
    }
}

/// Sleeps for `pause`; true if the stop signal came first.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    let _ = tokio::time::timeout(pause, stop.wait_for(|s| *s)).await;
    *stop.borrow()
}

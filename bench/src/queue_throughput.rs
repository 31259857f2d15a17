//! Queue throughput: write N jobs while no worker runs, start W workers (each with its own
//! connection pool, as separate processes would have), and time until every job is finished.
//! `--job delivery` (default) confirms N payments for a fallback-link product, so every job is
//! a real delivery attempt (attempt row, membership, events) without a provider call;
//! `--job noop` measures the engine alone. See bench/README.md.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures::StreamExt;
use hilt_shared::{
    config::Config,
    providers::Providers,
    queue::{self, Queue},
    service::{
        merchants,
        payments::{self, BuyerInput, CreatePayment},
        products::{self, CreateProduct, PriceInput},
    },
    signing::ReceiptSigner,
    storage::Db,
};
use hilt_worker::{JobContext, Tuning};
use tokio::sync::watch;

#[derive(Parser)]
struct Args {
    /// Payments to confirm before the workers start.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// `postgres://…`; a temporary SQLite file when absent.
    #[arg(long)]
    database_url: Option<String>,
    /// `redis://…`: kept for the bench scripts; jobs are claimed from the database either way.
    #[arg(long)]
    redis_url: Option<String>,
    #[arg(long, value_enum, default_value_t = JobKind::Delivery)]
    job: JobKind,
    /// The most jobs claimed ahead per queue, in multiples of the concurrency;
    /// `Tuning::claim_ahead` when absent.
    #[arg(long)]
    claim_ahead: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum JobKind {
    Delivery,
    Noop,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hilt_shared::telemetry::init("pretty");
    let dir = tempfile::tempdir()?;
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let mut config = Config::for_database(&url);
    config.worker_concurrency = args.concurrency;
    config.outbox_dir = dir.path().join("outbox");
    config.redis_url = args.redis_url.clone();
    let config = Arc::new(config);
    let db = Db::connect(&url, config.db_max_connections).await?;
    db.migrate().await?;

    let started = Instant::now();
    match args.job {
        JobKind::Delivery => confirm_payments(&db, dir.path(), args.jobs).await?,
        JobKind::Noop => enqueue_noops(&db, args.jobs).await?,
    }
    let written = started.elapsed();
    let what = if args.job == JobKind::Delivery { "confirmed payments" } else { "enqueued no-op jobs" };
    println!("{what}: {} in {written:.2?} ({:.0}/s)", args.jobs, args.jobs as f64 / written.as_secs_f64());

    let providers = Providers::from_config(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (stop, stopped) = watch::channel(false);
    let mut handles = Vec::new();
    let started = Instant::now();
    for _ in 0..args.workers {
        let worker_db = Db::connect(&url, hilt_worker::engine::pool_size(&config, true)).await?;
        let mut tuning = Tuning::from_config(&config);
        if let Some(k) = args.claim_ahead {
            tuning.claim_ahead = k.max(1);
        }
        if args.job == JobKind::Noop {
            tuning.queues = vec![Queue::Noop];
        }
        let ctx = Arc::new(JobContext::new(worker_db, config.clone(), providers.clone(), tuning));
        let mut rx = stopped.clone();
        handles.push(tokio::spawn(hilt_worker::run_with(ctx, async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    // Cheap while it runs (an index probe for any unfinished job); the full count once at the end.
    let queue = if args.job == JobKind::Noop { Queue::Noop } else { Queue::Delivery };
    let mut last_report = Instant::now();
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND status IN ('queued', 'running')) THEN 1 ELSE 0 END",
        )
        .bind(queue.as_str())
        .fetch_one(db.pool())
        .await?;
        if unfinished == 0 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("progress: {:.1?}", started.elapsed());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished_sql = match args.job {
        JobKind::Delivery => "SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'",
        JobKind::Noop => "SELECT COUNT(*) FROM jobs WHERE queue = 'noop' AND status = 'done'",
    };
    let finished: i64 = sqlx::query_scalar(finished_sql).fetch_one(db.pool()).await?;
    anyhow::ensure!(finished as usize == args.jobs, "only {finished} of {} jobs finished", args.jobs);
    let wall = started.elapsed();
    // Like the peers' figures: from the first to the last completion, as the database recorded them.
    let span_sql = match args.job {
        JobKind::Delivery => "SELECT MIN(delivered_at), MAX(delivered_at) FROM memberships",
        JobKind::Noop => "SELECT MIN(updated_at), MAX(updated_at) FROM jobs WHERE queue = 'noop' AND status = 'done'",
    };
    let (first, last): (i64, i64) = sqlx::query_as(span_sql).fetch_one(db.pool()).await?;
    let span = Duration::from_millis(u64::try_from((last - first).max(1)).unwrap_or(1));
    println!(
        "delivered {} with {} worker(s) × {} in {span:.2?} ({:.0} jobs/s)",
        args.jobs, args.workers, args.concurrency, args.jobs as f64 / span.as_secs_f64()
    );
    println!("from the workers' start to the last completion: {wall:.2?} ({:.0} jobs/s)", args.jobs as f64 / wall.as_secs_f64());
    let _ = stop.send(true);
    for h in handles {
        h.await??;
    }
    Ok(())
}

/// N payments confirmed through the real confirm transaction (payment, membership, signed
/// receipt, event, delivery job) for a fallback-link product.
async fn confirm_payments(db: &Db, dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let signer = Arc::new(ReceiptSigner::load_or_create(&dir.join("key"))?);
    let mut tx = db.begin().await?;
    let (merchant, _) = merchants::create(&mut tx, "Bench").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let product = products::create(&mut tx, &merchant.id, CreateProduct {
        name: "Bench".into(),
        platform: "telegram".into(),
        telegram_chat_id: None,
        discord_guild_id: None,
        discord_role_id: None,
        fallback_invite_url: Some("https://t.me/+bench".into()),
        renewal_url: None,
        price: PriceInput { amount: "1".into(), currency: "USD".into() },
        recurring: false,
        period: None,
        grace_period: None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    futures::stream::iter(0..n)
        .map(|i| {
            let (db, signer, merchant, product) = (db.clone(), signer.clone(), merchant.id.clone(), product.id.clone());
            async move {
                let input = CreatePayment { product_id: product, amount: None, currency: None, wallet: Some(format!("w{i}")), buyer: BuyerInput::default(), metadata: None };
                let mut tx = db.begin().await?;
                let p = payments::create(&mut tx, None, &merchant, input).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                payments::confirm(&mut tx, &signer, &p.payment.id, &format!("tx{i}")).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                tx.commit().await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// N no-op jobs, a thousand per transaction.
async fn enqueue_noops(db: &Db, n: usize) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let mut tx = db.begin().await?;
        for _ in 0..left.min(1_000) {
            queue::enqueue(&mut tx, Queue::Noop, None, None, "{}".into(), hilt_shared::clock::now_ms()).await?;
        }
        tx.commit().await?;
        left = left.saturating_sub(1_000);
    }
    Ok(())
}

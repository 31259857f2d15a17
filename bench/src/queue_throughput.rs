//! Queue throughput and Redis footprint: confirm N payments while no worker runs, start W
//! in-process workers, and time until every membership is delivered (fallback-link products,
//! so this measures the job machinery, not a provider). See bench/README.md.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures::StreamExt;
use hilt_shared::{
    config::Config,
    domain::ids::random_token,
    providers::Providers,
    queue::transport::Transport,
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
    /// `redis://…`; the SQLite transport when absent.
    #[arg(long)]
    redis_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hilt_shared::telemetry::init("pretty");
    let dir = tempfile::tempdir()?;
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    let mut config = Config::for_database(&url);
    config.worker_concurrency = args.concurrency;
    config.outbox_dir = dir.path().join("outbox");
    let config = Arc::new(config);
    let prefix = format!("bench{}", random_token(6));
    let transport = match &args.redis_url {
        Some(redis) => Transport::redis(redis, &prefix, args.concurrency as usize).await?,
        None => Transport::sqlite(&dir.path().join("bench.db-queue"), args.concurrency as usize).await?,
    };
    let signer = Arc::new(ReceiptSigner::load_or_create(&dir.path().join("key"))?);

    let (merchant, _) = merchants::create(&db, "Bench").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let product = products::create(&db, &merchant.id, CreateProduct {
        name: "Bench".into(),
        platform: "telegram".into(),
        telegram_chat_id: None,
        discord_guild_id: None,
        discord_role_id: None,
        fallback_invite_url: Some("https://t.me/+bench".into()),
        price: PriceInput { amount: "1".into(), currency: "USD".into() },
        recurring: false,
        period: None,
        grace_period: None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    let started = Instant::now();
    futures::stream::iter(0..args.jobs)
        .map(|i| {
            let (db, signer, merchant, product) = (db.clone(), signer.clone(), merchant.id.clone(), product.id.clone());
            async move {
                let input = CreatePayment { product_id: product, amount: None, currency: None, wallet: Some(format!("w{i}")), buyer: BuyerInput::default(), metadata: None };
                let p = payments::create(&db, &merchant, input).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                payments::confirm(&db, &signer, &p.payment.id, &format!("tx{i}")).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    let confirm = started.elapsed();
    println!("confirmed {} payments in {confirm:.2?} ({:.0}/s)", args.jobs, args.jobs as f64 / confirm.as_secs_f64());

    let providers = Providers::from_config(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (stop, stopped) = watch::channel(false);
    let mut handles = Vec::new();
    let started = Instant::now();
    for _ in 0..args.workers {
        let ctx = Arc::new(JobContext::new(db.clone(), config.clone(), providers.clone(), Tuning::from_config(&config)));
        let mut rx = stopped.clone();
        handles.push(tokio::spawn(hilt_worker::run_with(ctx, transport.clone(), async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    loop {
        let delivered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'")
            .fetch_one(db.pool())
            .await?;
        if delivered as usize >= args.jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliver = started.elapsed();
    println!(
        "delivered {} with {} worker(s) × {} in {deliver:.2?} ({:.0} jobs/s)",
        args.jobs, args.workers, args.concurrency, args.jobs as f64 / deliver.as_secs_f64()
    );
    if let (Some(redis), Transport::Redis { .. }) = (&args.redis_url, &transport) {
        transport.vacuum().await?;
        let client = redis::Client::open(redis.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await?;
        let mut bytes = 0i64;
        for key in &keys {
            let usage: Option<i64> = redis::cmd("MEMORY").arg("USAGE").arg(key).query_async(&mut conn).await?;
            bytes += usage.unwrap_or(0);
        }
        println!("redis after vacuum: {} keys, {bytes} bytes", keys.len());
    }
    let _ = stop.send(true);
    for h in handles {
        h.await??;
    }
    Ok(())
}

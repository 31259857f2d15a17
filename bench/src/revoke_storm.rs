//! Revoke storm (issue 10): N Discord memberships across G guilds lose access in the same
//! minute, and W `hilt worker` processes remove their roles against our fake Discord, which
//! enforces Discord's limits (50 requests/s per bot, 10 per second per route and guild) and
//! counts every call over them. Reports the drain time beside what the limits require, and the
//! 429s. See bench/README.md.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures::StreamExt;
use hilt_shared::{
    clock::now_ms,
    config::Config,
    queue::{self, Queue, RevokeJob},
    ratelimit::Rate,
    service::{
        merchants,
        payments::{self, BuyerInput, CreatePayment},
        products::{self, CreateProduct, PriceInput},
    },
    signing::ReceiptSigner,
    storage::Db,
    testing::FakeDiscord,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    memberships: usize,
    /// Guilds (one product each) the memberships are spread over.
    #[arg(long, default_value_t = 50)]
    guilds: usize,
    /// `hilt worker` processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// `postgres://…` (an empty database); a temporary SQLite file when absent.
    #[arg(long)]
    database_url: Option<String>,
    /// `redis://…`: the workers keep their rate limit slots there (else in the database).
    #[arg(long)]
    redis_url: Option<String>,
    /// The `hilt` binary.
    #[arg(long, default_value = "target/release/hilt")]
    hilt: String,
}

const GLOBAL_PER_S: u32 = 50;
const ROUTE_PER_S: u32 = 10;

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let db = Db::connect(&url, Config::for_database(&url).db_max_connections).await?;
    db.migrate().await?;
    let discord = FakeDiscord::start().await;
    discord.enforce_rate_limits(Rate::new(GLOBAL_PER_S, Duration::from_secs(1)), Rate::new(ROUTE_PER_S, Duration::from_secs(1)));

    let started = Instant::now();
    seed(&db, &discord, dir.path(), args.memberships, args.guilds).await?;
    println!("seeded {} expired memberships over {} guilds in {:.1?}", args.memberships, args.guilds, started.elapsed());

    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.clone()),
        ("HILT_SKIP_MIGRATIONS", "true".into()),
        ("HILT_DISCORD_BOT_TOKEN", discord.token()),
        ("HILT_DISCORD_API_URL", discord.url()),
        ("HILT_WORKER_CONCURRENCY", args.concurrency.to_string()),
        ("HILT_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "warn".into()),
    ];
    if let Some(redis) = &args.redis_url {
        env.push(("REDIS_URL", redis.clone()));
    }
    let started = Instant::now();
    let _workers = Workers(
        (0..args.workers)
            .map(|_| Command::new(&args.hilt).arg("worker").env_clear().envs(env.iter().cloned()).stdout(Stdio::null()).spawn())
            .collect::<Result<_, _>>()?,
    );
    let mut last_report = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE queue = 'revoke' AND status IN ('queued', 'running')").fetch_one(db.pool()).await?;
        if left == 0 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("progress: {left} left after {:.0?}, {} calls, {} over the limits", started.elapsed(), discord.calls("remove_role").len(), discord.rate_limited_calls());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (first, last): (i64, i64) =
        sqlx::query_as("SELECT MIN(started_at), MAX(finished_at) FROM delivery_attempts WHERE trigger_kind = 'revoke'").fetch_one(db.pool()).await?;
    let revoked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'revoked'").fetch_one(db.pool()).await?;
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivery_attempts WHERE trigger_kind = 'revoke'").fetch_one(db.pool()).await?;
    let span = Duration::from_millis(u64::try_from(last - first).unwrap_or(0));
    let per_guild = args.memberships.div_ceil(args.guilds);
    let needed = (args.memberships as f64 / f64::from(GLOBAL_PER_S)).max(per_guild as f64 / f64::from(ROUTE_PER_S));
    println!(
        "revoked {revoked} of {} with {} worker process(es) × {} ({} store): {attempts} attempts, {} calls, {} answered 429",
        args.memberships,
        args.workers,
        args.concurrency,
        if args.redis_url.is_some() { "redis" } else { "database" },
        discord.calls("remove_role").len(),
        discord.rate_limited_calls()
    );
    println!(
        "first to last removal: {span:.1?} ({:.1}/s); Discord's limits need {needed:.1} s: {:+.1} %",
        revoked as f64 / span.as_secs_f64(),
        (span.as_secs_f64() / needed - 1.0) * 100.0
    );
    Ok(())
}

/// One merchant, a Discord product per guild, N confirmed payments whose members hold the
/// role, then every membership expired with its revoke job due now (the delivery jobs dropped).
async fn seed(db: &Db, discord: &FakeDiscord, dir: &std::path::Path, n: usize, guilds: usize) -> anyhow::Result<()> {
    let signer = Arc::new(ReceiptSigner::load_or_create(&dir.join("key"))?);
    let mut tx = db.begin().await?;
    let (merchant, _) = merchants::create(&mut tx, "Storm").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut products = Vec::new();
    for g in 0..guilds {
        let guild = (810_000_000_000_000_000u64 + g as u64).to_string();
        let role = format!("{guild}1");
        discord.add_guild(&guild);
        discord.add_role(&guild, &role, 1);
        let product = products::create(&mut tx, &merchant.id, CreateProduct {
            name: format!("Guild {g}"),
            platform: "discord".into(),
            telegram_chat_id: None,
            discord_guild_id: Some(guild.clone()),
            discord_role_id: Some(role.clone()),
            fallback_invite_url: None,
            renewal_url: None,
            price: PriceInput { amount: "1".into(), currency: "USD".into() },
            recurring: false,
            period: None,
            grace_period: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        products.push((product.id, guild, role));
    }
    tx.commit().await?;
    let products = Arc::new(products);
    futures::stream::iter(0..n)
        .map(|i| {
            let (db, signer, merchant, products) = (db.clone(), signer.clone(), merchant.id.clone(), products.clone());
            let (product, guild, role) = products[i % products.len()].clone();
            let user = (720_000_000_000_000_000u64 + i as u64).to_string();
            discord.add_member(&guild, &user, &[&role]);
            async move {
                let buyer = BuyerInput { discord_user_id: Some(user), ..BuyerInput::default() };
                let input = CreatePayment { product_id: product, amount: None, currency: None, wallet: Some(format!("w{i}")), buyer, metadata: None };
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
        .collect::<anyhow::Result<()>>()?;
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM jobs").execute(&mut *tx).await?;
    sqlx::query("UPDATE memberships SET status = 'expired', delivery_status = 'delivered'").execute(&mut *tx).await?;
    let ids: Vec<(String, String)> = sqlx::query_as("SELECT id, merchant_id FROM memberships").fetch_all(&mut *tx).await?;
    let now = now_ms();
    for (id, merchant_id) in ids {
        let payload = serde_json::to_string(&RevokeJob { membership_id: id.clone(), period_end: Some(now) })?;
        queue::enqueue(&mut tx, Queue::Revoke, Some(&merchant_id), Some(&id), payload, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

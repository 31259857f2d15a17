//! Confirm → delivered latency through the real processes: starts `hilt api` + W `hilt worker`
//! on PostgreSQL (`--database-url`), or `hilt serve` on a temporary SQLite file, confirms
//! payments at a steady rate through the HTTP API, and reports percentiles of
//! `membership.delivered_at − payment.confirmed_at` (both written by the processes, unix ms).
//! Fallback-link product: the engine's latency, not a provider's. See bench/README.md.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use hilt_shared::storage::Db;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Payments confirmed per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long the steady rate is held.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// `hilt worker` processes beside `hilt api` (PostgreSQL only).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// An empty PostgreSQL database; `hilt serve` on SQLite when absent.
    #[arg(long)]
    database_url: Option<String>,
    /// The `hilt` binary to run.
    #[arg(long, default_value = "target/release/hilt")]
    hilt: String,
}

const ADMIN: &str = "bench-admin-token-0123456789";

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let env = [
        ("DATABASE_URL", url.clone()),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
        ("HILT_OUTBOX_DIR", dir.path().join("outbox").display().to_string()),
        ("HILT_RECEIPT_KEY_FILE", dir.path().join("key").display().to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let spawn = |role: &str| -> anyhow::Result<Child> {
        Ok(Command::new(&args.hilt).arg(role).envs(env.iter().cloned()).stdout(Stdio::null()).spawn()?)
    };
    let migrate = Command::new(&args.hilt).arg("migrate").envs(env.iter().cloned()).stdout(Stdio::null()).status()?;
    anyhow::ensure!(migrate.success(), "hilt migrate failed");
    let mut processes = Processes(Vec::new());
    let layout = if args.database_url.is_some() {
        processes.0.push(spawn("api")?);
        for _ in 0..args.workers {
            processes.0.push(spawn("worker")?);
        }
        format!("hilt api + {} hilt worker, PostgreSQL", args.workers)
    } else {
        processes.0.push(spawn("serve")?);
        "hilt serve, SQLite".to_owned()
    };

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the API never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = move |path: String, token: String, body: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.post(format!("{base}{path}")).bearer_auth(token).json(&body).send().await?;
            let status = r.status();
            let body: Value = r.json().await?;
            anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
            anyhow::Ok(body)
        }
    };
    let key = call("/v1/admin/merchants".into(), ADMIN.into(), json!({"name": "Latency"})).await?["api_key"].as_str().unwrap_or_default().to_owned();
    let product = call("/v1/products".into(), key.clone(), json!({"name": "Link", "platform": "telegram",
        "fallback_invite_url": "https://t.me/+bench", "price": {"amount": "5", "currency": "USDC"}})).await?["id"]
        .as_str().unwrap_or_default().to_owned();

    // Payments exist before the clock starts: only confirms are paced.
    let n = (args.rate * args.seconds) as usize;
    let mut payments = Vec::with_capacity(n);
    for i in 0..n {
        let p = call("/v1/payments".into(), key.clone(), json!({"product_id": product, "wallet": format!("w-{i}")})).await?;
        payments.push(p["id"].as_str().unwrap_or_default().to_owned());
    }

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut confirms = Vec::with_capacity(n);
    for (i, payment) in payments.iter().enumerate() {
        ticker.tick().await;
        let call = call.clone();
        let path = format!("/v1/payments/{payment}/confirm");
        confirms.push(tokio::spawn(async move { call(path, ADMIN.into(), json!({"tx_signature": format!("tx-{i}")})).await }));
    }
    for confirm in confirms {
        confirm.await??;
    }

    let db = Db::connect(&url, 2).await?;
    let started = Instant::now();
    loop {
        let delivered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'").fetch_one(db.pool()).await?;
        if delivered as usize >= n {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "only {delivered} of {n} delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latencies: Vec<i64> = sqlx::query_scalar(
        "SELECT m.delivered_at - p.confirmed_at FROM memberships m JOIN payments p ON p.id = m.last_payment_id",
    )
    .fetch_all(db.pool())
    .await?;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "confirm→delivered at {}/s for {} s ({layout}): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} payments)",
        args.rate,
        args.seconds,
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        latencies.len()
    );
    Ok(())
}

//! `hilt`: one binary for every role (SPEC §10).

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hilt_api::state::AppState;
use hilt_shared::ratelimit::RateLimits;
use hilt_shared::{
    config::Config, domain::ids::random_token, providers::Providers, service::{merchants, oauth_tokens}, shutdown, signing::ReceiptSigner, storage::Db, telemetry,
};
use tokio::sync::watch;

/// Delivery diagnostics ask the provider live; each call gets this long.
const DIAGNOSTICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Parser)]
#[command(name = "hilt", version, about = "Hilt: post-payment delivery, receipts and delivery rescue")]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API + in-process workers on one machine (embedded default).
    Serve,
    /// The HTTP API only (scaled out).
    Api,
    /// A job worker only (scaled out); the same as `hilt-worker`.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Merchant administration.
    Merchant {
        #[command(subcommand)]
        action: MerchantCommand,
    },
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant and print its id and API key (shown once).
    Create {
        #[arg(long)]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Arc::new(cli.config);
    telemetry::init(&config.log_format);
    let runs_workers = matches!(cli.command, Command::Worker | Command::Serve);
    let db = Db::connect(&config.database_url, hilt_worker::engine::pool_size(&config, runs_workers))
        .await
        .with_context(|| format!("cannot open DATABASE_URL ({})", redact(&config.database_url)))?;
    if matches!(cli.command, Command::Migrate) || !config.skip_migrations {
        db.migrate().await.context("applying migrations")?;
    }
    if matches!(cli.command, Command::Worker | Command::Api | Command::Serve) {
        oauth_tokens::check_at_start(&db, config.encryption_key.as_ref()).await?;
    }
    match cli.command {
        Command::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Command::Merchant { action: MerchantCommand::Create { name } } => {
            let mut tx = db.begin().await?;
            let (merchant, api_key) = merchants::create(&mut tx, &name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            tx.commit().await?;
            println!("merchant_id: {}\napi_key: {api_key}\n(the key is shown only this once)", merchant.id);
            Ok(())
        }
        Command::Worker => {
            if let Some(addr) = config.metrics_listen {
                hilt_shared::metrics::serve(addr).with_context(|| format!("cannot serve metrics on HILT_METRICS_LISTEN={addr}"))?;
            }
            hilt_worker::run(db, config, shutdown::signal()).await
        }
        Command::Api => run_api(db, config, false).await,
        Command::Serve => run_api(db, config, true).await,
    }
}

async fn run_api(db: Db, config: Arc<Config>, with_workers: bool) -> anyhow::Result<()> {
    let admin_token: Arc<str> = match &config.admin_token {
        Some(token) => token.as_str().into(),
        None => {
            let token = format!("hilt_admin_{}", random_token(32));
            println!("HILT_ADMIN_TOKEN was not set; generated admin token: {token}");
            token.into()
        }
    };
    // Every setting is checked before "listening" is printed.
    let receipt_signer = Arc::new(ReceiptSigner::load_or_create(&config.receipt_key_file)?);
    receipt_signer.publish(&db).await.context("publishing the receipt signing key")?;
    tracing::info!(key_id = receipt_signer.key_id(), "receipt signing key loaded");
    let rate_limits = RateLimits::connect(config.redis_url.as_deref(), &db)
        .await
        .with_context(|| "cannot reach REDIS_URL (provider rate limits)".to_owned())?;
    let providers = Providers::from_config_with_timeout(&config, DIAGNOSTICS_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("provider configuration: {e}"))?
        .with_rate_limits(&rate_limits, &config);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on HILT_LISTEN={}", config.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("Hilt listening on {url} (dashboard {url}/ops, OpenAPI {url}/openapi.json)");
    tracing::info!(%url, with_workers, "api started");

    // One signal stops both halves: the API stops accepting, workers hand back their jobs.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let state = AppState { db: db.clone(), config: config.clone(), admin_token, receipt_signer, providers, rate_limits };
    let api = hilt_api::serve(state, listener, stopped(stop_rx.clone()));
    if with_workers {
        let (api, workers) = tokio::join!(api, hilt_worker::run(db.clone(), config, stopped(stop_rx)));
        api?;
        workers?;
    } else {
        api.await?;
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Database URLs may carry a password; never print it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

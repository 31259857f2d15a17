//! `hilt-worker`: the same worker entry point as `hilt worker`.

use std::sync::Arc;

use clap::Parser;
use hilt_shared::{config::Config, shutdown::signal, storage::Db, telemetry};

#[derive(Parser)]
#[command(name = "hilt-worker", version, about = "Hilt job worker")]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Arc::new(Cli::parse().config);
    telemetry::init(&config.log_format);
    let db = Db::connect(&config.database_url, hilt_worker::engine::pool_size(&config, true)).await?;
    if !config.skip_migrations {
        db.migrate().await?;
    }
    hilt_shared::service::oauth_tokens::check_at_start(&db, config.encryption_key.as_ref()).await?;
    if let Some(addr) = config.metrics_listen {
        hilt_shared::metrics::serve(addr)?;
    }
    hilt_worker::run(db, config, signal()).await
}

//! Job handlers and the runner. `hilt worker`, `hilt-worker` and `hilt serve` all start `run`.

use std::{future::Future, sync::Arc};

use hilt_shared::{config::Config, storage::Db};

/// A process-unique worker id (`{host}-{pid}-{random}`): the queue refuses a reused name.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hilt".into());
    format!("{host}-{}-{}", std::process::id(), hilt_shared::domain::ids::random_token(6))
}

/// Runs until `shutdown` resolves.
pub async fn run(_db: Db, config: Arc<Config>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let id = worker_id();
    tracing::info!(worker.id = %id, concurrency = config.worker_concurrency, "worker started");
    shutdown.await;
    tracing::info!(worker.id = %id, "worker stopped");
    Ok(())
}

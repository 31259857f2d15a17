//! The wake listener of a worker process on PostgreSQL: `LISTEN hilt_jobs` on a connection of
//! its own, relaying each notification (a queue name) to that queue's idle fetchers.

use hilt_shared::{
    queue::{Queue, wake},
    storage::jobs::WAKE_CHANNEL,
};
use sqlx::postgres::PgListener;
use tokio::sync::watch;

/// Pause before reconnecting after the listener could not connect.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn listen_loop(database_url: String, mut stop: watch::Receiver<bool>) {
    loop {
        match PgListener::connect(&database_url).await {
            Ok(mut listener) => match listener.listen(WAKE_CHANNEL).await {
                Ok(()) => {
                    // Jobs committed while we were not listening.
                    wake::wake_all();
                    loop {
                        tokio::select! {
                            received = listener.try_recv() => match received {
                                Ok(Some(n)) => match Queue::parse(n.payload()) {
                                    Some(queue) => wake::wake(queue),
                                    None => wake::wake_all(),
                                },
                                // The connection dropped; the next receive reconnects and re-listens.
                                Ok(None) => wake::wake_all(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "wake listener failed; workers look for work every poll_backstop until it is back");
                                    break;
                                }
                            },
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not LISTEN for job wakes"),
            },
            Err(e) => tracing::warn!(error = %e, "could not connect the wake listener"),
        }
        if tokio::time::timeout(RECONNECT_PAUSE, stop.wait_for(|s| *s)).await.is_ok() {
            return;
        }
    }
}

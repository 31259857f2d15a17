//! The circuit breaker every worker shares. A burst of 401/403 answers from a provider's bot
//! pauses calls to that bot in every worker: Discord bans an IP after 10,000 invalid requests in
//! 10 minutes, which would hurt every merchant at once.
//!
//! The worker that sees the burst writes the pause to `provider_pauses`; every worker reads that
//! table every [`REFRESH`], so all of them stop calling within a second. Jobs that would call a
//! paused bot wait for the pause's end without an attempt (`provider_paused`, not counted
//! against their retries; `jobs::wait_for_pause`). A job that looked just before the pause
//! opened still makes its call: at most one per job in flight, within the refresh. When the pause ends, the next call is the probe: a success ends the
//! pause (the row goes), another 401/403 pauses again at once. An operator can resume from /ops.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hilt_shared::{
    clock::now_ms,
    storage::{
        Db,
        provider_pauses::{self, PauseRow},
    },
};
use tokio::sync::watch;

use crate::JobContext;

/// How often every worker reads the shared pauses.
pub const REFRESH: Duration = Duration::from_millis(250);

pub struct AuthBreaker {
    burst: u32,
    pause: Duration,
    /// 401/403 answers this worker saw, per provider, in the current window.
    local: Mutex<HashMap<&'static str, Burst>>,
    /// The shared pauses as last read (provider → paused until, unix ms), or just opened here.
    shared: Mutex<HashMap<String, i64>>,
}

#[derive(Default)]
struct Burst {
    window_start: Option<Instant>,
    failures: u32,
}

impl AuthBreaker {
    /// Pauses a provider for `pause` after `burst` refusals within `pause`.
    pub fn new(burst: u32, pause: Duration) -> Self {
        Self { burst, pause, local: Mutex::default(), shared: Mutex::default() }
    }

    /// Time left in the provider's pause, if it is paused.
    pub fn paused_for(&self, provider: &str) -> Option<Duration> {
        let until = *self.shared.lock().ok()?.get(provider)?;
        u64::try_from(until - now_ms()).ok().filter(|ms| *ms > 0).map(Duration::from_millis)
    }

    /// After a provider call that failed with `http_status`: a burst of 401/403 (or one, for the
    /// probe after a pause) pauses the provider in every worker.
    pub async fn record_failure(&self, db: &Db, worker_id: &str, provider: &'static str, http_status: Option<u16>) {
        let Some(status @ (401 | 403)) = http_status else { return };
        if self.paused_for(provider).is_some() {
            // A call that was in flight when the pause opened: it neither extends the pause nor
            // counts towards the next one (after an operator's resume it would reopen it).
            return;
        }
        let probing = self.has_pause(provider) && self.paused_for(provider).is_none();
        let reason = {
            let Ok(mut local) = self.local.lock() else { return };
            let b = local.entry(provider).or_default();
            let now = Instant::now();
            if b.window_start.is_none_or(|start| now.duration_since(start) > self.pause) {
                *b = Burst { window_start: Some(now), failures: 0 };
            }
            b.failures += 1;
            if probing {
                format!("the probe after a pause was refused again (HTTP {status})")
            } else if b.failures >= self.burst {
                format!("{} answers 401/403 from {provider} within {} s (last: HTTP {status})", b.failures, self.pause.as_secs())
            } else {
                return;
            }
        };
        let now = now_ms();
        let row = PauseRow {
            provider: provider.to_owned(),
            paused_until: now + i64::try_from(self.pause.as_millis()).unwrap_or(i64::MAX),
            reason,
            opened_at: now,
            opened_by: worker_id.to_owned(),
        };
        tracing::warn!(provider, reason = %row.reason, "pausing calls to the provider in every worker");
        if let Ok(mut shared) = self.shared.lock() {
            shared.insert(row.provider.clone(), row.paused_until);
        }
        if let Ok(mut local) = self.local.lock() {
            local.remove(provider);
        }
        let saved = async { provider_pauses::open(&mut *db.conn().await?, &row).await };
        if let Err(e) = saved.await {
            tracing::warn!(provider, error = %e, "could not share the pause; this worker keeps it");
        }
    }

    /// After a provider call that succeeded: the probe after a pause ends it for every worker.
    pub async fn record_success(&self, db: &Db, provider: &'static str) {
        if !self.has_pause(provider) || self.paused_for(provider).is_some() {
            return;
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.remove(provider);
        }
        let cleared = async { provider_pauses::clear(&mut *db.conn().await?, provider).await };
        match cleared.await {
            Ok(true) => tracing::info!(provider, "the probe succeeded; calls to the provider resume in every worker"),
            Ok(false) => {}
            Err(e) => tracing::warn!(provider, error = %e, "could not end the shared pause"),
        }
    }

    fn has_pause(&self, provider: &str) -> bool {
        self.shared.lock().is_ok_and(|s| s.contains_key(provider))
    }

    /// Reads the shared pauses. When one is gone (an operator's resume, another worker's probe),
    /// the jobs this worker put off on a stale view run now too.
    pub async fn refresh(&self, db: &Db) -> Result<(), sqlx::Error> {
        let mut conn = db.conn().await?;
        let rows = provider_pauses::all(&mut conn).await?;
        let ended = match self.shared.lock() {
            Ok(mut shared) => {
                let before = std::mem::replace(&mut *shared, rows.into_iter().map(|r| (r.provider, r.paused_until)).collect());
                before.keys().any(|p| !shared.contains_key(p))
            }
            Err(_) => false,
        };
        if ended {
            hilt_shared::storage::jobs::wake_paused(&mut conn, now_ms()).await?;
        }
        Ok(())
    }
}

/// Every worker's reading of the shared pauses, every [`REFRESH`].
pub async fn refresh_loop(ctx: Arc<JobContext>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = ctx.auth_breaker.refresh(&ctx.db).await {
            tracing::warn!(error = %e, "could not read the provider pauses; retrying");
        }
        if tokio::time::timeout(REFRESH, stop.wait_for(|s| *s)).await.is_ok() {
            return;
        }
    }
}

//! What every job handler gets: the database, the providers, this worker's id and timings.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hilt_shared::{config::Config, domain::Period, providers::Providers, queue::Queue, storage::Db};

use crate::breaker::AuthBreaker;

/// Timings of the job machinery. Production defaults; tests shrink them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long a claimed job stays ours without renewal; renewed every third of it. A killed
    /// worker's jobs run elsewhere after at most this plus `sweep_every`.
    pub lease: Duration,
    /// An idle fetcher looks for due work this often even without a wake: retries coming due,
    /// jobs written by another process on SQLite, a wake lost with the listener connection.
    pub poll_backstop: Duration,
    pub sweep_every: Duration,
    /// The sweeper's scan for owed deliveries that no job holds (a backstop, so it is slow).
    pub owed_scan_every: Duration,
    /// The queues this worker runs.
    pub queues: Vec<Queue>,
    /// Most jobs a queue's fetchers may claim beyond what is running, in multiples of the
    /// worker's concurrency; within it the window follows the queue's pace (`engine::fetch`):
    /// larger batches are cheaper per job, smaller ones leave more of a backlog to other
    /// workers (jobs claimed here wait here).
    pub claim_ahead: usize,
    /// Completer transactions in flight at once (each holds a connection while it commits).
    pub completer_lanes: usize,
    /// Wait before trying again when another attempt for the membership holds the lock.
    pub lock_wait: Duration,
    /// Per-provider pause after a burst of 401/403 answers.
    pub auth_failure_burst: u32,
    pub auth_failure_pause: Duration,
    pub retry_schedule: Vec<Period>,
    /// Delays between proof email attempts after a retryable SMTP error; its length is the budget.
    pub proof_email_schedule: Vec<Period>,
    /// Delays between renewal reminder attempts after a retryable error; its length is the budget.
    pub reminder_schedule: Vec<Period>,
    /// Delays between webhook attempts after the first (Svix's schedule by default).
    pub webhook_schedule: Vec<Period>,
    /// Per-request timeout of a webhook send.
    pub webhook_timeout: Duration,
    /// Delays after runs that failed inside the worker (database error, bug, panic); its
    /// number of delays is the budget, after which the job is dead (`engine::internal_error_retry`).
    pub internal_error_backoff: backon::ExponentialBuilder,
    /// How often the lease holder prunes history older than `HILT_RETENTION` (`retention`).
    pub retention_every: Duration,
}

impl Tuning {
    pub fn from_config(config: &Config) -> Self {
        Self {
            lease: Duration::from_secs(5),
            poll_backstop: Duration::from_secs(1),
            sweep_every: Duration::from_secs(1),
            owed_scan_every: Duration::from_secs(30),
            queues: [Queue::Delivery, Queue::Revoke, Queue::ProofEmail, Queue::Renewal, Queue::Webhook].to_vec(),
            claim_ahead: 16,
            completer_lanes: 2,
            lock_wait: Duration::from_secs(1),
            auth_failure_burst: 20,
            auth_failure_pause: Duration::from_secs(60),
            retry_schedule: config.retry_schedule.0.clone(),
            proof_email_schedule: [10, 60, 300, 1_800].map(|s| Period(Duration::from_secs(s))).to_vec(),
            reminder_schedule: [10, 60, 300, 1_800].map(|s| Period(Duration::from_secs(s))).to_vec(),
            webhook_schedule: hilt_shared::domain::webhook::default_schedule(),
            webhook_timeout: hilt_shared::providers::webhook::DEFAULT_TIMEOUT,
            internal_error_backoff: backon::ExponentialBuilder::new()
                .with_min_delay(Duration::from_secs(5))
                .with_max_delay(Duration::from_secs(300))
                .with_max_times(8)
                .with_jitter(),
            retention_every: Duration::from_secs(60),
        }
    }
}

pub struct JobContext {
    pub db: Db,
    /// Jobs this worker claimed and has not finished: upkeep renews exactly these leases, so a
    /// job nothing works on any more (its future dropped) expires and is recovered.
    pub held: Held,
    pub config: Arc<Config>,
    pub providers: Providers,
    pub worker_id: String,
    pub tuning: Tuning,
    pub auth_breaker: AuthBreaker,
    /// This worker's runs per queue and minute, saved by upkeep.
    pub runs: crate::engine::stats::RunStats,
}

impl JobContext {
    pub fn new(db: Db, config: Arc<Config>, providers: Providers, tuning: Tuning) -> Self {
        let auth_breaker = AuthBreaker::new(tuning.auth_failure_burst, tuning.auth_failure_pause);
        Self { db, held: Held::default(), config, providers, worker_id: worker_id(), tuning, auth_breaker, runs: Default::default() }
    }

    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.tuning.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The ids of the jobs a worker holds (claimed, not yet finished).
#[derive(Default)]
pub struct Held(Mutex<std::collections::HashSet<String>>);

impl Held {
    /// False when the job is already held: a second claim of a job this worker still runs
    /// (its lease expired and was recovered meanwhile), which must not run twice.
    pub fn take(&self, id: &str) -> bool {
        self.0.lock().is_ok_and(|mut held| held.insert(id.to_owned()))
    }

    pub fn release(&self, id: &str) {
        if let Ok(mut held) = self.0.lock() {
            held.remove(id);
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.0.lock().map(|held| held.iter().cloned().collect()).unwrap_or_default()
    }
}

/// A process-unique worker id (`{host}-{pid}-{random}`), the `locked_by` of its jobs.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "hilt".into());
    format!("{host}-{}-{}", std::process::id(), hilt_shared::domain::ids::random_token(6))
}

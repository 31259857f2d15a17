//! The queue transport: apalis on Redis (`REDIS_URL` set) or on SQLite (embedded default).
//!
//! The database is the source of truth; the transport only carries job ids (`JobRef`) from the
//! relay to a worker, as a bounded window (see `docs/JOBS.md`). Anything it loses — a flushed
//! Redis, a killed worker's prefetched tasks — the sweeper puts back from the database.

use std::{collections::HashMap, path::PathBuf, str::FromStr, time::Duration};

use apalis::prelude::TaskSink;
use apalis_core::backend::Vacuum;
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::Queue;

/// What travels through the transport: the id of a row in `jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: String,
}

/// How often a worker looks for work: every 5 ms while it finds some, backing off to 250 ms
/// while idle (apalis fetches only on these ticks).
pub const POLL_BUSY: Duration = Duration::from_millis(5);
pub const POLL_IDLE_MAX: Duration = Duration::from_millis(250);
/// How quickly a dead worker's prefetched tasks are handed to a live one
/// (heartbeat × missed heartbeats).
const HEARTBEAT: Duration = Duration::from_secs(2);
const MISSED_HEARTBEATS: usize = 3;

#[derive(Clone)]
pub enum Transport {
    Redis { conn: ConnectionManager, prefix: String, storages: HashMap<Queue, RedisStorage<JobRef>> },
    Sqlite { pool: SqlitePool, storages: HashMap<Queue, SqliteStorage<JobRef>> },
}

#[derive(Debug, thiserror::Error)]
#[error("queue transport: {0}")]
pub struct TransportError(String);

impl Transport {
    /// Redis when `redis_url` is given; else SQLite in a file beside the SQLite database
    /// (`hilt.db` → `hilt.db-queue`), or a per-process file when the database is PostgreSQL.
    /// `batch` is how many tasks a worker fetches per poll: its concurrency, so a busy worker
    /// stays busy and an idle one takes no more than it can start.
    pub async fn connect(redis_url: Option<&str>, database_url: &str, prefix: &str, batch: usize) -> Result<Self, TransportError> {
        match redis_url {
            Some(url) => Self::redis(url, prefix, batch).await,
            None => Self::sqlite(&queue_file(database_url), batch).await,
        }
    }

    pub async fn redis(url: &str, prefix: &str, batch: usize) -> Result<Self, TransportError> {
        let conn = apalis_redis::connect(url).await.map_err(|e| TransportError(e.to_string()))?;
        let storages = Queue::ALL
            .into_iter()
            .map(|q| {
                let config = apalis_redis::Config::default()
                    .queue(format!("{prefix}:{}", q.as_str()))
                    .batch_size(batch.max(1))
                    .heartbeat_interval(HEARTBEAT)
                    .missed_heartbeats(MISSED_HEARTBEATS);
                (q, RedisStorage::new(conn.clone()).with_config(config))
            })
            .collect();
        Ok(Self::Redis { conn, prefix: prefix.to_owned(), storages })
    }

    pub async fn sqlite(path: &PathBuf, batch: usize) -> Result<Self, TransportError> {
        let err = |e: sqlx::Error| TransportError(e.to_string());
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // apalis-sqlite's setup sets synchronous=OFF on the connection it uses: give it a
        // throw-away pool so no pooled connection keeps that setting.
        let setup = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.map_err(err)?;
        SqliteStorage::<()>::setup(&setup).await.map_err(|e| TransportError(e.to_string()))?;
        setup.close().await;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(err)?;
        let storages = Queue::ALL
            .into_iter()
            .map(|q| {
                let config = apalis_sqlite::Config::default()
                    .queue(q.as_str())
                    .batch_size(batch.max(1))
                    .heartbeat_interval(HEARTBEAT)
                    .missed_heartbeats(MISSED_HEARTBEATS);
                (q, SqliteStorage::new(&pool).with_config(config))
            })
            .collect();
        Ok(Self::Sqlite { pool, storages })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redis { .. } => "redis",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    pub async fn push(&self, queue: Queue, job_id: &str) -> Result<(), TransportError> {
        let job = JobRef { job_id: job_id.to_owned() };
        match self {
            Self::Redis { storages, .. } => {
                let mut s = storages[&queue].clone();
                s.push(job).await.map_err(|e| TransportError(e.to_string()))
            }
            Self::Sqlite { storages, .. } => {
                let mut s = storages[&queue].clone();
                s.push(job).await.map_err(|e| TransportError(e.to_string()))
            }
        }
    }

    /// Removes finished tasks so the transport's memory does not grow with jobs ever run.
    pub async fn vacuum(&self) -> Result<usize, TransportError> {
        let mut removed = 0;
        for queue in Queue::ALL {
            removed += match self {
                Self::Redis { storages, conn, prefix } => {
                    let mut s = storages[&queue].clone();
                    let n = s.vacuum().await.map_err(|e| TransportError(e.to_string()))?;
                    // apalis-redis never trims its done/dead sets; the database keeps history.
                    let mut c = conn.clone();
                    for set in ["done", "dead", "failed"] {
                        let _: Result<(), _> = redis::cmd("DEL")
                            .arg(format!("{prefix}:{}:{set}", queue.as_str()))
                            .query_async(&mut c)
                            .await;
                    }
                    n
                }
                Self::Sqlite { storages, .. } => {
                    let mut s = storages[&queue].clone();
                    s.vacuum().await.map_err(|e| TransportError(e.to_string()))?
                }
            };
        }
        Ok(removed)
    }

    pub async fn ping(&self) -> bool {
        match self {
            Self::Redis { conn, .. } => {
                let mut c = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            }
            Self::Sqlite { pool, .. } => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }

    pub fn redis_storage(&self, queue: Queue) -> Option<RedisStorage<JobRef>> {
        match self {
            Self::Redis { storages, .. } => Some(storages[&queue].clone()),
            Self::Sqlite { .. } => None,
        }
    }

    pub fn sqlite_storage(&self, queue: Queue) -> Option<SqliteStorage<JobRef>> {
        match self {
            Self::Sqlite { storages, .. } => Some(storages[&queue].clone()),
            Self::Redis { .. } => None,
        }
    }
}

fn queue_file(database_url: &str) -> PathBuf {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .filter(|p| !p.is_empty() && !p.contains(":memory:"));
    match path {
        Some(p) => PathBuf::from(format!("{p}-queue")),
        None => std::env::temp_dir().join(format!("hilt-queue-{}.db", std::process::id())),
    }
}

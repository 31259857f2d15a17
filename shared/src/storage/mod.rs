//! All SQL lives here, one module per table. The same statements run on SQLite and PostgreSQL
//! through `sqlx::Any` (`$N` placeholders, BIGINT timestamps and flags, TEXT JSON).

pub mod attempts;
pub mod events;
pub mod idempotency;
pub mod job_minutes;
pub mod jobs;
pub mod leases;
pub mod memberships;
pub mod ops_audit;
pub mod merchants;
pub mod payments;
pub mod products;
pub mod proof_emails;
pub mod provider_pauses;
pub mod queue_controls;
pub mod receipt_keys;
pub mod receipts;
pub mod renewal_reminders;
pub mod renewals;
pub mod retention;
pub mod workers;
pub mod support;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

use std::{str::FromStr, time::Duration};

use sqlx::{
    Any, AnyConnection, AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub type Tx = sqlx::Transaction<'static, Any>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens a pool of at most `max_connections` (`HILT_DB_MAX_CONNECTIONS`): callers wait for a
    /// free connection (up to 10 s, then a 503) rather than open more.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains("mode=") || url.contains(":memory:") {
                    url.to_owned()
                } else {
                    format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
                };
                AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writer; NORMAL keeps committed
                            // rows across a process crash; busy_timeout queues writers.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect_with(AnyConnectOptions::from_str(&url)?)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // No transaction of ours waits on anything outside the database, so
                            // one left idle is a process cut off from it (a network partition):
                            // PostgreSQL ends it, and its row locks, instead of keeping them
                            // until TCP gives up hours later, which would keep other workers
                            // from recovering its jobs. Every process sets the same value, so
                            // a transaction-mode pooler sharing server connections is harmless.
                            conn.execute("SET idle_in_transaction_session_timeout = '10s'").await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        Ok(Self { pool, backend })
    }

    /// Applies pending migrations. PostgreSQL serialises concurrent runs with an advisory lock;
    /// on SQLite a second process that raced the first finds them applied when it retries.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut tries = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) if self.backend == Backend::Postgres => {
                    self.postgres_search_index().await;
                    return Ok(());
                }
                Ok(()) => return Ok(()),
                Err(_) if tries < 5 && self.backend == Backend::Sqlite => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The trigram index behind the ledger's substring search (`memberships::SEARCH_TEXT`),
    /// PostgreSQL only, so not a migration: they are shared with SQLite. Without the right to
    /// create `pg_trgm` the search still works, by scanning; the warning says so.
    async fn postgres_search_index(&self) {
        let sql = format!(
            "SELECT pg_advisory_xact_lock(7243001); CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             CREATE INDEX IF NOT EXISTS memberships_search ON memberships USING gin (({}) gin_trgm_ops)",
            memberships::SEARCH_TEXT
        );
        let created = async {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            tx.commit().await
        };
        if let Err(e) = created.await {
            tracing::warn!(error = %e, "no trigram index for the membership search (needs pg_trgm): searches scan");
        }
    }

    /// A write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so two
    /// writers queue on busy_timeout instead of failing on a lock upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection for reads; storage functions take `&mut AnyConnection`.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.pool.execute("SELECT 1").await.map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `column IN values`, the values bound as one JSON array of strings at `$n` (see
/// [`json_list`]): one statement shape for any number of values, so it stays in the
/// prepared-statement cache, and on PostgreSQL a primary-key lookup even under a generic plan.
pub(crate) fn in_list(conn: &AnyConnection, column: &str, n: usize) -> String {
    if is_postgres(conn) {
        format!("{column} = ANY(ARRAY(SELECT json_array_elements_text(${n}::json)))")
    } else {
        format!("{column} IN (SELECT value FROM json_each(${n}))")
    }
}

/// `id IN (select)`, where `select` picks rows by `id`; on PostgreSQL the rows are locked
/// `FOR UPDATE SKIP LOCKED` (another worker's claim passes them by) and written as
/// `= ANY(ARRAY(…))`, because a generic plan of `IN (…)` hash-joins the whole table.
pub(crate) fn locked_subquery(conn: &AnyConnection, select: &str) -> String {
    if is_postgres(conn) {
        format!("id = ANY(ARRAY({select} FOR UPDATE SKIP LOCKED))")
    } else {
        format!("id IN ({select})")
    }
}

/// The bound value of an [`in_list`].
pub(crate) fn json_list<S: AsRef<str>>(values: &[S]) -> String {
    serde_json::to_string(&values.iter().map(AsRef::as_ref).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

/// Stored flags are 0/1 integers on both backends.
pub fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// Whether an error is a unique-constraint violation (a duplicate the caller can report as 409).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Turns a LIKE search term into a pattern that matches it literally anywhere.
pub fn like_pattern(term: &str) -> String {
    let escaped = term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{}%", escaped.to_lowercase())
}


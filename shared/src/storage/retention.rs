//! Pruning history older than `HILT_RETENTION`: one bounded batch per table and pass, oldest
//! first, so a pass costs the same however much history there is.

use sqlx::AnyConnection;

use super::is_postgres;

/// What is history, by table: the rows a pass may remove once older than the cutoff, in the
/// order they are pruned (webhook deliveries before the events they point at).
pub const TABLES: [&str; 4] = ["jobs", "delivery_attempts", "webhook_deliveries", "events"];

/// Removes up to `limit` rows of `table` (one of [`TABLES`]) older than `cutoff` (unix
/// milliseconds): finished jobs (done, dead, discarded), finished delivery attempts, webhook
/// deliveries, and events no webhook delivery points at any more. Returns how many went.
pub async fn prune(conn: &mut AnyConnection, table: &str, cutoff: i64, limit: i64) -> Result<u64, sqlx::Error> {
    let old = match table {
        "jobs" => "SELECT id FROM jobs WHERE status IN ('done', 'dead', 'discarded') AND updated_at < $1 LIMIT $2",
        "delivery_attempts" => "SELECT id FROM delivery_attempts WHERE finished_at < $1 LIMIT $2",
        "webhook_deliveries" => "SELECT id FROM webhook_deliveries WHERE started_at < $1 LIMIT $2",
        "events" => {
            "SELECT id FROM events e WHERE created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id) LIMIT $2"
        }
        _ => return Ok(0),
    };
    // PostgreSQL: `= ANY(ARRAY(…))` keeps the delete on the primary key under a generic plan.
    let sql = if is_postgres(conn) {
        format!("DELETE FROM {table} WHERE id = ANY(ARRAY({old}))")
    } else {
        format!("DELETE FROM {table} WHERE id IN ({old})")
    };
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cutoff).bind(limit).execute(conn).await?.rows_affected())
}

/// Removes `Idempotency-Key` claims created before `cutoff` (unix milliseconds; 24 h ago): a
/// minute's worth per pass in steady state. Returns how many went.
pub async fn prune_idempotency_keys(conn: &mut AnyConnection, cutoff: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(cutoff).execute(conn).await?.rows_affected())
}

/// Adds `n` to the rows pruned from `table` so far.
pub async fn count_pruned(conn: &mut AnyConnection, table: &str, n: u64, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pruned_rows (table_name, total, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (table_name) DO UPDATE SET total = pruned_rows.total + excluded.total, updated_at = excluded.updated_at",
    )
    .bind(table)
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `(table, rows pruned since the database was created)`, for `/metrics`.
pub async fn pruned_totals(conn: &mut AnyConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT table_name, total FROM pruned_rows ORDER BY table_name").fetch_all(conn).await
}

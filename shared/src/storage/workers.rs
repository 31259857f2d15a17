//! Worker processes as operators see them: id, concurrency, last heartbeat.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub concurrency: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
}

pub async fn register(conn: &mut AnyConnection, id: &str, concurrency: i64, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO workers (id, concurrency, started_at, heartbeat_at) VALUES ($1, $2, $3, $3)")
        .bind(id)
        .bind(concurrency)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn heartbeat(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workers SET heartbeat_at = $1 WHERE id = $2").bind(now).bind(id).execute(conn).await?;
    Ok(())
}

pub async fn mark_stopped(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workers SET stopped_at = $1 WHERE id = $2").bind(now).bind(id).execute(conn).await?;
    Ok(())
}

/// Workers that heartbeated since `since` and have not stopped.
pub async fn live(conn: &mut AnyConnection, since: i64) -> Result<Vec<WorkerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, concurrency, started_at, heartbeat_at, stopped_at FROM workers \
         WHERE stopped_at IS NULL AND heartbeat_at >= $1 ORDER BY started_at",
    )
    .bind(since)
    .fetch_all(conn)
    .await
}

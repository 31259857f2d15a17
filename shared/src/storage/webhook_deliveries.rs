//! Webhook delivery attempts: one row per attempt to send one event to one endpoint, written
//! with the job's outcome in the handler's final transaction.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub merchant_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub job_id: Option<String>,
    pub attempt: i64,
    pub trigger_kind: String,
    pub status: String,
    pub http_status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub worker_id: String,
    pub started_at: i64,
    pub finished_at: i64,
}

const COLUMNS: &str = "id, merchant_id, endpoint_id, event_id, event_type, job_id, attempt, trigger_kind, status, \
    http_status, latency_ms, error, next_attempt_at, worker_id, started_at, finished_at";

pub async fn insert(conn: &mut AnyConnection, d: &DeliveryRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, merchant_id, endpoint_id, event_id, event_type, job_id, attempt, \
         trigger_kind, status, http_status, latency_ms, error, next_attempt_at, worker_id, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&d.id)
    .bind(&d.merchant_id)
    .bind(&d.endpoint_id)
    .bind(&d.event_id)
    .bind(&d.event_type)
    .bind(&d.job_id)
    .bind(d.attempt)
    .bind(&d.trigger_kind)
    .bind(&d.status)
    .bind(d.http_status)
    .bind(d.latency_ms)
    .bind(&d.error)
    .bind(d.next_attempt_at)
    .bind(&d.worker_id)
    .bind(d.started_at)
    .bind(d.finished_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, endpoint_id: &str, id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2"
    )))
    .bind(id)
    .bind(endpoint_id)
    .fetch_optional(conn)
    .await
}

/// An endpoint's attempts, newest first.
pub async fn list_for_endpoint(
    conn: &mut AnyConnection,
    endpoint_id: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DeliveryRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 \
         ORDER BY started_at DESC, attempt DESC, id LIMIT $2 OFFSET $3"
    )))
    .bind(endpoint_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(endpoint_id)
        .fetch_one(conn)
        .await?;
    Ok((rows, total))
}

/// The number the next attempt to send this event to this endpoint gets.
pub async fn next_attempt(conn: &mut AnyConnection, endpoint_id: &str, event_id: &str) -> Result<i64, sqlx::Error> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(attempt) FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2")
        .bind(endpoint_id)
        .bind(event_id)
        .fetch_one(conn)
        .await?;
    Ok(max.unwrap_or(0) + 1)
}

//! Merchant webhook endpoints. `events` is a JSON array of subscribed types; deleted endpoints
//! stay (their delivery attempts point at them) with `deleted_at` set.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    pub events: String,
    pub description: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    pub deleted_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl EndpointRow {
    pub fn subscribed(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }

    /// The secrets that sign now: the current one, then the previous one during its 24 h.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let previous = self.previous_secret.as_deref().filter(|_| self.previous_secret_expires_at.is_some_and(|at| at > now));
        std::iter::once(self.secret.as_str()).chain(previous).collect()
    }
}

const COLUMNS: &str = "id, merchant_id, url, events, description, secret, previous_secret, previous_secret_expires_at, \
    disabled_at, disabled_reason, deleted_at, created_at, updated_at";

pub async fn insert(conn: &mut AnyConnection, e: &EndpointRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, events, description, secret, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&e.id)
    .bind(&e.merchant_id)
    .bind(&e.url)
    .bind(&e.events)
    .bind(&e.description)
    .bind(&e.secret)
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A merchant's endpoint that is not deleted.
pub async fn get(conn: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
    )))
    .bind(id)
    .bind(merchant_id)
    .fetch_optional(conn)
    .await
}

/// Any endpoint by id, deleted or not (workers).
pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn list(conn: &mut AnyConnection, merchant_id: &str, limit: i64, offset: i64) -> Result<(Vec<EndpointRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL \
         ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
    )))
    .bind(merchant_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL")
        .bind(merchant_id)
        .fetch_one(conn)
        .await?;
    Ok((rows, total))
}

/// The endpoints an event of this merchant may go to (not deleted, not disabled).
pub async fn list_enabled(conn: &mut AnyConnection, merchant_id: &str) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints \
         WHERE merchant_id = $1 AND deleted_at IS NULL AND disabled_at IS NULL ORDER BY created_at, id"
    )))
    .bind(merchant_id)
    .fetch_all(conn)
    .await
}

pub async fn mark_deleted(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE webhook_endpoints SET deleted_at = $1, updated_at = $1 WHERE id = $2 AND deleted_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Stops sending to the endpoint (the receiver answered 410 Gone).
pub async fn disable(conn: &mut AnyConnection, id: &str, reason: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = $2, updated_at = $1 \
         WHERE id = $3 AND disabled_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Installs a new secret; the current one becomes the previous one until `previous_expires_at`.
pub async fn rotate_secret(
    conn: &mut AnyConnection,
    id: &str,
    new_secret: &str,
    previous_expires_at: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $1, secret = $2, \
         updated_at = $3 WHERE id = $4",
    )
    .bind(previous_expires_at)
    .bind(new_secret)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

//! The operations audit log: one row per action taken on queues and jobs.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
}

pub async fn insert(conn: &mut AnyConnection, row: &AuditRow) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO ops_audit (id, at, actor, action, target, source) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&row.id)
        .bind(row.at)
        .bind(&row.actor)
        .bind(&row.action)
        .bind(&row.target)
        .bind(&row.source)
        .execute(conn)
        .await?;
    Ok(())
}

/// Newest first, with the total count.
pub async fn list(conn: &mut AnyConnection, limit: i64, offset: i64) -> Result<(Vec<AuditRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as("SELECT id, at, actor, action, target, source FROM ops_audit ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2")
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM ops_audit").fetch_one(conn).await?;
    Ok((rows, total))
}

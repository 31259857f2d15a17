use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    pub id: String,
    pub merchant_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub membership_id: Option<String>,
    pub payment_id: Option<String>,
    pub data: String,
    pub created_at: i64,
}

pub async fn insert(conn: &mut AnyConnection, e: &EventRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (id, merchant_id, type, membership_id, payment_id, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&e.id)
    .bind(&e.merchant_id)
    .bind(&e.kind)
    .bind(&e.membership_id)
    .bind(&e.payment_id)
    .bind(&e.data)
    .bind(e.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list_for_membership(
    conn: &mut AnyConnection,
    membership_id: &str,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, merchant_id, type, membership_id, payment_id, data, created_at FROM events \
         WHERE membership_id = $1 ORDER BY created_at, id",
    )
    .bind(membership_id)
    .fetch_all(conn)
    .await
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, merchant_id, type, membership_id, payment_id, data, created_at FROM events WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The newest event time of a membership, so the next one can be ordered strictly after it.
pub async fn latest_for_membership(conn: &mut AnyConnection, membership_id: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MAX(created_at) FROM events WHERE membership_id = $1")
        .bind(membership_id)
        .fetch_one(conn)
        .await
}

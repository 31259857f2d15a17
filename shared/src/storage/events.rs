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

/// Inserts an event of a membership strictly after its newest one (`created_at` is `at`, or one
/// millisecond after the latest, whichever is later) and returns the time given, in one
/// statement. Webhooks carry `created_at` as the order of a membership's events.
pub async fn insert_ordered(conn: &mut AnyConnection, e: &EventRow, membership_id: &str, at: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO events (id, merchant_id, type, membership_id, payment_id, data, created_at) \
         SELECT $1, $2, $3, $4, $5, $6, CASE WHEN MAX(created_at) >= $7 THEN MAX(created_at) + 1 ELSE $7 END \
         FROM events WHERE membership_id = $4 RETURNING created_at",
    )
    .bind(&e.id)
    .bind(&e.merchant_id)
    .bind(&e.kind)
    .bind(membership_id)
    .bind(&e.payment_id)
    .bind(&e.data)
    .bind(at)
    .fetch_one(conn)
    .await
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


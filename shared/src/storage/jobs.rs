//! The transactional outbox: a job row is written in the same transaction as the state change
//! that causes it, so a rolled-back change never runs a job and a committed one never loses it.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub payload: String,
    pub merchant_id: Option<String>,
    pub membership_id: Option<String>,
    pub status: String,
    pub run_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert(conn: &mut AnyConnection, j: &JobRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (id, queue, payload, merchant_id, membership_id, status, run_at, attempts, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
    )
    .bind(&j.id)
    .bind(&j.queue)
    .bind(&j.payload)
    .bind(&j.merchant_id)
    .bind(&j.membership_id)
    .bind(&j.status)
    .bind(j.run_at)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list_for_membership(
    conn: &mut AnyConnection,
    membership_id: &str,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, queue, payload, merchant_id, membership_id, status, run_at, attempts, last_error, \
         locked_by, locked_until, created_at, updated_at FROM jobs WHERE membership_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(membership_id)
    .fetch_all(conn)
    .await
}

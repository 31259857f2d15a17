//! Public halves of receipt signing keys, published as a JWKS and used to verify receipts.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct ReceiptKeyRow {
    pub key_id: String,
    pub algorithm: String,
    /// Base64url without padding: the JWK `x`.
    pub public_key: String,
    pub created_at: i64,
}

/// Publishes a key; a key already published keeps its first `created_at`.
pub async fn insert_if_absent(conn: &mut AnyConnection, k: &ReceiptKeyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO receipt_keys (key_id, algorithm, public_key, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(&k.key_id)
    .bind(&k.algorithm)
    .bind(&k.public_key)
    .bind(k.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every published key, newest first.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<ReceiptKeyRow>, sqlx::Error> {
    sqlx::query_as("SELECT key_id, algorithm, public_key, created_at FROM receipt_keys ORDER BY created_at DESC, key_id")
        .fetch_all(conn)
        .await
}

pub async fn get(conn: &mut AnyConnection, key_id: &str) -> Result<Option<ReceiptKeyRow>, sqlx::Error> {
    sqlx::query_as("SELECT key_id, algorithm, public_key, created_at FROM receipt_keys WHERE key_id = $1")
        .bind(key_id)
        .fetch_optional(conn)
        .await
}

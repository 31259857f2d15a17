use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct MerchantRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

pub async fn insert(
    conn: &mut AnyConnection,
    row: &MerchantRow,
    api_key_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO merchants (id, name, api_key_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&row.id)
        .bind(&row.name)
        .bind(api_key_hash)
        .bind(row.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get_by_key_hash(
    conn: &mut AnyConnection,
    api_key_hash: &str,
) -> Result<Option<MerchantRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM merchants WHERE api_key_hash = $1")
        .bind(api_key_hash)
        .fetch_optional(conn)
        .await
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<MerchantRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM merchants WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

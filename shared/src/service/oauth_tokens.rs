//! The start-up rule for buyers' OAuth tokens at rest (`HILT_ENCRYPTION_KEY`, see
//! [`crate::secrets`]): a process that would serve tokens it cannot read does not start.

use sqlx::AnyConnection;

use crate::{secrets::EncryptionKey, storage::Db};

/// The columns that hold a buyer's Discord OAuth token: `(table, column)`.
const COLUMNS: [(&str, &str); 2] = [("payments", "buyer_discord_access_token"), ("memberships", "discord_access_token")];

/// Run before serving. Without a key: an error when any token is stored. With one: tokens an
/// older version stored in plaintext are sealed now, and an error when the key does not open
/// the stored tokens (a changed key). Errors say which variable to fix.
pub async fn check_at_start(db: &Db, key: Option<&EncryptionKey>) -> anyhow::Result<()> {
    let mut conn = db.conn().await?;
    for (table, column) in COLUMNS {
        let Some(key) = key else {
            anyhow::ensure!(
                first(&mut conn, table, column, "IS NOT NULL").await?.is_none(),
                "HILT_ENCRYPTION_KEY is not set, but the database holds buyer OAuth tokens ({table}); set the key they were sealed with"
            );
            continue;
        };
        if let Some(sealed) = first(&mut conn, table, column, "LIKE 'enc:v1:%'").await? {
            key.open(&sealed)?;
        }
        let plaintext: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} NOT LIKE 'enc:v1:%'"
        )))
        .fetch_all(&mut *conn)
        .await?;
        for (id, value) in &plaintext {
            sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET {column} = $1 WHERE id = $2")))
                .bind(key.seal(value))
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        if !plaintext.is_empty() {
            tracing::info!(table, tokens = plaintext.len(), "sealed buyer OAuth tokens an earlier version stored in plaintext");
        }
    }
    Ok(())
}

/// One stored value of `table.column` matching `condition`, if any.
async fn first(conn: &mut AnyConnection, table: &str, column: &str, condition: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {column} FROM {table} WHERE {column} {condition} LIMIT 1")))
        .fetch_optional(conn)
        .await
}

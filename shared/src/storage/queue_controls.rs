//! Operator controls per queue (pause/resume).

use sqlx::AnyConnection;

pub async fn paused(conn: &mut AnyConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT queue FROM queue_controls WHERE paused = 1").fetch_all(conn).await
}

pub async fn set_paused(conn: &mut AnyConnection, queue: &str, paused: bool, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO queue_controls (queue, paused, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
    )
    .bind(queue)
    .bind(i64::from(paused))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

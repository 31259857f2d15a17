//! Leases make periodic work single-run across processes (sweeper, renewal).

use sqlx::AnyConnection;

/// Takes or renews the named lease until `until`; false while another holder has it.
pub async fn acquire(conn: &mut AnyConnection, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.expires_at < $4 OR leases.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(until)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn release(conn: &mut AnyConnection, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(conn)
        .await?;
    Ok(())
}

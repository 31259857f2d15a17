//! Provider pauses (`provider_pauses`): the circuit breaker every worker shares. See
//! `worker::context::AuthBreaker`.

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct PauseRow {
    /// `telegram` or `discord`: the deployment's bot for that provider.
    pub provider: String,
    /// Unix milliseconds: no call before; after it, the next call is the probe.
    pub paused_until: i64,
    pub reason: String,
    pub opened_at: i64,
    /// The worker that saw the burst.
    pub opened_by: String,
}

/// Opens (or extends) the pause of a provider.
pub async fn open(conn: &mut AnyConnection, p: &PauseRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_pauses (provider, paused_until, reason, opened_at, opened_by) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (provider) DO UPDATE SET paused_until = excluded.paused_until, reason = excluded.reason, \
         opened_at = excluded.opened_at, opened_by = excluded.opened_by",
    )
    .bind(&p.provider)
    .bind(p.paused_until)
    .bind(&p.reason)
    .bind(p.opened_at)
    .bind(&p.opened_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every pause, running or waiting for its probe.
pub async fn all(conn: &mut AnyConnection) -> Result<Vec<PauseRow>, sqlx::Error> {
    sqlx::query_as("SELECT provider, paused_until, reason, opened_at, opened_by FROM provider_pauses ORDER BY provider").fetch_all(conn).await
}

/// Ends a provider's pause; false if it had none.
pub async fn clear(conn: &mut AnyConnection, provider: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM provider_pauses WHERE provider = $1").bind(provider).execute(conn).await?.rows_affected() > 0)
}

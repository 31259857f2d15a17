//! `Idempotency-Key` claims (zero2prod's pattern): insert-if-absent, run, store the response.

use sqlx::AnyConnection;

pub enum Claim {
    /// First use of the key: run the request, then `save_response`.
    New,
    /// The key was used with another body.
    Mismatch,
    /// The first request with this key has not finished yet.
    InFlight,
    /// The stored first response, to replay.
    Replay { status: u16, body: String },
}

/// A claim with no response after this long belongs to a request that died (the client gave up,
/// the process was killed): the key is free again.
pub const ABANDONED_AFTER_MS: i64 = 30_000;

pub async fn claim(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Claim, sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 \
         AND (created_at < $3 OR (response_status IS NULL AND created_at < $4))",
    )
    .bind(scope)
    .bind(key)
    .bind(now - ttl_ms)
    .bind(now - ABANDONED_AFTER_MS)
    .execute(&mut *conn)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, idem_key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    let (stored_hash, status, body): (String, Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys \
         WHERE scope = $1 AND idem_key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(match (stored_hash == request_hash, status, body) {
        (false, _, _) => Claim::Mismatch,
        (true, Some(status), Some(body)) => Claim::Replay { status: u16::try_from(status).unwrap_or(500), body },
        (true, _, _) => Claim::InFlight,
    })
}

pub async fn save_response(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $1, response_body = $2 WHERE scope = $3 AND idem_key = $4",
    )
    .bind(i64::from(status))
    .bind(body)
    .bind(scope)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Frees the key: after a failure the client should be able to retry (5xx), or a request that
/// failed authentication (which must leave nothing behind).
pub async fn release(conn: &mut AnyConnection, scope: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
        .bind(scope)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

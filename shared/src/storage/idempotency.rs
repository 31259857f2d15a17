//! `Idempotency-Key` records, written inside the request's own transaction (zero2prod's
//! pattern): claim (insert-if-absent), the request's changes, then the saved response, one commit.

use sqlx::AnyConnection;

use super::is_postgres;

pub enum Claim {
    /// First use of the key: run the request, then `save_response` in the same transaction.
    New,
    /// The key was used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
    /// The saved response of the request that happened, to replay.
    Replay { status: u16, body: String },
}

/// Claims `key` within the caller's transaction. While another transaction holds the same key,
/// PostgreSQL answers `InFlight` at once (a transaction-scoped advisory lock on the key; the
/// insert alone would wait for it); SQLite's single writer has already waited for it.
pub async fn claim(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<Claim, sqlx::Error> {
    if is_postgres(conn) && !lock_key(conn, scope, key).await? {
        return Ok(Claim::InFlight);
    }
    // Insert, or take over a row whose 24 h are up (retention prunes them later) or that has no
    // response, which only a claim from before claims shared their request's transaction left.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, idem_key) DO UPDATE SET request_hash = excluded.request_hash, \
         created_at = excluded.created_at, response_status = NULL, response_body = NULL \
         WHERE idempotency_keys.created_at < $5 OR idempotency_keys.response_status IS NULL",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(now)
    .bind(now - ttl_ms)
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

/// The key's transaction-scoped advisory lock. A request that just failed releases it with
/// its rollback, which the pool sends a moment after the answer (a dropped transaction), so a
/// retry sent at once is given up to a second before it is told the first is still running.
async fn lock_key(conn: &mut AnyConnection, scope: &str, key: &str) -> Result<bool, sqlx::Error> {
    let name = format!("idempotency {scope} {key}");
    for _ in 0..50 {
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await?;
        if held {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(false)
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

//! Renewal intelligence: counts over memberships and membership events (SPEC §8). Read-only.

use sqlx::{AnyConnection, FromRow};

use super::events::EventRow;

/// The event types renewal intelligence reports.
pub const RENEWAL_EVENTS: &str =
    "'membership.grace', 'membership.expired', 'membership.renewed', 'membership.gifted', 'membership.revoked', \
     'membership.cancellation_scheduled', 'membership.cancelled', 'membership.resumed', \
     'subscription.paid', 'subscription.past_due', 'subscription.unpaid'";

/// Counts of one product's memberships (or all products' when `product_id` is None).
#[derive(Debug, Clone, Default, FromRow)]
pub struct StatusCounts {
    pub product_id: Option<String>,
    pub active: i64,
    /// Active, with the period ending after now and within the first window.
    pub expiring_short: i64,
    /// Active, with the period ending after now and within the second window.
    pub expiring_long: i64,
    pub in_grace: i64,
    /// Active, with a cancellation scheduled at period end.
    pub cancelling: i64,
    /// Collection `past_due` or `unpaid` while access lasts (in grace, or marked by the processor).
    pub past_due: i64,
}

fn status_columns() -> &'static str {
    "COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0) AS active, \
     COALESCE(SUM(CASE WHEN status = 'active' AND current_period_end > $3 AND current_period_end <= $4 THEN 1 ELSE 0 END), 0) AS expiring_short, \
     COALESCE(SUM(CASE WHEN status = 'active' AND current_period_end > $3 AND current_period_end <= $5 THEN 1 ELSE 0 END), 0) AS expiring_long, \
     COALESCE(SUM(CASE WHEN status = 'grace' THEN 1 ELSE 0 END), 0) AS in_grace, \
     COALESCE(SUM(CASE WHEN status = 'active' AND cancel_at_period_end = 1 THEN 1 ELSE 0 END), 0) AS cancelling, \
     COALESCE(SUM(CASE WHEN status IN ('active', 'grace') AND collection_state <> 'paid' THEN 1 ELSE 0 END), 0) AS past_due"
}

/// Counts for the merchant (optionally one product); windows end at `short_until`/`long_until`.
pub async fn status_counts(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: Option<&str>,
    now: i64,
    short_until: i64,
    long_until: i64,
) -> Result<StatusCounts, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(NULL AS TEXT) AS product_id, {} FROM memberships \
         WHERE merchant_id = $1 AND ($2 IS NULL OR product_id = $2)",
        status_columns()
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(now)
    .bind(short_until)
    .bind(long_until)
    .fetch_one(conn)
    .await
}

/// The same counts per product.
pub async fn status_counts_by_product(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: Option<&str>,
    now: i64,
    short_until: i64,
    long_until: i64,
) -> Result<Vec<StatusCounts>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT product_id, {} FROM memberships WHERE merchant_id = $1 AND ($2 IS NULL OR product_id = $2) \
         GROUP BY product_id",
        status_columns()
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(now)
    .bind(short_until)
    .bind(long_until)
    .fetch_all(conn)
    .await
}

/// `(product_id, event type, count)` of renewal events since `since`.
pub async fn event_counts_by_product(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: Option<&str>,
    since: i64,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.product_id, e.type, COUNT(*) FROM events e JOIN memberships m ON m.id = e.membership_id \
         WHERE e.merchant_id = $1 AND ($2 IS NULL OR m.product_id = $2) AND e.created_at >= $3 \
         AND e.type IN ({RENEWAL_EVENTS}) GROUP BY m.product_id, e.type"
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(since)
    .fetch_all(conn)
    .await
}

/// The newest renewal events, newest first.
pub async fn recent_events(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: Option<&str>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT e.id, e.merchant_id, e.type, e.membership_id, e.payment_id, e.data, e.created_at FROM events e \
         WHERE e.merchant_id = $1 AND e.type IN ({RENEWAL_EVENTS}) AND ($2 IS NULL OR EXISTS \
           (SELECT 1 FROM memberships m WHERE m.id = e.membership_id AND m.product_id = $2)) \
         ORDER BY e.created_at DESC, e.id DESC LIMIT $3"
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// `(id, name, grace_period_ms)` of the merchant's products (optionally one), oldest first.
pub async fn products(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: Option<&str>,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, grace_period_ms FROM products WHERE merchant_id = $1 AND ($2 IS NULL OR id = $2) \
         ORDER BY created_at, id",
    )
    .bind(merchant_id)
    .bind(product_id)
    .fetch_all(conn)
    .await
}

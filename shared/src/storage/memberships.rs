use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct MembershipRow {
    pub id: String,
    pub merchant_id: String,
    pub product_id: String,
    pub platform: String,
    pub buyer_key: String,
    pub status: String,
    pub wallet: Option<String>,
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
    pub discord_user_id: Option<String>,
    pub discord_access_token: Option<String>,
    pub handle: Option<String>,
    pub label: Option<String>,
    pub current_period_end: Option<i64>,
    pub last_payment_id: String,
    pub notes: Option<String>,
    pub delivery_status: String,
    pub delivery_attempts: i64,
    pub last_attempt_at: Option<i64>,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    pub last_error_retryable: Option<i64>,
    pub next_retry_at: Option<i64>,
    pub invite_url: Option<String>,
    pub fallback_used: i64,
    pub delivered_at: Option<i64>,
    pub support_ticket_id: Option<String>,
    pub cancel_at_period_end: i64,
    pub collection_state: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub attempt_lock_job: Option<String>,
    pub attempt_lock_until: Option<i64>,
}

const COLUMNS: &str = "id, merchant_id, product_id, platform, buyer_key, status, wallet, email, \
    telegram_user_id, discord_user_id, discord_access_token, handle, label, current_period_end, \
    last_payment_id, notes, delivery_status, delivery_attempts, last_attempt_at, last_error_code, \
    last_error_message, last_error_retryable, next_retry_at, invite_url, fallback_used, \
    delivered_at, support_ticket_id, cancel_at_period_end, collection_state, created_at, updated_at, \
    attempt_lock_job, attempt_lock_until";

/// Inserts the membership unless one exists for (merchant, product, buyer); true if inserted.
pub async fn insert_if_absent(conn: &mut AnyConnection, m: &MembershipRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO memberships (id, merchant_id, product_id, platform, buyer_key, status, wallet, \
         email, telegram_user_id, discord_user_id, discord_access_token, handle, label, \
         current_period_end, last_payment_id, delivery_status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         ON CONFLICT (merchant_id, product_id, buyer_key) DO NOTHING",
    )
    .bind(&m.id)
    .bind(&m.merchant_id)
    .bind(&m.product_id)
    .bind(&m.platform)
    .bind(&m.buyer_key)
    .bind(&m.status)
    .bind(&m.wallet)
    .bind(&m.email)
    .bind(m.telegram_user_id)
    .bind(&m.discord_user_id)
    .bind(&m.discord_access_token)
    .bind(&m.handle)
    .bind(&m.label)
    .bind(m.current_period_end)
    .bind(&m.last_payment_id)
    .bind(&m.delivery_status)
    .bind(m.created_at)
    .bind(m.updated_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(
    conn: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(id)
    .bind(merchant_id)
    .fetch_optional(conn)
    .await
}

/// For workers, which act on ids from job payloads whatever the merchant.
pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM memberships WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn get_by_buyer(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: &str,
    buyer_key: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE merchant_id = $1 AND product_id = $2 AND buyer_key = $3"
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(buyer_key)
    .fetch_optional(conn)
    .await
}

/// Records a paid period: access is active until `period_end`, a fresh delivery is pending,
/// buyer details given with this payment replace older ones, a scheduled cancellation is
/// dropped and the subscription is `paid`.
pub async fn update_for_payment(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET status = $1, current_period_end = $2, last_payment_id = $3, \
         delivery_status = $4, next_retry_at = NULL, wallet = $5, email = $6, telegram_user_id = $7, \
         discord_user_id = $8, discord_access_token = $9, handle = $10, updated_at = $11, \
         cancel_at_period_end = 0, collection_state = 'paid' WHERE id = $12",
    )
    .bind(&m.status)
    .bind(m.current_period_end)
    .bind(&m.last_payment_id)
    .bind(&m.delivery_status)
    .bind(&m.wallet)
    .bind(&m.email)
    .bind(m.telegram_user_id)
    .bind(&m.discord_user_id)
    .bind(&m.discord_access_token)
    .bind(&m.handle)
    .bind(m.updated_at)
    .bind(&m.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the membership's attempt lock for a job: no two attempts for one membership run at
/// once. False while another job's lock is live.
/// One more attempt on `delivery_attempts`, in the transaction that writes the attempt row, so
/// the count always equals the membership's attempt rows.
pub async fn count_attempt(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET delivery_attempts = delivery_attempts + 1 WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

pub async fn lock_for_attempt(conn: &mut AnyConnection, id: &str, job_id: &str, now: i64, until: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE memberships SET attempt_lock_job = $1, attempt_lock_until = $2 WHERE id = $3 \
         AND (attempt_lock_job IS NULL OR attempt_lock_until < $4 OR attempt_lock_job = $1)",
    )
    .bind(job_id)
    .bind(until)
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The membership, locked until the caller's transaction ends (PostgreSQL `FOR UPDATE`; a
/// SQLite write transaction already excludes every other writer), when no other job's attempt
/// holds its attempt lock; None when one does, or there is no such membership. For an attempt
/// written whole in one transaction: the row lock serialises it against other attempts without
/// writing the attempt lock, which the membership update would clear again at once.
pub async fn get_for_attempt(conn: &mut AnyConnection, id: &str, job_id: &str, now: i64) -> Result<Option<MembershipRow>, sqlx::Error> {
    let for_update = if super::is_postgres(conn) { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE id = $1 \
         AND (attempt_lock_job IS NULL OR attempt_lock_until < $2 OR attempt_lock_job = $3){for_update}"
    )))
    .bind(id)
    .bind(now)
    .bind(job_id)
    .fetch_optional(conn)
    .await
}

/// Releases the attempt locks these jobs hold (their worker is gone).
pub async fn unlock_for_jobs(conn: &mut AnyConnection, job_ids: &[String]) -> Result<(), sqlx::Error> {
    if job_ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE memberships SET attempt_lock_job = NULL, attempt_lock_until = NULL WHERE {}",
        super::in_list(conn, "attempt_lock_job", 1)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(super::json_list(job_ids)).execute(conn).await?;
    Ok(())
}

pub async fn unlock(conn: &mut AnyConnection, id: &str, job_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET attempt_lock_job = NULL, attempt_lock_until = NULL WHERE id = $1 AND attempt_lock_job = $2")
        .bind(id)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an attempt for the membership is running right now.
pub async fn attempt_in_flight(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE id = $1 AND attempt_lock_job IS NOT NULL AND attempt_lock_until >= $2",
    )
    .bind(id)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// Writes the delivery fields after an attempt and releases the attempt lock.
pub async fn update_delivery(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET delivery_status = $1, delivery_attempts = $2, last_attempt_at = $3, \
         last_error_code = $4, last_error_message = $5, last_error_retryable = $6, next_retry_at = $7, \
         invite_url = $8, fallback_used = $9, delivered_at = $10, support_ticket_id = $11, updated_at = $12, \
         attempt_lock_job = NULL, attempt_lock_until = NULL WHERE id = $13",
    )
    .bind(&m.delivery_status)
    .bind(m.delivery_attempts)
    .bind(m.last_attempt_at)
    .bind(&m.last_error_code)
    .bind(&m.last_error_message)
    .bind(m.last_error_retryable)
    .bind(m.next_retry_at)
    .bind(&m.invite_url)
    .bind(m.fallback_used)
    .bind(m.delivered_at)
    .bind(&m.support_ticket_id)
    .bind(m.updated_at)
    .bind(&m.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where the owed-delivery scan stopped: the `(updated_at, id)` of the last membership it read.
pub type OwedCursor = (i64, String);

/// One page of the sweeper's backstop scan: the keys of memberships whose delivery is owed
/// (pending or failed) after `after`, oldest update first, at most `limit`. One range of the
/// partial index `memberships_owed`, so a page costs the same however many deliveries a
/// backlog owes.
pub async fn owed_page(conn: &mut AnyConnection, after: Option<&OwedCursor>, limit: i64) -> Result<Vec<OwedCursor>, sqlx::Error> {
    let (at, id) = after.map_or((i64::MIN, ""), |(at, id)| (*at, id.as_str()));
    sqlx::query_as(
        "SELECT updated_at, id FROM memberships WHERE delivery_status IN ('pending', 'failed') \
         AND (updated_at, id) > ($1, $2) ORDER BY updated_at, id LIMIT $3",
    )
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Of the memberships `ids`, those still owed a delivery (pending or failed, access active or
/// in grace) that no waiting or running delivery job holds (after a crash between steps, or a
/// job an operator dropped): the sweeper re-enqueues them.
pub async fn without_live_delivery_job(conn: &mut AnyConnection, ids: &[&str]) -> Result<Vec<MembershipRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM memberships m WHERE {} AND m.delivery_status IN ('pending', 'failed') \
         AND m.status IN ('active', 'grace') AND NOT EXISTS (SELECT 1 FROM jobs j \
         WHERE j.membership_id = m.id AND j.queue = 'delivery' AND j.status IN ('queued', 'running'))",
        super::in_list(conn, "m.id", 1)
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(super::json_list(ids)).fetch_all(conn).await
}

/// Filters of the membership ledger; `None` leaves a filter out.
#[derive(Debug, Default, Clone)]
pub struct MembershipFilter {
    pub product_id: Option<String>,
    pub status: Option<String>,
    pub platform: Option<String>,
    /// A LIKE pattern (see `storage::like_pattern`) over [`SEARCH_TEXT`].
    pub q: Option<String>,
}

/// What the ledger's `q` searches, lower-cased: handle, label, wallet, Telegram and Discord user
/// ids, the membership id and its latest payment's id. On PostgreSQL a trigram index on this
/// very expression serves the substring search (`Db::migrate`); SQLite scans.
pub(crate) const SEARCH_TEXT: &str = "LOWER(COALESCE(handle, '') || ' ' || COALESCE(label, '') || ' ' || \
    COALESCE(wallet, '') || ' ' || COALESCE(CAST(telegram_user_id AS TEXT), '') || ' ' || \
    COALESCE(discord_user_id, '') || ' ' || id || ' ' || last_payment_id)";

/// The ledger, newest first, with the total. Only the given filters enter the statement, so
/// each combination has a plan that can use its index.
pub async fn list(
    conn: &mut AnyConnection,
    merchant_id: &str,
    filter: &MembershipFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MembershipRow>, i64), sqlx::Error> {
    let mut values = vec![merchant_id];
    let mut filters = vec!["merchant_id = $1".to_owned()];
    let given = [("product_id = ", &filter.product_id), ("status = ", &filter.status), ("platform = ", &filter.platform)];
    for (test, value) in given {
        if let Some(value) = value {
            values.push(value);
            filters.push(format!("{test}${}", values.len()));
        }
    }
    if let Some(q) = &filter.q {
        values.push(q);
        filters.push(format!("{SEARCH_TEXT} LIKE ${} ESCAPE '\\'", values.len()));
    }
    let filters = filters.join(" AND ");
    let n = values.len();
    let sql = format!("SELECT {COLUMNS} FROM memberships WHERE {filters} ORDER BY created_at DESC, id LIMIT ${} OFFSET ${}", n + 1, n + 2);
    let mut rows = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for value in &values {
        rows = rows.bind(*value);
    }
    let rows = rows.bind(limit).bind(offset).fetch_all(&mut *conn).await?;
    let mut total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM memberships WHERE {filters}")));
    for value in &values {
        total = total.bind(*value);
    }
    Ok((rows, total.fetch_one(conn).await?))
}

/// How a buyer is looked up (exactly one selector).
#[derive(Debug, Clone)]
pub enum Lookup {
    Wallet(String),
    /// A Telegram user id (digits), a Discord user id (digits) or a handle (`@` optional).
    Identity(String),
    TxSignature(String),
}

pub async fn lookup(
    conn: &mut AnyConnection,
    merchant_id: &str,
    by: &Lookup,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MembershipRow>, i64), sqlx::Error> {
    // Each selector is its own statement shape, so each plan reads its index (0014).
    let (filter, text, number): (&str, &str, Option<i64>) = match by {
        Lookup::Wallet(w) => ("wallet = $2", w, None),
        Lookup::Identity(i) => match i.parse::<i64>() {
            Ok(n) => (
                "(discord_user_id = $2 OR telegram_user_id = $3 OR LOWER(LTRIM(COALESCE(handle, ''), '@')) = LOWER(LTRIM($2, '@')))",
                i,
                Some(n),
            ),
            Err(_) => ("(discord_user_id = $2 OR LOWER(LTRIM(COALESCE(handle, ''), '@')) = LOWER(LTRIM($2, '@')))", i, None),
        },
        Lookup::TxSignature(t) => ("id IN (SELECT p.membership_id FROM payments p WHERE p.merchant_id = $1 AND p.tx_signature = $2)", t, None),
    };
    let filters = format!("merchant_id = $1 AND {filter}");
    let (limit_at, offset_at) = if number.is_some() { (4, 5) } else { (3, 4) };
    let mut rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE {filters} ORDER BY created_at DESC, id LIMIT ${limit_at} OFFSET ${offset_at}"
    )))
    .bind(merchant_id)
    .bind(text);
    let mut total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM memberships WHERE {filters}")))
        .bind(merchant_id)
        .bind(text);
    if let Some(n) = number {
        rows = rows.bind(n);
        total = total.bind(n);
    }
    let rows = rows.bind(limit).bind(offset).fetch_all(&mut *conn).await?;
    Ok((rows, total.fetch_one(conn).await?))
}

pub async fn update_notes(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET notes = $1, updated_at = $2 WHERE id = $3 AND merchant_id = $4")
        .bind(&m.notes)
        .bind(m.updated_at)
        .bind(&m.id)
        .bind(&m.merchant_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn update_profile(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET handle = $1, label = $2, updated_at = $3 WHERE id = $4 AND merchant_id = $5")
        .bind(&m.handle)
        .bind(&m.label)
        .bind(m.updated_at)
        .bind(&m.id)
        .bind(&m.merchant_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes a new paid-through time and access status (a gift), and the delivery status.
pub async fn update_period(conn: &mut AnyConnection, m: &MembershipRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET status = $1, current_period_end = $2, delivery_status = $3, next_retry_at = $4, \
         updated_at = $5 WHERE id = $6",
    )
    .bind(&m.status)
    .bind(m.current_period_end)
    .bind(&m.delivery_status)
    .bind(m.next_retry_at)
    .bind(m.updated_at)
    .bind(&m.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a membership from one access status to another if it is still in `from` and its
/// period ended before `ended_before`; false when something else changed it first (a renewal).
/// Schedules (or, with false, withdraws) the end of a membership at its period end; only while
/// it is active with a period end still ahead. True when it changed.
pub async fn set_cancel_at_period_end(conn: &mut AnyConnection, id: &str, cancel: bool, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE memberships SET cancel_at_period_end = $1, updated_at = $2 WHERE id = $3 AND status = 'active' \
         AND current_period_end IS NOT NULL AND current_period_end > $2 AND cancel_at_period_end <> $1",
    )
    .bind(super::flag(cancel))
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends access now: `cancelled`, from `active` or `grace`. True when it changed.
pub async fn cancel_now(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE memberships SET status = 'cancelled', cancel_at_period_end = 0, updated_at = $1 \
         WHERE id = $2 AND status IN ('active', 'grace')",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets `collection_state` (`paid`, `past_due` or `unpaid`); true when it changed.
pub async fn set_collection_state(conn: &mut AnyConnection, id: &str, state: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE memberships SET collection_state = $1, updated_at = $2 WHERE id = $3 AND collection_state <> $1")
        .bind(state)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn move_status(
    conn: &mut AnyConnection,
    id: &str,
    from: &str,
    to: &str,
    ended_before: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE memberships SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4 \
         AND current_period_end IS NOT NULL AND current_period_end <= $5",
    )
    .bind(to)
    .bind(now)
    .bind(id)
    .bind(from)
    .bind(ended_before)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Active memberships whose paid period has ended: they enter grace.
pub async fn period_ended(conn: &mut AnyConnection, now: i64, limit: i64) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE status = 'active' AND current_period_end IS NOT NULL \
         AND current_period_end <= $1 ORDER BY current_period_end, id LIMIT $2"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Memberships in grace whose product's grace period has run out: they expire.
pub async fn grace_ended(conn: &mut AnyConnection, now: i64, limit: i64) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships m WHERE m.status = 'grace' AND m.current_period_end IS NOT NULL \
         AND m.current_period_end + (SELECT p.grace_period_ms FROM products p WHERE p.id = m.product_id) <= $1 \
         ORDER BY m.current_period_end, m.id LIMIT $2"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Active memberships whose period ends within `horizon` ms: reminder candidates.
pub async fn ending_within(conn: &mut AnyConnection, now: i64, horizon: i64, limit: i64) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE status = 'active' AND current_period_end IS NOT NULL \
         AND current_period_end > $1 AND current_period_end <= $2 ORDER BY current_period_end, id LIMIT $3"
    )))
    .bind(now)
    .bind(now.saturating_add(horizon))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A merchant's memberships still holding access whose paid period ends by `until` (grace ones
/// included), soonest first.
pub async fn expiring(
    conn: &mut AnyConnection,
    merchant_id: &str,
    product_id: Option<&str>,
    until: i64,
    limit: i64,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships WHERE merchant_id = $1 AND ($2 IS NULL OR product_id = $2) \
         AND status IN ('active', 'grace') AND current_period_end IS NOT NULL AND current_period_end <= $3 \
         ORDER BY current_period_end, id LIMIT $4"
    )))
    .bind(merchant_id)
    .bind(product_id)
    .bind(until)
    .bind(limit)
    .fetch_all(conn)
    .await
}

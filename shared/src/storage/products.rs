use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct ProductRow {
    pub id: String,
    pub merchant_id: String,
    pub name: String,
    pub platform: String,
    pub telegram_chat_id: Option<i64>,
    pub discord_guild_id: Option<String>,
    pub discord_role_id: Option<String>,
    pub fallback_invite_url: Option<String>,
    /// The merchant's renewal checkout URL, placeholders unfilled (see [`renewal_link`]).
    pub renewal_url: Option<String>,
    pub price_amount: String,
    pub price_currency: String,
    pub recurring: i64,
    pub period_ms: Option<i64>,
    pub grace_period_ms: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, merchant_id, name, platform, telegram_chat_id, discord_guild_id, \
    discord_role_id, fallback_invite_url, renewal_url, price_amount, price_currency, recurring, period_ms, \
    grace_period_ms, created_at, updated_at";

/// The product's renewal URL for one membership: `{membership_id}` and `{product_id}` filled in.
pub fn renewal_link(p: &ProductRow, membership_id: &str) -> Option<String> {
    p.renewal_url.as_ref().map(|url| url.replace("{membership_id}", membership_id).replace("{product_id}", &p.id))
}

pub async fn insert(conn: &mut AnyConnection, p: &ProductRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO products (id, merchant_id, name, platform, telegram_chat_id, discord_guild_id, \
         discord_role_id, fallback_invite_url, price_amount, price_currency, recurring, period_ms, \
         grace_period_ms, created_at, updated_at, renewal_url) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&p.id)
    .bind(&p.merchant_id)
    .bind(&p.name)
    .bind(&p.platform)
    .bind(p.telegram_chat_id)
    .bind(&p.discord_guild_id)
    .bind(&p.discord_role_id)
    .bind(&p.fallback_invite_url)
    .bind(&p.price_amount)
    .bind(&p.price_currency)
    .bind(p.recurring)
    .bind(p.period_ms)
    .bind(p.grace_period_ms)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(&p.renewal_url)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update(conn: &mut AnyConnection, p: &ProductRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE products SET name = $1, platform = $2, telegram_chat_id = $3, discord_guild_id = $4, \
         discord_role_id = $5, fallback_invite_url = $6, price_amount = $7, price_currency = $8, \
         recurring = $9, period_ms = $10, grace_period_ms = $11, updated_at = $12, renewal_url = $15 \
         WHERE id = $13 AND merchant_id = $14",
    )
    .bind(&p.name)
    .bind(&p.platform)
    .bind(p.telegram_chat_id)
    .bind(&p.discord_guild_id)
    .bind(&p.discord_role_id)
    .bind(&p.fallback_invite_url)
    .bind(&p.price_amount)
    .bind(&p.price_currency)
    .bind(p.recurring)
    .bind(p.period_ms)
    .bind(p.grace_period_ms)
    .bind(p.updated_at)
    .bind(&p.id)
    .bind(&p.merchant_id)
    .bind(&p.renewal_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// Points the product at the supergroup its Telegram group became, if it still names `old`;
/// true when it did.
pub async fn follow_chat_migration(conn: &mut AnyConnection, id: &str, old: i64, new: i64, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE products SET telegram_chat_id = $1, updated_at = $2 WHERE id = $3 AND telegram_chat_id = $4")
        .bind(new)
        .bind(now)
        .bind(id)
        .bind(old)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(
    conn: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(id)
    .bind(merchant_id)
    .fetch_optional(conn)
    .await
}

pub async fn list(
    conn: &mut AnyConnection,
    merchant_id: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ProductRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products WHERE merchant_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
    )))
    .bind(merchant_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE merchant_id = $1")
        .bind(merchant_id)
        .fetch_one(conn)
        .await?;
    Ok((rows, total))
}

use serde::{Deserialize, Deserializer};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{ServiceError, discord_id, http_url, invalid, required_text};
use crate::{
    clock::now_ms,
    domain::{Amount, Currency, Period, Platform, ProductId},
    storage::products::{self, ProductRow},
};

const DEFAULT_GRACE: &str = "3d";

#[derive(Debug, Deserialize, ToSchema)]
pub struct PriceInput {
    /// Decimal string, e.g. "9.99".
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProduct {
    pub name: String,
    /// `telegram` or `discord`.
    pub platform: String,
    pub telegram_chat_id: Option<i64>,
    pub discord_guild_id: Option<String>,
    pub discord_role_id: Option<String>,
    pub fallback_invite_url: Option<String>,
    /// http(s) URL of the merchant's renewal checkout; `{membership_id}` and `{product_id}`
    /// are filled in for each buyer.
    pub renewal_url: Option<String>,
    pub price: PriceInput,
    #[serde(default)]
    pub recurring: bool,
    /// Duration such as `30d`, `12h`, `90s`; null or absent is lifetime access.
    pub period: Option<String>,
    /// Default `3d`.
    pub grace_period: Option<String>,
}

/// Absent fields stay as they are; `null` clears a nullable field.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateProduct {
    pub name: Option<String>,
    pub platform: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub telegram_chat_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub discord_guild_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub discord_role_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub fallback_invite_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub renewal_url: Option<Option<String>>,
    pub price: Option<PriceInput>,
    pub recurring: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub period: Option<Option<String>>,
    pub grace_period: Option<String>,
}

fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn parse_period(param: &str, value: &str) -> Result<Period, ServiceError> {
    let p: Period = value.parse().map_err(|e: String| invalid(param, e))?;
    if p.0.is_zero() { Err(invalid(param, "must be longer than zero")) } else { Ok(p) }
}

/// The rules every stored product satisfies, for create and for the result of a patch.
fn check(p: &mut ProductRow) -> Result<(), ServiceError> {
    p.name = required_text("name", &p.name, 200)?;
    let platform = Platform::parse(&p.platform).ok_or_else(|| invalid("platform", "must be telegram or discord"))?;
    match platform {
        Platform::Telegram => {
            if p.discord_guild_id.is_some() || p.discord_role_id.is_some() {
                return Err(invalid("discord_guild_id", "only discord products take Discord ids"));
            }
            if p.telegram_chat_id == Some(0) {
                return Err(invalid("telegram_chat_id", "must be a Telegram chat id"));
            }
        }
        Platform::Discord => {
            if p.telegram_chat_id.is_some() {
                return Err(invalid("telegram_chat_id", "only telegram products take a chat id"));
            }
            p.discord_guild_id = discord_id("discord_guild_id", p.discord_guild_id.as_deref())?;
            p.discord_role_id = discord_id("discord_role_id", p.discord_role_id.as_deref())?;
            if p.discord_guild_id.is_some() != p.discord_role_id.is_some() {
                return Err(invalid("discord_role_id", "discord_guild_id and discord_role_id go together"));
            }
        }
    }
    p.fallback_invite_url = http_url("fallback_invite_url", p.fallback_invite_url.as_deref())?;
    p.renewal_url = http_url("renewal_url", p.renewal_url.as_deref())?;
    p.price_amount = Amount::parse(&p.price_amount).map_err(|m| invalid("price.amount", m))?.to_string();
    p.price_currency = Currency::parse(&p.price_currency).map_err(|m| invalid("price.currency", m))?.as_str().to_owned();
    if p.recurring != 0 && p.period_ms.is_none() {
        return Err(invalid("period", "a recurring product needs a period such as 30d"));
    }
    Ok(())
}

pub async fn create(tx: &mut AnyConnection, merchant_id: &str, input: CreateProduct) -> Result<ProductRow, ServiceError> {
    let now = now_ms();
    let period_ms = match input.period.as_deref() {
        Some(p) => Some(parse_period("period", p)?.as_millis()),
        None => None,
    };
    let grace = parse_period_or_zero("grace_period", input.grace_period.as_deref().unwrap_or(DEFAULT_GRACE))?;
    let mut row = ProductRow {
        id: ProductId::generate().to_string(),
        merchant_id: merchant_id.to_owned(),
        name: input.name,
        platform: input.platform,
        telegram_chat_id: input.telegram_chat_id,
        discord_guild_id: input.discord_guild_id,
        discord_role_id: input.discord_role_id,
        fallback_invite_url: input.fallback_invite_url,
        renewal_url: input.renewal_url,
        price_amount: input.price.amount,
        price_currency: input.price.currency,
        recurring: i64::from(input.recurring),
        period_ms,
        grace_period_ms: grace.as_millis(),
        created_at: now,
        updated_at: now,
    };
    check(&mut row)?;
    products::insert(&mut *tx, &row).await?;
    Ok(row)
}

/// A grace period of `0s` is allowed: access ends at period end.
fn parse_period_or_zero(param: &str, value: &str) -> Result<Period, ServiceError> {
    value.parse().map_err(|e: String| invalid(param, e))
}

pub async fn update(tx: &mut AnyConnection, merchant_id: &str, id: &str, patch: UpdateProduct) -> Result<ProductRow, ServiceError> {
    let mut row = products::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    if let Some(v) = patch.name { row.name = v; }
    if let Some(v) = patch.platform { row.platform = v; }
    if let Some(v) = patch.telegram_chat_id { row.telegram_chat_id = v; }
    if let Some(v) = patch.discord_guild_id { row.discord_guild_id = v; }
    if let Some(v) = patch.discord_role_id { row.discord_role_id = v; }
    if let Some(v) = patch.fallback_invite_url { row.fallback_invite_url = v; }
    if let Some(v) = patch.renewal_url { row.renewal_url = v; }
    if let Some(price) = patch.price {
        row.price_amount = price.amount;
        row.price_currency = price.currency;
    }
    if let Some(v) = patch.recurring { row.recurring = i64::from(v); }
    if let Some(v) = patch.period {
        row.period_ms = match v {
            Some(p) => Some(parse_period("period", &p)?.as_millis()),
            None => None,
        };
    }
    if let Some(v) = patch.grace_period {
        row.grace_period_ms = parse_period_or_zero("grace_period", &v)?.as_millis();
    }
    row.updated_at = now_ms();
    check(&mut row)?;
    products::update(&mut *tx, &row).await?;
    Ok(row)
}

//! The membership ledger from the merchant's side: search, lookup, notes, display corrections
//! and gifts of free time (SPEC §5).

use sqlx::AnyConnection;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::{ServiceError, invalid, optional_text, payments::record_event};
use crate::{
    clock::{now_ms, rfc3339},
    domain::{DeliveryStatus, MembershipStatus, Platform},
    queue::{self, DeliveryJob, Trigger},
    storage::{
        Db, jobs, like_pattern,
        memberships::{self, Lookup, MembershipFilter, MembershipRow},
    },
};

/// Ledger filters as given in the query string; checked here.
#[derive(Debug, Default)]
pub struct ListMemberships<'a> {
    pub product_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub q: Option<&'a str>,
}

const MAX_QUERY: usize = 200;

pub async fn list(
    db: &Db,
    merchant_id: &str,
    filter: ListMemberships<'_>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MembershipRow>, i64), ServiceError> {
    let status = match filter.status {
        None => None,
        Some(s) => Some(
            MembershipStatus::parse(s)
                .ok_or_else(|| invalid("status", "must be active, grace, expired or cancelled"))?
                .as_str()
                .to_owned(),
        ),
    };
    let platform = match filter.platform {
        None => None,
        Some(p) => Some(Platform::parse(p).ok_or_else(|| invalid("platform", "must be telegram or discord"))?.as_str().to_owned()),
    };
    let product_id = optional_text("product_id", filter.product_id, MAX_QUERY)?;
    let q = optional_text("q", filter.q, MAX_QUERY)?.map(|q| like_pattern(q.trim_start_matches('@')));
    let filter = MembershipFilter { product_id, status, platform, q };
    Ok(memberships::list(&mut *db.conn().await?, merchant_id, &filter, limit, offset).await?)
}

/// Exactly one selector: `wallet`, `identity` or `tx_signature`.
#[derive(Debug, Default)]
pub struct LookupMembership<'a> {
    pub wallet: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub tx_signature: Option<&'a str>,
}

/// The buyer's memberships; NotFound when there are none.
pub async fn lookup(
    db: &Db,
    merchant_id: &str,
    by: LookupMembership<'_>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MembershipRow>, i64), ServiceError> {
    let given: Vec<(&str, &str)> = [("wallet", by.wallet), ("identity", by.identity), ("tx_signature", by.tx_signature)]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .collect();
    let (name, value) = match given.as_slice() {
        [one] => *one,
        [] => return Err(invalid("wallet", "give exactly one of wallet, identity or tx_signature")),
        [_, second, ..] => return Err(invalid(second.0, "give exactly one of wallet, identity or tx_signature")),
    };
    let value = optional_text(name, Some(value), 256)?.ok_or_else(|| invalid(name, "must not be empty"))?;
    let selector = match name {
        "wallet" => Lookup::Wallet(value),
        "identity" => Lookup::Identity(value),
        _ => Lookup::TxSignature(value),
    };
    let (rows, total) = memberships::lookup(&mut *db.conn().await?, merchant_id, &selector, limit, offset).await?;
    if total == 0 {
        return Err(ServiceError::NotFound);
    }
    Ok((rows, total))
}

/// A field that must be present but may be `null`.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNotes {
    /// Merchant-only context; `null` or "" clears it. At most 10,000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_text_10000, required = true)]
    pub notes: Option<Option<String>>,
}

pub async fn update_notes(tx: &mut AnyConnection, merchant_id: &str, id: &str, input: UpdateNotes) -> Result<MembershipRow, ServiceError> {
    let notes = input.notes.ok_or_else(|| invalid("notes", "is required (null clears the notes)"))?;
    let notes = optional_text("notes", notes.as_deref(), 10_000)?;
    let mut m = memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    m.notes = notes;
    m.updated_at = now_ms();
    memberships::update_notes(&mut *tx, &m).await?;
    Ok(m)
}

/// Display corrections. Absent fields are kept; `null` or "" clears one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    /// The buyer's handle as shown to the merchant (e.g. `@alice`); at most 100 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_handle)]
    pub handle: Option<Option<String>>,
    /// A merchant-chosen label; at most 200 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::nullable_text_200)]
    pub label: Option<Option<String>>,
}

pub async fn update_profile(tx: &mut AnyConnection, merchant_id: &str, id: &str, input: UpdateProfile) -> Result<MembershipRow, ServiceError> {
    if input.handle.is_none() && input.label.is_none() {
        return Err(invalid("handle", "give handle and/or label"));
    }
    let handle = input.handle.map(|h| optional_text("handle", h.as_deref(), 100)).transpose()?;
    if handle.as_ref().and_then(Option::as_ref).is_some_and(|h| h.contains(char::is_whitespace)) {
        return Err(invalid("handle", "must not contain spaces"));
    }
    let label = input.label.map(|l| optional_text("label", l.as_deref(), 200)).transpose()?;
    let mut m = memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    if let Some(handle) = handle {
        m.handle = handle;
    }
    if let Some(label) = label {
        m.label = label;
    }
    m.updated_at = now_ms();
    memberships::update_profile(&mut *tx, &m).await?;
    Ok(m)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gift {
    /// Free days to add, 1 to 3650.
    #[schema(minimum = 1, maximum = 3650)]
    pub days: i64,
    /// Why (kept on the `membership.gifted` event); 1 to 500 characters.
    #[schema(schema_with = super::schema::required_text_500)]
    pub reason: String,
}

const DAY_MS: i64 = 86_400_000;

/// Extends access without a payment from max(now, current_period_end); access becomes active
/// again, and a membership whose access was revoked is delivered again (trigger `renewal`).
pub async fn gift(tx: &mut AnyConnection, merchant_id: &str, id: &str, input: Gift) -> Result<MembershipRow, ServiceError> {
    if !(1..=3650).contains(&input.days) {
        return Err(invalid("days", "must be a whole number of days from 1 to 3650"));
    }
    let reason = super::required_text("reason", &input.reason, 500)?;
    let now = now_ms();
    let mut m = memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let Some(previous_end) = m.current_period_end else {
        return Err(ServiceError::Conflict("this membership is lifetime access: there is no period end to extend".into()));
    };
    let previous_status = m.status.clone();
    m.current_period_end = Some(previous_end.max(now) + input.days * DAY_MS);
    m.status = MembershipStatus::Active.as_str().to_owned();
    m.updated_at = now;
    let redeliver = m.delivery_status == DeliveryStatus::Revoked.as_str();
    if redeliver {
        m.delivery_status = DeliveryStatus::Pending.as_str().to_owned();
        m.next_retry_at = None;
    }
    memberships::update_period(&mut *tx, &m).await?;
    if redeliver && !jobs::has_live(&mut *tx, &m.id, queue::Queue::Delivery.as_str()).await? {
        let job = DeliveryJob { membership_id: m.id.clone(), payment_id: Some(m.last_payment_id.clone()), trigger: Trigger::Renewal };
        queue::enqueue_delivery(&mut *tx, merchant_id, &job, now).await?;
    }
    let data = serde_json::json!({
        "membership_id": m.id,
        "days": input.days,
        "reason": reason,
        "previous_status": previous_status,
        "previous_period_end": rfc3339(previous_end),
        "current_period_end": m.current_period_end.map(rfc3339),
        "redelivery": redeliver,
    });
    record_event(&mut *tx, merchant_id, "membership.gifted", Some(&m.id), None, data, now).await?;
    Ok(m)
}

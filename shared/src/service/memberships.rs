//! The membership ledger from the merchant's side: search, lookup, notes, display corrections
//! and gifts of free time (SPEC §5).

use sqlx::AnyConnection;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::{ServiceError, invalid, optional_text, payments::record_event};
use crate::{
    clock::{now_ms, rfc3339},
    domain::{CollectionState, DeliveryStatus, MembershipStatus, Platform},
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// true: access stays until `current_period_end`, then ends without grace or reminders
    /// (undo with `…/resume`); false: access ends now.
    pub at_period_end: bool,
    /// Why (kept on the event); 1 to 500 characters.
    #[schema(schema_with = super::schema::required_text_500)]
    pub reason: String,
}

/// Cancels a membership. At period end: 409 for lifetime access, or unless it is `active` with
/// its period end ahead (event `membership.cancellation_scheduled`). Now: `cancelled` at once
/// and a `revoke` job removes access (Telegram: removed without a permanent ban; Discord: role
/// removed); 409 unless it is `active` or `grace` (event `membership.cancelled`).
pub async fn cancel(tx: &mut AnyConnection, merchant_id: &str, id: &str, input: Cancel) -> Result<MembershipRow, ServiceError> {
    let reason = super::required_text("reason", &input.reason, 500)?;
    let now = now_ms();
    let m = memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let data = serde_json::json!({
        "membership_id": m.id,
        "product_id": m.product_id,
        "reason": reason,
        "current_period_end": m.current_period_end.map(rfc3339),
    });
    if input.at_period_end {
        if m.current_period_end.is_none() {
            return Err(ServiceError::Conflict("this membership is lifetime access: it has no period end to cancel at; cancel it now".into()));
        }
        if !memberships::set_cancel_at_period_end(&mut *tx, &m.id, true, now).await? {
            return Err(ServiceError::Conflict(format!(
                "only an active membership with its period end ahead can be cancelled at period end (it is {}{})",
                m.status,
                if m.cancel_at_period_end != 0 { ", already cancelling" } else { "" }
            )));
        }
        record_event(&mut *tx, merchant_id, "membership.cancellation_scheduled", Some(&m.id), None, data, now).await?;
    } else {
        if !memberships::cancel_now(&mut *tx, &m.id, now).await? {
            return Err(ServiceError::Conflict(format!("a {} membership has no access to cancel", m.status)));
        }
        record_event(&mut *tx, merchant_id, "membership.cancelled", Some(&m.id), None, data, now).await?;
        if !jobs::has_live(&mut *tx, &m.id, queue::Queue::Revoke.as_str()).await? {
            let job = queue::RevokeJob { membership_id: m.id.clone(), period_end: m.current_period_end };
            queue::enqueue_revoke(&mut *tx, merchant_id, &job, now).await?;
        }
    }
    memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)
}

/// Withdraws a scheduled cancellation while the period has not ended (event
/// `membership.resumed`); 409 when none is scheduled or the period is over.
pub async fn resume(tx: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<MembershipRow, ServiceError> {
    let now = now_ms();
    let m = memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    if m.cancel_at_period_end == 0 || !memberships::set_cancel_at_period_end(&mut *tx, &m.id, false, now).await? {
        return Err(ServiceError::Conflict(if m.cancel_at_period_end == 0 {
            "no cancellation is scheduled for this membership".into()
        } else {
            format!("the period has ended (the membership is {}): a renewal payment starts it again", m.status)
        }));
    }
    let data = serde_json::json!({"membership_id": m.id, "product_id": m.product_id, "current_period_end": m.current_period_end.map(rfc3339)});
    record_event(&mut *tx, merchant_id, "membership.resumed", Some(&m.id), None, data, now).await?;
    memberships::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    /// `paid`, `past_due` or `unpaid`, as the payment processor sees the buyer's renewal.
    pub collection_state: CollectionState,
}

/// The payment processor's word on a renewal (admin token): sets `collection_state`, with
/// event `subscription.<state>` when it changes. Access follows the period and grace, not this.
pub async fn update_subscription(tx: &mut AnyConnection, id: &str, input: UpdateSubscription) -> Result<MembershipRow, ServiceError> {
    let now = now_ms();
    let m = memberships::get_any(&mut *tx, id).await?.ok_or(ServiceError::NotFound)?;
    set_collection_state(tx, &m, input.collection_state, now).await?;
    memberships::get_any(&mut *tx, id).await?.ok_or(ServiceError::NotFound)
}

/// Sets the collection state, with its event (`subscription.paid`, `subscription.past_due`,
/// `subscription.unpaid`) when it changes. The renewal run calls this too.
pub async fn set_collection_state(tx: &mut AnyConnection, m: &MembershipRow, state: CollectionState, now: i64) -> Result<(), ServiceError> {
    if memberships::set_collection_state(&mut *tx, &m.id, state.as_str(), now).await? {
        let data = serde_json::json!({
            "membership_id": m.id,
            "product_id": m.product_id,
            "collection_state": state,
            "previous_collection_state": m.collection_state,
            "current_period_end": m.current_period_end.map(rfc3339),
        });
        record_event(&mut *tx, &m.merchant_id, &format!("subscription.{state}"), Some(&m.id), None, data, now).await?;
    }
    Ok(())
}

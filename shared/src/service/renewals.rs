//! Renewal intelligence (SPEC §8): who is about to lapse, who is in grace, what churned and
//! what renewed, per merchant and per product.

use std::collections::HashMap;

use super::{ServiceError, invalid, optional_text};
use crate::{
    clock::{now_ms, rfc3339},
    storage::{Db, memberships, renewals},
    views::{
        IdentityView,
        renewals::{ExpiringMembership, ProductReport, RenewalEvent, RenewalIntelligence, RenewalSummary},
    },
};

const DAY_MS: i64 = 86_400_000;
/// Look-back window of churned/renewed counts.
const LOOKBACK_DAYS: i64 = 30;
const MAX_EXPIRING: i64 = 200;
const MAX_EVENTS: i64 = 50;

pub struct IntelligenceQuery<'a> {
    pub product_id: Option<&'a str>,
    /// Raw `within_days`; default 30, 1 to 365.
    pub within_days: Option<&'a str>,
}

pub async fn intelligence(db: &Db, merchant_id: &str, query: IntelligenceQuery<'_>) -> Result<RenewalIntelligence, ServiceError> {
    let within_days = match query.within_days {
        None => 30,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| invalid("within_days", "must be a whole number of days from 1 to 365"))?,
    };
    let product_id = optional_text("product_id", query.product_id, 200)?;
    let product_id = product_id.as_deref();
    let now = now_ms();
    let since = now - LOOKBACK_DAYS * DAY_MS;
    let window_end = now + within_days * DAY_MS;
    let mut conn = db.conn().await?;

    let products = renewals::products(&mut conn, merchant_id, product_id).await?;
    let totals = renewals::status_counts(&mut conn, merchant_id, product_id, now, now + 7 * DAY_MS, now + 30 * DAY_MS).await?;
    let by_product = renewals::status_counts_by_product(&mut conn, merchant_id, product_id, now, window_end, window_end).await?;
    let events_by_product = renewals::event_counts_by_product(&mut conn, merchant_id, product_id, since).await?;
    let event_total = |kind: &str| events_by_product.iter().filter(|(_, k, _)| k == kind).map(|(_, _, n)| n).sum::<i64>();
    let summary = RenewalSummary {
        active: totals.active,
        expiring_7d: totals.expiring_short,
        expiring_30d: totals.expiring_long,
        in_grace: totals.in_grace,
        cancelling: totals.cancelling,
        past_due: totals.past_due,
        expired_30d: event_total("membership.expired"),
        renewed_30d: event_total("membership.renewed"),
    };

    let grace_of: HashMap<&str, (&str, i64)> =
        products.iter().map(|(id, name, grace)| (id.as_str(), (name.as_str(), *grace))).collect();
    let expiring_memberships = memberships::expiring(&mut conn, merchant_id, product_id, window_end, MAX_EXPIRING)
        .await?
        .into_iter()
        .filter_map(|m| {
            let paid_through = m.current_period_end?;
            let (name, grace) = grace_of.get(m.product_id.as_str()).copied().map_or((None, 0), |(n, g)| (Some(n), g));
            Some(ExpiringMembership {
                membership_id: m.id.clone(),
                product_id: m.product_id.clone(),
                product_name: name.map(str::to_owned),
                status: m.status.clone(),
                wallet: m.wallet.clone(),
                identity: IdentityView {
                    telegram_user_id: m.telegram_user_id,
                    discord_user_id: m.discord_user_id.clone(),
                    handle: m.handle.clone(),
                    label: m.label.clone(),
                },
                paid_through: rfc3339(paid_through),
                access_ends_at: rfc3339(paid_through + if m.cancel_at_period_end != 0 { 0 } else { grace }),
                days_left: (paid_through - now).div_euclid(DAY_MS),
                cancel_at_period_end: m.cancel_at_period_end != 0,
                collection_state: m.collection_state.clone(),
                delivery_status: m.delivery_status.clone(),
            })
        })
        .collect();

    let product_reports = products
        .iter()
        .map(|(id, name, _)| {
            let counts = by_product.iter().find(|c| c.product_id.as_deref() == Some(id.as_str()));
            let events = |kind: &str| {
                events_by_product.iter().filter(|(p, k, _)| p == id && k == kind).map(|(_, _, n)| n).sum::<i64>()
            };
            ProductReport {
                product_id: id.clone(),
                name: name.clone(),
                active: counts.map_or(0, |c| c.active),
                expiring: counts.map_or(0, |c| c.expiring_short),
                in_grace: counts.map_or(0, |c| c.in_grace),
                cancelling: counts.map_or(0, |c| c.cancelling),
                past_due: counts.map_or(0, |c| c.past_due),
                churned: events("membership.expired"),
                renewed: events("membership.renewed"),
                gifted: events("membership.gifted"),
            }
        })
        .collect();

    let recent_events = renewals::recent_events(&mut conn, merchant_id, product_id, MAX_EVENTS)
        .await?
        .into_iter()
        .map(|e| RenewalEvent {
            data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
            id: e.id,
            kind: e.kind,
            membership_id: e.membership_id,
            payment_id: e.payment_id,
            created_at: rfc3339(e.created_at),
        })
        .collect();

    Ok(RenewalIntelligence {
        generated_at: rfc3339(now),
        within_days,
        summary,
        expiring_memberships,
        product_reports,
        recent_events,
    })
}

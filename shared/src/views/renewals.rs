//! Renewal intelligence as the API returns it (SPEC §8).

use serde::Serialize;
use utoipa::ToSchema;

use super::IdentityView;

#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalSummary {
    /// Memberships with access in their paid period.
    pub active: i64,
    /// Active memberships whose paid period ends within 7 days.
    pub expiring_7d: i64,
    /// Active memberships whose paid period ends within 30 days.
    pub expiring_30d: i64,
    /// Period ended, access kept until the product's grace period runs out.
    pub in_grace: i64,
    /// Active memberships whose cancellation at period end is scheduled.
    pub cancelling: i64,
    /// Memberships with access whose renewal is `past_due` or `unpaid`.
    pub past_due: i64,
    /// Memberships that expired in the last 30 days.
    pub expired_30d: i64,
    /// Paid renewals in the last 30 days.
    pub renewed_30d: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringMembership {
    pub membership_id: String,
    pub product_id: String,
    pub product_name: Option<String>,
    /// `active` or `grace`.
    pub status: String,
    pub wallet: Option<String>,
    pub identity: IdentityView,
    /// The paid-through time (`current_period_end`).
    pub paid_through: String,
    /// When access ends if nobody pays: paid-through plus the product's grace period (no grace
    /// when the cancellation is scheduled).
    pub access_ends_at: String,
    /// Whole days from now to the paid-through time (negative once in grace).
    pub days_left: i64,
    pub cancel_at_period_end: bool,
    pub collection_state: String,
    pub delivery_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductReport {
    pub product_id: String,
    pub name: String,
    pub active: i64,
    /// Active, with the paid period ending within `within_days`.
    pub expiring: i64,
    pub in_grace: i64,
    /// Active with a cancellation scheduled at period end.
    pub cancelling: i64,
    /// With access, renewal `past_due` or `unpaid`.
    pub past_due: i64,
    /// Expired in the last 30 days.
    pub churned: i64,
    /// Renewed (paid again) in the last 30 days.
    pub renewed: i64,
    /// Given free time in the last 30 days.
    pub gifted: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalEvent {
    pub id: String,
    /// `membership.grace`, `membership.expired`, `membership.renewed`, `membership.gifted` or
    /// `membership.revoked`.
    #[serde(rename = "type")]
    pub kind: String,
    pub membership_id: Option<String>,
    pub payment_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalIntelligence {
    pub generated_at: String,
    /// The window of `expiring_memberships` and of `product_reports[].expiring`.
    pub within_days: i64,
    pub summary: RenewalSummary,
    pub expiring_memberships: Vec<ExpiringMembership>,
    pub product_reports: Vec<ProductReport>,
    pub recent_events: Vec<RenewalEvent>,
}

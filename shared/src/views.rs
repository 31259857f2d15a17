//! Objects as the API returns them (SPEC §4). Webhooks send the same shapes as `data`.

pub mod diagnostics;
pub mod proof_emails;
pub mod receipts;
pub mod renewals;
pub mod support;
pub mod webhooks;

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    clock::{rfc3339, rfc3339_opt},
    domain::Period,
    storage::{memberships::MembershipRow, payments::PaymentWithDelivery, products::ProductRow},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct Price {
    /// Decimal string, e.g. "9.99".
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    /// `telegram` or `discord`.
    pub platform: String,
    pub telegram_chat_id: Option<i64>,
    pub discord_guild_id: Option<String>,
    pub discord_role_id: Option<String>,
    pub fallback_invite_url: Option<String>,
    /// The merchant's renewal checkout page; `{membership_id}` and `{product_id}` are filled in
    /// for each buyer (renewal reminders carry it).
    pub renewal_url: Option<String>,
    pub price: Price,
    pub recurring: bool,
    /// Duration such as `30d`; null is lifetime access.
    pub period: Option<String>,
    pub grace_period: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&ProductRow> for ProductView {
    fn from(p: &ProductRow) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            platform: p.platform.clone(),
            telegram_chat_id: p.telegram_chat_id,
            discord_guild_id: p.discord_guild_id.clone(),
            discord_role_id: p.discord_role_id.clone(),
            fallback_invite_url: p.fallback_invite_url.clone(),
            renewal_url: p.renewal_url.clone(),
            price: Price { amount: p.price_amount.clone(), currency: p.price_currency.clone() },
            recurring: p.recurring != 0,
            period: p.period_ms.map(|ms| Period::from_millis(ms).to_string()),
            grace_period: Period::from_millis(p.grace_period_ms).to_string(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BuyerView {
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
    pub discord_user_id: Option<String>,
    pub handle: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub product_id: String,
    pub amount: String,
    pub currency: String,
    /// `pending`, `confirmed` or `failed`.
    pub status: String,
    pub wallet: Option<String>,
    pub tx_signature: Option<String>,
    pub buyer: BuyerView,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub membership_id: Option<String>,
    pub receipt_id: Option<String>,
    /// Mirror of the membership's delivery status; null until confirmed.
    pub delivery_status: Option<String>,
    pub created_at: String,
    pub confirmed_at: Option<String>,
}

impl From<&PaymentWithDelivery> for PaymentView {
    fn from(row: &PaymentWithDelivery) -> Self {
        let p = &row.payment;
        Self {
            id: p.id.clone(),
            product_id: p.product_id.clone(),
            amount: p.amount.clone(),
            currency: p.currency.clone(),
            status: p.status.clone(),
            wallet: p.wallet.clone(),
            tx_signature: p.tx_signature.clone(),
            buyer: BuyerView {
                email: p.buyer_email.clone(),
                telegram_user_id: p.buyer_telegram_user_id,
                discord_user_id: p.buyer_discord_user_id.clone(),
                handle: p.buyer_handle.clone(),
            },
            metadata: p.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            membership_id: p.membership_id.clone(),
            receipt_id: p.receipt_id.clone(),
            delivery_status: row.delivery_status.clone(),
            created_at: rfc3339(p.created_at),
            confirmed_at: rfc3339_opt(p.confirmed_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram_user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discord_user_id: Option<String>,
    pub handle: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub attempts: i64,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<ErrorDetail>,
    pub next_retry_at: Option<String>,
    pub invite_url: Option<String>,
    pub fallback_used: bool,
    pub delivered_at: Option<String>,
}

/// The recurring side of a membership (SPEC §4, docs/RENEWALS.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Access ends at `current_period_end` without grace or reminders
    /// (`POST /v1/memberships/{id}/cancel` with `at_period_end`; undone by `…/resume`).
    pub cancel_at_period_end: bool,
    /// `paid`, `past_due` (the period ended unpaid; access kept through grace) or `unpaid`.
    pub collection_state: crate::domain::CollectionState,
    /// When the next payment keeps access going: the period end of a membership that has access
    /// and is not cancelled; null otherwise (lifetime access included).
    pub next_payment_due_at: Option<String>,
    /// What the buyer should do: `none`, `pay_renewal` (past due, in grace or expired),
    /// `renew_after_cancel` (cancelled, or ended by a scheduled cancellation) or
    /// `contact_support` (delivery is in manual review).
    pub next_step: crate::domain::NextStep,
}

impl SubscriptionView {
    pub fn of(m: &MembershipRow) -> Self {
        use crate::domain::{CollectionState, DeliveryStatus, MembershipStatus, NextStep};
        let status = MembershipStatus::parse(&m.status);
        let cancelled = status == Some(MembershipStatus::Cancelled)
            || (status == Some(MembershipStatus::Expired) && m.cancel_at_period_end != 0);
        let collection_state = CollectionState::parse(&m.collection_state).unwrap_or(CollectionState::Paid);
        let has_access = matches!(status, Some(MembershipStatus::Active | MembershipStatus::Grace));
        let next_step = if m.current_period_end.is_none() && !cancelled {
            NextStep::None
        } else if cancelled {
            NextStep::RenewAfterCancel
        } else if collection_state != CollectionState::Paid || !matches!(status, Some(MembershipStatus::Active)) {
            NextStep::PayRenewal
        } else if m.delivery_status == DeliveryStatus::ManualReview.as_str() {
            NextStep::ContactSupport
        } else {
            NextStep::None
        };
        Self {
            cancel_at_period_end: m.cancel_at_period_end != 0,
            collection_state,
            next_payment_due_at: m.current_period_end.filter(|_| has_access && m.cancel_at_period_end == 0).map(rfc3339),
            next_step,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    pub id: String,
    pub product_id: String,
    pub platform: String,
    /// `active`, `grace`, `expired` or `cancelled`.
    pub status: String,
    pub wallet: Option<String>,
    pub identity: IdentityView,
    /// Null for lifetime access.
    pub current_period_end: Option<String>,
    pub last_payment_id: String,
    pub notes: Option<String>,
    /// `pending`, `delivered`, `failed`, `manual_review` or `revoked`.
    pub delivery_status: String,
    pub delivery: DeliveryView,
    pub support_ticket_id: Option<String>,
    pub subscription: SubscriptionView,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&MembershipRow> for MembershipView {
    fn from(m: &MembershipRow) -> Self {
        let last_error = m.last_error_code.as_ref().map(|code| ErrorDetail {
            code: code.clone(),
            message: m.last_error_message.clone().unwrap_or_default(),
            retryable: m.last_error_retryable.unwrap_or(0) != 0,
        });
        Self {
            id: m.id.clone(),
            product_id: m.product_id.clone(),
            platform: m.platform.clone(),
            status: m.status.clone(),
            wallet: m.wallet.clone(),
            identity: IdentityView {
                telegram_user_id: m.telegram_user_id,
                discord_user_id: m.discord_user_id.clone(),
                handle: m.handle.clone(),
                label: m.label.clone(),
            },
            current_period_end: rfc3339_opt(m.current_period_end),
            last_payment_id: m.last_payment_id.clone(),
            notes: m.notes.clone(),
            delivery_status: m.delivery_status.clone(),
            delivery: DeliveryView {
                attempts: m.delivery_attempts,
                last_attempt_at: rfc3339_opt(m.last_attempt_at),
                last_error,
                next_retry_at: rfc3339_opt(m.next_retry_at),
                invite_url: m.invite_url.clone(),
                fallback_used: m.fallback_used != 0,
                delivered_at: rfc3339_opt(m.delivered_at),
            },
            support_ticket_id: m.support_ticket_id.clone(),
            subscription: SubscriptionView::of(m),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub id: String,
    pub membership_id: String,
    pub payment_id: Option<String>,
    pub number: i64,
    /// `automatic`, `manual`, `renewal` or `revoke`.
    pub trigger: String,
    /// `telegram`, `discord`, `fallback`, `email` or `none`.
    pub provider: String,
    /// `succeeded` or `failed`; null while the attempt runs.
    pub outcome: Option<String>,
    pub error: Option<ErrorDetail>,
    /// What was asked of the provider (no secrets).
    pub request_summary: Option<String>,
    /// What the provider answered (no secrets).
    pub response_summary: Option<String>,
    pub worker_id: String,
    pub duration_ms: Option<i64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The single-use invite link this attempt created (Telegram), the same one the buyer was
    /// sent and `delivery.invite_url` shows while it is the latest; null for other providers.
    pub invite_link: Option<String>,
    /// RFC 3339; when that link stopped admitting anyone: revoked before a later attempt
    /// issued a new one, or when access ended. Null while the link is live.
    pub invite_link_revoked_at: Option<String>,
}

impl From<&crate::storage::attempts::AttemptRow> for AttemptView {
    fn from(a: &crate::storage::attempts::AttemptRow) -> Self {
        Self {
            id: a.id.clone(),
            membership_id: a.membership_id.clone(),
            payment_id: a.payment_id.clone(),
            number: a.number,
            trigger: a.trigger_kind.clone(),
            provider: a.provider.clone(),
            outcome: a.outcome.clone(),
            error: a.error_code.as_ref().map(|code| ErrorDetail {
                code: code.clone(),
                message: a.error_message.clone().unwrap_or_default(),
                retryable: a.error_retryable.unwrap_or(0) != 0,
            }),
            request_summary: a.request_summary.clone(),
            response_summary: a.response_summary.clone(),
            worker_id: a.worker_id.clone(),
            duration_ms: a.duration_ms,
            started_at: rfc3339(a.started_at),
            finished_at: rfc3339_opt(a.finished_at),
            invite_link: a.invite_link.clone(),
            invite_link_revoked_at: rfc3339_opt(a.invite_link_revoked_at),
        }
    }
}

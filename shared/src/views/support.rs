//! Support tickets as the API returns them (SPEC §4 "Support ticket").

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    clock::rfc3339,
    storage::support::{MessageRow, TicketRow},
};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketContext {
    pub payment_id: Option<String>,
    pub membership_id: Option<String>,
    pub receipt_id: Option<String>,
    pub product_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    /// `merchant`, `buyer` or `system`.
    pub author: String,
    pub body: String,
    pub created_at: String,
}

/// A link the ticket offers for its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TicketAction {
    /// `retry_delivery`, `delivery_diagnostics`, `receipt_proof` or `send_proof`.
    pub name: String,
    pub method: String,
    pub href: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketView {
    pub id: String,
    pub subject: String,
    /// `open`, `pending` or `resolved`.
    pub status: String,
    /// `general` or `delivery`.
    pub kind: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    pub context: TicketContext,
    /// The thread, oldest first.
    pub messages: Vec<MessageView>,
    /// Only the links that apply to the context: a membership offers retry and diagnostics,
    /// a receipt offers its public proof and sending it.
    pub actions: Vec<TicketAction>,
    pub created_at: String,
    pub updated_at: String,
}

impl TicketView {
    /// `public_base_url` makes the receipt proof link absolute: it is meant for the buyer.
    pub fn new(t: &TicketRow, messages: &[MessageRow], public_base_url: &str) -> Self {
        Self {
            id: t.id.clone(),
            subject: t.subject.clone(),
            status: t.status.clone(),
            kind: t.kind.clone(),
            priority: t.priority.clone(),
            context: TicketContext {
                payment_id: t.payment_id.clone(),
                membership_id: t.membership_id.clone(),
                receipt_id: t.receipt_id.clone(),
                product_id: t.product_id.clone(),
            },
            messages: messages
                .iter()
                .map(|m| MessageView {
                    id: m.id.clone(),
                    author: m.author.clone(),
                    body: m.body.clone(),
                    created_at: rfc3339(m.created_at),
                })
                .collect(),
            actions: actions(t, public_base_url),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

fn actions(t: &TicketRow, public_base_url: &str) -> Vec<TicketAction> {
    let action = |name: &str, method: &str, href: String| TicketAction { name: name.into(), method: method.into(), href };
    let mut out = Vec::new();
    if let Some(m) = &t.membership_id {
        out.push(action("retry_delivery", "POST", format!("/v1/memberships/{m}/retry-delivery")));
        out.push(action("delivery_diagnostics", "GET", format!("/v1/memberships/{m}/delivery-diagnostics")));
    }
    if let Some(r) = &t.receipt_id {
        out.push(action("receipt_proof", "GET", format!("{public_base_url}/v1/receipt/{r}/public")));
        out.push(action("send_proof", "POST", format!("/v1/receipt/{r}/send-proof")));
    }
    out
}

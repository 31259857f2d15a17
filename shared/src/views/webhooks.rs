//! Webhook endpoints and their delivery attempts as the API returns them. Secrets appear only
//! in [`EndpointWithSecret`], the answer to create and rotate.

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    clock::{rfc3339, rfc3339_opt},
    storage::{webhook_deliveries::DeliveryRow, webhook_endpoints::EndpointRow},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    /// Subscribed event types, or `["*"]` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `enabled`, or `disabled` after the receiver answered 410 Gone.
    pub status: String,
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    /// Until then the previous secret signs beside the current one (after a rotation).
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
}

impl From<&EndpointRow> for EndpointView {
    fn from(e: &EndpointRow) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.subscribed(),
            description: e.description.clone(),
            status: if e.disabled_at.is_some() { "disabled" } else { "enabled" }.to_owned(),
            disabled_at: rfc3339_opt(e.disabled_at),
            disabled_reason: e.disabled_reason.clone(),
            previous_secret_expires_at: rfc3339_opt(e.previous_secret_expires_at.filter(|_| e.previous_secret.is_some())),
            created_at: rfc3339(e.created_at),
        }
    }
}

/// An endpoint with its signing secret: shown once, at creation and at rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` + base64 of the key; verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

/// One attempt to send one event to the endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryView {
    pub id: String,
    pub endpoint_id: String,
    /// The event id, also the `webhook-id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt of this event to this endpoint.
    pub attempt: i64,
    /// `automatic` or `manual`.
    pub trigger: String,
    /// `succeeded`; `failed` (retried at `next_attempt_at`); `dead` (no more automatic attempts).
    pub status: String,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// Why the attempt failed (`http_500`, `timeout`, `connect_failed`, `private_address`, …).
    pub error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

impl From<&DeliveryRow> for WebhookDeliveryView {
    fn from(d: &DeliveryRow) -> Self {
        Self {
            id: d.id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            attempt: d.attempt,
            trigger: d.trigger_kind.clone(),
            status: d.status.clone(),
            status_code: d.http_status,
            latency_ms: d.latency_ms,
            error: d.error.clone(),
            next_attempt_at: rfc3339_opt(d.next_attempt_at),
            started_at: rfc3339(d.started_at),
            finished_at: rfc3339(d.finished_at),
        }
    }
}

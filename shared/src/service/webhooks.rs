//! Merchant webhooks (SPEC §8): endpoints, their secrets, the fan-out of every event, and the
//! delivery record the worker writes and merchants read and retry from.

use std::net::IpAddr;

use serde::Deserialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{ServiceError, invalid, optional_text};
use crate::{
    clock::now_ms,
    domain::{
        JobId, WebhookDeliveryId, WebhookEndpointId,
        webhook::{self, ALL_EVENTS, EVENT_TYPES},
    },
    queue::{self, Queue, Trigger, WebhookJob},
    storage::{
        Db,
        events::{self, EventRow},
        jobs::{self, Finish},
        webhook_deliveries::{self, DeliveryRow},
        webhook_endpoints::{self, EndpointRow},
    },
    views::webhooks::{WebhookDeliveryView, EndpointView, EndpointWithSecret},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEndpoint {
    /// `http://` or `https://`, without credentials.
    pub url: String,
    /// Event types to receive (`payment.confirmed`, `delivery.succeeded`, `delivery.failed`,
    /// `delivery.manual_review`, `membership.grace`, `membership.expired`, `membership.renewed`),
    /// or `["*"]` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
}

const MAX_URL_LEN: usize = 2048;

/// Creates an endpoint; the answer carries its secret, which is never shown again.
pub async fn create(tx: &mut AnyConnection, merchant_id: &str, input: CreateEndpoint, allow_private: bool) -> Result<EndpointWithSecret, ServiceError> {
    let url = endpoint_url("url", &input.url, allow_private)?;
    let events = event_types(&input.events)?;
    let now = now_ms();
    let row = EndpointRow {
        id: WebhookEndpointId::generate().to_string(),
        merchant_id: merchant_id.to_owned(),
        url,
        events: serde_json::to_string(&events).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
        description: optional_text("description", input.description.as_deref(), 500)?,
        secret: webhook::generate_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        disabled_reason: None,
        deleted_at: None,
        created_at: now,
        updated_at: Some(now),
    };
    webhook_endpoints::insert(&mut *tx, &row).await?;
    Ok(EndpointWithSecret { endpoint: EndpointView::from(&row), secret: row.secret })
}

pub async fn list(db: &Db, merchant_id: &str, limit: i64, offset: i64) -> Result<(Vec<EndpointView>, i64), ServiceError> {
    let (rows, total) = webhook_endpoints::list(&mut *db.conn().await?, merchant_id, limit, offset).await?;
    Ok((rows.iter().map(EndpointView::from).collect(), total))
}

pub async fn get(db: &Db, merchant_id: &str, id: &str) -> Result<EndpointView, ServiceError> {
    let row = load(&mut *db.conn().await?, merchant_id, id).await?;
    Ok(EndpointView::from(&row))
}

/// Deletes the endpoint: nothing more is sent to it (waiting attempts complete without sending);
/// its delivery record is kept.
pub async fn delete(tx: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<(), ServiceError> {
    load(&mut *tx, merchant_id, id).await?;
    webhook_endpoints::mark_deleted(&mut *tx, id, now_ms()).await?;
    Ok(())
}

/// A new secret; the previous one keeps signing beside it for 24 hours.
pub async fn rotate_secret(tx: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<EndpointWithSecret, ServiceError> {
    let now = now_ms();
    load(&mut *tx, merchant_id, id).await?;
    let secret = webhook::generate_secret();
    webhook_endpoints::rotate_secret(&mut *tx, id, &secret, now + webhook::PREVIOUS_SECRET_VALIDITY_MS, now).await?;
    let row = load(&mut *tx, merchant_id, id).await?;
    Ok(EndpointWithSecret { endpoint: EndpointView::from(&row), secret })
}

/// The endpoint's delivery attempts, newest first.
pub async fn deliveries(
    db: &Db,
    merchant_id: &str,
    endpoint_id: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<WebhookDeliveryView>, i64), ServiceError> {
    let mut conn = db.conn().await?;
    load(&mut conn, merchant_id, endpoint_id).await?;
    let (rows, total) = webhook_deliveries::list_for_endpoint(&mut conn, endpoint_id, limit, offset).await?;
    Ok((rows.iter().map(WebhookDeliveryView::from).collect(), total))
}

/// Sends the event of a delivery attempt to the endpoint again, now, with a fresh retry budget
/// and the same `webhook-id`. A waiting automatic retry of it is superseded; 409 while an
/// attempt for it is in flight or when the endpoint is disabled.
pub async fn retry_delivery(tx: &mut AnyConnection, merchant_id: &str, endpoint_id: &str, delivery_id: &str) -> Result<(DeliveryRow, JobId), ServiceError> {
    WebhookDeliveryId::parse(delivery_id).ok_or(ServiceError::NotFound)?;
    let now = now_ms();
    let endpoint = load(&mut *tx, merchant_id, endpoint_id).await?;
    let delivery = webhook_deliveries::get(&mut *tx, endpoint_id, delivery_id).await?.ok_or(ServiceError::NotFound)?;
    if endpoint.disabled_at.is_some() {
        return Err(ServiceError::Conflict("the endpoint is disabled (its receiver answered 410 Gone); create a new endpoint".into()));
    }
    for trigger in [Trigger::Automatic, Trigger::Manual] {
        let job = WebhookJob { endpoint_id: endpoint.id.clone(), event_id: delivery.event_id.clone(), trigger };
        let payload = serde_json::to_string(&job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let (_, running) = jobs::count_live_with_payload(&mut *tx, Queue::Webhook.as_str(), &payload).await?;
        if running > 0 {
            return Err(ServiceError::Conflict("an attempt to send this event is in flight; try again when it finishes".into()));
        }
        jobs::discard_waiting_with_payload(&mut *tx, Queue::Webhook.as_str(), &payload, now).await?;
    }
    let membership_id = events::get(&mut *tx, &delivery.event_id).await?.and_then(|e| e.membership_id);
    let job = WebhookJob { endpoint_id: endpoint.id.clone(), event_id: delivery.event_id.clone(), trigger: Trigger::Manual };
    let job_id = queue::enqueue_webhook(&mut *tx, merchant_id, membership_id.as_deref(), &job, now).await?;
    Ok((delivery, job_id))
}

/// Queues a `webhook` job for every enabled endpoint of the merchant subscribed to the event,
/// inside the transaction that writes the event, so no event is lost or sent for nothing.
pub async fn fan_out(tx: &mut AnyConnection, event: &EventRow) -> Result<(), ServiceError> {
    for endpoint in webhook_endpoints::list_enabled(tx, &event.merchant_id).await? {
        if !webhook::subscribes_to(&endpoint.subscribed(), &event.kind) {
            continue;
        }
        let job = WebhookJob { endpoint_id: endpoint.id.clone(), event_id: event.id.clone(), trigger: Trigger::Automatic };
        queue::enqueue_webhook(tx, &event.merchant_id, event.membership_id.as_deref(), &job, event.created_at).await?;
    }
    Ok(())
}

/// A finished attempt to send an event to an endpoint, as the worker saw it: the log row
/// (`attempt` is numbered when written), whether the receiver answered 410 Gone, and the
/// job's next step already decided from the answer and the webhook schedule.
#[derive(Debug, Clone)]
pub struct WebhookAttempt {
    pub row: DeliveryRow,
    pub gone: bool,
    pub finish: Finish,
}

/// Writes a webhook attempt at `now` (unix ms) inside the caller's transaction: its numbered
/// row in the deliveries log, and the endpoint disabled (reason `gone`) on 410. Returns the
/// attempt's `finish`. Errors are database errors.
pub async fn record_attempt(conn: &mut AnyConnection, now: i64, input: &WebhookAttempt) -> Result<Finish, ServiceError> {
    let mut row = input.row.clone();
    row.attempt = webhook_deliveries::next_attempt(conn, &row.endpoint_id, &row.event_id).await?;
    webhook_deliveries::insert(conn, &row).await?;
    if input.gone {
        tracing::warn!(endpoint.id = %row.endpoint_id, "endpoint answered 410 Gone; disabling it");
        webhook_endpoints::disable(conn, &row.endpoint_id, "gone", now).await?;
    }
    Ok(input.finish.clone())
}

async fn load(conn: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<EndpointRow, ServiceError> {
    WebhookEndpointId::parse(id).ok_or(ServiceError::NotFound)?;
    webhook_endpoints::get(conn, merchant_id, id).await?.ok_or(ServiceError::NotFound)
}

/// An endpoint URL: http or https, a host, no credentials; unless private addresses are
/// allowed, no literal loopback, private, link-local or unspecified address and no `localhost`.
/// Host names are checked again, resolved, on every delivery.
pub fn endpoint_url(param: &str, value: &str, allow_private: bool) -> Result<String, ServiceError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(param, "must not be empty"));
    }
    if value.len() > MAX_URL_LEN {
        return Err(invalid(param, format!("must be at most {MAX_URL_LEN} characters")));
    }
    let url = reqwest::Url::parse(value).map_err(|_| invalid(param, "must be an absolute http:// or https:// URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(param, "must be an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(param, "must not contain credentials (user:password@)"));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid(param, "must name a host"));
    };
    if !allow_private {
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let local_name = {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        };
        if local_name || literal.is_some_and(|ip| !webhook::is_public_ip(ip)) {
            return Err(invalid(param, "must not point to a loopback, private, link-local or unspecified address"));
        }
    }
    Ok(url.to_string())
}

/// Known event types or `*`, without duplicates, at least one.
fn event_types(events: &[String]) -> Result<Vec<String>, ServiceError> {
    if events.is_empty() {
        return Err(invalid("events", "must list at least one event type (or \"*\")"));
    }
    if events.len() > EVENT_TYPES.len() + 1 {
        return Err(invalid("events", "lists too many event types"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let e = e.trim();
        if e != ALL_EVENTS && !EVENT_TYPES.contains(&e) {
            return Err(invalid(&format!("events[{i}]"), format!("unknown event type; use one of {}, or \"*\"", EVENT_TYPES.join(", "))));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    if out.iter().any(|e| e == ALL_EVENTS) {
        out = vec![ALL_EVENTS.to_owned()];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_without_credentials_or_private_literals() {
        assert!(endpoint_url("url", "https://hooks.example.com/hilt?x=1", false).is_ok());
        for bad in ["ftp://example.com", "example.com", "https://user:pw@example.com/", "https://user@example.com/",
            "http://127.0.0.1:9000/", "http://[::1]/", "http://10.0.0.8/", "http://169.254.169.254/latest",
            "http://localhost:8080/", "http://0.0.0.0/", "http://2130706433/", "javascript:alert(1)", ""]
        {
            assert!(endpoint_url("url", bad, false).is_err(), "{bad} must be refused");
        }
        assert!(endpoint_url("url", "http://127.0.0.1:9000/hook", true).is_ok());
        assert!(endpoint_url("url", "https://user:pw@example.com/", true).is_err(), "credentials are refused even then");
    }

    #[test]
    fn event_types_are_checked_and_the_wildcard_wins() {
        assert_eq!(event_types(&["payment.confirmed".into(), "payment.confirmed".into()]).expect("ok"), ["payment.confirmed"]);
        assert_eq!(event_types(&["*".into(), "delivery.failed".into()]).expect("ok"), ["*"]);
        assert!(matches!(event_types(&["payment.confirmed".into(), "nope".into()]), Err(ServiceError::Invalid { param, .. }) if param == "events[1]"));
        assert!(event_types(&[]).is_err());
    }
}

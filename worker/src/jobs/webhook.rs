//! Webhook: send one event to one merchant endpoint, signed per the Standard Webhooks spec
//! (SPEC §8), record the attempt, and decide the next step — done, retry on the schedule
//! (honouring `retry-after` on 429/502/503/504), endpoint disabled on 410, or dead when the
//! schedule is used up. The event id is the `webhook-id` of every attempt.

use std::time::Instant;

use futures::future::BoxFuture;
use hilt_shared::{
    clock::{now_ms, rfc3339},
    domain::{WebhookDeliveryId, retry::next_delay, webhook::signature_header},
    providers::webhook::{self, Signed},
    queue::{Queue, WebhookJob},
    service::webhooks::{self, WebhookAttempt},
    storage::{
        events::{self, EventRow},
        jobs::{Finish, JobRow},
        webhook_deliveries::DeliveryRow,
        webhook_endpoints::{self, EndpointRow},
    },
};
use serde::Serialize;
use sqlx::AnyConnection;
use tracing::Instrument;

use crate::{
    JobContext,
    engine::{Job, Outcome, Record},
};

/// The body of every webhook: the event as stored, `data` being the object as the API returns it.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: String,
    data: serde_json::Value,
}

pub struct Webhook;

impl Job for Webhook {
    const QUEUE: Queue = Queue::Webhook;
    type Payload = WebhookJob;

    async fn run(ctx: &JobContext, job: &JobRow, intent: WebhookJob) -> anyhow::Result<Outcome> {
        run(ctx, job, intent).await
    }
}

async fn run(ctx: &JobContext, job: &JobRow, intent: WebhookJob) -> anyhow::Result<Outcome> {
    let (endpoint, event) = {
        let mut conn = ctx.db.conn().await?;
        let endpoint = webhook_endpoints::get_any(&mut conn, &intent.endpoint_id).await?;
        let event = events::get(&mut conn, &intent.event_id).await?;
        (endpoint, event)
    };
    let Some(endpoint) = endpoint.filter(|e| e.deleted_at.is_none()) else {
        tracing::info!(endpoint.id = %intent.endpoint_id, "webhook endpoint deleted; nothing to send");
        return Ok(Outcome::done());
    };
    if endpoint.disabled_at.is_some() {
        return Ok(Outcome::dead("endpoint_disabled"));
    }
    let Some(event) = event else {
        return Ok(Outcome::dead("event not found"));
    };
    let span = tracing::info_span!("webhook", endpoint.id = %endpoint.id, event.id = %event.id, event.kind = %event.kind);
    send(ctx, job, &intent, &endpoint, &event).instrument(span).await
}

async fn send(ctx: &JobContext, job: &JobRow, intent: &WebhookJob, endpoint: &EndpointRow, event: &EventRow) -> anyhow::Result<Outcome> {
    let body = serde_json::to_vec(&Body {
        id: &event.id,
        kind: &event.kind,
        created_at: rfc3339(event.created_at),
        data: serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null),
    })?;
    let started_at = now_ms();
    let timestamp = started_at.div_euclid(1000);
    let Some(signature) = signature_header(endpoint.signing_secrets(started_at), &event.id, timestamp, &body) else {
        return Ok(Outcome::dead("unusable signing secret"));
    };

    // The request, outside any transaction.
    let clock = Instant::now();
    let request = Signed { url: &endpoint.url, msg_id: &event.id, timestamp, signature: &signature, body };
    let result = webhook::send(request, ctx.config.webhook_allow_private, ctx.tuning.webhook_timeout).await;
    let latency_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);

    // The attempt and the next step, written by the completer.
    let now = now_ms();
    let failures = usize::try_from(job.failures + 1).unwrap_or(usize::MAX);
    let (http_status, error, retry_after) = match &result {
        Ok(answer) if (200..300).contains(&answer.status) => (Some(answer.status), None, None),
        Ok(answer) => {
            let honoured = matches!(answer.status, 429 | 502 | 503 | 504).then_some(answer.retry_after).flatten();
            (Some(answer.status), Some(format!("http_{}", answer.status)), honoured)
        }
        Err(e) => (None, Some(e.code.to_owned()), None),
    };
    let gone = http_status == Some(410);
    let (status, next_attempt_at, finish) = match &error {
        None => ("succeeded", None, Finish::Done),
        Some(_) if gone => ("dead", None, Finish::Dead { error: "endpoint_gone".into() }),
        Some(code) => match next_delay(&ctx.tuning.webhook_schedule, failures, retry_after) {
            Some(delay) => {
                let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                ("failed", Some(at), Finish::RetryAt { at, error: Some(code.clone()), failed: true })
            }
            None => ("dead", None, Finish::Dead { error: code.clone() }),
        },
    };
    match (&error, status) {
        (None, _) => tracing::info!(http.status = http_status, duration_ms = latency_ms, "webhook delivered"),
        (Some(code), "failed") => tracing::warn!(
            error.code = %code, http.status = http_status, duration_ms = latency_ms,
            retry_at = %next_attempt_at.map(rfc3339).unwrap_or_default(), "webhook failed; retry scheduled"
        ),
        (Some(code), _) => tracing::warn!(error.code = %code, http.status = http_status, duration_ms = latency_ms, gone, "webhook failed; no more attempts"),
    }

    let row = DeliveryRow {
        id: WebhookDeliveryId::generate().to_string(),
        merchant_id: endpoint.merchant_id.clone(),
        endpoint_id: endpoint.id.clone(),
        event_id: event.id.clone(),
        event_type: event.kind.clone(),
        job_id: Some(job.id.clone()),
        attempt: 0,
        trigger_kind: intent.trigger.as_str().to_owned(),
        status: status.to_owned(),
        http_status: http_status.map(i64::from),
        latency_ms,
        error,
        next_attempt_at,
        worker_id: ctx.worker_id.clone(),
        started_at,
        finished_at: now,
    };
    Ok(Outcome::record(WebhookAttempt { row, gone, finish }))
}

/// The attempt's row in the deliveries log and the endpoint disabled on 410, written by the
/// completer (see [`webhooks::record_attempt`]).
impl Record for WebhookAttempt {
    fn record<'c>(&'c self, conn: &'c mut AnyConnection, now: i64) -> BoxFuture<'c, anyhow::Result<Finish>> {
        Box::pin(async move { Ok(webhooks::record_attempt(conn, now, self).await?) })
    }
}

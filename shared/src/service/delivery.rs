//! Delivery rescue from the merchant's side: attempt history, manual retry, the linked ticket.

use super::{ServiceError, support};
use crate::{
    clock::{now_ms, rfc3339},
    domain::JobId,
    queue::{self, DeliveryJob, Queue, Trigger},
    storage::{
        Db,
        attempts::{self, AttemptRow},
        jobs,
        memberships::{self, MembershipRow},
    },
    views::support::TicketView,
};

pub async fn attempts(db: &Db, merchant_id: &str, membership_id: &str) -> Result<Vec<AttemptRow>, ServiceError> {
    let mut conn = db.conn().await?;
    memberships::get(&mut conn, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    Ok(attempts::list_for_membership(&mut conn, membership_id).await?)
}

/// Queues an attempt with trigger `manual` to run now, from any state (manual review
/// included). 409 while an attempt for the membership is in flight.
pub async fn retry(db: &Db, merchant_id: &str, membership_id: &str) -> Result<(MembershipRow, JobId), ServiceError> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let m = memberships::get(&mut tx, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = 'delivery' AND status = 'running'",
    )
    .bind(&m.id)
    .fetch_one(&mut *tx)
    .await?;
    if running > 0 || memberships::attempt_in_flight(&mut tx, &m.id, now).await? {
        return Err(ServiceError::Conflict("a delivery attempt for this membership is in flight; try again when it finishes".into()));
    }
    // The manual push replaces whatever automatic retry was waiting.
    jobs::discard_waiting(&mut tx, &m.id, Queue::Delivery.as_str(), now).await?;
    let job = DeliveryJob { membership_id: m.id.clone(), payment_id: Some(m.last_payment_id.clone()), trigger: Trigger::Manual };
    let job_id = queue::enqueue_delivery(&mut tx, merchant_id, &job, now).await?;
    sqlx::query("UPDATE memberships SET next_retry_at = $1, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&m.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let m = memberships::get(&mut *db.conn().await?, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    Ok((m, job_id))
}

/// Opens the membership's delivery ticket, or returns the open one; true when created.
pub async fn support_ticket(
    db: &Db,
    merchant_id: &str,
    membership_id: &str,
    public_base_url: &str,
) -> Result<(TicketView, bool), ServiceError> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let m = memberships::get(&mut tx, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
    let summary = format!(
        "Delivery ticket requested by the merchant. Delivery status: {}; {} attempt(s){}{}.",
        m.delivery_status,
        m.delivery_attempts,
        m.last_error_code.as_ref().map(|c| format!("; last error: {c} — {}", m.last_error_message.as_deref().unwrap_or(""))).unwrap_or_default(),
        m.next_retry_at.map(|at| format!("; next automatic retry at {}", rfc3339(at))).unwrap_or_default(),
    );
    let linked_open = match &m.support_ticket_id {
        Some(id) => support::load(&mut tx, merchant_id, id, public_base_url).await.ok().filter(|t| t.status != "resolved"),
        None => None,
    };
    let (ticket_id, created) = match linked_open {
        Some(ticket) => (ticket.id, false),
        None => support::open_or_reuse_delivery_ticket(&mut tx, &m, "Delivery needs attention", &summary, now).await?,
    };
    tx.commit().await?;
    let ticket = support::get(db, merchant_id, &ticket_id, public_base_url).await?;
    Ok((ticket, created))
}

//! The support trail: tickets linked to payments, memberships and receipts, with a thread of
//! merchant, buyer and system messages.
//!
//! Status changes go through `PATCH /v1/support/tickets/{id}` `{status}`; each change adds a
//! system message. A buyer message on a resolved ticket reopens it (also noted by the system).

use serde::Deserialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{ServiceError, invalid, optional_text, required_text};
use crate::{
    clock::{Millis, now_ms},
    domain::{MessageAuthor, MessageId, TicketId, TicketKind, TicketPriority, TicketStatus},
    storage::{
        Db,
        memberships::MembershipRow,
        receipts,
        support::{self, ContextTable, MessageRow, TicketFilter, TicketRow},
    },
    views::support::TicketView,
};

const MAX_SUBJECT: usize = 200;
const MAX_BODY: usize = 10_000;

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TicketContextInput {
    pub payment_id: Option<String>,
    pub membership_id: Option<String>,
    pub receipt_id: Option<String>,
    pub product_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTicket {
    #[schema(schema_with = super::schema::required_text_200)]
    pub subject: String,
    /// The first message of the thread, written by the merchant.
    #[schema(schema_with = super::schema::required_text_10000)]
    pub body: String,
    #[serde(default)]
    pub context: TicketContextInput,
    /// Defaults to `normal`.
    pub priority: Option<TicketPriority>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMessage {
    #[schema(schema_with = super::schema::required_text_10000)]
    pub body: String,
    /// `merchant` (default) or `buyer`; `system` messages are written by Hilt only.
    #[schema(schema_with = super::schema::message_author)]
    pub author: Option<MessageAuthor>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateTicket {
    pub status: TicketStatus,
}

/// List filters as given in the query string; bad values are reported as 422.
#[derive(Debug, Default)]
pub struct ListTickets<'a> {
    pub status: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub membership_id: Option<&'a str>,
}

pub async fn create(tx: &mut AnyConnection, merchant_id: &str, input: CreateTicket, public_base_url: &str) -> Result<TicketView, ServiceError> {
    let subject = required_text("subject", &input.subject, MAX_SUBJECT)?;
    let body = required_text("body", &input.body, MAX_BODY)?;
    let c = input.context;
    let context = [
        ("context.payment_id", ContextTable::Payments, &c.payment_id),
        ("context.membership_id", ContextTable::Memberships, &c.membership_id),
        ("context.receipt_id", ContextTable::Receipts, &c.receipt_id),
        ("context.product_id", ContextTable::Products, &c.product_id),
    ];
    for (param, table, id) in context {
        if let Some(id) = id
            && !support::merchant_owns(&mut *tx, table, merchant_id, id).await?
        {
            return Err(invalid(param, "no such object"));
        }
    }
    let now = now_ms();
    let ticket = TicketRow {
        id: TicketId::generate().to_string(),
        merchant_id: merchant_id.to_owned(),
        subject,
        status: TicketStatus::Open.as_str().to_owned(),
        kind: TicketKind::General.as_str().to_owned(),
        priority: input.priority.unwrap_or(TicketPriority::Normal).as_str().to_owned(),
        payment_id: c.payment_id,
        membership_id: c.membership_id,
        receipt_id: c.receipt_id,
        product_id: c.product_id,
        created_at: now,
        updated_at: now,
    };
    support::insert(&mut *tx, &ticket).await?;
    append(&mut *tx, &ticket.id, MessageAuthor::Merchant, &body, now).await?;
    let view = load(&mut *tx, merchant_id, &ticket.id, public_base_url).await?;
    Ok(view)
}

pub async fn list(
    db: &Db,
    merchant_id: &str,
    filter: ListTickets<'_>,
    limit: i64,
    offset: i64,
    public_base_url: &str,
) -> Result<(Vec<TicketView>, i64), ServiceError> {
    let status = filter
        .status
        .map(|s| TicketStatus::parse(s).ok_or_else(|| invalid("status", "must be open, pending or resolved")))
        .transpose()?;
    let kind = filter
        .kind
        .map(|k| TicketKind::parse(k).ok_or_else(|| invalid("kind", "must be general or delivery")))
        .transpose()?;
    let filter = TicketFilter {
        status: status.map(|s| s.as_str().to_owned()),
        kind: kind.map(|k| k.as_str().to_owned()),
        membership_id: optional_text("membership_id", filter.membership_id, 200)?,
    };
    let mut conn = db.conn().await?;
    let (rows, total) = support::list(&mut conn, merchant_id, &filter, limit, offset).await?;
    let mut views = Vec::with_capacity(rows.len());
    for t in &rows {
        let messages = support::list_messages(&mut conn, &t.id).await?;
        views.push(TicketView::new(t, &messages, public_base_url));
    }
    Ok((views, total))
}

pub async fn get(db: &Db, merchant_id: &str, id: &str, public_base_url: &str) -> Result<TicketView, ServiceError> {
    load(&mut *db.conn().await?, merchant_id, id, public_base_url).await
}

/// The ticket with its thread and actions; `NotFound` for another merchant's ticket.
pub async fn load(
    conn: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
    public_base_url: &str,
) -> Result<TicketView, ServiceError> {
    let ticket = support::get(conn, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let messages = support::list_messages(conn, &ticket.id).await?;
    Ok(TicketView::new(&ticket, &messages, public_base_url))
}

pub async fn add_message(
    tx: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
    input: AddMessage,
    public_base_url: &str,
) -> Result<TicketView, ServiceError> {
    let author = input.author.unwrap_or(MessageAuthor::Merchant);
    if author == MessageAuthor::System {
        return Err(invalid("author", "must be merchant or buyer"));
    }
    let body = required_text("body", &input.body, MAX_BODY)?;
    let ticket = support::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    let now = now_ms();
    append(&mut *tx, &ticket.id, author, &body, now).await?;
    if author == MessageAuthor::Buyer && ticket.status == TicketStatus::Resolved.as_str() {
        change_status(&mut *tx, &ticket, TicketStatus::Open, "the buyer wrote again", now).await?;
    }
    let view = load(&mut *tx, merchant_id, id, public_base_url).await?;
    Ok(view)
}

/// Sets the status; a change adds a system message, setting the current status changes nothing.
pub async fn update(
    tx: &mut AnyConnection,
    merchant_id: &str,
    id: &str,
    input: UpdateTicket,
    public_base_url: &str,
) -> Result<TicketView, ServiceError> {
    let ticket = support::get(&mut *tx, merchant_id, id).await?.ok_or(ServiceError::NotFound)?;
    if ticket.status != input.status.as_str() {
        change_status(&mut *tx, &ticket, input.status, "by the merchant", now_ms()).await?;
    }
    let view = load(&mut *tx, merchant_id, id, public_base_url).await?;
    Ok(view)
}

async fn change_status(
    conn: &mut AnyConnection,
    ticket: &TicketRow,
    to: TicketStatus,
    why: &str,
    now: Millis,
) -> Result<(), ServiceError> {
    support::touch(conn, &ticket.id, Some(to.as_str()), now).await?;
    let body = format!("Status changed from {} to {to} ({why}).", ticket.status);
    insert_message(conn, &ticket.id, MessageAuthor::System, &body, now).await
}

/// Opens the membership's delivery ticket (kind "delivery", context: membership, payment,
/// receipt, product ids) or reuses the open/pending one linked on memberships.support_ticket_id;
/// appends `system_message`; sets memberships.support_ticket_id. Returns (ticket_id, created).
/// A resolved ticket is not reused: a new one is opened. Call it inside the caller's transaction.
pub async fn open_or_reuse_delivery_ticket(
    conn: &mut AnyConnection,
    membership: &MembershipRow,
    subject: &str,
    system_message: &str,
    now: i64,
) -> Result<(String, bool), ServiceError> {
    // Re-read the link under a lock: `membership` may be a stale copy.
    if let Some(linked) = support::linked_ticket_for_update(conn, &membership.id).await?
        && let Some(ticket) = support::get(conn, &membership.merchant_id, &linked).await?
        && ticket.status != TicketStatus::Resolved.as_str()
    {
        add_system_message(conn, &ticket.id, system_message, now).await?;
        return Ok((ticket.id, false));
    }
    let receipt = receipts::get_by_payment(conn, &membership.last_payment_id).await?;
    let subject: String = match subject.trim() {
        "" => "Delivery needs attention".to_owned(),
        s => s.chars().take(MAX_SUBJECT).collect(),
    };
    let ticket = TicketRow {
        id: TicketId::generate().to_string(),
        merchant_id: membership.merchant_id.clone(),
        subject,
        status: TicketStatus::Open.as_str().to_owned(),
        kind: TicketKind::Delivery.as_str().to_owned(),
        priority: TicketPriority::High.as_str().to_owned(),
        payment_id: Some(membership.last_payment_id.clone()),
        membership_id: Some(membership.id.clone()),
        receipt_id: receipt.map(|r| r.id),
        product_id: Some(membership.product_id.clone()),
        created_at: now,
        updated_at: now,
    };
    support::insert(conn, &ticket).await?;
    insert_message(conn, &ticket.id, MessageAuthor::System, system_message, now).await?;
    support::link_membership(conn, &membership.id, &ticket.id, now).await?;
    Ok((ticket.id, true))
}

/// Appends a system message to any ticket (workers act across merchants). `NotFound` if the
/// ticket does not exist.
pub async fn add_system_message(conn: &mut AnyConnection, ticket_id: &str, body: &str, now: i64) -> Result<(), ServiceError> {
    append(conn, ticket_id, MessageAuthor::System, body, now).await
}

/// Bumps the ticket (which orders concurrent writers) and appends the message.
async fn append(conn: &mut AnyConnection, ticket_id: &str, author: MessageAuthor, body: &str, now: Millis) -> Result<(), ServiceError> {
    if !support::touch(conn, ticket_id, None, now).await? {
        return Err(ServiceError::NotFound);
    }
    insert_message(conn, ticket_id, author, body, now).await
}

async fn insert_message(conn: &mut AnyConnection, ticket_id: &str, author: MessageAuthor, body: &str, now: Millis) -> Result<(), ServiceError> {
    // System bodies come from our own code; keep them within what the API accepts anyway.
    let body: String = if body.trim().is_empty() { "(no details)".to_owned() } else { body.chars().take(MAX_BODY).collect() };
    support::insert_message(
        conn,
        &MessageRow {
            id: MessageId::generate().to_string(),
            ticket_id: ticket_id.to_owned(),
            author: author.as_str().to_owned(),
            body,
            created_at: now,
        },
    )
    .await?;
    Ok(())
}

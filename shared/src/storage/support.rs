//! The support trail: `support_tickets` and their `support_messages` (one aggregate).

use sqlx::{AnyConnection, FromRow};

#[derive(Debug, Clone, FromRow)]
pub struct TicketRow {
    pub id: String,
    pub merchant_id: String,
    pub subject: String,
    pub status: String,
    pub kind: String,
    pub priority: String,
    pub payment_id: Option<String>,
    pub membership_id: Option<String>,
    pub receipt_id: Option<String>,
    pub product_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct MessageRow {
    pub id: String,
    pub ticket_id: String,
    pub author: String,
    pub body: String,
    pub created_at: i64,
}

const COLUMNS: &str = "id, merchant_id, subject, status, kind, priority, payment_id, membership_id, \
    receipt_id, product_id, created_at, updated_at";

pub async fn insert(conn: &mut AnyConnection, t: &TicketRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO support_tickets (id, merchant_id, subject, status, kind, priority, payment_id, \
         membership_id, receipt_id, product_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&t.id)
    .bind(&t.merchant_id)
    .bind(&t.subject)
    .bind(&t.status)
    .bind(&t.kind)
    .bind(&t.priority)
    .bind(&t.payment_id)
    .bind(&t.membership_id)
    .bind(&t.receipt_id)
    .bind(&t.product_id)
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, merchant_id: &str, id: &str) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM support_tickets WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(id)
    .bind(merchant_id)
    .fetch_optional(conn)
    .await
}

/// For workers, which act on ids from job payloads whatever the merchant.
pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM support_tickets WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Default, Clone)]
pub struct TicketFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub membership_id: Option<String>,
}

pub async fn list(
    conn: &mut AnyConnection,
    merchant_id: &str,
    filter: &TicketFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<TicketRow>, i64), sqlx::Error> {
    // Absent filters compare the column with itself, so one statement serves every combination.
    let filters = "merchant_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR kind = $3) \
        AND ($4 IS NULL OR membership_id = $4)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM support_tickets WHERE {filters} ORDER BY created_at DESC, id LIMIT $5 OFFSET $6"
    )))
    .bind(merchant_id)
    .bind(&filter.status)
    .bind(&filter.kind)
    .bind(&filter.membership_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM support_tickets WHERE {filters}")))
        .bind(merchant_id)
        .bind(&filter.status)
        .bind(&filter.kind)
        .bind(&filter.membership_id)
        .fetch_one(conn)
        .await?;
    Ok((rows, total))
}

/// Bumps `updated_at` (and sets `status` when given). On PostgreSQL the row lock it takes
/// serialises writers of one ticket until commit, which keeps message numbering gap-free.
pub async fn touch(
    conn: &mut AnyConnection,
    id: &str,
    status: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE support_tickets SET status = COALESCE($1, status), updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Appends a message after the ticket's last one. Call [`touch`] first in the same transaction.
pub async fn insert_message(conn: &mut AnyConnection, m: &MessageRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO support_messages (id, ticket_id, author, body, created_at, seq) \
         VALUES ($1, $2, $3, $4, $5, \
         (SELECT COALESCE(MAX(seq), 0) + 1 FROM support_messages WHERE ticket_id = $2))",
    )
    .bind(&m.id)
    .bind(&m.ticket_id)
    .bind(&m.author)
    .bind(&m.body)
    .bind(m.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list_messages(conn: &mut AnyConnection, ticket_id: &str) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, ticket_id, author, body, created_at FROM support_messages WHERE ticket_id = $1 \
         ORDER BY seq, created_at, id",
    )
    .bind(ticket_id)
    .fetch_all(conn)
    .await
}

/// Whether the merchant owns an object of this kind with this id (context links of a ticket).
pub async fn merchant_owns(
    conn: &mut AnyConnection,
    table: ContextTable,
    merchant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let table = match table {
        ContextTable::Payments => "payments",
        ContextTable::Memberships => "memberships",
        ContextTable::Receipts => "receipts",
        ContextTable::Products => "products",
    };
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(id)
    .bind(merchant_id)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

#[derive(Debug, Clone, Copy)]
pub enum ContextTable {
    Payments,
    Memberships,
    Receipts,
    Products,
}

/// The membership's linked ticket id, read under a row lock on PostgreSQL (the no-op update)
/// so two workers escalating the same membership at once open one ticket between them.
pub async fn linked_ticket_for_update(conn: &mut AnyConnection, membership_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("UPDATE memberships SET support_ticket_id = support_ticket_id WHERE id = $1")
        .bind(membership_id)
        .execute(&mut *conn)
        .await?;
    let linked: Option<Option<String>> = sqlx::query_scalar("SELECT support_ticket_id FROM memberships WHERE id = $1")
        .bind(membership_id)
        .fetch_optional(conn)
        .await?;
    Ok(linked.flatten())
}

/// Sets `memberships.support_ticket_id`, the membership's side of the link.
pub async fn link_membership(conn: &mut AnyConnection, membership_id: &str, ticket_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET support_ticket_id = $1, updated_at = $2 WHERE id = $3")
        .bind(ticket_id)
        .bind(now)
        .bind(membership_id)
        .execute(conn)
        .await?;
    Ok(())
}

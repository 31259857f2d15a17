//! The support trail (SPEC §4 "Support ticket"). Status changes: `PATCH /v1/support/tickets/{id}`
//! `{status}`, each change adding a system message to the thread.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::Response,
};
use hilt_shared::{
    service::support::{self, AddMessage, CreateTicket, ListTickets, UpdateTicket},
    views::support::TicketView,
};

use super::List;
use crate::{
    error::ApiError,
    extract::{ApiJson, Merchant, Page, QueryPairs, Path},
    idempotency::RequestTx,
    state::AppState,
};

/// Open a ticket; `body` is its first message. Context ids must be this merchant's objects.
#[utoipa::path(post, path = "/v1/support/tickets", tag = "support", request_body = CreateTicket,
    responses((status = 201, body = TicketView), (status = 422)), security(("api_key" = [])))]
pub async fn create_ticket(
    merchant: Merchant,
    State(state): State<AppState>,
    mut tx: RequestTx,
    ApiJson(input): ApiJson<CreateTicket>,
) -> Result<Response, ApiError> {
    let ticket = support::create(&mut tx, &merchant.id, input, &state.config.public_base_url()).await?;
    tx.commit(StatusCode::CREATED, &ticket).await
}

#[utoipa::path(get, path = "/v1/support/tickets", tag = "support",
    params(("status" = Option<String>, Query, description = "open, pending or resolved"),
        ("kind" = Option<String>, Query, description = "general or delivery"),
        ("membership_id" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = List<TicketView>), (status = 422)), security(("api_key" = [])))]
pub async fn list_tickets(
    merchant: Merchant,
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<List<TicketView>>, ApiError> {
    let page = Page::from_query(&query)?;
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let filter = ListTickets { status: get("status"), kind: get("kind"), membership_id: get("membership_id") };
    let base = state.config.public_base_url();
    let (data, total) = support::list(&state.db, &merchant.id, filter, page.limit, page.offset, &base).await?;
    Ok(Json(List { data, total, limit: page.limit, offset: page.offset }))
}

#[utoipa::path(get, path = "/v1/support/tickets/{id}", tag = "support", params(("id" = String, Path)),
    responses((status = 200, body = TicketView), (status = 404)), security(("api_key" = [])))]
pub async fn get_ticket(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TicketView>, ApiError> {
    Ok(Json(support::get(&state.db, &merchant.id, &id, &state.config.public_base_url()).await?))
}

/// Change the status (`open`, `pending`, `resolved`); a change adds a system message.
#[utoipa::path(patch, path = "/v1/support/tickets/{id}", tag = "support", params(("id" = String, Path)),
    request_body = UpdateTicket,
    responses((status = 200, body = TicketView), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn update_ticket(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut tx: RequestTx,
    ApiJson(input): ApiJson<UpdateTicket>,
) -> Result<Response, ApiError> {
    let ticket = support::update(&mut tx, &merchant.id, &id, input, &state.config.public_base_url()).await?;
    tx.commit(StatusCode::OK, &ticket).await
}

/// Add a message (author `merchant` by default, or `buyer`); answers with the whole ticket.
#[utoipa::path(post, path = "/v1/support/tickets/{id}/message", tag = "support", params(("id" = String, Path)),
    request_body = AddMessage,
    responses((status = 201, body = TicketView), (status = 404), (status = 422)), security(("api_key" = [])))]
pub async fn add_ticket_message(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut tx: RequestTx,
    ApiJson(input): ApiJson<AddMessage>,
) -> Result<Response, ApiError> {
    let ticket = support::add_message(&mut tx, &merchant.id, &id, input, &state.config.public_base_url()).await?;
    tx.commit(StatusCode::CREATED, &ticket).await
}

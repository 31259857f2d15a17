pub mod admin;
pub mod health;
pub mod memberships;
pub mod ops;
pub mod ops_pages;
pub mod payments;
pub mod products;
pub mod receipts;
pub mod support;
pub mod webhook_endpoints;

use serde::Serialize;
use utoipa::ToSchema;

/// The list envelope of SPEC §3.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

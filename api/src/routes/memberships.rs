use axum::{
    Json,
    extract::{Path, State},
};
use hilt_shared::{storage, views::MembershipView};

use crate::{error::ApiError, extract::Merchant, state::AppState};

#[utoipa::path(get, path = "/v1/memberships/{id}", tag = "memberships", params(("id" = String, Path)),
    responses((status = 200, body = MembershipView), (status = 404)), security(("api_key" = [])))]
pub async fn get_membership(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MembershipView>, ApiError> {
    let m = storage::memberships::get(&mut *state.db.conn().await?, &merchant.id, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(MembershipView::from(&m)))
}

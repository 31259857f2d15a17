use axum::{Json, extract::State, http::StatusCode};
use hilt_shared::{clock::rfc3339, service::merchants};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::ApiError,
    extract::{Admin, ApiJson},
    state::AppState,
};

#[derive(Deserialize, ToSchema)]
pub struct CreateMerchant {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct MerchantCreated {
    pub id: String,
    pub name: String,
    /// Shown this once; only its hash is stored.
    pub api_key: String,
    pub created_at: String,
}

/// Create a merchant and its API key (platform).
#[utoipa::path(post, path = "/v1/admin/merchants", tag = "platform", request_body = CreateMerchant,
    responses((status = 201, body = MerchantCreated)), security(("admin_token" = [])))]
pub async fn create_merchant(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<CreateMerchant>,
) -> Result<(StatusCode, Json<MerchantCreated>), ApiError> {
    let (merchant, api_key) = merchants::create(&state.db, &input.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(MerchantCreated { id: merchant.id, name: merchant.name, api_key, created_at: rfc3339(merchant.created_at) }),
    ))
}

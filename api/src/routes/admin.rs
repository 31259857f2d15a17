use axum::{http::StatusCode, response::Response};
use hilt_shared::{clock::rfc3339, service::merchants};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::ApiError,
    extract::{Admin, ApiJson},
    idempotency::RequestTx,
};

#[derive(Deserialize, ToSchema)]
pub struct CreateMerchant {
    #[schema(schema_with = hilt_shared::service::schema::required_text_200)]
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
    mut tx: RequestTx,
    ApiJson(input): ApiJson<CreateMerchant>,
) -> Result<Response, ApiError> {
    let (merchant, api_key) = merchants::create(&mut tx, &input.name).await?;
    let created = MerchantCreated { id: merchant.id, name: merchant.name, api_key, created_at: rfc3339(merchant.created_at) };
    tx.commit(StatusCode::CREATED, &created).await
}

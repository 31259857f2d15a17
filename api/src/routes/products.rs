use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::Response,
};
use hilt_shared::{
    service::products::{self, CreateProduct, UpdateProduct},
    storage,
    views::ProductView,
};

use super::List;
use crate::{
    error::ApiError,
    extract::{ApiJson, Merchant, Page, QueryPairs, Path},
    idempotency::RequestTx,
    state::AppState,
};

#[utoipa::path(post, path = "/v1/products", tag = "products", request_body = CreateProduct,
    responses((status = 201, body = ProductView), (status = 422)), security(("api_key" = [])))]
pub async fn create_product(
    merchant: Merchant,
    mut tx: RequestTx,
    ApiJson(input): ApiJson<CreateProduct>,
) -> Result<Response, ApiError> {
    let product = products::create(&mut tx, &merchant.id, input).await?;
    tx.commit(StatusCode::CREATED, &ProductView::from(&product)).await
}

#[utoipa::path(get, path = "/v1/products", tag = "products",
    params(("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = List<ProductView>)), security(("api_key" = [])))]
pub async fn list_products(
    merchant: Merchant,
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
) -> Result<Json<List<ProductView>>, ApiError> {
    let page = Page::from_query(&query)?;
    let (rows, total) = storage::products::list(&mut *state.db.conn().await?, &merchant.id, page.limit, page.offset).await?;
    Ok(Json(List { data: rows.iter().map(ProductView::from).collect(), total, limit: page.limit, offset: page.offset }))
}

#[utoipa::path(get, path = "/v1/products/{id}", tag = "products", params(("id" = String, Path)),
    responses((status = 200, body = ProductView), (status = 404)), security(("api_key" = [])))]
pub async fn get_product(
    merchant: Merchant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    let product = storage::products::get(&mut *state.db.conn().await?, &merchant.id, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(ProductView::from(&product)))
}

#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", params(("id" = String, Path)),
    request_body = UpdateProduct, responses((status = 200, body = ProductView), (status = 404), (status = 422)),
    security(("api_key" = [])))]
pub async fn update_product(
    merchant: Merchant,
    Path(id): Path<String>,
    mut tx: RequestTx,
    ApiJson(patch): ApiJson<UpdateProduct>,
) -> Result<Response, ApiError> {
    let product = products::update(&mut tx, &merchant.id, &id, patch).await?;
    tx.commit(StatusCode::OK, &ProductView::from(&product)).await
}

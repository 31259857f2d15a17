//! Request-wide rules: the 1 MiB body limit and its read timeout; every answer counted for
//! `/metrics`.

use axum::{
    body::{Body, to_bytes},
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, state::AppState};

pub const MAX_BODY: usize = 1024 * 1024;

/// Buffers the body up to 1 MiB so every later step sees it whole; larger → 413 in our shape; a
/// body that does not arrive within `HILT_READ_TIMEOUT` → 408 (the connection is not held).
pub async fn limit_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return ApiError::PayloadTooLarge.into_response();
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(state.config.read_timeout.0, to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => ApiError::PayloadTooLarge.into_response(),
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// Counts every answer for `/metrics` by its route pattern (`/v1/payments/{id}`, never the raw
/// path, which would make a series per id), method and status, with its duration.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    hilt_shared::metrics::http_request(&route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
}

//! Request-wide rules: the 1 MiB body limit and its read timeout.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
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

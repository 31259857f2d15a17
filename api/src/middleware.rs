//! Request-wide rules: the 1 MiB body limit and `Idempotency-Key` replay on every POST.

use axum::{
    body::{Body, Bytes, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hilt_shared::{clock::now_ms, storage::idempotency::{self, Claim}};
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

pub const MAX_BODY: usize = 1024 * 1024;
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// Stored responses are replayed whole; anything bigger than this is not worth keeping.
const MAX_STORED_RESPONSE: usize = 4 * 1024 * 1024;

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

/// Same key + same request within 24 h → the first response again; same key + another body → 409.
/// Keys are scoped by credential, so two merchants never share one.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => return ApiError::validation("Idempotency-Key", "must be 1 to 255 visible ASCII characters").into_response(),
    };
    let scope = hex::encode(Sha256::digest(
        req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default(),
    ));
    let (parts, body) = req.into_parts();
    // `limit_body` already buffered the body, so this cannot exceed the limit.
    let bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.to_string());
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());

    let claim = match state.db.conn().await {
        Ok(mut conn) => idempotency::claim(&mut conn, &scope, &key, &request_hash, now_ms(), IDEMPOTENCY_TTL_MS).await,
        Err(e) => Err(e),
    };
    match claim {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Claim::Mismatch) => {
            ApiError::Conflict("Idempotency-Key was already used with a different request".into()).into_response()
        }
        Ok(Claim::InFlight) => {
            ApiError::Conflict("a request with this Idempotency-Key is still in progress".into()).into_response()
        }
        Ok(Claim::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let (body, withheld) = open_secrets(&state, &body);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            if !withheld.is_empty()
                && let Ok(names) = HeaderValue::from_str(&withheld.join(", "))
            {
                headers.insert("idempotent-replay-withheld", names);
            }
            response
        }
        Ok(Claim::New) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            remember(&state, &scope, &key, response).await
        }
    }
}

/// Stores a finished response for replay, its shown-once secrets sealed (see [`SECRET_FIELDS`]);
/// a 5xx frees the key so the client can retry, and a 401 leaves nothing behind.
async fn remember(state: &AppState, scope: &str, key: &str, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_STORED_RESPONSE).await.unwrap_or_else(|_| Bytes::new());
    let saved = match state.db.conn().await {
        Ok(mut conn) if parts.status.is_server_error() || parts.status == StatusCode::UNAUTHORIZED => {
            idempotency::release(&mut conn, scope, key).await
        }
        Ok(mut conn) => {
            let text = seal_secrets(state, &String::from_utf8_lossy(&bytes));
            idempotency::save_response(&mut conn, scope, key, parts.status.as_u16(), &text).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        tracing::warn!(error = %e, "could not record the idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Shown-once secrets a response may carry at its top level: a merchant's `api_key`, a webhook
/// endpoint's `secret`. The stored copy for replays never holds them in plaintext: they are
/// sealed with `HILT_ENCRYPTION_KEY` (and the replay returns them whole), or, without a key,
/// left out (the replay names them in `Idempotent-Replay-Withheld`; rotate to get a new one).
const SECRET_FIELDS: [&str; 2] = ["api_key", "secret"];

fn seal_secrets(state: &AppState, body: &str) -> String {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(body) else { return body.to_owned() };
    let mut changed = false;
    for field in SECRET_FIELDS {
        if let Some(serde_json::Value::String(secret)) = object.get(field) {
            let stored = state.config.encryption_key.as_ref().map(|key| key.seal(secret));
            object.insert(field.to_owned(), stored.map_or(serde_json::Value::Null, serde_json::Value::String));
            changed = true;
        }
    }
    if changed { serde_json::Value::Object(object).to_string() } else { body.to_owned() }
}

/// The stored response with its sealed secrets opened; the names of those it cannot return.
fn open_secrets(state: &AppState, stored: &str) -> (String, Vec<&'static str>) {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(stored) else { return (stored.to_owned(), Vec::new()) };
    let mut withheld = Vec::new();
    for field in SECRET_FIELDS {
        match object.get(field) {
            Some(serde_json::Value::String(sealed)) if hilt_shared::secrets::is_sealed(sealed) => {
                match state.config.encryption_key.as_ref().and_then(|key| key.open(sealed).ok()) {
                    Some(secret) => {
                        object.insert(field.to_owned(), serde_json::Value::String(secret));
                    }
                    None => {
                        object.insert(field.to_owned(), serde_json::Value::Null);
                        withheld.push(field);
                    }
                }
            }
            Some(serde_json::Value::Null) => withheld.push(field),
            _ => {}
        }
    }
    (serde_json::Value::Object(object).to_string(), withheld)
}

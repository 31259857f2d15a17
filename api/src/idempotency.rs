//! Every write request runs in one database transaction, [`RequestTx`], that also holds its
//! `Idempotency-Key` (the Stripe and zero2prod pattern): the key's claim, the request's changes
//! and the saved response commit together, once. A request either happened, and a retry with the
//! same key and body gets the saved response back (`Idempotent-Replayed: true`), or it left
//! nothing, and the retry runs it afresh.
//!
//! - A request that dies (client gone, process killed, database cut off) rolls back, so its key
//!   is free at once (PostgreSQL ends a cut-off session's transaction within 10 s).
//! - A retry that arrives while the first request still runs answers 409 `conflict` on
//!   PostgreSQL (as Stripe does) after waiting up to a second for it; on SQLite, whose writers
//!   queue, it waits and replays.
//! - Only successful responses are saved: an error rolls everything back, the claim included.
//! - Same key, different method, path or body: 409 `conflict`.
//! - Keys are scoped by credential, so two merchants never share one. They last 24 h
//!   (`storage::retention` prunes them).

use std::{ops::{Deref, DerefMut}, sync::Arc};

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts, Request},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hilt_shared::{
    clock::now_ms,
    config::Config,
    storage::{Tx, idempotency::{self, Claim}},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::{error::ApiError, middleware::MAX_BODY, state::AppState};

/// The `Idempotency-Key` of a POST, with what identifies its request.
#[derive(Clone)]
struct IdempotencyKey {
    /// sha256 of the `Authorization` header, hex.
    scope: String,
    key: String,
    /// sha256 of method, path and query, and body, hex.
    request_hash: String,
}

/// Reads the `Idempotency-Key` of a POST to the API (1–255 visible ASCII characters, else 422)
/// and the request's hash for [`RequestTx`]; writes nothing. The /ops pages' form posts answer
/// with redirects, which are not kept.
pub async fn idempotency_key(req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.uri().path().starts_with("/v1/") {
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
    let (mut parts, body) = req.into_parts();
    // `limit_body` already buffered the body, so this cannot exceed the limit.
    let bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.to_string());
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    parts.extensions.insert(IdempotencyKey { scope, key, request_hash });
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The transaction of one write request, with its `Idempotency-Key` claimed inside it. Handlers
/// take it after their credential extractor (a request that fails authentication never opens
/// one), do their changes through it (it derefs to the connection), and answer with
/// [`RequestTx::commit`]. Dropping it (an error, `?`) rolls everything back.
///
/// When the key's request already happened, extraction is refused with its saved response.
pub struct RequestTx {
    tx: Tx,
    key: Option<IdempotencyKey>,
    config: Arc<Config>,
}

const KEY_TTL_MS: i64 = 24 * 3600 * 1000;

impl FromRequestParts<AppState> for RequestTx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let key = parts.extensions.get::<IdempotencyKey>().cloned();
        let mut tx = state.db.begin().await.map_err(|e| ApiError::from(e).into_response())?;
        if let Some(k) = &key {
            match idempotency::claim(&mut tx, &k.scope, &k.key, &k.request_hash, now_ms(), KEY_TTL_MS).await {
                Ok(Claim::New) => {}
                Ok(Claim::Mismatch) => {
                    return Err(ApiError::Conflict("Idempotency-Key was already used with a different request".into()).into_response());
                }
                Ok(Claim::InFlight) => {
                    return Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress".into()).into_response());
                }
                Ok(Claim::Replay { status, body }) => return Err(replay(&state.config, status, &body)),
                Err(e) => return Err(ApiError::from(e).into_response()),
            }
        }
        Ok(Self { tx, key, config: state.config.clone() })
    }
}

impl RequestTx {
    /// Saves `body` as the key's response (shown-once secrets sealed) and commits: the request's
    /// one commit. 503 when the database is unavailable (nothing happened).
    pub async fn commit<T: Serialize>(mut self, status: StatusCode, body: &T) -> Result<Response, ApiError> {
        let json = serde_json::to_string(body).map_err(|_| ApiError::Internal)?;
        if let Some(k) = &self.key {
            let stored = seal_secrets(&self.config, &json);
            idempotency::save_response(&mut self.tx, &k.scope, &k.key, status.as_u16(), &stored).await?;
        }
        self.tx.commit().await?;
        Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response())
    }

    /// Commits a browser form's post from an /ops page (never keyed: see [`idempotency_key`]).
    pub async fn commit_form(self) -> Result<(), ApiError> {
        Ok(self.tx.commit().await?)
    }

    /// [`RequestTx::commit`] for a response without a body (204).
    pub async fn commit_empty(mut self, status: StatusCode) -> Result<Response, ApiError> {
        if let Some(k) = &self.key {
            idempotency::save_response(&mut self.tx, &k.scope, &k.key, status.as_u16(), "").await?;
        }
        self.tx.commit().await?;
        Ok(status.into_response())
    }
}

impl Deref for RequestTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for RequestTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

fn replay(config: &Config, status: u16, stored: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let (body, withheld) = open_secrets(config, stored);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if !stored.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if !withheld.is_empty()
        && let Ok(names) = HeaderValue::from_str(&withheld.join(", "))
    {
        headers.insert("idempotent-replay-withheld", names);
    }
    response
}

/// Shown-once secrets a response may carry at its top level: a merchant's `api_key`, a webhook
/// endpoint's `secret`. The stored copy for replays never holds them in plaintext: they are
/// sealed with `HILT_ENCRYPTION_KEY` (and the replay returns them whole), or, without a key,
/// left out (the replay names them in `Idempotent-Replay-Withheld`; rotate to get a new one).
const SECRET_FIELDS: [&str; 2] = ["api_key", "secret"];

fn seal_secrets(config: &Config, body: &str) -> String {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(body) else { return body.to_owned() };
    let mut changed = false;
    for field in SECRET_FIELDS {
        if let Some(serde_json::Value::String(secret)) = object.get(field) {
            let stored = config.encryption_key.as_ref().map(|key| key.seal(secret));
            object.insert(field.to_owned(), stored.map_or(serde_json::Value::Null, serde_json::Value::String));
            changed = true;
        }
    }
    if changed { serde_json::Value::Object(object).to_string() } else { body.to_owned() }
}

/// The stored response with its sealed secrets opened; the names of those it cannot return.
fn open_secrets(config: &Config, stored: &str) -> (String, Vec<&'static str>) {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(stored) else { return (stored.to_owned(), Vec::new()) };
    let mut withheld = Vec::new();
    for field in SECRET_FIELDS {
        match object.get(field) {
            Some(serde_json::Value::String(sealed)) if hilt_shared::secrets::is_sealed(sealed) => {
                match config.encryption_key.as_ref().and_then(|key| key.open(sealed).ok()) {
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

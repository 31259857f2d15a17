//! Extractors that answer bad input in our error shape instead of axum's plain text.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use hilt_shared::service::merchants;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

/// A path parameter. One that cannot be decoded (`/v1/products/%FF`: not UTF-8) names nothing
/// that can exist: 404 `not_found` in the error shape, like any unknown id, never axum's text.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|axum::extract::Path(value)| Path(value)).map_err(|_| ApiError::NotFound)
    }
}

/// A JSON body: unparsable → 400 `invalid_json`; wrong shape → 422 with the field in `param`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|_| ApiError::PayloadTooLarge)?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson("request body must be a JSON object".into()));
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidJson(format!("request body is not valid JSON: {e}")))?;
    integral_floats_as_integers(&mut value);
    if !value.is_object() {
        return Err(ApiError::Validation { param: None, message: "request body must be a JSON object".into() });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let param = match message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            Some(field) if path == "." => field.to_owned(),
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        ApiError::Validation { param: Some(param), message }
    })
}

/// JSON Schema's `integer` is any whole number, `19.0` included, but serde reads `19.0` only
/// into a float: such numbers are made integers before the fields are read.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15) {
                *n = serde_json::Number::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// `limit` (default 50, 1–200) and `offset` (default 0) of list routes.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn from_query(query: &[(String, String)]) -> Result<Self, ApiError> {
        let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let limit = match get("limit") {
            None => 50,
            Some(v) => v.parse().ok().filter(|l| (1..=200).contains(l))
                .ok_or_else(|| ApiError::validation("limit", "must be an integer from 1 to 200"))?,
        };
        let offset = match get("offset") {
            None => 0,
            Some(v) => v.parse().ok().filter(|o| *o >= 0)
                .ok_or_else(|| ApiError::validation("offset", "must be a non-negative integer"))?,
        };
        Ok(Self { limit, offset })
    }
}

/// Raw query pairs; routes pick their own filters and report bad ones as 422.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        parse_pairs(raw).map(QueryPairs)
    }
}

/// `application/x-www-form-urlencoded` pairs (a query string or a form body); 422 when malformed.
pub fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{raw}").parse().map_err(|_| ApiError::validation("query", "malformed query string"))?,
    )
    .map(|q| q.0)
    .map_err(|_| ApiError::validation("query", "malformed query string"))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The merchant behind `Authorization: Bearer <api key>`.
pub struct Merchant {
    pub id: String,
}

impl FromRequestParts<AppState> for Merchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let merchant = merchants::authenticate(&state.db, key).await?.ok_or(ApiError::Unauthorized)?;
        Ok(Merchant { id: merchant.id })
    }
}

/// The platform/operations caller (`HILT_ADMIN_TOKEN`), as Bearer or as the Basic password.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let given = bearer(parts).map(str::to_owned).or_else(|| basic_password(parts)).ok_or(ApiError::Unauthorized)?;
        // Comparing digests keeps the comparison time independent of where the strings differ.
        if Sha256::digest(given.as_bytes()) == Sha256::digest(state.admin_token.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn basic_password(parts: &Parts) -> Option<String> {
    use base64::Engine;
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_owned())
}

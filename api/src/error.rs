//! The one API error type and every mapping into it (SPEC §3 error shape).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hilt_shared::service::ServiceError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    InvalidJson(String),
    Unauthorized,
    /// Authenticated, but the request may not do this (an /ops form posted from another site).
    Forbidden(String),
    NotFound,
    MethodNotAllowed,
    Conflict(String),
    PayloadTooLarge,
    /// The body did not arrive within `HILT_READ_TIMEOUT`.
    RequestTimeout,
    /// Over `HILT_RATE_LIMIT` or `HILT_AUTH_FAILURE_LIMIT`; may try again in this many seconds
    /// (sent as `Retry-After`).
    RateLimited { retry_after_secs: u64 },
    Validation { param: Option<String>, message: String },
    Unavailable,
    /// Logged where it happened; the client sees a generic message.
    Internal,
}

impl ApiError {
    pub fn validation(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation { param: Some(param.into()), message: message.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<&str>) {
        match self {
            Self::InvalidJson(m) => (StatusCode::BAD_REQUEST, "invalid_json", m.clone(), None),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid credentials: send Authorization: Bearer <key>".into(),
                None,
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone(), None),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such object".into(), None),
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route".into(), None)
            }
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone(), None),
            Self::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; try again in {retry_after_secs} s"),
                None,
            ),
            Self::RequestTimeout => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body did not arrive in time (HILT_READ_TIMEOUT)".into(), None)
            }
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is larger than 1 MiB".into(), None)
            }
            Self::Validation { param, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message.clone(), param.as_deref())
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a backing service is unavailable; the request changed nothing, retry later".into(),
                None,
            ),
            Self::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error".into(), None)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, param) = self.parts();
        let mut error = json!({ "code": code, "message": message });
        if let Some(param) = param {
            error["param"] = param.into();
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if let Self::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => Self::NotFound,
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::Invalid { param, message } => Self::Validation { param: Some(param), message },
            ServiceError::Db(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            Self::Unavailable
        } else {
            tracing::error!(error = %e, "database error");
            Self::Internal
        }
    }
}

/// Errors that mean the database is down or unreachable, as opposed to a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // SQLite busy/locked, PostgreSQL connection and shutdown classes.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c == "5" || c == "6" || c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }),
        _ => false,
    }
}

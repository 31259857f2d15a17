//! Rate limits (SPEC §3 `429 rate_limited`), kept by `governor` (GCRA) in this process:
//! `HILT_RATE_LIMIT` requests per second per credential (the `Authorization` header; the client
//! address for requests without one), and `HILT_AUTH_FAILURE_LIMIT` failed authentications per
//! minute per client address, after which a wrong key answers 429 instead of 401. Each API
//! process keeps its own counts, so N processes behind a balancer allow up to N times as much.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use hilt_shared::config::Config;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The limiters of one API process.
pub struct RateLimits {
    requests: DefaultKeyedRateLimiter<[u8; 32]>,
    auth_failures: DefaultKeyedRateLimiter<Option<IpAddr>>,
}

impl RateLimits {
    pub fn from_config(config: &Config) -> Arc<Self> {
        let per_second = NonZeroU32::new(config.rate_limit).unwrap_or(NonZeroU32::MIN);
        let per_minute = NonZeroU32::new(config.auth_failure_limit).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            requests: RateLimiter::keyed(Quota::per_second(per_second)),
            auth_failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
        })
    }
}

/// Applies both limits to every request but the health checks.
pub async fn rate_limit(State(limits): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let client = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let credential: [u8; 32] = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => Sha256::digest(value.as_bytes()).into(),
        None => Sha256::digest(format!("address {client:?}")).into(),
    };
    if let Err(not_until) = limits.requests.check_key(&credential) {
        return limited(not_until.wait_time_from(limits.requests.clock().now()));
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Err(not_until) = limits.auth_failures.check_key(&client)
    {
        tracing::warn!(client = ?client, "failed authentications over HILT_AUTH_FAILURE_LIMIT; answering 429");
        return limited(not_until.wait_time_from(limits.auth_failures.clock().now()));
    }
    response
}

fn limited(wait: Duration) -> Response {
    ApiError::RateLimited { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }.into_response()
}

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
    /// When idle keys were last dropped, unix milliseconds (see [`RateLimits::forget_idle`]).
    forgotten_at: std::sync::atomic::AtomicI64,
}

/// Past this many keys, idle ones are dropped (at most once a second), so a client sending a
/// new `Authorization` header with every request cannot grow the maps without bound.
const MAX_KEYS: usize = 10_000;

impl RateLimits {
    pub fn from_config(config: &Config) -> Arc<Self> {
        let per_second = NonZeroU32::new(config.rate_limit).unwrap_or(NonZeroU32::MIN);
        let per_minute = NonZeroU32::new(config.auth_failure_limit).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            requests: RateLimiter::keyed(Quota::per_second(per_second)),
            auth_failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            forgotten_at: std::sync::atomic::AtomicI64::new(0),
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
    limits.forget_idle();
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

impl RateLimits {
    /// Drops the keys whose limit is back to full (`governor`'s `retain_recent`): they hold
    /// nothing a new key would not.
    fn forget_idle(&self) {
        use std::sync::atomic::Ordering;
        if self.requests.len() + self.auth_failures.len() <= MAX_KEYS {
            return;
        }
        let now = hilt_shared::clock::now_ms();
        let last = self.forgotten_at.load(Ordering::Relaxed);
        if now - last < 1_000 || self.forgotten_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        self.requests.retain_recent();
        self.requests.shrink_to_fit();
        self.auth_failures.retain_recent();
        self.auth_failures.shrink_to_fit();
    }
}

fn limited(wait: Duration) -> Response {
    ApiError::RateLimited { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_whose_limit_is_full_again_are_dropped_past_the_bound() {
        let limits = RateLimits {
            requests: RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1_000).expect("1000"))),
            auth_failures: RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
            forgotten_at: std::sync::atomic::AtomicI64::new(0),
        };
        for i in 0..=MAX_KEYS as u32 {
            let key: [u8; 32] = Sha256::digest(i.to_be_bytes()).into();
            assert!(limits.requests.check_key(&key).is_ok());
        }
        assert_eq!(limits.requests.len(), MAX_KEYS + 1);
        // One request each at 1,000/s: full again 1 ms later.
        std::thread::sleep(Duration::from_millis(5));
        limits.forget_idle();
        assert_eq!(limits.requests.len(), 0, "idle keys dropped");
        let busy: [u8; 32] = Sha256::digest(b"busy").into();
        for _ in 0..10 {
            let _ = limits.requests.check_key(&busy);
        }
        limits.forget_idle();
        assert_eq!(limits.requests.len(), 1, "under the bound nothing is dropped");
    }
}

//! Sending one signed webhook to a merchant's endpoint, without letting the request be turned
//! against the platform: the host is resolved here, every address is checked, and the
//! connection goes only to the checked addresses (no second lookup a DNS rebind could answer
//! differently), with no redirects and no proxy.
//!
//! Errors never carry the URL (merchants put tokens in it) or any body.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use reqwest::{header, redirect};

use super::CONNECT_TIMEOUT;
use crate::domain::webhook::is_public_ip;

/// Standard Webhooks recommends receivers answer within 15 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// A `retry-after` longer than this is read as this (a receiver cannot park an event forever).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct Signed<'a> {
    pub url: &'a str,
    /// `webhook-id`: the event id.
    pub msg_id: &'a str,
    /// `webhook-timestamp`: unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`: space-separated `v1,<base64>` signatures.
    pub signature: &'a str,
    pub body: Vec<u8>,
}

/// The receiver answered (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// From `retry-after` (seconds or an HTTP date), capped at a day.
    pub retry_after: Option<Duration>,
}

/// The request did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SendError {
    /// `invalid_url`, `dns_failed`, `private_address`, `timeout`, `connect_failed`, `network`.
    pub code: &'static str,
    pub message: String,
}

impl SendError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

pub async fn send(request: Signed<'_>, allow_private: bool, timeout: Duration) -> Result<Answer, SendError> {
    let url = reqwest::Url::parse(request.url).map_err(|_| SendError::new("invalid_url", "the endpoint URL does not parse"))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| SendError::new("invalid_url", "the endpoint URL has no host"))?;
    let port = url.port_or_known_default().ok_or_else(|| SendError::new("invalid_url", "the endpoint URL has no port"))?;
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => resolve(host, port, timeout).await?,
    };
    if !allow_private && addrs.iter().any(|a| !is_public_ip(a.ip())) {
        return Err(SendError::new(
            "private_address",
            "the endpoint resolves to a loopback, private, link-local or unspecified address",
        ));
    }
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .redirect(redirect::Policy::none())
        .no_proxy()
        .user_agent("Hilt-Webhooks/1.0");
    if literal.is_none() {
        builder = builder.resolve_to_addrs(host, &addrs);
    }
    let client = builder.build().map_err(|_| SendError::new("network", "could not build the HTTP client"))?;
    let response = client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("webhook-id", request.msg_id)
        .header("webhook-timestamp", request.timestamp.to_string())
        .header("webhook-signature", request.signature)
        .body(request.body)
        .send()
        .await
        .map_err(network_error)?;
    let retry_after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    Ok(Answer { status: response.status().as_u16(), retry_after })
}

async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, SendError> {
    let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| SendError::new("dns_failed", "the endpoint's host name did not resolve in time"))?;
    let addrs: Vec<SocketAddr> = lookup.map_err(|_| SendError::new("dns_failed", "the endpoint's host name does not resolve"))?.collect();
    if addrs.is_empty() {
        return Err(SendError::new("dns_failed", "the endpoint's host name has no addresses"));
    }
    Ok(addrs)
}

fn network_error(err: reqwest::Error) -> SendError {
    let err = err.without_url();
    if err.is_timeout() {
        SendError::new("timeout", "the endpoint did not answer in time")
    } else if err.is_connect() {
        SendError::new("connect_failed", "could not connect to the endpoint")
    } else {
        SendError::new("network", "the connection to the endpoint failed")
    }
}

/// `retry-after` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date means now");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn private_addresses_are_refused_before_connecting() {
        let request = |url| Signed { url, msg_id: "evt_1", timestamp: 1, signature: "v1,x", body: b"{}".to_vec() };
        for url in ["http://127.0.0.1:9/", "http://[::1]:9/", "http://localhost:9/", "http://169.254.169.254/"] {
            let err = send(request(url), false, Duration::from_secs(2)).await.expect_err(url);
            assert_eq!(err.code, "private_address", "{url}");
        }
    }
}

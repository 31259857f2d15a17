//! Test support: our own fake Telegram Bot API and Discord REST servers, and an SMTP sink.
//!
//! The fakes are real HTTP servers on `127.0.0.1:0`, speaking the providers' wire formats, so
//! tests drive the real clients (teloxide types, serenity, lettre) against them, in-process or
//! from a `hilt` binary pointed at them with `HILT_TELEGRAM_API_URL` / `HILT_DISCORD_API_URL`.
//! Each keeps provider-side state (chats, members, bans, bot rights, guilds, roles), can be
//! scripted to fail the next calls of a method, and records every call for inspection.

mod discord;
mod smtp;
mod telegram;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::Duration,
};

pub use discord::{FakeDiscord, GuildRole};
pub use smtp::{ReceivedMail, SmtpSink};
pub use telegram::{BotRights, FakeTelegram, InviteLink};

/// A scripted answer for the next call(s) of a method, replacing the fake's normal behaviour.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 429: Telegram `parameters.retry_after`; Discord `Retry-After` header and `retry_after`.
    TooManyRequests { retry_after: u64 },
    /// An API error answer. Telegram: `error_code` = `status`, `description` = `message`
    /// (`code` unused). Discord: `{"code": code, "message": message}` with `status`.
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    /// A bare HTTP status with a non-JSON body, as a proxy in front of the API would send (502…).
    Status(u16),
    /// Wait this long, then answer normally (for timeout tests).
    Slow(Duration),
    /// Telegram: 400 `Bad Request: PARTICIPANT_ID_INVALID`; Discord: 404 `10007 Unknown Member`.
    UnknownMember,
}

impl Failure {
    /// A Telegram error answer, e.g. `Failure::telegram(403, "Forbidden: bot was blocked by the user")`.
    pub fn telegram(status: u16, description: &str) -> Self {
        Self::Api {
            status,
            code: i64::from(status),
            message: description.to_owned(),
        }
    }

    /// A Discord error answer, e.g. `Failure::discord(403, 50013, "Missing Permissions")`.
    pub fn discord(status: u16, code: i64, message: &str) -> Self {
        Self::Api {
            status,
            code,
            message: message.to_owned(),
        }
    }
}

/// One request as the fake received it. Secrets (the bot token, OAuth access tokens) are not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Telegram: the method in lower case (`createchatinvitelink`). Discord: the operation
    /// (`current_user`, `get_member`, `add_member`, `add_role`, `remove_role`, `get_roles`).
    pub method: String,
    pub params: serde_json::Value,
}

/// Scripted failures per method, plus "every call fails" while a provider is down.
#[derive(Default)]
struct Script {
    next: HashMap<String, VecDeque<Failure>>,
    down: Option<Failure>,
}

impl Script {
    fn push(&mut self, method: &str, times: usize, failure: Failure) {
        let queue = self.next.entry(method.to_ascii_lowercase()).or_default();
        queue.extend(std::iter::repeat_n(failure, times));
    }

    fn take(&mut self, method: &str) -> Option<Failure> {
        if let Some(f) = &self.down {
            return Some(f.clone());
        }
        let queue = self.next.get_mut(method)?;
        let failure = queue.pop_front();
        if queue.is_empty() {
            self.next.remove(method);
        }
        failure
    }
}

/// Limits a fake provider enforces, as the provider does: each kind of limit (`bot`, `chat`…)
/// a token bucket per key holding `count` calls, refilled at the rate.
struct ProviderLimits {
    rates: HashMap<&'static str, crate::ratelimit::Rate>,
    /// key → when its bucket is full again (theoretical arrival time), µs since `epoch`.
    tat: HashMap<String, i64>,
    epoch: std::time::Instant,
}

impl ProviderLimits {
    fn new(rates: Vec<(&'static str, crate::ratelimit::Rate)>) -> Self {
        Self { rates: rates.into_iter().collect(), tat: HashMap::new(), epoch: std::time::Instant::now() }
    }

    /// Takes one call from every key's bucket, or none and the whole seconds to wait (as the
    /// providers' `retry_after`) when one is empty.
    fn take(&mut self, keys: &[(&'static str, String)]) -> Option<u64> {
        let now = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        let mut wait = 0;
        for (kind, key) in keys {
            let Some(rate) = self.rates.get(kind) else { continue };
            let tat = self.tat.get(key).copied().unwrap_or(0);
            wait = wait.max(tat - rate.provider_tolerance_us() - now);
        }
        if wait > 0 {
            return Some(u64::try_from(wait).unwrap_or(0).div_ceil(1_000_000));
        }
        for (kind, key) in keys {
            let Some(rate) = self.rates.get(kind) else { continue };
            let tat = self.tat.entry(key.clone()).or_insert(0);
            *tat = (*tat).max(now) + rate.interval_us();
        }
        None
    }
}

/// A server task that stops when the handle is dropped.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for a fake server");
        let addr = listener
            .local_addr()
            .expect("local address of the fake server");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `a=1&b=x%20y` → `{"a": "1", "b": "x y"}` (Telegram accepts form-encoded parameters).
fn parse_form(body: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), serde_json::Value::String(decode(v)))
        })
        .collect()
}

/// A JSON parameter as an integer, whether sent as a number or a string.
fn param_i64(params: &serde_json::Value, key: &str) -> Option<i64> {
    match params.get(key)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn param_bool(params: &serde_json::Value, key: &str) -> Option<bool> {
    match params.get(key)? {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) => Some(s == "true" || s == "1"),
        serde_json::Value::Number(n) => Some(n.as_i64() != Some(0)),
        _ => None,
    }
}

fn param_str(params: &serde_json::Value, key: &str) -> Option<String> {
    match params.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

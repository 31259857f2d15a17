//! Talking to Telegram, Discord and email, with one error type for all three.
//!
//! Every provider call returns `Result<_, ProviderError>`. The error carries a stable snake_case
//! `code` (stored on attempts, counted in metrics), a human `message` that never contains a
//! token, an invite link, an email address or a raw body, and a [`ErrorClass`] that tells the
//! delivery job what to do next. The table behind the classification is in `docs/PROVIDERS.md`.

pub mod discord;
pub mod email;
pub mod telegram;
pub mod webhook;

use std::time::Duration;

pub use discord::{AddOutcome, BotUser, Discord, Member, Role};
pub use email::Mailer;
pub use telegram::{BotInfo, MemberState, Telegram};

use crate::config::Config;

/// Per-request timeout of worker calls: long enough for a slow provider, short enough that a
/// hung connection does not pin a worker slot.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection establishment gets its own, shorter budget.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the caller should do with a failure (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network, timeout, 5xx, 429: try again on the schedule (or after `retry_after`).
    Transient,
    /// Bot not in the chat, missing rights, unknown guild/role, bad bot token: the merchant can
    /// fix it, so keep retrying on the schedule.
    Configuration,
    /// Only the buyer can fix it (blocked the bot, unknown user, invalid OAuth token): straight
    /// to manual review.
    MemberPermanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Configuration => "configuration",
            Self::MemberPermanent => "member_permanent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// Stable snake_case code, e.g. `rate_limited`, `bot_not_in_chat`, `user_blocked_bot`.
    pub code: String,
    /// Human text: no tokens, no URLs containing the bot token, no invite links, no emails.
    pub message: String,
    pub class: ErrorClass,
    /// Set from Telegram's `parameters.retry_after` or Discord's `Retry-After` / `retry_after`.
    pub retry_after: Option<Duration>,
    /// The provider's HTTP status (or SMTP reply code), when an answer came back at all.
    pub http_status: Option<u16>,
    /// Telegram's `parameters.migrate_to_chat_id`: the group became a supergroup with this id,
    /// which the delivery follows (`code` = `chat_migrated`).
    pub migrated_to_chat_id: Option<i64>,
}

impl ProviderError {
    pub fn new(code: &str, class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            class,
            retry_after: None,
            http_status: None,
            migrated_to_chat_id: None,
        }
    }

    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Transient, message)
    }

    pub fn configuration(code: &str, message: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Configuration, message)
    }

    pub fn member_permanent(code: &str, message: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::MemberPermanent, message)
    }

    /// Neither automation nor a fallback link is configured for the product.
    pub fn not_configured(what: &str) -> Self {
        Self::configuration("not_configured", format!("{what} is not configured"))
    }

    /// The buyer's platform identity needed for this delivery is absent or malformed.
    pub fn identity_missing(what: &str) -> Self {
        Self::member_permanent("identity_missing", format!("the buyer has no {what}"))
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Transient and configuration errors are retried on the schedule; member-permanent ones
    /// go to manual review.
    pub fn retryable(&self) -> bool {
        matches!(
            self.class,
            ErrorClass::Transient | ErrorClass::Configuration
        )
    }
}

/// The provider clients one process uses, built once from the configuration.
#[derive(Clone)]
pub struct Providers {
    /// Present when `HILT_TELEGRAM_BOT_TOKEN` is set.
    pub telegram: Option<Telegram>,
    /// Present when `HILT_DISCORD_BOT_TOKEN` is set.
    pub discord: Option<Discord>,
    pub mailer: Mailer,
}

impl Providers {
    /// Fails on a malformed API URL, SMTP URL or sender address (start-up errors).
    pub fn from_config(config: &Config) -> Result<Self, ProviderError> {
        Self::from_config_with_timeout(config, DEFAULT_TIMEOUT)
    }

    /// The same clients with another per-request timeout (diagnostics use a shorter one).
    pub fn from_config_with_timeout(
        config: &Config,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let telegram = match non_empty(config.telegram_bot_token.as_deref()) {
            Some(token) => Some(Telegram::new(token, &config.telegram_api_url, timeout)?),
            None => None,
        };
        let discord = match non_empty(config.discord_bot_token.as_deref()) {
            Some(token) => Some(Discord::new(token, &config.discord_api_url, timeout)?),
            None => None,
        };
        let mailer = Mailer::new(
            non_empty(config.smtp_url.as_deref()),
            &config.mail_from,
            &config.outbox_dir,
            timeout,
        )?;
        Ok(Self {
            telegram,
            discord,
            mailer,
        })
    }
}

impl Providers {
    /// The same clients, each call paced by the limits every process shares (`ratelimit`) at
    /// the configured rates (`HILT_TELEGRAM_RATE`, `HILT_DISCORD_RATE`, …).
    pub fn with_rate_limits(mut self, limiter: &crate::ratelimit::RateLimits, config: &Config) -> Self {
        self.telegram = self.telegram.map(|t| {
            t.with_rate_limits(limiter.clone(), config.telegram_rate, config.telegram_chat_rate, config.telegram_group_rate)
        });
        self.discord = self.discord.map(|d| d.with_rate_limits(limiter.clone(), config.discord_rate, config.discord_route_rate));
        self
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The reqwest client both HTTP providers use: rustls, bounded connect and total time.
fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .build()
        .map_err(|_| {
            ProviderError::configuration("client_setup", "could not build the HTTP client")
        })
}

/// A reqwest failure as a transient error, with the URL (which holds Telegram's bot token)
/// stripped and any remaining occurrence of `secret` masked.
fn network_error(provider: &str, err: reqwest::Error, secret: &str) -> ProviderError {
    let err = err.without_url();
    let what = if err.is_timeout() {
        "did not answer in time".to_owned()
    } else if err.is_connect() {
        "could not be reached".to_owned()
    } else {
        "connection failed".to_owned()
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let mut message = if detail.is_empty() {
        format!("{provider} {what}")
    } else {
        format!("{provider} {what} ({detail})")
    };
    if !secret.is_empty() {
        message = message.replace(secret, "***");
    }
    let code = if err.is_timeout() {
        "timeout"
    } else {
        "network"
    };
    ProviderError::transient(code, message)
}

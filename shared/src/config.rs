//! One configuration, parsed at start from the environment or matching `--flags` (SPEC §10).
//! A bad value stops the process with clap's message, which names the variable.

use std::{net::SocketAddr, path::PathBuf};

use crate::domain::{Period, duration::parse_list};

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// `sqlite://…` (embedded default) or `postgres://…` (scaled out).
    #[arg(global = true, long, env = "DATABASE_URL", value_name = "DATABASE_URL", default_value = "sqlite://hilt.db", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: String,

    /// PostgreSQL for the wake listener's one session connection (`LISTEN hilt_jobs`) in
    /// processes that run workers; `DATABASE_URL` when absent. Point it at PostgreSQL itself
    /// when `DATABASE_URL` goes through a transaction-mode pooler (PgBouncer): `LISTEN` through
    /// one subscribes a pooled server connection, whose notifications then reach other clients
    /// and break their queries.
    #[arg(global = true, long, env = "HILT_WAKE_DATABASE_URL", value_name = "HILT_WAKE_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub wake_database_url: Option<String>,

    /// The deployment's Redis. Accepted for SPEC §10; the job engine claims jobs from the
    /// database and does not use it (`docs/JOBS.md`).
    #[arg(global = true, long, env = "REDIS_URL", value_name = "REDIS_URL", hide_env_values = true, value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Longest a client may take to send its request headers, and again its body: a connection
    /// that sends slowly (slowloris) is closed (headers) or answered 408 (body) instead of held.
    #[arg(global = true, long, env = "HILT_READ_TIMEOUT", value_name = "HILT_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_period)]
    pub read_timeout: Period,

    /// Requests per second each API key (or admin token, or client address without one) may
    /// make, with bursts of as many; more answer 429 `rate_limited` with `Retry-After`. The
    /// default leaves room for a payment processor confirming over one admin token at peak.
    #[arg(global = true, long, env = "HILT_RATE_LIMIT", value_name = "HILT_RATE_LIMIT", default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,

    /// Failed authentications per minute a client address may make before further ones answer
    /// 429 `rate_limited` instead of 401 (guessing keys is throttled).
    #[arg(global = true, long, env = "HILT_AUTH_FAILURE_LIMIT", value_name = "HILT_AUTH_FAILURE_LIMIT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failure_limit: u32,

    #[arg(global = true, long = "listen", env = "HILT_LISTEN", value_name = "HILT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where `hilt worker` serves its own Prometheus metrics (`http://ADDR/metrics`: its job
    /// runs and provider attempts). Unset: a worker serves none; `hilt serve` and `hilt api`
    /// report through the API's `/metrics`.
    #[arg(global = true, long = "metrics-listen", env = "HILT_METRICS_LISTEN", value_name = "HILT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Base of verification URLs; defaults to `http://{HILT_LISTEN}`.
    #[arg(global = true, long, env = "HILT_PUBLIC_BASE_URL", value_name = "HILT_PUBLIC_BASE_URL", value_parser = parse_http_url)]
    pub public_base_url: Option<String>,

    /// Platform/operations token; `serve` generates and prints one when unset.
    #[arg(global = true, long, env = "HILT_ADMIN_TOKEN", value_name = "HILT_ADMIN_TOKEN", value_parser = parse_admin_token, hide_env_values = true)]
    pub admin_token: Option<String>,

    #[arg(global = true, long, env = "HILT_TELEGRAM_BOT_TOKEN", value_name = "HILT_TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub telegram_bot_token: Option<String>,

    #[arg(global = true, long, env = "HILT_TELEGRAM_API_URL", value_name = "HILT_TELEGRAM_API_URL", default_value = "https://api.telegram.org", value_parser = parse_http_url)]
    pub telegram_api_url: String,

    #[arg(global = true, long, env = "HILT_DISCORD_BOT_TOKEN", value_name = "HILT_DISCORD_BOT_TOKEN", hide_env_values = true)]
    pub discord_bot_token: Option<String>,

    #[arg(global = true, long, env = "HILT_DISCORD_API_URL", value_name = "HILT_DISCORD_API_URL", default_value = "https://discord.com/api", value_parser = parse_http_url)]
    pub discord_api_url: String,

    /// Calls to the Telegram bot per period, from every worker together (Bot API: about 30/s).
    #[arg(global = true, long, env = "HILT_TELEGRAM_RATE", value_name = "HILT_TELEGRAM_RATE", default_value = "30/1s")]
    pub telegram_rate: crate::ratelimit::Rate,

    /// Messages to one buyer's private chat per period (Bot API: about 1/s).
    #[arg(global = true, long, env = "HILT_TELEGRAM_CHAT_RATE", value_name = "HILT_TELEGRAM_CHAT_RATE", default_value = "1/1s")]
    pub telegram_chat_rate: crate::ratelimit::Rate,

    /// Messages to one group per period (Bot API: 20/min).
    #[arg(global = true, long, env = "HILT_TELEGRAM_GROUP_RATE", value_name = "HILT_TELEGRAM_GROUP_RATE", default_value = "20/1m")]
    pub telegram_group_rate: crate::ratelimit::Rate,

    /// Requests to Discord per period from the bot, every worker together (Discord's global limit: 50/s).
    #[arg(global = true, long, env = "HILT_DISCORD_RATE", value_name = "HILT_DISCORD_RATE", default_value = "50/1s")]
    pub discord_rate: crate::ratelimit::Rate,

    /// Requests per period on one Discord route of one guild until Discord's `X-RateLimit-*`
    /// headers announce the bucket's real limit.
    #[arg(global = true, long, env = "HILT_DISCORD_ROUTE_RATE", value_name = "HILT_DISCORD_ROUTE_RATE", default_value = "10/1s")]
    pub discord_route_rate: crate::ratelimit::Rate,

    #[arg(global = true, long, env = "HILT_SMTP_URL", value_name = "HILT_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    #[arg(global = true, long, env = "HILT_MAIL_FROM", value_name = "HILT_MAIL_FROM", default_value = "Hilt <receipts@hilt.invalid>")]
    pub mail_from: String,

    #[arg(global = true, long, env = "HILT_OUTBOX_DIR", value_name = "HILT_OUTBOX_DIR", default_value = "./outbox")]
    pub outbox_dir: PathBuf,

    /// Delays between delivery attempts; its length is the retry budget.
    #[arg(global = true, long, env = "HILT_RETRY_SCHEDULE", value_name = "HILT_RETRY_SCHEDULE", default_value = "1m,5m,15m,1h,3h,6h,12h", value_parser = parse_schedule)]
    pub retry_schedule: Schedule,

    #[arg(global = true, long, env = "HILT_RENEWAL_INTERVAL", value_name = "HILT_RENEWAL_INTERVAL", default_value = "1m", value_parser = parse_positive_period)]
    pub renewal_interval: Period,

    /// Seals buyers' Discord OAuth tokens at rest (32 bytes, standard base64: `openssl rand
    /// -base64 32`). Without it, payments carrying a token are refused (422), and a database
    /// that already holds tokens will not start.
    #[arg(global = true, long, env = "HILT_ENCRYPTION_KEY", value_name = "HILT_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<crate::secrets::EncryptionKey>,

    /// How long finished jobs, delivery attempts, events and webhook deliveries are kept; older
    /// ones are pruned by the workers a bounded batch at a time (`worker::retention`).
    #[arg(global = true, long, env = "HILT_RETENTION", value_name = "HILT_RETENTION", default_value = "90d", value_parser = parse_positive_period)]
    pub retention: Period,

    #[arg(global = true, long, env = "HILT_RENEWAL_REMINDERS", value_name = "HILT_RENEWAL_REMINDERS", default_value = "7d,3d,1d", value_parser = parse_schedule)]
    pub renewal_reminders: Schedule,

    #[arg(global = true, long, env = "HILT_RECEIPT_KEY_FILE", value_name = "HILT_RECEIPT_KEY_FILE", default_value = "./hilt-receipt-key")]
    pub receipt_key_file: PathBuf,

    /// Database connections this process may hold at once: the API, the workers, the sweeper and
    /// (on PostgreSQL, in processes that run workers) the wake listener share them.
    #[arg(global = true, long, env = "HILT_DB_MAX_CONNECTIONS", value_name = "HILT_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub db_max_connections: u32,

    #[arg(global = true, long, env = "HILT_WORKER_CONCURRENCY", value_name = "HILT_WORKER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_concurrency: u32,

    #[arg(global = true, long, env = "HILT_WEBHOOK_ALLOW_PRIVATE", value_name = "HILT_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub webhook_allow_private: bool,

    #[arg(global = true, long, env = "HILT_LOG_FORMAT", value_name = "HILT_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    pub log_format: String,

    /// Skip applying migrations at start (`hilt migrate` applies them).
    #[arg(global = true, long, env = "HILT_SKIP_MIGRATIONS", value_name = "HILT_SKIP_MIGRATIONS", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub skip_migrations: bool,
}

/// A list of delays, kept as a newtype so clap does not read it as repeated values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Period>);

impl Config {
    pub fn public_base_url(&self) -> String {
        match &self.public_base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Defaults for tests and tools: the same values an empty environment gives.
    pub fn for_database(database_url: &str) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Only::parse_from(["hilt"]).config;
        config.database_url = database_url.to_owned();
        config
    }
}

fn parse_database_url(s: &str) -> Result<String, String> {
    if s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(s.to_owned())
    } else {
        Err("must start with sqlite: or postgres://".into())
    }
}

fn parse_redis_url(s: &str) -> Result<String, String> {
    if s.starts_with("redis://") || s.starts_with("rediss://") {
        Ok(s.to_owned())
    } else {
        Err("must start with redis:// or rediss://".into())
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err("must be an http:// or https:// URL".into()),
    }
}

fn parse_admin_token(s: &str) -> Result<String, String> {
    if s.len() >= 16 {
        Ok(s.to_owned())
    } else {
        Err("must be at least 16 characters".into())
    }
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    parse_list(s).map(Schedule)
}

fn parse_positive_period(s: &str) -> Result<Period, String> {
    let p: Period = s.parse()?;
    if p.0.is_zero() { Err("must be longer than zero".into()) } else { Ok(p) }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::for_database("sqlite://x.db");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_base_url(), "http://127.0.0.1:8080");
        assert_eq!(c.retry_schedule.0.len(), 7);
        assert_eq!(c.worker_concurrency, 16);
        assert!(!c.webhook_allow_private);
    }
}

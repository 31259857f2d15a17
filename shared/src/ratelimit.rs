//! Provider rate limits shared by every process: each limit key (`telegram:bot`,
//! `telegram:chat:{id}`, `discord:global`, `discord:route:{route}:{guild}`) keeps a theoretical
//! arrival time (GCRA, as in redis-cell and Stripe's limiter) in Redis when `REDIS_URL` is set
//! (one Lua script per call, Redis's own clock) or in the database's `rate_slots` otherwise.
//!
//! A call *reserves* the next slot on all of its keys at once and sleeps until it: calls from
//! every worker leave at the limit's pace, and never faster. A job that would wait long
//! (`Telegram::admission`, `Discord::admission`) is rescheduled instead, without an attempt.
//! A 429 *holds* the keys until its `retry_after`: the provider's word wins over our estimate.
//! When the store cannot be reached the call goes anyway (the provider's 429 still protects us);
//! a limiter must not stop deliveries.

use std::{fmt, str::FromStr, time::Duration};

use crate::{
    domain::Period,
    storage::{Backend, Db},
};

/// A pace: at most `count` calls per `per`, in bursts of at most `burst` (1 ≤ burst ≤ count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Rate {
    /// `count` per `per`, bursts of `count` (a token bucket holding `count`).
    pub fn new(count: u32, per: Duration) -> Self {
        let count = count.max(1);
        Self { count, per, burst: count }
    }

    /// The pace for a provider's fixed windows (Discord's route buckets): calls evenly spaced,
    /// never in a burst (a burst at the end of one window and the start of the next would
    /// exceed the limit), over a window 10 % longer (at least 100 ms): calls that reach the
    /// provider out of order (measured: up to 100 ms apart on a loaded 2-core machine) still
    /// fit in a window that starts at its first call, which we cannot see.
    pub fn for_fixed_window(self) -> Self {
        let per = self.per + (self.per / 10).max(Duration::from_millis(100));
        Self { burst: 1, per, ..self }
    }

    /// Microseconds between two calls at the pace, rounded up so the pace never exceeds the rate.
    pub(crate) fn interval_us(self) -> i64 {
        let per = i64::try_from(self.per.as_micros()).unwrap_or(i64::MAX / 4);
        (per + i64::from(self.count) - 1) / i64::from(self.count)
    }

    /// How far ahead of the pace our calls may run, microseconds: a burst of `burst` less a
    /// sixth kept in reserve, so calls from several workers that reach the provider out of
    /// order (network jitter) still fit in its bucket.
    pub(crate) fn tolerance_us(self) -> i64 {
        let reserve = if self.burst > 1 { (self.burst / 6).max(1) } else { 0 };
        self.interval_us() * i64::from(self.burst.saturating_sub(1 + reserve))
    }

    /// How far ahead of the pace the provider lets a burst run (all of `burst`), microseconds.
    #[cfg(feature = "testing")]
    pub(crate) fn provider_tolerance_us(self) -> i64 {
        self.interval_us() * i64::from(self.burst.saturating_sub(1))
    }
}

/// `30/1s`, `20/1m`: calls per period (period as in `HILT_RETRY_SCHEDULE`).
impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, per) = s.trim().split_once('/').ok_or_else(|| format!("`{s}` is not calls/period, e.g. 30/1s"))?;
        let count: u32 = count.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("`{s}` must start with a positive whole number of calls"))?;
        let Period(per) = per.parse()?;
        if per.is_zero() {
            return Err(format!("`{s}` has an empty period"));
        }
        Ok(Rate::new(count, per))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.count, self.per.as_millis())
    }
}

/// One limit a call counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: String,
    pub rate: Rate,
}

impl Limit {
    pub fn new(key: impl Into<String>, rate: Rate) -> Self {
        Self { key: key.into(), rate }
    }
}

/// A limit key's state for /ops and /metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct KeyState {
    pub key: String,
    /// How long a call made now would wait for its slot, milliseconds.
    pub wait_ms: i64,
    /// How much of the burst is used, 0.0 (idle) to 1.0 (every call waits).
    pub fill: f64,
}

/// The shared limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    store: Store,
}

#[derive(Clone)]
enum Store {
    Redis(redis::aio::ConnectionManager),
    Db(Db),
}

const REDIS_PREFIX: &str = "hilt:rate:";

/// KEYS: the limit keys. ARGV[1]: `reserve`, `peek` or `hold`; ARGV[2]: for `hold`, how long
/// (µs); then per key its interval and tolerance (µs). Returns the wait before the slot, µs.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local start = now
for i = 1, #KEYS do
  local tat = tonumber(redis.call('HGET', KEYS[i], 't') or '0')
  tats[i] = tat
  local earliest = tat - tonumber(ARGV[2 + 2 * i])
  if earliest > start then start = earliest end
end
local mode = ARGV[1]
if mode == 'peek' then return start - now end
for i = 1, #KEYS do
  local tat
  if mode == 'hold' then
    tat = math.max(tats[i], now + tonumber(ARGV[2]) + tonumber(ARGV[2 + 2 * i]))
  else
    tat = math.max(tats[i], start) + tonumber(ARGV[1 + 2 * i])
  end
  redis.call('HSET', KEYS[i], 't', string.format('%d', tat), 'i', ARGV[1 + 2 * i], 'b', ARGV[2 + 2 * i])
  redis.call('PEXPIRE', KEYS[i], math.ceil((tat - now) / 1000) + 60000)
end
if mode == 'hold' then return 0 end
return start - now
";
#[derive(Clone, Copy)]
enum Mode {
    Reserve,
    Peek,
    Hold(Duration),
}

impl RateLimits {
    /// Redis when `redis_url` is given (fails if it cannot be reached at start), else `db`.
    pub async fn connect(redis_url: Option<&str>, db: &Db) -> Result<Self, redis::RedisError> {
        let store = match redis_url {
            Some(url) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(2);
                Store::Redis(redis::Client::open(url)?.get_connection_manager_with_config(config).await?)
            }
            None => return Ok(Self::database(db)),
        };
        Ok(Self { store })
    }

    /// Slots in the database's `rate_slots` (the embedded default).
    pub fn database(db: &Db) -> Self {
        Self { store: Store::Db(db.clone()) }
    }

    /// Where the slots live: `redis` or `database`.
    pub fn store_name(&self) -> &'static str {
        match self.store {
            Store::Redis(_) => "redis",
            Store::Db(_) => "database",
        }
    }

    /// Takes the next slot on every limit and waits for it; returns how long it waited.
    pub async fn acquire(&self, limits: &[Limit]) -> Duration {
        let wait = self.run(limits, Mode::Reserve).await;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let provider = if limits.first().is_some_and(|l| l.key.starts_with("discord")) { "discord" } else { "telegram" };
        crate::metrics::provider_call_wait(provider, wait);
        wait
    }

    /// How long a call made now would wait, without taking a slot.
    pub async fn peek(&self, limits: &[Limit]) -> Duration {
        self.run(limits, Mode::Peek).await
    }

    /// No call on these limits for `retry_after` (the provider answered 429).
    pub async fn hold(&self, limits: &[Limit], retry_after: Duration) {
        self.run(limits, Mode::Hold(retry_after)).await;
    }

    async fn run(&self, limits: &[Limit], mode: Mode) -> Duration {
        if limits.is_empty() {
            return Duration::ZERO;
        }
        let result = match &self.store {
            Store::Redis(conn) => redis_run(conn.clone(), limits, mode).await.map_err(|e| e.to_string()),
            Store::Db(db) => db_run(db, limits, mode).await.map_err(|e| e.to_string()),
        };
        match result {
            Ok(wait_us) => Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            Err(error) => {
                tracing::warn!(%error, store = self.store_name(), "provider rate limits unavailable; calling without them");
                Duration::ZERO
            }
        }
    }

    /// The busiest keys (at most `limit`, most booked first) from the shared store, with their
    /// wait and fill now (for /ops and /metrics).
    pub async fn states(&self, limit: usize) -> Result<Vec<KeyState>, String> {
        let now = now_us();
        let rows: Vec<(String, i64, i64, i64)> = match &self.store {
            Store::Redis(conn) => redis_states(conn.clone()).await.map_err(|e| e.to_string())?,
            Store::Db(db) => {
                let mut conn = db.conn().await.map_err(|e| e.to_string())?;
                sqlx::query_as("SELECT key, tat, interval_us, tolerance_us FROM rate_slots WHERE tat > $1 ORDER BY tat DESC LIMIT $2")
                    .bind(now - 60_000_000)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        let mut out: Vec<KeyState> = rows
            .into_iter()
            .map(|(key, tat, interval, tolerance)| KeyState {
                key,
                wait_ms: (tat - tolerance - now).max(0) / 1000,
                fill: ((tat - now).max(0) as f64 / (tolerance + interval).max(1) as f64).clamp(0.0, 1.0),
            })
            .collect();
        out.sort_by(|a, b| b.fill.total_cmp(&a.fill).then_with(|| a.key.cmp(&b.key)));
        out.truncate(limit);
        Ok(out)
    }

    /// Forgets keys idle for a minute (the database store; Redis expires them itself).
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        match &self.store {
            Store::Redis(_) => Ok(0),
            Store::Db(db) => {
                let mut conn = db.conn().await?;
                Ok(sqlx::query("DELETE FROM rate_slots WHERE tat < $1").bind(now_us() - 60_000_000).execute(&mut *conn).await?.rows_affected())
            }
        }
    }
}

/// Every live key in Redis (a SCAN; keys expire a minute after their last slot).
async fn redis_states(mut conn: redis::aio::ConnectionManager) -> redis::RedisResult<Vec<(String, i64, i64, i64)>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{REDIS_PREFIX}*")).arg("COUNT").arg(500).query_async(&mut conn).await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() >= 5_000 {
            break;
        }
    }
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let (t, i, b): (Option<i64>, Option<i64>, Option<i64>) = redis::cmd("HMGET").arg(&key).arg("t").arg("i").arg("b").query_async(&mut conn).await?;
        if let (Some(t), Some(i), Some(b)) = (t, i, b) {
            rows.push((key.trim_start_matches(REDIS_PREFIX).to_owned(), t, i, b));
        }
    }
    Ok(rows)
}

fn now_us() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(i64::MAX)
}

async fn redis_run(mut conn: redis::aio::ConnectionManager, limits: &[Limit], mode: Mode) -> redis::RedisResult<i64> {
    static SCRIPT_HANDLE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SCRIPT));
    let mut call = SCRIPT_HANDLE.prepare_invoke();
    for l in limits {
        call.key(format!("{REDIS_PREFIX}{}", l.key));
    }
    let (name, hold_us) = match mode {
        Mode::Reserve => ("reserve", 0),
        Mode::Peek => ("peek", 0),
        Mode::Hold(d) => ("hold", i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)),
    };
    call.arg(name).arg(hold_us);
    for l in limits {
        call.arg(l.rate.interval_us()).arg(l.rate.tolerance_us());
    }
    call.invoke_async(&mut conn).await
}

async fn tat_of(conn: &mut sqlx::AnyConnection, key: &str, lock: bool) -> Result<i64, sqlx::Error> {
    let sql = if lock { "SELECT tat FROM rate_slots WHERE key = $1 FOR UPDATE" } else { "SELECT tat FROM rate_slots WHERE key = $1" };
    Ok(sqlx::query_scalar::<_, i64>(sql).bind(key).fetch_optional(conn).await?.unwrap_or(0))
}

/// The same computation as [`SCRIPT`] in one transaction; rows are locked in key order on
/// PostgreSQL, and SQLite's `BEGIN IMMEDIATE` serialises writers.
async fn db_run(db: &Db, limits: &[Limit], mode: Mode) -> Result<i64, sqlx::Error> {
    let mut sorted: Vec<&Limit> = limits.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    if let Mode::Peek = mode {
        let mut conn = db.conn().await?;
        let now = now_us();
        let mut start = now;
        for l in &sorted {
            start = start.max(tat_of(&mut conn, &l.key, false).await? - l.rate.tolerance_us());
        }
        return Ok(start - now);
    }
    let mut tx = db.begin().await?;
    let lock = db.backend() == Backend::Postgres;
    let mut tats = Vec::with_capacity(sorted.len());
    for l in &sorted {
        sqlx::query("INSERT INTO rate_slots (key, tat, interval_us, tolerance_us) VALUES ($1, 0, 0, 0) ON CONFLICT (key) DO NOTHING")
            .bind(&l.key)
            .execute(&mut *tx)
            .await?;
        tats.push(tat_of(&mut tx, &l.key, lock).await?);
    }
    // Read the clock once the keys are ours: a time taken before waiting for their locks would
    // let this call's slot land closer to the previous one than the pace allows.
    let now = now_us();
    let start = sorted.iter().zip(&tats).fold(now, |start, (l, tat)| start.max(tat - l.rate.tolerance_us()));
    for (l, tat) in sorted.iter().zip(tats) {
        let new = match mode {
            Mode::Hold(d) => tat.max(now + i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4) + l.rate.tolerance_us()),
            _ => tat.max(start) + l.rate.interval_us(),
        };
        sqlx::query("UPDATE rate_slots SET tat = $1, interval_us = $2, tolerance_us = $3 WHERE key = $4")
            .bind(new)
            .bind(l.rate.interval_us())
            .bind(l.rate.tolerance_us())
            .bind(&l.key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(if let Mode::Hold(_) = mode { 0 } else { start - now })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_calls_per_period() {
        assert_eq!("30/1s".parse::<Rate>(), Ok(Rate { count: 30, per: Duration::from_secs(1), burst: 30 }));
        assert_eq!("20/1m".parse::<Rate>().map(|r| r.interval_us()), Ok(3_000_000));
        // 1 s / 30 rounds up: the pace never exceeds the rate.
        assert_eq!(Rate::new(30, Duration::from_secs(1)).interval_us(), 33_334);
        assert!("30".parse::<Rate>().is_err());
        assert!("0/1s".parse::<Rate>().is_err());
        assert!("5/0s".parse::<Rate>().is_err());
    }
}

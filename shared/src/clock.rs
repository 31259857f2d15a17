//! Time as the database stores it: unix milliseconds, rendered as RFC 3339 UTC.

use chrono::{DateTime, SecondsFormat, Utc};

pub type Millis = i64;

pub fn now_ms() -> Millis {
    Utc::now().timestamp_millis()
}

pub fn rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn rfc3339_opt(ms: Option<Millis>) -> Option<String> {
    ms.map(rfc3339)
}

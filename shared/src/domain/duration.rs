//! Duration strings as merchants and operators write them: `90s`, `12h`, `30d`, `500ms`.

use std::{fmt, str::FromStr, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Period {
    pub fn as_millis(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(Duration::from_millis(ms.max(0) as u64))
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h, d or w)"))?;
        let (number, unit) = s.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{s}` must start with a whole number"))?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(format!("`{s}` has unknown unit `{unit}` (use ms, s, m, h, d or w)")),
        };
        // Ten years is far beyond any membership period; bigger numbers are typos.
        let ms = n
            .checked_mul(unit_ms)
            .filter(|ms| *ms <= 10 * 366 * 86_400_000)
            .ok_or_else(|| format!("`{s}` is longer than ten years"))?;
        Ok(Self(Duration::from_millis(ms)))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms > 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// A comma-separated list such as `1m,5m,15m` (`HILT_RETRY_SCHEDULE`, `HILT_RENEWAL_REMINDERS`).
pub fn parse_list(s: &str) -> Result<Vec<Period>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_units_merchants_use() {
        for (text, ms) in [("90s", 90_000), ("12h", 43_200_000), ("30d", 2_592_000_000), ("5ms", 5)] {
            let p: Period = text.parse().expect(text);
            assert_eq!(p.as_millis(), ms);
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn rejects_missing_units_unknown_units_and_absurd_lengths() {
        for bad in ["", "30", "d", "3x", "-1d", "99999999999d", "1.5h"] {
            assert!(bad.parse::<Period>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn lists_parse_in_order() {
        let list = parse_list("1m,5m,15m").expect("valid list");
        assert_eq!(list.iter().map(|p| p.as_millis()).collect::<Vec<_>>(), [60_000, 300_000, 900_000]);
        assert!(parse_list("1m,,5m").is_err());
    }
}

//! Prices as decimal strings (never floats) and currency codes.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(String);

impl Amount {
    /// Non-negative decimal: up to 18 integer digits and 18 fraction digits, e.g. `9.99`, `0.5`, `100`.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let digits = |p: &str| !p.is_empty() && p.len() <= 18 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err("must be a decimal string such as \"9.99\"");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    /// ISO 4217 or token codes: 2–10 letters or digits, stored upper-case (`USD`, `USDC`, `SOL`).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if (2..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err("must be a currency code of 2 to 10 letters or digits, such as \"USDC\"")
        }
    }

    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_plain_non_negative_decimals() {
        for ok in ["0", "9.99", "100", "0.000001"] {
            assert!(Amount::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-1", "1.", ".5", "1e3", "12,50", " 1", "NaN"] {
            assert!(Amount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies_are_normalised_to_upper_case() {
        assert_eq!(Currency::parse("usdc").map(|c| c.0), Ok("USDC".to_owned()));
        assert!(Currency::parse("U").is_err());
        assert!(Currency::parse("US-D").is_err());
    }
}

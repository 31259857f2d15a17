//! Use cases that own a transaction. The API and the workers both call these.

pub mod delivery;
pub mod diagnostics;
pub mod memberships;
pub mod merchants;
pub mod oauth_tokens;
pub mod ops;
pub mod payments;
pub mod products;
pub mod proof_emails;
pub mod receipts;
pub mod renewals;
pub mod support;
pub mod webhooks;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{param}: {message}")]
    Invalid { param: String, message: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub fn invalid(param: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { param: param.to_owned(), message: message.into() }
}

/// Trims a required text field and checks its length in characters.
pub(crate) fn required_text(param: &str, value: &str, max: usize) -> Result<String, ServiceError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(param, "must not be empty"));
    }
    optional_text(param, Some(value), max).map(|v| v.unwrap_or_default())
}

/// Trims an optional text field; empty becomes absent.
pub(crate) fn optional_text(param: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ServiceError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.chars().count() > max => Err(invalid(param, format!("must be at most {max} characters"))),
        Some(v) if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            Err(invalid(param, "must not contain control characters"))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

pub(crate) fn http_url(param: &str, value: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(url) = optional_text(param, value, 2048)? else { return Ok(None) };
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match host {
        Some(h) if !h.is_empty() && !h.starts_with('/') && !url.contains(char::is_whitespace) => Ok(Some(url)),
        _ => Err(invalid(param, "must be an http:// or https:// URL")),
    }
}

pub(crate) fn email(param: &str, value: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(addr) = optional_text(param, value, 254)? else { return Ok(None) };
    let valid = addr.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
            && !addr.contains(char::is_whitespace) && addr.matches('@').count() == 1
    });
    if valid { Ok(Some(addr)) } else { Err(invalid(param, "must be an email address")) }
}

/// Discord snowflakes: strings of 1 to 20 digits.
pub(crate) fn discord_id(param: &str, value: Option<&str>) -> Result<Option<String>, ServiceError> {
    match value {
        None => Ok(None),
        Some(v) if (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(v.to_owned())),
        Some(_) => Err(invalid(param, "must be a string of digits (a Discord id)")),
    }
}

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

/// Trims a required text field and checks its length in characters (as sent).
pub fn required_text(param: &str, value: &str, max: usize) -> Result<String, ServiceError> {
    optional_text(param, Some(value), max)?.ok_or_else(|| invalid(param, "must not be empty"))
}

/// Trims an optional text field; empty becomes absent. The length counts what was sent.
pub fn optional_text(param: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ServiceError> {
    if value.is_some_and(|v| v.chars().count() > max) {
        return Err(invalid(param, format!("must be at most {max} characters")));
    }
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
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

/// The JSON Schemas of the validators above, for the OpenAPI document
/// (`#[schema(schema_with = …)]`), so a generated client and a fuzzer know what is accepted.
pub mod schema {
    use utoipa::openapi::{Object, ObjectBuilder, Type, schema::SchemaType};

    /// Control characters `optional_text` refuses (Unicode Cc but tab and line feed).
    const CONTROL: &str = "\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f";

    fn nullable(mut o: Object) -> Object {
        o.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
        o
    }

    /// `optional_text` (`required`: `required_text`) of at most `max` characters. Whitespace at
    /// either end is trimmed before the control characters are looked for.
    pub fn text(max: usize, required: bool) -> Object {
        let pattern = if required {
            format!("^\\s*[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*\\s*$")
        } else {
            format!("^\\s*[^{CONTROL}]*\\s*$")
        };
        ObjectBuilder::new().schema_type(Type::String).max_length(Some(max)).pattern(Some(pattern)).build()
    }

    /// A nullable single line (an invoice field): no tab or line break inside.
    fn nullable_line(max: usize) -> Object {
        let pattern = format!("^\\s*[^\\t\\n{CONTROL}]*\\s*$");
        nullable(ObjectBuilder::new().schema_type(Type::String).max_length(Some(max)).pattern(Some(pattern)).build())
    }

    pub fn nullable_line_64() -> Object {
        nullable_line(64)
    }

    pub fn nullable_line_128() -> Object {
        nullable_line(128)
    }

    pub fn nullable_line_200() -> Object {
        nullable_line(200)
    }

    pub fn required_text_200() -> Object {
        text(200, true)
    }

    pub fn required_text_500() -> Object {
        text(500, true)
    }

    /// A message body.
    pub fn required_text_10000() -> Object {
        text(10_000, true)
    }

    /// Nullable `optional_text`s: `null` or "" clears the field.
    pub fn nullable_text_200() -> Object {
        nullable(text(200, false))
    }

    pub fn nullable_text_2000() -> Object {
        nullable(text(2000, false))
    }

    pub fn nullable_text_10000() -> Object {
        nullable(text(10_000, false))
    }

    /// A buyer's handle (`@alice`): at most 100 characters, no spaces inside; nullable.
    pub fn nullable_handle() -> Object {
        nullable(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(100))
                .pattern(Some(format!("^\\s*[^\\s{CONTROL}]*\\s*$")))
                .build(),
        )
    }

    /// `email`: one `@`, a dotted domain, no spaces, at most 254 characters; blank or `null`
    /// is none.
    pub fn nullable_email() -> Object {
        let c = CONTROL;
        let address = format!("^\\s*[^\\s@{c}]+@[^\\s@.{c}][^\\s@{c}]*\\.[^\\s@{c}]*[^\\s@.{c}]\\s*$");
        nullable(ObjectBuilder::new().schema_type(Type::String).max_length(Some(254)).pattern(Some(format!("^\\s*$|{address}"))).build())
    }

    /// A `tx_signature`: 1 to 256 visible ASCII characters.
    pub fn tx_signature() -> Object {
        ObjectBuilder::new().schema_type(Type::String).pattern(Some("^\\s*[!-~]{1,256}\\s*$")).build()
    }

    /// Who may write a support message through the API (`null`: the merchant).
    pub fn message_author() -> Object {
        let values: [Option<&str>; 3] = [Some("merchant"), Some("buyer"), None];
        nullable(ObjectBuilder::new().enum_values(Some(values)).build())
    }
}

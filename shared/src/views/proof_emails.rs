//! Proof email requests as the API shows them on a receipt (`proof_emails`).

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    clock::{rfc3339, rfc3339_opt},
    storage::proof_emails::ProofEmailRow,
};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProofEmailView {
    /// `pem_…`; also the email's Message-ID (`<id@hilt>`) and its outbox file name.
    pub id: String,
    pub address: String,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    /// Send attempts so far.
    pub attempts: i64,
    /// `code: message` of the last failed attempt (no addresses, no server text).
    pub last_error: Option<String>,
    /// When the next attempt is due, while a retry is waiting.
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub created_at: String,
}

impl From<&ProofEmailRow> for ProofEmailView {
    fn from(p: &ProofEmailRow) -> Self {
        Self {
            id: p.id.clone(),
            address: p.address.clone(),
            status: p.status.clone(),
            attempts: p.attempts,
            last_error: match (&p.last_error_code, &p.last_error) {
                (Some(code), Some(message)) => Some(format!("{code}: {message}")),
                (Some(code), None) => Some(code.clone()),
                (None, message) => message.clone(),
            },
            next_attempt_at: rfc3339_opt(p.next_attempt_at),
            sent_at: rfc3339_opt(p.sent_at),
            created_at: rfc3339(p.created_at),
        }
    }
}

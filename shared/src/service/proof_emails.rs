//! Proof email (SPEC §8): `POST /v1/receipt/{id}/send-proof` records a request and queues a
//! `proof_email` job in one transaction; the job (worker `jobs::proof_email`) sends the
//! receipt's verification link once. The request row is the email's idempotency record.
//! [`record_send`] writes a send's outcome in the completer's transaction.

use serde::Deserialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{ServiceError, email, invalid};
use crate::{
    clock::now_ms,
    domain::{JobId, ProofEmailId},
    queue::{self, ProofEmailJob, Queue},
    storage::{
        jobs::Finish,
        memberships, payments,
        proof_emails::{self, ProofEmailRow},
        receipts::{self, ReceiptRow},
    },
    views::receipts::{payload_json, verification_url},
};

/// `{email?}`: without it the address is the invoice billing email, else the buyer's email.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SendProof {
    #[schema(schema_with = super::schema::nullable_email)]
    pub email: Option<String>,
}

/// Records the request and queues its job; the address is chosen and validated here, so a
/// request without one changes nothing (422 `email`).
pub async fn request(
    tx: &mut AnyConnection,
    merchant_id: &str,
    receipt_id: &str,
    body: SendProof,
) -> Result<(ProofEmailRow, JobId), ServiceError> {
    let given = email("email", body.email.as_deref())?;
    let now = now_ms();
    let receipt = receipts::get(&mut *tx, merchant_id, receipt_id).await?.ok_or(ServiceError::NotFound)?;
    let address = match given.or_else(|| receipt.billing_email.clone()) {
        Some(address) => Some(address),
        None => buyer_email(&mut *tx, &receipt).await?,
    };
    let Some(address) = address else {
        return Err(invalid(
            "email",
            "no email address is known for this receipt (no billing email, no buyer email): pass `email`",
        ));
    };
    let id = ProofEmailId::generate().to_string();
    let payload = serde_json::to_string(&ProofEmailJob { proof_email_id: id.clone() })
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let job_id = queue::enqueue(&mut *tx, Queue::ProofEmail, Some(merchant_id), Some(&receipt.membership_id), payload, now).await?;
    let row = ProofEmailRow {
        id,
        merchant_id: merchant_id.to_owned(),
        receipt_id: receipt.id.clone(),
        address,
        status: "queued".into(),
        attempts: 0,
        last_error_code: None,
        last_error: None,
        job_id: Some(job_id.to_string()),
        sending_until: None,
        next_attempt_at: Some(now),
        sent_at: None,
        created_at: now,
        updated_at: now,
    };
    proof_emails::insert(&mut *tx, &row).await?;
    Ok((row, job_id))
}

/// The buyer's email from the payment, else from the membership. A stored address that is not
/// well-formed (older data) is skipped rather than sent to.
async fn buyer_email(conn: &mut sqlx::AnyConnection, r: &ReceiptRow) -> Result<Option<String>, ServiceError> {
    let from_payment = payments::get(conn, None, &r.payment_id).await?.and_then(|p| p.payment.buyer_email);
    let candidate = match from_payment {
        Some(e) => Some(e),
        None => memberships::get_any(conn, &r.membership_id).await?.and_then(|m| m.email),
    };
    Ok(candidate.and_then(|e| email("email", Some(&e)).ok().flatten()))
}

/// A finished send, as the worker saw it: the request row with its outcome (`sent`, `queued`
/// again for a retry, or `failed`), the claim's attempt number, and the job's next step.
#[derive(Debug, Clone)]
pub struct ProofEmailSend {
    pub row: ProofEmailRow,
    pub attempt: i64,
    pub finish: Finish,
}

/// Writes a send's outcome at `now` (unix ms) inside the caller's transaction, unless the
/// claim `attempt` is no longer current (then nothing changes and a warning is logged).
/// The outcome is a fact even if the job's lease was lost, so whichever run holds the job now
/// finds the request finished and sends nothing. Returns the send's `finish`. Errors are
/// database errors.
pub async fn record_send(conn: &mut AnyConnection, now: i64, input: &ProofEmailSend) -> Result<Finish, ServiceError> {
    let row = ProofEmailRow { updated_at: now, ..input.row.clone() };
    if !proof_emails::finish_attempt(conn, &row, input.attempt).await? {
        tracing::warn!(proof_email.id = %row.id, attempt = input.attempt, "proof email claim was no longer current; outcome not recorded");
    }
    Ok(input.finish.clone())
}

/// What the proof email says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofMessage {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The email for a receipt: the verification link, the public proof page and the fingerprint.
pub fn compose(r: &ReceiptRow, public_base_url: &str) -> ProofMessage {
    let payload = payload_json(r);
    let field = |key: &str| payload.get(key).and_then(|v| v.as_str()).map(one_line).filter(|s| !s.is_empty());
    let merchant = field("merchant_name").unwrap_or_else(|| "the merchant".into());
    let product = field("product_name").unwrap_or_else(|| r.product_id.clone());
    let verify = verification_url(public_base_url, &r.id);
    let public = format!("{public_base_url}/v1/receipt/{}/public", r.id);
    let amount = format!("{} {}", r.amount, r.currency);
    let subject = format!("Your receipt from {merchant}");
    let text = format!(
        "Thank you for your purchase of {product} from {merchant} ({amount}).\n\n\
         Receipt: {id}\n\
         Transaction: {tx}\n\
         Fingerprint (SHA-256): {sha}\n\n\
         Verify this receipt: {verify}\n\
         View the signed proof: {public}\n\n\
         The receipt is signed with Ed25519; anyone can check it with the public keys at \
         {public_base_url}/.well-known/hilt-receipt-keys.\n",
        id = r.id,
        tx = one_line(&r.tx_signature),
        sha = r.payload_sha256,
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <p>Thank you for your purchase of <strong>{product}</strong> from {merchant} ({amount}).</p>\
         <table><tr><td>Receipt</td><td><code>{id}</code></td></tr>\
         <tr><td>Transaction</td><td><code>{tx}</code></td></tr>\
         <tr><td>Fingerprint (SHA-256)</td><td><code>{sha}</code></td></tr></table>\
         <p><a href=\"{verify_attr}\">Verify this receipt</a> · <a href=\"{public_attr}\">View the signed proof</a></p>\
         <p style=\"color:#666\">{verify}</p></body></html>",
        product = html_escape(&product),
        merchant = html_escape(&merchant),
        amount = html_escape(&amount),
        id = html_escape(&r.id),
        tx = html_escape(&r.tx_signature),
        sha = html_escape(&r.payload_sha256),
        verify_attr = html_escape(&verify),
        public_attr = html_escape(&public),
        verify = html_escape(&verify),
    );
    ProofMessage { subject, text, html }
}

/// Names from the signed payload go into a header: no line breaks or other control characters.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_headers_stay_on_one_line() {
        assert_eq!(html_escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(one_line("Acme\r\nBcc: x"), "Acme  Bcc: x");
    }
}

//! Payments and the flow after one confirms (SPEC §6), in one transaction.

use serde::Deserialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::secrets::EncryptionKey;
use super::{ServiceError, discord_id, email, invalid, optional_text};
use crate::{
    clock::{Millis, now_ms, rfc3339},
    domain::{
        Amount, Currency, DeliveryStatus, EventId, MembershipId, MembershipStatus, PaymentId, PaymentStatus,
        Platform, ReceiptId,
    },
    queue::{self, DeliveryJob, Trigger},
    signing::ReceiptSigner,
    storage::{
        Db, events, merchants,
        events::EventRow,
        is_unique_violation,
        memberships::{self, MembershipRow},
        payments::{self, PaymentRow, PaymentWithDelivery},
        products::{self, ProductRow},
        receipts::{self, ReceiptRow},
    },
    views::PaymentView,
};

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct BuyerInput {
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
    pub discord_user_id: Option<String>,
    /// Write-only: used to add the buyer to the guild; never returned.
    pub discord_access_token: Option<String>,
    pub handle: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePayment {
    pub product_id: String,
    /// Defaults to the product's price.
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub wallet: Option<String>,
    #[serde(default)]
    pub buyer: BuyerInput,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmPayment {
    #[schema(schema_with = super::schema::tx_signature)]
    pub tx_signature: String,
}

const MAX_METADATA_BYTES: usize = 16 * 1024;

/// `tokens` seals the buyer's Discord OAuth token (`HILT_ENCRYPTION_KEY`); a token without it is
/// refused (422), never stored in plaintext. Writes through `tx`; the caller commits.
pub async fn create(
    tx: &mut AnyConnection,
    tokens: Option<&EncryptionKey>,
    merchant_id: &str,
    input: CreatePayment,
) -> Result<PaymentWithDelivery, ServiceError> {
    let product = products::get(&mut *tx, merchant_id, &input.product_id)
        .await?
        .ok_or_else(|| invalid("product_id", "no such product"))?;
    let amount = match input.amount.as_deref() {
        Some(a) => Amount::parse(a).map_err(|m| invalid("amount", m))?.to_string(),
        None => product.price_amount.clone(),
    };
    let currency = match input.currency.as_deref() {
        Some(c) => Currency::parse(c).map_err(|m| invalid("currency", m))?.as_str().to_owned(),
        None => product.price_currency.clone(),
    };
    let buyer = input.buyer;
    if buyer.telegram_user_id.is_some_and(|id| id <= 0) {
        return Err(invalid("buyer.telegram_user_id", "must be a positive Telegram user id"));
    }
    let wallet = optional_text("wallet", input.wallet.as_deref(), 128)?;
    if wallet.as_deref().is_some_and(|w| w.contains(char::is_whitespace)) {
        return Err(invalid("wallet", "must not contain spaces"));
    }
    let metadata = match input.metadata {
        Some(m) => {
            let text = serde_json::Value::Object(m).to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(invalid("metadata", "must be at most 16 KiB of JSON"));
            }
            Some(text)
        }
        None => None,
    };
    let row = PaymentRow {
        id: PaymentId::generate().to_string(),
        merchant_id: merchant_id.to_owned(),
        product_id: product.id.clone(),
        amount,
        currency,
        status: PaymentStatus::Pending.as_str().to_owned(),
        wallet,
        tx_signature: None,
        buyer_email: email("buyer.email", buyer.email.as_deref())?,
        buyer_telegram_user_id: buyer.telegram_user_id,
        buyer_discord_user_id: discord_id("buyer.discord_user_id", buyer.discord_user_id.as_deref())?,
        buyer_discord_access_token: sealed_token(tokens, buyer.discord_access_token.as_deref())?,
        buyer_handle: optional_text("buyer.handle", buyer.handle.as_deref(), 100)?,
        metadata,
        membership_id: None,
        receipt_id: None,
        created_at: now_ms(),
        confirmed_at: None,
    };
    if buyer_key(&product, &row).is_none() {
        return Err(invalid(
            "buyer",
            "identify the buyer with a platform user id, a wallet or an email",
        ));
    }
    payments::insert(tx, &row).await?;
    Ok(PaymentWithDelivery { payment: row, delivery_status: None })
}

fn sealed_token(key: Option<&EncryptionKey>, token: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(token) = optional_text("buyer.discord_access_token", token, 512)? else { return Ok(None) };
    match key {
        Some(key) => Ok(Some(key.seal(&token))),
        None => Err(invalid(
            "buyer.discord_access_token",
            "this Hilt has no HILT_ENCRYPTION_KEY, so it cannot keep OAuth tokens; send discord_user_id alone, or ask the operator to set the key",
        )),
    }
}

pub async fn get(db: &Db, merchant_id: &str, id: &str) -> Result<PaymentWithDelivery, ServiceError> {
    payments::get(&mut *db.conn().await?, Some(merchant_id), id).await?.ok_or(ServiceError::NotFound)
}

/// The buyer is the platform user when known, else the wallet, else the email (SPEC §4).
fn buyer_key(product: &ProductRow, p: &PaymentRow) -> Option<String> {
    let platform_id = match Platform::parse(&product.platform) {
        Some(Platform::Telegram) => p.buyer_telegram_user_id.map(|id| format!("telegram:{id}")),
        Some(Platform::Discord) => p.buyer_discord_user_id.as_ref().map(|id| format!("discord:{id}")),
        None => None,
    };
    platform_id
        .or_else(|| p.wallet.as_ref().map(|w| format!("wallet:{w}")))
        .or_else(|| p.buyer_email.as_ref().map(|e| format!("email:{}", e.to_lowercase())))
}

/// Confirms a payment (the payment processor's call). Idempotent: confirming again with the
/// same transaction returns the same payment and creates nothing. Writes through `tx`; the
/// caller commits.
pub async fn confirm(
    tx: &mut AnyConnection,
    signer: &ReceiptSigner,
    id: &str,
    tx_signature: &str,
) -> Result<PaymentWithDelivery, ServiceError> {
    let tx_signature = tx_signature.trim();
    if tx_signature.is_empty() || tx_signature.len() > 256 || !tx_signature.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("tx_signature", "must be 1 to 256 visible ASCII characters"));
    }
    let current = payments::get(&mut *tx, None, id).await?.ok_or(ServiceError::NotFound)?;
    match PaymentStatus::parse(&current.payment.status) {
        Some(PaymentStatus::Pending) => {}
        Some(PaymentStatus::Confirmed) if current.payment.tx_signature.as_deref() == Some(tx_signature) => {
            return Ok(current);
        }
        Some(PaymentStatus::Confirmed) => {
            return Err(ServiceError::Conflict("payment is already confirmed with another tx_signature".into()));
        }
        _ => return Err(ServiceError::Conflict(format!("payment is {}", current.payment.status))),
    }
    let payment = current.payment;
    let now = now_ms();
    let membership_id = MembershipId::generate().to_string();
    let receipt_id = ReceiptId::generate().to_string();
    match payments::mark_confirmed(&mut *tx, &payment.id, tx_signature, &membership_id, &receipt_id, now).await {
        Ok(true) => {}
        // Another confirm won the race between our read and our write (PostgreSQL, read
        // committed: our update waited for it and then matched nothing): report what it did.
        Ok(false) => {
            let winner = payments::get(&mut *tx, None, id).await?.ok_or(ServiceError::NotFound)?;
            return if winner.payment.tx_signature.as_deref() == Some(tx_signature) {
                Ok(winner)
            } else {
                Err(ServiceError::Conflict("payment is already confirmed with another tx_signature".into()))
            };
        }
        Err(e) if is_unique_violation(&e) => {
            return Err(ServiceError::Conflict("tx_signature already confirmed another payment".into()));
        }
        Err(e) => return Err(e.into()),
    }

    let product = products::get(&mut *tx, &payment.merchant_id, &payment.product_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let membership = grant_access(&mut *tx, &product, &payment, &membership_id, now).await?;
    if membership.id != membership_id {
        sqlx::query("UPDATE payments SET membership_id = $1 WHERE id = $2")
            .bind(&membership.id)
            .bind(&payment.id)
            .execute(&mut *tx)
            .await?;
    }
    let merchant = merchants::get(&mut *tx, &payment.merchant_id).await?.ok_or(ServiceError::NotFound)?;
    let issue = ReceiptIssue { merchant_name: &merchant.name, product: &product, payment: &payment, membership_id: &membership.id, receipt_id: &receipt_id };
    issue_receipt(&mut *tx, signer, issue, tx_signature, now).await?;

    // The payment as this transaction left it (no second read).
    let confirmed = PaymentWithDelivery {
        payment: PaymentRow {
            status: PaymentStatus::Confirmed.as_str().to_owned(),
            tx_signature: Some(tx_signature.to_owned()),
            membership_id: Some(membership.id.clone()),
            receipt_id: Some(receipt_id.clone()),
            confirmed_at: Some(now),
            ..payment.clone()
        },
        delivery_status: Some(membership.delivery_status.clone()),
    };
    record_event(&mut *tx, &confirmed.payment.merchant_id, "payment.confirmed", Some(&membership.id), Some(&payment.id),
        serde_json::to_value(PaymentView::from(&confirmed)).unwrap_or_default(), now).await?;
    let job = DeliveryJob { membership_id: membership.id.clone(), payment_id: Some(payment.id.clone()), trigger: Trigger::Automatic };
    queue::enqueue_delivery(&mut *tx, &payment.merchant_id, &job, now).await?;
    Ok(confirmed)
}

/// Creates the membership, or extends it from max(now, current_period_end) for a renewal.
async fn grant_access(
    tx: &mut AnyConnection,
    product: &ProductRow,
    payment: &PaymentRow,
    new_id: &str,
    now: Millis,
) -> Result<MembershipRow, ServiceError> {
    let key = buyer_key(product, payment).ok_or_else(|| invalid("buyer", "payment has no buyer identity"))?;
    let period_end = |from: Millis| product.period_ms.map(|p| from.max(now) + p);
    let fresh = MembershipRow {
        id: new_id.to_owned(),
        merchant_id: payment.merchant_id.clone(),
        product_id: product.id.clone(),
        platform: product.platform.clone(),
        buyer_key: key.clone(),
        status: MembershipStatus::Active.as_str().to_owned(),
        wallet: payment.wallet.clone(),
        email: payment.buyer_email.clone(),
        telegram_user_id: payment.buyer_telegram_user_id,
        discord_user_id: payment.buyer_discord_user_id.clone(),
        discord_access_token: payment.buyer_discord_access_token.clone(),
        handle: payment.buyer_handle.clone(),
        label: None,
        current_period_end: period_end(now),
        last_payment_id: payment.id.clone(),
        notes: None,
        delivery_status: DeliveryStatus::Pending.as_str().to_owned(),
        delivery_attempts: 0,
        last_attempt_at: None,
        last_error_code: None,
        last_error_message: None,
        last_error_retryable: None,
        next_retry_at: None,
        invite_url: None,
        fallback_used: 0,
        delivered_at: None,
        support_ticket_id: None,
        cancel_at_period_end: 0,
        collection_state: "paid".to_owned(),
        created_at: now,
        updated_at: now,
        attempt_lock_job: None,
        attempt_lock_until: None,
    };
    if memberships::insert_if_absent(tx, &fresh).await? {
        return Ok(fresh);
    }
    let mut m = memberships::get_by_buyer(tx, &payment.merchant_id, &product.id, &key)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let previous_end = m.current_period_end;
    m.current_period_end = period_end(m.current_period_end.unwrap_or(now));
    m.status = MembershipStatus::Active.as_str().to_owned();
    m.last_payment_id = payment.id.clone();
    m.delivery_status = DeliveryStatus::Pending.as_str().to_owned();
    m.wallet = payment.wallet.clone().or(m.wallet);
    m.email = payment.buyer_email.clone().or(m.email);
    m.telegram_user_id = payment.buyer_telegram_user_id.or(m.telegram_user_id);
    m.discord_user_id = payment.buyer_discord_user_id.clone().or(m.discord_user_id);
    m.discord_access_token = payment.buyer_discord_access_token.clone().or(m.discord_access_token);
    m.handle = payment.buyer_handle.clone().or(m.handle);
    m.updated_at = now;
    memberships::update_for_payment(tx, &m).await?;
    let data = serde_json::json!({
        "membership_id": m.id,
        "payment_id": payment.id,
        "previous_period_end": previous_end.map(rfc3339),
        "current_period_end": m.current_period_end.map(rfc3339),
    });
    record_event(tx, &m.merchant_id, "membership.renewed", Some(&m.id), Some(&payment.id), data, now).await?;
    Ok(m)
}

struct ReceiptIssue<'a> {
    merchant_name: &'a str,
    product: &'a ProductRow,
    payment: &'a PaymentRow,
    membership_id: &'a str,
    receipt_id: &'a str,
}

/// Writes the receipt: its payload in RFC 8785 canonical form, signed with the current key
/// (SPEC §5 "Receipt proof format"). The payload is the whole proof; nothing merchant-only goes in.
async fn issue_receipt(
    tx: &mut AnyConnection,
    signer: &ReceiptSigner,
    issue: ReceiptIssue<'_>,
    tx_signature: &str,
    now: Millis,
) -> Result<(), ServiceError> {
    let ReceiptIssue { merchant_name, product, payment, membership_id, receipt_id } = issue;
    let payload = serde_json::json!({
        "type": RECEIPT_PAYLOAD_TYPE,
        "receipt_id": receipt_id,
        "merchant_id": payment.merchant_id,
        "merchant_name": merchant_name,
        "payment_id": payment.id,
        "membership_id": membership_id,
        "product_id": product.id,
        "product_name": product.name,
        "wallet": payment.wallet,
        "tx_signature": tx_signature,
        "amount": payment.amount,
        "currency": payment.currency,
        "issued_at": rfc3339(now),
    });
    let signed = signer.sign(&payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let row = ReceiptRow {
        id: receipt_id.to_owned(),
        merchant_id: payment.merchant_id.clone(),
        payment_id: payment.id.clone(),
        membership_id: membership_id.to_owned(),
        product_id: product.id.clone(),
        wallet: payment.wallet.clone(),
        tx_signature: tx_signature.to_owned(),
        amount: payment.amount.clone(),
        currency: payment.currency.clone(),
        issued_at: now,
        payload_sha256: signed.payload_sha256,
        payload: signed.canonical,
        key_id: Some(signed.key_id),
        signature: Some(signed.signature),
        invoice_number: None,
        billing_name: None,
        billing_email: None,
        billing_reference: None,
        invoice_notes: None,
    };
    receipts::insert(tx, &row).await?;
    Ok(())
}

/// The `type` member of every receipt payload: the version of its shape.
pub const RECEIPT_PAYLOAD_TYPE: &str = "hilt.receipt.v1";

pub async fn record_event(
    tx: &mut AnyConnection,
    merchant_id: &str,
    kind: &str,
    membership_id: Option<&str>,
    payment_id: Option<&str>,
    data: serde_json::Value,
    now: Millis,
) -> Result<(), ServiceError> {
    let mut event = EventRow {
        id: EventId::generate().to_string(),
        merchant_id: merchant_id.to_owned(),
        kind: kind.to_owned(),
        membership_id: membership_id.map(str::to_owned),
        payment_id: payment_id.map(str::to_owned),
        data: data.to_string(),
        created_at: now,
    };
    // A membership's events are strictly ordered in created_at (webhooks carry it as the order).
    match membership_id {
        Some(m) => event.created_at = events::insert_ordered(tx, &event, m, now).await?,
        None => events::insert(tx, &event).await?,
    }
    // Every event fans out to the merchant's subscribed webhook endpoints in the same transaction.
    super::webhooks::fan_out(tx, &event).await
}

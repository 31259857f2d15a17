//! The lifecycle of the single-use Telegram invite links Hilt hands out: at most one per
//! membership admits anyone, none outlives the access it grants, and each is recorded on the
//! attempt that created it before it is sent anywhere (so a later attempt, or the end of
//! access, can revoke it even when the attempt that sent it was lost).

use hilt_shared::{
    clock::now_ms,
    providers::Telegram,
    storage::{attempts, memberships::MembershipRow, products::ProductRow},
};

use super::AttemptError;
use crate::JobContext;

/// Telegram's longest useful validity for a link we send; a buyer who misses it gets a new one
/// from a retry or a manual retry.
const MAX_VALIDITY_MS: i64 = 7 * 86_400_000;

/// When a link for this membership must stop working (unix milliseconds): the end of its
/// access (period end + the product's grace), at most [`MAX_VALIDITY_MS`] from `now`.
pub fn expires_at(m: &MembershipRow, product: &ProductRow, now: i64) -> i64 {
    let cap = now + MAX_VALIDITY_MS;
    match m.current_period_end {
        Some(end) => (end + product.grace_period_ms).min(cap),
        None => cap,
    }
}

/// Revokes (Telegram Bot API `revokeChatInviteLink`) every link of the membership that may
/// still admit someone, marking each on its attempt as soon as Telegram confirms; returns how
/// many were revoked.
pub async fn revoke_all(ctx: &JobContext, tg: &Telegram, chat_id: i64, membership_id: &str) -> Result<usize, AttemptError> {
    let live = attempts::live_invite_links(&mut *ctx.db.conn().await?, membership_id).await?;
    for (attempt_id, link) in &live {
        tg.revoke_invite_link(chat_id, link).await?;
        attempts::mark_invite_link_revoked(&mut *ctx.db.conn().await?, attempt_id, now_ms()).await?;
    }
    Ok(live.len())
}

/// Creates the membership's new single-use link (`createChatInviteLink`, `member_limit` 1,
/// expiring with the access) and records it on `attempt_id` before returning it, so it is
/// never sent before a later attempt could find and revoke it.
pub async fn create(
    ctx: &JobContext,
    tg: &Telegram,
    chat_id: i64,
    m: &MembershipRow,
    product: &ProductRow,
    attempt_id: &str,
) -> Result<String, AttemptError> {
    let expire = chrono::DateTime::from_timestamp_millis(expires_at(m, product, now_ms())).unwrap_or_default();
    let link = tg.create_invite_link(chat_id, expire, &m.id).await?;
    attempts::set_invite_link(&mut *ctx.db.conn().await?, attempt_id, &link).await?;
    Ok(link)
}

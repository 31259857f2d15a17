//! Telegram Bot API through teloxide's types, with our own request path.
//!
//! Requests are built from teloxide's payload types (`CreateChatInviteLink`, `UnbanChatMember`,
//! …), sent with the `Bot`'s own reqwest client, token and API URL, and answers are decoded into
//! teloxide's output types and its `ApiError` table. We do not call `.send()`: teloxide sleeps
//! 10 s on every 5xx before returning (`DELAY_ON_SERVER_ERROR` in teloxide-core 0.13) and drops
//! the HTTP status and `error_code`, both of which a worker needs. Anything that still goes
//! through teloxide's own `.send()` can be classified with `ProviderError::from(RequestError)`.

use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use teloxide::{
    ApiError, Bot, RequestError,
    payloads::{
        BanChatMember, CreateChatInviteLink, GetChatMember, GetMe, RevokeChatInviteLink,
        SendMessage, UnbanChatMember,
    },
    requests::Payload,
    types::{ChatId, Recipient, UserId},
};

use super::{ErrorClass, ProviderError, http_client, network_error};
use crate::ratelimit::{Limit, Rate, RateLimits};

const PROVIDER: &str = "Telegram";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotInfo {
    pub id: i64,
    pub username: String,
}

/// A user's (or the bot's own) standing in a chat, from `getChatMember`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// `creator`, `administrator`, `member`, `restricted`, `left` or `kicked`.
    pub status: String,
    /// Only reported for administrators (and `true` for the creator).
    pub can_invite_users: Option<bool>,
    /// Only reported for administrators (and `true` for the creator).
    pub can_restrict_members: Option<bool>,
    /// Only reported for `restricted`: whether the restricted user is still in the chat.
    pub is_member: Option<bool>,
}

impl MemberState {
    /// Whether the user currently has access to the chat.
    pub fn is_present(&self) -> bool {
        match self.status.as_str() {
            "creator" | "administrator" | "member" => true,
            "restricted" => self.is_member.unwrap_or(true),
            _ => false,
        }
    }
}

/// Which kind of chat a call addresses: "chat not found" means a misconfigured group for a chat
/// call, and a buyer who never opened the bot for a direct message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Chat,
    DirectMessage,
}

#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
    api_url: String,
    limits: Option<Limits>,
}

/// The bot's limits (`HILT_TELEGRAM_RATE`, `_CHAT_RATE`, `_GROUP_RATE`), shared by every worker.
#[derive(Clone)]
struct Limits {
    limiter: RateLimits,
    bot: Rate,
    chat: Rate,
    group: Rate,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl Telegram {
    /// `api_url` is the Bot API base, e.g. `https://api.telegram.org` or a local fake
    /// `http://127.0.0.1:PORT`; requests go to `{api_url}/bot{token}/{method}`.
    pub fn new(token: &str, api_url: &str, timeout: Duration) -> Result<Self, ProviderError> {
        let api_url = api_url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&api_url).map_err(|_| {
            ProviderError::configuration("invalid_api_url", "HILT_TELEGRAM_API_URL is not a URL")
        })?;
        let bot = Bot::with_client(token, http_client(timeout)?).set_api_url(url);
        Ok(Self { bot, api_url, limits: None })
    }

    /// Paces every call through `limiter`: `bot` for all calls, and `chat` (a private chat) or
    /// `group` (chat ids below 0) for messages to one chat.
    pub fn with_rate_limits(mut self, limiter: RateLimits, bot: Rate, chat: Rate, group: Rate) -> Self {
        self.limits = Some(Limits { limiter, bot, chat, group });
        self
    }

    /// How long a call made now would wait for its slot under the bot's limit (zero without
    /// limits); a job that would wait long is better rescheduled than parked in a worker.
    pub async fn admission(&self) -> Duration {
        match &self.limits {
            Some(l) => l.limiter.peek(&[Limit::new("telegram:bot", l.bot)]).await,
            None => Duration::ZERO,
        }
    }

    /// The limits a call counts against: the bot's, and for a message its chat's.
    fn limits_of<P: Payload + Serialize>(l: &Limits, payload: &P) -> Vec<Limit> {
        let mut limits = vec![Limit::new("telegram:bot", l.bot)];
        if P::NAME.eq_ignore_ascii_case("sendMessage")
            && let Some(id) = serde_json::to_value(payload).ok().and_then(|v| v.get("chat_id")?.as_i64())
        {
            limits.push(Limit::new(format!("telegram:chat:{id}"), if id < 0 { l.group } else { l.chat }));
        }
        limits
    }

    /// The teloxide bot (same token, URL and client) for anything not wrapped here.
    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    pub async fn get_me(&self) -> Result<BotInfo, ProviderError> {
        let me = self.call(&GetMe::new(), Target::Chat).await?;
        Ok(BotInfo {
            id: me.user.id.0 as i64,
            username: me.user.username.unwrap_or_default(),
        })
    }

    /// `unbanChatMember` with `only_if_banned`: lifts an old removal, never removes a member.
    pub async fn lift_removal(&self, chat_id: i64, user_id: i64) -> Result<(), ProviderError> {
        let mut payload = UnbanChatMember::new(chat(chat_id), user(user_id)?);
        payload.only_if_banned = Some(true);
        self.call(&payload, Target::Chat).await?;
        Ok(())
    }

    /// A single-use (`member_limit` 1), expiring invite link. Never `exportChatInviteLink`,
    /// which would revoke the chat's primary link.
    pub async fn create_invite_link(
        &self,
        chat_id: i64,
        expire_at: chrono::DateTime<chrono::Utc>,
        name: &str,
    ) -> Result<String, ProviderError> {
        let mut payload = CreateChatInviteLink::new(chat(chat_id));
        payload.member_limit = Some(1);
        payload.expire_date = Some(expire_at);
        // The Bot API caps invite link names at 32 characters.
        payload.name = Some(name.chars().take(32).collect());
        let link = self.call(&payload, Target::Chat).await?;
        Ok(link.invite_link)
    }

    /// `revokeChatInviteLink`: the link admits no one any more. A link Telegram no longer
    /// accepts (expired, already revoked: `INVITE_HASH_EXPIRED`, `INVITE_HASH_INVALID`) counts
    /// as revoked.
    pub async fn revoke_invite_link(&self, chat_id: i64, link: &str) -> Result<(), ProviderError> {
        let payload = RevokeChatInviteLink::new(chat(chat_id), link);
        match self.call_value(&payload, Target::Chat).await {
            Err(e) if e.code == "invite_link_gone" => Ok(()),
            other => other.map(drop),
        }
    }

    /// A direct message to a buyer (who must have started the bot).
    pub async fn send_message(&self, user_id: i64, text: &str) -> Result<(), ProviderError> {
        let payload = SendMessage::new(chat(user_id), text);
        self.call_value(&payload, Target::DirectMessage).await?;
        Ok(())
    }

    /// Removal that allows rejoining later: `banChatMember` then `unbanChatMember` (without
    /// `only_if_banned`, so the ban is lifted and the user is left outside the chat).
    pub async fn remove_member(&self, chat_id: i64, user_id: i64) -> Result<(), ProviderError> {
        let uid = user(user_id)?;
        self.call(&BanChatMember::new(chat(chat_id), uid), Target::Chat)
            .await?;
        self.call(&UnbanChatMember::new(chat(chat_id), uid), Target::Chat)
            .await?;
        Ok(())
    }

    pub async fn get_chat_member(
        &self,
        chat_id: i64,
        user_id: i64,
    ) -> Result<MemberState, ProviderError> {
        // Decoded into our own small shape: status strings and rights flags are all we need,
        // and a new member kind in the Bot API must not break diagnostics.
        #[derive(Deserialize)]
        struct Wire {
            status: String,
            can_invite_users: Option<bool>,
            can_restrict_members: Option<bool>,
            is_member: Option<bool>,
        }
        let payload = GetChatMember::new(chat(chat_id), user(user_id)?);
        let value = self.call_value(&payload, Target::Chat).await?;
        let wire: Wire = serde_json::from_value(value).map_err(|_| invalid_response())?;
        let creator = wire.status == "creator";
        Ok(MemberState {
            can_invite_users: wire.can_invite_users.or(creator.then_some(true)),
            can_restrict_members: wire.can_restrict_members.or(creator.then_some(true)),
            is_member: wire.is_member,
            status: wire.status,
        })
    }

    async fn call<P>(&self, payload: &P, target: Target) -> Result<P::Output, ProviderError>
    where
        P: Payload + Serialize,
        P::Output: DeserializeOwned,
    {
        let value = self.call_value(payload, target).await?;
        serde_json::from_value(value).map_err(|_| invalid_response())
    }

    /// `POST {api_url}/bot{token}/{Method}` with a JSON body; the `result` on success.
    async fn call_value<P>(
        &self,
        payload: &P,
        target: Target,
    ) -> Result<serde_json::Value, ProviderError>
    where
        P: Payload + Serialize,
    {
        let token = self.bot.token();
        let limits = self.limits.as_ref().map(|l| (l, Self::limits_of(l, payload)));
        if let Some((l, limits)) = &limits {
            l.limiter.acquire(limits).await;
        }
        let result = self.send(payload, target, token).await;
        if let (Err(ProviderError { retry_after: Some(wait), .. }), Some((l, limits))) = (&result, &limits) {
            // Telegram's flood control names no scope: the bot and the chat both wait.
            l.limiter.hold(limits, *wait).await;
        }
        result
    }

    async fn send<P>(&self, payload: &P, target: Target, token: &str) -> Result<serde_json::Value, ProviderError>
    where
        P: Payload + Serialize,
    {
        let url = format!("{}/bot{}/{}", self.api_url, token, P::NAME);
        let response = self
            .bot
            .client()
            .post(url)
            .json(payload)
            .send()
            .await
            .map_err(|e| network_error(PROVIDER, e, token))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| network_error(PROVIDER, e, token))?;
        match serde_json::from_slice::<Envelope>(&body) {
            Ok(Envelope {
                ok: true,
                result: Some(result),
                ..
            }) => Ok(result),
            Ok(envelope) if !envelope.ok => Err(classify(
                status,
                envelope.error_code.unwrap_or(status),
                envelope.description.as_deref().unwrap_or(""),
                envelope.parameters.as_ref(),
                target,
            )),
            _ if status >= 500 => Err(server_error(status)),
            _ => Err(invalid_response().with_status(status)),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    result: Option<serde_json::Value>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

fn chat(id: i64) -> Recipient {
    Recipient::Id(ChatId(id))
}

fn user(id: i64) -> Result<UserId, ProviderError> {
    u64::try_from(id)
        .ok()
        .filter(|id| *id > 0)
        .map(UserId)
        .ok_or_else(|| {
            ProviderError::member_permanent(
                "identity_invalid",
                "the Telegram user id is not a positive integer",
            )
        })
}

fn invalid_response() -> ProviderError {
    ProviderError::transient(
        "invalid_response",
        "Telegram sent an answer that could not be read",
    )
}

fn server_error(status: u16) -> ProviderError {
    ProviderError::transient("provider_5xx", format!("Telegram answered HTTP {status}"))
        .with_status(status)
}

/// The classification table for Telegram (see docs/PROVIDERS.md). `description` is Telegram's
/// text; it names no user data, but we still only echo the known, fixed part of it.
fn classify(
    http_status: u16,
    error_code: u16,
    description: &str,
    parameters: Option<&Parameters>,
    target: Target,
) -> ProviderError {
    let status = if error_code != 0 {
        error_code
    } else {
        http_status
    };
    if let Some(seconds) = parameters.and_then(|p| p.retry_after) {
        return rate_limited(seconds).with_status(status);
    }
    if let Some(new_id) = parameters.and_then(|p| p.migrate_to_chat_id) {
        return chat_migrated(new_id).with_status(status);
    }
    if status == 429 {
        return rate_limited(0).with_status(status);
    }
    if status >= 500 {
        return server_error(status);
    }
    // teloxide's table names the well-known descriptions; the rest are matched by prefix.
    let api_error =
        serde_json::from_value::<ApiError>(serde_json::Value::String(description.to_owned()))
            .unwrap_or_else(|_| ApiError::Unknown(description.to_owned()));
    classify_api_error(&api_error, status, target).with_status(status)
}

fn rate_limited(seconds: u64) -> ProviderError {
    let retry_after = (seconds > 0).then(|| Duration::from_secs(seconds));
    ProviderError::transient(
        "rate_limited",
        format!("Telegram flood control: retry after {seconds} s"),
    )
    .with_retry_after(retry_after)
}

fn chat_migrated(new_id: i64) -> ProviderError {
    let mut e = ProviderError::configuration(
        "chat_migrated",
        format!("the group was upgraded to a supergroup with the new chat id {new_id}"),
    );
    e.migrated_to_chat_id = Some(new_id);
    e
}

fn classify_api_error(error: &ApiError, status: u16, target: Target) -> ProviderError {
    use ErrorClass::*;
    let (code, class, message): (&str, ErrorClass, &str) = match error {
        ApiError::InvalidToken => (
            "invalid_bot_token",
            Configuration,
            "Telegram rejected the bot token",
        ),
        ApiError::BotBlocked => (
            "user_blocked_bot",
            MemberPermanent,
            "the buyer blocked the bot",
        ),
        ApiError::CantInitiateConversation => (
            "user_not_started_bot",
            MemberPermanent,
            "the buyer has not started a conversation with the bot",
        ),
        ApiError::UserDeactivated => (
            "user_deactivated",
            MemberPermanent,
            "the buyer's Telegram account is deactivated",
        ),
        ApiError::CantTalkWithBots => (
            "identity_invalid",
            MemberPermanent,
            "the Telegram user id belongs to a bot",
        ),
        ApiError::UserNotFound => (
            "unknown_user",
            MemberPermanent,
            "Telegram does not know this user",
        ),
        ApiError::ChatNotFound | ApiError::GroupDeactivated => match target {
            Target::DirectMessage => (
                "user_not_started_bot",
                MemberPermanent,
                "the buyer's chat with the bot does not exist (never started the bot or wrong id)",
            ),
            Target::Chat => (
                "chat_not_found",
                Configuration,
                "the chat does not exist or the bot is not in it",
            ),
        },
        ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::BotKickedFromChannel => (
            "bot_not_in_chat",
            Configuration,
            "the bot is not a member of the chat",
        ),
        ApiError::NotEnoughRightsToRestrict
        | ApiError::NotEnoughRightsToPostMessages
        | ApiError::NotEnoughRightsToChangeChatPermissions
        | ApiError::NotEnoughRightsToManagePins
        | ApiError::NotEnoughRightsToPinMessage => (
            "missing_permissions",
            Configuration,
            "the bot lacks the admin rights this needs",
        ),
        ApiError::Unknown(text) => return classify_unknown(text, status, target),
        _ => (
            "provider_rejected",
            Configuration,
            "Telegram rejected the request",
        ),
    };
    ProviderError::new(code, class, message)
}

/// Descriptions teloxide does not name, matched case-insensitively by content then prefix.
fn classify_unknown(text: &str, status: u16, target: Target) -> ProviderError {
    let t = text.to_ascii_lowercase();
    let has = |s: &str| t.contains(s);
    if has("bot was blocked by the user") {
        return ProviderError::member_permanent("user_blocked_bot", "the buyer blocked the bot");
    }
    if has("bot can't initiate conversation") {
        return ProviderError::member_permanent(
            "user_not_started_bot",
            "the buyer has not started a conversation with the bot",
        );
    }
    if has("user is deactivated") {
        return ProviderError::member_permanent(
            "user_deactivated",
            "the buyer's Telegram account is deactivated",
        );
    }
    if has("participant_id_invalid")
        || has("user_id_invalid")
        || has("user not found")
        || has("invalid user_id")
    {
        return ProviderError::member_permanent("unknown_user", "Telegram does not know this user");
    }
    if has("invite_hash_expired") || has("invite_hash_invalid") {
        return ProviderError::configuration(
            "invite_link_gone",
            "the invite link has expired or was revoked",
        );
    }
    if has("can't remove chat owner") || has("user is an administrator of the chat") {
        return ProviderError::member_permanent(
            "member_is_admin",
            "the user is an owner or administrator of the chat and cannot be removed by the bot",
        );
    }
    if has("bot was kicked") || has("bot is not a member") || has("bot is not a participant") {
        return ProviderError::configuration(
            "bot_not_in_chat",
            "the bot is not a member of the chat",
        );
    }
    if has("not enough rights")
        || has("need administrator rights")
        || has("chat_admin_required")
        || has("have no rights")
    {
        return ProviderError::configuration(
            "missing_permissions",
            "the bot lacks the admin rights this needs",
        );
    }
    if has("chat not found") || has("peer_id_invalid") || has("chat_id_invalid") {
        return match target {
            Target::DirectMessage => ProviderError::member_permanent(
                "user_not_started_bot",
                "the buyer's chat with the bot does not exist (never started the bot or wrong id)",
            ),
            Target::Chat => ProviderError::configuration(
                "chat_not_found",
                "the chat does not exist or the bot is not in it",
            ),
        };
    }
    // Only reached without a status (teloxide's own `.send()`): its 5xx texts.
    if t.starts_with("internal server error")
        || t.starts_with("bad gateway")
        || t.starts_with("gateway timeout")
    {
        return ProviderError::transient("provider_5xx", "Telegram answered with a server error");
    }
    if status == 401 || t == "unauthorized" {
        return ProviderError::configuration(
            "invalid_bot_token",
            "Telegram rejected the bot token",
        );
    }
    if t.starts_with("forbidden") || status == 403 {
        return ProviderError::configuration("forbidden", "Telegram refused the request (403)");
    }
    ProviderError::configuration(
        "provider_rejected",
        format!("Telegram rejected the request ({status})"),
    )
}

/// For calls made through teloxide's own `.send()` (which has already slept 10 s on a 5xx and
/// dropped the status code).
impl From<RequestError> for ProviderError {
    fn from(err: RequestError) -> Self {
        match err {
            RequestError::Api(api) => classify_api_error(&api, 0, Target::Chat),
            RequestError::RetryAfter(seconds) => rate_limited(u64::from(seconds.seconds())),
            RequestError::MigrateToChatId(id) => chat_migrated(id.0),
            RequestError::Network(e) => {
                let e = std::sync::Arc::try_unwrap(e);
                match e {
                    Ok(e) => network_error(PROVIDER, e, ""),
                    Err(_) => ProviderError::transient("network", "Telegram could not be reached"),
                }
            }
            RequestError::InvalidJson { .. } => invalid_response(),
            RequestError::Io(_) => {
                ProviderError::transient("network", "I/O error talking to Telegram")
            }
        }
    }
}

//! A fake Telegram Bot API: `POST /bot{token}/{method}`, JSON or form parameters, answers
//! `{"ok":true,"result":…}` or `{"ok":false,"error_code":N,"description":"…","parameters":{…}}`
//! with the descriptions the real API uses.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::ratelimit::Rate;
use super::{Call, Failure, Script, Server, param_bool, param_i64, param_str, parse_form};

/// What the bot may do in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotRights {
    /// The bot is in the chat at all (false: "bot was kicked").
    pub is_member: bool,
    pub is_admin: bool,
    pub can_invite_users: bool,
    pub can_restrict_members: bool,
}

impl BotRights {
    /// Administrator with the rights delivery and revocation need.
    pub fn admin() -> Self {
        Self {
            is_member: true,
            is_admin: true,
            can_invite_users: true,
            can_restrict_members: true,
        }
    }

    /// A plain member: cannot create invite links or remove anyone.
    pub fn member() -> Self {
        Self {
            is_member: true,
            is_admin: false,
            can_invite_users: false,
            can_restrict_members: false,
        }
    }

    /// Kicked from (or never added to) the chat.
    pub fn absent() -> Self {
        Self {
            is_member: false,
            is_admin: false,
            can_invite_users: false,
            can_restrict_members: false,
        }
    }
}

impl Default for BotRights {
    fn default() -> Self {
        Self::admin()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteLink {
    pub link: String,
    pub name: Option<String>,
    pub member_limit: Option<i64>,
    pub expire_date: Option<i64>,
    pub creates_join_request: bool,
    /// How many users joined through it.
    pub uses: i64,
    /// Users who joined through it (Telegram counts `member_limit` against those still in
    /// the chat, so a link frees up again when its user leaves).
    pub joined: Vec<i64>,
    pub is_revoked: bool,
}

struct Chat {
    rights: BotRights,
    /// user id → `creator` | `administrator` | `member` | `restricted` | `left` | `kicked`.
    members: HashMap<i64, String>,
    links: Vec<InviteLink>,
}

#[derive(Default, Clone, Copy)]
struct User {
    started: bool,
    blocked: bool,
}

struct State {
    token: String,
    bot_id: i64,
    bot_username: String,
    chats: HashMap<i64, Chat>,
    users: HashMap<i64, User>,
    dms: Vec<(i64, String)>,
    calls: Vec<Call>,
    script: Script,
    next_message_id: i64,
    /// Groups upgraded to supergroups: old chat id → new chat id.
    migrated: HashMap<i64, i64>,
    /// The Bot API's limits, when enforced: calls over them answer 429 and are counted.
    limits: Option<super::ProviderLimits>,
    rate_limited: usize,
}

/// The fake server; stops when dropped.
pub struct FakeTelegram {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeTelegram {
    /// Binds `127.0.0.1:0` with a fresh random bot token.
    pub async fn start() -> Self {
        let bot_id = 7_000_000_000 + i64::from(rand::random::<u16>());
        let token = format!("{bot_id}:AA{}", crate::domain::random_token(33));
        let state = Arc::new(Mutex::new(State {
            token,
            bot_id,
            bot_username: "hilt_test_bot".into(),
            chats: HashMap::new(),
            users: HashMap::new(),
            dms: Vec::new(),
            calls: Vec::new(),
            script: Script::default(),
            next_message_id: 1,
            migrated: HashMap::new(),
            limits: None,
            rate_limited: 0,
        }));
        let shared = state.clone();
        let router =
            axum::Router::new().fallback(move |req: Request<Body>| handle(shared.clone(), req));
        Self {
            server: Server::start(router).await,
            state,
        }
    }

    /// The value for `HILT_TELEGRAM_API_URL`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The value for `HILT_TELEGRAM_BOT_TOKEN` (any other token answers 401 Unauthorized).
    pub fn token(&self) -> String {
        self.lock().token.clone()
    }

    pub fn bot_id(&self) -> i64 {
        self.lock().bot_id
    }

    pub fn bot_username(&self) -> String {
        self.lock().bot_username.clone()
    }

    /// A group/channel with the bot in it with these rights (replaces an existing chat's rights).
    pub fn add_chat(&self, chat_id: i64, rights: BotRights) {
        let mut s = self.lock();
        let chat = s.chats.entry(chat_id).or_insert_with(|| Chat {
            rights,
            members: HashMap::new(),
            links: Vec::new(),
        });
        chat.rights = rights;
    }

    /// The group `old` was upgraded to the supergroup `new` (which keeps its members, links and
    /// the bot's rights): calls on `old` now fail as Telegram's do, naming `new` in
    /// `parameters.migrate_to_chat_id`.
    pub fn migrate_chat(&self, old: i64, new: i64) {
        let mut s = self.lock();
        if let Some(chat) = s.chats.remove(&old) {
            s.chats.insert(new, chat);
        }
        s.migrated.insert(old, new);
    }

    pub fn set_bot_rights(&self, chat_id: i64, rights: BotRights) {
        self.add_chat(chat_id, rights);
    }

    /// A user who has started the bot (DMs work).
    pub fn add_user(&self, user_id: i64) {
        self.lock().users.insert(
            user_id,
            User {
                started: true,
                blocked: false,
            },
        );
    }

    /// A user Telegram knows who never started the bot (DMs fail with "can't initiate conversation").
    pub fn add_user_not_started(&self, user_id: i64) {
        self.lock().users.insert(
            user_id,
            User {
                started: false,
                blocked: false,
            },
        );
    }

    /// The user blocked the bot (DMs fail with "bot was blocked by the user").
    pub fn block_bot(&self, user_id: i64) {
        self.lock().users.entry(user_id).or_default().blocked = true;
    }

    /// The user unblocked the bot: DMs reach them again.
    pub fn unblock_bot(&self, user_id: i64) {
        self.lock().users.entry(user_id).or_default().blocked = false;
    }

    /// Puts a user in a chat with a status (`member`, `administrator`, `creator`, `restricted`,
    /// `left`, `kicked`). The user becomes known to Telegram (not started unless added so).
    pub fn add_member(&self, chat_id: i64, user_id: i64, status: &str) {
        let mut s = self.lock();
        s.users.entry(user_id).or_default();
        if let Some(chat) = s.chats.get_mut(&chat_id) {
            chat.members.insert(user_id, status.to_owned());
        }
    }

    /// The user joins through one of the chat's invite links, as Telegram decides: false when
    /// the link is unknown, revoked or expired, when as many users as its `member_limit` who
    /// joined through it are still in the chat, or when the user is banned.
    pub fn join_with_link(&self, chat_id: i64, user_id: i64, link: &str) -> bool {
        let mut s = self.lock();
        s.users.entry(user_id).or_default();
        let Some(chat) = s.chats.get_mut(&chat_id) else {
            return false;
        };
        if chat.members.get(&user_id).map(String::as_str) == Some("kicked") {
            return false;
        }
        let members = &chat.members;
        let present = |u: &i64| matches!(members.get(u).map(String::as_str), Some("member" | "administrator" | "creator" | "restricted"));
        let Some(l) = chat.links.iter().find(|l| l.link == link) else {
            return false;
        };
        let expired = l.expire_date.is_some_and(|at| at <= chrono::Utc::now().timestamp());
        let full = l.member_limit.is_some_and(|m| l.joined.iter().filter(|u| present(u)).count() as i64 >= m);
        if l.is_revoked || expired || full {
            return false;
        }
        if let Some(l) = chat.links.iter_mut().find(|l| l.link == link) {
            l.uses += 1;
            l.joined.push(user_id);
        }
        chat.members.insert(user_id, "member".into());
        true
    }

    pub fn member_status(&self, chat_id: i64, user_id: i64) -> Option<String> {
        self.lock()
            .chats
            .get(&chat_id)?
            .members
            .get(&user_id)
            .cloned()
    }

    pub fn is_banned(&self, chat_id: i64, user_id: i64) -> bool {
        self.member_status(chat_id, user_id).as_deref() == Some("kicked")
    }

    /// The next call of `method` (case-insensitive; `"*"` for any method) answers `failure`.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.fail_next_n(method, 1, failure);
    }

    pub fn fail_next_n(&self, method: &str, times: usize, failure: Failure) {
        self.lock().script.push(method, times, failure);
    }

    /// While down, every call answers 502 Bad Gateway (as Telegram's front end does).
    pub fn set_down(&self, down: bool) {
        self.lock().script.down = down.then_some(Failure::Status(502));
    }

    /// Calls of one method (case-insensitive), oldest first.
    /// Enforces Telegram's limits from now on: `bot` over every call, and for `sendMessage`
    /// `chat` per private chat and `group` per group (chat id below 0). A call over a limit
    /// answers 429 `Too Many Requests: retry after N` with `parameters.retry_after` and is counted.
    pub fn enforce_rate_limits(&self, bot: Rate, chat: Rate, group: Rate) {
        self.lock().limits = Some(super::ProviderLimits::new(vec![("bot", bot), ("chat", chat), ("group", group)]));
    }

    /// Calls answered 429 because they broke an enforced limit.
    pub fn rate_limited_calls(&self) -> usize {
        self.lock().rate_limited
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let method = method.to_ascii_lowercase();
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Texts of the direct messages the bot sent to a user.
    pub fn dms_to(&self, user_id: i64) -> Vec<String> {
        self.lock()
            .dms
            .iter()
            .filter(|(u, _)| *u == user_id)
            .map(|(_, t)| t.clone())
            .collect()
    }

    pub fn invite_links(&self, chat_id: i64) -> Vec<InviteLink> {
        self.lock()
            .chats
            .get(&chat_id)
            .map(|c| c.links.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = axum::body::to_bytes(req.into_body(), 10 << 20)
        .await
        .unwrap_or_default();

    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let (Some(bot_segment), Some(method)) = (segments.next(), segments.next()) else {
        return error(404, "Not Found");
    };
    let Some(token) = bot_segment.strip_prefix("bot") else {
        return error(404, "Not Found");
    };
    let method = method.trim_end_matches('/').to_ascii_lowercase();

    let mut params = serde_json::Map::new();
    if let Some(q) = &query {
        params.extend(parse_form(q.as_bytes()));
    }
    if is_json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
            params.extend(map);
        }
    } else if !body.is_empty() {
        params.extend(parse_form(&body));
    }
    let params = Value::Object(params);

    let failure = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.calls.push(Call {
            method: method.clone(),
            params: params.clone(),
        });
        if token != s.token {
            return error(401, "Unauthorized");
        }
        let chat_id = params.get("chat_id").and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
        let over = s.limits.as_mut().and_then(|limits| {
            let mut keys = vec![("bot", "bot".to_owned())];
            if let (true, Some(id)) = (method == "sendmessage", chat_id) {
                keys.push((if id < 0 { "group" } else { "chat" }, format!("chat:{id}")));
            }
            limits.take(&keys)
        });
        if let Some(retry_after) = over {
            s.rate_limited += 1;
            return scripted(Failure::TooManyRequests { retry_after });
        }
        s.script.take(&method)
    };
    match failure {
        Some(Failure::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(failure) => return scripted(failure),
        None => {}
    }
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    dispatch(&mut s, &method, &params)
}

fn scripted(failure: Failure) -> Response {
    match failure {
        Failure::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {retry_after}"),
                "parameters": { "retry_after": retry_after },
            })),
        )
            .into_response(),
        Failure::Api {
            status, message, ..
        } => error(status, &message),
        Failure::Status(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html><body><h1>{status}</h1></body></html>"),
        )
            .into_response(),
        Failure::UnknownMember => error(400, "Bad Request: PARTICIPANT_ID_INVALID"),
        Failure::Slow(_) => error(500, "Internal Server Error"),
    }
}

fn ok(result: Value) -> Response {
    axum::Json(json!({ "ok": true, "result": result })).into_response()
}

fn error(status: u16, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({ "ok": false, "error_code": status, "description": description })),
    )
        .into_response()
}

fn user_json(id: i64, is_bot: bool, username: Option<&str>) -> Value {
    let mut user = json!({ "id": id, "is_bot": is_bot, "first_name": if is_bot { "Hilt Bot" } else { "Buyer" } });
    if let Some(u) = username {
        user["username"] = json!(u);
    }
    user
}

fn member_json(user: Value, status: &str, rights: Option<BotRights>) -> Value {
    match status {
        "creator" => json!({ "status": "creator", "user": user, "is_anonymous": false }),
        "administrator" => {
            let r = rights.unwrap_or_else(BotRights::admin);
            json!({
                "status": "administrator", "user": user, "can_be_edited": false, "is_anonymous": false,
                "can_manage_chat": true, "can_delete_messages": true, "can_manage_video_chats": true,
                "can_restrict_members": r.can_restrict_members, "can_promote_members": false,
                "can_change_info": true, "can_invite_users": r.can_invite_users,
                "can_post_stories": false, "can_edit_stories": false, "can_delete_stories": false,
                "can_pin_messages": true, "can_manage_topics": false,
            })
        }
        "restricted" => json!({
            "status": "restricted", "user": user, "until_date": 0, "is_member": true,
            "can_send_messages": false, "can_send_audios": false, "can_send_documents": false,
            "can_send_photos": false, "can_send_videos": false, "can_send_video_notes": false,
            "can_send_voice_notes": false, "can_send_polls": false, "can_send_other_messages": false,
            "can_add_web_page_previews": false, "can_change_info": false, "can_invite_users": false,
            "can_pin_messages": false, "can_manage_topics": false,
        }),
        "kicked" => json!({ "status": "kicked", "user": user, "until_date": 0 }),
        other => json!({ "status": other, "user": user }),
    }
}

const NO_CHAT: &str = "Bad Request: chat not found";
const KICKED: &str = "Forbidden: bot was kicked from the supergroup chat";
const NO_RESTRICT: &str = "Bad Request: not enough rights to restrict/unrestrict chat member";

fn dispatch(s: &mut State, method: &str, params: &Value) -> Response {
    let chat_id = param_i64(params, "chat_id");
    let user_id = param_i64(params, "user_id");
    match method {
        "getme" => ok(json!({
            "id": s.bot_id, "is_bot": true, "first_name": "Hilt Bot", "username": s.bot_username,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false, "has_main_web_app": false,
        })),
        "sendmessage" => {
            let Some(chat_id) = chat_id else {
                return error(400, "Bad Request: chat_id is empty");
            };
            let Some(text) = param_str(params, "text").filter(|t| !t.is_empty()) else {
                return error(400, "Bad Request: message text is empty");
            };
            let chat = if s.chats.contains_key(&chat_id) {
                if !s.chats[&chat_id].rights.is_member {
                    return error(403, KICKED);
                }
                json!({ "id": chat_id, "type": "supergroup", "title": "Chat" })
            } else {
                match s.users.get(&chat_id) {
                    None => return error(400, NO_CHAT),
                    Some(u) if u.blocked => {
                        return error(403, "Forbidden: bot was blocked by the user");
                    }
                    Some(u) if !u.started => {
                        return error(
                            403,
                            "Forbidden: bot can't initiate conversation with a user",
                        );
                    }
                    Some(_) => {}
                }
                s.dms.push((chat_id, text.clone()));
                json!({ "id": chat_id, "type": "private", "first_name": "Buyer" })
            };
            let message_id = s.next_message_id;
            s.next_message_id += 1;
            ok(json!({
                "message_id": message_id,
                "date": chrono::Utc::now().timestamp(),
                "chat": chat,
                "from": user_json(s.bot_id, true, Some(&s.bot_username)),
                "text": text,
            }))
        }
        "createchatinvitelink"
        | "revokechatinvitelink"
        | "exportchatinvitelink"
        | "unbanchatmember"
        | "banchatmember"
        | "getchatmember" => {
            let Some(chat_id) = chat_id else {
                return error(400, "Bad Request: chat_id is empty");
            };
            if let Some(new) = s.migrated.get(&chat_id) {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "ok": false, "error_code": 400,
                        "description": "Bad Request: group chat was upgraded to a supergroup chat",
                        "parameters": { "migrate_to_chat_id": new } })),
                )
                    .into_response();
            }
            let bot = user_json(s.bot_id, true, Some(&s.bot_username));
            let bot_id = s.bot_id;
            let known = user_id.is_some_and(|u| s.users.contains_key(&u));
            let Some(chat) = s.chats.get_mut(&chat_id) else {
                return error(400, NO_CHAT);
            };
            if !chat.rights.is_member {
                return error(403, KICKED);
            }
            let rights = chat.rights;
            match method {
                "createchatinvitelink" => {
                    if !rights.is_admin || !rights.can_invite_users {
                        return error(400, "Bad Request: not enough rights to create invite link");
                    }
                    let member_limit = param_i64(params, "member_limit");
                    let creates_join_request =
                        param_bool(params, "creates_join_request").unwrap_or(false);
                    if member_limit.is_some() && creates_join_request {
                        return error(
                            400,
                            "Bad Request: member_limit can't be specified for links requiring administrator approval",
                        );
                    }
                    if member_limit.is_some_and(|m| !(1..=99_999).contains(&m)) {
                        return error(400, "Bad Request: USAGE_LIMIT_INVALID");
                    }
                    let link = InviteLink {
                        link: format!("https://t.me/+{}", crate::domain::random_token(16)),
                        name: param_str(params, "name"),
                        member_limit,
                        expire_date: param_i64(params, "expire_date"),
                        creates_join_request,
                        uses: 0,
                        joined: Vec::new(),
                        is_revoked: false,
                    };
                    chat.links.push(link.clone());
                    let mut result = json!({
                        "invite_link": link.link, "creator": bot,
                        "creates_join_request": creates_join_request, "is_primary": false, "is_revoked": false,
                    });
                    if let Some(n) = &link.name {
                        result["name"] = json!(n);
                    }
                    if let Some(m) = member_limit {
                        result["member_limit"] = json!(m);
                    }
                    if let Some(e) = link.expire_date {
                        result["expire_date"] = json!(e);
                    }
                    ok(result)
                }
                "revokechatinvitelink" => {
                    if !rights.is_admin || !rights.can_invite_users {
                        return error(400, "Bad Request: not enough rights to manage chat invite link");
                    }
                    let wanted = param_str(params, "invite_link").unwrap_or_default();
                    let Some(link) = chat.links.iter_mut().find(|l| l.link == wanted) else {
                        return error(400, "Bad Request: INVITE_HASH_INVALID");
                    };
                    if link.expire_date.is_some_and(|at| at <= chrono::Utc::now().timestamp()) {
                        return error(400, "Bad Request: INVITE_HASH_EXPIRED");
                    }
                    link.is_revoked = true;
                    let mut result = json!({
                        "invite_link": link.link, "creator": bot, "creates_join_request": link.creates_join_request,
                        "is_primary": false, "is_revoked": true,
                    });
                    if let Some(m) = link.member_limit {
                        result["member_limit"] = json!(m);
                    }
                    ok(result)
                }
                "exportchatinvitelink" => {
                    if !rights.is_admin || !rights.can_invite_users {
                        return error(
                            400,
                            "Bad Request: not enough rights to export chat invite link",
                        );
                    }
                    ok(json!(format!(
                        "https://t.me/+{}",
                        crate::domain::random_token(16)
                    )))
                }
                "getchatmember" => {
                    let Some(user_id) = user_id else {
                        return error(400, "Bad Request: user_id is empty");
                    };
                    if user_id == bot_id {
                        let status = if rights.is_admin {
                            "administrator"
                        } else {
                            "member"
                        };
                        return ok(member_json(bot, status, Some(rights)));
                    }
                    let status = chat.members.get(&user_id).cloned();
                    match status {
                        Some(status) => {
                            ok(member_json(user_json(user_id, false, None), &status, None))
                        }
                        None if known => {
                            ok(member_json(user_json(user_id, false, None), "left", None))
                        }
                        None => error(400, "Bad Request: user not found"),
                    }
                }
                _ => {
                    // banChatMember / unbanChatMember
                    let Some(user_id) = user_id else {
                        return error(400, "Bad Request: user_id is empty");
                    };
                    if !rights.is_admin || !rights.can_restrict_members {
                        return error(400, NO_RESTRICT);
                    }
                    let status = chat.members.get(&user_id).cloned();
                    if status.is_none() && !known {
                        return error(400, "Bad Request: PARTICIPANT_ID_INVALID");
                    }
                    match status.as_deref() {
                        Some("creator") => {
                            return error(400, "Bad Request: can't remove chat owner");
                        }
                        Some("administrator") => {
                            return error(400, "Bad Request: user is an administrator of the chat");
                        }
                        _ => {}
                    }
                    if method == "banchatmember" {
                        chat.members.insert(user_id, "kicked".into());
                    } else {
                        let only_if_banned = param_bool(params, "only_if_banned").unwrap_or(false);
                        let banned = status.as_deref() == Some("kicked");
                        if (banned || !only_if_banned) && status.is_some() {
                            chat.members.insert(user_id, "left".into());
                        }
                    }
                    ok(json!(true))
                }
            }
        }
        _ => error(404, "Not Found"),
    }
}

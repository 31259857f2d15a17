//! A fake Discord REST API under `/api/v10`: `Authorization: Bot {token}`, JSON bodies, Discord
//! error JSON `{"code": N, "message": "…"}` with the real statuses, 204 for role changes and for
//! `PUT /guilds/{g}/members/{u}` when the user is already in, 201 with the member when added.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Call, Failure, Script, Server, param_str};

/// MANAGE_ROLES (1 << 28).
const MANAGE_ROLES: u64 = 1 << 28;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuildRole {
    pub id: String,
    pub name: String,
    pub position: i64,
    pub permissions: u64,
}

struct Guild {
    bot_in_guild: bool,
    roles: Vec<GuildRole>,
    /// user id → role ids.
    members: HashMap<String, Vec<String>>,
}

struct State {
    token: String,
    bot_id: String,
    guilds: HashMap<String, Guild>,
    /// Users Discord knows (whether or not they are in a guild).
    users: std::collections::HashSet<String>,
    /// OAuth2 access token → the user it belongs to.
    oauth: HashMap<String, String>,
    calls: Vec<Call>,
    script: Script,
    /// While set, the bot's token is revoked: every call answers 401.
    revoked: bool,
    /// Calls answered 401 (wrong or revoked token).
    unauthorized: usize,
    /// Discord's limits, when enforced: the global bucket and each route's fixed window.
    limits: Option<Limits>,
    rate_limited: usize,
}

struct Limits {
    global: super::ProviderLimits,
    route: crate::ratelimit::Rate,
    /// Route bucket (method, path with the guild kept) → (window start, calls in the window).
    windows: HashMap<String, (std::time::Instant, u32)>,
}

/// A route bucket's `X-RateLimit-*` answer: limit, remaining, seconds to reset, bucket id.
struct Bucket {
    limit: u32,
    remaining: u32,
    reset_after: f64,
    id: String,
}

/// The fake server; stops when dropped.
pub struct FakeDiscord {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeDiscord {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            token: format!(
                "MTA{}.G{}.{}",
                crate::domain::random_token(21),
                crate::domain::random_token(5),
                crate::domain::random_token(27)
            ),
            bot_id: "900000000000000001".into(),
            guilds: HashMap::new(),
            users: Default::default(),
            oauth: HashMap::new(),
            calls: Vec::new(),
            script: Script::default(),
            revoked: false,
            unauthorized: 0,
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

    /// The value for `HILT_DISCORD_API_URL` (the fake serves `{url}/api/v10/...`; `{url}/api`
    /// works as well).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The value for `HILT_DISCORD_BOT_TOKEN` (without the `Bot ` prefix).
    pub fn token(&self) -> String {
        self.lock().token.clone()
    }

    pub fn bot_id(&self) -> String {
        self.lock().bot_id.clone()
    }

    /// A guild the bot is in, holding a "Hilt Bot" role (id `{guild}9`, position 10, Manage
    /// Roles) and @everyone (id = guild id, position 0).
    pub fn add_guild(&self, guild_id: &str) {
        let mut s = self.lock();
        let bot_id = s.bot_id.clone();
        let bot_role = format!("{guild_id}9");
        let guild = Guild {
            bot_in_guild: true,
            roles: vec![
                GuildRole {
                    id: guild_id.into(),
                    name: "@everyone".into(),
                    position: 0,
                    permissions: 0,
                },
                GuildRole {
                    id: bot_role.clone(),
                    name: "Hilt Bot".into(),
                    position: 10,
                    permissions: MANAGE_ROLES,
                },
            ],
            members: HashMap::from([(bot_id, vec![bot_role])]),
        };
        s.guilds.insert(guild_id.into(), guild);
    }

    /// A role at `position` (must be below the bot's highest role, 10 by default, to be grantable).
    pub fn add_role(&self, guild_id: &str, role_id: &str, position: i64) {
        let mut s = self.lock();
        if let Some(g) = s.guilds.get_mut(guild_id) {
            g.roles.retain(|r| r.id != role_id);
            g.roles.push(GuildRole {
                id: role_id.into(),
                name: format!("role {role_id}"),
                position,
                permissions: 0,
            });
        }
    }

    /// Moves the bot's own role (`{guild}9`).
    pub fn set_bot_role_position(&self, guild_id: &str, position: i64) {
        let mut s = self.lock();
        if let Some(g) = s.guilds.get_mut(guild_id) {
            let id = format!("{guild_id}9");
            if let Some(r) = g.roles.iter_mut().find(|r| r.id == id) {
                r.position = position;
            }
        }
    }

    /// Gives or takes Manage Roles from the bot's role.
    pub fn set_bot_can_manage_roles(&self, guild_id: &str, can: bool) {
        let mut s = self.lock();
        if let Some(g) = s.guilds.get_mut(guild_id) {
            let id = format!("{guild_id}9");
            if let Some(r) = g.roles.iter_mut().find(|r| r.id == id) {
                r.permissions = if can { MANAGE_ROLES } else { 0 };
            }
        }
    }

    /// The bot leaves (or is kicked from) the guild: its calls there answer 50001 Missing Access.
    pub fn remove_bot(&self, guild_id: &str) {
        if let Some(g) = self.lock().guilds.get_mut(guild_id) {
            g.bot_in_guild = false;
        }
    }

    /// A user Discord knows, not in any guild.
    pub fn add_user(&self, user_id: &str) {
        self.lock().users.insert(user_id.into());
    }

    pub fn add_member(&self, guild_id: &str, user_id: &str, roles: &[&str]) {
        let mut s = self.lock();
        s.users.insert(user_id.into());
        if let Some(g) = s.guilds.get_mut(guild_id) {
            g.members.insert(
                user_id.into(),
                roles.iter().map(|r| (*r).to_owned()).collect(),
            );
        }
    }

    /// A valid OAuth2 access token (`guilds.join`) of `user_id`.
    pub fn add_oauth_token(&self, access_token: &str, user_id: &str) {
        let mut s = self.lock();
        s.users.insert(user_id.into());
        s.oauth.insert(access_token.into(), user_id.into());
    }

    /// `None` when the user is not a member of the guild.
    pub fn roles_of(&self, guild_id: &str, user_id: &str) -> Option<Vec<String>> {
        self.lock()
            .guilds
            .get(guild_id)?
            .members
            .get(user_id)
            .cloned()
    }

    /// The next call of an operation (`current_user`, `get_member`, `add_member`, `add_role`,
    /// `remove_role`, `get_roles`, or `"*"`) answers `failure`.
    pub fn fail_next(&self, operation: &str, failure: Failure) {
        self.fail_next_n(operation, 1, failure);
    }

    pub fn fail_next_n(&self, operation: &str, times: usize, failure: Failure) {
        self.lock().script.push(operation, times, failure);
    }

    /// While down, every call answers 502 Bad Gateway.
    pub fn set_down(&self, down: bool) {
        self.lock().script.down = down.then_some(Failure::Status(502));
    }

    /// Revokes the bot's token (as resetting it in the developer portal does) or restores it:
    /// while revoked, every call answers 401 `{"code": 0, "message": "401: Unauthorized"}`.
    pub fn set_token_revoked(&self, revoked: bool) {
        self.lock().revoked = revoked;
    }

    /// Enforces Discord's limits from now on: the bot's `global` limit over every call (a 429
    /// with `"global": true` and `X-RateLimit-Global`), and `route` per route and guild as a fixed
    /// window that starts at its first call, announced on every answer with `X-RateLimit-Limit`,
    /// `-Remaining`, `-Reset-After` and `-Bucket`. Calls over a limit answer 429 and are counted.
    pub fn enforce_rate_limits(&self, global: crate::ratelimit::Rate, route: crate::ratelimit::Rate) {
        self.lock().limits = Some(Limits { global: super::ProviderLimits::new(vec![("global", global)]), route, windows: HashMap::new() });
    }

    /// Calls answered 429 because they broke an enforced limit.
    pub fn rate_limited_calls(&self) -> usize {
        self.lock().rate_limited
    }

    /// How many calls were answered 401 (wrong or revoked token).
    pub fn unauthorized_calls(&self) -> usize {
        self.lock().unauthorized
    }

    pub fn calls(&self, operation: &str) -> Vec<Call> {
        let operation = operation.to_ascii_lowercase();
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == operation)
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Op {
    CurrentUser,
    GetMember(String, String),
    AddMember(String, String),
    AddRole(String, String, String),
    RemoveRole(String, String, String),
    GetRoles(String),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::CurrentUser => "current_user",
            Op::GetMember(..) => "get_member",
            Op::AddMember(..) => "add_member",
            Op::AddRole(..) => "add_role",
            Op::RemoveRole(..) => "remove_role",
            Op::GetRoles(..) => "get_roles",
        }
    }

    fn parse(method: &Method, path: &str) -> Option<Op> {
        let rest = path.strip_prefix("/api/v10/")?.trim_end_matches('/');
        let seg: Vec<&str> = rest.split('/').collect();
        let s = |i: usize| seg[i].to_owned();
        Some(match (method.as_str(), seg.as_slice()) {
            ("GET", ["users", "@me"]) => Op::CurrentUser,
            ("GET", ["guilds", _, "members", _]) => Op::GetMember(s(1), s(3)),
            ("PUT", ["guilds", _, "members", _]) => Op::AddMember(s(1), s(3)),
            ("PUT", ["guilds", _, "members", _, "roles", _]) => Op::AddRole(s(1), s(3), s(5)),
            ("DELETE", ["guilds", _, "members", _, "roles", _]) => Op::RemoveRole(s(1), s(3), s(5)),
            ("GET", ["guilds", _, "roles"]) => Op::GetRoles(s(1)),
            _ => return None,
        })
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(req.into_body(), 10 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let Some(op) = Op::parse(&method, &path) else {
        return error(404, 0, "404: Not Found");
    };
    let mut bucket = None;
    let failure = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let mut params = match &op {
            Op::CurrentUser => json!({}),
            Op::GetMember(g, u) | Op::AddMember(g, u) => json!({ "guild_id": g, "user_id": u }),
            Op::AddRole(g, u, r) | Op::RemoveRole(g, u, r) => {
                json!({ "guild_id": g, "user_id": u, "role_id": r })
            }
            Op::GetRoles(g) => json!({ "guild_id": g }),
        };
        if let (Value::Object(p), Value::Object(b)) = (&mut params, &body) {
            for (k, v) in b {
                if k != "access_token" {
                    p.insert(k.clone(), v.clone());
                }
            }
        }
        s.calls.push(Call {
            method: op.name().into(),
            params,
        });
        if s.revoked || auth != format!("Bot {}", s.token) {
            s.unauthorized += 1;
            return error(401, 0, "401: Unauthorized");
        }
        if let Some(limits) = s.limits.as_mut() {
            match take_slot(limits, &route_bucket(&method, &path)) {
                Ok(b) => bucket = Some(b),
                Err((retry_after, global)) => {
                    s.rate_limited += 1;
                    return too_many(retry_after, global);
                }
            }
        }
        s.script.take(op.name()).or_else(|| s.script.take("*"))
    };
    match failure {
        Some(Failure::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(failure) => return scripted(failure),
        None => {}
    }
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let mut response = dispatch(&mut s, op, &body);
    if let Some(b) = bucket {
        let headers = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", b.limit.to_string()),
            ("x-ratelimit-remaining", b.remaining.to_string()),
            ("x-ratelimit-reset-after", format!("{:.3}", b.reset_after)),
            ("x-ratelimit-bucket", b.id),
        ] {
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
    response
}

/// Discord's bucket of a request: the route with its major parameter (the guild) kept.
fn route_bucket(method: &Method, path: &str) -> String {
    let mut parts = Vec::new();
    let mut major = false;
    for seg in path.trim_start_matches("/api/v10/").split('/') {
        let id = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
        parts.push(if id && !major { "{id}" } else { seg });
        major = seg == "guilds";
    }
    format!("{method} {}", parts.join("/"))
}

/// One call from the global bucket and the route's window, or how long until one is free
/// (seconds) and whether the global limit is the one exceeded.
fn take_slot(limits: &mut Limits, route: &str) -> Result<Bucket, (f64, bool)> {
    if let Some(retry_after) = limits.global.take(&[("global", "global".to_owned())]) {
        return Err((retry_after as f64, true));
    }
    let now = std::time::Instant::now();
    let (limit, window) = (limits.route.count, limits.route.per);
    let (start, count) = limits.windows.entry(route.to_owned()).or_insert((now, 0));
    if now.duration_since(*start) >= window {
        (*start, *count) = (now, 0);
    }
    let reset_after = (window - now.duration_since(*start)).as_secs_f64();
    if *count >= limit {
        return Err((reset_after, false));
    }
    *count += 1;
    let id = format!("{:016x}", route.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3)));
    Ok(Bucket { limit, remaining: limit - *count, reset_after, id })
}

fn too_many(retry_after: f64, global: bool) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({ "message": "You are being rate limited.", "retry_after": retry_after, "global": global })),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&format!("{retry_after:.3}")) {
        headers.insert(header::RETRY_AFTER, v);
    }
    headers.insert("x-ratelimit-scope", header::HeaderValue::from_static("user"));
    if global {
        headers.insert("x-ratelimit-global", header::HeaderValue::from_static("true"));
    }
    response
}

fn scripted(failure: Failure) -> Response {
    match failure {
        Failure::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(json!({
                "message": "You are being rate limited.",
                "retry_after": retry_after as f64,
                "global": false,
            })),
        )
            .into_response(),
        Failure::Api {
            status,
            code,
            message,
        } => error(status, code, &message),
        Failure::Status(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html><body><h1>{status}</h1></body></html>"),
        )
            .into_response(),
        Failure::UnknownMember => error(404, 10007, "Unknown Member"),
        Failure::Slow(_) => error(500, 0, "500: Internal Server Error"),
    }
}

fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn user_json(id: &str, bot: bool) -> Value {
    json!({
        "id": id, "username": if bot { "hilt-bot" } else { "buyer" }, "discriminator": "0",
        "global_name": null, "avatar": null, "bot": bot, "public_flags": 0, "flags": 0,
    })
}

fn member_json(user_id: &str, roles: &[String], bot: bool) -> Value {
    json!({
        "user": user_json(user_id, bot), "nick": null, "avatar": null, "banner": null, "roles": roles,
        "joined_at": "2024-01-01T00:00:00.000000+00:00", "premium_since": null, "deaf": false,
        "mute": false, "flags": 0, "pending": false, "communication_disabled_until": null,
    })
}

fn role_json(r: &GuildRole) -> Value {
    json!({
        "id": r.id, "name": r.name, "color": 0,
        "colors": { "primary_color": 0, "secondary_color": null, "tertiary_color": null },
        "hoist": false, "icon": null, "unicode_emoji": null, "position": r.position,
        "permissions": r.permissions.to_string(), "managed": false, "mentionable": false, "flags": 0,
    })
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The bot may grant `role` when it has Manage Roles and the role sits below its highest role.
fn can_grant(s: &State, guild: &Guild, role: &GuildRole) -> bool {
    let bot_roles = guild.members.get(&s.bot_id).cloned().unwrap_or_default();
    let mine: Vec<&GuildRole> = guild
        .roles
        .iter()
        .filter(|r| bot_roles.contains(&r.id))
        .collect();
    let manage = mine.iter().any(|r| r.permissions & MANAGE_ROLES != 0);
    let top = mine.iter().map(|r| r.position).max().unwrap_or(0);
    manage && role.position < top
}

fn dispatch(s: &mut State, op: Op, body: &Value) -> Response {
    let guild_id = match &op {
        Op::CurrentUser => {
            return axum::Json(user_json(&s.bot_id, true)).into_response();
        }
        Op::GetMember(g, _)
        | Op::AddMember(g, _)
        | Op::AddRole(g, ..)
        | Op::RemoveRole(g, ..)
        | Op::GetRoles(g) => g.clone(),
    };
    let Some(guild) = s.guilds.get(&guild_id) else {
        return error(404, 10004, "Unknown Guild");
    };
    if !guild.bot_in_guild {
        return error(403, 50001, "Missing Access");
    }
    match op {
        Op::CurrentUser => unreachable!("answered above"),
        Op::GetRoles(_) => {
            axum::Json(Value::Array(guild.roles.iter().map(role_json).collect())).into_response()
        }
        Op::GetMember(_, user) => match guild.members.get(&user) {
            Some(roles) => axum::Json(member_json(&user, roles, user == s.bot_id)).into_response(),
            None => error(404, 10007, "Unknown Member"),
        },
        Op::AddMember(_, user) => {
            if guild.members.contains_key(&user) {
                return no_content();
            }
            if !s.users.contains(&user) {
                return error(404, 10013, "Unknown User");
            }
            let token = param_str(body, "access_token").unwrap_or_default();
            if s.oauth.get(&token) != Some(&user) {
                return error(403, 50025, "Invalid OAuth2 access token");
            }
            let wanted: Vec<String> = body
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for role_id in &wanted {
                let Some(role) = guild.roles.iter().find(|r| &r.id == role_id) else {
                    return error(404, 10011, "Unknown Role");
                };
                if !can_grant(s, guild, role) {
                    return error(403, 50013, "Missing Permissions");
                }
            }
            let json = member_json(&user, &wanted, false);
            if let Some(g) = s.guilds.get_mut(&guild_id) {
                g.members.insert(user, wanted);
            }
            (StatusCode::CREATED, axum::Json(json)).into_response()
        }
        Op::AddRole(_, user, role) => change_role(s, &guild_id, user, role, true),
        Op::RemoveRole(_, user, role) => change_role(s, &guild_id, user, role, false),
    }
}

fn change_role(
    s: &mut State,
    guild_id: &str,
    user: String,
    role_id: String,
    adding: bool,
) -> Response {
    let Some(guild) = s.guilds.get(guild_id) else {
        return error(404, 10004, "Unknown Guild");
    };
    let Some(role) = guild.roles.iter().find(|r| r.id == role_id) else {
        return error(404, 10011, "Unknown Role");
    };
    if !guild.members.contains_key(&user) {
        return error(404, 10007, "Unknown Member");
    }
    if !can_grant(s, guild, role) {
        return error(403, 50013, "Missing Permissions");
    }
    if let Some(roles) = s
        .guilds
        .get_mut(guild_id)
        .and_then(|g| g.members.get_mut(&user))
    {
        roles.retain(|r| r != &role_id);
        if adding {
            roles.push(role_id);
        }
    }
    no_content()
}

//! Discord REST through serenity's `Http`, routes and models, with our own response handling.
//!
//! The client is `HttpBuilder::new(token).proxy(base).ratelimiter_disabled(true)` with our
//! reqwest client (timeouts). Requests are serenity `Request`s (route → URL, `Bot` auth header,
//! user agent) built against that proxy; we execute them ourselves because serenity turns every
//! non-2xx into an `ErrorResponse` without headers, and with its ratelimiter off that loses the
//! 429 `Retry-After`, which we must honour. Successful bodies decode into serenity's models.
//!
//! Base URL: serenity replaces `https://discord.com` in `https://discord.com/api/v10/...` by the
//! proxy, so the proxy is the URL *without* `/api`. `HILT_DISCORD_API_URL` follows Discord's own
//! convention (`https://discord.com/api`); a trailing `/api` or `/api/v10` is stripped, so
//! `https://discord.com/api`, `http://127.0.0.1:PORT/api` and `http://127.0.0.1:PORT` all work.

use std::{sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use serenity::{
    http::{HttpBuilder, LightMethod, Request, Route},
    model::id::{GuildId, RoleId, UserId},
};
use tokio::sync::OnceCell;

use super::{ErrorClass, ProviderError, http_client, network_error};
use crate::ratelimit::{Limit, Rate, RateLimits};

const PROVIDER: &str = "Discord";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotUser {
    pub id: String,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub position: i64,
    pub permissions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// 201: the user joined with the roles given.
    Added,
    /// 204: the user was already a member; the roles in the request were NOT applied.
    AlreadyMember,
}

#[derive(Clone)]
pub struct Discord {
    http: Arc<serenity::http::Http>,
    client: reqwest::Client,
    proxy: String,
    bot_user: Arc<OnceCell<BotUser>>,
    limits: Option<Limits>,
}

/// The bot's limits, shared by every worker: Discord's global limit (`HILT_DISCORD_RATE`) and
/// one bucket per route and guild, at `HILT_DISCORD_ROUTE_RATE` until Discord's
/// `X-RateLimit-Limit` / `X-RateLimit-Reset-After` headers announce the bucket's own.
#[derive(Clone)]
struct Limits {
    limiter: RateLimits,
    global: Rate,
    route: Rate,
    /// Bucket rates announced by Discord, by route key.
    announced: Arc<std::sync::Mutex<std::collections::HashMap<String, Rate>>>,
}

impl Limits {
    fn of(&self, route: &str) -> Vec<Limit> {
        let announced = self.announced.lock().ok().and_then(|a| a.get(route).copied());
        vec![Limit::new("discord:global", self.global), Limit::new(format!("discord:route:{route}"), announced.unwrap_or(self.route).for_fixed_window())]
    }

    /// Learns a bucket's limit from a response: `X-RateLimit-Limit` calls per window, the window
    /// being the longest `X-RateLimit-Reset-After` seen (a window's first answer tells its length).
    fn learn(&self, route: &str, headers: &reqwest::header::HeaderMap) {
        let number = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
        let (Some(limit), Some(reset_after)) = (number("x-ratelimit-limit"), number("x-ratelimit-reset-after")) else { return };
        if !(limit >= 1.0 && reset_after > 0.0 && reset_after.is_finite()) {
            return;
        }
        let window = Duration::from_millis((reset_after * 1000.0).ceil() as u64);
        if let Ok(mut announced) = self.announced.lock() {
            let rate = announced.entry(route.to_owned()).or_insert(Rate::new(limit as u32, window));
            *rate = Rate::new(limit as u32, rate.per.max(window));
        }
    }
}

impl std::fmt::Debug for Discord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discord")
            .field("base", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// `https://discord.com/api` → `https://discord.com` (what serenity's proxy replacement wants).
pub fn proxy_base(api_url: &str) -> String {
    let mut base = api_url.trim_end_matches('/');
    for suffix in ["/v10", "/api"] {
        base = base.strip_suffix(suffix).unwrap_or(base);
    }
    base.to_owned()
}

impl Discord {
    /// `api_url`: `https://discord.com/api` for real Discord, or a fake's `http://127.0.0.1:PORT`.
    pub fn new(token: &str, api_url: &str, timeout: Duration) -> Result<Self, ProviderError> {
        let proxy = proxy_base(api_url);
        if reqwest::Url::parse(&proxy).is_err() {
            return Err(ProviderError::configuration(
                "invalid_api_url",
                "HILT_DISCORD_API_URL is not a URL",
            ));
        }
        let client = http_client(timeout)?;
        let http = HttpBuilder::new(token)
            .client(client.clone())
            .proxy(proxy.clone())
            .ratelimiter_disabled(true)
            .build();
        Ok(Self {
            http: Arc::new(http),
            client,
            proxy,
            bot_user: Arc::new(OnceCell::new()),
            limits: None,
        })
    }

    /// Paces every call through `limiter` (see [`Limits`]).
    pub fn with_rate_limits(mut self, limiter: RateLimits, global: Rate, route: Rate) -> Self {
        self.limits = Some(Limits { limiter, global, route, announced: Arc::default() });
        self
    }

    /// How long a role change in `guild` made now would wait for its slot (zero without limits);
    /// a job that would wait long is better rescheduled than parked in a worker.
    pub async fn admission(&self, guild: &str) -> Duration {
        match &self.limits {
            Some(l) => {
                let role = |method: &str| l.of(&route_key(method, &format!("/api/v10/guilds/{guild}/members/0/roles/0")));
                l.limiter.peek(&role("PUT")).await.max(l.limiter.peek(&role("DELETE")).await)
            }
            None => Duration::ZERO,
        }
    }

    /// The serenity client (same token, base URL and reqwest client), for anything not wrapped.
    /// Its errors classify with `ProviderError::from(serenity::Error)`, minus `Retry-After`.
    pub fn http(&self) -> &serenity::http::Http {
        &self.http
    }

    pub async fn current_user(&self) -> Result<BotUser, ProviderError> {
        let user: serenity::model::user::CurrentUser = self
            .fire(Request::new(Route::UserMe, LightMethod::Get))
            .await?;
        Ok(BotUser {
            id: user.id.get().to_string(),
            username: user.name.clone(),
        })
    }

    async fn bot_user(&self) -> Result<&BotUser, ProviderError> {
        self.bot_user.get_or_try_init(|| self.current_user()).await
    }

    /// `None` when Discord answers 10007 Unknown Member.
    pub async fn get_member(
        &self,
        guild: &str,
        user: &str,
    ) -> Result<Option<Member>, ProviderError> {
        let (guild_id, user_id) = (guild_id(guild)?, user_id(user)?);
        let route = Route::GuildMember { guild_id, user_id };
        match self
            .fire_member(Request::new(route, LightMethod::Get), guild_id)
            .await
        {
            Ok(member) => Ok(Some(member)),
            Err(e) if e.code == "member_not_in_guild" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /guilds/{g}/members/{u}/roles/{r}` (204; idempotent).
    pub async fn add_role(&self, guild: &str, user: &str, role: &str) -> Result<(), ProviderError> {
        let route = Route::GuildMemberRole {
            guild_id: guild_id(guild)?,
            user_id: user_id(user)?,
            role_id: role_id(role)?,
        };
        self.execute(Request::new(route, LightMethod::Put))
            .await
            .map(drop)
    }

    /// `DELETE /guilds/{g}/members/{u}/roles/{r}` (204; idempotent).
    pub async fn remove_role(
        &self,
        guild: &str,
        user: &str,
        role: &str,
    ) -> Result<(), ProviderError> {
        let route = Route::GuildMemberRole {
            guild_id: guild_id(guild)?,
            user_id: user_id(user)?,
            role_id: role_id(role)?,
        };
        self.execute(Request::new(route, LightMethod::Delete))
            .await
            .map(drop)
    }

    /// `PUT /guilds/{g}/members/{u}` with the buyer's OAuth2 access token (`guilds.join`).
    pub async fn add_member_with_oauth(
        &self,
        guild: &str,
        user: &str,
        access_token: &str,
        role: &str,
    ) -> Result<AddOutcome, ProviderError> {
        let (guild_id, user_id, role_id) = (guild_id(guild)?, user_id(user)?, role_id(role)?);
        let body = serde_json::json!({
            "access_token": access_token,
            "roles": [role_id.get().to_string()],
        });
        let body = serde_json::to_vec(&body).map_err(|_| invalid_response())?;
        let request = Request::new(Route::GuildMember { guild_id, user_id }, LightMethod::Put);
        let (status, _) = self.execute_with_body(request, Some(body)).await?;
        Ok(if status == 204 {
            AddOutcome::AlreadyMember
        } else {
            AddOutcome::Added
        })
    }

    pub async fn get_guild_roles(&self, guild: &str) -> Result<Vec<Role>, ProviderError> {
        let guild_id = guild_id(guild)?;
        let (_, body) = self
            .execute(Request::new(
                Route::GuildRoles { guild_id },
                LightMethod::Get,
            ))
            .await?;
        let mut value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| invalid_response())?;
        // serenity's models carry the guild id, which Discord does not send (serenity adds it too).
        if let Some(items) = value.as_array_mut() {
            for item in items {
                if let Some(map) = item.as_object_mut() {
                    map.insert("guild_id".into(), guild_id.get().to_string().into());
                }
            }
        }
        let roles: Vec<serenity::model::guild::Role> =
            serde_json::from_value(value).map_err(|_| invalid_response())?;
        Ok(roles
            .into_iter()
            .map(|r| Role {
                id: r.id.get().to_string(),
                name: r.name,
                position: i64::from(r.position),
                permissions: r.permissions.bits(),
            })
            .collect())
    }

    /// The position of the bot's highest role in the guild (0 = only @everyone). A role can be
    /// granted by the bot only if it sits strictly below this.
    pub async fn bot_highest_role_position(&self, guild: &str) -> Result<i64, ProviderError> {
        let bot = self.bot_user().await?.clone();
        let member = self.get_member(guild, &bot.id).await?.ok_or_else(|| {
            ProviderError::configuration("bot_not_in_guild", "the bot is not a member of the guild")
        })?;
        let roles = self.get_guild_roles(guild).await?;
        Ok(roles
            .iter()
            .filter(|r| member.roles.contains(&r.id))
            .map(|r| r.position)
            .max()
            .unwrap_or(0))
    }

    /// Delivery: add the role to a member; else join the buyer with their OAuth token (and add
    /// the role when Discord says they were already in); else `member_not_in_guild`.
    pub async fn grant_role(
        &self,
        guild: &str,
        user: &str,
        role: &str,
        oauth_token: Option<&str>,
    ) -> Result<(), ProviderError> {
        if self.get_member(guild, user).await?.is_some() {
            return self.add_role(guild, user, role).await;
        }
        let Some(token) = oauth_token.filter(|t| !t.is_empty()) else {
            return Err(member_not_in_guild());
        };
        match self.add_member_with_oauth(guild, user, token, role).await? {
            AddOutcome::Added => Ok(()),
            AddOutcome::AlreadyMember => self.add_role(guild, user, role).await,
        }
    }

    async fn fire<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T, ProviderError> {
        let (_, body) = self.execute(request).await?;
        serde_json::from_slice(&body).map_err(|_| invalid_response())
    }

    async fn fire_member(
        &self,
        request: Request<'_>,
        guild_id: GuildId,
    ) -> Result<Member, ProviderError> {
        let (_, body) = self.execute(request).await?;
        let mut value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| invalid_response())?;
        if let Some(map) = value.as_object_mut() {
            map.insert("guild_id".into(), guild_id.get().to_string().into());
        }
        let member: serenity::model::guild::Member =
            serde_json::from_value(value).map_err(|_| invalid_response())?;
        Ok(Member {
            user_id: member.user.id.get().to_string(),
            roles: member.roles.iter().map(|r| r.get().to_string()).collect(),
        })
    }

    async fn execute(&self, request: Request<'_>) -> Result<(u16, Vec<u8>), ProviderError> {
        self.execute_with_body(request, None).await
    }

    /// Sends a serenity request through our client; the status and body of a 2xx, else our error.
    /// A JSON body is attached after serenity built the request: `Request::build` is
    /// `#[instrument]`ed with the request (body included) as a span field, and the body of
    /// `PUT /guilds/{g}/members/{u}` holds the buyer's OAuth access token.
    async fn execute_with_body(
        &self,
        request: Request<'_>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ProviderError> {
        use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
        let token = self.http.token();
        let setup = || {
            ProviderError::configuration(
                "invalid_api_url",
                "could not build the Discord request URL",
            )
        };
        let mut built = request
            .build(&self.client, token, Some(&self.proxy))
            .map_err(|_| setup())?
            .build()
            .map_err(|_| setup())?;
        if let Some(body) = body {
            built.headers_mut().remove(CONTENT_LENGTH);
            built
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *built.body_mut() = Some(body.into());
        }
        let route = route_key(built.method().as_str(), built.url().path());
        if let Some(l) = &self.limits {
            l.limiter.acquire(&l.of(&route)).await;
        }
        let response = self
            .client
            .execute(built)
            .await
            .map_err(|e| network_error(PROVIDER, e, token))?;
        let status = response.status().as_u16();
        if let Some(l) = &self.limits {
            l.learn(&route, response.headers());
            if status == 429 {
                // The first 429 wins over our estimate: the whole bot waits on a global one.
                let global = response.headers().get("x-ratelimit-global").is_some();
                let wait = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok());
                if let Some(wait) = wait.filter(|w| w.is_finite() && *w >= 0.0) {
                    let all = l.of(&route);
                    let held = if global { &all[..1] } else { &all[1..] };
                    l.limiter.hold(held, Duration::from_secs_f64(wait)).await;
                }
            }
        }
        let header_retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        let body = response
            .bytes()
            .await
            .map_err(|e| network_error(PROVIDER, e, token))?
            .to_vec();
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let wire: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let retry_after = wire
            .retry_after
            .into_iter()
            .chain(header_retry)
            .fold(None, |acc: Option<f64>, s| {
                Some(acc.map_or(s, |a| a.max(s)))
            });
        Err(classify(status, wire.code, retry_after))
    }
}

/// A route's rate limit bucket: method and path with the guild (Discord's major parameter) kept
/// and other ids generalised: `PUT guilds/123/members/:id/roles/:id`.
fn route_key(method: &str, path: &str) -> String {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("api/").unwrap_or(path);
    let path = path.strip_prefix("v10/").unwrap_or(path);
    let mut parts = Vec::new();
    let mut major = false;
    for seg in path.split('/') {
        let id = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
        parts.push(if id && !major { ":id" } else { seg });
        major = seg == "guilds";
    }
    format!("{method} {}", parts.join("/"))
}

#[derive(serde::Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: i64,
    retry_after: Option<f64>,
}

fn snowflake(s: &str) -> Option<u64> {
    s.trim().parse::<u64>().ok().filter(|id| *id > 0)
}

fn guild_id(s: &str) -> Result<GuildId, ProviderError> {
    snowflake(s).map(GuildId::new).ok_or_else(|| {
        ProviderError::configuration("unknown_guild", "the guild id is not a Discord snowflake")
    })
}

fn role_id(s: &str) -> Result<RoleId, ProviderError> {
    snowflake(s).map(RoleId::new).ok_or_else(|| {
        ProviderError::configuration("unknown_role", "the role id is not a Discord snowflake")
    })
}

fn user_id(s: &str) -> Result<UserId, ProviderError> {
    snowflake(s).map(UserId::new).ok_or_else(|| {
        ProviderError::member_permanent(
            "identity_invalid",
            "the Discord user id is not a snowflake",
        )
    })
}

fn invalid_response() -> ProviderError {
    ProviderError::transient(
        "invalid_response",
        "Discord sent an answer that could not be read",
    )
}

fn member_not_in_guild() -> ProviderError {
    ProviderError::member_permanent(
        "member_not_in_guild",
        "the buyer is not in the guild and no OAuth access token is known to add them",
    )
}

/// The classification table for Discord (see docs/PROVIDERS.md): JSON `code` first, then status.
fn classify(status: u16, code: i64, retry_after_secs: Option<f64>) -> ProviderError {
    use ErrorClass::*;
    if status == 429 {
        let retry_after = retry_after_secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let shown =
            retry_after.map_or_else(|| "?".to_owned(), |d| format!("{:.1}", d.as_secs_f64()));
        return ProviderError::transient(
            "rate_limited",
            format!("Discord rate limit: retry after {shown} s"),
        )
        .with_retry_after(retry_after)
        .with_status(status);
    }
    if status >= 500 {
        return ProviderError::transient("provider_5xx", format!("Discord answered HTTP {status}"))
            .with_status(status);
    }
    let (code, class, message): (&str, ErrorClass, String) = match (code, status) {
        (10004, _) => (
            "unknown_guild",
            Configuration,
            "Discord does not know the guild".into(),
        ),
        (10007, _) => return member_not_in_guild_from_api().with_status(status),
        (10011, _) => (
            "unknown_role",
            Configuration,
            "Discord does not know the role".into(),
        ),
        (10013, _) => (
            "unknown_user",
            MemberPermanent,
            "Discord does not know the user".into(),
        ),
        (50001, _) => (
            "missing_access",
            Configuration,
            "the bot has no access to the guild (not a member, or the guild is hidden from it)"
                .into(),
        ),
        (50013, _) => (
            "missing_permissions",
            Configuration,
            "the bot lacks Manage Roles or the role is not below the bot's highest role".into(),
        ),
        (30001, _) => (
            "user_guild_limit",
            MemberPermanent,
            "the buyer is already in 100 Discord servers, Discord's limit; they must leave one".into(),
        ),
        (40007, _) => (
            "user_banned",
            MemberPermanent,
            "the buyer is banned from the Discord server".into(),
        ),
        (50025, _) => (
            "invalid_oauth_token",
            MemberPermanent,
            "the buyer's Discord authorisation is invalid or expired; they must sign in again"
                .into(),
        ),
        (50035, _) => (
            "invalid_request",
            Configuration,
            "Discord rejected the request body".into(),
        ),
        (_, 401) => (
            "invalid_bot_token",
            Configuration,
            "Discord rejected the bot token".into(),
        ),
        (_, 403) => (
            "forbidden",
            Configuration,
            format!("Discord refused the request (code {code})"),
        ),
        (_, 404) => (
            "not_found",
            Configuration,
            format!("Discord answered 404 (code {code})"),
        ),
        _ => (
            "provider_rejected",
            Configuration,
            format!("Discord answered HTTP {status} (code {code})"),
        ),
    };
    ProviderError::new(code, class, message).with_status(status)
}

fn member_not_in_guild_from_api() -> ProviderError {
    ProviderError::member_permanent(
        "member_not_in_guild",
        "the user is not a member of the guild",
    )
}

/// For calls made through serenity's own methods (`Discord::http()`); a 429 there has lost its
/// `Retry-After`, so it comes back without `retry_after`.
impl From<serenity::Error> for ProviderError {
    fn from(err: serenity::Error) -> Self {
        use serenity::http::HttpError;
        match err {
            serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => classify(
                response.status_code.as_u16(),
                response.error.code as i64,
                None,
            ),
            serenity::Error::Http(HttpError::Request(e)) => network_error(PROVIDER, e, ""),
            serenity::Error::Json(_) => invalid_response(),
            _ => ProviderError::transient("network", "the Discord request failed"),
        }
    }
}

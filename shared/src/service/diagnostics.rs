//! Delivery diagnostics (SPEC §7): ask the provider, live, what it thinks of this membership's
//! delivery, and say what to do next.
//!
//! Five checks, always in this order: `automation_configured` (token and chat/guild set, the bot
//! answers `getMe` / `users/@me`), `bot_permissions` (Telegram: the bot is an administrator of
//! the chat with "Invite users" (and "Ban users" for removals); Discord: the bot is in the guild,
//! has Manage Roles, and the product role sits below the bot's highest role), `member_identity`
//! (the buyer's platform id is present and well-formed), `member_access` (the buyer's standing
//! at the provider now) and `fallback_link`. A provider that does not answer (network, timeout,
//! 5xx, 429) makes a `warn` check and the checks that depend on it `warn` "not checked"; it is
//! never an error of this route. The clients are built with a short timeout for this.

use std::time::Instant;

use crate::{
    clock::{now_ms, rfc3339},
    domain::{DeliveryStatus, MembershipStatus, Platform},
    providers::{Discord, ErrorClass, ProviderError, Providers, Telegram},
    service::ServiceError,
    storage::{
        Db,
        memberships::{self, MembershipRow},
        products::{self, ProductRow},
    },
    views::diagnostics::{
        CheckStatus, DeliveryDiagnostics, DiagnosticAction, DiagnosticCheck, OverallStatus, ProviderState,
    },
};

/// Discord permission bits.
const ADMINISTRATOR: u64 = 1 << 3;
const MANAGE_ROLES: u64 = 1 << 28;

pub async fn diagnose(
    db: &Db,
    providers: &Providers,
    merchant_id: &str,
    membership_id: &str,
) -> Result<DeliveryDiagnostics, ServiceError> {
    let (m, product) = {
        let mut conn = db.conn().await?;
        let m = memberships::get(&mut conn, merchant_id, membership_id).await?.ok_or(ServiceError::NotFound)?;
        let product = products::get(&mut conn, merchant_id, &m.product_id).await?.ok_or(ServiceError::NotFound)?;
        (m, product)
    };
    let started = Instant::now();
    let mut d = Diagnosis::new(&m, &product);
    match Platform::parse(&m.platform) {
        Some(Platform::Telegram) => d.telegram(providers.telegram.as_ref()).await,
        Some(Platform::Discord) => d.discord(providers.discord.as_ref()).await,
        None => {
            for name in PROVIDER_CHECKS {
                d.check(name, CheckStatus::Fail, format!("unknown platform `{}`", m.platform));
            }
        }
    }
    d.fallback_check();
    d.state.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(d.finish())
}

const PROVIDER_CHECKS: [&str; 4] = ["automation_configured", "bot_permissions", "member_identity", "member_access"];

/// Why the provider checks stopped early, for the "not checked" details.
enum Blocked {
    NotConfigured,
    Unreachable,
    Rejected,
}

impl Blocked {
    fn detail(&self) -> &'static str {
        match self {
            Blocked::NotConfigured => "not checked: automation is not configured",
            Blocked::Unreachable => "not checked: the provider did not answer",
            Blocked::Rejected => "not checked: the provider rejected the bot token",
        }
    }
}

struct Diagnosis<'a> {
    m: &'a MembershipRow,
    product: &'a ProductRow,
    checks: Vec<DiagnosticCheck>,
    state: ProviderState,
    /// Automation is configured for the product (token and chat/guild ids), answering or not.
    automation: bool,
    /// Whether the buyer should have access now (active or in grace).
    has_access: bool,
    hints: Hints,
}

/// What the checks found that maps to an action.
#[derive(Default)]
struct Hints {
    configure: Option<String>,
    configure_product: bool,
    bot_rights: Option<String>,
    identity: Option<String>,
    start_bot: Option<String>,
    join_guild: Option<String>,
    retry: Option<String>,
}

impl<'a> Diagnosis<'a> {
    fn new(m: &'a MembershipRow, product: &'a ProductRow) -> Self {
        let has_access = matches!(MembershipStatus::parse(&m.status), Some(MembershipStatus::Active | MembershipStatus::Grace));
        let state = ProviderState {
            platform: m.platform.clone(),
            telegram_chat_id: product.telegram_chat_id,
            discord_guild_id: product.discord_guild_id.clone(),
            discord_role_id: product.discord_role_id.clone(),
            delivery_status: m.delivery_status.clone(),
            fallback_used: m.fallback_used != 0,
            checked_at: rfc3339(now_ms()),
            ..ProviderState::default()
        };
        Self { m, product, checks: Vec::new(), state, automation: false, has_access, hints: Hints::default() }
    }

    fn check(&mut self, name: &str, status: CheckStatus, detail: impl Into<String>) {
        self.checks.push(DiagnosticCheck { name: name.into(), status, detail: detail.into() });
    }

    /// The remaining provider checks after the provider could not be used.
    fn skip_rest(&mut self, blocked: &Blocked) {
        let done: Vec<String> = self.checks.iter().map(|c| c.name.clone()).collect();
        for name in PROVIDER_CHECKS.into_iter().filter(|n| !done.iter().any(|d| d == n)) {
            if name == "member_identity" {
                self.identity_check();
            } else {
                self.check(name, CheckStatus::Warn, blocked.detail());
            }
        }
    }

    /// A provider error as a check: no answer → warn; anything else → fail.
    fn provider_error(&mut self, name: &str, e: &ProviderError) {
        if is_unanswered(e) {
            self.state.reachable = Some(false);
            self.check(name, CheckStatus::Warn, format!("the provider did not answer ({}): {}", e.code, e.message));
        } else {
            self.check(name, CheckStatus::Fail, format!("{} ({})", e.message, e.code));
        }
    }

    /// Token missing or the product lacks its chat/guild ids.
    fn not_configured(&mut self, what: String, product_fix: bool) {
        let fallback = self.product.fallback_invite_url.is_some();
        let (status, detail) = if fallback {
            (CheckStatus::Warn, format!("{what}; delivery falls back to the product's static invite link"))
        } else {
            (CheckStatus::Fail, format!("{what}, and the product has no fallback_invite_url: nothing can be delivered"))
        };
        self.state.delivery_path = if fallback { "fallback" } else { "none" }.into();
        self.hints.configure = Some(what);
        self.hints.configure_product = product_fix;
        self.check("automation_configured", status, detail);
        self.skip_rest(&Blocked::NotConfigured);
    }

    fn identity_check(&mut self) {
        let fallback_only = !self.automation;
        let (status, detail) = match Platform::parse(&self.m.platform) {
            Some(Platform::Telegram) => match (self.m.telegram_user_id, &self.m.email) {
                (Some(id), _) if id > 0 => (CheckStatus::Pass, format!("Telegram user id {id}")),
                (Some(id), _) => (CheckStatus::Fail, format!("the Telegram user id {id} is not a positive integer")),
                (None, _) if fallback_only => {
                    (CheckStatus::Warn, "no Telegram user id (not needed for the fallback link; needed once automation is on)".into())
                }
                (None, Some(_)) => {
                    (CheckStatus::Warn, "no Telegram user id: the invite link can only be emailed, and access cannot be checked".into())
                }
                (None, None) => (CheckStatus::Fail, "no Telegram user id and no email: the invite link cannot reach the buyer".into()),
            },
            Some(Platform::Discord) => match &self.m.discord_user_id {
                Some(id) if is_snowflake(id) => (CheckStatus::Pass, format!("Discord user id {id}")),
                Some(_) => (CheckStatus::Fail, "the Discord user id is not a snowflake (a string of digits)".into()),
                None if fallback_only => {
                    (CheckStatus::Warn, "no Discord user id (not needed for the fallback link; needed once automation is on)".into())
                }
                None => (CheckStatus::Fail, "no Discord user id: the role cannot be granted".into()),
            },
            None => (CheckStatus::Fail, "unknown platform".into()),
        };
        if status == CheckStatus::Fail {
            self.hints.identity = Some(detail.clone());
        }
        self.check("member_identity", status, detail);
    }

    async fn telegram(&mut self, client: Option<&Telegram>) {
        let Some(tg) = client else {
            return self.not_configured("no Telegram bot token is configured (HILT_TELEGRAM_BOT_TOKEN)".into(), false);
        };
        let Some(chat) = self.product.telegram_chat_id else {
            return self.not_configured("the product has no telegram_chat_id".into(), true);
        };
        self.automation = true;
        self.state.delivery_path = "telegram".into();
        let bot = match tg.get_me().await {
            Ok(bot) => bot,
            Err(e) => return self.automation_failed(&e),
        };
        self.state.reachable = Some(true);
        self.state.bot_username = Some(bot.username.clone());
        self.check("automation_configured", CheckStatus::Pass, format!("bot @{} answers getMe", bot.username));

        // The bot's rights and the buyer's standing, asked at once (each bounded by the timeout).
        let buyer = self.m.telegram_user_id.filter(|id| *id > 0);
        let (rights, member) = tokio::join!(tg.get_chat_member(chat, bot.id), async {
            match buyer {
                Some(user) => Some(tg.get_chat_member(chat, user).await),
                None => None,
            }
        });
        match rights {
            Ok(s) => {
                self.state.bot_status = Some(s.status.clone());
                self.state.bot_can_invite_users = s.can_invite_users;
                self.state.bot_can_restrict_members = s.can_restrict_members;
                let admin = matches!(s.status.as_str(), "administrator" | "creator");
                let invite = s.can_invite_users == Some(true);
                let restrict = s.can_restrict_members == Some(true);
                let (status, detail) = match (s.status.as_str(), admin, invite, restrict) {
                    (_, true, true, true) => (CheckStatus::Pass, format!("the bot is {} with the rights to invite and remove members", s.status)),
                    (_, true, true, false) => (CheckStatus::Warn, "the bot can create invite links but lacks \"Ban users\": removals at expiry will fail".to_owned()),
                    (_, true, false, _) => (CheckStatus::Fail, "the bot is an administrator without \"Invite users via link\": it cannot create invite links".to_owned()),
                    ("left" | "kicked", ..) => (CheckStatus::Fail, "the bot is not a member of the chat".to_owned()),
                    (other, ..) => (CheckStatus::Fail, format!("the bot is `{other}` in the chat, not an administrator: it cannot create invite links")),
                };
                if status != CheckStatus::Pass {
                    self.hints.bot_rights = Some(
                        "make the bot an administrator of the chat with \"Invite users via link\" and \"Ban users\"".into(),
                    );
                }
                self.check("bot_permissions", status, detail);
            }
            Err(e) => {
                if !is_unanswered(&e) {
                    self.hints.bot_rights = Some(format!("add the bot to the chat as an administrator ({})", e.code));
                }
                self.provider_error("bot_permissions", &e);
            }
        }
        self.identity_check();
        match member {
            None => self.check("member_access", CheckStatus::Warn, "not checked: no valid Telegram user id"),
            Some(Ok(s)) => {
                self.state.member_status = Some(s.status.clone());
                let present = s.is_present();
                self.access_check(present, s.status == "kicked", &format!("`{}` in the chat", s.status));
            }
            Some(Err(e)) if e.class == ErrorClass::MemberPermanent => {
                self.hints.identity = Some(e.message.clone());
                self.check("member_access", CheckStatus::Fail, format!("{} ({})", e.message, e.code));
            }
            Some(Err(e)) => self.provider_error("member_access", &e),
        }
        if matches!(self.m.last_error_code.as_deref(), Some("user_blocked_bot" | "user_not_started_bot")) {
            self.hints.start_bot = Some(format!(
                "the last delivery could not message the buyer ({}): they must open @{} and press Start (or unblock it)",
                self.m.last_error_code.as_deref().unwrap_or_default(),
                bot.username
            ));
        }
    }

    async fn discord(&mut self, client: Option<&Discord>) {
        let Some(dc) = client else {
            return self.not_configured("no Discord bot token is configured (HILT_DISCORD_BOT_TOKEN)".into(), false);
        };
        let (Some(guild), Some(role)) = (self.product.discord_guild_id.clone(), self.product.discord_role_id.clone()) else {
            return self.not_configured("the product has no discord_guild_id and discord_role_id".into(), true);
        };
        self.automation = true;
        self.state.delivery_path = "discord".into();
        let bot = match dc.current_user().await {
            Ok(bot) => bot,
            Err(e) => return self.automation_failed(&e),
        };
        self.state.reachable = Some(true);
        self.state.bot_username = Some(bot.username.clone());
        self.check("automation_configured", CheckStatus::Pass, format!("bot {} answers users/@me", bot.username));

        let buyer = self.m.discord_user_id.clone().filter(|id| is_snowflake(id));
        let (bot_member, roles, member) = tokio::join!(dc.get_member(&guild, &bot.id), dc.get_guild_roles(&guild), async {
            match &buyer {
                Some(user) => Some(dc.get_member(&guild, user).await),
                None => None,
            }
        });
        match (bot_member, roles) {
            (Err(e), _) | (_, Err(e)) => {
                if !is_unanswered(&e) {
                    self.hints.bot_rights = Some(format!("invite the bot to the guild with Manage Roles ({})", e.code));
                }
                self.provider_error("bot_permissions", &e);
            }
            (Ok(None), _) => {
                self.state.bot_status = Some("absent".into());
                self.hints.bot_rights = Some("invite the bot to the guild with Manage Roles".into());
                self.check("bot_permissions", CheckStatus::Fail, "the bot is not a member of the guild");
            }
            (Ok(Some(me)), Ok(roles)) => {
                self.state.bot_status = Some("member".into());
                let mine = roles.iter().filter(|r| r.id == guild || me.roles.contains(&r.id));
                let permissions = mine.clone().fold(0u64, |p, r| p | r.permissions);
                let highest = mine.map(|r| r.position).max().unwrap_or(0);
                let manage = permissions & (MANAGE_ROLES | ADMINISTRATOR) != 0;
                let target = roles.iter().find(|r| r.id == role);
                self.state.bot_can_manage_roles = Some(manage);
                self.state.bot_highest_role_position = Some(highest);
                self.state.role_position = target.map(|r| r.position);
                let (status, detail) = match target {
                    None => (CheckStatus::Fail, format!("the guild has no role {role} (unknown_role): update the product's discord_role_id")),
                    Some(_) if !manage => (CheckStatus::Fail, "the bot's roles lack the Manage Roles permission".into()),
                    Some(t) if t.position >= highest => (
                        CheckStatus::Fail,
                        format!(
                            "the product role (position {}) is not below the bot's highest role (position {highest}): Discord refuses to grant it",
                            t.position
                        ),
                    ),
                    Some(t) => (CheckStatus::Pass, format!("the bot has Manage Roles and its highest role (position {highest}) is above the product role (position {})", t.position)),
                };
                if status == CheckStatus::Fail {
                    self.hints.bot_rights = Some(match target {
                        None => "set the product's discord_role_id to an existing role".into(),
                        Some(_) if !manage => "give the bot's role the Manage Roles permission".into(),
                        Some(_) => "move the bot's role above the product role in the guild's role list".into(),
                    });
                    if target.is_none() {
                        self.hints.configure_product = true;
                    }
                }
                self.check("bot_permissions", status, detail);
            }
        }
        self.identity_check();
        match member {
            None => self.check("member_access", CheckStatus::Warn, "not checked: no valid Discord user id"),
            Some(Ok(Some(member))) => {
                let has_role = member.roles.contains(&role);
                self.state.member_status = Some("member".into());
                self.state.member_has_role = Some(has_role);
                let how = if has_role { "in the guild with the role" } else { "in the guild without the role" };
                self.access_check(has_role, false, how);
            }
            Some(Ok(None)) => {
                self.state.member_status = Some("not_in_guild".into());
                self.state.member_has_role = Some(false);
                let token = self.m.discord_access_token.is_some();
                self.access_check(false, false, "not a member of the guild");
                if self.has_access && !token {
                    self.hints.join_guild = Some(
                        "the buyer is not in the guild and no OAuth token is stored to add them: they must join (or sign in again)".into(),
                    );
                }
            }
            Some(Err(e)) if e.class == ErrorClass::MemberPermanent => {
                self.hints.identity = Some(e.message.clone());
                self.check("member_access", CheckStatus::Fail, format!("{} ({})", e.message, e.code));
            }
            Some(Err(e)) => self.provider_error("member_access", &e),
        }
        if matches!(self.m.last_error_code.as_deref(), Some("member_not_in_guild" | "invalid_oauth_token")) && self.hints.join_guild.is_none() && self.state.member_has_role != Some(true) {
            self.hints.join_guild = Some("the last delivery could not add the buyer: they must join the guild or sign in again".into());
        }
    }

    /// `getMe` / `users/@me` failed: no answer → warn, a rejected token → fail.
    fn automation_failed(&mut self, e: &ProviderError) {
        let blocked = if is_unanswered(e) { Blocked::Unreachable } else { Blocked::Rejected };
        if !is_unanswered(e) {
            self.state.reachable = Some(true);
            self.hints.configure = Some(format!("the bot token was rejected ({}): set a valid token", e.code));
        }
        self.provider_error("automation_configured", e);
        self.skip_rest(&blocked);
    }

    /// The buyer's standing against what the membership says they should have.
    fn access_check(&mut self, present: bool, banned: bool, how: &str) {
        let delivered = self.m.delivery_status == DeliveryStatus::Delivered.as_str();
        let pending = self.m.delivery_status == DeliveryStatus::Pending.as_str();
        let (status, detail) = match (self.has_access, present) {
            (true, true) => (CheckStatus::Pass, format!("the buyer has access: {how}")),
            (false, false) => (CheckStatus::Pass, format!("access ended ({}) and the buyer is {how}", self.m.status)),
            (false, true) => (CheckStatus::Warn, format!("access ended ({}) but the buyer is still {how}; the revoke job removes them", self.m.status)),
            (true, false) if banned => (CheckStatus::Fail, format!("the buyer is {how} (removed); a delivery retry lifts the removal")),
            (true, false) if pending => (CheckStatus::Warn, format!("the buyer is {how}; the first delivery attempt has not finished yet")),
            (true, false) if delivered && self.product.platform == "telegram" => {
                (CheckStatus::Warn, format!("the buyer is {how}: the invite link was handed over but not used yet (or they left)"))
            }
            (true, false) => (CheckStatus::Fail, format!("the buyer paid but is {how}")),
        };
        if self.has_access && !present {
            self.hints.retry = Some(format!("the buyer is {how}"));
        }
        self.check("member_access", status, detail);
    }

    fn fallback_check(&mut self) {
        let fallback_url = self.product.fallback_invite_url.is_some();
        let used = self.m.fallback_used != 0;
        let (status, detail) = match (self.automation, fallback_url, used) {
            (true, _, false) => (CheckStatus::Pass, "not in use: automation hands over personal access".to_owned()),
            (true, _, true) => {
                if self.has_access {
                    self.hints.retry.get_or_insert_with(|| "the buyer only has the static fallback link".into());
                }
                (CheckStatus::Warn, "the buyer was given the static fallback link (before automation was configured); a retry hands over personal access".to_owned())
            }
            (false, true, _) => (CheckStatus::Warn, "in use: deliveries hand out the product's static fallback link, which is not single-use and cannot be revoked".to_owned()),
            (false, false, _) => (CheckStatus::Fail, "no automation and no fallback_invite_url: nothing can be delivered".to_owned()),
        };
        self.check("fallback_link", status, detail);
    }

    fn finish(mut self) -> DeliveryDiagnostics {
        let m = self.m;
        let overall = if self.checks.iter().any(|c| c.status == CheckStatus::Fail) {
            OverallStatus::Error
        } else if self.checks.iter().any(|c| c.status == CheckStatus::Warn) {
            OverallStatus::Warning
        } else {
            OverallStatus::Ok
        };
        if self.has_access && matches!(DeliveryStatus::parse(&m.delivery_status), Some(DeliveryStatus::Failed | DeliveryStatus::ManualReview)) {
            self.hints.retry.get_or_insert_with(|| format!("delivery is {}", m.delivery_status));
        }
        let actions = self.actions(overall);
        let summary = summary(overall, &self.checks);
        DeliveryDiagnostics {
            membership_id: m.id.clone(),
            overall_status: overall,
            summary,
            provider_state: self.state,
            checks: self.checks,
            actions,
        }
    }

    /// Fixes first, then the retry that benefits from them, then the ticket.
    fn actions(&self, overall: OverallStatus) -> Vec<DiagnosticAction> {
        let m = self.m;
        let manual = |name: &str, reason: String| DiagnosticAction { name: name.into(), method: None, href: None, reason };
        let api = |name: &str, method: &str, href: String, reason: String| DiagnosticAction {
            name: name.into(),
            method: Some(method.into()),
            href: Some(href),
            reason,
        };
        let mut out = Vec::new();
        if let Some(what) = &self.hints.configure {
            let reason = format!("{what}; or set the product's fallback_invite_url");
            out.push(if self.hints.configure_product {
                api("configure_automation", "PATCH", format!("/v1/products/{}", self.product.id), reason)
            } else {
                manual("configure_automation", reason)
            });
        }
        if let Some(what) = &self.hints.bot_rights {
            out.push(if self.hints.configure_product && self.hints.configure.is_none() {
                api("fix_bot_rights", "PATCH", format!("/v1/products/{}", self.product.id), what.clone())
            } else {
                manual("fix_bot_rights", what.clone())
            });
        }
        if let Some(what) = &self.hints.identity {
            out.push(manual("collect_buyer_identity", what.clone()));
        }
        if let Some(what) = &self.hints.start_bot {
            let mut a = manual("ask_buyer_to_start_bot", what.clone());
            if let Some(name) = self.state.bot_username.as_ref().filter(|n| !n.is_empty()) {
                a.href = Some(format!("https://t.me/{name}"));
            }
            out.push(a);
        }
        if let Some(what) = &self.hints.join_guild {
            out.push(manual("ask_buyer_to_join_guild", what.clone()));
        }
        let can_deliver = self.automation || self.product.fallback_invite_url.is_some();
        if let (Some(why), true, true) = (&self.hints.retry, self.has_access, can_deliver) {
            let after = if out.is_empty() { String::new() } else { " after the steps above".to_owned() };
            out.push(api("retry_delivery", "POST", format!("/v1/memberships/{}/retry-delivery", m.id), format!("{why}: push delivery again{after}")));
        }
        let review = m.delivery_status == DeliveryStatus::ManualReview.as_str();
        if overall == OverallStatus::Error || review {
            let reason = if m.support_ticket_id.is_some() {
                "track the fix on the membership's delivery ticket".to_owned()
            } else {
                "delivery needs a person: open a delivery ticket linked to this membership".to_owned()
            };
            out.push(api("open_support_ticket", "POST", format!("/v1/memberships/{}/delivery-support-ticket", m.id), reason));
        }
        out
    }
}

fn summary(overall: OverallStatus, checks: &[DiagnosticCheck]) -> String {
    let worst = |status: CheckStatus| checks.iter().filter(move |c| c.status == status);
    match overall {
        OverallStatus::Ok => "Delivery looks healthy: the bot has the rights it needs and the buyer has access.".into(),
        OverallStatus::Warning | OverallStatus::Error => {
            let status = if overall == OverallStatus::Error { CheckStatus::Fail } else { CheckStatus::Warn };
            let first = worst(status).next();
            let count = worst(status).count();
            let noun = if overall == OverallStatus::Error { "problem" } else { "warning" };
            match first {
                Some(c) if count > 1 => format!("{count} {noun}s; first {}: {}", c.name, c.detail),
                Some(c) => format!("1 {noun}, {}: {}", c.name, c.detail),
                None => String::new(),
            }
        }
    }
}

/// The provider gave no usable answer: network, timeout, 5xx, 429, unreadable body.
fn is_unanswered(e: &ProviderError) -> bool {
    e.class == ErrorClass::Transient
}

fn is_snowflake(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok_and(|n| n > 0)
}

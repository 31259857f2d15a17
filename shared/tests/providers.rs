//! The provider layer through the real clients (teloxide types and transport settings, serenity
//! routes and models, lettre SMTP) against our fake servers, which are real HTTP/SMTP servers.

use std::time::{Duration, Instant};

use hilt_shared::{
    config::Config,
    providers::{
        AddOutcome, Discord, ErrorClass, Mailer, ProviderError, Providers, Telegram,
        discord::proxy_base,
    },
    testing::{BotRights, Failure, FakeDiscord, FakeTelegram, SmtpSink},
};

const TIMEOUT: Duration = Duration::from_secs(5);
const CHAT: i64 = -1001234567890;
const BUYER: i64 = 424242;
const GUILD: &str = "111111111111111111";
const ROLE: &str = "222222222222222222";
const USER: &str = "333333333333333333";

fn telegram(fake: &FakeTelegram) -> Telegram {
    Telegram::new(&fake.token(), &fake.url(), TIMEOUT).expect("telegram client")
}

fn discord(fake: &FakeDiscord) -> Discord {
    Discord::new(&fake.token(), &format!("{}/api", fake.url()), TIMEOUT).expect("discord client")
}

/// A loopback port nobody listens on.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn assert_error(err: &ProviderError, code: &str, class: ErrorClass, row: &str) {
    assert_eq!(err.code, code, "{row}: {err:?}");
    assert_eq!(err.class, class, "{row}: {err:?}");
    assert_eq!(
        err.retryable(),
        class != ErrorClass::MemberPermanent,
        "{row}"
    );
}

// ---------------------------------------------------------------- Telegram

#[tokio::test]
async fn telegram_delivery_and_removal_happy_path() {
    let fake = FakeTelegram::start().await;
    fake.add_chat(CHAT, BotRights::admin());
    fake.add_user(BUYER);
    fake.add_member(CHAT, BUYER, "kicked");
    let tg = telegram(&fake);

    let me = tg.get_me().await.expect("getMe");
    assert_eq!(me.id, fake.bot_id());
    assert_eq!(me.username, fake.bot_username());

    tg.lift_removal(CHAT, BUYER).await.expect("unban");
    assert_eq!(fake.member_status(CHAT, BUYER).as_deref(), Some("left"));
    let unban = &fake.calls("unbanChatMember")[0].params;
    assert_eq!(unban["only_if_banned"], true);

    let expire = chrono::Utc::now() + chrono::Duration::hours(24);
    let link = tg
        .create_invite_link(CHAT, expire, "hilt mem_abc")
        .await
        .expect("invite link");
    let links = fake.invite_links(CHAT);
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].link, link);
    assert_eq!(links[0].member_limit, Some(1));
    assert_eq!(links[0].expire_date, Some(expire.timestamp()));
    assert!(!links[0].creates_join_request);
    assert!(
        fake.calls("exportChatInviteLink").is_empty(),
        "never revoke the primary link"
    );

    tg.send_message(BUYER, &format!("Your access: {link}"))
        .await
        .expect("DM");
    assert_eq!(fake.dms_to(BUYER), vec![format!("Your access: {link}")]);

    assert!(fake.join_with_link(CHAT, BUYER, &link));
    assert!(!fake.join_with_link(CHAT, BUYER + 1, &link), "single use");
    let state = tg
        .get_chat_member(CHAT, BUYER)
        .await
        .expect("getChatMember");
    assert_eq!(state.status, "member");
    assert!(state.is_present());

    let bot = tg
        .get_chat_member(CHAT, fake.bot_id())
        .await
        .expect("bot member");
    assert_eq!(bot.status, "administrator");
    assert_eq!(bot.can_invite_users, Some(true));

    tg.remove_member(CHAT, BUYER).await.expect("remove");
    assert_eq!(
        fake.member_status(CHAT, BUYER).as_deref(),
        Some("left"),
        "removed but may rejoin"
    );
    let unbans = fake.calls("unbanChatMember");
    assert_eq!(
        unbans
            .last()
            .expect("second unban")
            .params
            .get("only_if_banned"),
        None
    );
    assert_eq!(fake.calls("banChatMember").len(), 1);
}

#[tokio::test]
async fn telegram_lift_removal_leaves_a_current_member_in_place() {
    let fake = FakeTelegram::start().await;
    fake.add_chat(CHAT, BotRights::admin());
    fake.add_member(CHAT, BUYER, "member");
    telegram(&fake)
        .lift_removal(CHAT, BUYER)
        .await
        .expect("unban");
    assert_eq!(fake.member_status(CHAT, BUYER).as_deref(), Some("member"));
}

/// One row per line of the Telegram classification table in docs/PROVIDERS.md.
#[tokio::test]
async fn telegram_errors_are_classified() {
    use ErrorClass::*;
    enum Call {
        Invite,
        Dm,
        Unban,
        Member,
    }
    struct Row {
        name: &'static str,
        setup: fn(&FakeTelegram),
        call: Call,
        code: &'static str,
        class: ErrorClass,
        retry_after: Option<u64>,
        status: Option<u16>,
    }
    let rows = [
        Row {
            name: "429 flood control",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::TooManyRequests { retry_after: 7 },
                )
            },
            call: Call::Invite,
            code: "rate_limited",
            class: Transient,
            retry_after: Some(7),
            status: Some(429),
        },
        Row {
            name: "500 JSON",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(500, "Internal Server Error"),
                )
            },
            call: Call::Invite,
            code: "provider_5xx",
            class: Transient,
            retry_after: None,
            status: Some(500),
        },
        Row {
            name: "502 HTML",
            setup: |f| f.fail_next("createChatInviteLink", Failure::Status(502)),
            call: Call::Invite,
            code: "provider_5xx",
            class: Transient,
            retry_after: None,
            status: Some(502),
        },
        Row {
            name: "provider down",
            setup: |f| f.set_down(true),
            call: Call::Dm,
            code: "provider_5xx",
            class: Transient,
            retry_after: None,
            status: Some(502),
        },
        Row {
            name: "blocked",
            setup: |f| f.block_bot(BUYER),
            call: Call::Dm,
            code: "user_blocked_bot",
            class: MemberPermanent,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "never started (Forbidden)",
            setup: |f| f.add_user_not_started(BUYER),
            call: Call::Dm,
            code: "user_not_started_bot",
            class: MemberPermanent,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "never started (old Unauthorized text)",
            setup: |f| {
                f.fail_next(
                    "sendMessage",
                    Failure::telegram(
                        403,
                        "Unauthorized: bot can't initiate conversation with a user",
                    ),
                )
            },
            call: Call::Dm,
            code: "user_not_started_bot",
            class: MemberPermanent,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "DM chat not found",
            setup: |_| {},
            call: Call::Dm,
            code: "user_not_started_bot",
            class: MemberPermanent,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "user deactivated",
            setup: |f| {
                f.fail_next(
                    "sendMessage",
                    Failure::telegram(403, "Forbidden: user is deactivated"),
                )
            },
            call: Call::Dm,
            code: "user_deactivated",
            class: MemberPermanent,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "group chat not found",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(400, "Bad Request: chat not found"),
                )
            },
            call: Call::Invite,
            code: "chat_not_found",
            class: Configuration,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "no invite right",
            setup: |f| f.add_chat(CHAT, BotRights::member()),
            call: Call::Invite,
            code: "missing_permissions",
            class: Configuration,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "channel admin needed",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(
                        400,
                        "Bad Request: need administrator rights in the channel chat",
                    ),
                )
            },
            call: Call::Invite,
            code: "missing_permissions",
            class: Configuration,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "no restrict right",
            setup: |f| {
                f.add_chat(
                    CHAT,
                    BotRights {
                        can_restrict_members: false,
                        ..BotRights::admin()
                    },
                )
            },
            call: Call::Unban,
            code: "missing_permissions",
            class: Configuration,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "bot kicked",
            setup: |f| f.add_chat(CHAT, BotRights::absent()),
            call: Call::Invite,
            code: "bot_not_in_chat",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "bot kicked from channel",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(403, "Forbidden: bot was kicked from the channel chat"),
                )
            },
            call: Call::Invite,
            code: "bot_not_in_chat",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "bot not a member",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(403, "Forbidden: bot is not a member of the channel chat"),
                )
            },
            call: Call::Invite,
            code: "bot_not_in_chat",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "user not found",
            setup: |f| {
                f.fail_next(
                    "getChatMember",
                    Failure::telegram(400, "Bad Request: user not found"),
                )
            },
            call: Call::Member,
            code: "unknown_user",
            class: MemberPermanent,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "participant id invalid",
            setup: |f| f.fail_next("unbanChatMember", Failure::UnknownMember),
            call: Call::Unban,
            code: "unknown_user",
            class: MemberPermanent,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "owner cannot be removed",
            setup: |f| {
                f.fail_next(
                    "unbanChatMember",
                    Failure::telegram(400, "Bad Request: can't remove chat owner"),
                )
            },
            call: Call::Unban,
            code: "member_is_admin",
            class: MemberPermanent,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "unknown 400",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(400, "Bad Request: something new"),
                )
            },
            call: Call::Invite,
            code: "provider_rejected",
            class: Configuration,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "unknown 403",
            setup: |f| {
                f.fail_next(
                    "createChatInviteLink",
                    Failure::telegram(403, "Forbidden: something new"),
                )
            },
            call: Call::Invite,
            code: "forbidden",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
    ];
    for row in rows {
        let fake = FakeTelegram::start().await;
        fake.add_chat(CHAT, BotRights::admin());
        (row.setup)(&fake);
        let tg = telegram(&fake);
        let expire = chrono::Utc::now() + chrono::Duration::hours(1);
        let started = Instant::now();
        let err = match row.call {
            Call::Invite => tg.create_invite_link(CHAT, expire, "x").await.map(drop),
            Call::Dm => tg.send_message(BUYER, "hello").await,
            Call::Unban => tg.lift_removal(CHAT, BUYER).await,
            Call::Member => tg.get_chat_member(CHAT, BUYER).await.map(drop),
        }
        .expect_err(row.name);
        assert_error(&err, row.code, row.class, row.name);
        assert_eq!(
            err.retry_after,
            row.retry_after.map(Duration::from_secs),
            "{}",
            row.name
        );
        assert_eq!(err.http_status, row.status, "{}", row.name);
        assert!(
            !err.message.contains(&fake.token()),
            "{}: token leaked",
            row.name
        );
        // Our request path does not inherit teloxide's 10 s sleep on 5xx.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}: took {:?}",
            row.name,
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn telegram_wrong_token_is_a_configuration_error() {
    let fake = FakeTelegram::start().await;
    let tg = Telegram::new("123:wrong", &fake.url(), TIMEOUT).expect("client");
    let err = tg.get_me().await.expect_err("401");
    assert_error(&err, "invalid_bot_token", ErrorClass::Configuration, "401");
    assert_eq!(err.http_status, Some(401));
}

#[tokio::test]
async fn telegram_unreachable_or_slow_is_transient_within_the_timeout() {
    let url = closed_port_url().await;
    let token = "999:SECRET_TOKEN_VALUE";
    let tg = Telegram::new(token, &url, Duration::from_millis(500)).expect("client");
    let started = Instant::now();
    let err = tg.get_me().await.expect_err("closed port");
    assert_error(&err, "network", ErrorClass::Transient, "closed port");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        !err.message.contains("SECRET_TOKEN_VALUE") && !err.message.contains(&url),
        "{}",
        err.message
    );

    let fake = FakeTelegram::start().await;
    fake.fail_next("getMe", Failure::Slow(Duration::from_secs(5)));
    let tg = Telegram::new(&fake.token(), &fake.url(), Duration::from_millis(500)).expect("client");
    let started = Instant::now();
    let err = tg.get_me().await.expect_err("slow");
    assert_error(&err, "timeout", ErrorClass::Transient, "slow");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(!err.message.contains(&fake.token()));
}

/// The fake speaks the wire format teloxide's own transport expects, and teloxide's errors map
/// onto the same table.
#[tokio::test]
async fn teloxide_bot_talks_to_the_fake() {
    use teloxide::{
        payloads::CreateChatInviteLinkSetters,
        prelude::Requester,
        requests::Request,
        types::{ChatId, UserId},
    };
    let fake = FakeTelegram::start().await;
    fake.add_chat(CHAT, BotRights::admin());
    fake.add_user(BUYER);
    fake.add_member(CHAT, BUYER, "restricted");
    let bot = telegram(&fake).bot().clone();

    let me = bot.get_me().send().await.expect("getMe via teloxide");
    assert_eq!(me.user.id.0 as i64, fake.bot_id());
    let link = bot
        .create_chat_invite_link(ChatId(CHAT))
        .member_limit(1)
        .expire_date(chrono::Utc::now() + chrono::Duration::hours(1))
        .send()
        .await
        .expect("invite via teloxide");
    assert_eq!(link.member_limit, Some(1));
    bot.send_message(ChatId(BUYER), "hi")
        .send()
        .await
        .expect("DM via teloxide");
    for user in [BUYER, fake.bot_id()] {
        bot.get_chat_member(ChatId(CHAT), UserId(user as u64))
            .send()
            .await
            .expect("member via teloxide");
    }

    fake.block_bot(BUYER);
    let err: ProviderError = bot
        .send_message(ChatId(BUYER), "hi")
        .send()
        .await
        .expect_err("blocked")
        .into();
    assert_error(
        &err,
        "user_blocked_bot",
        ErrorClass::MemberPermanent,
        "teloxide blocked",
    );
    fake.fail_next("sendMessage", Failure::TooManyRequests { retry_after: 3 });
    let err: ProviderError = bot
        .send_message(ChatId(BUYER), "hi")
        .send()
        .await
        .expect_err("429")
        .into();
    assert_error(&err, "rate_limited", ErrorClass::Transient, "teloxide 429");
    assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
    fake.fail_next(
        "sendMessage",
        Failure::telegram(400, "Bad Request: PARTICIPANT_ID_INVALID"),
    );
    let err: ProviderError = bot
        .send_message(ChatId(BUYER), "hi")
        .send()
        .await
        .expect_err("unknown")
        .into();
    assert_error(
        &err,
        "unknown_user",
        ErrorClass::MemberPermanent,
        "teloxide unknown",
    );
}

#[tokio::test]
async fn telegram_form_encoded_parameters_are_understood() {
    let fake = FakeTelegram::start().await;
    fake.add_user(BUYER);
    let response = reqwest::Client::new()
        .post(format!("{}/bot{}/SENDMESSAGE", fake.url(), fake.token()))
        .form(&[
            ("chat_id", BUYER.to_string()),
            ("text", "hi there & more".to_owned()),
        ])
        .send()
        .await
        .expect("form post");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["ok"], true);
    assert_eq!(fake.dms_to(BUYER), vec!["hi there & more".to_owned()]);
}

// ---------------------------------------------------------------- Discord

#[tokio::test]
async fn discord_grants_and_removes_roles() {
    let fake = FakeDiscord::start().await;
    fake.add_guild(GUILD);
    fake.add_role(GUILD, ROLE, 5);
    fake.add_member(GUILD, USER, &[]);
    let dc = discord(&fake);

    let me = dc.current_user().await.expect("users/@me");
    assert_eq!(me.id, fake.bot_id());

    let member = dc
        .get_member(GUILD, USER)
        .await
        .expect("get member")
        .expect("is a member");
    assert!(member.roles.is_empty());
    assert_eq!(
        dc.get_member(GUILD, "444444444444444444")
            .await
            .expect("unknown member"),
        None
    );

    dc.grant_role(GUILD, USER, ROLE, None)
        .await
        .expect("grant to member");
    assert_eq!(fake.roles_of(GUILD, USER), Some(vec![ROLE.to_owned()]));
    dc.add_role(GUILD, USER, ROLE).await.expect("idempotent");
    assert_eq!(fake.roles_of(GUILD, USER), Some(vec![ROLE.to_owned()]));

    dc.remove_role(GUILD, USER, ROLE).await.expect("remove");
    assert_eq!(fake.roles_of(GUILD, USER), Some(vec![]));

    let roles = dc.get_guild_roles(GUILD).await.expect("roles");
    assert!(roles.iter().any(|r| r.id == ROLE && r.position == 5));
    assert_eq!(
        dc.bot_highest_role_position(GUILD).await.expect("bot top"),
        10
    );
}

#[tokio::test]
async fn discord_adds_a_non_member_with_their_oauth_token() {
    let fake = FakeDiscord::start().await;
    fake.add_guild(GUILD);
    fake.add_role(GUILD, ROLE, 5);
    fake.add_oauth_token("oauth-secret", USER);
    let dc = discord(&fake);

    dc.grant_role(GUILD, USER, ROLE, Some("oauth-secret"))
        .await
        .expect("join with role");
    assert_eq!(fake.roles_of(GUILD, USER), Some(vec![ROLE.to_owned()]));
    let put = &fake.calls("add_member")[0].params;
    assert_eq!(put["roles"], serde_json::json!([ROLE]));
    assert!(
        put.get("access_token").is_none(),
        "the fake does not keep OAuth tokens"
    );

    // A second PUT for a member answers 204 and applies nothing.
    let outcome = dc
        .add_member_with_oauth(GUILD, USER, "oauth-secret", ROLE)
        .await
        .expect("204");
    assert_eq!(outcome, AddOutcome::AlreadyMember);
}

#[tokio::test]
async fn discord_already_member_answer_still_gets_the_role() {
    let fake = FakeDiscord::start().await;
    fake.add_guild(GUILD);
    fake.add_role(GUILD, ROLE, 5);
    fake.add_member(GUILD, USER, &[]);
    fake.add_oauth_token("oauth-secret", USER);
    // The member lookup races with the user joining on their own: 10007, then PUT says 204.
    fake.fail_next("get_member", Failure::UnknownMember);
    discord(&fake)
        .grant_role(GUILD, USER, ROLE, Some("oauth-secret"))
        .await
        .expect("grant");
    assert_eq!(fake.calls("add_member").len(), 1);
    assert_eq!(fake.calls("add_role").len(), 1);
    assert_eq!(fake.roles_of(GUILD, USER), Some(vec![ROLE.to_owned()]));
}

#[tokio::test]
async fn discord_non_member_without_token_is_member_not_in_guild() {
    let fake = FakeDiscord::start().await;
    fake.add_guild(GUILD);
    fake.add_role(GUILD, ROLE, 5);
    let err = discord(&fake)
        .grant_role(GUILD, USER, ROLE, None)
        .await
        .expect_err("no token");
    assert_error(
        &err,
        "member_not_in_guild",
        ErrorClass::MemberPermanent,
        "no token",
    );
    assert!(fake.calls("add_member").is_empty());
}

/// One row per line of the Discord classification table in docs/PROVIDERS.md.
#[tokio::test]
async fn discord_errors_are_classified() {
    use ErrorClass::*;
    enum Call {
        Grant(Option<&'static str>),
        AddRole,
        Roles,
    }
    struct Row {
        name: &'static str,
        setup: fn(&FakeDiscord),
        call: Call,
        code: &'static str,
        class: ErrorClass,
        retry_after: Option<Duration>,
        status: Option<u16>,
    }
    let rows = [
        Row {
            name: "10004 unknown guild",
            setup: |f| {
                f.add_member(GUILD, USER, &[]);
            },
            call: Call::Roles,
            code: "unknown_guild",
            class: Configuration,
            retry_after: None,
            status: Some(404),
        },
        Row {
            name: "10007 unknown member",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 5);
            },
            call: Call::AddRole,
            code: "member_not_in_guild",
            class: MemberPermanent,
            retry_after: None,
            status: Some(404),
        },
        Row {
            name: "10011 unknown role",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_member(GUILD, USER, &[]);
            },
            call: Call::Grant(None),
            code: "unknown_role",
            class: Configuration,
            retry_after: None,
            status: Some(404),
        },
        Row {
            name: "10013 unknown user",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 5);
            },
            call: Call::Grant(Some("tok")),
            code: "unknown_user",
            class: MemberPermanent,
            retry_after: None,
            status: Some(404),
        },
        Row {
            name: "50001 missing access",
            setup: |f| {
                f.add_guild(GUILD);
                f.remove_bot(GUILD);
            },
            call: Call::Roles,
            code: "missing_access",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "50013 role above the bot",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 11);
                f.add_member(GUILD, USER, &[]);
            },
            call: Call::Grant(None),
            code: "missing_permissions",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "50013 no manage roles",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 5);
                f.add_member(GUILD, USER, &[]);
                f.set_bot_can_manage_roles(GUILD, false);
            },
            call: Call::Grant(None),
            code: "missing_permissions",
            class: Configuration,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "50025 invalid oauth token",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 5);
                f.add_oauth_token("other", USER);
            },
            call: Call::Grant(Some("expired")),
            code: "invalid_oauth_token",
            class: MemberPermanent,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "40007 buyer banned from the guild",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 5);
                f.add_oauth_token("oauth-banned", USER);
                f.fail_next("add_member", Failure::discord(403, 40007, "The user is banned from this guild."));
            },
            call: Call::Grant(Some("oauth-banned")),
            code: "user_banned",
            class: MemberPermanent,
            retry_after: None,
            status: Some(403),
        },
        Row {
            name: "30001 buyer already in 100 guilds",
            setup: |f| {
                f.add_guild(GUILD);
                f.add_role(GUILD, ROLE, 5);
                f.add_oauth_token("oauth-full", USER);
                f.fail_next("add_member", Failure::discord(400, 30001, "Maximum number of guilds reached (100)"));
            },
            call: Call::Grant(Some("oauth-full")),
            code: "user_guild_limit",
            class: MemberPermanent,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "50035 invalid form body",
            setup: |f| {
                f.add_guild(GUILD);
                f.fail_next(
                    "get_roles",
                    Failure::discord(400, 50035, "Invalid Form Body"),
                );
            },
            call: Call::Roles,
            code: "invalid_request",
            class: Configuration,
            retry_after: None,
            status: Some(400),
        },
        Row {
            name: "429 retry after",
            setup: |f| {
                f.add_guild(GUILD);
                f.fail_next("get_roles", Failure::TooManyRequests { retry_after: 2 });
            },
            call: Call::Roles,
            code: "rate_limited",
            class: Transient,
            retry_after: Some(Duration::from_secs(2)),
            status: Some(429),
        },
        Row {
            name: "500",
            setup: |f| {
                f.add_guild(GUILD);
                f.fail_next(
                    "get_roles",
                    Failure::discord(500, 0, "500: Internal Server Error"),
                );
            },
            call: Call::Roles,
            code: "provider_5xx",
            class: Transient,
            retry_after: None,
            status: Some(500),
        },
        Row {
            name: "down (502 HTML)",
            setup: |f| {
                f.add_guild(GUILD);
                f.set_down(true);
            },
            call: Call::Roles,
            code: "provider_5xx",
            class: Transient,
            retry_after: None,
            status: Some(502),
        },
    ];
    for row in rows {
        let fake = FakeDiscord::start().await;
        (row.setup)(&fake);
        let dc = discord(&fake);
        let err = match row.call {
            Call::Grant(token) => dc.grant_role(GUILD, USER, ROLE, token).await,
            Call::AddRole => dc.add_role(GUILD, USER, ROLE).await,
            Call::Roles => dc.get_guild_roles(GUILD).await.map(drop),
        }
        .expect_err(row.name);
        assert_error(&err, row.code, row.class, row.name);
        assert_eq!(err.retry_after, row.retry_after, "{}", row.name);
        assert_eq!(err.http_status, row.status, "{}", row.name);
        assert!(
            !err.message.contains(&fake.token()),
            "{}: token leaked",
            row.name
        );
    }
}

#[tokio::test]
async fn discord_rate_limit_takes_the_json_retry_after_when_there_is_no_header() {
    // A Cloudflare-style answer: JSON body only, fractional seconds.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": true})),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let err = Discord::new("t", &url, TIMEOUT)
        .expect("client")
        .current_user()
        .await
        .expect_err("429");
    server.abort();
    assert_error(&err, "rate_limited", ErrorClass::Transient, "json 429");
    assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn discord_wrong_token_is_a_configuration_error() {
    let fake = FakeDiscord::start().await;
    let err = Discord::new("not-the-token", &fake.url(), TIMEOUT)
        .expect("client")
        .current_user()
        .await
        .expect_err("401");
    assert_error(&err, "invalid_bot_token", ErrorClass::Configuration, "401");
    assert_eq!(err.http_status, Some(401));
}

#[tokio::test]
async fn discord_base_url_may_be_given_with_or_without_api() {
    assert_eq!(proxy_base("https://discord.com/api"), "https://discord.com");
    assert_eq!(
        proxy_base("https://discord.com/api/v10/"),
        "https://discord.com"
    );
    assert_eq!(proxy_base("https://discord.com"), "https://discord.com");
    let fake = FakeDiscord::start().await;
    for base in [
        fake.url(),
        format!("{}/api", fake.url()),
        format!("{}/api/v10", fake.url()),
    ] {
        let dc = Discord::new(&fake.token(), &base, TIMEOUT).expect("client");
        assert_eq!(dc.current_user().await.expect(&base).id, fake.bot_id());
    }
}

#[tokio::test]
async fn discord_unreachable_or_slow_is_transient_within_the_timeout() {
    let dc =
        Discord::new("tok", &closed_port_url().await, Duration::from_millis(500)).expect("client");
    let started = Instant::now();
    let err = dc.current_user().await.expect_err("closed");
    assert_error(&err, "network", ErrorClass::Transient, "closed port");
    assert!(started.elapsed() < Duration::from_secs(2));

    let fake = FakeDiscord::start().await;
    fake.add_guild(GUILD);
    fake.fail_next("get_roles", Failure::Slow(Duration::from_secs(5)));
    let dc = Discord::new(&fake.token(), &fake.url(), Duration::from_millis(500)).expect("client");
    let started = Instant::now();
    let err = dc.get_guild_roles(GUILD).await.expect_err("slow");
    assert_error(&err, "timeout", ErrorClass::Transient, "slow");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// serenity's own methods work against the fake, and their errors map onto the same table.
#[tokio::test]
async fn serenity_http_talks_to_the_fake() {
    use serenity::model::id::{GuildId, RoleId, UserId};
    let fake = FakeDiscord::start().await;
    fake.add_guild(GUILD);
    fake.add_role(GUILD, ROLE, 5);
    fake.add_role(GUILD, "555555555555555555", 20);
    fake.add_member(GUILD, USER, &[]);
    let dc = discord(&fake);
    let http = dc.http();
    let (g, u) = (
        GuildId::new(GUILD.parse().expect("id")),
        UserId::new(USER.parse().expect("id")),
    );

    http.get_current_user()
        .await
        .expect("current user via serenity");
    let member = http.get_member(g, u).await.expect("member via serenity");
    assert!(member.roles.is_empty());
    let added = http
        .add_guild_member(
            g,
            u,
            &serde_json::json!({"access_token": "x", "roles": [ROLE]}),
        )
        .await
        .expect("PUT member via serenity");
    assert!(added.is_none(), "204 → None for an existing member");
    http.add_member_role(g, u, RoleId::new(ROLE.parse().expect("id")), None)
        .await
        .expect("role via serenity");
    assert_eq!(fake.roles_of(GUILD, USER), Some(vec![ROLE.to_owned()]));
    assert_eq!(
        http.get_guild_roles(g)
            .await
            .expect("roles via serenity")
            .len(),
        4
    );

    let err: ProviderError = http
        .add_member_role(g, u, RoleId::new(555555555555555555), None)
        .await
        .expect_err("above the bot")
        .into();
    assert_error(
        &err,
        "missing_permissions",
        ErrorClass::Configuration,
        "serenity 50013",
    );
}

// ---------------------------------------------------------------- Email

fn mailer(smtp: Option<&str>, outbox: &std::path::Path, timeout: Duration) -> Mailer {
    Mailer::new(smtp, "Hilt <receipts@hilt.test>", outbox, timeout).expect("mailer")
}

#[tokio::test]
async fn email_goes_through_smtp_as_multipart() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let m = mailer(Some(&sink.url()), dir.path(), TIMEOUT);
    m.send(
        "buyer@example.com",
        "Your receipt",
        "plain body",
        Some("<p>html body</p>"),
        "proof_123",
    )
    .await
    .expect("smtp send");
    m.send("buyer@example.com", "Plain", "only text", None, "proof_456")
        .await
        .expect("second send, pooled");
    let mails = sink.messages();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].from, "receipts@hilt.test");
    assert_eq!(mails[0].to, vec!["buyer@example.com".to_owned()]);
    let data = &mails[0].data;
    assert!(data.contains("Message-ID: <proof_123@hilt>"), "{data}");
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(
        data.contains("plain body") && data.contains("<p>html body</p>"),
        "{data}"
    );
    assert!(!mails[1].data.contains("multipart"));
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "nothing in the outbox"
    );
}

#[tokio::test]
async fn smtp_errors_are_classified() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let m = mailer(Some(&sink.url()), dir.path(), TIMEOUT);

    sink.reject_next_rcpt(451);
    let err = m
        .send("a@example.com", "s", "t", None, "m1")
        .await
        .expect_err("451");
    assert_error(&err, "smtp_transient", ErrorClass::Transient, "451");
    assert_eq!(err.http_status, Some(451));

    sink.reject_next_rcpt(550);
    let err = m
        .send("a@example.com", "s", "t", None, "m2")
        .await
        .expect_err("550");
    assert_error(&err, "email_rejected", ErrorClass::MemberPermanent, "550");
    assert!(!err.message.contains("a@example.com"));

    let err = m
        .send("not an address", "s", "t", None, "m3")
        .await
        .expect_err("invalid");
    assert_error(
        &err,
        "invalid_email",
        ErrorClass::MemberPermanent,
        "bad address",
    );

    let closed = closed_port_url().await.replace("http://", "smtp://");
    let started = Instant::now();
    let err = mailer(Some(&closed), dir.path(), Duration::from_millis(500))
        .send("a@example.com", "s", "t", None, "m4")
        .await
        .expect_err("closed");
    assert_eq!(err.class, ErrorClass::Transient, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let silent = SmtpSink::start().await;
    silent.set_silent(true);
    let started = Instant::now();
    let err = mailer(Some(&silent.url()), dir.path(), Duration::from_millis(500))
        .send("a@example.com", "s", "t", None, "m5")
        .await
        .expect_err("silent server");
    assert_eq!(err.class, ErrorClass::Transient, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn email_without_smtp_lands_in_the_outbox_once_per_message_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let outbox = dir.path().join("outbox");
    let m = mailer(None, &outbox, TIMEOUT);
    assert_eq!(m.outbox_dir(), Some(outbox.as_path()));
    for _ in 0..2 {
        m.send(
            "buyer@example.com",
            "Your receipt",
            "text",
            Some("<b>html</b>"),
            "proof_abc",
        )
        .await
        .expect("outbox");
    }
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox exists")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some("proof_abc.eml")
    );
    let eml = std::fs::read_to_string(&files[0]).expect("read");
    assert!(
        eml.contains("To: buyer@example.com") && eml.contains("Subject: Your receipt"),
        "{eml}"
    );
}

// ---------------------------------------------------------------- Wiring

#[tokio::test]
async fn providers_follow_the_configuration() {
    let tg = FakeTelegram::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = Config::for_database("sqlite::memory:");
    config.outbox_dir = dir.path().to_path_buf();

    let none = Providers::from_config(&config).expect("providers");
    assert!(none.telegram.is_none() && none.discord.is_none());
    assert!(none.mailer.outbox_dir().is_some());

    config.telegram_bot_token = Some(tg.token());
    config.telegram_api_url = tg.url();
    config.discord_bot_token = Some(dc.token());
    config.discord_api_url = format!("{}/api", dc.url());
    let some = Providers::from_config(&config).expect("providers");
    let me = some
        .telegram
        .as_ref()
        .expect("telegram")
        .get_me()
        .await
        .expect("getMe");
    assert_eq!(me.id, tg.bot_id());
    let bot = some
        .discord
        .as_ref()
        .expect("discord")
        .current_user()
        .await
        .expect("@me");
    assert_eq!(bot.id, dc.bot_id());
}

/// Why Telegram calls do not go through teloxide's `.send()`: it sleeps 10 s on every 5xx
/// (`DELAY_ON_SERVER_ERROR`) and then reports the answer as an API error without its status.
/// Ignored because it takes 10 s; run with `--ignored` to re-measure.
#[tokio::test]
#[ignore = "takes 10 s: measures teloxide's built-in delay on 5xx"]
async fn teloxide_send_sleeps_ten_seconds_on_a_5xx() {
    use teloxide::{prelude::Requester, requests::Request};
    let fake = FakeTelegram::start().await;
    fake.fail_next("getMe", Failure::telegram(500, "Internal Server Error"));
    let bot = telegram(&fake).bot().clone();
    let started = Instant::now();
    let err: ProviderError = bot.get_me().send().await.expect_err("500").into();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(10), "{took:?}");
    assert_eq!(err.http_status, None, "teloxide drops the status");
    // Our client's total timeout (5 s here) also covers the body read that follows the sleep,
    // so what comes back is a timeout, not the 500.
    assert_error(&err, "timeout", ErrorClass::Transient, "teloxide 500");

    fake.fail_next("getMe", Failure::telegram(500, "Internal Server Error"));
    let started = Instant::now();
    let err = telegram(&fake).get_me().await.expect_err("500");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (err.code.as_str(), err.http_status),
        ("provider_5xx", Some(500))
    );
}

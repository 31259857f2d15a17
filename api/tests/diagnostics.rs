//! Delivery diagnostics (SPEC §7): the route asks our fake Telegram and Discord servers live,
//! through the API's short-timeout provider clients, and turns the answers into checks and
//! next steps. A provider that is down or slow is a `warn`, never a 5xx.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{
    assert_error,
    rescue::{CHAT, GUILD, ROLE, Rescue},
};
use hilt_shared::{
    config::Config,
    providers::Providers,
    testing::{BotRights, Failure},
};
use serde_json::{Value, json};

/// The fakes' provider clients, as the API builds them at start (3 s timeout).
async fn rescue(app: common::TestApp) -> Rescue {
    let mut r = Rescue::start(app).await;
    let config = r.ctx.config.clone();
    use_config(&mut r, &config);
    r
}

fn use_config(r: &mut Rescue, config: &Config) {
    r.app.use_providers(Providers::from_config_with_timeout(config, Duration::from_secs(3)).expect("providers"));
}

async fn diagnose(r: &Rescue, membership: &str) -> Value {
    let d = r.app.get(&format!("/v1/memberships/{membership}/delivery-diagnostics"), &r.key).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    d.body
}

fn check<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["checks"].as_array().expect("checks").iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} check: {d}"))
}

fn status<'a>(d: &'a Value, name: &str) -> &'a str {
    check(d, name)["status"].as_str().expect("status")
}

fn actions(d: &Value) -> Vec<String> {
    d["actions"].as_array().expect("actions").iter().map(|a| a["name"].as_str().expect("name").to_owned()).collect()
}

fn action<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["actions"].as_array().expect("actions").iter().find(|a| a["name"] == name).unwrap_or_else(|| panic!("no {name} action: {d}"))
}

fn assert_shape(d: &Value) {
    let names: Vec<&str> = d["checks"].as_array().expect("checks").iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["automation_configured", "bot_permissions", "member_identity", "member_access", "fallback_link"], "{d}");
    for c in d["checks"].as_array().expect("checks") {
        assert!(matches!(c["status"].as_str(), Some("pass" | "warn" | "fail")), "{c}");
        assert!(c["detail"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    }
    assert!(matches!(d["overall_status"].as_str(), Some("ok" | "warning" | "error")), "{d}");
    assert!(d["summary"].as_str().is_some_and(|s| !s.is_empty()));
    for a in d["actions"].as_array().expect("actions") {
        assert!(a["reason"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
        // An API call has both; a human step has no method (and at most a link for the buyer).
        assert!(a["method"].is_null() || a["href"].as_str().is_some_and(|h| h.starts_with("/v1/")), "{a}");
    }
}

backend_test!(a_healthy_telegram_membership_is_ok, |app| {
    let r = rescue(app).await;
    r.tg.add_user(701);
    r.tg.add_member(CHAT, 701, "member");
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 701})).await;
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "ok", "{d}");
    assert!(d["checks"].as_array().expect("checks").iter().all(|c| c["status"] == "pass"), "{d}");
    assert_eq!(d["actions"], json!([]));
    let state = &d["provider_state"];
    assert_eq!(state["reachable"], true);
    assert_eq!(state["bot_status"], "administrator");
    assert_eq!(state["bot_can_invite_users"], true);
    assert_eq!(state["member_status"], "member");
    assert_eq!(state["delivery_path"], "telegram");
    assert_eq!(r.tg.calls("getChatMember").len(), 2, "the bot's and the buyer's standing, asked live");
    assert!(!d.to_string().contains(&r.tg.token()), "no token in the answer");
});

backend_test!(a_healthy_discord_membership_is_ok, |app| {
    let r = rescue(app).await;
    r.dc.add_member(GUILD, "1001", &[ROLE]);
    let product = r.discord_product().await;
    let (_, membership) = r.paid(&product, json!({"discord_user_id": "1001"})).await;
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "ok", "{d}");
    assert_eq!(d["actions"], json!([]));
    let state = &d["provider_state"];
    assert_eq!(state["bot_can_manage_roles"], true);
    assert_eq!(state["bot_highest_role_position"], 10);
    assert_eq!(state["role_position"], 1);
    assert_eq!(state["member_has_role"], true);
});

backend_test!(without_a_bot_token_automation_fails_or_falls_back, |app| {
    let mut r = rescue(app).await;
    let mut config = (*r.ctx.config).clone();
    config.telegram_bot_token = None;
    use_config(&mut r, &config);
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 702})).await;
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "error", "{d}");
    assert_eq!(status(&d, "automation_configured"), "fail");
    assert!(check(&d, "automation_configured")["detail"].as_str().expect("detail").contains("HILT_TELEGRAM_BOT_TOKEN"));
    assert_eq!(status(&d, "bot_permissions"), "warn", "not checked");
    assert_eq!(status(&d, "fallback_link"), "fail", "nothing can be delivered");
    assert_eq!(d["provider_state"]["delivery_path"], "none");
    assert_eq!(actions(&d), ["configure_automation", "open_support_ticket"]);
    assert!(r.tg.all_calls().is_empty(), "nothing to ask without a token");

    // With a fallback link the same product still delivers: a warning, not an error.
    let patch = r.app.patch(&format!("/v1/products/{product}"), &r.key, json!({"fallback_invite_url": "https://t.me/+static"})).await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.body);
    let d = diagnose(&r, &membership).await;
    assert_eq!(d["overall_status"], "warning", "{d}");
    assert_eq!(status(&d, "automation_configured"), "warn");
    assert_eq!(status(&d, "fallback_link"), "warn");
    assert_eq!(d["provider_state"]["delivery_path"], "fallback");
});

backend_test!(a_bot_missing_from_the_chat_or_without_admin_rights_fails_with_fix_bot_rights, |app| {
    let r = rescue(app).await;
    r.tg.add_user(703);
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 703})).await;

    r.tg.set_bot_rights(CHAT, BotRights::absent());
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "error");
    assert_eq!(status(&d, "automation_configured"), "pass");
    assert_eq!(status(&d, "bot_permissions"), "fail");
    assert!(check(&d, "bot_permissions")["detail"].as_str().expect("detail").contains("bot_not_in_chat"), "{d}");
    assert!(actions(&d).contains(&"fix_bot_rights".to_owned()), "{d}");
    assert!(actions(&d).contains(&"open_support_ticket".to_owned()));

    r.tg.set_bot_rights(CHAT, BotRights::member());
    let d = diagnose(&r, &membership).await;
    assert_eq!(status(&d, "bot_permissions"), "fail");
    assert!(check(&d, "bot_permissions")["detail"].as_str().expect("detail").contains("not an administrator"), "{d}");
    assert_eq!(d["provider_state"]["bot_status"], "member");
    let fix = action(&d, "fix_bot_rights");
    assert!(fix["reason"].as_str().expect("reason").contains("Invite users"), "{fix}");
    assert_eq!(fix["method"], Value::Null, "a step taken in Telegram, not an API call");

    // Can invite but not remove: delivery works, removal at expiry will not.
    r.tg.set_bot_rights(CHAT, BotRights { can_restrict_members: false, ..BotRights::admin() });
    let d = diagnose(&r, &membership).await;
    assert_eq!(status(&d, "bot_permissions"), "warn", "{d}");
    assert!(actions(&d).contains(&"fix_bot_rights".to_owned()));
});

backend_test!(a_discord_role_above_the_bots_or_missing_manage_roles_fails, |app| {
    let r = rescue(app).await;
    r.dc.add_member(GUILD, "1002", &[]);
    let product = r.discord_product().await;
    let (_, membership) = r.paid(&product, json!({"discord_user_id": "1002"})).await;

    r.dc.add_role(GUILD, ROLE, 20);
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(status(&d, "bot_permissions"), "fail", "{d}");
    assert!(check(&d, "bot_permissions")["detail"].as_str().expect("detail").contains("not below the bot's highest role"));
    assert_eq!(d["provider_state"]["role_position"], 20);
    assert!(action(&d, "fix_bot_rights")["reason"].as_str().expect("reason").contains("move the bot's role above"));
    assert_eq!(status(&d, "member_access"), "warn", "in the guild without the role, delivery still pending: {d}");

    r.dc.add_role(GUILD, ROLE, 1);
    r.dc.set_bot_can_manage_roles(GUILD, false);
    let d = diagnose(&r, &membership).await;
    assert_eq!(status(&d, "bot_permissions"), "fail");
    assert!(check(&d, "bot_permissions")["detail"].as_str().expect("detail").contains("Manage Roles"));

    r.dc.set_bot_can_manage_roles(GUILD, true);
    r.dc.remove_bot(GUILD);
    let d = diagnose(&r, &membership).await;
    assert_eq!(status(&d, "bot_permissions"), "fail");
    assert!(check(&d, "bot_permissions")["detail"].as_str().expect("detail").contains("missing_access"), "{d}");
    assert!(actions(&d).contains(&"fix_bot_rights".to_owned()));
});

backend_test!(a_missing_identity_fails_and_asks_for_it, |app| {
    let r = rescue(app).await;
    let product = r.discord_product().await;
    let (_, membership) = r.paid(&product, json!({"email": "nobody@example.com"})).await;
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "error");
    assert_eq!(status(&d, "member_identity"), "fail");
    assert_eq!(status(&d, "member_access"), "warn", "cannot be asked without an id");
    assert_eq!(status(&d, "bot_permissions"), "pass");
    assert!(actions(&d).contains(&"collect_buyer_identity".to_owned()), "{d}");

    let tg_product = r.telegram_product().await;
    let (_, tg_membership) = r.paid(&tg_product, json!({})).await;
    let d = diagnose(&r, &tg_membership).await;
    assert_eq!(status(&d, "member_identity"), "fail", "no user id and no email: {d}");
    assert!(actions(&d).contains(&"collect_buyer_identity".to_owned()));
});

backend_test!(a_member_outside_the_chat_is_reported_with_the_next_step, |app| {
    let mut r = rescue(app).await;
    // The buyer blocked the bot: delivery lands in manual review, the buyer is not in the chat.
    r.tg.add_user(704);
    r.tg.block_bot(704);
    r.start_worker();
    let product = r.telegram_product().await;
    let (_, blocked) = r.paid(&product, json!({"telegram_user_id": 704})).await;
    r.wait_for_status(&blocked, "manual_review").await;
    let d = diagnose(&r, &blocked).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "error", "{d}");
    assert_eq!(status(&d, "member_access"), "fail");
    assert_eq!(d["provider_state"]["member_status"], "left");
    let start = action(&d, "ask_buyer_to_start_bot");
    assert_eq!(start["href"], format!("https://t.me/{}", r.tg.bot_username()));
    assert_eq!(action(&d, "retry_delivery")["href"], format!("/v1/memberships/{blocked}/retry-delivery"));
    assert_eq!(action(&d, "retry_delivery")["method"], "POST");
    assert_eq!(action(&d, "open_support_ticket")["href"], format!("/v1/memberships/{blocked}/delivery-support-ticket"));

    // Delivered, but the single-use link was not used yet: a warning and a retry suggestion.
    r.tg.add_user(705);
    let (_, waiting) = r.paid(&product, json!({"telegram_user_id": 705})).await;
    r.wait_for_status(&waiting, "delivered").await;
    let d = diagnose(&r, &waiting).await;
    assert_eq!(d["overall_status"], "warning", "{d}");
    assert_eq!(status(&d, "member_access"), "warn");
    assert_eq!(actions(&d), ["retry_delivery"]);

    // Removed (banned) from the chat while access is paid: a failure; a retry lifts the removal.
    r.tg.add_member(CHAT, 705, "kicked");
    let d = diagnose(&r, &waiting).await;
    assert_eq!(status(&d, "member_access"), "fail", "{d}");
    assert!(actions(&d).contains(&"retry_delivery".to_owned()));
    r.stop_workers().await;
});

backend_test!(a_fallback_link_in_use_is_a_warning_with_configure_automation, |app| {
    let mut r = rescue(app).await;
    r.start_worker();
    let product = r.product(json!({"name": "Static", "platform": "telegram", "fallback_invite_url": "https://t.me/+static",
        "price": {"amount": "1", "currency": "USD"}})).await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 706})).await;
    r.wait_for_status(&membership, "delivered").await;
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "warning", "{d}");
    assert_eq!(status(&d, "fallback_link"), "warn");
    assert_eq!(status(&d, "automation_configured"), "warn");
    assert_eq!(d["provider_state"]["fallback_used"], true);
    assert_eq!(d["provider_state"]["delivery_path"], "fallback");
    let configure = action(&d, "configure_automation");
    assert_eq!(configure["method"], "PATCH");
    assert_eq!(configure["href"], format!("/v1/products/{product}"));
    r.stop_workers().await;
});

backend_test!(a_provider_that_is_down_or_slow_is_a_warning_within_the_timeout, |app| {
    let r = rescue(app).await;
    r.tg.add_user(707);
    r.tg.add_member(CHAT, 707, "member");
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 707})).await;

    r.tg.set_down(true);
    let d = diagnose(&r, &membership).await;
    assert_shape(&d);
    assert_eq!(d["overall_status"], "warning", "{d}");
    assert_eq!(status(&d, "automation_configured"), "warn");
    assert!(check(&d, "automation_configured")["detail"].as_str().expect("detail").contains("provider_5xx"));
    assert_eq!(status(&d, "bot_permissions"), "warn");
    assert_eq!(d["provider_state"]["reachable"], false);
    r.tg.set_down(false);

    r.tg.fail_next("getMe", Failure::Slow(Duration::from_secs(20)));
    let started = Instant::now();
    let d = diagnose(&r, &membership).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "answered within the 3 s timeout: {took:?}");
    assert_eq!(status(&d, "automation_configured"), "warn", "{d}");
    assert!(check(&d, "automation_configured")["detail"].as_str().expect("detail").contains("timeout"));

    // Slow on the chat calls only: asked at once, so still one timeout long.
    r.tg.fail_next_n("getChatMember", 2, Failure::Slow(Duration::from_secs(20)));
    let started = Instant::now();
    let d = diagnose(&r, &membership).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(status(&d, "automation_configured"), "pass");
    assert_eq!((status(&d, "bot_permissions"), status(&d, "member_access")), ("warn", "warn"), "{d}");

    let dc_product = r.discord_product().await;
    r.dc.add_member(GUILD, "1003", &[ROLE]);
    let (_, dc_membership) = r.paid(&dc_product, json!({"discord_user_id": "1003"})).await;
    r.dc.set_down(true);
    let d = diagnose(&r, &dc_membership).await;
    assert_eq!(d["overall_status"], "warning", "{d}");
    assert_eq!(status(&d, "automation_configured"), "warn");
});

backend_test!(another_merchants_membership_is_not_found, |app| {
    let r = rescue(app).await;
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 708})).await;
    let other = r.app.merchant().await;
    let d = r.app.get(&format!("/v1/memberships/{membership}/delivery-diagnostics"), &other).await;
    assert_error(&d, StatusCode::NOT_FOUND, "not_found");
    let d = r.app.get("/v1/memberships/mem_000000000000000000000000/delivery-diagnostics", &r.key).await;
    assert_error(&d, StatusCode::NOT_FOUND, "not_found");
    assert!(r.tg.all_calls().is_empty(), "no provider call for someone else's membership");
});

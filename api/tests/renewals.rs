//! Renewals end to end (SPEC §8): grace and expiry with events, access removal through the fake
//! Telegram and Discord servers, renewals and gifts that bring access back, reminders sent once,
//! and renewal intelligence.

mod common;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use common::{
    TestApp, assert_error,
    rescue::{CHAT, GUILD, ROLE, Rescue},
};
use hilt_shared::config::Schedule;
use serde_json::{Value, json};

/// The app with a fast renewal loop and the given reminder offsets (set before the worker
/// context is built from the config).
fn with_renewals(mut app: TestApp, interval: &str, reminders: &str) -> TestApp {
    let mut config = (*app.config).clone();
    config.renewal_interval = interval.parse().expect("interval");
    config.renewal_reminders = Schedule(hilt_shared::domain::duration::parse_list(reminders).expect("reminders"));
    app.config = Arc::new(config);
    app
}

async fn short_telegram_product(r: &Rescue, period: &str, grace: &str) -> String {
    r.product(json!({"name": "Daily VIP", "platform": "telegram", "telegram_chat_id": CHAT,
        "price": {"amount": "1", "currency": "USDC"}, "recurring": true, "period": period, "grace_period": grace})).await
}

async fn event_count(r: &Rescue, membership: &str, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE membership_id = $1 AND type = $2")
        .bind(membership)
        .bind(kind)
        .fetch_one(r.app.db.pool())
        .await
        .expect("count")
}

async fn wait_for_job(r: &Rescue, membership: &str, queue: &str, status: &str) {
    for _ in 0..600 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = $2 AND status = $3")
            .bind(membership)
            .bind(queue)
            .bind(status)
            .fetch_one(r.app.db.pool())
            .await
            .expect("count");
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {queue} job for {membership} became {status}");
}

fn reminder_dms(r: &Rescue, user: i64) -> Vec<String> {
    r.tg.dms_to(user).into_iter().filter(|t| t.contains("Renew before then")).collect()
}

backend_test!(a_lapsed_telegram_membership_goes_to_grace_expires_and_is_removed_without_a_ban, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "")).await;
    r.tg.add_user(7001);
    r.tg.add_member(CHAT, 7001, "member");
    r.start_worker();
    let product = short_telegram_product(&r, "1s", "1s").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7001})).await;
    r.wait_for_status(&membership, "delivered").await;

    let m = r.wait_for(&membership, "expired and revoked", |m| m["status"] == "expired" && m["delivery_status"] == "revoked").await;
    assert_eq!(m["delivery"]["last_error"], Value::Null);
    assert_eq!(event_count(&r, &membership, "membership.grace").await, 1);
    assert_eq!(event_count(&r, &membership, "membership.expired").await, 1);
    assert_eq!(event_count(&r, &membership, "membership.revoked").await, 1);
    let order: Vec<String> = sqlx::query_scalar("SELECT type FROM events WHERE membership_id = $1 AND type LIKE 'membership.%' ORDER BY created_at")
        .bind(&membership).fetch_all(r.app.db.pool()).await.expect("events");
    assert_eq!(order, ["membership.grace", "membership.expired", "membership.revoked"]);

    assert_eq!(r.tg.member_status(CHAT, 7001).as_deref(), Some("left"), "removed from the chat");
    assert!(!r.tg.is_banned(CHAT, 7001), "not left banned: the buyer can come back after paying");
    assert_eq!(r.tg.calls("banchatmember").len(), 1);
    let attempts = r.attempts(&membership).await;
    let revokes: Vec<&Value> = attempts.iter().filter(|a| a["trigger"] == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{attempts:?}");
    assert_eq!(revokes[0]["outcome"], "succeeded");
    assert_eq!(revokes[0]["provider"], "telegram");

    // Nothing more happens on later runs.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.tg.calls("banchatmember").len(), 1);
    assert_eq!(event_count(&r, &membership, "membership.expired").await, 1);
    r.stop_workers().await;
});

backend_test!(an_expired_discord_membership_loses_its_role, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "")).await;
    r.dc.add_member(GUILD, "5005", &[]);
    r.start_worker();
    let product = r.product(json!({"name": "Role", "platform": "discord", "discord_guild_id": GUILD, "discord_role_id": ROLE,
        "price": {"amount": "1", "currency": "USDC"}, "recurring": true, "period": "1s", "grace_period": "1s"})).await;
    let (_, membership) = r.paid(&product, json!({"discord_user_id": "5005"})).await;
    r.wait_for_status(&membership, "delivered").await;
    assert_eq!(r.dc.roles_of(GUILD, "5005"), Some(vec![ROLE.to_owned()]));
    r.wait_for(&membership, "revoked", |m| m["delivery_status"] == "revoked").await;
    assert_eq!(r.dc.roles_of(GUILD, "5005"), Some(vec![]), "the role is removed, the member stays in the guild");
    let attempts = r.attempts(&membership).await;
    assert!(attempts.iter().any(|a| a["trigger"] == "revoke" && a["provider"] == "discord" && a["outcome"] == "succeeded"));
    r.stop_workers().await;
});

backend_test!(a_failed_removal_is_retried_on_the_schedule, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "")).await;
    r.dc.add_member(GUILD, "6006", &[]);
    r.start_worker();
    let product = r.product(json!({"name": "Role", "platform": "discord", "discord_guild_id": GUILD, "discord_role_id": ROLE,
        "price": {"amount": "1", "currency": "USDC"}, "recurring": true, "period": "1s", "grace_period": "0s"})).await;
    let (_, membership) = r.paid(&product, json!({"discord_user_id": "6006"})).await;
    r.wait_for_status(&membership, "delivered").await;
    r.dc.fail_next("remove_role", hilt_shared::testing::Failure::Status(502));
    r.wait_for(&membership, "revoked", |m| m["delivery_status"] == "revoked").await;
    let revokes: Vec<Value> = r.attempts(&membership).await.into_iter().filter(|a| a["trigger"] == "revoke").collect();
    assert_eq!(revokes.len(), 2, "{revokes:?}");
    assert_eq!(revokes[0]["outcome"], "failed");
    assert_eq!(revokes[0]["error"]["code"], "provider_5xx");
    assert_eq!(revokes[1]["outcome"], "succeeded");
    assert_eq!(r.dc.roles_of(GUILD, "6006"), Some(vec![]));
    r.stop_workers().await;
});

backend_test!(a_renewal_paid_in_grace_brings_access_back_to_active, |app| {
    let r = Rescue::start(with_renewals(app, "1h", "")).await;
    r.tg.add_user(7101);
    let product = short_telegram_product(&r, "1s", "1h").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7101})).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let run = hilt_worker::renewal::tick(&r.ctx).await.expect("tick").expect("lease");
    assert_eq!(run.entered_grace, 1);
    assert_eq!(r.membership(&membership).await["status"], "grace");

    let (renewal, same) = r.paid(&product, json!({"telegram_user_id": 7101})).await;
    assert_eq!(same, membership, "the renewal extends the same membership");
    let m = r.membership(&membership).await;
    assert_eq!(m["status"], "active");
    assert_eq!(m["last_payment_id"], renewal.as_str());
    assert_eq!(event_count(&r, &membership, "membership.renewed").await, 1);
    let run = hilt_worker::renewal::tick(&r.ctx).await.expect("tick").expect("lease");
    assert_eq!((run.entered_grace, run.expired), (0, 0));
    assert_eq!(r.membership(&membership).await["status"], "active");
});

backend_test!(a_pending_revoke_for_a_renewed_membership_does_nothing, |app| {
    let mut r = Rescue::start(with_renewals(app, "1h", "")).await;
    r.tg.add_user(7201);
    r.tg.add_member(CHAT, 7201, "member");
    let product = short_telegram_product(&r, "1s", "1s").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7201})).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // No worker yet: the revoke job waits in the outbox.
    let run = hilt_worker::renewal::tick(&r.ctx).await.expect("tick").expect("lease");
    assert_eq!((run.entered_grace, run.expired), (1, 1));
    assert_eq!(r.membership(&membership).await["status"], "expired");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = 'revoke' AND status = 'queued'", &membership).await, 1);

    r.paid(&product, json!({"telegram_user_id": 7201})).await;
    assert_eq!(r.membership(&membership).await["status"], "active");
    r.start_worker();
    wait_for_job(&r, &membership, "revoke", "done").await;
    r.wait_for_status(&membership, "delivered").await;
    assert!(r.tg.calls("banchatmember").is_empty(), "the provider was not called");
    assert_eq!(r.tg.member_status(CHAT, 7201).as_deref(), Some("member"));
    assert!(r.attempts(&membership).await.iter().all(|a| a["trigger"] != "revoke"), "no revoke attempt");
    r.stop_workers().await;
});

backend_test!(a_gift_redelivers_access_that_was_revoked, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "")).await;
    r.tg.add_user(7301);
    r.tg.add_member(CHAT, 7301, "member");
    r.start_worker();
    let product = short_telegram_product(&r, "1s", "1s").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7301})).await;
    r.wait_for(&membership, "revoked", |m| m["delivery_status"] == "revoked").await;
    assert_eq!(r.tg.member_status(CHAT, 7301).as_deref(), Some("left"));

    let g = r.app.post(&format!("/v1/memberships/{membership}/gift"), &r.key, json!({"days": 3, "reason": "Goodwill"})).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    assert_eq!(g.body["status"], "active");
    assert_eq!(g.body["delivery_status"], "pending");
    let m = r.wait_for_status(&membership, "delivered").await;
    assert_eq!(m["status"], "active");
    let attempts = r.attempts(&membership).await;
    let last = attempts.last().expect("attempts");
    assert_eq!((last["trigger"].as_str(), last["outcome"].as_str()), (Some("renewal"), Some("succeeded")));
    assert_eq!(r.tg.invite_links(CHAT).len(), 2, "a fresh invite link for the gifted access");
    assert_eq!(event_count(&r, &membership, "membership.gifted").await, 1);
    r.stop_workers().await;
});

backend_test!(reminders_are_sent_once_each_before_the_period_ends, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "3s,1500ms")).await;
    r.tg.add_user(7401);
    r.start_worker();
    let product = short_telegram_product(&r, "4s", "1h").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7401})).await;
    r.wait_for_status(&membership, "delivered").await;
    assert!(reminder_dms(&r, 7401).is_empty(), "no reminder before the first threshold");
    r.wait_for(&membership, "grace", |m| m["status"] == "grace").await;
    let dms = reminder_dms(&r, 7401);
    assert_eq!(dms.len(), 2, "{dms:?}");
    assert!(dms[0].contains("Daily VIP"), "{}", dms[0]);
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT offset_ms, status, channel FROM renewal_reminders WHERE membership_id = $1 ORDER BY offset_ms DESC")
            .bind(&membership).fetch_all(r.app.db.pool()).await.expect("reminders");
    assert_eq!(rows, [(3_000, "sent".to_owned(), "telegram".to_owned()), (1_500, "sent".to_owned(), "telegram".to_owned())]);
    // Later runs send nothing more for this period.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reminder_dms(&r, 7401).len(), 2);
    r.stop_workers().await;
});

backend_test!(a_buyer_without_telegram_gets_the_reminder_by_email, |app| {
    let mut r = Rescue::start(with_renewals(app, "1h", "2s")).await;
    r.dc.add_member(GUILD, "7501", &[]);
    let product = r.product(json!({"name": "Role", "platform": "discord", "discord_guild_id": GUILD, "discord_role_id": ROLE,
        "price": {"amount": "1", "currency": "USDC"}, "recurring": true, "period": "3s"})).await;
    let (_, membership) = r.paid(&product, json!({"discord_user_id": "7501", "email": "buyer@example.com"})).await;
    let (_, silent) = r.paid(&product, json!({"discord_user_id": "7502"})).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..3 {
        hilt_worker::renewal::tick(&r.ctx).await.expect("tick").expect("lease");
    }
    r.start_worker();
    wait_for_job(&r, &membership, "renewal", "done").await;
    let mails: Vec<String> = std::fs::read_dir(r.outbox.path()).expect("outbox").filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("reminder-")).collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains(&membership));
    let channels: Vec<(String, String)> = sqlx::query_as("SELECT membership_id, status || '/' || channel FROM renewal_reminders ORDER BY status")
        .fetch_all(r.app.db.pool()).await.expect("rows");
    assert!(channels.contains(&(membership.clone(), "sent/email".to_owned())), "{channels:?}");
    assert!(channels.contains(&(silent.clone(), "skipped/none".to_owned())), "no channel: recorded, not sent: {channels:?}");
    r.stop_workers().await;
});

backend_test!(renewal_intelligence_counts_expiring_grace_churn_and_renewals, |app| {
    let r = Rescue::start(with_renewals(app, "1h", "")).await;
    let monthly = r.telegram_product().await;
    let short = short_telegram_product(&r, "1s", "1s").await;
    let (_, a) = r.paid(&monthly, json!({"telegram_user_id": 8001})).await;
    let (_, b) = r.paid(&monthly, json!({"telegram_user_id": 8002})).await;
    let (_, c) = r.paid(&monthly, json!({"telegram_user_id": 8003})).await;
    let (_, d) = r.paid(&monthly, json!({"telegram_user_id": 8004})).await;
    let (_, e) = r.paid(&short, json!({"telegram_user_id": 8005})).await;
    let now = hilt_shared::clock::now_ms();
    let day = 86_400_000i64;
    for (id, end, status) in [(&a, now + 2 * day, "active"), (&b, now + 20 * day, "active"), (&c, now + 60 * day, "active"), (&d, now - 3_600_000, "grace")] {
        sqlx::query("UPDATE memberships SET current_period_end = $1, status = $2 WHERE id = $3")
            .bind(end).bind(status).bind(id).execute(r.app.db.pool()).await.expect("update");
    }
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let run = hilt_worker::renewal::tick(&r.ctx).await.expect("tick").expect("lease");
    assert_eq!(run.expired, 1, "{run:?}");
    r.paid(&monthly, json!({"telegram_user_id": 8003})).await;
    assert_eq!(cancel(&r, &a, true).await.status, StatusCode::OK);
    let past_due = r.app.patch(&format!("/v1/memberships/{d}/subscription"), common::ADMIN, json!({"collection_state": "past_due"})).await;
    assert_eq!(past_due.status, StatusCode::OK, "{}", past_due.body);
    let g = r.app.post(&format!("/v1/memberships/{b}/gift"), &r.key, json!({"days": 1, "reason": "Loyalty"})).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);

    let all = r.app.get("/v1/memberships/renewal-intelligence", &r.key).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["summary"], json!({"active": 3, "expiring_7d": 1, "expiring_30d": 2, "in_grace": 1,
        "cancelling": 1, "past_due": 1, "expired_30d": 1, "renewed_30d": 1}));
    assert_eq!(all.body["within_days"], 30);
    let expiring: Vec<&str> = all.body["expiring_memberships"].as_array().expect("list").iter()
        .map(|m| m["membership_id"].as_str().expect("id")).collect();
    assert_eq!(expiring, [d.as_str(), a.as_str(), b.as_str()], "soonest first, grace included");
    let first = &all.body["expiring_memberships"][0];
    assert_eq!(first["status"], "grace");
    assert_eq!(first["days_left"], -1);
    assert_eq!(first["cancel_at_period_end"], false);
    assert_eq!(first["collection_state"], "past_due");
    assert!(first["paid_through"].is_string() && first["access_ends_at"].is_string());
    let cancelling = &all.body["expiring_memberships"][1];
    assert_eq!(cancelling["identity"]["telegram_user_id"], 8001);
    assert_eq!(cancelling["cancel_at_period_end"], true);
    assert_eq!(cancelling["access_ends_at"], cancelling["paid_through"], "no grace after a scheduled cancellation");

    let reports = all.body["product_reports"].as_array().expect("reports");
    let report = |id: &str| reports.iter().find(|p| p["product_id"] == id).cloned().expect("report");
    let m = report(&monthly);
    assert_eq!((m["active"].as_i64(), m["expiring"].as_i64(), m["in_grace"].as_i64()), (Some(3), Some(2), Some(1)));
    assert_eq!((m["cancelling"].as_i64(), m["past_due"].as_i64()), (Some(1), Some(1)));
    assert_eq!((m["churned"].as_i64(), m["renewed"].as_i64(), m["gifted"].as_i64()), (Some(0), Some(1), Some(1)));
    let s = report(&short);
    assert_eq!((s["active"].as_i64(), s["churned"].as_i64()), (Some(0), Some(1)));

    let kinds: Vec<&str> = all.body["recent_events"].as_array().expect("events").iter().map(|e| e["type"].as_str().expect("type")).collect();
    for kind in ["membership.grace", "membership.expired", "membership.renewed", "membership.gifted", "membership.cancellation_scheduled"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(kinds[0], "membership.gifted", "newest first");
    assert!(all.body["recent_events"][0]["data"]["reason"] == "Loyalty");

    let week = r.app.get("/v1/memberships/renewal-intelligence?within_days=7", &r.key).await;
    assert_eq!(week.body["expiring_memberships"].as_array().map(Vec::len), Some(2));
    let only_short = r.app.get(&format!("/v1/memberships/renewal-intelligence?product_id={short}"), &r.key).await;
    assert_eq!(only_short.body["summary"]["active"], 0);
    assert_eq!(only_short.body["summary"]["expired_30d"], 1);
    assert_eq!(only_short.body["summary"]["renewed_30d"], 0);
    assert_eq!(only_short.body["product_reports"].as_array().map(Vec::len), Some(1));
    assert!(only_short.body["recent_events"].as_array().expect("events").iter().all(|ev| ev["membership_id"] == e.as_str()));
    for bad in ["within_days=0", "within_days=366", "within_days=abc"] {
        let res = r.app.get(&format!("/v1/memberships/renewal-intelligence?{bad}"), &r.key).await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(res.body["error"]["param"], "within_days");
    }
    let stranger = r.app.merchant().await;
    let theirs = r.app.get("/v1/memberships/renewal-intelligence", &stranger).await;
    assert_eq!(theirs.body["summary"], json!({"active": 0, "expiring_7d": 0, "expiring_30d": 0, "in_grace": 0,
        "cancelling": 0, "past_due": 0, "expired_30d": 0, "renewed_30d": 0}));
    assert_eq!(theirs.body["recent_events"], json!([]));
    assert_eq!(theirs.body["product_reports"], json!([]));
});

backend_test!(an_invite_link_never_outlives_the_access_it_granted, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "")).await;
    r.tg.add_user(7101);
    r.tg.add_user(7102);
    r.start_worker();
    let product = short_telegram_product(&r, "3s", "0s").await;
    let (_, joined) = r.paid(&product, json!({"telegram_user_id": 7101})).await;
    let (_, unused) = r.paid(&product, json!({"telegram_user_id": 7102})).await;
    let mut links = Vec::new();
    for membership in [&joined, &unused] {
        let m = r.wait_for_status(membership, "delivered").await;
        let link = m["delivery"]["invite_url"].as_str().expect("link").to_owned();
        let end = chrono::DateTime::parse_from_rfc3339(m["current_period_end"].as_str().expect("period end")).expect("time").timestamp();
        let sent = r.tg.invite_links(CHAT).into_iter().find(|l| l.link == link).expect("created at Telegram");
        assert!(sent.expire_date.is_some_and(|at| at <= end), "the link expires with the access ({end}), not a week later: {sent:?}");
        links.push(link);
    }
    assert!(r.tg.join_with_link(CHAT, 7101, &links[0]));

    for membership in [&joined, &unused] {
        r.wait_for(membership, "expired and revoked", |m| m["status"] == "expired" && m["delivery_status"] == "revoked").await;
    }
    assert_eq!(r.tg.member_status(CHAT, 7101).as_deref(), Some("left"));
    assert!(!r.tg.join_with_link(CHAT, 7101, &links[0]), "the buyer cannot walk back in with the old link");
    assert!(!r.tg.join_with_link(CHAT, 7102, &links[1]), "nor can the other buyer use the link they never used");
    for membership in [&joined, &unused] {
        let attempts = r.attempts(membership).await;
        let delivery = attempts.iter().find(|a| a["trigger"] == "automatic").expect("delivery attempt");
        assert!(delivery["invite_link_revoked_at"].is_string(), "the link is on record as revoked: {delivery}");
    }
    r.stop_workers().await;
});

// ── Cancellation, collection state and the buyer's next step (docs/RENEWALS.md) ───────────────

async fn cancel(r: &Rescue, membership: &str, at_period_end: bool) -> common::Response {
    r.app.post(&format!("/v1/memberships/{membership}/cancel"), &r.key, json!({"at_period_end": at_period_end, "reason": "Moving on"})).await
}

/// Sleeps until `before` before the membership's period end; panics when that has passed (the
/// machine was too slow for the test's timing).
async fn sleep_until_before_end(r: &Rescue, membership: &str, before: Duration) {
    let m = r.membership(membership).await;
    let end = chrono::DateTime::parse_from_rfc3339(m["current_period_end"].as_str().expect("period end"))
        .expect("rfc3339")
        .timestamp_millis();
    let wait = end - before.as_millis() as i64 - hilt_shared::clock::now_ms();
    assert!(wait > 0, "reached the point {before:?} before the period end too late");
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}

async fn tick(r: &Rescue) -> hilt_worker::renewal::RenewalRun {
    hilt_worker::renewal::tick(&r.ctx).await.expect("tick").expect("lease")
}

backend_test!(a_membership_cancelled_at_period_end_keeps_access_until_then_and_ends_without_grace, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "2s")).await;
    r.tg.add_user(7601);
    r.tg.add_member(CHAT, 7601, "member");
    r.start_worker();
    let product = short_telegram_product(&r, "4s", "1h").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7601})).await;
    r.wait_for_status(&membership, "delivered").await;

    let c = cancel(&r, &membership, true).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.body["status"], "active");
    assert_eq!(c.body["subscription"]["cancel_at_period_end"], true);
    assert_eq!(c.body["subscription"]["next_payment_due_at"], Value::Null, "nothing is due any more");
    assert_error(&cancel(&r, &membership, true).await, StatusCode::CONFLICT, "conflict");

    // Before the period ends (the run goes every 100 ms): access stays, and the reminder due
    // 2 s before the end is not sent.
    sleep_until_before_end(&r, &membership, Duration::from_secs(1)).await;
    assert_eq!(r.membership(&membership).await["status"], "active");
    assert_eq!(r.tg.member_status(CHAT, 7601).as_deref(), Some("member"), "not removed before the period ends");
    assert!(reminder_dms(&r, 7601).is_empty(), "no reminder for a cancelled renewal");

    // At period end: expired at once (a 1 h grace period does not apply) and removed.
    let m = r.wait_for(&membership, "revoked", |m| m["delivery_status"] == "revoked").await;
    assert_eq!(m["status"], "expired");
    assert_eq!(m["subscription"]["next_step"], "renew_after_cancel");
    assert_eq!(m["subscription"]["collection_state"], "paid", "nothing was owed");
    assert_eq!(r.tg.member_status(CHAT, 7601).as_deref(), Some("left"));
    assert!(!r.tg.is_banned(CHAT, 7601), "removed, not banned: the buyer can come back");
    assert_eq!(event_count(&r, &membership, "membership.cancellation_scheduled").await, 1);
    assert_eq!(event_count(&r, &membership, "membership.grace").await, 0);
    assert_eq!(event_count(&r, &membership, "membership.expired").await, 1);
    r.stop_workers().await;
});

backend_test!(a_resumed_membership_keeps_its_access_past_the_period_end, |app| {
    let r = Rescue::start(with_renewals(app, "1h", "")).await;
    r.tg.add_user(7701);
    let product = short_telegram_product(&r, "2s", "1h").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7701})).await;
    assert_eq!(cancel(&r, &membership, true).await.status, StatusCode::OK);

    let resumed = r.app.post(&format!("/v1/memberships/{membership}/resume"), &r.key, json!({})).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    assert_eq!(resumed.body["subscription"]["cancel_at_period_end"], false);
    assert_eq!(resumed.body["subscription"]["next_payment_due_at"], resumed.body["current_period_end"]);
    assert_eq!(event_count(&r, &membership, "membership.resumed").await, 1);
    let again = r.app.post(&format!("/v1/memberships/{membership}/resume"), &r.key, json!({})).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");

    // The period ends as for any renewal not yet paid: grace, with access.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(tick(&r).await.entered_grace, 1);
    let m = r.membership(&membership).await;
    assert_eq!(m["status"], "grace");
    assert_eq!(m["subscription"]["collection_state"], "past_due");
    assert_eq!(m["subscription"]["next_step"], "pay_renewal");
    // Once the period is over there is nothing to cancel at its end, nor to resume.
    assert_error(&cancel(&r, &membership, true).await, StatusCode::CONFLICT, "conflict");
    let late = r.app.post(&format!("/v1/memberships/{membership}/resume"), &r.key, json!({})).await;
    assert_error(&late, StatusCode::CONFLICT, "conflict");
});

backend_test!(cancelling_now_removes_access_at_once_and_a_renewal_starts_it_again, |app| {
    let mut r = Rescue::start(with_renewals(app, "1h", "")).await;
    r.tg.add_user(7801);
    r.tg.add_member(CHAT, 7801, "member");
    r.start_worker();
    let product = short_telegram_product(&r, "1h", "1h").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7801})).await;
    r.wait_for_status(&membership, "delivered").await;

    let c = cancel(&r, &membership, false).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.body["status"], "cancelled");
    assert_eq!(c.body["subscription"]["next_step"], "renew_after_cancel");
    let m = r.wait_for(&membership, "revoked", |m| m["delivery_status"] == "revoked").await;
    assert_eq!(m["status"], "cancelled");
    assert_eq!(r.tg.member_status(CHAT, 7801).as_deref(), Some("left"), "removed at once, an hour before the period ends");
    assert!(!r.tg.is_banned(CHAT, 7801));
    assert_eq!(event_count(&r, &membership, "membership.cancelled").await, 1);
    assert_error(&cancel(&r, &membership, false).await, StatusCode::CONFLICT, "conflict");

    let (_, same) = r.paid(&product, json!({"telegram_user_id": 7801})).await;
    assert_eq!(same, membership, "a renewal payment starts the same membership again");
    let m = r.wait_for_status(&membership, "delivered").await;
    assert_eq!(m["status"], "active");
    assert_eq!(m["subscription"]["cancel_at_period_end"], false);
    assert_eq!(m["subscription"]["next_step"], "none");
    r.stop_workers().await;
});

backend_test!(a_past_due_member_keeps_access_through_grace_then_is_unpaid_and_removed, |app| {
    let mut r = Rescue::start(with_renewals(app, "100ms", "")).await;
    r.tg.add_user(7901);
    r.tg.add_member(CHAT, 7901, "member");
    r.start_worker();
    let product = short_telegram_product(&r, "1s", "3s").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7901})).await;
    r.wait_for_status(&membership, "delivered").await;

    let m = r.wait_for(&membership, "grace", |m| m["status"] == "grace").await;
    assert_eq!((m["status"].as_str(), m["subscription"]["collection_state"].as_str()), (Some("grace"), Some("past_due")));
    assert_eq!(m["subscription"]["next_step"], "pay_renewal");
    assert_eq!(m["subscription"]["next_payment_due_at"], m["current_period_end"], "overdue since the period end");
    assert_eq!(r.tg.member_status(CHAT, 7901).as_deref(), Some("member"), "access kept through grace");

    let m = r.wait_for(&membership, "revoked", |m| m["delivery_status"] == "revoked").await;
    assert_eq!((m["status"].as_str(), m["subscription"]["collection_state"].as_str()), (Some("expired"), Some("unpaid")));
    assert_eq!(r.tg.member_status(CHAT, 7901).as_deref(), Some("left"));
    assert_eq!(event_count(&r, &membership, "subscription.past_due").await, 1);
    assert_eq!(event_count(&r, &membership, "subscription.unpaid").await, 1);

    // The processor's word sets the state (admin token only); a renewal payment makes it paid.
    let path = format!("/v1/memberships/{membership}/subscription");
    assert_error(&r.app.patch(&path, &r.key, json!({"collection_state": "paid"})).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(&r.app.patch(&path, common::ADMIN, json!({"collection_state": "late"})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let set = r.app.patch(&path, common::ADMIN, json!({"collection_state": "past_due"})).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body["subscription"]["collection_state"], "past_due");
    assert_eq!(event_count(&r, &membership, "subscription.past_due").await, 2);
    r.paid(&product, json!({"telegram_user_id": 7901})).await;
    let m = r.wait_for_status(&membership, "delivered").await;
    assert_eq!((m["status"].as_str(), m["subscription"]["collection_state"].as_str()), (Some("active"), Some("paid")));
    r.stop_workers().await;
});

backend_test!(reminders_carry_the_renewal_link_and_are_sent_once_even_when_their_job_runs_again, |app| {
    let mut r = Rescue::start(with_renewals(app, "1h", "3s")).await;
    r.tg.add_user(8001);
    let product = r.product(json!({"name": "Daily VIP", "platform": "telegram", "telegram_chat_id": CHAT,
        "price": {"amount": "1", "currency": "USDC"}, "recurring": true, "period": "5s",
        "renewal_url": "https://shop.example/renew?m={membership_id}&p={product_id}"})).await;
    assert_eq!(r.app.get(&format!("/v1/products/{product}"), &r.key).await.body["renewal_url"],
        "https://shop.example/renew?m={membership_id}&p={product_id}");
    // Delivered first (its DM must not meet the failure injected below), then the worker stops.
    r.start_worker();
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 8001})).await;
    r.wait_for_status(&membership, "delivered").await;
    r.stop_workers().await;
    sleep_until_before_end(&r, &membership, Duration::from_millis(2_500)).await;
    assert_eq!(tick(&r).await.reminders_queued, 1, "written as a job on the renewal queue");
    assert_eq!(tick(&r).await.reminders_queued, 0, "once per period");
    let job: String = sqlx::query_scalar("SELECT id FROM jobs WHERE membership_id = $1 AND queue = 'renewal'")
        .bind(&membership).fetch_one(r.app.db.pool()).await.expect("the reminder job");

    // Its first send fails (Telegram 502): the job retries on its schedule and sends it once.
    r.tg.fail_next("sendMessage", hilt_shared::testing::Failure::Status(502));
    r.start_worker();
    wait_for_job(&r, &membership, "renewal", "done").await;
    let dms = reminder_dms(&r, 8001);
    assert_eq!(dms.len(), 1, "{dms:?}");
    assert!(dms[0].contains(&format!("https://shop.example/renew?m={membership}&p={product}")), "{}", dms[0]);
    let (status, attempts): (String, i64) = sqlx::query_as("SELECT status, attempts FROM renewal_reminders WHERE membership_id = $1")
        .bind(&membership).fetch_one(r.app.db.pool()).await.expect("row");
    assert_eq!((status.as_str(), attempts), ("sent", 2));

    // The same job runs again (a second copy, as after a lost lease): the reminder row says it
    // was sent, so nothing more goes out.
    let payload: String = sqlx::query_scalar("SELECT payload FROM jobs WHERE id = $1").bind(&job).fetch_one(r.app.db.pool()).await.expect("payload");
    let mut tx = r.app.db.begin().await.expect("begin");
    let copy = hilt_shared::queue::enqueue(&mut tx, hilt_shared::queue::Queue::Renewal, None, Some(&membership), payload, hilt_shared::clock::now_ms())
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let mut status = String::new();
    for _ in 0..100 {
        status = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1").bind(copy.to_string()).fetch_one(r.app.db.pool()).await.expect("status");
        if status == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "done", "the copy ran");
    assert_eq!(reminder_dms(&r, 8001).len(), 1, "sent once");

    let bad = r.app.patch(&format!("/v1/products/{product}"), &r.key, json!({"renewal_url": "shop.example/renew"})).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(bad.body["error"]["param"], "renewal_url");
    r.stop_workers().await;
});

backend_test!(a_buyer_the_bot_cannot_reach_is_recorded_and_listed_for_operators, |app| {
    let mut r = Rescue::start(with_renewals(app, "1h", "3s")).await;
    r.tg.add_user(8101);
    r.tg.block_bot(8101);
    let product = short_telegram_product(&r, "5s", "1h").await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 8101})).await;
    sleep_until_before_end(&r, &membership, Duration::from_millis(2_500)).await;
    assert_eq!(tick(&r).await.reminders_queued, 1);
    r.start_worker();
    wait_for_job(&r, &membership, "renewal", "dead").await;
    let (status, code): (String, Option<String>) = sqlx::query_as("SELECT status, error_code FROM renewal_reminders WHERE membership_id = $1")
        .bind(&membership).fetch_one(r.app.db.pool()).await.expect("row");
    assert_eq!(status, "failed");
    assert!(code.is_some());
    let attention = r.app.get("/v1/ops/attention", common::ADMIN).await;
    let unreached = attention.body["unreached_buyers"].as_array().expect("unreached_buyers");
    assert!(unreached.iter().any(|u| u["membership_id"] == membership.as_str() && u["error_code"] == code.as_deref().unwrap_or("")), "{unreached:?}");
    r.stop_workers().await;
});

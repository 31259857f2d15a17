//! Provider rate limits shared by every worker (issue 10): two workers, each with its own
//! clients, share only the limiter's store (the database on the embedded default, Redis when
//! `REDIS_URL` is set), against a fake Telegram that enforces the Bot API's limits and answers
//! 429 to any call over them.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN, rescue::Rescue};
use hilt_shared::ratelimit::{Rate, RateLimits};
use serde_json::json;

const BUYERS: i64 = 40;

/// Telegram's limits: 30 calls/s per bot, 1 message/s per private chat, 20/min per group.
fn bot() -> Rate {
    Rate::new(30, Duration::from_secs(1))
}

/// Pays for `BUYERS` memberships, has two workers deliver them, then cancels every one at once:
/// the revoke storm. Returns the storm's duration and how many calls it made.
async fn revoke_storm(r: &mut Rescue, limiter: &RateLimits) -> (Duration, usize) {
    r.tg.enforce_rate_limits(bot(), Rate::new(1, Duration::from_secs(1)), Rate::new(20, Duration::from_secs(60)));
    r.use_rate_limits(limiter);
    let product = r.telegram_product().await;
    let mut memberships = Vec::new();
    for user in 0..BUYERS {
        r.tg.add_user(8000 + user);
        memberships.push(r.paid(&product, json!({"telegram_user_id": 8000 + user})).await.1);
    }
    // Before any worker runs, the merchant's share of the due work shows on /v1/ops/queues.
    let queues = r.app.get("/v1/ops/queues", ADMIN).await.body;
    let delivery = queues["merchants"].as_array().expect("merchants").iter().find(|m| m["queue"] == "delivery").cloned().expect("delivery share");
    assert_eq!((delivery["due"].as_i64(), delivery["running"].as_i64(), delivery["share"].as_f64()), (Some(BUYERS), Some(0), Some(1.0)), "{queues}");
    r.start_worker();
    r.start_worker();
    for m in &memberships {
        r.wait_for_status(m, "delivered").await;
    }
    let before = r.tg.all_calls().len();
    let took = cancel_all(r, &memberships).await;
    (took, r.tg.all_calls().len() - before)
}

/// Ends every membership at once (the storm), waits until each has lost access and stops the
/// workers; how long the removals took.
async fn cancel_all(r: &mut Rescue, memberships: &[String]) -> Duration {
    let started = Instant::now();
    for m in memberships {
        let cancelled = r.app.post(&format!("/v1/memberships/{m}/cancel"), &r.key, json!({"at_period_end": false, "reason": "Storm"})).await;
        assert_eq!(cancelled.status, axum::http::StatusCode::OK, "{}", cancelled.body);
    }
    for m in memberships {
        r.wait_for(m, "revoked", |m| m["delivery_status"] == "revoked").await;
    }
    let took = started.elapsed();
    r.stop_workers().await;
    took
}

/// Zero 429s, and no slower than the limit requires: after a burst of 25 (30 less a reserve), 30 calls a second
/// (10 % over that, plus a second for the cancellations and the workers' own work).
fn assert_paced(r: &Rescue, took: Duration, calls: usize) {
    assert_eq!(r.tg.rate_limited_calls(), 0, "calls over Telegram's limits");
    assert!(calls >= 3 * BUYERS as usize, "each removal revokes the link, bans and lifts the ban: {calls} calls");
    let needed = calls.saturating_sub(25) as f64 / 30.0;
    assert!(took.as_secs_f64() <= needed * 1.1 + 1.0, "{calls} calls took {took:?}; the limit needs {needed:.1} s");
}

backend_test!(a_revoke_storm_from_two_workers_keeps_to_telegrams_limits_with_slots_in_the_database, |app| {
    let mut r = Rescue::start(app).await;
    let limiter = RateLimits::database(&r.app.db);
    let (took, calls) = revoke_storm(&mut r, &limiter).await;
    assert_paced(&r, took, calls);
    // The limiter's keys are visible to operators: the bot's, and the chats' of the DMs.
    let states = limiter.states(500).await.expect("states");
    assert!(states.iter().any(|k| k.key == "telegram:bot"), "{states:?}");
    assert!(states.iter().any(|k| k.key == format!("telegram:chat:{}", 8000)), "{states:?}");
    let view = r.app.get("/v1/ops/rate-limits", ADMIN).await.body;
    assert_eq!(view["store"], "database");
    assert!(view["keys"].as_array().expect("keys").iter().any(|k| k["key"] == "telegram:bot" && k["fill"].is_number()), "{view}");
    let metrics = r.app.get("/metrics", ADMIN).await.body.as_str().expect("text").to_owned();
    assert!(metrics.contains("hilt_rate_limit_fill{limit=\"telegram:bot\"}"), "{metrics}");
});

#[tokio::test]
#[cfg_attr(not(hilt_test_redis), ignore = "needs HILT_TEST_REDIS_URL")]
async fn a_revoke_storm_from_two_workers_keeps_to_telegrams_limits_with_slots_in_redis() {
    let Some(url) = option_env!("HILT_TEST_REDIS_URL") else { panic!("HILT_TEST_REDIS_URL was not set when the tests were built") };
    let mut r = Rescue::start(common::TestApp::sqlite().await).await;
    // A fresh key space: earlier runs' slots would make this run wait for them.
    let mut conn = redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg("hilt:rate:*").query_async(&mut conn).await.expect("keys");
    for key in keys {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await.expect("del");
    }
    let limiter = RateLimits::connect(Some(url), &r.app.db).await.expect("limiter");
    assert_eq!(limiter.store_name(), "redis");
    let (took, calls) = revoke_storm(&mut r, &limiter).await;
    assert_paced(&r, took, calls);
    let states = limiter.states(500).await.expect("states");
    assert!(states.iter().any(|k| k.key == "telegram:bot"), "{states:?}");
}

// Without the limiter the same storm breaks the fake's limits: the test above could fail.
backend_test!(without_shared_limits_the_same_storm_meets_429s, |app| {
    let mut r = Rescue::start(app).await;
    r.tg.enforce_rate_limits(Rate::new(5, Duration::from_secs(1)), Rate::new(1, Duration::from_secs(1)), Rate::new(20, Duration::from_secs(60)));
    let product = r.telegram_product().await;
    for user in 0..10 {
        r.tg.add_user(8100 + user);
        r.paid(&product, json!({"telegram_user_id": 8100 + user})).await;
    }
    r.start_worker();
    r.wait_until("a 429 from the fake", || async { (r.tg.rate_limited_calls() > 0).then_some(()) }).await;
    r.stop_workers().await;
});

backend_test!(a_discord_revoke_storm_keeps_to_the_route_bucket_discord_announces, |app| {
    let mut r = Rescue::start(app).await;
    // Discord: 50/s for the bot; each route of a guild 10 per second (a fixed window).
    r.dc.enforce_rate_limits(Rate::new(50, Duration::from_secs(1)), Rate::new(10, Duration::from_secs(1)));
    let limiter = RateLimits::database(&r.app.db);
    r.use_rate_limits(&limiter);
    let product = r.discord_product().await;
    let mut memberships = Vec::new();
    for user in 0..30u64 {
        let id = (710_000_000_000_000_000 + user).to_string();
        r.dc.add_member(common::rescue::GUILD, &id, &[]);
        memberships.push(r.paid(&product, json!({"discord_user_id": id})).await.1);
    }
    r.start_worker();
    r.start_worker();
    for m in &memberships {
        r.wait_for_status(m, "delivered").await;
    }
    let took = cancel_all(&mut r, &memberships).await;
    assert_eq!(r.dc.rate_limited_calls(), 0, "calls over Discord's limits");
    let removals = r.dc.calls("remove_role").len();
    assert_eq!(removals, 30);
    // Evenly spaced over a window 10 % longer than Discord's, so out-of-order arrivals still fit.
    let needed = (removals - 1) as f64 * 0.110;
    assert!(took.as_secs_f64() <= needed * 1.1 + 1.0, "{removals} removals took {took:?}; the bucket needs {needed:.1} s");
});

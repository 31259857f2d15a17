//! The shared circuit breaker (issue 10): a burst of 401 answers seen by one worker pauses that
//! bot in every worker within a second; jobs wait without attempts; a successful probe or an
//! operator's resume ends the pause. Two workers, each with its own breaker, share only the
//! database, against the fake Discord (which answers 401 as Discord does for a revoked token).

mod common;

use std::time::{Duration, Instant};

use axum::{body::Body, http::{Request, StatusCode}};
use common::{ADMIN, rescue::{GUILD, Rescue, fast_tuning}};
use serde_json::{Value, json};

const BUYERS: usize = 30;

async fn paused_discord(r: &Rescue) -> Option<Value> {
    let pauses = r.app.get("/v1/ops/providers", ADMIN).await.body;
    pauses.as_array()?.iter().find(|p| p["provider"] == "discord").cloned()
}

/// Buyers who paid, then two workers meeting a revoked bot token; returns when the pause is seen.
async fn burst(r: &mut Rescue, pause: Duration) -> (Vec<String>, Value) {
    let mut tuning = fast_tuning(&r.ctx.config);
    tuning.auth_failure_burst = 3;
    tuning.auth_failure_pause = pause;
    r.set_tuning(tuning);
    r.dc.set_token_revoked(true);
    let product = r.discord_product().await;
    let mut memberships = Vec::new();
    for user in 0..BUYERS {
        let id = format!("{}", 700_000_000_000_000_000u64 + user as u64);
        r.dc.add_member(GUILD, &id, &[]);
        memberships.push(r.paid(&product, json!({"discord_user_id": id})).await.1);
    }
    r.start_worker();
    r.start_worker();
    let pause = r.wait_until("a pause of the discord bot", || paused_discord(r)).await;
    (memberships, pause)
}

backend_test!(a_burst_of_401_seen_by_one_worker_stops_every_worker_within_a_second_until_a_probe_succeeds, |app| {
    let mut r = Rescue::start(app).await;
    let (memberships, pause) = burst(&mut r, Duration::from_secs(8)).await;
    let seen = Instant::now();
    assert_eq!(pause["state"], "paused");
    assert!(pause["reason"].as_str().is_some_and(|why| why.contains("401")), "{pause}");

    // From a second after the pause was seen until well before it ends, no worker calls the bot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls_then = r.dc.all_calls().len();
    tokio::time::sleep_until((seen + Duration::from_secs(3)).into()).await;
    assert_eq!(r.dc.all_calls().len(), calls_then, "a worker called the paused bot");

    // The merchant restores the token; when the pause ends, the first call is the probe, it
    // succeeds, and the pause is gone for all.
    r.dc.set_token_revoked(false);
    r.wait_until("the pause ended by its probe", || async { paused_discord(&r).await.is_none().then_some(()) }).await;
    for m in &memberships {
        r.wait_for_status(m, "delivered").await;
    }
    // Each refused attempt was retried once; waiting for the pause was never an attempt.
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivery_attempts").fetch_one(r.app.db.pool()).await.expect("count");
    assert_eq!(attempts, (BUYERS + r.dc.unauthorized_calls()) as i64);
    r.stop_workers().await;
});

backend_test!(an_operator_resumes_a_paused_bot_and_the_waiting_deliveries_run_at_once, |app| {
    let mut r = Rescue::start(app).await;
    let (memberships, _) = burst(&mut r, Duration::from_secs(600)).await;
    r.dc.set_token_revoked(false);
    let metrics = r.app.get("/metrics", ADMIN).await.body.as_str().expect("text").to_owned();
    assert!(metrics.contains("hilt_provider_paused{provider=\"discord\"} 1"), "{metrics}");
    let page = r.app.raw(Request::get("/ops").header("authorization", format!("Bearer {ADMIN}")).body(Body::empty()).expect("request")).await;
    let html = page.body.as_str().expect("html").to_owned();
    assert!(html.contains("Paused providers (1)") && html.contains("/ops/providers/discord/resume"), "shown on /ops with a resume button");

    let resumed = r.app.post("/v1/ops/providers/discord/resume", ADMIN, json!({})).await;
    assert_eq!(resumed.status, StatusCode::NO_CONTENT);
    for m in &memberships {
        r.wait_for_status(m, "delivered").await;
    }
    assert_eq!(r.app.post("/v1/ops/providers/discord/resume", ADMIN, json!({})).await.status, StatusCode::NOT_FOUND);
    let audit = r.app.get("/v1/ops/audit", ADMIN).await.body;
    assert_eq!(audit["data"][0]["action"], "provider.resume");
    r.stop_workers().await;
});

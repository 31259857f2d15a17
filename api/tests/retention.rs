//! Retention (`HILT_RETENTION`): history older than the window is pruned by the worker's
//! lease-guarded pass, recent history and everything still referenced stays, and the totals
//! are on `/metrics`.

mod common;

use axum::http::StatusCode;
use common::{ADMIN, rescue::Rescue};
use serde_json::json;

const DAY_MS: i64 = 86_400_000;

backend_test!(history_older_than_the_retention_window_is_pruned_and_counted, |app| {
    let mut r = Rescue::start(app).await;
    r.tg.add_user(501);
    r.tg.add_user(502);
    r.start_worker();
    let product = r.telegram_product().await;
    let (_, old) = r.paid(&product, json!({"telegram_user_id": 501})).await;
    let (_, recent) = r.paid(&product, json!({"telegram_user_id": 502})).await;
    r.wait_for_status(&old, "delivered").await;
    r.wait_for_status(&recent, "delivered").await;
    r.stop_workers().await;

    // The first sale happened 100 days ago (the default window is 90 days).
    let pool = r.app.db.pool();
    for sql in [
        "UPDATE jobs SET updated_at = updated_at - $1 WHERE membership_id = $2",
        "UPDATE delivery_attempts SET started_at = started_at - $1, finished_at = finished_at - $1 WHERE membership_id = $2",
        "UPDATE events SET created_at = created_at - $1 WHERE membership_id = $2",
    ] {
        sqlx::query(sql).bind(100 * DAY_MS).bind(&old).execute(pool).await.expect("backdate");
    }
    // One old event is still referenced by a webhook delivery made yesterday: it stays.
    let endpoint = r.app.post("/v1/webhook-endpoints", &r.key, json!({"url": "https://example.com/hook", "events": ["*"]})).await;
    assert_eq!(endpoint.status, StatusCode::CREATED, "{}", endpoint.body);
    let kept_event: String = sqlx::query_scalar("SELECT id FROM events WHERE membership_id = $1 ORDER BY created_at LIMIT 1")
        .bind(&old)
        .fetch_one(pool)
        .await
        .expect("old event");
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, merchant_id, endpoint_id, event_id, event_type, attempt, trigger_kind, status, \
         latency_ms, worker_id, started_at, finished_at) \
         SELECT 'whd_retentiontest0000000001', merchant_id, $1, id, type, 1, 'automatic', 'succeeded', 5, 'w', $2, $2 FROM events WHERE id = $3",
    )
    .bind(endpoint.body["id"].as_str().expect("endpoint id"))
    .bind(hilt_shared::clock::now_ms() - DAY_MS)
    .bind(&kept_event)
    .execute(pool)
    .await
    .expect("webhook delivery");
    let old_events = r.app.count("SELECT COUNT(*) FROM events WHERE membership_id = $1", &old).await;
    assert!(old_events >= 2, "payment.confirmed and delivery.succeeded at least");

    // An Idempotency-Key claimed 25 hours ago no longer replays; one from an hour ago does.
    for (key, age_h) in [("old-key", 25), ("new-key", 1)] {
        sqlx::query("INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ('s', $1, 'h', $2)")
            .bind(key)
            .bind(hilt_shared::clock::now_ms() - age_h * 3_600_000)
            .execute(pool)
            .await
            .expect("key");
    }

    let pruned = hilt_worker::retention::tick(&r.ctx).await.expect("pass").expect("lease");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1", "old-key").await, 0);
    assert_eq!(r.app.count("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1", "new-key").await, 1);
    let by_table = |t: &str| pruned.iter().find(|(table, _)| *table == t).map_or(0, |(_, n)| *n);
    assert_eq!(by_table("jobs"), 1, "{pruned:?}");
    assert_eq!(by_table("delivery_attempts"), 1, "{pruned:?}");
    assert_eq!(by_table("events") as i64, old_events - 1, "{pruned:?}");

    assert_eq!(r.app.count("SELECT COUNT(*) FROM jobs WHERE membership_id = $1", &old).await, 0);
    assert_eq!(r.app.count("SELECT COUNT(*) FROM delivery_attempts WHERE membership_id = $1", &old).await, 0);
    assert_eq!(r.app.count("SELECT COUNT(*) FROM events WHERE membership_id = $1", &old).await, 1, "the referenced event stays");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM jobs WHERE membership_id = $1", &recent).await, 1, "recent history stays");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM delivery_attempts WHERE membership_id = $1", &recent).await, 1);
    assert_eq!(r.membership(&old).await["delivery_status"], "delivered", "the membership itself is not history");

    let metrics = r.app.get("/metrics", ADMIN).await;
    let text = metrics.body.as_str().expect("text");
    assert!(text.contains("# TYPE hilt_pruned_rows_total counter"), "{text}");
    assert!(text.contains("hilt_pruned_rows_total{table=\"jobs\"} 1"), "{text}");
    assert!(text.contains(&format!("hilt_pruned_rows_total{{table=\"events\"}} {}", old_events - 1)), "{text}");

    // A second pass finds nothing more and the counters do not move.
    let again = hilt_worker::retention::tick(&r.ctx).await.expect("pass").expect("lease");
    assert!(again.iter().all(|(_, n)| *n == 0), "{again:?}");
});

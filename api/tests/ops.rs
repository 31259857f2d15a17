//! SPEC §9: the operations dashboard, its JSON, queue actions and Prometheus metrics.

mod common;

use std::time::Duration;

use axum::{body::Body, http::{Method, Request, StatusCode}};
use common::{ADMIN, assert_error, rescue::Rescue};
use serde_json::json;

fn basic(password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}")))
}

backend_test!(the_dashboard_opens_in_a_browser_with_the_admin_token_and_needs_no_internet, |app| {
    let anonymous = app.raw(Request::get("/ops").body(Body::empty()).expect("request")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers.get("www-authenticate").is_some_and(|v| v.to_str().unwrap_or("").starts_with("Basic")),
        "a browser is asked for credentials");
    let wrong = app.raw(Request::get("/ops").header("authorization", basic("nope")).body(Body::empty()).expect("request")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 1).await;
    app.confirm(&payment, "tx-ops").await;
    let page = app.raw(Request::get("/ops").header("authorization", basic(ADMIN)).body(Body::empty()).expect("request")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.body.as_str().expect("html").to_owned();
    for queue in ["delivery", "revoke", "proof_email", "renewal", "webhook"] {
        assert!(html.contains(&format!("<b>{queue}</b>")), "queue {queue} listed");
    }
    assert!(!html.contains("src=\"http") && !html.contains("src='http") && !html.contains("href=\"http"), "no external assets");
    assert!(!html.contains("<script src"), "no external scripts");
});

backend_test!(queue_counts_and_job_actions_are_in_the_json, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    for user in 1..=2 {
        let payment = app.payment(&key, &product, user).await;
        app.confirm(&payment, &format!("tx-q{user}")).await;
    }
    let queues = app.get("/v1/ops/queues", ADMIN).await;
    assert_eq!(queues.status, StatusCode::OK);
    let delivery = queues.body["queues"].as_array().expect("queues").iter().find(|q| q["name"] == "delivery").expect("delivery").clone();
    assert_eq!(delivery["pending"], 2);
    assert_eq!(delivery["running"], 0);
    assert_eq!(delivery["dead"], 0);
    assert!(delivery["oldest_waiting_since"].is_string());
    assert_error(&app.get("/v1/ops/queues", &key).await, StatusCode::UNAUTHORIZED, "unauthorized");

    let jobs = app.get("/v1/ops/queues/delivery/jobs?status=queued", ADMIN).await;
    let job = jobs.body["data"][0]["id"].as_str().expect("job").to_owned();
    let detail = app.get(&format!("/v1/ops/jobs/{job}"), ADMIN).await;
    assert_eq!(detail.body["queue"], "delivery");
    assert_eq!(detail.body["payload"]["trigger"], "automatic");
    let discarded = app.post(&format!("/v1/ops/jobs/{job}/discard"), ADMIN, json!({})).await;
    assert_eq!(discarded.body["status"], "discarded");
    let again = app.post(&format!("/v1/ops/jobs/{job}/discard"), ADMIN, json!({})).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");
    let retried = app.post(&format!("/v1/ops/jobs/{job}/retry"), ADMIN, json!({})).await;
    assert_eq!(retried.body["status"], "queued");
    assert_error(&app.get("/v1/ops/jobs/job_missing", ADMIN).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.post("/v1/ops/queues/nope/pause", ADMIN, json!({})).await, StatusCode::NOT_FOUND, "not_found");
    let bad = app.get("/v1/ops/queues/delivery/jobs?status=weird", ADMIN).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
});

backend_test!(a_paused_queue_holds_its_jobs_until_resumed, |app| {
    let mut r = Rescue::start(app).await;
    r.tg.add_user(7);
    r.start_worker();
    let paused = r.app.post("/v1/ops/queues/delivery/pause", ADMIN, json!({})).await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 7})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(r.membership(&membership).await["delivery_status"], "pending", "nothing runs while paused");
    let queues = r.app.get("/v1/ops/queues", ADMIN).await;
    assert!(queues.body["queues"].as_array().expect("queues").iter().any(|q| q["name"] == "delivery" && q["paused"] == true));
    r.app.post("/v1/ops/queues/delivery/resume", ADMIN, json!({})).await;
    r.wait_for_status(&membership, "delivered").await;
    r.stop_workers().await;
});

backend_test!(metrics_expose_queue_depth_outcomes_and_latency, |app| {
    let mut r = Rescue::start(app).await;
    r.tg.add_user(8);
    r.start_worker();
    let product = r.telegram_product().await;
    let (_, membership) = r.paid(&product, json!({"telegram_user_id": 8})).await;
    r.wait_for_status(&membership, "delivered").await;
    let unauth = r.app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    let m = r.app.get("/metrics", ADMIN).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/plain; version=0.0.4"));
    let text = m.body.as_str().expect("text").to_owned();
    assert!(text.contains("hilt_queue_jobs{queue=\"delivery\",state=\"pending\"} 0"), "{text}");
    assert!(text.contains("hilt_jobs_finished_total{queue=\"delivery\",outcome=\"done\"} 1"), "{text}");
    assert!(text.contains("hilt_delivery_attempts_total{provider=\"telegram\",outcome=\"succeeded\",error_code=\"\"} 1"), "{text}");
    assert!(text.contains("hilt_delivery_attempt_duration_seconds_count{provider=\"telegram\"} 1"), "{text}");
    assert!(text.contains("# TYPE hilt_delivery_attempt_duration_seconds histogram"));
    r.stop_workers().await;
});

backend_test!(a_form_posted_from_another_site_changes_nothing, |app| {
    let post = |origin: Option<&str>, body: &str| {
        let mut request = Request::post("/ops/queues/webhook/pause")
            .header("host", "hilt.local:8080")
            .header("authorization", basic(ADMIN))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.body(Body::from(body.to_owned())).expect("request")
    };
    let paused = || async { app.get("/v1/ops/queues", ADMIN).await.body["queues"].as_array().expect("queues").iter().any(|q| q["name"] == "webhook" && q["paused"] == true) };

    // The page may not be framed by another site, and its forms carry a token.
    let page = app.raw(Request::get("/ops").header("authorization", basic(ADMIN)).body(Body::empty()).expect("request")).await;
    assert_eq!(page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()), Some("frame-ancestors 'none'"));
    assert_eq!(page.headers.get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));
    let html = page.body.as_str().expect("html").to_owned();
    let token = html.split("name=csrf value='").nth(1).and_then(|rest| rest.split('\'').next()).expect("a csrf field in the form").to_owned();

    // An auto-submitting form elsewhere: the browser resends Basic credentials, but not the token.
    let forged = app.raw(post(Some("https://evil.example"), &format!("csrf={token}"))).await;
    assert_error(&forged, StatusCode::FORBIDDEN, "forbidden");
    let tokenless = app.raw(post(Some("http://hilt.local:8080"), "")).await;
    assert_error(&tokenless, StatusCode::FORBIDDEN, "forbidden");
    let no_origin = app.raw(post(None, &format!("csrf={token}"))).await;
    assert_error(&no_origin, StatusCode::FORBIDDEN, "forbidden");
    assert!(!paused().await, "nothing changed");

    // The page's own form works.
    let own = app.raw(post(Some("http://hilt.local:8080"), &format!("csrf={token}"))).await;
    assert_eq!(own.status, StatusCode::SEE_OTHER, "{}", own.body);
    assert!(paused().await);
});

backend_test!(every_operations_action_is_in_the_audit_log, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 1).await;
    app.confirm(&payment, "tx-audit").await;
    let job = app.get("/v1/ops/queues/delivery/jobs?status=queued", ADMIN).await.body["data"][0]["id"].as_str().expect("job").to_owned();

    // From the API, then from the dashboard's own form (a few ms apart: the log orders by time).
    assert_eq!(app.post("/v1/ops/queues/webhook/pause", ADMIN, json!({})).await.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(app.post(&format!("/v1/ops/jobs/{job}/discard"), ADMIN, json!({})).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let page = app.raw(Request::get("/ops").header("authorization", basic(ADMIN)).body(Body::empty()).expect("request")).await;
    let html = page.body.as_str().expect("html").to_owned();
    let token = html.split("name=csrf value='").nth(1).and_then(|rest| rest.split('\'').next()).expect("csrf").to_owned();
    let resumed = app
        .raw(
            Request::post("/ops/queues/webhook/resume")
                .header("host", "hilt.local")
                .header("origin", "http://hilt.local")
                .header("authorization", basic(ADMIN))
                .body(Body::from(format!("csrf={token}")))
                .expect("request"),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER);

    let log = app.get("/v1/ops/audit", ADMIN).await;
    assert_eq!(log.status, StatusCode::OK);
    assert_eq!(log.body["total"], 3, "{}", log.body);
    let entries = log.body["data"].as_array().expect("data");
    let seen: Vec<(&str, &str, bool)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or(""), e["target"].as_str().unwrap_or(""), e["source"].as_str().unwrap_or("").ends_with("via the dashboard")))
        .collect();
    assert_eq!(seen, [("queue.resume", "webhook", true), ("job.discard", job.as_str(), false), ("queue.pause", "webhook", false)], "newest first");
    for e in entries {
        assert!(e["actor"].as_str().is_some_and(|a| a.starts_with("admin credential ") && !a.contains(ADMIN)), "who, never the token: {e}");
        assert!(e["at"].as_str().is_some_and(|t| t.ends_with('Z')), "when: {e}");
    }
    assert_error(&app.get("/v1/ops/audit", &key).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let page = app.raw(Request::get("/ops").header("authorization", basic(ADMIN)).body(Body::empty()).expect("request")).await;
    assert!(page.body.as_str().is_some_and(|h| h.contains("Recent actions") && h.contains("job.discard")), "shown on /ops");
});

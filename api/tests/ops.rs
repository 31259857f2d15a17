//! SPEC §9: the operations dashboard, its JSON, queue actions and Prometheus metrics.

mod common;

use std::time::Duration;

use axum::{body::Body, http::{Method, Request, StatusCode}};
use common::{ADMIN, assert_error, rescue::Rescue};
use serde_json::json;

/// The csrf token of a page's forms.
fn csrf(html: &str) -> String {
    html.split("name=\"csrf\" value=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a csrf field in the form").to_owned()
}

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
    assert!(delivery["oldest_pending_since"].is_string());
    assert_error(&app.get("/v1/ops/queues", &key).await, StatusCode::UNAUTHORIZED, "unauthorized");

    let jobs = app.get("/v1/ops/queues/delivery/jobs?status=pending", ADMIN).await;
    let job = jobs.body["data"][0]["id"].as_str().expect("job").to_owned();
    let detail = app.get(&format!("/v1/ops/jobs/{job}"), ADMIN).await;
    assert_eq!(detail.body["queue"], "delivery");
    assert_eq!(detail.body["payload"]["trigger"], "automatic");
    let discarded = app.post(&format!("/v1/ops/jobs/{job}/discard"), ADMIN, json!({})).await;
    assert_eq!(discarded.body["status"], "discarded");
    let again = app.post(&format!("/v1/ops/jobs/{job}/discard"), ADMIN, json!({})).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");
    let retried = app.post(&format!("/v1/ops/jobs/{job}/retry"), ADMIN, json!({})).await;
    assert_eq!(retried.body["status"], "pending");
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
    assert!(text.contains("hilt_jobs_finished_total{queue=\"delivery\",status=\"done\"} 1"), "{text}");
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
    let token = csrf(&html);

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
    let job = app.get("/v1/ops/queues/delivery/jobs?status=pending", ADMIN).await.body["data"][0]["id"].as_str().expect("job").to_owned();

    // From the API, then from the dashboard's own form (a few ms apart: the log orders by time).
    assert_eq!(app.post("/v1/ops/queues/webhook/pause", ADMIN, json!({})).await.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(app.post(&format!("/v1/ops/jobs/{job}/discard"), ADMIN, json!({})).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let page = app.raw(Request::get("/ops").header("authorization", basic(ADMIN)).body(Body::empty()).expect("request")).await;
    let html = page.body.as_str().expect("html").to_owned();
    let token = csrf(&html);
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

/// A GET of an /ops page as the browser sends it, with an optional cookie.
async fn page(app: &common::TestApp, path: &str, cookie: Option<&str>) -> common::Response {
    let mut request = Request::get(path).header("authorization", basic(ADMIN));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    app.raw(request.body(Body::empty()).expect("request")).await
}

/// A form post from the page's own origin.
async fn form(app: &common::TestApp, path: &str, body: &str) -> common::Response {
    let request = Request::post(path)
        .header("host", "hilt.local")
        .header("origin", "http://hilt.local")
        .header("authorization", basic(ADMIN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .expect("request");
    app.raw(request).await
}

fn html(r: &common::Response) -> String {
    r.body.as_str().expect("html").to_owned()
}

fn flash_cookie(r: &common::Response) -> String {
    r.headers.get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|c| c.split(';').next()).expect("a flash cookie").to_owned()
}

backend_test!(a_queue_is_triaged_with_filters_pages_and_a_bulk_action_whose_count_is_confirmed, |app| {
    let (a, b) = (app.merchant().await, app.merchant().await);
    let (product_a, product_b) = (app.telegram_product(&a).await, app.telegram_product(&b).await);
    for user in 1..=55 {
        let payment = app.payment(&a, &product_a, user).await;
        app.confirm(&payment, &format!("tx-a{user}")).await;
    }
    let mut b_payments = Vec::new();
    for user in 1..=5 {
        let payment = app.payment(&b, &product_b, 100 + user).await;
        app.confirm(&payment, &format!("tx-b{user}")).await;
        b_payments.push(payment);
    }
    let merchant_b: String =
        sqlx::query_scalar("SELECT merchant_id FROM payments WHERE id = $1").bind(&b_payments[0]).fetch_one(app.db.pool()).await.expect("merchant");

    // Pages of 50, and how many are in each state.
    let first = app.get("/v1/ops/queues/delivery/jobs?status=pending", ADMIN).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!((first.body["total"].clone(), first.body["data"].as_array().map(Vec::len)), (json!(60), Some(50)));
    let second = app.get("/v1/ops/queues/delivery/jobs?status=pending&offset=50", ADMIN).await;
    assert_eq!(second.body["data"].as_array().map(Vec::len), Some(10));
    let counts = first.body["by_status"].as_array().expect("by_status").clone();
    assert!(counts.contains(&json!({"status": "pending", "count": 60})) && counts.contains(&json!({"status": "dead", "count": 0})), "{counts:?}");
    let by_b = app.get(&format!("/v1/ops/queues/delivery/jobs?merchant_id={merchant_b}"), ADMIN).await;
    assert_eq!(by_b.body["total"], 5);
    assert!(by_b.body["data"].as_array().expect("data").iter().all(|j| j["merchant_id"] == merchant_b.as_str()));
    assert_eq!(app.get("/v1/ops/queues/delivery/jobs?since=1h", ADMIN).await.body["total"], 60);
    assert_eq!(app.get("/v1/ops/queues/delivery/jobs?until=2000-01-01T00:00:00Z", ADMIN).await.body["total"], 0);
    for bad in ["status=queued", "status=failed", "provider=slack", "since=yesterday"] {
        assert_error(&app.get(&format!("/v1/ops/queues/delivery/jobs?{bad}"), ADMIN).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }

    // Bulk discard of merchant B's jobs through the API, then a bulk retry from the page.
    let discarded = app.post("/v1/ops/queues/delivery/jobs/discard", ADMIN, json!({"merchant_id": merchant_b})).await;
    assert_eq!(discarded.body, json!({"count": 5}));
    assert_eq!(app.get("/v1/ops/queues/delivery/jobs?status=discarded", ADMIN).await.body["total"], 5);

    let queue = page(&app, &format!("/ops/queues/delivery?merchant_id={merchant_b}"), None).await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(html(&queue).contains("5 matching job(s)"), "{}", html(&queue));
    assert!(html(&queue).contains("<svg class=\"graph\""), "graphs drawn on the server");
    let confirm = page(&app, &format!("/ops/queues/delivery/confirm?action=retry&status=discarded&merchant_id={merchant_b}"), None).await;
    assert!(html(&confirm).contains("Retry 5 job(s)?"), "the confirmation states the count: {}", html(&confirm));
    let nothing = page(&app, "/ops/queues/delivery/confirm?action=retry&status=done", None).await;
    assert!(html(&nothing).contains("No matching job can be retried"), "done jobs are never retried: {}", html(&nothing));
    let token = csrf(&html(&confirm));
    let done = form(&app, "/ops/queues/delivery/jobs/retry", &format!("csrf={token}&status=discarded&merchant_id={merchant_b}")).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let back = done.headers.get("location").and_then(|v| v.to_str().ok()).expect("location").to_owned();
    assert!(back.starts_with("/ops/queues/delivery?status=discarded"), "{back}");
    let shown = page(&app, &back, Some(&flash_cookie(&done))).await;
    assert!(html(&shown).contains("Retried 5 job(s)."), "a flash message after the action");
    assert!(shown.headers.get("set-cookie").and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("Max-Age=0")), "shown once");
    assert_eq!(app.get("/v1/ops/queues/delivery/jobs?status=pending", ADMIN).await.body["total"], 60);

    let log = app.get("/v1/ops/audit", ADMIN).await.body["data"].clone();
    assert_eq!(log[0]["action"], "jobs.retry");
    assert!(log[0]["target"].as_str().is_some_and(|t| t.contains("(5 jobs)") && t.contains(&merchant_b)), "{log}");
    assert_eq!(log[1]["action"], "jobs.discard");
});

backend_test!(search_finds_any_id_and_buyers_and_a_membership_timeline_has_its_actions, |app| {
    let mut r = Rescue::start(app).await;
    r.tg.add_user(41);
    r.tg.block_bot(41);
    r.start_worker();
    let product = r.telegram_product().await;
    let (payment, membership) = r.paid(&product, json!({"telegram_user_id": 41, "handle": "@Buyer41"})).await;
    let m = r.wait_for_status(&membership, "manual_review").await;
    let ticket = m["support_ticket_id"].as_str().expect("ticket").to_owned();
    let job = r.app.get(&format!("/v1/ops/queues/delivery/jobs?status=dead"), ADMIN).await.body["data"][0]["id"].as_str().expect("dead job").to_owned();

    let timeline = format!("/ops/memberships/{membership}");
    for (q, to) in [(job.as_str(), format!("/ops/jobs/{job}")), (membership.as_str(), timeline.clone()), (payment.as_str(), timeline.clone()),
        (ticket.as_str(), timeline.clone()), ("41", timeline.clone()), ("@buyer41", timeline.clone())] {
        let found = page(&r.app, &format!("/ops/search?q={}", q.replace('@', "%40")), None).await;
        assert_eq!(found.status, StatusCode::SEE_OTHER, "search {q}");
        assert_eq!(found.headers.get("location").and_then(|v| v.to_str().ok()), Some(to.as_str()), "search {q}");
    }
    let hits = r.app.get(&format!("/v1/ops/search?q={payment}"), ADMIN).await;
    assert_eq!(hits.body[0]["kind"], "payment");
    assert!(html(&page(&r.app, "/ops/search?q=nobody-here", None).await).contains("Nothing matches"));

    // The overview's manual-review row leads to the timeline, which shows why and offers the fix.
    assert!(html(&page(&r.app, "/ops", None).await).contains(&format!("href=\"{timeline}\"")));
    let shown = html(&page(&r.app, &timeline, None).await);
    assert!(shown.contains("user_blocked_bot") && shown.contains(&ticket) && shown.contains("delivery.manual_review"), "{shown}");
    r.tg.unblock_bot(41);
    let retried = form(&r.app, &format!("{timeline}/retry-delivery"), &format!("csrf={}", csrf(&shown))).await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    assert!(html(&page(&r.app, &timeline, Some(&flash_cookie(&retried))).await).contains("Delivery queued now"));
    r.wait_for_status(&membership, "delivered").await;
    let opened = form(&r.app, &format!("{timeline}/ticket"), &format!("csrf={}", csrf(&shown))).await;
    assert!(html(&page(&r.app, &timeline, Some(&flash_cookie(&opened))).await).contains(&format!("Ticket {ticket}")));
    r.stop_workers().await;
});

backend_test!(finished_jobs_counters_never_go_down_when_dead_jobs_are_retried, |app| {
    let mut r = Rescue::start(app).await;
    let product = r.telegram_product().await;
    let mut memberships = Vec::new();
    for user in 51..=53 {
        r.tg.add_user(user);
        r.tg.block_bot(user);
        memberships.push(r.paid(&product, json!({"telegram_user_id": user})).await.1);
    }
    r.start_worker();
    for m in &memberships {
        r.wait_for_status(m, "manual_review").await;
    }
    let finished = |text: &str, status: &str| -> f64 {
        let series = format!("hilt_jobs_finished_total{{queue=\"delivery\",status=\"{status}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    let before = r.app.get("/metrics", ADMIN).await.body.as_str().expect("text").to_owned();
    assert_eq!(finished(&before, "dead"), 3.0, "{before}");
    assert!(before.contains("hilt_job_failures_total{queue=\"delivery\"} 3"), "{before}");
    assert!(before.contains("hilt_queue_jobs{queue=\"delivery\",state=\"dead\"} 3"), "{before}");
    assert!(before.contains("hilt_manual_review_memberships 3"), "{before}");

    for user in 51..=53 {
        r.tg.unblock_bot(user);
    }
    let retried = r.app.post("/v1/ops/queues/delivery/jobs/retry", ADMIN, json!({"status": "dead"})).await;
    assert_eq!(retried.body["count"], 3);
    for m in &memberships {
        r.wait_for_status(m, "delivered").await;
    }
    let after = r.app.get("/metrics", ADMIN).await.body.as_str().expect("text").to_owned();
    assert_eq!(finished(&after, "dead"), 3.0, "a counter keeps what it counted: {after}");
    assert_eq!(finished(&after, "done"), 3.0, "{after}");
    assert!(after.contains("hilt_queue_jobs{queue=\"delivery\",state=\"dead\"} 0"), "the gauge follows the database");
    assert!(after.contains("hilt_http_requests_total{route=\"/v1/ops/queues/{queue}/jobs/retry\",method=\"POST\",status=\"200\"} 1"), "{after}");

    // The dashboard counts every run of every worker: 3 failed, 3 done in the last minutes.
    let stats = r.wait_until("3 done and 3 failed runs counted", || async {
        let q = r.app.get("/v1/ops/queues", ADMIN).await.body["queues"][0].clone();
        (q["done_last_5m"] == 3 && q["failed_last_5m"] == 3).then_some(q)
    }).await;
    assert!(stats["run_ms_p95"].is_number(), "{stats}");
    let graph = r.app.get("/v1/ops/queues/delivery/graph", ADMIN).await.body;
    let points = graph.as_array().expect("points");
    assert_eq!(points.len(), 60);
    assert_eq!(points.iter().map(|p| p["done"].as_i64().unwrap_or(0)).sum::<i64>(), 3);
    assert_eq!(points.iter().map(|p| p["failed"].as_i64().unwrap_or(0)).sum::<i64>(), 3);
    r.stop_workers().await;
});

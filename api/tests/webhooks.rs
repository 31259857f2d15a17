//! Merchant webhooks end to end (SPEC §8): the real router and database, in-process workers on
//! a real queue transport, and a receiver on 127.0.0.1 that we script to fail, time out, answer
//! 410 or 429. Every signature is checked with an independent Standard Webhooks verifier
//! written here on `ring` (not the code that signed).

mod common;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, Request, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use common::{TestApp, assert_error, rescue::Rescue};
use hilt_shared::{config::Config, providers::Providers};
use hilt_worker::{JobContext, Tuning};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// An independent Standard Webhooks verifier.

/// How many of the `webhook-signature` entries verify with `secret` (0 = not signed by it).
/// Fails the test on anything the spec does not allow: missing headers, a stale timestamp, a
/// signature that is not `v1,<base64>`.
fn verified_with(secret: &str, headers: &HeaderMap, body: &[u8]) -> usize {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("missing {name}"));
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let seconds: i64 = timestamp.parse().expect("webhook-timestamp is integer unix seconds");
    let now = chrono::Utc::now().timestamp();
    assert!((now - seconds).abs() <= 300, "timestamp {seconds} is not within 5 minutes of {now}");
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("secret is base64");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    header("webhook-signature")
        .split(' ')
        .filter(|entry| {
            let (version, signature) = entry.split_once(',').expect("signature entries are version,signature");
            assert_eq!(version, "v1");
            let signature = STANDARD.decode(signature).expect("signature is base64");
            ring::hmac::verify(&key, &signed, &signature).is_ok()
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// A scripted receiver.

#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    Hang(Duration),
}

struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    fn id(&self) -> &str {
        self.headers["webhook-id"].to_str().expect("id")
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    received: Vec<Received>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(replies: &[Reply]) -> Self {
        let script = Arc::new(Mutex::new(Script { replies: replies.iter().copied().collect(), received: Vec::new() }));
        let app = Router::new().route("/hook", post(receive)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}/hook"), script }
    }

    fn count(&self) -> usize {
        self.script.lock().expect("script").received.len()
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut self.script.lock().expect("script").received)
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            if self.count() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(self.count() >= n, "receiver got {} requests, expected {n}", self.count());
        self.take()
    }
}

async fn receive(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut s = script.lock().expect("script");
        s.received.push(Received { headers, body, at: Instant::now() });
        s.replies.pop_front().unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).expect("status").into_response(),
        Reply::RetryAfter(code, secs) => {
            (StatusCode::from_u16(code).expect("status"), [("retry-after", secs.to_string())]).into_response()
        }
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Harness.

/// The API with `HILT_WEBHOOK_ALLOW_PRIVATE` set as given (the receiver is on loopback).
fn private_allowed(mut app: TestApp, allow: bool) -> TestApp {
    let mut config = (*app.config).clone();
    config.webhook_allow_private = allow;
    app.config = Arc::new(config);
    // Rebuilds the router over the changed configuration.
    app.use_providers(Providers::from_config_with_timeout(&app.config, Duration::from_secs(3)).expect("providers"));
    app
}

/// Rescue whose workers may send to loopback, with the test's webhook timings.
async fn rescue(app: TestApp, change: impl FnOnce(&mut Config, &mut Tuning)) -> Rescue {
    let mut r = Rescue::start(private_allowed(app, true)).await;
    let mut config = (*r.ctx.config).clone();
    let mut tuning = r.ctx.tuning.clone();
    tuning.webhook_schedule = "100ms,100ms,100ms".split(',').map(|p| p.parse().expect("period")).collect();
    tuning.webhook_timeout = Duration::from_secs(5);
    change(&mut config, &mut tuning);
    r.ctx = Arc::new(JobContext::new(r.ctx.db.clone(), Arc::new(config), r.ctx.providers.clone(), tuning));
    r.start_worker();
    r
}

/// Creates an endpoint; returns (id, secret).
async fn endpoint(r: &Rescue, url: &str, events: Value) -> (String, String) {
    let c = r.app.post("/v1/webhook-endpoints", &r.key, json!({"url": url, "events": events, "description": "test"})).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    (c.body["id"].as_str().expect("id").to_owned(), c.body["secret"].as_str().expect("secret").to_owned())
}

async fn deliveries(r: &Rescue, endpoint: &str) -> Vec<Value> {
    let d = r.app.get(&format!("/v1/webhook-endpoints/{endpoint}/deliveries"), &r.key).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert!(d.body["total"].is_i64() && d.body["limit"] == 50 && d.body["offset"] == 0, "list envelope: {}", d.body);
    let mut rows = d.body["data"].as_array().expect("data").clone();
    rows.reverse(); // oldest first
    rows
}

/// Polls the delivery record until `done` holds.
async fn wait_deliveries(r: &Rescue, endpoint: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..400 {
        let rows = deliveries(r, endpoint).await;
        if done(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deliveries never matched: {:?}", deliveries(r, endpoint).await);
}

async fn pay(r: &Rescue, product: &str, user: i64) -> (String, String) {
    r.tg.add_user(user);
    r.paid(product, json!({"telegram_user_id": user})).await
}

// ---------------------------------------------------------------------------------------------

backend_test!(a_confirmed_payment_reaches_the_receiver_signed_per_standard_webhooks, |app| {
    let receiver = Receiver::start(&[]).await;
    let everything = Receiver::start(&[]).await;
    let mut r = rescue(app, |_, _| {}).await;
    let (id, secret) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    assert!(id.starts_with("whe_"));
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64 after the prefix");
    assert!(key.len() >= 24, "at least 24 random bytes");
    let (_, all_secret) = endpoint(&r, &everything.url, json!(["*"])).await;

    let listed = r.app.get("/v1/webhook-endpoints", &r.key).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["total"], 2);
    assert!(!listed.body.to_string().contains("whsec_"), "no secrets in the list: {}", listed.body);
    let mine = listed.body["data"].as_array().expect("data").iter().find(|e| e["id"] == id.as_str()).expect("listed").clone();
    assert_eq!(mine["events"], json!(["payment.confirmed"]));
    assert_eq!(mine["status"], "enabled");
    assert_eq!(mine["url"], receiver.url.as_str());

    let product = r.telegram_product().await;
    let (payment, membership) = pay(&r, &product, 4242).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(verified_with(&secret, &got[0].headers, &got[0].body), 1, "signature verifies independently");
    assert_eq!(verified_with(&all_secret, &got[0].headers, &got[0].body), 0, "each endpoint has its own secret");
    assert_eq!(got[0].headers["content-type"], "application/json");
    let body = got[0].json();
    assert_eq!(body["id"], got[0].id(), "webhook-id is the event id");
    assert!(got[0].id().starts_with("evt_"));
    assert_eq!(body["type"], "payment.confirmed");
    assert!(body["created_at"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    assert_eq!(body["data"]["id"], payment.as_str(), "data is the payment as the API returns it");
    assert_eq!(body["data"]["status"], "confirmed");
    assert_eq!(body["data"]["membership_id"], membership.as_str());
    assert!(body["data"]["buyer"].get("discord_access_token").is_none_or(Value::is_null));

    // `*` gets every event of the membership, ordered by created_at.
    r.wait_for_status(&membership, "delivered").await;
    let all = everything.wait_for(2).await;
    let mut events: Vec<Value> = all.iter().map(|g| {
        assert_eq!(verified_with(&all_secret, &g.headers, &g.body), 1);
        g.json()
    }).collect();
    events.sort_by_key(|e| e["created_at"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events.iter().map(|e| e["type"].clone()).collect::<Vec<_>>(), [json!("payment.confirmed"), json!("delivery.succeeded")]);
    assert_ne!(events[0]["created_at"], events[1]["created_at"], "a membership's events are strictly ordered");

    let rows = wait_deliveries(&r, &id, |d| d.len() == 1).await;
    assert_eq!(rows[0]["status"], "succeeded");
    assert_eq!(rows[0]["status_code"], 200);
    assert_eq!(rows[0]["attempt"], 1);
    assert_eq!(rows[0]["event_id"], body["id"]);
    assert!(rows[0]["latency_ms"].is_i64() && rows[0]["error"].is_null());
    assert!(rows[0]["id"].as_str().is_some_and(|d| d.starts_with("whd_")));
    r.stop_workers().await;
});

backend_test!(a_failing_receiver_is_retried_with_the_same_webhook_id, |app| {
    let receiver = Receiver::start(&[Reply::Status(500), Reply::Status(503)]).await;
    let mut r = rescue(app, |_, _| {}).await;
    let (id, secret) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let product = r.telegram_product().await;
    pay(&r, &product, 1).await;
    let got = receiver.wait_for(3).await;
    assert!(got.iter().all(|g| g.id() == got[0].id()), "one webhook-id across retries");
    assert!(got.iter().all(|g| verified_with(&secret, &g.headers, &g.body) == 1));
    assert!(got.iter().all(|g| g.body == got[0].body), "the same body every time");
    let rows = wait_deliveries(&r, &id, |d| d.len() == 3).await;
    assert_eq!(rows.iter().map(|d| d["attempt"].clone()).collect::<Vec<_>>(), [json!(1), json!(2), json!(3)]);
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["status_code"], 500);
    assert_eq!(rows[0]["error"], "http_500");
    assert!(rows[0]["next_attempt_at"].is_string());
    assert_eq!(rows[1]["status_code"], 503);
    assert_eq!(rows[2]["status"], "succeeded");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 0, "nothing more after a success");
    r.stop_workers().await;
});

backend_test!(a_receiver_that_times_out_is_retried, |app| {
    let receiver = Receiver::start(&[Reply::Hang(Duration::from_secs(3))]).await;
    let mut r = rescue(app, |_, tuning| tuning.webhook_timeout = Duration::from_millis(400)).await;
    let (id, secret) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let product = r.telegram_product().await;
    pay(&r, &product, 2).await;
    let rows = wait_deliveries(&r, &id, |d| d.len() == 2).await;
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["error"], "timeout");
    assert!(rows[0]["status_code"].is_null());
    assert!(rows[0]["latency_ms"].as_i64().is_some_and(|ms| (300..3000).contains(&ms)), "{}", rows[0]);
    assert_eq!(rows[1]["status"], "succeeded");
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].id(), got[1].id());
    assert_eq!(verified_with(&secret, &got[1].headers, &got[1].body), 1);
    r.stop_workers().await;
});

backend_test!(a_410_disables_the_endpoint_and_nothing_more_is_sent, |app| {
    let receiver = Receiver::start(&[Reply::Status(410)]).await;
    let mut r = rescue(app, |_, _| {}).await;
    let (id, _) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let product = r.telegram_product().await;
    let (_, membership) = pay(&r, &product, 3).await;
    let rows = wait_deliveries(&r, &id, |d| !d.is_empty()).await;
    assert_eq!(rows[0]["status_code"], 410);
    assert_eq!(rows[0]["status"], "dead");
    let e = r.app.get(&format!("/v1/webhook-endpoints/{id}"), &r.key).await;
    assert_eq!(e.body["status"], "disabled", "{}", e.body);
    assert_eq!(e.body["disabled_reason"], "gone");
    assert!(e.body["disabled_at"].is_string());

    r.wait_for_status(&membership, "delivered").await;
    pay(&r, &product, 4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 1, "no delivery after the 410");
    assert_eq!(deliveries(&r, &id).await.len(), 1);
    let retry = r.app.post(&format!("/v1/webhook-endpoints/{id}/deliveries/{}/retry", rows[0]["id"].as_str().expect("id")), &r.key, json!({})).await;
    assert_error(&retry, StatusCode::CONFLICT, "conflict");
    r.stop_workers().await;
});

backend_test!(a_429_retry_after_is_honoured, |app| {
    let receiver = Receiver::start(&[Reply::RetryAfter(429, 2)]).await;
    let mut r = rescue(app, |_, _| {}).await;
    let (id, _) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let product = r.telegram_product().await;
    pay(&r, &product, 5).await;
    let got = receiver.wait_for(2).await;
    let gap = got[1].at.duration_since(got[0].at);
    assert!(gap >= Duration::from_millis(1_900), "waited {gap:?}, not the 2 s the receiver asked for (schedule is 100 ms)");
    assert_eq!(got[0].id(), got[1].id());
    let rows = wait_deliveries(&r, &id, |d| d.len() == 2).await;
    assert_eq!(rows[0]["status_code"], 429);
    assert_eq!(rows[0]["error"], "http_429");
    assert_eq!(rows[1]["status"], "succeeded");
    r.stop_workers().await;
});

backend_test!(exhausted_deliveries_stay_visible_and_a_manual_retry_resends, |app| {
    let receiver = Receiver::start(&[Reply::Status(500); 4]).await;
    let mut r = rescue(app, |_, _| {}).await;
    let (id, secret) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let product = r.telegram_product().await;
    pay(&r, &product, 6).await;
    let rows = wait_deliveries(&r, &id, |d| d.last().is_some_and(|l| l["status"] == "dead")).await;
    assert_eq!(rows.len(), 4, "the first attempt and the three retries of the schedule");
    assert!(rows[..3].iter().all(|d| d["status"] == "failed"));
    assert!(rows[3]["next_attempt_at"].is_null());
    let first = receiver.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 0, "no attempts after the schedule is used up");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM jobs WHERE queue = 'webhook' AND status = $1", "dead").await, 1);

    let dead = rows[3]["id"].as_str().expect("id");
    let retry = r.app.post(&format!("/v1/webhook-endpoints/{id}/deliveries/{dead}/retry"), &r.key, json!({})).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    assert_eq!(retry.body["event_id"], first[0].id());
    let again = receiver.wait_for(1).await;
    assert_eq!(again[0].id(), first[0].id(), "a manual retry keeps the webhook-id");
    assert_eq!(verified_with(&secret, &again[0].headers, &again[0].body), 1);
    let rows = wait_deliveries(&r, &id, |d| d.len() == 5).await;
    assert_eq!(rows[4]["trigger"], "manual");
    assert_eq!(rows[4]["attempt"], 5);
    assert_eq!(rows[4]["status"], "succeeded");
    r.stop_workers().await;
});

backend_test!(a_rotated_secret_signs_beside_the_previous_one, |app| {
    let receiver = Receiver::start(&[]).await;
    let mut r = rescue(app, |_, _| {}).await;
    let (id, old) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let rotated = r.app.post(&format!("/v1/webhook-endpoints/{id}/rotate-secret"), &r.key, json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["secret"].as_str().expect("secret").to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let until = chrono::DateTime::parse_from_rfc3339(rotated.body["previous_secret_expires_at"].as_str().expect("expiry")).expect("rfc3339");
    let hours = (until.timestamp() - chrono::Utc::now().timestamp()) as f64 / 3600.0;
    assert!((23.9..=24.1).contains(&hours), "the old secret signs for 24 h, not {hours} h");

    let product = r.telegram_product().await;
    pay(&r, &product, 7).await;
    let got = receiver.wait_for(1).await;
    let signatures = got[0].headers["webhook-signature"].to_str().expect("header");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(verified_with(&new, &got[0].headers, &got[0].body), 1);
    assert_eq!(verified_with(&old, &got[0].headers, &got[0].body), 1);
    r.stop_workers().await;
});

backend_test!(private_addresses_are_refused_unless_allowed, |app| {
    let app = private_allowed(app, false);
    let key = app.merchant().await;
    for url in ["http://127.0.0.1:9000/hook", "http://[::1]/", "http://10.0.0.5/", "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/", "http://localhost:8080/", "http://192.168.1.10/"]
    {
        let c = app.post("/v1/webhook-endpoints", &key, json!({"url": url, "events": ["*"]})).await;
        assert_error(&c, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(c.body["error"]["param"], "url", "{url}");
    }

    // Created while allowed, sent while not: the worker resolves and refuses before connecting.
    let receiver = Receiver::start(&[]).await;
    let mut r = rescue(app, |config, _| config.webhook_allow_private = false).await;
    let (id, _) = endpoint(&r, &receiver.url, json!(["payment.confirmed"])).await;
    let product = r.telegram_product().await;
    pay(&r, &product, 8).await;
    let rows = wait_deliveries(&r, &id, |d| d.last().is_some_and(|l| l["status"] == "dead")).await;
    assert!(rows.iter().all(|d| d["error"] == "private_address" && d["status_code"].is_null()), "{rows:?}");
    assert_eq!(receiver.count(), 0, "nothing reached the private address");
    r.stop_workers().await;
});

backend_test!(endpoints_are_validated_scoped_to_their_merchant_and_deletable, |app| {
    let app = private_allowed(app, true);
    let a = app.merchant().await;
    let b = app.merchant().await;
    let c = app.post("/v1/webhook-endpoints", &a, json!({"url": "https://hooks.example.com/hilt", "events": ["payment.confirmed", "membership.expired"]})).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let id = c.body["id"].as_str().expect("id").to_owned();
    assert_eq!(c.body["url"], "https://hooks.example.com/hilt");

    for (body, param) in [
        (json!({"url": "ftp://example.com/x", "events": ["*"]}), "url"),
        (json!({"url": "https://user:pw@example.com/", "events": ["*"]}), "url"),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (json!({"events": ["*"]}), "url"),
        (json!({"url": "https://example.com/", "events": []}), "events"),
        (json!({"url": "https://example.com/", "events": ["payment.confirmed", "payment.refunded"]}), "events[1]"),
        (json!({"url": "https://example.com/", "events": "*"}), "events"),
        (json!({"url": "https://example.com/"}), "events"),
    ] {
        let r = app.post("/v1/webhook-endpoints", &a, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }

    // Another merchant sees nothing, exactly like a missing id.
    assert_eq!(app.get("/v1/webhook-endpoints", &b).await.body["total"], 0);
    let missing = "whe_000000000000000000000000";
    for path in [format!("/v1/webhook-endpoints/{id}"), format!("/v1/webhook-endpoints/{id}/deliveries"), format!("/v1/webhook-endpoints/{missing}"), "/v1/webhook-endpoints/nope".into()] {
        assert_error(&app.get(&path, &b).await, StatusCode::NOT_FOUND, "not_found");
    }
    assert_error(&app.post(&format!("/v1/webhook-endpoints/{id}/rotate-secret"), &b, json!({})).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.post(&format!("/v1/webhook-endpoints/{id}/deliveries/whd_000000000000000000000000/retry"), &a, json!({})).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.post(&format!("/v1/webhook-endpoints/{id}/deliveries/x/retry"), &b, json!({})).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.call(Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), Some(&b), None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.get("/v1/webhook-endpoints", "bad-key").await, StatusCode::UNAUTHORIZED, "unauthorized");

    let d = app.call(Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), Some(&a), None).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["deleted"], true);
    assert_error(&app.get(&format!("/v1/webhook-endpoints/{id}"), &a).await, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.get("/v1/webhook-endpoints", &a).await.body["total"], 0);
    assert_error(&app.call(Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), Some(&a), None).await, StatusCode::NOT_FOUND, "not_found");

    // A deleted endpoint gets no jobs.
    let product = app.telegram_product(&a).await;
    let payment = app.payment(&a, &product, 9).await;
    assert_eq!(app.confirm(&payment, "tx-deleted-endpoint").await.status, StatusCode::OK);
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs WHERE queue = $1", "webhook").await, 0);

    let openapi = app.call(Method::GET, "/openapi.json", None, None).await;
    for path in ["/v1/webhook-endpoints", "/v1/webhook-endpoints/{id}/rotate-secret", "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry"] {
        assert!(openapi.body["paths"].get(path).is_some(), "{path} in the OpenAPI document");
    }
});

backend_test!(every_event_fans_out_in_the_transaction_that_writes_it, |app| {
    let key = app.merchant().await;
    let other = app.merchant().await;
    for (k, events) in [(&key, json!(["payment.confirmed"])), (&key, json!(["delivery.failed"])), (&key, json!(["*"])), (&other, json!(["*"]))] {
        let c = app.post("/v1/webhook-endpoints", k, json!({"url": "https://hooks.example.com/", "events": events})).await;
        assert_eq!(c.status, StatusCode::CREATED);
    }
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 10).await;
    assert_eq!(app.confirm(&payment, "tx-fan-out").await.status, StatusCode::OK);
    // payment.confirmed → the subscribed endpoint and `*`; not delivery.failed, not the other merchant.
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs WHERE queue = $1", "webhook").await, 2);
    // A second confirm is idempotent: no new event, no new webhook.
    assert_eq!(app.confirm(&payment, "tx-fan-out").await.status, StatusCode::OK);
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs WHERE queue = $1", "webhook").await, 2);
});

backend_test!(random_bodies_never_cause_a_server_error_on_webhook_routes, |app| {
    let app = private_allowed(app, false);
    let key = app.merchant().await;
    let c = app.post("/v1/webhook-endpoints", &key, json!({"url": "https://hooks.example.com/", "events": ["*"]})).await;
    let id = c.body["id"].as_str().expect("id").to_owned();
    let mut rng = ChaCha8Rng::seed_from_u64(0x3eb0);
    let urls = ["", "http://", "https://a", "http://[::1", "http://127.1/", "https://x.y/\u{0}", "http://0x7f000001/", "http://[fe80::1%25eth0]/",
        "https://é.example/", "https://example.com:99999/", "file:///etc/passwd", "HTTPS://EXAMPLE.COM/"];
    let events = ["*", "payment.confirmed", "", "delivery.*", "🦀"];
    for round in 0..200 {
        let body: Vec<u8> = match round % 4 {
            0 => (0..rng.random_range(0..12)).map(|_| rng.random::<u8>()).collect(),
            1 => json!({"url": rng.random::<f64>(), "events": {"a": 1}}).to_string().into_bytes(),
            _ => {
                let mut v = json!({"url": urls[rng.random_range(0..urls.len())]});
                if rng.random_bool(0.8) {
                    v["events"] = json!((0..rng.random_range(0..4)).map(|_| events[rng.random_range(0..events.len())]).collect::<Vec<_>>());
                }
                if rng.random_bool(0.3) {
                    v["description"] = json!((0..rng.random_range(0..600)).map(|_| rng.random::<char>()).collect::<String>());
                }
                v.to_string().into_bytes()
            }
        };
        for path in ["/v1/webhook-endpoints".to_owned(), format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            format!("/v1/webhook-endpoints/{id}/deliveries/whd_{}/retry", round)]
        {
            let request = Request::builder().method(Method::POST).uri(path.as_str())
                .header("authorization", format!("Bearer {key}"))
                .body(Body::from(body.clone())).expect("request");
            let r = app.raw(request).await;
            assert!(!r.status.is_server_error(), "POST {path} answered {} to {:?}", r.status, String::from_utf8_lossy(&body));
            if r.status.is_client_error() {
                assert!(r.body["error"]["code"].is_string(), "error shape: {}", r.body);
            }
        }
    }
    let listed = app.get("/v1/webhook-endpoints?limit=200", &key).await;
    assert_eq!(listed.status, StatusCode::OK);
    for e in listed.body["data"].as_array().expect("data") {
        let url = e["url"].as_str().expect("url");
        assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
        assert!(!url.contains("127.") && !url.contains("[::1]") && !url.contains("localhost"), "{url}");
    }
});

//! The membership ledger (SPEC §5): filters, search, paging, lookup, notes, profile, gifts,
//! tenancy, and routes that must not be captured by `/v1/memberships/{id}`.

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::{TestApp, assert_error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

struct Ledger {
    key: String,
    tg_product: String,
    dc_product: String,
    /// (payment id, membership id, tx signature)
    alice: (String, String, String),
    bob: (String, String, String),
    carol: (String, String, String),
}

async fn pay(app: &TestApp, key: &str, product: &str, wallet: &str, buyer: Value, tx: &str) -> (String, String, String) {
    let r = app.post("/v1/payments", key, json!({"product_id": product, "wallet": wallet, "buyer": buyer})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let payment = r.body["id"].as_str().expect("id").to_owned();
    let c = app.confirm(&payment, tx).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    (payment, c.body["membership_id"].as_str().expect("membership").to_owned(), tx.to_owned())
}

async fn ledger(app: &TestApp) -> Ledger {
    let key = app.merchant().await;
    let tg_product = app.telegram_product(&key).await;
    let r = app
        .post("/v1/products", &key, json!({"name": "Lifetime role", "platform": "discord", "discord_guild_id": "81384788765712384",
            "discord_role_id": "41771983423143936", "price": {"amount": "5", "currency": "USDC"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let dc_product = r.body["id"].as_str().expect("id").to_owned();
    let alice = pay(app, &key, &tg_product, "WalletAlice", json!({"telegram_user_id": 111, "handle": "alice_tg"}), "txAlice").await;
    let bob = pay(app, &key, &tg_product, "WalletBob", json!({"telegram_user_id": 222, "handle": "bob"}), "txBob").await;
    let carol = pay(app, &key, &dc_product, "WalletCarol", json!({"discord_user_id": "333444555", "handle": "carol#1"}), "txCarol").await;
    Ledger { key, tg_product, dc_product, alice, bob, carol }
}

fn ids(r: &common::Response) -> Vec<String> {
    r.body["data"].as_array().expect("data").iter().map(|m| m["id"].as_str().expect("id").to_owned()).collect()
}

backend_test!(the_ledger_filters_searches_and_pages, |app| {
    let l = ledger(&app).await;
    let all = app.get("/v1/memberships", &l.key).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["total"], 3);
    assert_eq!(all.body["limit"], 50);
    assert_eq!(all.body["offset"], 0);
    assert_eq!(all.body["data"][0]["id"], l.carol.1.as_str(), "newest first");

    let by_product = app.get(&format!("/v1/memberships?product_id={}", l.tg_product), &l.key).await;
    assert_eq!(by_product.body["total"], 2);
    let discord = app.get("/v1/memberships?platform=discord", &l.key).await;
    assert_eq!(ids(&discord), [l.carol.1.as_str()]);
    assert_eq!(app.get("/v1/memberships?status=active", &l.key).await.body["total"], 3);
    assert_eq!(app.get("/v1/memberships?status=grace", &l.key).await.body["total"], 0);
    let combined = app.get(&format!("/v1/memberships?product_id={}&platform=discord", l.tg_product), &l.key).await;
    assert_eq!(combined.body["total"], 0);

    for (q, want) in [
        ("alice", &l.alice.1),
        ("%40ALICE_T", &l.alice.1),
        ("222", &l.bob.1),
        ("333444", &l.carol.1),
        ("walletcarol", &l.carol.1),
        (l.bob.0.as_str(), &l.bob.1),
        (l.alice.1.as_str(), &l.alice.1),
    ] {
        let r = app.get(&format!("/v1/memberships?q={q}"), &l.key).await;
        assert_eq!(ids(&r), [want.as_str()], "q={q}: {}", r.body);
    }
    // LIKE wildcards are matched literally.
    assert_eq!(app.get("/v1/memberships?q=%25", &l.key).await.body["total"], 0);
    assert_eq!(app.get("/v1/memberships?q=ce_tg", &l.key).await.body["total"], 1);

    let page = app.get("/v1/memberships?limit=2", &l.key).await;
    assert_eq!((page.body["total"].as_i64(), ids(&page).len()), (Some(3), 2));
    let rest = app.get("/v1/memberships?limit=2&offset=2", &l.key).await;
    assert_eq!(ids(&rest), [l.alice.1.as_str()]);

    for (query, param) in [("status=paused", "status"), ("platform=slack", "platform"), ("limit=0", "limit"), ("offset=-1", "offset")] {
        let r = app.get(&format!("/v1/memberships?{query}"), &l.key).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param, "{query}");
    }
    let stranger = app.merchant().await;
    assert_eq!(app.get("/v1/memberships", &stranger).await.body["total"], 0, "another merchant sees nothing");
    assert_eq!(app.get(&format!("/v1/memberships?q={}", l.alice.1), &stranger).await.body["total"], 0);
});

backend_test!(lookup_and_renewal_intelligence_are_not_taken_for_a_membership_id, |app| {
    let l = ledger(&app).await;
    let lookup = app.get("/v1/memberships/lookup?wallet=WalletBob", &l.key).await;
    assert_eq!(lookup.status, StatusCode::OK, "{}", lookup.body);
    assert_eq!(ids(&lookup), [l.bob.1.as_str()]);
    let intelligence = app.get("/v1/memberships/renewal-intelligence", &l.key).await;
    assert_eq!(intelligence.status, StatusCode::OK, "{}", intelligence.body);
    assert!(intelligence.body["summary"].is_object());
    // Without a selector the lookup route answers 422, not the 404 of an unknown id.
    let bare = app.get("/v1/memberships/lookup", &l.key).await;
    assert_error(&bare, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(app.get(&format!("/v1/memberships/{}", l.bob.1), &l.key).await.status, StatusCode::OK);
    let spec = app.call(axum::http::Method::GET, "/openapi.json", None, None).await;
    for path in ["/v1/memberships", "/v1/memberships/lookup", "/v1/memberships/renewal-intelligence", "/v1/memberships/{id}/gift"] {
        assert!(spec.body["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
});

backend_test!(lookup_finds_a_buyer_by_each_selector_and_404s_otherwise, |app| {
    let l = ledger(&app).await;
    for (query, want) in [
        ("wallet=WalletAlice".to_owned(), &l.alice.1),
        ("identity=111".to_owned(), &l.alice.1),
        ("identity=%40alice_tg".to_owned(), &l.alice.1),
        ("identity=BOB".to_owned(), &l.bob.1),
        ("identity=333444555".to_owned(), &l.carol.1),
        ("tx_signature=txCarol".to_owned(), &l.carol.1),
    ] {
        let r = app.get(&format!("/v1/memberships/lookup?{query}"), &l.key).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        assert_eq!(ids(&r), [want.as_str()], "{query}");
        assert_eq!(r.body["total"], 1);
    }
    // A renewal's transaction finds the same membership.
    let renewal = pay(&app, &l.key, &l.tg_product, "WalletBob2", json!({"telegram_user_id": 222}), "txBobRenewal").await;
    assert_eq!(renewal.1, l.bob.1);
    assert_eq!(ids(&app.get("/v1/memberships/lookup?tx_signature=txBobRenewal", &l.key).await), [l.bob.1.as_str()]);

    for query in ["wallet=nobody", "identity=999", "tx_signature=txNone", "identity=ali"] {
        assert_error(&app.get(&format!("/v1/memberships/lookup?{query}"), &l.key).await, StatusCode::NOT_FOUND, "not_found");
    }
    let two = app.get("/v1/memberships/lookup?wallet=WalletAlice&identity=111", &l.key).await;
    assert_error(&two, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(two.body["error"]["param"], "identity");
    let empty = app.get("/v1/memberships/lookup?wallet=", &l.key).await;
    assert_error(&empty, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(empty.body["error"]["param"], "wallet");
    let stranger = app.merchant().await;
    assert_error(&app.get("/v1/memberships/lookup?wallet=WalletAlice", &stranger).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.get("/v1/memberships/lookup?tx_signature=txCarol", &stranger).await, StatusCode::NOT_FOUND, "not_found");
});

backend_test!(notes_and_profile_validate_and_belong_to_their_merchant, |app| {
    let l = ledger(&app).await;
    let notes = format!("/v1/memberships/{}/notes", l.alice.1);
    let r = app.patch(&notes, &l.key, json!({"notes": "  VIP since 2023\nasked for an invoice  "})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["notes"], "VIP since 2023\nasked for an invoice");
    assert_eq!(app.get(&format!("/v1/memberships/{}", l.alice.1), &l.key).await.body["notes"], "VIP since 2023\nasked for an invoice");
    assert_eq!(app.patch(&notes, &l.key, json!({"notes": null})).await.body["notes"], Value::Null);

    for (body, param) in [
        (json!({}), "notes"),
        (json!({"notes": 5}), "notes"),
        (json!({"notes": "x".repeat(10_001)}), "notes"),
        (json!({"notes": "bell\u{7}"}), "notes"),
        (json!({"notes": "ok", "extra": 1}), "extra"),
    ] {
        let r = app.patch(&notes, &l.key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(r.body["error"]["param"].as_str().is_some_and(|p| p.contains(param)), "{body}: {}", r.body);
    }

    let profile = format!("/v1/memberships/{}/profile", l.alice.1);
    let r = app.patch(&profile, &l.key, json!({"label": "Alice (reseller)"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["identity"]["label"], "Alice (reseller)");
    assert_eq!(r.body["identity"]["handle"], "alice_tg", "absent fields are kept");
    let r = app.patch(&profile, &l.key, json!({"handle": "@alice", "label": null})).await;
    assert_eq!((r.body["identity"]["handle"].as_str(), r.body["identity"]["label"].is_null()), (Some("@alice"), true));
    assert_eq!(ids(&app.get("/v1/memberships/lookup?identity=alice", &l.key).await), [l.alice.1.as_str()]);
    for (body, param) in [
        (json!({}), "handle"),
        (json!({"handle": "two words"}), "handle"),
        (json!({"handle": "h".repeat(101)}), "handle"),
        (json!({"label": ["x"]}), "label"),
        (json!({"label": "l".repeat(201)}), "label"),
        (json!({"hnadle": "typo"}), "hnadle"),
    ] {
        let r = app.patch(&profile, &l.key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(r.body["error"]["param"].as_str().is_some_and(|p| p.contains(param)), "{body}: {}", r.body);
    }

    let stranger = app.merchant().await;
    assert_error(&app.patch(&notes, &stranger, json!({"notes": "mine"})).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.patch(&profile, &stranger, json!({"label": "mine"})).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.patch("/v1/memberships/mem_nope/notes", &l.key, json!({"notes": "x"})).await, StatusCode::NOT_FOUND, "not_found");
    assert!(app.get(&format!("/v1/memberships/{}", l.alice.1), &l.key).await.body["notes"].is_null(), "the stranger changed nothing");
});

backend_test!(a_gift_extends_from_the_period_end_without_a_payment, |app| {
    let l = ledger(&app).await;
    let before = app.get(&format!("/v1/memberships/{}", l.bob.1), &l.key).await.body;
    let end_before = chrono::DateTime::parse_from_rfc3339(before["current_period_end"].as_str().expect("end")).expect("rfc3339");
    let gift = format!("/v1/memberships/{}/gift", l.bob.1);
    let r = app.post(&gift, &l.key, json!({"days": 10, "reason": "Sorry for the outage"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let end_after = chrono::DateTime::parse_from_rfc3339(r.body["current_period_end"].as_str().expect("end")).expect("rfc3339");
    assert_eq!(end_after - end_before, chrono::Duration::days(10));
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["last_payment_id"], l.bob.0.as_str(), "no payment was made");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments WHERE membership_id = $1", &l.bob.1).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE membership_id = $1 AND type = 'membership.gifted'", &l.bob.1).await, 1);
    let data: String = sqlx::query_scalar("SELECT data FROM events WHERE membership_id = $1 AND type = 'membership.gifted'")
        .bind(&l.bob.1).fetch_one(app.db.pool()).await.expect("event");
    assert!(data.contains("Sorry for the outage"), "{data}");

    for (body, param) in [
        (json!({"days": 0, "reason": "x"}), "days"),
        (json!({"days": 3651, "reason": "x"}), "days"),
        (json!({"days": 1.5, "reason": "x"}), "days"),
        (json!({"days": "7", "reason": "x"}), "days"),
        (json!({"days": 7}), "reason"),
        (json!({"days": 7, "reason": "   "}), "reason"),
    ] {
        let r = app.post(&gift, &l.key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    let lifetime = app.post(&format!("/v1/memberships/{}/gift", l.carol.1), &l.key, json!({"days": 5, "reason": "x"})).await;
    assert_error(&lifetime, StatusCode::CONFLICT, "conflict");
    let stranger = app.merchant().await;
    assert_error(&app.post(&gift, &stranger, json!({"days": 5, "reason": "x"})).await, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE membership_id = $1 AND type = 'membership.gifted'", &l.bob.1).await, 1);
    let _ = &l.dc_product;
});

backend_test!(random_bodies_at_membership_routes_never_cause_a_server_error, |app| {
    let l = ledger(&app).await;
    let routes = [
        ("PATCH", format!("/v1/memberships/{}/notes", l.alice.1)),
        ("PATCH", format!("/v1/memberships/{}/profile", l.alice.1)),
        ("POST", format!("/v1/memberships/{}/gift", l.bob.1)),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e1f7);
    let keys = ["notes", "handle", "label", "days", "reason", "x"];
    let values = [json!(null), json!(true), json!(-1), json!(0), json!(3650), json!(1e300), json!(i64::MAX), json!(""), json!("🦀"),
        json!("\u{0}"), json!([1]), json!({"a": 1}), json!("x".repeat(20_000))];
    for (method, path) in &routes {
        for round in 0..120 {
            let body: Vec<u8> = if round % 5 == 0 {
                [b"{".as_slice(), b"\"days\":", b"\xff", b"[", b"}"][..rng.random_range(1..5)].concat()
            } else {
                let object: serde_json::Map<String, Value> = (0..rng.random_range(0..4))
                    .map(|_| (keys[rng.random_range(0..keys.len())].to_owned(), values[rng.random_range(0..values.len())].clone()))
                    .collect();
                Value::Object(object).to_string().into_bytes()
            };
            let request = Request::builder().method(*method).uri(path.as_str())
                .header("authorization", format!("Bearer {}", l.key))
                .header("content-type", "application/json")
                .body(Body::from(body.clone())).expect("request");
            let r = app.raw(request).await;
            assert!(!r.status.is_server_error(), "{method} {path} answered {} to {:?}", r.status, String::from_utf8_lossy(&body));
            if r.status.is_client_error() {
                assert!(r.body["error"]["code"].is_string(), "error shape missing: {}", r.body);
            }
        }
    }
    assert_eq!(app.get("/v1/memberships", &l.key).await.status, StatusCode::OK);
});

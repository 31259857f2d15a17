//! SPEC §3 conventions: auth, tenancy, error shapes, list envelopes, idempotency, limits.

mod common;

use axum::{body::Body, http::{Method, Request, StatusCode}};
use common::{ADMIN, assert_error};
use serde_json::json;

backend_test!(merchant_creation_needs_the_admin_token, |app| {
    let none = app.call(Method::POST, "/v1/admin/merchants", None, Some(json!({"name": "x"}))).await;
    assert_error(&none, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = app.post("/v1/admin/merchants", "not-the-admin-token", json!({"name": "x"})).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let key = app.merchant().await;
    let merchant_key_as_admin = app.post("/v1/admin/merchants", &key, json!({"name": "x"})).await;
    assert_error(&merchant_key_as_admin, StatusCode::UNAUTHORIZED, "unauthorized");
    let blank = app.post("/v1/admin/merchants", ADMIN, json!({"name": "  "})).await;
    assert_error(&blank, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(blank.body["error"]["param"], "name");
});

backend_test!(api_keys_are_shown_once_and_stored_hashed, |app| {
    let key = app.merchant().await;
    assert!(key.starts_with("hilt_sk_"));
    let stored = app.count("SELECT COUNT(*) FROM merchants WHERE api_key_hash = $1", &key).await;
    assert_eq!(stored, 0, "the clear key must not be stored");
    let r = app.get("/v1/products", &key).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get("/v1/products", "hilt_sk_forged").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
});

backend_test!(another_merchants_objects_answer_404_like_missing_ones, |app| {
    let alice = app.merchant().await;
    let bob = app.merchant().await;
    let product = app.telegram_product(&alice).await;
    let payment = app.payment(&alice, &product, 7).await;
    let confirmed = app.confirm(&payment, "sig-tenancy").await;
    let membership = confirmed.body["membership_id"].as_str().expect("membership").to_owned();

    for path in [format!("/v1/products/{product}"), format!("/v1/payments/{payment}"), format!("/v1/memberships/{membership}")] {
        assert_eq!(app.get(&path, &alice).await.status, StatusCode::OK, "{path}");
        let theirs = app.get(&path, &bob).await;
        let missing = app.get(&path.replace(&path[path.rfind('/').expect("slash") + 1..], "prod_000000000000000000000000"), &bob).await;
        assert_error(&theirs, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(theirs.body, missing.body, "{path}: another merchant's object must look missing");
    }
    let patch = app.patch(&format!("/v1/products/{product}"), &bob, json!({"name": "mine now"})).await;
    assert_error(&patch, StatusCode::NOT_FOUND, "not_found");
    let pay_with_theirs = app.post("/v1/payments", &bob, json!({"product_id": product, "wallet": "w"})).await;
    assert_error(&pay_with_theirs, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(pay_with_theirs.body["error"]["param"], "product_id");
    let listed = app.get("/v1/products", &bob).await;
    assert_eq!(listed.body["total"], 0);
});

backend_test!(bad_bodies_get_400_or_422_naming_the_field, |app| {
    let key = app.merchant().await;
    let not_json = app.raw(Request::post("/v1/products").header("authorization", format!("Bearer {key}"))
        .body(Body::from("{\"name\": ")).expect("request")).await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, "invalid_json");
    let empty = app.raw(Request::post("/v1/products").header("authorization", format!("Bearer {key}"))
        .body(Body::empty()).expect("request")).await;
    assert_error(&empty, StatusCode::BAD_REQUEST, "invalid_json");

    let base = json!({"name": "VIP", "platform": "telegram", "price": {"amount": "5.00", "currency": "USD"}});
    let cases = [
        (json!({"platform": "telegram", "price": {"amount": "5", "currency": "USD"}}), "name"),
        (json!({"name": "VIP", "platform": "whatsapp", "price": {"amount": "5", "currency": "USD"}}), "platform"),
        (json!({"name": "VIP", "platform": "telegram", "price": {"amount": 5, "currency": "USD"}}), "price.amount"),
        (json!({"name": "VIP", "platform": "telegram", "price": {"amount": "-5", "currency": "USD"}}), "price.amount"),
        (json!({"name": "VIP", "platform": "telegram", "price": {"amount": "5"}}), "price.currency"),
        (json!({"name": "VIP", "platform": "telegram", "telegram_chat_id": "-100", "price": {"amount": "5", "currency": "USD"}}), "telegram_chat_id"),
        (json!({"name": "VIP", "platform": "discord", "discord_guild_id": "12a", "discord_role_id": "1", "price": {"amount": "5", "currency": "USD"}}), "discord_guild_id"),
        (json!({"name": "VIP", "platform": "discord", "discord_guild_id": "12", "price": {"amount": "5", "currency": "USD"}}), "discord_role_id"),
        (json!({"name": "VIP", "platform": "telegram", "recurring": true, "price": {"amount": "5", "currency": "USD"}}), "period"),
        (json!({"name": "VIP", "platform": "telegram", "period": "30 days", "price": {"amount": "5", "currency": "USD"}}), "period"),
        (json!({"name": "VIP", "platform": "telegram", "fallback_invite_url": "ftp://x", "price": {"amount": "5", "currency": "USD"}}), "fallback_invite_url"),
        (json!([base.clone()]), ""),
    ];
    for (body, param) in cases {
        let r = app.post("/v1/products", &key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        if !param.is_empty() {
            assert_eq!(r.body["error"]["param"], param, "for {body}");
        }
    }
    assert_eq!(app.post("/v1/products", &key, base).await.status, StatusCode::CREATED);
});

backend_test!(payments_need_an_identifiable_buyer_and_valid_fields, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let cases = [
        (json!({"product_id": product}), "buyer"),
        (json!({"product_id": product, "wallet": "w", "amount": "1,5"}), "amount"),
        (json!({"product_id": product, "wallet": "w", "buyer": {"email": "not-an-email"}}), "buyer.email"),
        (json!({"product_id": product, "buyer": {"telegram_user_id": "42"}}), "buyer.telegram_user_id"),
        (json!({"product_id": product, "buyer": {"telegram_user_id": -4}}), "buyer.telegram_user_id"),
        (json!({"product_id": product, "buyer": {"discord_user_id": 42}}), "buyer.discord_user_id"),
        (json!({"product_id": "prod_missing", "wallet": "w"}), "product_id"),
        (json!({"wallet": "w"}), "product_id"),
    ];
    for (body, param) in cases {
        let r = app.post("/v1/payments", &key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param, "for {body}");
    }
    let r = app.post("/v1/payments", &key, json!({"product_id": product, "wallet": "w", "buyer": {"discord_access_token": "secret-token"}})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["amount"], "9.99", "amount defaults to the product's price");
    assert_eq!(r.body["currency"], "USDC");
    assert_eq!(r.body["status"], "pending");
    assert!(!r.body.to_string().contains("secret-token"), "the OAuth token is write-only");
});

backend_test!(lists_use_the_envelope_and_validate_paging, |app| {
    let key = app.merchant().await;
    for _ in 0..3 {
        app.telegram_product(&key).await;
    }
    let page = app.get("/v1/products?limit=2&offset=1", &key).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["total"], 3);
    assert_eq!(page.body["limit"], 2);
    assert_eq!(page.body["offset"], 1);
    assert_eq!(page.body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.get("/v1/products", &key).await.body["limit"], 50);
    for (query, param) in [("limit=201", "limit"), ("limit=0", "limit"), ("limit=abc", "limit"), ("offset=-1", "offset")] {
        let r = app.get(&format!("/v1/products?{query}"), &key).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param);
    }
});

backend_test!(product_patch_changes_only_what_is_sent_and_revalidates, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let path = format!("/v1/products/{product}");
    let r = app.patch(&path, &key, json!({"name": "Renamed", "fallback_invite_url": "https://t.me/+abc"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["period"], "30d");
    assert_eq!(r.body["fallback_invite_url"], "https://t.me/+abc");
    let cleared = app.patch(&path, &key, json!({"fallback_invite_url": null})).await;
    assert_eq!(cleared.body["fallback_invite_url"], serde_json::Value::Null);
    let bad = app.patch(&path, &key, json!({"period": null})).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(bad.body["error"]["param"], "period", "recurring products keep a period");
    assert_eq!(app.get(&path, &key).await.body["name"], "Renamed", "a rejected patch changes nothing");
});

backend_test!(idempotency_key_replays_the_first_response_and_rejects_a_different_body, |app| {
    let key = app.merchant().await;
    let body = json!({"name": "VIP", "platform": "telegram", "price": {"amount": "1", "currency": "USD"}});
    let send = |body: serde_json::Value, idem: &'static str| {
        Request::post("/v1/products")
            .header("authorization", format!("Bearer {key}"))
            .header("idempotency-key", idem)
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let first = app.raw(send(body.clone(), "k-1")).await;
    let again = app.raw(send(body.clone(), "k-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(first.body["id"], again.body["id"], "the same key must not create a second product");
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let other = app.raw(send(json!({"name": "Other", "platform": "telegram", "price": {"amount": "1", "currency": "USD"}}), "k-1")).await;
    assert_error(&other, StatusCode::CONFLICT, "conflict");
    let fresh = app.raw(send(body, "k-2")).await;
    assert_ne!(fresh.body["id"], first.body["id"]);
    assert_eq!(app.get("/v1/products", &key).await.body["total"], 2);
});

backend_test!(bodies_over_one_mebibyte_get_413, |app| {
    let key = app.merchant().await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let r = app.raw(Request::post("/v1/products").header("authorization", format!("Bearer {key}"))
        .body(Body::from(big)).expect("request")).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
});

backend_test!(unknown_routes_and_methods_answer_in_the_error_shape, |app| {
    let r = app.get("/v1/nothing-here", ADMIN).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app.call(Method::DELETE, "/v1/products", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["error"]["code"], "method_not_allowed");
    // A path parameter that cannot be decoded names nothing that can exist.
    let key = app.merchant().await;
    for path in ["/v1/products/%FF", "/v1/memberships/%C3%28", "/v1/products/%FF%FE"] {
        let r = app.get(path, &key).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(r.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"), "{path}");
    }
});

backend_test!(a_database_that_is_down_answers_503_not_500, |app| {
    let key = app.merchant().await;
    app.db.close().await;
    let r = app.get("/v1/products", &key).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
});

backend_test!(health_and_openapi_cover_every_route, |app| {
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/readyz", None, None).await.status, StatusCode::OK);
    let doc = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    for (path, method) in [
        ("/v1/admin/merchants", "post"), ("/v1/products", "post"), ("/v1/products", "get"),
        ("/v1/products/{id}", "get"), ("/v1/products/{id}", "patch"), ("/v1/payments", "post"),
        ("/v1/payments/{id}", "get"), ("/v1/payments/{id}/confirm", "post"), ("/v1/memberships/{id}", "get"),
        ("/healthz", "get"), ("/readyz", "get"),
    ] {
        assert!(doc.body["paths"][path][method].is_object(), "{method} {path} missing from OpenAPI");
    }

    // Every operation documents the errors it can answer, each with the error schema.
    let error_ref = json!({"$ref": "#/components/schemas/ErrorBody"});
    let mut checked = 0;
    for (path, item) in doc.body["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let responses = &op["responses"];
            let mut must = vec!["503"];
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                must.extend(["401", "429"]);
            }
            if op.get("requestBody").is_some() {
                must.extend(["400", "413", "422"]);
            }
            if path.contains('{') {
                must.push("404");
            }
            for status in must {
                assert_eq!(responses[status]["content"]["application/json"]["schema"], error_ref, "{method} {path} documents {status}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 45, "{checked} operations");
    // Schema names are unique: a membership's delivery is not a webhook delivery.
    let schemas = &doc.body["components"]["schemas"];
    assert!(schemas["DeliveryView"]["properties"]["attempts"].is_object(), "{}", schemas["DeliveryView"]);
    assert!(schemas["WebhookDeliveryView"]["properties"]["endpoint_id"].is_object(), "{}", schemas["WebhookDeliveryView"]);
    assert!(schemas["ErrorBody"]["properties"]["error"].is_object());
});

backend_test!(each_key_is_rate_limited_and_guessing_keys_is_throttled, |app| {
    let mut app = app;
    let mut config = (*app.config).clone();
    config.rate_limit = 3;
    config.auth_failure_limit = 2;
    app.config = std::sync::Arc::new(config);
    app.use_providers(hilt_shared::providers::Providers::from_config_with_timeout(&app.config, std::time::Duration::from_secs(3)).expect("providers"));
    let key = app.merchant().await;
    let other = app.merchant().await;

    let answers: Vec<_> = futures::future::join_all((0..4).map(|_| app.get("/v1/products", &key))).await;
    let limited: Vec<_> = answers.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(limited.len(), 1, "3 per second, the 4th is refused: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_error(limited[0], StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = limited[0].headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(app.get("/v1/products", &other).await.status, StatusCode::OK, "another key has its own budget");
    assert_eq!(app.get("/healthz", "").await.status, StatusCode::OK, "health checks are never limited");

    for _ in 0..2 {
        assert_error(&app.get("/v1/products", "hilt_sk_guess").await, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let guessing = app.get("/v1/products", "hilt_sk_another_guess").await;
    assert_error(&guessing, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(guessing.headers.contains_key("retry-after"));
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(app.get("/v1/products", &other).await.status, StatusCode::OK, "a valid key is not held back by the guessing");
});

backend_test!(idempotency_keeps_no_secret_in_plaintext_saves_only_what_happened_and_ignores_failed_auth, |app| {
    let send = |path: &str, token: &str, idem: &str, body: serde_json::Value| {
        Request::post(path.to_owned())
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", idem.to_owned())
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let count = |idem: &'static str| app.count("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1", idem);

    // A shown-once API key: the replay returns it, the stored copy never holds it.
    let first = app.raw(send("/v1/admin/merchants", ADMIN, "merchant-1", json!({"name": "Acme"}))).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let api_key = first.body["api_key"].as_str().expect("key").to_owned();
    let replay = app.raw(send("/v1/admin/merchants", ADMIN, "merchant-1", json!({"name": "Acme"}))).await;
    assert_eq!(replay.body["api_key"], api_key.as_str(), "the replay is the first response, secret included");
    let stored: String = sqlx::query_scalar("SELECT response_body FROM idempotency_keys WHERE idem_key = 'merchant-1'")
        .fetch_one(app.db.pool())
        .await
        .expect("stored");
    assert!(!stored.contains(&api_key), "no plaintext key at rest: {stored}");

    // The same for a webhook endpoint's signing secret.
    let endpoint = app.raw(send("/v1/webhook-endpoints", &api_key, "hook-1", json!({"url": "https://example.com/hook", "events": ["*"]}))).await;
    assert_eq!(endpoint.status, StatusCode::CREATED, "{}", endpoint.body);
    let secret = endpoint.body["secret"].as_str().expect("secret").to_owned();
    let stored: String = sqlx::query_scalar("SELECT response_body FROM idempotency_keys WHERE idem_key = 'hook-1'")
        .fetch_one(app.db.pool())
        .await
        .expect("stored");
    assert!(!stored.contains(&secret), "no plaintext secret at rest: {stored}");

    // A request that failed authentication leaves no key behind.
    let denied = app.raw(send("/v1/products", "hilt_sk_wrong", "denied-1", json!({"name": "x"}))).await;
    assert_error(&denied, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(count("denied-1").await, 0);

    // A request that failed left nothing: the same key runs a corrected request.
    let product = json!({"name": "VIP", "platform": "telegram", "price": {"amount": "1", "currency": "USD"}});
    let refused = app.raw(send("/v1/products", &api_key, "fix-1", json!({"name": "VIP", "platform": "fax"}))).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(count("fix-1").await, 0, "an error rolls the claim back with the request");
    let fixed = app.raw(send("/v1/products", &api_key, "fix-1", product.clone())).await;
    assert_eq!(fixed.status, StatusCode::CREATED, "not 409 'different request': {}", fixed.body);

    // Two identical requests at once: one runs; the other replays its answer, or is told the
    // first is still in progress (409) when it arrives while that one runs.
    let (a, b) = tokio::join!(
        app.raw(send("/v1/products", &api_key, "twice-1", product.clone())),
        app.raw(send("/v1/products", &api_key, "twice-1", product.clone())),
    );
    let (first, second) = if a.headers.contains_key("idempotent-replayed") || a.status == StatusCode::CONFLICT { (&b, &a) } else { (&a, &b) };
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    match second.status {
        StatusCode::CREATED => {
            assert!(second.headers.contains_key("idempotent-replayed"));
            assert_eq!(second.body, first.body, "the same product");
        }
        _ => assert_error(second, StatusCode::CONFLICT, "conflict"),
    }
    let products = app.get("/v1/products", &api_key).await;
    assert_eq!(products.body["total"], 2, "fix-1 and twice-1 created one product each: {}", products.body);

    // After 24 h a key is new again, even before retention prunes its row.
    let scope = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("Bearer {api_key}")));
    sqlx::query("INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at, response_status, response_body) \
                 VALUES ($1, 'old-1', 'another request', $2, 201, '{}')")
        .bind(&scope)
        .bind(hilt_shared::clock::now_ms() - 25 * 3600 * 1000)
        .execute(app.db.pool())
        .await
        .expect("a day-old key");
    let reused = app.raw(send("/v1/products", &api_key, "old-1", product.clone())).await;
    assert_eq!(reused.status, StatusCode::CREATED, "not 409 'different request': {}", reused.body);
    assert!(!reused.headers.contains_key("idempotent-replayed"));
});

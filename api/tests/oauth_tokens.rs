//! Buyers' Discord OAuth tokens at rest (`HILT_ENCRYPTION_KEY`): refused without a key, sealed
//! with one, and a process that could not read the stored tokens does not start.

mod common;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use common::{ENCRYPTION_KEY, assert_error};
use hilt_shared::{providers::Providers, secrets::EncryptionKey, service::oauth_tokens};
use serde_json::json;

backend_test!(without_a_key_a_token_is_refused_not_stored, |app| {
    let mut app = app;
    let mut config = (*app.config).clone();
    config.encryption_key = None;
    app.config = Arc::new(config);
    app.use_providers(Providers::from_config_with_timeout(&app.config, Duration::from_secs(3)).expect("providers"));
    let key = app.merchant().await;
    let product = app.post("/v1/products", &key, json!({"name": "Role", "platform": "discord", "price": {"amount": "1", "currency": "USDC"},
        "fallback_invite_url": "https://discord.gg/abc"})).await;
    let product = product.body["id"].as_str().expect("product").to_owned();

    let r = app.post("/v1/payments", &key, json!({"product_id": product, "wallet": "w",
        "buyer": {"discord_user_id": "1002", "discord_access_token": "oauth-plain"}})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(r.body["error"]["param"], "buyer.discord_access_token");
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("HILT_ENCRYPTION_KEY")), "{}", r.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments WHERE merchant_id <> $1", "").await, 0, "nothing stored");

    let r = app.post("/v1/payments", &key, json!({"product_id": product, "wallet": "w", "buyer": {"discord_user_id": "1002"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "a buyer without a token still pays: {}", r.body);
});

backend_test!(start_up_seals_old_plaintext_tokens_and_refuses_a_missing_or_changed_key, |app| {
    let key: EncryptionKey = ENCRYPTION_KEY.parse().expect("key");
    let merchant = app.merchant().await;
    let product = app.post("/v1/products", &merchant, json!({"name": "Role", "platform": "discord", "price": {"amount": "1", "currency": "USDC"},
        "fallback_invite_url": "https://discord.gg/abc"})).await;
    let product = product.body["id"].as_str().expect("product").to_owned();
    let paid = app.post("/v1/payments", &merchant, json!({"product_id": product, "wallet": "w",
        "buyer": {"discord_user_id": "1003", "discord_access_token": "oauth-new"}})).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    let payment = paid.body["id"].as_str().expect("payment").to_owned();
    // A row an earlier version wrote in plaintext.
    let old = app.post("/v1/payments", &merchant, json!({"product_id": product, "wallet": "w2", "buyer": {"discord_user_id": "1004"}})).await;
    let old = old.body["id"].as_str().expect("payment").to_owned();
    sqlx::query("UPDATE payments SET buyer_discord_access_token = 'oauth-old-plaintext' WHERE id = $1")
        .bind(&old)
        .execute(app.db.pool())
        .await
        .expect("plaintext row");

    let missing = oauth_tokens::check_at_start(&app.db, None).await.expect_err("no key, tokens stored");
    assert!(missing.to_string().contains("HILT_ENCRYPTION_KEY is not set"), "{missing}");
    let other: EncryptionKey = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=".parse().expect("another key");
    let changed = oauth_tokens::check_at_start(&app.db, Some(&other)).await.expect_err("a changed key");
    assert!(changed.to_string().contains("HILT_ENCRYPTION_KEY"), "{changed}");

    oauth_tokens::check_at_start(&app.db, Some(&key)).await.expect("the right key starts");
    let stored = |id: String| {
        let pool = app.db.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT buyer_discord_access_token FROM payments WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("token")
        }
    };
    let sealed_old = stored(old).await;
    assert_eq!(key.open(&sealed_old).expect("sealed now"), "oauth-old-plaintext");
    assert_eq!(key.open(&stored(payment).await).expect("sealed at write"), "oauth-new");
});

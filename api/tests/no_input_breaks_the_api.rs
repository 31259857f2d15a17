//! Property test: random and malformed bodies at every POST/PATCH route never produce a 5xx.

mod common;

use axum::{body::Body, http::{Request, StatusCode}};
use common::ADMIN;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

fn random_value(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e6 - 5e5),
        4 => json!(["", "telegram", "discord", "30d", "-1", "9.99", "USDC", "a@b.co", "\u{0}", "🦀", "https://x.y", "pay_x"][rng.random_range(0..12)]),
        5 => Value::String((0..rng.random_range(0..40)).map(|_| rng.random::<char>()).collect()),
        6 => Value::Array((0..rng.random_range(0..4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let keys = ["name", "platform", "price", "amount", "currency", "period", "grace_period", "recurring",
                "telegram_chat_id", "discord_guild_id", "discord_role_id", "fallback_invite_url", "product_id",
                "wallet", "buyer", "email", "telegram_user_id", "discord_user_id", "handle", "metadata", "tx_signature"];
            Value::Object((0..rng.random_range(0..8)).map(|_| (keys[rng.random_range(0..keys.len())].to_owned(), random_value(rng, depth + 1))).collect())
        }
    }
}

fn random_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let samples: [&[u8]; 6] = [b"{", b"}}", b"\"", b"[1,", b"\xff\xfe", b"{\"name\":"];
    (0..rng.random_range(0..6)).flat_map(|_| samples[rng.random_range(0..samples.len())].to_vec()).collect()
}

backend_test!(random_bodies_never_cause_a_server_error, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 3).await;
    let routes = [
        ("POST", "/v1/admin/merchants".to_owned(), ADMIN.to_owned()),
        ("POST", "/v1/products".to_owned(), key.clone()),
        ("PATCH", format!("/v1/products/{product}"), key.clone()),
        ("POST", "/v1/payments".to_owned(), key.clone()),
        ("POST", format!("/v1/payments/{payment}/confirm"), ADMIN.to_owned()),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(0x411e);
    for (method, path, token) in &routes {
        for round in 0..150 {
            let body = if round % 4 == 0 { random_bytes(&mut rng) } else { random_value(&mut rng, 0).to_string().into_bytes() };
            let request = Request::builder().method(*method).uri(path.as_str())
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(body.clone())).expect("request");
            let r = app.raw(request).await;
            assert!(!r.status.is_server_error(), "{method} {path} answered {} to {:?}", r.status, String::from_utf8_lossy(&body));
            if r.status.is_client_error() {
                assert!(r.body["error"]["code"].is_string(), "{method} {path}: error shape missing: {}", r.body);
            }
        }
    }
    // The API still works after the barrage.
    assert_eq!(app.get("/v1/products", &key).await.status, StatusCode::OK);
});

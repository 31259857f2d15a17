//! SPEC §6: what one confirmation writes, idempotency of confirm, renewals.

mod common;

use axum::http::StatusCode;
use common::{ADMIN, assert_error};
use serde_json::json;

backend_test!(confirm_creates_membership_receipt_event_and_one_delivery_job, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 4242).await;

    let r = app.confirm(&payment, "5xSig").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "confirmed");
    assert_eq!(r.body["tx_signature"], "5xSig");
    assert_eq!(r.body["delivery_status"], "pending");
    let membership_id = r.body["membership_id"].as_str().expect("membership_id").to_owned();
    let receipt_id = r.body["receipt_id"].as_str().expect("receipt_id").to_owned();
    assert!(membership_id.starts_with("mem_") && receipt_id.starts_with("rcpt_"));

    let m = app.get(&format!("/v1/memberships/{membership_id}"), &key).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.body["status"], "active");
    assert_eq!(m.body["delivery_status"], "pending");
    assert_eq!(m.body["identity"]["telegram_user_id"], 4242);
    assert_eq!(m.body["last_payment_id"], payment);
    assert_eq!(m.body["delivery"]["attempts"], 0);
    assert!(m.body["current_period_end"].is_string());

    assert_eq!(app.count("SELECT COUNT(*) FROM receipts WHERE payment_id = $1", &payment).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE payment_id = $1 AND type = 'payment.confirmed'", &payment).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs WHERE membership_id = $1 AND queue = 'delivery'", &membership_id).await, 1);
});

backend_test!(confirming_twice_returns_the_same_payment_and_creates_nothing, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 1).await;
    let first = app.confirm(&payment, "sig-a").await;
    let second = app.confirm(&payment, "sig-a").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(first.body, second.body);
    let membership = first.body["membership_id"].as_str().expect("membership").to_owned();
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs WHERE membership_id = $1", &membership).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM receipts WHERE payment_id = $1", &payment).await, 1);

    let other_tx = app.confirm(&payment, "sig-b").await;
    assert_error(&other_tx, StatusCode::CONFLICT, "conflict");
});

backend_test!(concurrent_confirms_of_one_payment_create_one_membership, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 5).await;
    let results = futures::future::join_all((0..6).map(|_| app.confirm(&payment, "sig-race"))).await;
    for r in &results {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["membership_id"], results[0].body["membership_id"]);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM memberships WHERE last_payment_id = $1", &payment).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM receipts WHERE payment_id = $1", &payment).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE payment_id = $1 AND type = 'payment.confirmed'", &payment).await, 1);
});

backend_test!(confirm_is_for_the_platform_and_checks_its_input, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 9).await;
    let as_merchant = app.post(&format!("/v1/payments/{payment}/confirm"), &key, json!({"tx_signature": "s"})).await;
    assert_error(&as_merchant, StatusCode::UNAUTHORIZED, "unauthorized");
    let missing = app.post("/v1/payments/pay_nothing/confirm", ADMIN, json!({"tx_signature": "s"})).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    for body in [json!({}), json!({"tx_signature": ""}), json!({"tx_signature": 12}), json!({"tx_signature": "has space"})] {
        let r = app.post(&format!("/v1/payments/{payment}/confirm"), ADMIN, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], "tx_signature", "{body}");
    }
    let still = app.get(&format!("/v1/payments/{payment}"), &key).await;
    assert_eq!(still.body["status"], "pending", "rejected confirms change nothing");
});

backend_test!(one_transaction_cannot_pay_for_two_payments, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let first = app.payment(&key, &product, 11).await;
    let second = app.payment(&key, &product, 12).await;
    assert_eq!(app.confirm(&first, "same-tx").await.status, StatusCode::OK);
    let reused = app.confirm(&second, "same-tx").await;
    assert_error(&reused, StatusCode::CONFLICT, "conflict");
    assert_eq!(app.get(&format!("/v1/payments/{second}"), &key).await.body["status"], "pending");
});

backend_test!(a_renewal_extends_the_same_membership_from_its_period_end, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let first = app.payment(&key, &product, 77).await;
    let r1 = app.confirm(&first, "tx-1").await;
    let membership = r1.body["membership_id"].as_str().expect("membership").to_owned();
    let end1 = app.get(&format!("/v1/memberships/{membership}"), &key).await.body["current_period_end"].as_str().expect("end").to_owned();

    let second = app.payment(&key, &product, 77).await;
    let r2 = app.confirm(&second, "tx-2").await;
    assert_eq!(r2.body["membership_id"], membership.as_str(), "same buyer and product → same membership");
    assert_ne!(r2.body["receipt_id"], r1.body["receipt_id"], "each payment gets its own receipt");
    let m = app.get(&format!("/v1/memberships/{membership}"), &key).await;
    let end2 = m.body["current_period_end"].as_str().expect("end");
    let days = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("rfc3339").timestamp_millis();
    assert_eq!(days(end2) - days(&end1), 30 * 86_400_000, "extended by one period from the old end");
    assert_eq!(m.body["last_payment_id"], second);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE membership_id = $1 AND type = 'membership.renewed'", &membership).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM jobs WHERE membership_id = $1", &membership).await, 2);

    let stranger = app.payment(&key, &product, 78).await;
    let r3 = app.confirm(&stranger, "tx-3").await;
    assert_ne!(r3.body["membership_id"], membership.as_str(), "another buyer gets another membership");
});

backend_test!(lifetime_products_have_no_period_end, |app| {
    let key = app.merchant().await;
    let r = app.post("/v1/products", &key, json!({"name": "Forever", "platform": "discord", "discord_guild_id": "1234", "discord_role_id": "5678", "price": {"amount": "50", "currency": "USD"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["period"], serde_json::Value::Null);
    let product = r.body["id"].as_str().expect("id");
    let p = app.post("/v1/payments", &key, json!({"product_id": product, "buyer": {"discord_user_id": "99887766"}})).await;
    let pay = p.body["id"].as_str().expect("id");
    let c = app.confirm(pay, "tx-life").await;
    let m = app.get(&format!("/v1/memberships/{}", c.body["membership_id"].as_str().expect("m")), &key).await;
    assert_eq!(m.body["current_period_end"], serde_json::Value::Null);
    assert_eq!(m.body["identity"]["discord_user_id"], "99887766");
    assert_eq!(m.body["platform"], "discord");
});

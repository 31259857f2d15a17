//! Receipts anyone can verify (SPEC §4 "Receipt", §5 "Receipt proof format" and public routes).

mod common;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{ADMIN, TestApp, assert_error};
use hilt_api::state::AppState;
use hilt_shared::signing::ReceiptSigner;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A merchant, a product, a confirmed payment; returns (api key, receipt id, payment id).
async fn receipt(app: &TestApp) -> (String, String, String) {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 4242).await;
    let r = app.confirm(&payment, "5xSigConfirmed").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (key, r.body["receipt_id"].as_str().expect("receipt_id").to_owned(), payment)
}

/// RFC 8785 for the receipt payload's shape (a flat object of ASCII keys and string or null
/// values), written here without Hilt's code: members sorted by key, no whitespace.
fn jcs_of_flat_object(payload: &Value) -> String {
    let object = payload.as_object().expect("payload is an object");
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort();
    let members: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let v = &object[k];
            assert!(v.is_string() || v.is_null(), "flat payload expected, got {k}: {v}");
            format!("{}:{}", Value::String(k.clone()), v)
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn jwks(app: &TestApp) -> Value {
    let r = app.call(axum::http::Method::GET, "/.well-known/hilt-receipt-keys", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn public(app: &TestApp, path: &str) -> common::Response {
    app.call(axum::http::Method::GET, path, None, None).await
}

/// Raw bytes of a response (the harness decodes bodies as JSON or text).
async fn bytes(app: &TestApp, path: &str, token: &str) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder().uri(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router never fails");
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, content_type, response.into_body().collect().await.expect("body").to_bytes().to_vec())
}

async fn pdf_text(app: &TestApp, receipt: &str, key: &str) -> String {
    let (status, content_type, body) = bytes(app, &format!("/v1/receipt/{receipt}/pdf"), key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/pdf");
    assert!(body.starts_with(b"%PDF-"), "not a PDF");
    pdf_extract::extract_text_from_mem(&body).expect("PDF text extracts")
}

backend_test!(a_receipt_verifies_with_an_independent_ed25519_and_jcs_implementation, |app| {
    let (key, receipt, payment) = receipt(&app).await;
    let r = app.get(&format!("/v1/receipt/{receipt}"), &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let body = &r.body;
    assert_eq!(body["id"], receipt.as_str());
    assert_eq!(body["payment_id"], payment.as_str());
    assert_eq!(body["tx_signature"], "5xSigConfirmed");
    assert_eq!(body["amount"], "9.99");
    assert_eq!(body["currency"], "USDC");
    assert_eq!(body["wallet"], "WaLLet111");
    assert_eq!(body["proof"]["algorithm"], "ed25519");
    assert_eq!(body["payload"]["receipt_id"], receipt.as_str());
    assert_eq!(body["payload"]["product_name"], "VIP group");
    assert_eq!(body["verification_url"], format!("{}/v1/receipt/{receipt}/verify", app.config.public_base_url()));
    assert!(body["payload"].is_object(), "payload is returned as a JSON object");

    let canonical = jcs_of_flat_object(&body["payload"]);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    assert_eq!(body["proof"]["payload_sha256"], hex(digest.as_ref()));

    let keys = jwks(&app).await;
    let kid = body["proof"]["key_id"].as_str().expect("key_id");
    let jwk = keys["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid).expect("signing key is published");
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().expect("x")).expect("x is base64url");
    let signature = URL_SAFE_NO_PAD.decode(body["proof"]["signature"].as_str().expect("signature")).expect("base64url signature");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &x)
        .verify(canonical.as_bytes(), &signature)
        .expect("ring verifies Hilt's signature");

    // kid is the RFC 7638 thumbprint of the key, computed here independently.
    let members = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, jwk["x"].as_str().expect("x"));
    let thumbprint = ring::digest::digest(&ring::digest::SHA256, members.as_bytes());
    assert_eq!(kid, URL_SAFE_NO_PAD.encode(thumbprint.as_ref()));
});

backend_test!(the_key_set_is_an_rfc8037_jwks_without_private_parts, |app| {
    let keys = jwks(&app).await;
    let list = keys["keys"].as_array().expect("keys array");
    assert!(!list.is_empty());
    for k in list {
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["alg"], "EdDSA");
        assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(URL_SAFE_NO_PAD.decode(k["x"].as_str().expect("x")).expect("base64url").len(), 32);
        assert!(k.get("d").is_none(), "no private key material: {k}");
    }
});

backend_test!(verify_passes_every_check_for_a_genuine_receipt, |app| {
    let (_, receipt, _) = receipt(&app).await;
    let r = public(&app, &format!("/v1/receipt/{receipt}/verify")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["valid"], true, "{}", r.body);
    assert_eq!(r.body["verification_url"], format!("{}/v1/receipt/{receipt}/verify", app.config.public_base_url()));
    let names: Vec<&str> = r.body["checks"].as_array().expect("checks").iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["signature", "payload_hash", "payment_confirmed"]);
    for c in r.body["checks"].as_array().expect("checks") {
        assert_eq!(c["status"], "pass", "{c}");
        assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
});

backend_test!(a_tampered_payload_fails_verification, |app| {
    let (_, receipt, _) = receipt(&app).await;
    let stored: String = sqlx::query_scalar("SELECT payload FROM receipts WHERE id = $1").bind(&receipt).fetch_one(app.db.pool()).await.expect("payload");
    let forged = stored.replace("\"9.99\"", "\"999.99\"");
    assert_ne!(forged, stored);
    sqlx::query("UPDATE receipts SET payload = $1 WHERE id = $2").bind(&forged).bind(&receipt).execute(app.db.pool()).await.expect("tamper");

    let r = public(&app, &format!("/v1/receipt/{receipt}/verify")).await;
    assert_eq!(r.body["valid"], false, "{}", r.body);
    let status = |name: &str| r.body["checks"].as_array().expect("checks").iter().find(|c| c["name"] == name).expect("check")["status"].clone();
    assert_eq!(status("signature"), "fail");
    assert_eq!(status("payload_hash"), "fail");
    assert_eq!(status("payment_confirmed"), "pass");

    // A forged hash to match the forged payload still fails on the signature.
    let digest = ring::digest::digest(&ring::digest::SHA256, forged.as_bytes());
    sqlx::query("UPDATE receipts SET payload_sha256 = $1 WHERE id = $2").bind(hex(digest.as_ref())).bind(&receipt).execute(app.db.pool()).await.expect("tamper hash");
    let r = public(&app, &format!("/v1/receipt/{receipt}/verify")).await;
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["checks"][0]["status"], "fail");
    assert_eq!(r.body["checks"][1]["status"], "pass");
});

backend_test!(verify_reports_when_the_payment_is_no_longer_confirmed, |app| {
    let (_, receipt, payment) = receipt(&app).await;
    sqlx::query("UPDATE payments SET status = 'failed' WHERE id = $1").bind(&payment).execute(app.db.pool()).await.expect("update");
    let r = public(&app, &format!("/v1/receipt/{receipt}/verify")).await;
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["checks"][2]["name"], "payment_confirmed");
    assert_eq!(r.body["checks"][2]["status"], "fail");
    assert_eq!(r.body["checks"][0]["status"], "pass", "the signature itself is still good");
    let p = public(&app, &format!("/v1/receipt/{receipt}/public")).await;
    assert_eq!(p.body["verification"]["valid"], false);
});

backend_test!(the_public_proof_needs_no_credentials_and_hides_merchant_only_fields, |app| {
    let (key, receipt, payment) = receipt(&app).await;
    let membership: String = sqlx::query_scalar("SELECT membership_id FROM receipts WHERE id = $1").bind(&receipt).fetch_one(app.db.pool()).await.expect("m");
    sqlx::query("UPDATE memberships SET notes = 'SECRET merchant note', discord_access_token = 'oauth-SECRET' WHERE id = $1")
        .bind(&membership).execute(app.db.pool()).await.expect("notes");
    sqlx::query("UPDATE payments SET metadata = '{\"internal\":\"SECRET meta\"}' WHERE id = $1").bind(&payment).execute(app.db.pool()).await.expect("meta");

    let r = public(&app, &format!("/v1/receipt/{receipt}/public")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut keys: Vec<&str> = r.body.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id", "invoice_metadata", "keys_url", "payload", "proof", "verification", "verification_url"]);
    assert_eq!(r.body["verification"]["valid"], true);
    assert_eq!(r.body["payload"]["receipt_id"], receipt.as_str());
    let text = r.body.to_string();
    for secret in ["SECRET", "buyer@example.com", &key, ADMIN, "api_key", "notes\":\"SECRET", "4242"] {
        assert!(!text.contains(secret), "public proof leaks {secret}: {text}");
    }
    assert_error(&public(&app, "/v1/receipt/rcpt_doesnotexist/public").await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&public(&app, "/v1/receipt/rcpt_doesnotexist/verify").await, StatusCode::NOT_FOUND, "not_found");
    // The merchant routes do need the key.
    assert_error(&public(&app, &format!("/v1/receipt/{receipt}")).await, StatusCode::UNAUTHORIZED, "unauthorized");
});

backend_test!(invoice_metadata_is_validated_and_shows_on_the_public_proof_and_pdf, |app| {
    let (key, receipt, _) = receipt(&app).await;
    let path = format!("/v1/receipt/{receipt}/invoice-metadata");
    let long = "x".repeat(2001);
    for (body, param) in [
        (json!({"billing_email": "not-an-email"}), "billing_email"),
        (json!({"billing_email": "a@b"}), "billing_email"),
        (json!({"invoice_number": "x".repeat(65)}), "invoice_number"),
        (json!({"invoice_number": 12}), "invoice_number"),
        (json!({"billing_name": "two\nlines"}), "billing_name"),
        (json!({"billing_reference": "bad\u{0}char"}), "billing_reference"),
        (json!({"notes": long}), "notes"),
    ] {
        let r = app.patch(&path, &key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    let r = app.patch(&path, &key, json!({"invoice_number": "INV-2025-0042", "billing_name": "Jane Buyer GmbH",
        "billing_email": "ap@jane.example", "billing_reference": "PO-77", "notes": "Paid in full"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["invoice_metadata"]["invoice_number"], "INV-2025-0042");

    // Absent fields are kept; null clears one.
    let r = app.patch(&path, &key, json!({"billing_reference": null})).await;
    assert_eq!(r.body["invoice_metadata"]["billing_reference"], Value::Null);
    assert_eq!(r.body["invoice_metadata"]["billing_name"], "Jane Buyer GmbH");

    let p = public(&app, &format!("/v1/receipt/{receipt}/public")).await;
    assert_eq!(p.body["invoice_metadata"]["invoice_number"], "INV-2025-0042");
    assert_eq!(p.body["invoice_metadata"]["billing_email"], "ap@jane.example");
    assert_eq!(p.body["verification"]["valid"], true, "invoice details are not part of the signed payload");

    let text = pdf_text(&app, &receipt, &key).await;
    for expected in ["INV-2025-0042", "Jane Buyer GmbH", "ap@jane.example", "Paid in full"] {
        assert!(text.contains(expected), "PDF lacks {expected}: {text}");
    }
});

backend_test!(the_pdf_carries_the_proof_as_extractable_text, |app| {
    let (key, receipt, payment) = receipt(&app).await;
    let view = app.get(&format!("/v1/receipt/{receipt}"), &key).await.body;
    let text = pdf_text(&app, &receipt, &key).await;
    let url = format!("{}/v1/receipt/{receipt}/verify", app.config.public_base_url());
    let sha = view["proof"]["payload_sha256"].as_str().expect("sha").to_owned();
    for expected in [receipt.as_str(), "9.99 USDC", url.as_str(), sha.as_str(), "Acme", "VIP group", "WaLLet111", "5xSigConfirmed", payment.as_str()] {
        assert!(text.contains(expected), "PDF lacks {expected}:\n{text}");
    }
});

backend_test!(non_latin_text_is_transliterated_in_the_pdf, |app| {
    let key = app.merchant().await;
    let r = app.post("/v1/products", &key, json!({"name": "Подписка 🦀 VIP 中文", "platform": "telegram",
        "telegram_chat_id": -100123, "price": {"amount": "5", "currency": "USDC"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let payment = app.payment(&key, r.body["id"].as_str().expect("id"), 7).await;
    let receipt = app.confirm(&payment, "tx-cyr").await.body["receipt_id"].as_str().expect("receipt").to_owned();
    let r = app.patch(&format!("/v1/receipt/{receipt}/invoice-metadata"), &key, json!({"billing_name": "Иван Петров 🙂", "notes": "Ωμέγα € ✓"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let text = pdf_text(&app, &receipt, &key).await;
    assert!(text.contains("Podpiska ? VIP ??"), "{text}");
    assert!(text.contains("Ivan Petrov ?"), "{text}");
    assert!(text.contains(&receipt));
    // The JSON keeps the original text.
    assert_eq!(app.get(&format!("/v1/receipt/{receipt}"), &key).await.body["payload"]["product_name"], "Подписка 🦀 VIP 中文");
});

backend_test!(the_receipt_ledger_filters_by_wallet_product_and_search, |app| {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let first = app.payment(&key, &product, 1).await;
    let first_receipt = app.confirm(&first, "tx-alpha").await.body["receipt_id"].as_str().expect("r").to_owned();
    let p = app.post("/v1/payments", &key, json!({"product_id": product, "wallet": "OtherWallet9", "buyer": {"telegram_user_id": 2}})).await;
    let second = p.body["id"].as_str().expect("id").to_owned();
    let second_receipt = app.confirm(&second, "tx-beta").await.body["receipt_id"].as_str().expect("r").to_owned();
    app.patch(&format!("/v1/receipt/{second_receipt}/invoice-metadata"), &key, json!({"invoice_number": "INV_100%"})).await;

    let all = app.get("/v1/receipts", &key).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["total"], 2);
    assert_eq!(all.body["limit"], 50);
    assert_eq!(all.body["offset"], 0);
    let ids = |r: &common::Response| r.body["data"].as_array().expect("data").iter().map(|d| d["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&app.get("/v1/receipts?wallet=OtherWallet9", &key).await), [second_receipt.as_str()]);
    assert_eq!(ids(&app.get("/v1/receipts?q=ALPHA", &key).await), [first_receipt.as_str()]);
    assert_eq!(ids(&app.get("/v1/receipts?q=inv_100%25", &key).await), [second_receipt.as_str()]);
    assert_eq!(ids(&app.get(&format!("/v1/receipts?q={first}"), &key).await), [first_receipt.as_str()]);
    assert_eq!(app.get(&format!("/v1/receipts?product_id={product}"), &key).await.body["total"], 2);
    assert_eq!(app.get("/v1/receipts?product_id=prod_other", &key).await.body["total"], 0);
    assert_eq!(app.get("/v1/receipts?q=%25", &key).await.body["total"], 1, "LIKE wildcards are literal");
    let page = app.get("/v1/receipts?limit=1&offset=1", &key).await;
    assert_eq!(page.body["data"].as_array().expect("data").len(), 1);
    assert_eq!(page.body["total"], 2);
    assert_eq!(app.get("/v1/receipts?limit=0", &key).await.body["error"]["param"], "limit");
});

backend_test!(another_merchants_receipt_is_not_found_on_every_route, |app| {
    let (key, receipt, _) = receipt(&app).await;
    let other = app.merchant().await;
    assert_error(&app.get(&format!("/v1/receipt/{receipt}"), &other).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.patch(&format!("/v1/receipt/{receipt}/invoice-metadata"), &other, json!({"invoice_number": "X"})).await, StatusCode::NOT_FOUND, "not_found");
    let (status, _, _) = bytes(&app, &format!("/v1/receipt/{receipt}/pdf"), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/receipts", &other).await.body["total"], 0);
    assert_eq!(app.get(&format!("/v1/receipts?q={receipt}"), &other).await.body["total"], 0);
    // Untouched by the other merchant's attempt.
    assert_eq!(app.get(&format!("/v1/receipt/{receipt}"), &key).await.body["invoice_metadata"]["invoice_number"], Value::Null);
});

backend_test!(after_a_key_rotation_old_and_new_receipts_both_verify, |app| {
    let (key, old_receipt, _) = receipt(&app).await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 99).await;

    // A restart with a new key file: the new key signs, the old one stays published.
    let dir = tempfile::tempdir().expect("dir");
    let signer = ReceiptSigner::load_or_create(&dir.path().join("new-key")).expect("new key");
    signer.publish(&app.db).await.expect("publish");
    let state = AppState { db: app.db.clone(), config: app.config.clone(), admin_token: ADMIN.into(), receipt_signer: Arc::new(signer),
        providers: hilt_shared::providers::Providers::from_config(&app.config).expect("providers"),
        rate_limits: hilt_shared::ratelimit::RateLimits::database(&app.db) };
    let rotated = hilt_api::router(state);
    let confirmed = send(&rotated, "POST", &format!("/v1/payments/{payment}/confirm"), Some(ADMIN), Some(json!({"tx_signature": "tx-rotated"}))).await;
    let new_receipt = confirmed["receipt_id"].as_str().expect("receipt").to_owned();

    let old_kid = send(&rotated, "GET", &format!("/v1/receipt/{old_receipt}"), Some(&key), None).await["proof"]["key_id"].clone();
    let new_kid = send(&rotated, "GET", &format!("/v1/receipt/{new_receipt}"), Some(&key), None).await["proof"]["key_id"].clone();
    assert_ne!(old_kid, new_kid);
    let keys = send(&rotated, "GET", "/.well-known/hilt-receipt-keys", None, None).await;
    let kids: Vec<Value> = keys["keys"].as_array().expect("keys").iter().map(|k| k["kid"].clone()).collect();
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid), "{kids:?}");
    for r in [&old_receipt, &new_receipt] {
        assert_eq!(send(&rotated, "GET", &format!("/v1/receipt/{r}/verify"), None, None).await["valid"], true);
    }
});

/// One request to a router other than the harness's (the one with the rotated key).
async fn send(router: &axum::Router, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let mut builder = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
    let response = router.clone().oneshot(builder.body(body).expect("request")).await.expect("router never fails");
    assert!(response.status().is_success(), "{method} {path}: {}", response.status());
    serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("json")
}

backend_test!(random_invoice_metadata_bodies_never_cause_a_server_error, |app| {
    use rand::{Rng, SeedableRng};
    let (key, receipt, _) = receipt(&app).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5ec1);
    let fields = ["invoice_number", "billing_name", "billing_email", "billing_reference", "notes", "other"];
    let values = [json!(null), json!(""), json!(1), json!(true), json!([]), json!({}), json!("a@b.co"), json!("🦀\u{0}"), json!("x".repeat(300))];
    for round in 0..120 {
        let body = if round % 5 == 0 {
            ["{", "[]", "\"x\"", "{\"notes\":", "\u{feff}{}"][rng.random_range(0..5)].to_owned()
        } else {
            let object: serde_json::Map<String, Value> = (0..rng.random_range(0..5))
                .map(|_| (fields[rng.random_range(0..fields.len())].to_owned(), values[rng.random_range(0..values.len())].clone()))
                .collect();
            Value::Object(object).to_string()
        };
        let request = Request::builder().method("PATCH").uri(format!("/v1/receipt/{receipt}/invoice-metadata"))
            .header("authorization", format!("Bearer {key}")).body(Body::from(body.clone())).expect("request");
        let r = app.raw(request).await;
        assert!(!r.status.is_server_error(), "{} for {body}", r.status);
        if r.status.is_client_error() {
            assert!(r.body["error"]["code"].is_string(), "{}", r.body);
        }
    }
    let (status, _, _) = bytes(&app, &format!("/v1/receipt/{receipt}/pdf"), &key).await;
    assert_eq!(status, StatusCode::OK, "whatever was stored still renders");
});

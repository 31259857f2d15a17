//! The support trail (SPEC §4 "Support ticket", §5 support routes) and the delivery ticket the
//! rescue flow opens (`service::support::open_or_reuse_delivery_ticket`).

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::{TestApp, assert_error};
use hilt_shared::{service::support, storage};
use serde_json::{Value, json};

/// A merchant with a confirmed payment; returns (key, payment, membership, receipt, product).
async fn purchase(app: &TestApp) -> (String, String, String, String, String) {
    let key = app.merchant().await;
    let product = app.telegram_product(&key).await;
    let payment = app.payment(&key, &product, 31).await;
    let r = app.confirm(&payment, "tx-support").await;
    let s = |f: &str| r.body[f].as_str().expect(f).to_owned();
    (key, payment, s("membership_id"), s("receipt_id"), product)
}

fn names(actions: &Value) -> Vec<String> {
    actions.as_array().expect("actions").iter().map(|a| a["name"].as_str().expect("name").to_owned()).collect()
}

backend_test!(a_ticket_with_foreign_or_unknown_context_is_rejected_naming_the_field, |app| {
    let (_, payment, membership, receipt, product) = purchase(&app).await;
    let other = app.merchant().await;
    for (field, id) in [("payment_id", &payment), ("membership_id", &membership), ("receipt_id", &receipt), ("product_id", &product)] {
        let r = app.post("/v1/support/tickets", &other, json!({"subject": "Help", "body": "x", "context": {field: id}})).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], format!("context.{field}"));
    }
    let r = app.post("/v1/support/tickets", &other, json!({"subject": "Help", "body": "x", "context": {"membership_id": "mem_nope"}})).await;
    assert_eq!(r.body["error"]["param"], "context.membership_id");
    for (body, param) in [
        (json!({"body": "x"}), "subject"),
        (json!({"subject": " ", "body": "x"}), "subject"),
        (json!({"subject": "s"}), "body"),
        (json!({"subject": "s", "body": ""}), "body"),
        (json!({"subject": "x".repeat(201), "body": "b"}), "subject"),
        (json!({"subject": "s", "body": "b", "priority": "asap"}), "priority"),
    ] {
        let r = app.post("/v1/support/tickets", &other, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    assert_eq!(app.get("/v1/support/tickets", &other).await.body["total"], 0, "nothing was created");
});

backend_test!(a_ticket_offers_only_the_actions_its_context_supports, |app| {
    let (key, payment, membership, receipt, product) = purchase(&app).await;
    let r = app.post("/v1/support/tickets", &key, json!({"subject": "No invite", "body": "Buyer says no link arrived",
        "priority": "high", "context": {"membership_id": membership, "payment_id": payment, "product_id": product}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body["id"].as_str().is_some_and(|id| id.starts_with("tkt_")));
    assert_eq!(r.body["status"], "open");
    assert_eq!(r.body["kind"], "general");
    assert_eq!(r.body["priority"], "high");
    assert_eq!(r.body["context"]["membership_id"], membership.as_str());
    assert_eq!(r.body["context"]["receipt_id"], Value::Null);
    assert_eq!(names(&r.body["actions"]), ["retry_delivery", "delivery_diagnostics"]);
    assert_eq!(r.body["actions"][0], json!({"name": "retry_delivery", "method": "POST", "href": format!("/v1/memberships/{membership}/retry-delivery")}));
    assert_eq!(r.body["actions"][1]["href"], format!("/v1/memberships/{membership}/delivery-diagnostics"));
    assert_eq!(r.body["messages"][0]["author"], "merchant");
    assert!(r.body["messages"][0]["id"].as_str().is_some_and(|id| id.starts_with("msg_")));

    let r = app.post("/v1/support/tickets", &key, json!({"subject": "Invoice", "body": "Needs proof", "context": {"receipt_id": receipt}})).await;
    assert_eq!(r.body["priority"], "normal");
    assert_eq!(names(&r.body["actions"]), ["receipt_proof", "send_proof"]);
    assert_eq!(r.body["actions"][0]["href"], format!("{}/v1/receipt/{receipt}/public", app.config.public_base_url()));
    assert_eq!(r.body["actions"][0]["method"], "GET");
    assert_eq!(r.body["actions"][1], json!({"name": "send_proof", "method": "POST", "href": format!("/v1/receipt/{receipt}/send-proof")}));

    let r = app.post("/v1/support/tickets", &key, json!({"subject": "Question", "body": "General"})).await;
    assert_eq!(r.body["actions"], json!([]));
});

backend_test!(the_thread_keeps_order_and_authors, |app| {
    let (key, ..) = purchase(&app).await;
    let t = app.post("/v1/support/tickets", &key, json!({"subject": "Thread", "body": "first"})).await;
    let id = t.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/support/tickets/{id}/message");
    let r = app.post(&path, &key, json!({"body": "second", "author": "buyer"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str(), "answers with the ticket");
    app.post(&path, &key, json!({"body": "third"})).await;
    for n in 4..=8 {
        app.post(&path, &key, json!({"body": format!("m{n}"), "author": if n % 2 == 0 { "buyer" } else { "merchant" }})).await;
    }
    let r = app.get(&format!("/v1/support/tickets/{id}"), &key).await;
    let messages = r.body["messages"].as_array().expect("messages");
    let bodies: Vec<&str> = messages.iter().map(|m| m["body"].as_str().expect("body")).collect();
    assert_eq!(bodies, ["first", "second", "third", "m4", "m5", "m6", "m7", "m8"]);
    let authors: Vec<&str> = messages.iter().map(|m| m["author"].as_str().expect("author")).collect();
    assert_eq!(authors, ["merchant", "buyer", "merchant", "buyer", "merchant", "buyer", "merchant", "buyer"]);
    assert!(messages.iter().all(|m| m["created_at"].as_str().is_some_and(|t| t.ends_with('Z'))));

    let r = app.post(&path, &key, json!({"body": "spoof", "author": "system"})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(r.body["error"]["param"], "author");
    assert_eq!(app.post(&path, &key, json!({"body": "  "})).await.body["error"]["param"], "body");
    assert_error(&app.post("/v1/support/tickets/tkt_nope/message", &key, json!({"body": "x"})).await, StatusCode::NOT_FOUND, "not_found");
});

backend_test!(status_changes_add_system_messages, |app| {
    let (key, ..) = purchase(&app).await;
    let id = app.post("/v1/support/tickets", &key, json!({"subject": "S", "body": "b"})).await.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/support/tickets/{id}");
    let r = app.patch(&path, &key, json!({"status": "pending"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    let last = r.body["messages"].as_array().expect("messages").last().expect("message").clone();
    assert_eq!(last["author"], "system");
    assert!(last["body"].as_str().expect("body").contains("open to pending"), "{last}");

    let r = app.patch(&path, &key, json!({"status": "pending"})).await;
    assert_eq!(r.body["messages"].as_array().expect("m").len(), 2, "no change, no message");
    let r = app.patch(&path, &key, json!({"status": "resolved"})).await;
    assert_eq!(r.body["messages"].as_array().expect("m").len(), 3);

    // A buyer writing to a resolved ticket reopens it.
    let r = app.post(&format!("{path}/message"), &key, json!({"body": "still broken", "author": "buyer"})).await;
    assert_eq!(r.body["status"], "open");
    let authors: Vec<&str> = r.body["messages"].as_array().expect("m").iter().map(|m| m["author"].as_str().expect("a")).collect();
    assert_eq!(authors, ["merchant", "system", "system", "buyer", "system"]);

    for body in [json!({"status": "closed"}), json!({}), json!({"status": 1})] {
        let r = app.patch(&path, &key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], "status", "{body}");
    }
});

backend_test!(the_ticket_list_filters_by_status_kind_and_membership, |app| {
    let (key, _, membership, ..) = purchase(&app).await;
    let a = app.post("/v1/support/tickets", &key, json!({"subject": "A", "body": "b", "context": {"membership_id": membership}})).await.body["id"].as_str().expect("id").to_owned();
    let b = app.post("/v1/support/tickets", &key, json!({"subject": "B", "body": "b"})).await.body["id"].as_str().expect("id").to_owned();
    app.patch(&format!("/v1/support/tickets/{b}"), &key, json!({"status": "resolved"})).await;

    let ids = |r: &common::Response| r.body["data"].as_array().expect("data").iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>();
    let all = app.get("/v1/support/tickets", &key).await;
    assert_eq!(all.body["total"], 2);
    assert_eq!((all.body["limit"].clone(), all.body["offset"].clone()), (json!(50), json!(0)));
    assert!(all.body["data"][0]["messages"].is_array());
    assert_eq!(ids(&app.get("/v1/support/tickets?status=open", &key).await), [a.as_str()]);
    assert_eq!(ids(&app.get("/v1/support/tickets?status=resolved", &key).await), [b.as_str()]);
    assert_eq!(ids(&app.get(&format!("/v1/support/tickets?membership_id={membership}"), &key).await), [a.as_str()]);
    assert_eq!(app.get("/v1/support/tickets?kind=delivery", &key).await.body["total"], 0);
    assert_eq!(app.get("/v1/support/tickets?kind=general&status=open", &key).await.body["total"], 1);
    let page = app.get("/v1/support/tickets?limit=1&offset=1", &key).await;
    assert_eq!((page.body["total"].clone(), page.body["data"].as_array().expect("d").len()), (json!(2), 1));
    for (query, param) in [("status=closed", "status"), ("kind=billing", "kind"), ("limit=500", "limit")] {
        let r = app.get(&format!("/v1/support/tickets?{query}"), &key).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["error"]["param"], param);
    }
});

backend_test!(another_merchants_ticket_is_not_found_on_every_route, |app| {
    let (key, ..) = purchase(&app).await;
    let id = app.post("/v1/support/tickets", &key, json!({"subject": "Mine", "body": "b"})).await.body["id"].as_str().expect("id").to_owned();
    let other = app.merchant().await;
    assert_error(&app.get(&format!("/v1/support/tickets/{id}"), &other).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.patch(&format!("/v1/support/tickets/{id}"), &other, json!({"status": "resolved"})).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&app.post(&format!("/v1/support/tickets/{id}/message"), &other, json!({"body": "hi"})).await, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.get("/v1/support/tickets", &other).await.body["total"], 0);
    let mine = app.get(&format!("/v1/support/tickets/{id}"), &key).await;
    assert_eq!(mine.body["status"], "open");
    assert_eq!(mine.body["messages"].as_array().expect("m").len(), 1, "nothing was added by the other merchant");
});

backend_test!(the_delivery_ticket_is_reused_while_open_and_replaced_once_resolved, |app| {
    let (key, payment, membership, receipt, product) = purchase(&app).await;
    let row = storage::memberships::get_any(&mut app.db.conn().await.expect("conn"), &membership).await.expect("query").expect("membership");

    let mut tx = app.db.begin().await.expect("tx");
    let (first, created) = support::open_or_reuse_delivery_ticket(&mut tx, &row, "Delivery failed", "3 attempts failed: bot_not_in_chat", 1_000).await.expect("open");
    tx.commit().await.expect("commit");
    assert!(created && first.starts_with("tkt_"));

    // The stale row still says no ticket: the link is re-read from the database.
    let mut tx = app.db.begin().await.expect("tx");
    let (again, created) = support::open_or_reuse_delivery_ticket(&mut tx, &row, "Delivery failed", "manual retry failed", 2_000).await.expect("reuse");
    support::add_system_message(&mut tx, &first, "diagnostics: bot lacks invite rights", 3_000).await.expect("system message");
    tx.commit().await.expect("commit");
    assert_eq!((again.as_str(), created), (first.as_str(), false));

    let t = app.get(&format!("/v1/support/tickets/{first}"), &key).await;
    assert_eq!(t.body["kind"], "delivery");
    assert_eq!(t.body["subject"], "Delivery failed");
    assert_eq!(t.body["context"], json!({"payment_id": payment, "membership_id": membership, "receipt_id": receipt, "product_id": product}));
    assert_eq!(names(&t.body["actions"]), ["retry_delivery", "delivery_diagnostics", "receipt_proof", "send_proof"]);
    let bodies: Vec<&str> = t.body["messages"].as_array().expect("m").iter().map(|m| m["body"].as_str().expect("b")).collect();
    assert_eq!(bodies, ["3 attempts failed: bot_not_in_chat", "manual retry failed", "diagnostics: bot lacks invite rights"]);
    assert!(t.body["messages"].as_array().expect("m").iter().all(|m| m["author"] == "system"));
    assert_eq!(app.get(&format!("/v1/memberships/{membership}"), &key).await.body["support_ticket_id"], first.as_str());
    assert_eq!(app.get("/v1/support/tickets?kind=delivery", &key).await.body["total"], 1);

    app.patch(&format!("/v1/support/tickets/{first}"), &key, json!({"status": "resolved"})).await;
    let mut tx = app.db.begin().await.expect("tx");
    let (second, created) = support::open_or_reuse_delivery_ticket(&mut tx, &row, "Delivery failed again", "failed after resolution", 4_000).await.expect("new");
    tx.commit().await.expect("commit");
    assert!(created);
    assert_ne!(second, first);
    assert_eq!(app.get(&format!("/v1/memberships/{membership}"), &key).await.body["support_ticket_id"], second.as_str());
    assert_eq!(app.get(&format!("/v1/support/tickets?membership_id={membership}"), &key).await.body["total"], 2);

    let mut tx = app.db.begin().await.expect("tx");
    assert!(support::add_system_message(&mut tx, "tkt_missing", "x", 5_000).await.is_err(), "no ticket, no message");
});

backend_test!(random_bodies_at_support_routes_never_cause_a_server_error, |app| {
    use rand::{Rng, SeedableRng};
    let (key, _, membership, receipt, _) = purchase(&app).await;
    let id = app.post("/v1/support/tickets", &key, json!({"subject": "S", "body": "b"})).await.body["id"].as_str().expect("id").to_owned();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7c4e7);
    let fields = ["subject", "body", "context", "priority", "author", "status", "payment_id", "membership_id", "receipt_id", "product_id"];
    let values = [json!(null), json!(""), json!(7), json!(false), json!([]), json!({}), json!("open"), json!("buyer"), json!("system"),
        json!("urgent"), json!(membership), json!(receipt), json!("🦀\u{0}"), json!("y".repeat(10_001)), json!({"membership_id": 5})];
    let routes = [("POST", "/v1/support/tickets".to_owned()), ("POST", format!("/v1/support/tickets/{id}/message")), ("PATCH", format!("/v1/support/tickets/{id}"))];
    for (method, path) in &routes {
        for round in 0..100 {
            let body = if round % 5 == 0 {
                ["{", "[]", "null", "{\"subject\":", "\u{feff}{}", ""][rng.random_range(0..6)].to_owned()
            } else {
                let object: serde_json::Map<String, Value> = (0..rng.random_range(0..5))
                    .map(|_| (fields[rng.random_range(0..fields.len())].to_owned(), values[rng.random_range(0..values.len())].clone()))
                    .collect();
                Value::Object(object).to_string()
            };
            let request = Request::builder().method(*method).uri(path.as_str())
                .header("authorization", format!("Bearer {key}")).body(Body::from(body.clone())).expect("request");
            let r = app.raw(request).await;
            assert!(!r.status.is_server_error(), "{method} {path}: {} for {body}", r.status);
            if r.status.is_client_error() {
                assert!(r.body["error"]["code"].is_string(), "{}", r.body);
            }
        }
    }
    assert_eq!(app.get(&format!("/v1/support/tickets/{id}"), &key).await.status, StatusCode::OK);
});

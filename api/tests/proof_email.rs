//! Proof email (SPEC §8): `POST /v1/receipt/{id}/send-proof` → a `proof_email` job that sends
//! the verification link once, over a real SMTP exchange (our loopback sink) or into the
//! outbox folder; retries on 4xx, records 5xx; every attempt visible on the receipt.

mod common;

use std::{sync::Arc, time::Duration};

use axum::http::{Method, StatusCode};
use common::{
    assert_error,
    rescue::{Rescue, fast_tuning},
};
use hilt_shared::{domain::ids::random_token, providers::Providers, testing::SmtpSink};
use hilt_worker::JobContext;
use serde_json::{Value, json};

/// A confirmed Telegram purchase whose delivery DMs the buyer (no email); returns the receipt id.
async fn receipt(r: &Rescue, buyer_email: Option<&str>) -> String {
    let user = 10_000 + i64::from(rand::random::<u16>());
    r.tg.add_user(user);
    let product = r.telegram_product().await;
    let mut buyer = json!({"telegram_user_id": user});
    if let Some(email) = buyer_email {
        buyer["email"] = json!(email);
    }
    let p = r.app.post("/v1/payments", &r.key, json!({"product_id": product, "wallet": "W1", "buyer": buyer})).await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let c = r.app.confirm(p.body["id"].as_str().expect("id"), &format!("tx-{}", random_token(10))).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    c.body["receipt_id"].as_str().expect("receipt_id").to_owned()
}

/// Points the workers of `r` at an SMTP server instead of the outbox folder.
fn use_smtp(r: &mut Rescue, sink: &SmtpSink) {
    let mut config = (*r.ctx.config).clone();
    config.smtp_url = Some(sink.url());
    let config = Arc::new(config);
    let providers = Providers::from_config_with_timeout(&config, Duration::from_secs(3)).expect("providers");
    r.ctx = Arc::new(JobContext::new(r.app.db.clone(), config.clone(), providers, fast_tuning(&config)));
}

async fn send_proof(r: &Rescue, receipt: &str, body: Value) -> common::Response {
    r.app.post(&format!("/v1/receipt/{receipt}/send-proof"), &r.key, body).await
}

/// Accepted request → (proof email id, job id).
async fn accepted(r: &Rescue, receipt: &str, body: Value) -> (String, String) {
    let s = send_proof(r, receipt, body).await;
    assert_eq!(s.status, StatusCode::ACCEPTED, "{}", s.body);
    assert_eq!(s.body["proof_email"]["status"], "queued");
    (s.body["proof_email"]["id"].as_str().expect("id").to_owned(), s.body["job_id"].as_str().expect("job").to_owned())
}

async fn proof_emails(r: &Rescue, receipt: &str) -> Vec<Value> {
    let g = r.app.get(&format!("/v1/receipt/{receipt}"), &r.key).await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    g.body["proof_emails"].as_array().expect("proof_emails on the receipt").clone()
}

async fn wait_for_proof(r: &Rescue, receipt: &str, id: &str, status: &str) -> Value {
    for _ in 0..400 {
        let found = proof_emails(r, receipt).await.into_iter().find(|p| p["id"] == id);
        if let Some(p) = found.filter(|p| p["status"] == status) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proof email {id} never became {status}: {:?}", proof_emails(r, receipt).await);
}

/// The text of a message with quoted-printable soft line breaks undone.
fn unfolded(data: &str) -> String {
    data.replace("=\r\n", "").replace("=3D", "=")
}

/// The path of an absolute link of ours (the harness serves the router in-process).
fn local_path(r: &Rescue, url: &str) -> String {
    url.strip_prefix(&r.app.config.public_base_url()).expect("a link to our public base URL").to_owned()
}

async fn job_status(r: &Rescue, job: &str) -> String {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1").bind(job).fetch_one(r.app.db.pool()).await.expect("job")
}

/// What the transport would do after a worker died before finishing the job: run it again.
async fn requeue(r: &Rescue, job: &str) {
    sqlx::query("UPDATE jobs SET status = 'queued', run_at = 0, locked_by = NULL, locked_until = NULL WHERE id = $1")
        .bind(job)
        .execute(r.app.db.pool())
        .await
        .expect("requeue job");
}

backend_test!(the_proof_arrives_over_smtp_with_a_link_that_verifies, |app| {
    let mut r = Rescue::start(app).await;
    let sink = SmtpSink::start().await;
    use_smtp(&mut r, &sink);
    r.start_worker();
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let patch = r.app.patch(&format!("/v1/receipt/{receipt}/invoice-metadata"), &r.key, json!({"billing_email": "billing@example.com"})).await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.body);

    let (id, _) = accepted(&r, &receipt, json!({})).await;
    let sent = wait_for_proof(&r, &receipt, &id, "sent").await;
    assert_eq!(sent["address"], "billing@example.com", "the invoice billing email comes first");
    assert_eq!(sent["attempts"], 1);
    assert!(sent["sent_at"].is_string() && sent["created_at"].is_string());
    assert_eq!(sent["last_error"], Value::Null);

    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "one email");
    assert_eq!(mails[0].to, vec!["billing@example.com".to_owned()]);
    let data = unfolded(&mails[0].data);
    assert!(data.contains(&format!("Message-ID: <{id}@hilt>")), "the request id is the Message-ID: {data}");
    assert!(data.contains("text/plain") && data.contains("text/html"), "plain text and HTML: {data}");
    let verify = r.app.config.public_base_url() + &format!("/v1/receipt/{receipt}/verify");
    assert!(data.contains(&verify), "the verification link: {data}");
    assert!(data.contains(&format!("/v1/receipt/{receipt}/public")), "the public page");

    let v = r.app.call(Method::GET, &local_path(&r, &verify), None, None).await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    assert_eq!(v.body["valid"], true, "the emailed link verifies the receipt: {}", v.body);
    r.stop_workers().await;
});

backend_test!(without_smtp_the_proof_is_one_file_in_the_outbox_even_when_the_job_runs_again, |app| {
    let r = Rescue::start(app).await;
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let (id, job) = accepted(&r, &receipt, json!({})).await;
    assert_eq!(proof_emails(&r, &receipt).await[0]["address"], "buyer@example.com", "the buyer's email by default");

    hilt_worker::engine::run_once(&r.ctx, &job).await.expect("run the job");
    hilt_worker::engine::run_once(&r.ctx, &job).await.expect("run the job");
    requeue(&r, &job).await;
    hilt_worker::engine::run_once(&r.ctx, &job).await.expect("run the job");

    let files: Vec<_> = std::fs::read_dir(r.outbox.path()).expect("outbox").flatten().map(|e| e.file_name().into_string().expect("name")).collect();
    assert_eq!(files, vec![format!("{id}.eml")], "one message, named by the request id");
    let eml = unfolded(&std::fs::read_to_string(r.outbox.path().join(format!("{id}.eml"))).expect("eml"));
    assert!(eml.contains(&format!("/v1/receipt/{receipt}/verify")), "{eml}");
    let p = &proof_emails(&r, &receipt).await[0];
    assert_eq!(p["status"], "sent");
    assert_eq!(p["attempts"], 1, "the later runs found it sent and did nothing");
    assert_eq!(job_status(&r, &job).await, "done");
});

backend_test!(a_job_run_twice_over_smtp_sends_one_email, |app| {
    let mut r = Rescue::start(app).await;
    let sink = SmtpSink::start().await;
    use_smtp(&mut r, &sink);
    let receipt = receipt(&r, None).await;
    let (_, job) = accepted(&r, &receipt, json!({"email": "someone@example.org"})).await;
    hilt_worker::engine::run_once(&r.ctx, &job).await.expect("run the job");
    hilt_worker::engine::run_once(&r.ctx, &job).await.expect("run the job");
    requeue(&r, &job).await;
    hilt_worker::engine::run_once(&r.ctx, &job).await.expect("run the job");
    assert_eq!(sink.messages().len(), 1, "exactly one email");
    assert_eq!(sink.messages()[0].to, vec!["someone@example.org".to_owned()]);
    let p = &proof_emails(&r, &receipt).await[0];
    assert_eq!((p["status"].as_str(), p["attempts"].as_i64()), (Some("sent"), Some(1)));

    // Each request is its own email.
    let (second, job2) = accepted(&r, &receipt, json!({"email": "someone@example.org"})).await;
    hilt_worker::engine::run_once(&r.ctx, &job2).await.expect("run the job");
    assert_eq!(sink.messages().len(), 2);
    assert!(sink.messages()[1].data.contains(&second));
});

backend_test!(a_worker_lost_mid_send_is_not_resent_over_smtp_but_is_into_the_outbox, |app| {
    let mut r = Rescue::start(app).await;
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let (outbox_id, outbox_job) = accepted(&r, &receipt, json!({})).await;
    let (smtp_id, smtp_job) = accepted(&r, &receipt, json!({})).await;
    // A run claimed each request and died before recording: `sending`, the claim long expired,
    // and the job handed back to the queue.
    for id in [&outbox_id, &smtp_id] {
        sqlx::query("UPDATE proof_emails SET status = 'sending', attempts = 1, sending_until = 1 WHERE id = $1")
            .bind(id)
            .execute(r.app.db.pool())
            .await
            .expect("simulate a lost claim");
    }
    hilt_worker::engine::run_once(&r.ctx, &outbox_job).await.expect("run the job");
    assert!(r.outbox.path().join(format!("{outbox_id}.eml")).exists(), "rewriting the same file is harmless");

    let sink = SmtpSink::start().await;
    use_smtp(&mut r, &sink);
    hilt_worker::engine::run_once(&r.ctx, &smtp_job).await.expect("run the job");
    assert!(sink.messages().is_empty(), "the SMTP server may already have it: not sent again");
    let emails = proof_emails(&r, &receipt).await;
    let by_id = |id: &str| emails.iter().find(|p| p["id"] == id).expect("request").clone();
    assert_eq!(by_id(&outbox_id)["status"], "sent");
    assert_eq!(by_id(&smtp_id)["status"], "failed");
    assert!(by_id(&smtp_id)["last_error"].as_str().is_some_and(|e| e.starts_with("outcome_unknown")));
});

backend_test!(a_451_is_retried_with_backoff_then_sent, |app| {
    let mut r = Rescue::start(app).await;
    let sink = SmtpSink::start().await;
    sink.reject_next_rcpt(451);
    use_smtp(&mut r, &sink);
    r.start_worker();
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let (id, _) = accepted(&r, &receipt, json!({})).await;
    let sent = wait_for_proof(&r, &receipt, &id, "sent").await;
    assert_eq!(sent["attempts"], 2, "the deferred attempt and the successful retry");
    assert_eq!(sent["last_error"], Value::Null);
    assert_eq!(sink.messages().len(), 1);
    r.stop_workers().await;
});

backend_test!(a_550_is_recorded_failed_and_not_retried, |app| {
    let mut r = Rescue::start(app).await;
    let sink = SmtpSink::start().await;
    sink.reject_next_rcpt(550);
    use_smtp(&mut r, &sink);
    r.start_worker();
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let (id, job) = accepted(&r, &receipt, json!({})).await;
    let failed = wait_for_proof(&r, &receipt, &id, "failed").await;
    assert_eq!(failed["attempts"], 1);
    assert!(failed["last_error"].as_str().is_some_and(|e| e.starts_with("email_rejected") && e.contains("550")), "{failed}");
    assert!(!failed.to_string().contains("rejected by the test sink"), "server text is not echoed");
    assert_eq!(failed["sent_at"], Value::Null);
    assert!(sink.messages().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(job_status(&r, &job).await, "dead", "recorded, not retried");
    assert_eq!(proof_emails(&r, &receipt).await[0]["attempts"], 1);
    r.stop_workers().await;
});

backend_test!(an_address_must_be_known_and_well_formed, |app| {
    let r = Rescue::start(app).await;
    let receipt = receipt(&r, None).await;
    let none = send_proof(&r, &receipt, json!({})).await;
    assert_error(&none, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(none.body["error"]["param"], "email");
    let empty_body = r.app.call(Method::POST, &format!("/v1/receipt/{receipt}/send-proof"), Some(&r.key), None).await;
    assert_error(&empty_body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    for bad in [json!("not-an-email"), json!("a@b"), json!("two@@example.com"), json!(42), json!(["x@y.z"])] {
        let resp = send_proof(&r, &receipt, json!({"email": bad})).await;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(resp.body["error"]["param"], "email", "{bad}: {}", resp.body);
    }
    assert!(proof_emails(&r, &receipt).await.is_empty(), "rejected requests leave no trace");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM jobs WHERE queue = $1", "proof_email").await, 0);

    let ok = send_proof(&r, &receipt, json!({"email": " given@example.com "})).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
    assert_eq!(ok.body["proof_email"]["address"], "given@example.com");
});

backend_test!(another_merchants_receipt_is_not_found, |app| {
    let r = Rescue::start(app).await;
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let other = r.app.merchant().await;
    let resp = r.app.post(&format!("/v1/receipt/{receipt}/send-proof"), &other, json!({"email": "x@example.com"})).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let missing = send_proof(&r, "rcpt_doesnotexist", json!({"email": "x@example.com"})).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(r.app.count("SELECT COUNT(*) FROM jobs WHERE queue = $1", "proof_email").await, 0);
    let unauth = r.app.call(Method::POST, &format!("/v1/receipt/{receipt}/send-proof"), None, Some(json!({}))).await;
    assert_error(&unauth, StatusCode::UNAUTHORIZED, "unauthorized");
});

backend_test!(random_bodies_never_answer_5xx, |app| {
    let r = Rescue::start(app).await;
    let receipt = receipt(&r, Some("buyer@example.com")).await;
    let path = format!("/v1/receipt/{receipt}/send-proof");
    let long = "a".repeat(10_000);
    let bodies = [
        "", "{", "null", "[]", "\"x\"", "12", "{\"email\": null}", "{\"email\": {}}", "{\"email\": true}",
        "{\"email\": \"\\u0000@x.io\"}", "{\"email\": \"é@ü.de\"}", "{\"unknown\": 1}", "{\"email\": \"a@b.c\", \"email\": 3}",
    ];
    for body in bodies.iter().map(|b| b.to_string()).chain([format!("{{\"email\": \"{long}@x.io\"}}"), format!("{{\"{long}\": 1}}")]) {
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header("authorization", format!("Bearer {}", r.key))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.clone()))
            .expect("request");
        let resp = r.app.raw(request).await;
        assert!(resp.status.as_u16() < 500, "{body:.80} → {} {}", resp.status, resp.body);
    }
    for _ in 0..200 {
        let len = rand::random::<u8>() as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header("authorization", format!("Bearer {}", r.key))
            .body(axum::body::Body::from(bytes))
            .expect("request");
        let resp = r.app.raw(request).await;
        assert!(resp.status.as_u16() < 500, "{} {}", resp.status, resp.body);
    }
});

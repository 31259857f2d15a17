//! The job engine under load: a large backlog queued while no worker runs is delivered exactly
//! once by two workers.

mod common;

use std::time::{Duration, Instant};

use common::rescue::Rescue;
use futures::StreamExt;
use hilt_shared::{
    service::{merchants, payments::{self, BuyerInput, CreatePayment}},
    storage::Backend,
};
use serde_json::json;

/// Confirms `n` payments for fallback-link products (no provider calls: this measures the queue).
async fn confirmed_backlog(r: &Rescue, n: usize) -> String {
    let product = r.product(json!({"name": "Static", "platform": "telegram", "fallback_invite_url": "https://t.me/+s",
        "price": {"amount": "1", "currency": "USD"}})).await;
    let merchant = merchants::authenticate(&r.app.db, &r.key).await.expect("auth").expect("merchant").id;
    let batch = hilt_shared::domain::ids::random_token(6);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (db, signer, merchant, product, batch) = (r.app.db.clone(), r.app.signer.clone(), merchant.clone(), product.clone(), batch.clone());
            async move {
                let input = CreatePayment {
                    product_id: product,
                    amount: None,
                    currency: None,
                    wallet: Some(format!("wallet-{i}")),
                    buyer: BuyerInput::default(),
                    metadata: None,
                };
                let mut tx = db.begin().await.expect("begin");
                let p = payments::create(&mut tx, None, &merchant, input).await.expect("create payment");
                payments::confirm(&mut tx, &signer, &p.payment.id, &format!("tx-{batch}-{i}")).await.expect("confirm");
                tx.commit().await.expect("commit");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    eprintln!("confirmed {n} payments in {:.1?}", started.elapsed());
    merchant
}

async fn count(r: &Rescue, sql: &'static str, merchant: &str) -> i64 {
    sqlx::query_scalar(sql).bind(merchant).fetch_one(r.app.db.pool()).await.expect("count")
}

/// Waits until every membership of the merchant is delivered; returns how long it took.
async fn all_delivered(r: &Rescue, merchant: &str, n: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let delivered = count(r, "SELECT COUNT(*) FROM memberships WHERE merchant_id = $1 AND delivery_status = 'delivered'", merchant).await;
        if delivered == n {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "only {delivered} of {n} delivered after {limit:?}");
        let secs = started.elapsed().as_secs();
        if secs > 0 && secs.is_multiple_of(5) && started.elapsed().subsec_millis() < 250 {
            let running = count(r, "SELECT COUNT(*) FROM jobs WHERE merchant_id = $1 AND status = 'running'", merchant).await;
            eprintln!("progress {secs:>4} s: {delivered}/{n} delivered, {running} running");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Exactly one succeeded attempt per membership: nothing lost, nothing delivered twice.
async fn each_delivered_once(r: &Rescue, merchant: &str, n: i64) {
    let succeeded = count(r, "SELECT COUNT(*) FROM delivery_attempts WHERE merchant_id = $1 AND outcome = 'succeeded'", merchant).await;
    let memberships = count(r, "SELECT COUNT(DISTINCT membership_id) FROM delivery_attempts WHERE merchant_id = $1 AND outcome = 'succeeded'", merchant).await;
    assert_eq!(memberships, n, "every membership delivered");
    assert_eq!(succeeded, n, "no membership delivered twice");
}

backend_test!(a_backlog_queued_while_no_worker_runs_is_all_delivered_once, |app| {
    // 12,000 on PostgreSQL, 5,000 on the embedded default. HILT_TEST_BACKLOG=50000 runs the
    // full-size backlog (throughput is measured in bench/README.md, not here).
    let scaled_out = app.db.backend() == Backend::Postgres;
    let n = match std::env::var("HILT_TEST_BACKLOG").ok().and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None if scaled_out => 12_000,
        None => 5_000,
    };
    let mut r = Rescue::start(app).await;
    // Production timings: a large backlog must not be re-swept by test-speed timers.
    r.set_tuning(hilt_worker::Tuning::from_config(&r.ctx.config));
    let merchant = confirmed_backlog(&r, n).await;
    assert_eq!(count(&r, "SELECT COUNT(*) FROM jobs WHERE merchant_id = $1 AND status = 'queued'", &merchant).await, n as i64);
    r.start_worker();
    r.start_worker();
    let took = all_delivered(&r, &merchant, n as i64, Duration::from_secs(900)).await;
    eprintln!("delivered {n} in {took:.1?} ({:.0}/s)", n as f64 / took.as_secs_f64());
    each_delivered_once(&r, &merchant, n as i64).await;

    r.stop_workers().await;
});

//! The job engine in process: workers that race for the same batch of due jobs never run one
//! job twice, and a queue's jobs all finish.

mod common;

use std::time::{Duration, Instant};

use common::rescue::{Rescue, fast_tuning};
use hilt_shared::queue::{self, Queue};

async fn count(r: &Rescue, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(r.app.db.pool()).await.expect("count")
}

backend_test!(workers_racing_for_the_same_jobs_run_each_exactly_once, |app| {
    const N: i64 = 4_000;
    let mut r = Rescue::start(app).await;
    let mut tuning = fast_tuning(&r.ctx.config);
    tuning.queues = vec![Queue::Noop];
    r.set_tuning(tuning);
    for _ in 0..N / 1_000 {
        let mut tx = r.app.db.begin().await.expect("tx");
        for _ in 0..1_000 {
            queue::enqueue(&mut tx, Queue::Noop, None, None, "{}".into(), 0).await.expect("enqueue");
        }
        tx.commit().await.expect("commit");
    }
    // Three workers start at once on the same due jobs: every claim races the others.
    for _ in 0..3 {
        r.start_worker();
    }
    let started = Instant::now();
    while count(&r, "SELECT COUNT(*) FROM jobs WHERE queue = 'noop' AND status IN ('queued', 'running')").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "jobs still waiting after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&r, "SELECT COUNT(*) FROM jobs WHERE queue = 'noop' AND status = 'done'").await, N);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM jobs WHERE queue = 'noop' AND attempts <> 1").await, 0, "a job was claimed twice");
    r.stop_workers().await;
    assert_eq!(count(&r, "SELECT COUNT(*) FROM jobs WHERE locked_by IS NOT NULL").await, 0, "stopped workers hold nothing");
});

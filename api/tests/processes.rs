//! Process-level behaviour, tested with processes: the `hilt` binary's start-up checks, and a
//! scaled-out deployment on PostgreSQL (`hilt api` + `hilt worker`s) that loses a worker to
//! SIGKILL mid-burst or mid-batch without losing a delivery, recovers its jobs within 10 s, and
//! stays inside its connection budget with 2 APIs and 8 workers, and works through PgBouncer.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::process::{Killed, free_port, hilt, sigterm, wait_exit};
use futures::StreamExt;
use hilt_shared::{
    testing::{BotRights, Failure, FakeTelegram},
};
use serde_json::{Value, json};

const ADMIN: &str = "process-test-admin-token";
const CHAT: i64 = -1009876543210;

#[test]
fn a_bad_setting_stops_the_process_naming_the_variable() {
    for (var, value) in [
        ("HILT_RETRY_SCHEDULE", "soon"),
        ("HILT_LISTEN", "not-an-address"),
        ("DATABASE_URL", "mysql://x"),
        ("HILT_WORKER_CONCURRENCY", "0"),
        ("HILT_LOG_FORMAT", "xml"),
        ("HILT_WEBHOOK_ALLOW_PRIVATE", "maybe"),
    ] {
        let out = hilt(&["serve"], &[(var, value.to_owned())]).output().expect("run hilt");
        assert!(!out.status.success(), "{var}={value} must stop the process");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "the message names {var}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.contains("error")).count(), 1, "one clear line: {stderr}");
    }
}

#[test]
fn migrations_run_twice_and_from_two_processes_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("hilt.db").display());
    let env = [("DATABASE_URL", url)];
    let a = hilt(&["migrate"], &env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let b = hilt(&["migrate"], &env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    for mut child in [a, b] {
        assert!(child.wait().expect("wait").success(), "concurrent migrate must succeed");
    }
    assert!(hilt(&["migrate"], &env).output().expect("run").status.success(), "a second run is a no-op");
    let out = hilt(&["merchant", "create", "--name", "Acme"], &env).output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hilt_sk_"), "the key is printed once");
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let env = sqlite_serve_env(dir.path(), port);
    let mut child = hilt(&["serve"], &env).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_healthy(&format!("127.0.0.1:{port}"));
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("serve stops within 30 s of SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut stdout).expect("read");
    assert!(stdout.contains("generated admin token"), "serve prints a generated admin token: {stdout}");
}

/// Waits (at most 20 s) until the process listening on `addr` answers `/healthz`.
fn wait_healthy(addr: &str) {
    let started = Instant::now();
    while !http_ok(&format!("http://{addr}/healthz")) {
        assert!(started.elapsed() < Duration::from_secs(20), "nothing answered /healthz on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The environment of a `hilt serve` on a SQLite file in `dir`, listening on `port`.
fn sqlite_serve_env(dir: &std::path::Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", format!("sqlite://{}", dir.join("hilt.db").display())),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_OUTBOX_DIR", dir.join("outbox").display().to_string()),
        ("HILT_RECEIPT_KEY_FILE", dir.join("key").display().to_string()),
    ]
}

/// A tiny blocking HTTP probe (the test runs outside an async runtime).
fn http_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
    let Ok(mut stream) = std::net::TcpStream::connect(&addr) else { return false };
    let path = url.trim_start_matches("http://").trim_start_matches(addr.as_str());
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// SPEC §2: any worker may die at any moment; no job is lost and a retried job does not
/// repeat a side effect that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_postgres), ignore = "needs HILT_TEST_DATABASE_URL")]
async fn a_worker_killed_mid_burst_loses_no_delivery() {
    let database = common::postgres_test_database().await.expect("HILT_TEST_DATABASE_URL is set");
    const BUYERS: i64 = 300;
    let tg = FakeTelegram::start().await;
    tg.add_chat(CHAT, BotRights::admin());
    for user in 1..=BUYERS {
        tg.add_user(user);
    }
    // Slow DMs keep jobs in flight when the worker dies.
    tg.fail_next_n("sendMessage", 10_000, Failure::Slow(Duration::from_millis(150)));
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let env = vec![
        ("DATABASE_URL", database.clone()),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
        ("HILT_RATE_LIMIT", "1000000".to_owned()),
        ("HILT_TELEGRAM_BOT_TOKEN", tg.token()),
        ("HILT_TELEGRAM_API_URL", tg.url()),
        ("HILT_OUTBOX_DIR", dir.path().join("outbox").display().to_string()),
        ("HILT_RECEIPT_KEY_FILE", dir.path().join("key").display().to_string()),
        ("HILT_RETRY_SCHEDULE", "500ms,1s,1s".to_owned()),
        ("HILT_WORKER_CONCURRENCY", "8".to_owned()),
        ("HILT_LOG_FORMAT", "json".to_owned()),
    ];
    assert!(hilt(&["migrate"], &env).output().expect("migrate").status.success());
    let quiet = |mut c: Command| c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let _api = Killed(quiet(hilt(&["api"], &env)));
    let mut doomed = Killed(quiet(hilt(&["worker"], &env)));
    // The survivor serves its own metrics, as a scaled-out worker does for Prometheus.
    let metrics_port = free_port();
    let mut survivor_env = env.clone();
    survivor_env.push(("HILT_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}")));
    let mut survivor = Killed(quiet(hilt(&["worker"], &survivor_env)));

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, token: String, body: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.request(method, format!("{base}{path}")).bearer_auth(token).json(&body).send().await.expect("request");
            let status = r.status();
            let body: Value = r.json().await.expect("json");
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "api never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = call(reqwest::Method::POST, "/v1/admin/merchants".into(), ADMIN.into(), json!({"name": "Burst"})).await["api_key"]
        .as_str().expect("key").to_owned();
    let product = call(reqwest::Method::POST, "/v1/products".into(), key.clone(), json!({"name": "VIP", "platform": "telegram",
        "telegram_chat_id": CHAT, "price": {"amount": "5", "currency": "USDC"}, "recurring": true, "period": "30d"})).await["id"]
        .as_str().expect("id").to_owned();

    let db = hilt_shared::storage::Db::connect(&database, 4).await.expect("db");
    let delivered = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'")
            .fetch_one(db.pool()).await.expect("count")
    };
    let burst = futures::stream::iter(1..=BUYERS)
        .map(|user| {
            let (call, key, product) = (call, key.clone(), product.clone());
            async move {
                let p = call(reqwest::Method::POST, "/v1/payments".into(), key, json!({"product_id": product, "buyer": {"telegram_user_id": user}})).await;
                let id = p["id"].as_str().expect("id").to_owned();
                call(reqwest::Method::POST, format!("/v1/payments/{id}/confirm"), ADMIN.into(), json!({"tx_signature": format!("tx-{user}")})).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    let killer = async {
        let started = Instant::now();
        while delivered().await < 40 {
            assert!(started.elapsed() < Duration::from_secs(60), "deliveries never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = doomed.0.id();
        doomed.0.kill().expect("SIGKILL");
        let _ = doomed.0.wait();
        // What the dead worker held: its running jobs (the DMs that may repeat).
        let in_flight: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND locked_by LIKE $1")
            .bind(format!("%-{pid}-%")).fetch_one(db.pool()).await.expect("count");
        let at_kill = delivered().await;
        (in_flight, at_kill)
    };
    let (_, (in_flight, at_kill)) = tokio::join!(burst, killer);
    assert!(at_kill < BUYERS, "the kill must land mid-burst ({at_kill} delivered)");

    let started = Instant::now();
    while delivered().await < BUYERS {
        assert!(started.elapsed() < Duration::from_secs(120), "only {} of {BUYERS} delivered after the kill", delivered().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut extra_dms = 0;
    for user in 1..=BUYERS {
        let dms = tg.dms_to(user).len();
        assert!(dms >= 1, "buyer {user} got no DM");
        extra_dms += dms - 1;
    }
    eprintln!("killed worker had {in_flight} jobs in flight; {extra_dms} buyers got a second DM; recovered in {:.1?}", started.elapsed());
    assert!(extra_dms as i64 <= in_flight, "{extra_dms} repeated DMs but only {in_flight} jobs were in flight");
    let metrics = http.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.expect("worker metrics").text().await.expect("text");
    let done: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hilt_jobs_finished_total{queue=\"delivery\",status=\"done\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(done > 0.0 && done <= BUYERS as f64, "the survivor counts the deliveries it finished: {done}");
    // A repeated DM carries a new link; the one before it no longer admits anyone. (A link the
    // killed worker created but had not yet recorded was never sent: it is in no DM.)
    let live: Vec<String> = tg.invite_links(CHAT).into_iter().filter(|l| !l.is_revoked).map(|l| l.link).collect();
    for user in 1..=BUYERS {
        let sent_and_live = tg.dms_to(user).iter().filter(|dm| live.iter().any(|link| dm.contains(link.as_str()))).count();
        assert_eq!(sent_and_live, 1, "buyer {user} holds exactly one working link, however many DMs came");
    }

    // The survivor shuts down gracefully on SIGTERM.
    sigterm(&survivor.0);
    let status = wait_exit(&mut survivor.0, Duration::from_secs(30)).expect("worker stops within 30 s of SIGTERM");
    assert!(status.success(), "graceful exit: {status}");
}

/// A scaled-out deployment on one PostgreSQL database: `hilt api` and `hilt worker` processes
/// started from the same settings, and an admin/merchant client of the first API.
struct Deployment {
    database: String,
    /// The same database through a transaction-mode pooler, when the processes use one.
    pooled: Option<String>,
    dir: tempfile::TempDir,
    api_port: u16,
    processes: Vec<Killed>,
    http: reqwest::Client,
    db: hilt_shared::storage::Db,
}

impl Deployment {
    async fn new() -> Self {
        let database = common::postgres_test_database().await.expect("HILT_TEST_DATABASE_URL is set");
        let dir = tempfile::tempdir().expect("dir");
        // One connection for the test's own queries, opened before any process takes its share.
        let db = hilt_shared::storage::Db::connect(&database, 1).await.expect("db");
        db.ping().await.expect("test connection");
        let this = Self {
            db,
            database,
            pooled: None,
            dir,
            api_port: free_port(),
            processes: Vec::new(),
            http: reqwest::Client::new(),
        };
        assert!(hilt(&["migrate"], &this.env("migrate", this.api_port)).output().expect("migrate").status.success());
        this
    }

    /// The environment of one process; `name` becomes its PostgreSQL `application_name`.
    fn env(&self, name: &str, port: u16) -> Vec<(&'static str, String)> {
        let database = self.pooled.as_ref().unwrap_or(&self.database);
        vec![
            ("DATABASE_URL", format!("{database}?application_name={name}")),
            ("HILT_WAKE_DATABASE_URL", format!("{}?application_name={name}-wake", self.database)),
            ("HILT_LISTEN", format!("127.0.0.1:{port}")),
            ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
            ("HILT_RATE_LIMIT", "1000000".to_owned()),
            ("HILT_OUTBOX_DIR", self.dir.path().join("outbox").display().to_string()),
            ("HILT_RECEIPT_KEY_FILE", self.dir.path().join("key").display().to_string()),
            ("HILT_LOG_FORMAT", "json".to_owned()),
            // Migrations take a session-level advisory lock, which a transaction-mode pooler
            // cannot keep: they are applied directly, by `hilt migrate` in `new`.
            ("HILT_SKIP_MIGRATIONS", self.pooled.is_some().to_string()),
        ]
    }

    /// Starts `hilt {role}`; its stderr goes to `{dir}/{name}.log`. Returns its index.
    fn start(&mut self, role: &str, name: &str, port: u16) -> usize {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log file");
        let child = hilt(&[role], &self.env(name, port)).stdout(Stdio::null()).stderr(log).spawn().expect("spawn");
        self.processes.push(Killed(child));
        self.processes.len() - 1
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("dir").flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all += &std::fs::read_to_string(entry.path()).unwrap_or_default();
            }
        }
        all
    }

    async fn call(&self, port: u16, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let r = self.http.request(method, format!("http://127.0.0.1:{port}{path}")).bearer_auth(token).json(&body).send().await.expect("request");
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn wait_healthy(&self, port: u16) {
        let started = Instant::now();
        while self.http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "api on {port} never came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A merchant with a fallback-link product (deliveries call no provider); (key, product).
    async fn merchant_with_link_product(&self) -> (String, String) {
        let key = self.call(self.api_port, reqwest::Method::POST, "/v1/admin/merchants", ADMIN, json!({"name": "Load"})).await["api_key"]
            .as_str().expect("key").to_owned();
        let product = self.call(self.api_port, reqwest::Method::POST, "/v1/products", &key, json!({"name": "Link", "platform": "telegram",
            "fallback_invite_url": "https://t.me/+link", "price": {"amount": "5", "currency": "USDC"}})).await["id"]
            .as_str().expect("id").to_owned();
        (key, product)
    }

    /// Creates and confirms `n` payments through the APIs on `ports`, 16 at a time.
    async fn pay(&self, ports: &[u16], key: &str, product: &str, n: usize) {
        futures::stream::iter(0..n)
            .map(|i| async move {
                let port = ports[i % ports.len()];
                let p = self.call(port, reqwest::Method::POST, "/v1/payments", key, json!({"product_id": product, "wallet": format!("w-{i}")})).await;
                let id = p["id"].as_str().expect("id").to_owned();
                self.call(port, reqwest::Method::POST, &format!("/v1/payments/{id}/confirm"), ADMIN, json!({"tx_signature": format!("tx-{i}")})).await;
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(self.db.pool()).await.expect("query")
    }

    async fn wait_all_delivered(&self, n: i64, limit: Duration) {
        common::process::wait_delivered(&self.db, n, limit).await;
    }

    async fn each_delivered_once(&self, n: i64) {
        common::process::each_delivered_once(&self.db, n).await;
    }
}

/// The completer writes many jobs' outcomes per transaction: a worker SIGKILLed mid-batch loses
/// that transaction, and its claimed jobs must run again on another worker — within 10 s —
/// with every outcome written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_postgres), ignore = "needs HILT_TEST_DATABASE_URL")]
async fn a_worker_killed_mid_batch_loses_nothing_and_its_jobs_run_elsewhere_within_10_s() {
    const N: usize = 3_000;
    let mut d = Deployment::new().await;
    let api_port = d.api_port;
    d.start("api", "api", api_port);
    d.wait_healthy(api_port).await;
    let (key, product) = d.merchant_with_link_product().await;
    d.pay(&[api_port], &key, &product, N).await;

    let doomed = d.start("worker", "doomed", free_port());
    let started = Instant::now();
    while d.scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'").await < 300 {
        assert!(started.elapsed() < Duration::from_secs(60), "deliveries never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = d.processes[doomed].0.id();
    d.processes[doomed].0.kill().expect("SIGKILL");
    let killed_at = Instant::now();
    let _ = d.processes[doomed].0.wait();
    let held: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running' AND locked_by LIKE $1")
        .bind(format!("%-{pid}-%"))
        .fetch_all(d.db.pool())
        .await
        .expect("held jobs");
    let delivered_at_kill = d.scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'").await;
    assert!(!held.is_empty() && delivered_at_kill < N as i64, "the kill must land mid-run ({} held, {delivered_at_kill} delivered)", held.len());

    d.start("worker", "survivor", free_port());
    // Job ids are our own (`job_` + base32), safe to list inline.
    let held_list = held.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    let still_open = format!("SELECT COUNT(*) FROM jobs WHERE locked_by LIKE $1 OR (id IN ({held_list}) AND status <> 'done')");
    loop {
        let open: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(still_open.clone()))
            .bind(format!("%-{pid}-%"))
            .fetch_one(d.db.pool())
            .await
            .expect("count");
        if open == 0 {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(10), "{open} of the killed worker's {} jobs not done elsewhere 10 s after the kill", held.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the killed worker held {} jobs; all ran elsewhere {:.1?} after the kill", held.len(), killed_at.elapsed());
    d.wait_all_delivered(N as i64, Duration::from_secs(120)).await;
    d.each_delivered_once(N as i64).await;
}

/// HILT_DB_MAX_CONNECTIONS (10 by default) per process: 2 APIs and 8 workers fit a stock
/// PostgreSQL (`max_connections = 100`) under load, each inside its own budget, and not one
/// process meets a connection error. Under this load every process uses its whole budget, so
/// the ten take all 100 connections: the test holds none meanwhile (it counts the processes'
/// sockets with `ss` and follows the deliveries through the API). Runs alone (see
/// .config/nextest.toml).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_postgres), ignore = "needs HILT_TEST_DATABASE_URL")]
async fn two_apis_and_eight_workers_stay_inside_the_connection_budget() {
    const N: usize = 1_500;
    let mut d = Deployment::new().await;
    d.db.close().await;
    let api_ports = [d.api_port, free_port()];
    for (i, port) in api_ports.iter().enumerate() {
        d.start("api", &format!("hilt-api-{i}"), *port);
    }
    for i in 0..8 {
        d.start("worker", &format!("hilt-worker-{i}"), free_port());
    }
    let pids: Vec<u32> = d.processes.iter().map(|p| p.0.id()).collect();
    for port in api_ports {
        d.wait_healthy(port).await;
    }
    let (key, product) = d.merchant_with_link_product().await;

    let peak = std::sync::Mutex::new((0usize, 0usize));
    let sample = async {
        loop {
            let held = postgres_connections_of(&pids);
            if let Ok(mut p) = peak.lock() {
                *p = (p.0.max(held.iter().sum()), p.1.max(held.iter().copied().max().unwrap_or(0)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let work = async {
        d.pay(&api_ports, &key, &product, N).await;
        let started = Instant::now();
        loop {
            let queues = d.call(d.api_port, reqwest::Method::GET, "/v1/ops/queues", ADMIN, Value::Null).await;
            let done = queues["queues"].as_array().expect("queues").iter().find(|q| q["name"] == "delivery").map(|q| q["done_last_5m"].clone());
            if done == Some(json!(N)) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(180), "delivery jobs done: {done:?} of {N}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = sample => unreachable!("sampling never ends"),
    }
    let (total, most) = *peak.lock().expect("peak");
    eprintln!("peak connections: {total} in all, {most} for the busiest process");
    let logs = d.logs();
    d.processes.clear();
    d.db = hilt_shared::storage::Db::connect(&d.database, 1).await.expect("db");
    d.each_delivered_once(N as i64).await;
    assert!(total > 0, "the sampler saw the processes' connections");
    assert!(most <= 10, "a process held {most} connections; its budget is 10");
    assert!(total <= 100, "{total} connections in all");
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("too many clients") || l.contains("pool timed out")).take(5).collect();
    assert!(errors.is_empty(), "connection errors in the logs: {errors:#?}");
}

/// Each process's established TCP connections to PostgreSQL's port, from `ss`.
fn postgres_connections_of(pids: &[u32]) -> Vec<usize> {
    let out = Command::new("ss").args(["-tnpH", "state", "established", "( dport = :5432 )"]).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    pids.iter().map(|pid| text.lines().filter(|l| l.contains(&format!("pid={pid},"))).count()).collect()
}

/// Behind PgBouncer in transaction mode (`max_prepared_statements` set, PgBouncer 1.21 or
/// later), with each worker's wake listener on PostgreSQL itself: every payment is delivered
/// once and no process meets a protocol error. Needs `HILT_TEST_PGBOUNCER_URL`
/// (`postgres://user@host:port`, a pooler in front of `HILT_TEST_DATABASE_URL`'s server that
/// routes any database name) when the tests are built; skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_pgbouncer), ignore = "needs HILT_TEST_PGBOUNCER_URL")]
async fn a_deployment_behind_pgbouncer_in_transaction_mode_delivers_everything_once() {
    const N: usize = 1_000;
    let pooler = std::env::var("HILT_TEST_PGBOUNCER_URL").expect("HILT_TEST_PGBOUNCER_URL");
    let mut d = Deployment::new().await;
    let (_, name) = d.database.rsplit_once('/').expect("database name");
    d.pooled = Some(format!("{}/{name}", pooler.trim_end_matches('/')));
    let api_port = d.api_port;
    d.start("api", "hilt-api", api_port);
    for i in 0..2 {
        d.start("worker", &format!("hilt-worker-{i}"), free_port());
    }
    d.wait_healthy(api_port).await;
    let (key, product) = d.merchant_with_link_product().await;
    d.pay(&[api_port], &key, &product, N).await;
    d.wait_all_delivered(N as i64, Duration::from_secs(120)).await;
    d.each_delivered_once(N as i64).await;
    let logs = d.logs();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\"")).take(5).collect();
    assert!(errors.is_empty(), "warnings or errors behind the pooler: {errors:#?}");
}

/// The second finding of issue 12: Telegram accepts the DM but answers 20 s late, and `hilt
/// serve` is SIGKILLed during the wait. After the restart the second attempt must revoke the
/// link the lost one handed out before it sends a new one, and the count must match the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_slow_dm_never_leaves_two_working_links() {
    let tg = FakeTelegram::start().await;
    tg.add_chat(CHAT, BotRights::admin());
    tg.add_user(77);
    tg.fail_next("sendMessage", Failure::Slow(Duration::from_secs(20)));
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let env = vec![
        ("DATABASE_URL", format!("sqlite://{}", dir.path().join("hilt.db").display())),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
        ("HILT_RATE_LIMIT", "1000000".to_owned()),
        ("HILT_TELEGRAM_BOT_TOKEN", tg.token()),
        ("HILT_TELEGRAM_API_URL", tg.url()),
        ("HILT_OUTBOX_DIR", dir.path().join("outbox").display().to_string()),
        ("HILT_RECEIPT_KEY_FILE", dir.path().join("key").display().to_string()),
        ("HILT_RETRY_SCHEDULE", "500ms,1s,1s".to_owned()),
    ];
    let serve = || Killed(hilt(&["serve"], &env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, token: &str, body: Value| {
        let request = http.request(method, format!("{base}{path}")).bearer_auth(token).json(&body);
        async move {
            let r = request.send().await.expect("request");
            let status = r.status();
            let body: Value = r.json().await.expect("json");
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    let wait_up = || async {
        let started = Instant::now();
        while http.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "serve never came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    let mut first = serve();
    wait_up().await;
    let key = call(reqwest::Method::POST, "/v1/admin/merchants".into(), ADMIN, json!({"name": "Slow DM"})).await["api_key"]
        .as_str().expect("key").to_owned();
    let product = call(reqwest::Method::POST, "/v1/products".into(), &key, json!({"name": "VIP", "platform": "telegram",
        "telegram_chat_id": CHAT, "price": {"amount": "5", "currency": "USDC"}, "recurring": true, "period": "30d"})).await["id"]
        .as_str().expect("id").to_owned();
    let payment = call(reqwest::Method::POST, "/v1/payments".into(), &key, json!({"product_id": product, "buyer": {"telegram_user_id": 77}})).await;
    let payment = payment["id"].as_str().expect("id").to_owned();
    let confirmed = call(reqwest::Method::POST, format!("/v1/payments/{payment}/confirm"), ADMIN, json!({"tx_signature": "tx-slow"})).await;
    let membership = confirmed["membership_id"].as_str().expect("membership").to_owned();

    // The DM is on its way (Telegram has it, and the link in it) when the process dies.
    let started = Instant::now();
    while tg.calls("sendmessage").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "the DM never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    let lost_link = tg.invite_links(CHAT)[0].link.clone();

    let _second = serve();
    wait_up().await;
    let started = Instant::now();
    let m = loop {
        let m = call(reqwest::Method::GET, format!("/v1/memberships/{membership}"), &key, Value::Null).await;
        if m["delivery_status"] == "delivered" {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never delivered after the restart: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let attempts = call(reqwest::Method::GET, format!("/v1/memberships/{membership}/attempts"), &key, Value::Null).await;
    let attempts = attempts["data"].as_array().expect("attempts").clone();
    assert_eq!(m["delivery"]["attempts"].as_u64(), Some(attempts.len() as u64), "the count equals the attempt rows: {attempts:?}");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["error"]["code"], "worker_lost");
    assert_eq!(attempts[0]["invite_link"], lost_link.as_str(), "the lost attempt's link is on record");
    assert!(attempts[0]["invite_link_revoked_at"].is_string(), "and revoked before the second link");
    let live: Vec<_> = tg.invite_links(CHAT).into_iter().filter(|l| !l.is_revoked).collect();
    assert_eq!(live.len(), 1, "one working link, not two: {live:?}");
    assert!(!tg.join_with_link(CHAT, 78, &lost_link), "the first DM's link admits no one");
    assert!(tg.join_with_link(CHAT, 77, &live[0].link));
}

#[test]
fn every_setting_works_as_a_flag_after_the_subcommand_and_help_shows_no_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("flags.db").display());
    let out = hilt(&["migrate", "--database-url", &db], &[]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("flags.db").exists(), "the flag after the subcommand chose the database");

    let port = free_port();
    let (outbox, key) = (dir.path().join("outbox").display().to_string(), dir.path().join("key").display().to_string());
    let listen = format!("127.0.0.1:{port}");
    let args = ["serve", "--listen", &listen, "--database-url", &db, "--outbox-dir", &outbox, "--receipt-key-file", &key];
    let mut child = Killed(hilt(&args, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_healthy(&listen);
    sigterm(&child.0);
    assert!(wait_exit(&mut child.0, Duration::from_secs(30)).is_some_and(|s| s.success()));

    let secrets = [
        ("DATABASE_URL", "postgres://hilt:s3cret-db-pw@db.internal/hilt".to_owned()),
        ("HILT_ADMIN_TOKEN", "admin-secret-token-0123456789".to_owned()),
        ("HILT_ENCRYPTION_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned()),
        ("HILT_SMTP_URL", "smtps://mailer:s3cret-smtp-pw@smtp.internal".to_owned()),
    ];
    for args in [&["--help"][..], &["serve", "--help"][..], &["worker", "--help"][..]] {
        let out = hilt(args, &secrets).output().expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--listen"), "{args:?}: every setting is listed: {help}");
        for (var, value) in &secrets {
            assert!(!help.contains(value.as_str()), "{args:?} shows {var}: {help}");
        }
    }
}

#[test]
fn a_bad_smtp_url_stops_serve_before_it_says_listening() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = sqlite_serve_env(dir.path(), free_port());
    env.push(("HILT_SMTP_URL", "bogus".to_owned()));
    let out = hilt(&["serve"], &env).output().expect("run");
    assert!(!out.status.success(), "a bad SMTP URL stops the process");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("listening"), "it never said it was listening: {stdout}");
    assert!(stderr.contains("HILT_SMTP_URL"), "the message names the variable: {stderr}");
}

#[test]
fn slow_senders_are_cut_off_at_the_read_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut env = sqlite_serve_env(dir.path(), port);
    env.push(("HILT_READ_TIMEOUT", "1s".to_owned()));
    let _serve = Killed(hilt(&["serve"], &env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_healthy(&format!("127.0.0.1:{port}"));
    let connect = || {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(8))).expect("timeout");
        stream
    };

    // Half the headers, then silence: the server closes the connection.
    let mut half_headers = connect();
    half_headers.write_all(b"GET /healthz HTTP/1.1\r\nHost: hilt\r\nX-Slow: 1").expect("write");
    let sent = Instant::now();
    let mut answer = Vec::new();
    let read = half_headers.read_to_end(&mut answer);
    assert!(read.is_ok(), "the connection was held past the timeout: {read:?}");
    assert!(sent.elapsed() < Duration::from_secs(5), "closed at the 1 s read timeout, not {:?}", sent.elapsed());

    // The headers, half the body, then silence: 408 in the error shape.
    let mut half_body = connect();
    half_body
        .write_all(b"POST /v1/products HTTP/1.1\r\nHost: hilt\r\nContent-Type: application/json\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{\"name\": \"Sl")
        .expect("write");
    let sent = Instant::now();
    let mut answer = String::new();
    half_body.read_to_string(&mut answer).expect("an answer before the client gives up");
    assert!(sent.elapsed() < Duration::from_secs(5), "answered at the read timeout, not {:?}", sent.elapsed());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "in the error shape: {answer}");
}

//! Process-level behaviour, tested with processes: the `hilt` binary's start-up checks, and a
//! scaled-out deployment (`hilt api` + two `hilt worker`s on PostgreSQL + Redis) that loses a
//! worker to SIGKILL mid-burst without losing a delivery.

mod common;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use hilt_shared::{
    domain::ids::random_token,
    testing::{BotRights, Failure, FakeTelegram},
};
use serde_json::{Value, json};

const HILT: &str = env!("CARGO_BIN_EXE_hilt");
const ADMIN: &str = "process-test-admin-token";
const CHAT: i64 = -1009876543210;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `hilt` process with a clean environment (only what the test sets).
fn hilt(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(HILT);
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

/// Waits for the process to exit on its own; its exit status.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

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
    let env = [
        ("DATABASE_URL", format!("sqlite://{}", dir.path().join("hilt.db").display())),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_OUTBOX_DIR", dir.path().join("outbox").display().to_string()),
        ("HILT_RECEIPT_KEY_FILE", dir.path().join("key").display().to_string()),
    ];
    let mut child = hilt(&["serve"], &env).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let url = format!("http://127.0.0.1:{port}/healthz");
    let started = Instant::now();
    let up = loop {
        if http_ok(&url) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(up, "serve never answered /healthz");
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("serve stops within 30 s of SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut stdout).expect("read");
    assert!(stdout.contains("generated admin token"), "serve prints a generated admin token: {stdout}");
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
async fn a_worker_killed_mid_burst_loses_no_delivery() {
    let (Some(database), Some(redis)) = (common::postgres_test_database().await, std::env::var("HILT_TEST_REDIS_URL").ok()) else {
        eprintln!("needs HILT_TEST_DATABASE_URL and HILT_TEST_REDIS_URL: skipped");
        return;
    };
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
        ("REDIS_URL", redis),
        ("HILT_QUEUE_PREFIX", format!("p{}", random_token(8))),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
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
    let mut survivor = Killed(quiet(hilt(&["worker"], &env)));

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
            let (call, key, product) = (call.clone(), key.clone(), product.clone());
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

    // The survivor shuts down gracefully on SIGTERM.
    sigterm(&survivor.0);
    let status = wait_exit(&mut survivor.0, Duration::from_secs(30)).expect("worker stops within 30 s of SIGTERM");
    assert!(status.success(), "graceful exit: {status}");
}

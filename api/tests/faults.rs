//! Faults, with real processes and a PostgreSQL of the test's own (never the shared one):
//! the database stopped mid-burst, an API killed right after a commit, and a worker cut off
//! from the database in its own network namespace.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::process::{Killed, PrivatePostgres, free_port, hilt};
use futures::StreamExt;
use serde_json::{Value, json};

const ADMIN: &str = "fault-test-admin-token";

/// `hilt api` and `hilt worker` processes on one private PostgreSQL.
struct Cluster {
    pg: PrivatePostgres,
    dir: tempfile::TempDir,
    port: u16,
    processes: Vec<Killed>,
    http: reqwest::Client,
}

impl Cluster {
    fn start() -> Self {
        Self::on(PrivatePostgres::start())
    }

    fn on(pg: PrivatePostgres) -> Self {
        let this = Self { pg, dir: tempfile::tempdir().expect("dir"), port: free_port(), processes: Vec::new(), http: reqwest::Client::new() };
        let out = hilt(&["migrate"], &this.env("migrate")).output().expect("migrate");
        assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
        this
    }

    fn env(&self, name: &str) -> Vec<(&'static str, String)> {
        self.env_reaching(name, &self.pg.url())
    }

    /// The environment of a process that reaches PostgreSQL at `database`.
    fn env_reaching(&self, name: &str, database: &str) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", format!("{database}?application_name={name}")),
            ("HILT_LISTEN", format!("127.0.0.1:{}", self.port)),
            ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
            ("HILT_RATE_LIMIT", "1000000".to_owned()),
            ("HILT_OUTBOX_DIR", self.dir.path().join("outbox").display().to_string()),
            ("HILT_RECEIPT_KEY_FILE", self.dir.path().join("key").display().to_string()),
            ("HILT_LOG_FORMAT", "json".to_owned()),
        ]
    }

    fn start_process(&mut self, role: &str, name: &str) -> usize {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let child = hilt(&[role], &self.env(name)).stdout(Stdio::null()).stderr(log).spawn().expect("spawn");
        self.processes.push(Killed(child));
        self.processes.len() - 1
    }

    /// `hilt {role}` inside the network namespace, reaching PostgreSQL through its veth pair.
    fn start_in(&mut self, ns: &Netns, role: &str, name: &str) -> usize {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let database = format!("postgres://postgres@{}:{}/postgres", ns.host_addr(), self.pg.port);
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, common::process::HILT, role])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env_reaching(name, &database))
            .stdout(Stdio::null())
            .stderr(log);
        self.processes.push(Killed(cmd.spawn().expect("spawn in the namespace")));
        self.processes.len() - 1
    }

    async fn request(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("http://127.0.0.1:{}{path}", self.port)).bearer_auth(token).timeout(Duration::from_secs(30));
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.expect("the API answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.http.get(format!("http://127.0.0.1:{}/readyz", self.port)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(started.elapsed() < limit, "not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A merchant with a fallback-link product (deliveries call no provider); (key, product).
    async fn merchant(&self) -> (String, String) {
        let (_, m) = self.request(reqwest::Method::POST, "/v1/admin/merchants", ADMIN, Some(json!({"name": "Faults"}))).await;
        let key = m["api_key"].as_str().expect("key").to_owned();
        let (_, p) = self.request(reqwest::Method::POST, "/v1/products", &key, Some(json!({"name": "Link", "platform": "telegram",
            "fallback_invite_url": "https://t.me/+link", "price": {"amount": "5", "currency": "USDC"}}))).await;
        (key, p["id"].as_str().expect("product").to_owned())
    }

    /// Pays and confirms `range.len()` payments, 8 at a time; each must succeed.
    async fn pay(&self, key: &str, product: &str, range: std::ops::Range<usize>) {
        futures::stream::iter(range)
            .map(|i| async move {
                let (status, p) = self.request(reqwest::Method::POST, "/v1/payments", key, Some(json!({"product_id": product, "wallet": format!("w-{i}")}))).await;
                assert_eq!(status, 201, "{p}");
                let id = p["id"].as_str().expect("id");
                let (status, c) = self.request(reqwest::Method::POST, &format!("/v1/payments/{id}/confirm"), ADMIN, Some(json!({"tx_signature": format!("tx-{i}")}))).await;
                assert_eq!(status, 200, "{c}");
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }

    async fn db(&self) -> hilt_shared::storage::Db {
        hilt_shared::storage::Db::connect(&self.pg.url(), 1).await.expect("connect")
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(self.db().await.pool()).await.expect("query")
    }

    async fn wait_delivered(&self, n: i64, limit: Duration) {
        common::process::wait_delivered(&self.db().await, n, limit).await;
    }

    async fn each_delivered_once(&self, n: i64) {
        assert_eq!(self.scalar("SELECT COUNT(*) FROM payments WHERE status = 'confirmed'").await, n);
        common::process::each_delivered_once(&self.db().await, n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_private_postgres), ignore = "needs HILT_TEST_PG_BINDIR (initdb, pg_ctl)")]
async fn postgres_stopped_for_10_s_mid_burst_answers_503_and_loses_nothing() {
    let mut c = Cluster::start();
    c.start_process("api", "api");
    c.start_process("worker", "worker");
    c.wait_ready(Duration::from_secs(20)).await;
    let (key, product) = c.merchant().await;
    c.pay(&key, &product, 0..100).await;

    c.pg.stop();
    let stopped = Instant::now();
    // While it is down: writes are refused with 503 in the error shape, readiness is red.
    let (status, body) = c.request(reqwest::Method::POST, "/v1/payments", &key, Some(json!({"product_id": product, "wallet": "down"}))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, ready) = c.request(reqwest::Method::GET, "/readyz", ADMIN, None).await;
    assert_eq!(status, 503, "{ready}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    c.pg.resume();

    // Back: every process recovers by itself, and everything is delivered once.
    c.wait_ready(Duration::from_secs(30)).await;
    c.pay(&key, &product, 100..200).await;
    c.wait_delivered(200, Duration::from_secs(60)).await;
    c.each_delivered_once(200).await;
    assert_eq!(c.scalar("SELECT COUNT(*) FROM payments").await, 200, "the refused payment left nothing behind");
    for p in &mut c.processes {
        assert!(p.0.try_wait().expect("status").is_none(), "no process died of the outage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_private_postgres), ignore = "needs HILT_TEST_PG_BINDIR (initdb, pg_ctl)")]
async fn an_api_killed_right_after_its_commits_loses_no_delivery() {
    let mut c = Cluster::start();
    let api = c.start_process("api", "api");
    c.wait_ready(Duration::from_secs(20)).await;
    let (key, product) = c.merchant().await;
    // No worker runs yet: the confirmed payments exist only as committed rows.
    c.pay(&key, &product, 0..50).await;
    c.processes[api].0.kill().expect("SIGKILL the API");
    c.start_process("worker", "worker");
    c.wait_delivered(50, Duration::from_secs(30)).await;
    c.each_delivered_once(50).await;
}

/// A keyed confirm, `(status, body, replayed)`; `None` when the client gave up or the API died.
async fn keyed_confirm(c: &Cluster, payment: &str, key: &str, timeout: Duration) -> Option<(u16, Value, bool)> {
    let r = c.http.post(format!("http://127.0.0.1:{}/v1/payments/{payment}/confirm", c.port))
        .bearer_auth(ADMIN)
        .header("idempotency-key", key)
        .json(&json!({"tx_signature": format!("tx-{payment}")}))
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    Some((status, r.json().await.unwrap_or(Value::Null), replayed))
}

/// The claim of an `Idempotency-Key` shares its request's transaction: a request that dies (its
/// client gives up, or the API is SIGKILLed, while it waits on a row lock) leaves nothing and its
/// key runs afresh; one that committed replays its response after the API is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_private_postgres), ignore = "needs HILT_TEST_PG_BINDIR (initdb, pg_ctl)")]
async fn a_keyed_request_that_dies_leaves_its_key_free_and_one_that_committed_replays() {
    let mut c = Cluster::start();
    let api = c.start_process("api", "api");
    c.wait_ready(Duration::from_secs(20)).await;
    let (key, product) = c.merchant().await;
    let mut payments = Vec::new();
    for i in 0..3 {
        let (status, p) = c.request(reqwest::Method::POST, "/v1/payments", &key, Some(json!({"product_id": product, "wallet": format!("w-{i}")}))).await;
        assert_eq!(status, 201, "{p}");
        payments.push(p["id"].as_str().expect("id").to_owned());
    }

    // Hold the rows the confirms must update, so they stall inside their transactions.
    let db = c.db().await;
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0").execute(&mut *lock).await.expect("no idle timeout");
    sqlx::query("SELECT id FROM payments WHERE id IN ($1, $2) FOR UPDATE")
        .bind(&payments[0])
        .bind(&payments[1])
        .execute(&mut *lock)
        .await
        .expect("lock");
    // The client gives up after 2 s; a duplicate meanwhile is told the first is in progress.
    assert!(keyed_confirm(&c, &payments[0], "gave-up", Duration::from_secs(2)).await.is_none(), "stalled on the lock");
    let (status, body, _) = keyed_confirm(&c, &payments[0], "gave-up", Duration::from_secs(30)).await.expect("answer");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    // The API is SIGKILLed while a confirm waits.
    let api_pid = c.processes[api].0.id().to_string();
    let killed = keyed_confirm(&c, &payments[1], "killed", Duration::from_secs(30));
    let kill = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let out = std::process::Command::new("kill").args(["-KILL", &api_pid]).output().expect("kill");
        assert!(out.status.success(), "SIGKILL the API");
    };
    let (answer, ()) = tokio::join!(killed, kill);
    assert!(answer.is_none(), "the API died before answering: {answer:?}");
    lock.commit().await.expect("release");
    let _ = c.processes[api].0.wait();

    c.start_process("api", "api-2");
    c.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(c.scalar("SELECT COUNT(*) FROM memberships").await, 0, "neither stalled confirm committed anything");
    assert_eq!(c.scalar("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key IN ('gave-up', 'killed')").await, 0, "nor kept its key");
    for (payment, idem) in [(&payments[0], "gave-up"), (&payments[1], "killed")] {
        let (status, body, replayed) = keyed_confirm(&c, payment, idem, Duration::from_secs(30)).await.expect("answer");
        assert_eq!((status, replayed), (200, false), "the same key runs afresh at once: {body}");
        assert_eq!(body["status"], "confirmed", "{body}");
    }

    // A confirm that committed is replayed from its key after the API is killed.
    let (status, first, _) = keyed_confirm(&c, &payments[2], "committed", Duration::from_secs(30)).await.expect("answer");
    assert_eq!(status, 200, "{first}");
    let api_2 = c.processes.len() - 1;
    c.processes[api_2].0.kill().expect("SIGKILL the API");
    let _ = c.processes[api_2].0.wait();
    c.start_process("api", "api-3");
    c.wait_ready(Duration::from_secs(20)).await;
    let (status, replay, replayed) = keyed_confirm(&c, &payments[2], "committed", Duration::from_secs(30)).await.expect("answer");
    assert_eq!((status, replayed), (200, true));
    assert_eq!(replay, first, "the saved response");
    assert_eq!(c.scalar("SELECT COUNT(*) FROM memberships").await, 3, "one membership per payment");
}

/// A network namespace joined to the host by a veth pair: a process inside reaches the host
/// only at `host_addr`, so taking the host's end of the pair down cuts it off (its packets go
/// nowhere, as in a real partition: no reset, no error, just silence). Removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    subnet: u32,
}

impl Netns {
    fn create() -> Self {
        let pid = std::process::id();
        let this = Self { name: format!("hilt{pid}"), host_if: format!("hh{pid}"), subnet: 20 + pid % 200 };
        let ns_if = format!("hn{pid}");
        let (host, inside) = (format!("{}/24", this.host_addr()), format!("10.213.{}.2/24", this.subnet));
        for args in [
            vec!["netns", "add", &this.name],
            vec!["link", "add", &this.host_if, "type", "veth", "peer", "name", &ns_if],
            vec!["link", "set", &ns_if, "netns", &this.name],
            vec!["addr", "add", &host, "dev", &this.host_if],
            vec!["link", "set", &this.host_if, "up"],
            vec!["netns", "exec", &this.name, "ip", "addr", "add", &inside, "dev", &ns_if],
            vec!["netns", "exec", &this.name, "ip", "link", "set", &ns_if, "up"],
            vec!["netns", "exec", &this.name, "ip", "link", "set", "lo", "up"],
        ] {
            let out = std::process::Command::new("ip").args(&args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        this
    }

    fn host_addr(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    fn set_link(&self, state: &str) {
        let out = std::process::Command::new("ip").args(["link", "set", &self.host_if, state]).output().expect("ip");
        assert!(out.status.success(), "ip link set {state}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(hilt_test_private_postgres, hilt_test_netns)),
    ignore = "needs HILT_TEST_PG_BINDIR and HILT_TEST_NETNS=1 (root, ip netns)"
)]
async fn a_worker_cut_off_for_30_s_finishes_nothing_twice_and_rejoins() {
    let ns = Netns::create();
    let mut c = Cluster::on(PrivatePostgres::start_listening_also(&[&ns.host_addr()]));
    c.start_process("api", "api");
    let a = c.start_process("worker", "worker-a");
    c.start_in(&ns, "worker", "worker-b");
    c.wait_ready(Duration::from_secs(20)).await;
    let (key, product) = c.merchant().await;
    let a_pid = c.processes[a].0.id();
    let cut_off_worker = {
        let started = Instant::now();
        loop {
            let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM workers WHERE stopped_at IS NULL")
                .fetch_all(c.db().await.pool())
                .await
                .expect("workers");
            if let Some(b) = ids.into_iter().find(|id| !id.contains(&format!("-{a_pid}-"))) {
                break b;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the namespaced worker never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // A burst; the link is cut while the namespaced worker holds claimed jobs.
    let burst = c.pay(&key, &product, 0..1_500);
    let cut = async {
        let started = Instant::now();
        loop {
            let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND locked_by = $1")
                .bind(&cut_off_worker)
                .fetch_one(c.db().await.pool())
                .await
                .expect("held");
            if held > 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the namespaced worker never claimed a job");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ns.set_link("down");
        Instant::now()
    };
    let ((), cut_at) = tokio::join!(burst, cut);

    // Cut off, its jobs are reclaimed: the other worker delivers every payment meanwhile.
    c.wait_delivered(1_500, Duration::from_secs(25)).await;
    assert!(cut_at.elapsed() < Duration::from_secs(30), "delivered while the worker was still cut off");
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed())).await;
    ns.set_link("up");

    // Back, it finishes nothing twice...
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.each_delivered_once(1_500).await;
    // ...and rejoins: with the other worker stopped, it alone delivers the next payments.
    common::process::sigterm(&c.processes[a].0);
    assert!(common::process::wait_exit(&mut c.processes[a].0, Duration::from_secs(30)).is_some_and(|s| s.success()));
    c.pay(&key, &product, 1_500..1_600).await;
    c.wait_delivered(1_600, Duration::from_secs(60)).await;
    c.each_delivered_once(1_600).await;
    let by_it: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivery_attempts WHERE outcome = 'succeeded' AND worker_id = $1 AND started_at > $2")
        .bind(&cut_off_worker)
        .bind(hilt_shared::clock::now_ms() - 120_000)
        .fetch_one(c.db().await.pool())
        .await
        .expect("count");
    assert!(by_it >= 100, "the rejoined worker delivered the last 100 ({by_it})");
}

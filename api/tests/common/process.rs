//! Processes for process-level tests: the `hilt` binary with a clean environment, killed when
//! dropped.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    process::{Child, Command},
    time::{Duration, Instant},
};

pub const HILT: &str = env!("CARGO_BIN_EXE_hilt");
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `hilt` process with a clean environment (only what the test sets).
pub fn hilt(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(HILT);
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sigterm(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

/// Waits for the process to exit on its own; its exit status.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}


/// A PostgreSQL of the test's own, for tests that stop it (never the shared one): `initdb` and
/// `pg_ctl` from `HILT_TEST_PG_BINDIR` (set when the tests are built), trust auth, on a free
/// port. Stopped and removed when dropped.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bindir: std::path::PathBuf,
    pub port: u16,
    /// `listen_addresses`: loopback, and any address given to `start_listening_also`.
    listen: String,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::start_listening_also(&[])
    }

    /// Also listens on `addresses` (which must exist, e.g. a veth's), trusting every client:
    /// for processes in another network namespace.
    pub fn start_listening_also(addresses: &[&str]) -> Self {
        let Some(bindir) = option_env!("HILT_TEST_PG_BINDIR") else { panic!("HILT_TEST_PG_BINDIR was not set when the tests were built") };
        let bindir = std::path::PathBuf::from(bindir);
        let dir = tempfile::tempdir().expect("dir");
        let listen = std::iter::once("127.0.0.1").chain(addresses.iter().copied()).collect::<Vec<_>>().join(",");
        let this = Self { dir, bindir, port: free_port(), listen };
        if running_as_root() {
            // PostgreSQL refuses to run as root: its files belong to the `postgres` user.
            let ok = Command::new("chown").arg("-R").arg("postgres").arg(this.dir.path()).status().expect("chown");
            assert!(ok.success(), "chown the cluster directory to postgres");
        }
        let data = this.data();
        let out = this.as_owner("initdb").args(["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]).output().expect("initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        if !addresses.is_empty() {
            let hba = this.dir.path().join("data").join("pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            rules.push_str("host all all 0.0.0.0/0 trust\n");
            std::fs::write(&hba, rules).expect("pg_hba.conf");
        }
        this.resume();
        this
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: connections are cut, nothing is lost).
    pub fn stop(&self) {
        let out = self.as_owner("pg_ctl").args(["stop", "-D", &self.data(), "-m", "fast", "-w"]).output().expect("pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts it (again) on the same port, and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!("-p {} -k {} -c listen_addresses='{}' -c fsync=off", self.port, self.dir.path().display(), self.listen);
        let log = self.dir.path().join("server.log").display().to_string();
        let out = self.as_owner("pg_ctl").args(["start", "-D", &self.data(), "-o", &options, "-l", &log, "-w"]).output().expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start: {} {}", String::from_utf8_lossy(&out.stderr), std::fs::read_to_string(&log).unwrap_or_default());
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_owner(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        if running_as_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.as_owner("pg_ctl").args(["stop", "-D", &self.data(), "-m", "immediate", "-w"]).output();
    }
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Waits until `n` memberships are delivered, or fails the test after `limit`.
pub async fn wait_delivered(db: &hilt_shared::storage::Db, n: i64, limit: Duration) {
    let started = Instant::now();
    loop {
        let delivered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE delivery_status = 'delivered'")
            .fetch_one(db.pool())
            .await
            .expect("count");
        if delivered == n {
            return;
        }
        assert!(started.elapsed() < limit, "only {delivered} of {n} delivered after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every membership has exactly one succeeded attempt and one `delivery.succeeded` event:
/// nothing lost, nothing written twice.
pub async fn each_delivered_once(db: &hilt_shared::storage::Db, n: i64) {
    let count = |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.expect("count") };
    assert_eq!(count("SELECT COUNT(*) FROM delivery_attempts WHERE outcome = 'succeeded'").await, n, "one succeeded attempt each");
    assert_eq!(count("SELECT COUNT(DISTINCT membership_id) FROM delivery_attempts WHERE outcome = 'succeeded'").await, n);
    assert_eq!(count("SELECT COUNT(*) FROM events WHERE type = 'delivery.succeeded'").await, n, "one event each");
}

//! Tests that need PostgreSQL are compiled as ignored (reported as skipped, never as passed)
//! unless `HILT_TEST_DATABASE_URL` is set when they are built; the PgBouncer test also needs
//! `HILT_TEST_PGBOUNCER_URL`; the fault tests that stop a PostgreSQL of their own need its
//! server binaries in `HILT_TEST_PG_BINDIR` (`initdb`, `pg_ctl`), and the partition test also
//! `HILT_TEST_NETNS=1` (root, `ip netns`); the /ops browser test needs `HILT_TEST_CHROMEDRIVER`
//! (Debian's chromedriver, with chromium beside it).

fn main() {
    // PostgreSQL tests, and the one that also needs a PgBouncer in front of it.
    for (cfg, var) in [("hilt_test_postgres", "HILT_TEST_DATABASE_URL"), ("hilt_test_pgbouncer", "HILT_TEST_PGBOUNCER_URL")] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={var}");
        if std::env::var(var).is_ok_and(|url| !url.is_empty()) && std::env::var("HILT_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    // The provider rate limits on Redis (the store when REDIS_URL is set).
    println!("cargo::rustc-check-cfg=cfg(hilt_test_redis)");
    println!("cargo::rerun-if-env-changed=HILT_TEST_REDIS_URL");
    if std::env::var("HILT_TEST_REDIS_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=hilt_test_redis");
    }
    // The partition test cuts a worker off in a network namespace (root, `ip netns`).
    println!("cargo::rustc-check-cfg=cfg(hilt_test_netns)");
    println!("cargo::rerun-if-env-changed=HILT_TEST_NETNS");
    if std::env::var("HILT_TEST_NETNS").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=hilt_test_netns");
    }
    // The /ops browser test drives Debian's chromium through this chromedriver.
    println!("cargo::rustc-check-cfg=cfg(hilt_test_browser)");
    println!("cargo::rerun-if-env-changed=HILT_TEST_CHROMEDRIVER");
    if std::env::var("HILT_TEST_CHROMEDRIVER").is_ok_and(|path| std::path::Path::new(&path).exists()) {
        println!("cargo::rustc-cfg=hilt_test_browser");
    }
    println!("cargo::rustc-check-cfg=cfg(hilt_test_private_postgres)");
    println!("cargo::rerun-if-env-changed=HILT_TEST_PG_BINDIR");
    if std::env::var("HILT_TEST_PG_BINDIR").is_ok_and(|dir| std::path::Path::new(&dir).join("initdb").exists()) {
        println!("cargo::rustc-cfg=hilt_test_private_postgres");
    }
}

//! Tests that need PostgreSQL are compiled as ignored (reported as skipped, never as passed)
//! unless `HILT_TEST_DATABASE_URL` is set when they are built.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hilt_test_postgres)");
    println!("cargo::rerun-if-env-changed=HILT_TEST_DATABASE_URL");
    if std::env::var("HILT_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=hilt_test_postgres");
    }
}

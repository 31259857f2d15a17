//! The operations console in a real browser: Debian's chromium, headless, driven through
//! chromedriver (WebDriver) against a `hilt serve` process delivering to the fake Telegram. An
//! on-call engineer finds a failed delivery, retries it and sees it delivered, retries the rest
//! in bulk after a confirmation that states the count, and a form posted from another site is
//! refused. Screenshots go to `HILT_TEST_ARTIFACTS` (default `target/test-artifacts`).

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::process::{Killed, free_port, hilt};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use hilt_shared::testing::{BotRights, FakeTelegram};
use serde_json::{Value, json};

const ADMIN: &str = "browser-test-admin-token";
const CHAT: i64 = -1005550001111;
const WAIT: Duration = Duration::from_secs(30);

struct Console {
    base: String,
    http: reqwest::Client,
    artifacts: std::path::PathBuf,
}

impl Console {
    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let r = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await.expect("request");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn delivery_status(&self, membership: &str, key: &str) -> String {
        self.call(reqwest::Method::GET, &format!("/v1/memberships/{membership}"), key, Value::Null).await["delivery_status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn screenshot(&self, browser: &Client, name: &str) {
        let png = browser.screenshot().await.expect("screenshot");
        std::fs::write(self.artifacts.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

async fn start_browser(driver_port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            // This machine's network is closed: without these, chromium keeps calling home.
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
        }),
    );
    let mut last = None;
    for _ in 0..50 {
        match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{driver_port}")).await {
            Ok(client) => return client,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("chromedriver did not start a session: {last:?}");
}

/// The page's visible text, once it contains `wanted` (the page refreshes itself meanwhile).
async fn wait_for_text(browser: &Client, wanted: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let text = browser.find(Locator::Css("body")).await.expect("body").text().await.unwrap_or_default();
        if text.contains(wanted) {
            return text;
        }
        assert!(started.elapsed() < WAIT, "the page never showed {wanted:?}: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(hilt_test_browser), ignore = "needs HILT_TEST_CHROMEDRIVER (Debian chromium and chromium-driver)")]
async fn an_on_call_engineer_retries_failed_deliveries_from_the_browser_and_another_site_cannot() {
    let artifacts = std::env::var("HILT_TEST_ARTIFACTS").map_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts"), Into::into);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let tg = FakeTelegram::start().await;
    tg.add_chat(CHAT, BotRights::admin());
    // Three buyers who blocked the bot: their deliveries fail and wait for a person.
    for user in [1, 2, 3] {
        tg.add_user(user);
        tg.block_bot(user);
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let env = vec![
        ("DATABASE_URL", format!("sqlite://{}", dir.path().join("hilt.db").display())),
        ("HILT_LISTEN", format!("127.0.0.1:{port}")),
        ("HILT_ADMIN_TOKEN", ADMIN.to_owned()),
        ("HILT_TELEGRAM_BOT_TOKEN", tg.token()),
        ("HILT_TELEGRAM_API_URL", tg.url()),
        ("HILT_OUTBOX_DIR", dir.path().join("outbox").display().to_string()),
        ("HILT_RECEIPT_KEY_FILE", dir.path().join("key").display().to_string()),
    ];
    let _serve = Killed(hilt(&["serve"], &env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("serve"));
    let console = Console { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), artifacts };
    for _ in 0..100 {
        if console.http.get(format!("{}/healthz", console.base)).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = console.call(reqwest::Method::POST, "/v1/admin/merchants", ADMIN, json!({"name": "Browser"})).await["api_key"].as_str().expect("key").to_owned();
    let product = console
        .call(reqwest::Method::POST, "/v1/products", &key, json!({"name": "VIP", "platform": "telegram", "telegram_chat_id": CHAT,
            "price": {"amount": "5", "currency": "USDC"}}))
        .await["id"]
        .as_str()
        .expect("product")
        .to_owned();
    let mut memberships = Vec::new();
    for user in [1, 2, 3] {
        let payment = console.call(reqwest::Method::POST, "/v1/payments", &key, json!({"product_id": product, "wallet": format!("W{user}"),
            "buyer": {"telegram_user_id": user}})).await["id"].as_str().expect("payment").to_owned();
        let confirmed = console.call(reqwest::Method::POST, &format!("/v1/payments/{payment}/confirm"), ADMIN, json!({"tx_signature": format!("tx-{user}")})).await;
        memberships.push(confirmed["membership_id"].as_str().expect("membership").to_owned());
    }
    for m in &memberships {
        for _ in 0..300 {
            if console.delivery_status(m, &key).await == "manual_review" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(console.delivery_status(m, &key).await, "manual_review");
    }

    let driver_port = free_port();
    let driver = std::env::var("HILT_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let _driver = Killed(Command::new(driver).arg(format!("--port={driver_port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("chromedriver"));
    let profile = tempfile::tempdir().expect("profile");
    let browser = start_browser(driver_port, profile.path()).await;

    // The overview, signed in with the admin token as the Basic password (cached by the browser).
    browser.goto(&format!("http://ops:{ADMIN}@127.0.0.1:{port}/ops")).await.expect("open /ops");
    wait_for_text(&browser, "Manual review (3)").await;
    console.screenshot(&browser, "ops-overview").await;

    // One failed delivery: its timeline says why; the buyer unblocks the bot; retry, delivered.
    browser.find(Locator::Css(&format!("a[href='/ops/memberships/{}']", memberships[0]))).await.expect("manual review row links").click().await.expect("click");
    wait_for_text(&browser, "user_blocked_bot").await;
    tg.unblock_bot(1);
    browser.find(Locator::XPath("//button[text()='retry delivery']")).await.expect("retry button").click().await.expect("click");
    browser.accept_alert().await.expect("the action asks for confirmation first");
    wait_for_text(&browser, "Delivery queued now").await;
    browser.wait().at_most(WAIT).for_element(Locator::Css("#live span.tag.delivered")).await.expect("the page shows it delivered without a reload");
    console.screenshot(&browser, "ops-membership-delivered").await;
    assert_eq!(console.delivery_status(&memberships[0], &key).await, "delivered");

    // The other two in bulk, from the queue page's dead jobs (the first one's dead job too: it
    // finds the membership delivered and does nothing), after a confirmation with the count.
    tg.unblock_bot(2);
    tg.unblock_bot(3);
    browser.goto(&format!("http://127.0.0.1:{port}/ops/queues/delivery?status=dead")).await.expect("queue page");
    wait_for_text(&browser, "3 matching job(s)").await;
    console.screenshot(&browser, "ops-queue-dead").await;
    browser.find(Locator::LinkText("Retry all matching…")).await.expect("bulk retry link").click().await.expect("click");
    wait_for_text(&browser, "Retry 3 job(s)?").await;
    console.screenshot(&browser, "ops-bulk-confirm").await;
    browser.find(Locator::Css("#confirm")).await.expect("confirm button").click().await.expect("click");
    wait_for_text(&browser, "Retried 3 job(s).").await;
    for m in &memberships[1..] {
        for _ in 0..300 {
            if console.delivery_status(m, &key).await == "delivered" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(console.delivery_status(m, &key).await, "delivered");
    }

    // On a phone: the tables stack into cards, nothing scrolls sideways.
    browser.set_window_size(390, 844).await.expect("phone size");
    browser.goto(&format!("http://127.0.0.1:{port}/ops")).await.expect("overview");
    wait_for_text(&browser, "Queues").await;
    let overflow = browser.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![]).await.expect("measure");
    console.screenshot(&browser, "ops-phone").await;
    assert!(overflow.as_i64().is_some_and(|px| px <= 0), "the page is wider than the phone by {overflow} px");
    browser.set_window_size(1280, 1000).await.expect("desktop size");

    // Another site's auto-submitting form: the browser sends the cached credentials, Hilt refuses.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let evil_port = evil.local_addr().expect("addr").port();
    let form = format!(
        "<!doctype html><form method=post action='http://127.0.0.1:{port}/ops/queues/webhook/pause'>\
         <input type=hidden name=csrf value=guess></form><script>document.forms[0].submit()</script>"
    );
    let site = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(form) }));
    tokio::spawn(async move { axum::serve(evil, site).await });
    browser.goto(&format!("http://localhost:{evil_port}/")).await.expect("the other site");
    wait_for_text(&browser, "forbidden").await;
    console.screenshot(&browser, "ops-cross-site-refused").await;
    let queues = console.call(reqwest::Method::GET, "/v1/ops/queues", ADMIN, Value::Null).await;
    assert!(queues["queues"].as_array().expect("queues").iter().any(|q| q["name"] == "webhook" && q["paused"] == false), "the webhook queue still runs");

    let audit = console.call(reqwest::Method::GET, "/v1/ops/audit", ADMIN, Value::Null).await;
    let actions: Vec<&str> = audit["data"].as_array().expect("audit").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["jobs.retry", "membership.retry_delivery"], "both actions, nothing from the other site");
    browser.close().await.expect("close");
}

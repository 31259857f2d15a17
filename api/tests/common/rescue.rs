//! In-process delivery rescue: the real job engine on the test database (SQLite, or
//! PostgreSQL when `HILT_TEST_DATABASE_URL` is set), in-process workers, and our fake Telegram
//! and Discord servers driven through the real clients.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use hilt_shared::{
    domain::ids::random_token,
    providers::Providers,
    testing::{BotRights, FakeDiscord, FakeTelegram},
};
use hilt_worker::{JobContext, Tuning};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::TestApp;

pub const CHAT: i64 = -1001234567890;
pub const GUILD: &str = "81384788765712384";
pub const ROLE: &str = "41771983423143936";

pub struct Rescue {
    pub app: TestApp,
    pub tg: FakeTelegram,
    pub dc: FakeDiscord,
    pub key: String,
    pub ctx: Arc<JobContext>,
    workers: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    pub outbox: tempfile::TempDir,
}

impl Rescue {
    pub async fn start(app: TestApp) -> Self {
        let tg = FakeTelegram::start().await;
        let dc = FakeDiscord::start().await;
        tg.add_chat(CHAT, BotRights::admin());
        dc.add_guild(GUILD);
        dc.add_role(GUILD, ROLE, 1);
        let outbox = tempfile::tempdir().expect("outbox dir");
        let mut config = (*app.config).clone();
        config.telegram_bot_token = Some(tg.token());
        config.telegram_api_url = tg.url();
        config.discord_bot_token = Some(dc.token());
        config.discord_api_url = dc.url();
        config.outbox_dir = outbox.path().to_path_buf();
        let config = Arc::new(config);
        let providers = Providers::from_config_with_timeout(&config, Duration::from_secs(3)).expect("providers");
        let ctx = Arc::new(JobContext::new(app.db.clone(), config.clone(), providers, fast_tuning(&config)));
        let key = app.merchant().await;
        Self { app, tg, dc, key, ctx, workers: Vec::new(), outbox }
    }

    /// Workers started from now on pace their provider calls through `limiter` at the
    /// configured rates (each worker's clients share only the limiter's store).
    pub fn use_rate_limits(&mut self, limiter: &hilt_shared::ratelimit::RateLimits) {
        let providers = self.ctx.providers.clone().with_rate_limits(limiter, &self.ctx.config);
        self.ctx = Arc::new(JobContext::new(self.ctx.db.clone(), self.ctx.config.clone(), providers, self.ctx.tuning.clone()));
    }

    /// Workers started from now on use these timings.
    pub fn set_tuning(&mut self, tuning: Tuning) {
        self.ctx = Arc::new(JobContext::new(self.ctx.db.clone(), self.ctx.config.clone(), self.ctx.providers.clone(), tuning));
    }

    /// Starts one more in-process worker (its own worker id, same database).
    pub fn start_worker(&mut self) {
        let ctx = Arc::new(JobContext::new(
            self.ctx.db.clone(),
            self.ctx.config.clone(),
            self.ctx.providers.clone(),
            self.ctx.tuning.clone(),
        ));
        let (tx, mut rx) = watch::channel(false);
        let handle = tokio::spawn(hilt_worker::run_with(ctx, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        self.workers.push((tx, handle));
    }

    pub async fn stop_workers(&mut self) {
        for (tx, handle) in self.workers.drain(..) {
            let _ = tx.send(true);
            handle.await.expect("worker task").expect("worker stops cleanly");
        }
    }

    pub async fn product(&self, body: Value) -> String {
        let r = self.app.post("/v1/products", &self.key, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    pub async fn telegram_product(&self) -> String {
        self.product(json!({"name": "VIP", "platform": "telegram", "telegram_chat_id": CHAT,
            "price": {"amount": "10", "currency": "USDC"}, "recurring": true, "period": "30d"})).await
    }

    pub async fn discord_product(&self) -> String {
        self.product(json!({"name": "Role", "platform": "discord", "discord_guild_id": GUILD, "discord_role_id": ROLE,
            "price": {"amount": "10", "currency": "USDC"}})).await
    }

    /// A confirmed payment; returns (payment id, membership id).
    pub async fn paid(&self, product: &str, buyer: Value) -> (String, String) {
        let r = self.app.post("/v1/payments", &self.key, json!({"product_id": product, "wallet": format!("W{}", random_token(8)), "buyer": buyer})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let payment = r.body["id"].as_str().expect("id").to_owned();
        let c = self.app.confirm(&payment, &format!("tx-{}", random_token(12))).await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.body);
        (payment, c.body["membership_id"].as_str().expect("membership").to_owned())
    }

    pub async fn membership(&self, id: &str) -> Value {
        self.app.get(&format!("/v1/memberships/{id}"), &self.key).await.body
    }

    pub async fn attempts(&self, id: &str) -> Vec<Value> {
        let r = self.app.get(&format!("/v1/memberships/{id}/attempts"), &self.key).await;
        assert_eq!(r.status, StatusCode::OK);
        r.body["data"].as_array().expect("data").clone()
    }

    /// Polls the membership until `done` holds (or fails the test after 30 s).
    pub async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            let m = self.membership(id).await;
            if done(&m) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("membership {id} never became {what}: {}", self.membership(id).await);
    }

    /// Polls `check` until it gives a value (or fails the test after 30 s, saying `what`).
    pub async fn wait_until<T, F: std::future::Future<Output = Option<T>>>(&self, what: &str, check: impl Fn() -> F) -> T {
        for _ in 0..600 {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: never within 30 s");
    }

    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, status, |m| m["delivery_status"] == status).await
    }
}

pub fn fast_tuning(config: &hilt_shared::config::Config) -> Tuning {
    Tuning {
        lease: Duration::from_secs(3),
        poll_backstop: Duration::from_millis(100),
        sweep_every: Duration::from_millis(200),
        owed_scan_every: Duration::from_secs(1),
        lock_wait: Duration::from_millis(100),
        retry_schedule: "100ms,100ms,100ms".split(',').map(|p| p.parse().expect("period")).collect(),
        proof_email_schedule: "100ms,100ms,100ms".split(',').map(|p| p.parse().expect("period")).collect(),
        reminder_schedule: "100ms,100ms,100ms".split(',').map(|p| p.parse().expect("period")).collect(),
        webhook_schedule: "100ms,100ms,100ms".split(',').map(|p| p.parse().expect("period")).collect(),
        ..Tuning::from_config(config)
    }
}


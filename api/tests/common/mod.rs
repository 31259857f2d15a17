//! Test harness: the real router over a real database of its own (a temp SQLite file, or a
//! fresh PostgreSQL database when `HILT_TEST_DATABASE_URL` is set).
#![allow(dead_code)]

pub mod process;
pub mod rescue;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use hilt_api::state::AppState;
use hilt_shared::{config::Config, domain::ids::random_token, providers::Providers, ratelimit::RateLimits, signing::ReceiptSigner, storage::Db};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token-0123456789";
/// The tests' `HILT_ENCRYPTION_KEY`: 32 bytes, base64.
pub const ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub struct TestApp {
    pub router: Router,
    pub db: Db,
    pub config: Arc<Config>,
    pub signer: Arc<ReceiptSigner>,
    _dir: Option<tempfile::TempDir>,
}

/// Runs one test body on SQLite, and again on PostgreSQL when it is configured.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $app = common::TestApp::sqlite().await;
                $body
            }

            #[tokio::test]
            #[cfg_attr(not(hilt_test_postgres), ignore = "needs HILT_TEST_DATABASE_URL")]
            async fn postgres() {
                let $app = common::TestApp::postgres().await.expect("HILT_TEST_DATABASE_URL is set");
                $body
            }
        }
    };
}

pub struct Response {
    pub status: StatusCode,
    pub body: Value,
    pub headers: axum::http::HeaderMap,
}

impl TestApp {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hilt.db").display());
        Self::with_url(&url, Some(dir)).await
    }

    pub async fn postgres() -> Option<Self> {
        let url = postgres_test_database().await?;
        Some(Self::with_url(&url, None).await)
    }

    async fn with_url(url: &str, dir: Option<tempfile::TempDir>) -> Self {
        let db = Db::connect(url, 10).await.expect("connect test database");
        db.migrate().await.expect("migrate test database");
        let mut config = Config::for_database(url);
        config.admin_token = Some(ADMIN.into());
        config.encryption_key = Some(ENCRYPTION_KEY.parse().expect("test key"));
        // Tests fire requests far faster than any client; the limits have their own test.
        config.rate_limit = 1_000_000;
        config.retry_schedule = hilt_shared::config::Schedule(vec!["10ms".parse().expect("period"); 3]);
        let config = Arc::new(config);
        // Each app signs with its own key file, created on first use like in production.
        let key_dir = tempfile::tempdir().expect("key dir");
        let signer = ReceiptSigner::load_or_create(&key_dir.path().join("receipt-key")).expect("receipt key");
        signer.publish(&db).await.expect("publish receipt key");
        let signer = Arc::new(signer);
        let providers = Providers::from_config_with_timeout(&config, Duration::from_secs(3)).expect("providers");
        let state = AppState { db: db.clone(), config: config.clone(), admin_token: ADMIN.into(), receipt_signer: signer.clone(), providers, rate_limits: RateLimits::database(&db) };
        Self { router: hilt_api::router(state), db, config, signer, _dir: dir }
    }

    /// Rebuilds the router with other provider clients (delivery diagnostics ask them live).
    pub fn use_providers(&mut self, providers: Providers) {
        let state = AppState {
            db: self.db.clone(),
            config: self.config.clone(),
            admin_token: ADMIN.into(),
            receipt_signer: self.signer.clone(),
            providers,
            rate_limits: RateLimits::database(&self.db),
        };
        self.router = hilt_api::router(state);
    }

    pub async fn raw(&self, request: Request<Body>) -> Response {
        let response = self.router.clone().oneshot(request).await.expect("router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Response { status, body, headers }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(builder.body(body).expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    /// A new merchant; returns its API key.
    pub async fn merchant(&self) -> String {
        let r = self.post("/v1/admin/merchants", ADMIN, json!({ "name": "Acme" })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["api_key"].as_str().expect("api_key").to_owned()
    }

    pub async fn telegram_product(&self, key: &str) -> String {
        let r = self
            .post(
                "/v1/products",
                key,
                json!({
                    "name": "VIP group", "platform": "telegram", "telegram_chat_id": -1001234567890i64,
                    "price": { "amount": "9.99", "currency": "USDC" }, "recurring": true, "period": "30d"
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    pub async fn payment(&self, key: &str, product_id: &str, telegram_user_id: i64) -> String {
        let r = self
            .post(
                "/v1/payments",
                key,
                json!({ "product_id": product_id, "wallet": "WaLLet111", "buyer": { "telegram_user_id": telegram_user_id, "email": "buyer@example.com" } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    pub async fn confirm(&self, payment_id: &str, tx: &str) -> Response {
        self.post(&format!("/v1/payments/{payment_id}/confirm"), ADMIN, json!({ "tx_signature": tx })).await
    }

    pub async fn count(&self, sql: &'static str, arg: &str) -> i64 {
        sqlx::query_scalar(sql).bind(arg).fetch_one(self.db.pool()).await.expect("count query")
    }
}

/// Creates a fresh database on the server named by `HILT_TEST_DATABASE_URL`.
pub async fn postgres_test_database() -> Option<String> {
    let base = std::env::var("HILT_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())?;
    sqlx::any::install_default_drivers();
    let name = format!("hilt_t_{}", random_token(12).to_lowercase());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.expect("connect HILT_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create test database");
    let (server, _) = base.rsplit_once('/').expect("database url has a path");
    Some(format!("{server}/{name}"))
}

pub fn assert_error(r: &Response, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["error"]["code"], code, "body: {}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message missing: {}", r.body);
}

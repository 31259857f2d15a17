use std::sync::Arc;

use hilt_shared::{config::Config, providers::Providers, signing::ReceiptSigner, storage::Db};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub admin_token: Arc<str>,
    /// The current receipt signing key (`HILT_RECEIPT_KEY_FILE`), loaded once at start.
    pub receipt_signer: Arc<ReceiptSigner>,
    /// Provider clients with a short timeout, for live delivery diagnostics (built once at start).
    pub providers: Providers,
    /// The provider rate limits every process shares (Redis or the database), read by /ops.
    pub rate_limits: hilt_shared::ratelimit::RateLimits,
}

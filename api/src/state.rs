use std::sync::Arc;

use hilt_shared::{config::Config, storage::Db};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub admin_token: Arc<str>,
}

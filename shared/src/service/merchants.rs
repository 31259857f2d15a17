use sha2::{Digest, Sha256};

use sqlx::AnyConnection;
use super::{ServiceError, required_text};
use crate::{
    clock::now_ms,
    domain::{MerchantId, ids::random_token},
    storage::{Db, merchants::{self, MerchantRow}},
};

/// API keys are high-entropy random strings, so one SHA-256 is a safe stored form.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a merchant and returns its API key: the only time the key exists in clear.
pub async fn create(tx: &mut AnyConnection, name: &str) -> Result<(MerchantRow, String), ServiceError> {
    let name = required_text("name", name, 200)?;
    let api_key = format!("hilt_sk_{}", random_token(40));
    let row = MerchantRow { id: MerchantId::generate().to_string(), name, created_at: now_ms() };
    merchants::insert(&mut *tx, &row, &hash_api_key(&api_key)).await?;
    Ok((row, api_key))
}

pub async fn authenticate(db: &Db, api_key: &str) -> Result<Option<MerchantRow>, ServiceError> {
    Ok(merchants::get_by_key_hash(&mut *db.conn().await?, &hash_api_key(api_key)).await?)
}

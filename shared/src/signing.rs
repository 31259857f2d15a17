//! Receipt signing keys (SPEC §5 "Receipt proof format").
//!
//! **Key file** (`HILT_RECEIPT_KEY_FILE`, default `./hilt-receipt-key`): one Ed25519 private key
//! as an RFC 8037 private JWK, `{"kty":"OKP","crv":"Ed25519","d":…,"x":…,"kid":…}`, so any JOSE
//! tool can read it. It is created on first start with mode 0600 (written to a temporary file
//! and hard-linked into place, so processes starting together agree on one key). `kid` is the
//! RFC 7638 thumbprint of the public key; it is recomputed on load, never trusted from the file.
//!
//! **Publication and rotation**: at start the process registers its public key in the
//! `receipt_keys` table ([`ReceiptSigner::publish`]). The JWKS at
//! `/.well-known/hilt-receipt-keys` lists every key in that table, and verification looks a
//! receipt's `key_id` up there. To rotate, move the key file aside (keep it as a backup or
//! destroy it) or point `HILT_RECEIPT_KEY_FILE` at a new path and restart: a new key is created
//! and used for new receipts, while the old public key stays published and receipts it signed
//! keep verifying. All API processes of a deployment should share one key file; if they do not,
//! each one's key is published all the same.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    clock::now_ms,
    storage::{Db, receipt_keys::{self, ReceiptKeyRow}},
};

pub const ALGORITHM: &str = "ed25519";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("HILT_RECEIPT_KEY_FILE {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("HILT_RECEIPT_KEY_FILE {path}: not an Ed25519 private JWK ({reason})")]
    Malformed { path: PathBuf, reason: &'static str },
}

/// The current signing key, loaded once at start.
pub struct ReceiptSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// The private JWK stored in the key file.
#[derive(Serialize, Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: String,
    d: String,
    x: String,
    #[serde(default)]
    kid: Option<String>,
}

/// What the signer adds to a receipt.
#[derive(Debug, Clone)]
pub struct SignedPayload {
    /// The RFC 8785 canonical JSON text that was signed (stored as the receipt's payload).
    pub canonical: String,
    pub payload_sha256: String,
    /// Base64url without padding.
    pub signature: String,
    pub key_id: String,
}

impl ReceiptSigner {
    /// Reads the key file, or creates it (mode 0600) with a fresh key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        let io_err = |source| KeyFileError::Io { path: path.to_owned(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let signer = Self::from_key(SigningKey::from_bytes(&rand::random::<[u8; 32]>()));
                match write_new(path, &signer.private_jwk()) {
                    Ok(()) => Ok(signer),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(path).map_err(io_err)?;
                        Self::parse(path, &text)
                    }
                    Err(e) => Err(io_err(e)),
                }
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self, KeyFileError> {
        let bad = |reason| KeyFileError::Malformed { path: path.to_owned(), reason };
        let jwk: PrivateJwk = serde_json::from_str(text).map_err(|_| bad("not JSON of the expected shape"))?;
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            return Err(bad("kty must be OKP and crv Ed25519"));
        }
        let d: [u8; 32] = URL_SAFE_NO_PAD
            .decode(jwk.d.trim())
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| bad("d must be 32 bytes of base64url"))?;
        let signer = Self::from_key(SigningKey::from_bytes(&d));
        if jwk.x != signer.public_x() {
            return Err(bad("x does not match d"));
        }
        Ok(signer)
    }

    /// A signer over a given key, for tests and tools.
    pub fn from_key(key: SigningKey) -> Self {
        let key_id = thumbprint(&URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()));
        Self { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64url without padding (the JWK `x`).
    pub fn public_x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    fn private_jwk(&self) -> PrivateJwk {
        PrivateJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            d: URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            x: self.public_x(),
            kid: Some(self.key_id.clone()),
        }
    }

    /// Registers the public key so the JWKS lists it and receipts signed with it verify.
    pub async fn publish(&self, db: &Db) -> Result<(), sqlx::Error> {
        let row = ReceiptKeyRow {
            key_id: self.key_id.clone(),
            algorithm: ALGORITHM.into(),
            public_key: self.public_x(),
            created_at: now_ms(),
        };
        receipt_keys::insert_if_absent(&mut *db.conn().await?, &row).await
    }

    /// Signs the RFC 8785 canonical form of `payload`.
    pub fn sign(&self, payload: &serde_json::Value) -> Result<SignedPayload, serde_json::Error> {
        let canonical = canonical_json(payload)?;
        let signature = self.key.sign(canonical.as_bytes());
        Ok(SignedPayload {
            payload_sha256: sha256_hex(canonical.as_bytes()),
            signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            key_id: self.key_id.clone(),
            canonical,
        })
    }
}

/// RFC 8785 (JCS) canonical JSON text.
pub fn canonical_json(value: &serde_json::Value) -> Result<String, serde_json::Error> {
    serde_jcs::to_string(value)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `signature` (base64url) is a valid Ed25519 signature of `message` under the public
/// key `x` (base64url). Malformed inputs are simply invalid.
pub fn verify(x: &str, message: &[u8], signature: &str) -> bool {
    let Some(key) = URL_SAFE_NO_PAD
        .decode(x)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let Some(signature) = URL_SAFE_NO_PAD.decode(signature).ok().and_then(|b| Signature::from_slice(&b).ok()) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

/// The RFC 7638 JWK thumbprint of an Ed25519 public key (RFC 8037 §2: members crv, kty, x).
pub fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Creates `path` with owner-only permissions; `AlreadyExists` if it is there.
fn write_new(path: &Path, jwk: &PrivateJwk) -> io::Result<()> {
    let mut text = serde_json::to_string(jwk).map_err(io::Error::other)?;
    text.push('\n');
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".hilt-receipt-key.{}.tmp", crate::domain::ids::random_token(12)));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        // A hard link fails if the target exists, so a concurrent creator cannot be overwritten.
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_once_with_owner_only_permissions_and_read_back() {
        let dir = tempfile_dir();
        let path = dir.join("nested").join("key");
        let first = ReceiptSigner::load_or_create(&path).expect("create");
        let again = ReceiptSigner::load_or_create(&path).expect("load");
        assert_eq!(first.key_id(), again.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_malformed_key_file_is_refused_naming_the_variable() {
        let dir = tempfile_dir();
        let path = dir.join("key");
        std::fs::write(&path, "not a key").expect("write");
        let err = ReceiptSigner::load_or_create(&path).expect_err("refused");
        assert!(err.to_string().contains("HILT_RECEIPT_KEY_FILE"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn signatures_verify_over_the_canonical_bytes_only() {
        let signer = ReceiptSigner::from_key(SigningKey::from_bytes(&[7; 32]));
        let signed = signer.sign(&serde_json::json!({"b": 1, "a": "x"})).expect("sign");
        assert_eq!(signed.canonical, r#"{"a":"x","b":1}"#);
        assert!(verify(&signer.public_x(), signed.canonical.as_bytes(), &signed.signature));
        assert!(!verify(&signer.public_x(), br#"{"a":"y","b":1}"#, &signed.signature));
        assert!(!verify("bad", signed.canonical.as_bytes(), &signed.signature));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hilt-signing-{}", crate::domain::ids::random_token(10)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}

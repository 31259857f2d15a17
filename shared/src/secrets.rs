//! Buyers' OAuth tokens at rest, sealed with ChaCha20-Poly1305 (ring's AEAD) under
//! `HILT_ENCRYPTION_KEY`: a stored token reads `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag),
//! so a database dump or a backup holds nothing a thief can use with Discord.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

const PREFIX: &str = "enc:v1:";
/// Bound into every seal, so a sealed value is only ever read back as this kind of secret.
const AAD: &[u8] = b"hilt buyer oauth token";

/// The 32-byte key from `HILT_ENCRYPTION_KEY` (standard base64, e.g. `openssl rand -base64 32`).
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(…)")
    }
}

impl std::str::FromStr for EncryptionKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| "must be base64 (e.g. `openssl rand -base64 32`)".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| "must decode to exactly 32 bytes (e.g. `openssl rand -base64 32`)".to_owned())?;
        Ok(Self(key))
    }
}

/// A sealed value that cannot be opened: another key sealed it, or it was altered.
#[derive(Debug, thiserror::Error)]
#[error("a stored token cannot be decrypted with HILT_ENCRYPTION_KEY (was the key changed?)")]
pub struct Unreadable;

impl EncryptionKey {
    fn key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("a 32-byte ChaCha20-Poly1305 key"))
    }

    /// `plaintext` sealed under a fresh random nonce, as stored.
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system's random source");
        let mut data = plaintext.as_bytes().to_vec();
        self.key()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut data)
            .expect("sealing in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// The plaintext of a stored value (see [`seal`](Self::seal)).
    pub fn open(&self, stored: &str) -> Result<String, Unreadable> {
        let raw = stored.strip_prefix(PREFIX).and_then(|b64| STANDARD.decode(b64).ok()).ok_or(Unreadable)?;
        if raw.len() < NONCE_LEN {
            return Err(Unreadable);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unreadable)?;
        let mut data = sealed.to_vec();
        let plain = self.key().open_in_place(nonce, Aad::from(AAD), &mut data).map_err(|_| Unreadable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| Unreadable)
    }
}

/// Whether a stored value is sealed (older rows may hold plaintext until sealed at start-up).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> EncryptionKey {
        STANDARD.encode([b; 32]).parse().expect("key")
    }

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_never_shows_the_plaintext() {
        let sealed = key(1).seal("oauth-secret-123");
        assert!(is_sealed(&sealed) && !sealed.contains("oauth-secret-123"));
        assert_ne!(sealed, key(1).seal("oauth-secret-123"), "a fresh nonce each time");
        assert_eq!(key(1).open(&sealed).expect("opens"), "oauth-secret-123");
        assert!(key(2).open(&sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        assert!(key(1).open(&tampered).is_err(), "altered");
        assert!(key(1).open("oauth-secret-123").is_err(), "plaintext is not a sealed value");
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!("not base64!".parse::<EncryptionKey>().is_err());
        assert!(STANDARD.encode([0u8; 16]).parse::<EncryptionKey>().is_err());
        assert!(format!("{:?}", key(3)) == "EncryptionKey(…)", "never printed");
    }
}

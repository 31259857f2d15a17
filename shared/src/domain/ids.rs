//! Opaque, prefixed, unguessable ids (`mer_…`, `pay_…`): 24 base62 characters, the creation
//! time (8 characters, unix milliseconds) then 16 random ones (≈ 95 random bits).
//!
//! The time comes first so that ids of one moment sort together, like UUIDv7 and ULID: a new
//! row's primary-key entry lands among the recent ones, so a busy table's indexes stay warm in
//! the database's cache instead of each insert touching (and writing back) a random page.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_LEN: usize = 8;
const RANDOM_LEN: usize = 24;

pub fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `ms` (unix milliseconds) as 8 base62 digits, most significant first: the same width until
/// the year 8800, so the ids' order is the order of creation.
fn time_prefix(ms: i64) -> String {
    let mut n = u64::try_from(ms).unwrap_or(0);
    let mut digits = [b'0'; TIME_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| b as char).collect()
}

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}_{}{}", $prefix, time_prefix(crate::clock::now_ms()), random_token(RANDOM_LEN - TIME_LEN)))
            }

            /// Accepts only well-formed ids of this kind; anything else can never exist.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?.strip_prefix('_')?;
                (rest.len() == RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .then(|| Self(s.to_owned()))
            }

            /// For ids read back from our own database.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(MerchantId, "mer");
id_type!(ProductId, "prod");
id_type!(PaymentId, "pay");
id_type!(MembershipId, "mem");
id_type!(ReceiptId, "rcpt");
id_type!(TicketId, "tkt");
id_type!(AttemptId, "att");
id_type!(JobId, "job");
id_type!(WebhookEndpointId, "whe");
id_type!(EventId, "evt");
id_type!(WebhookDeliveryId, "whd");
id_type!(MessageId, "msg");
id_type!(ProofEmailId, "pem");
id_type!(AuditId, "aud");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_differ() {
        let a = PaymentId::generate();
        let b = PaymentId::generate();
        assert_ne!(a, b);
        assert_eq!(PaymentId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        assert!(time_prefix(1_000) < time_prefix(1_001));
        assert!(time_prefix(1_764_460_800_000) < time_prefix(1_764_460_800_062));
        assert!(time_prefix(1_764_460_800_000) < time_prefix(4_102_444_800_000));
        let earlier = PaymentId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(earlier.as_str() < PaymentId::generate().as_str());
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_rejected() {
        let product = ProductId::generate();
        assert!(PaymentId::parse(product.as_str()).is_none());
        assert!(PaymentId::parse("pay_short").is_none());
        assert!(PaymentId::parse("pay_!!!!!!!!!!!!!!!!!!!!!!!!").is_none());
    }
}

//! Opaque, prefixed, unguessable ids (`mer_…`, `pay_…`): 24 base62 characters ≈ 143 random bits.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 24;

pub fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, random_token(RANDOM_LEN)))
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
    fn ids_of_another_kind_or_shape_are_rejected() {
        let product = ProductId::generate();
        assert!(PaymentId::parse(product.as_str()).is_none());
        assert!(PaymentId::parse("pay_short").is_none());
        assert!(PaymentId::parse("pay_!!!!!!!!!!!!!!!!!!!!!!!!").is_none());
    }
}

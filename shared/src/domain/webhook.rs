//! Merchant webhooks as the Standard Webhooks spec defines them: the event types merchants
//! subscribe to, `whsec_` secrets, the `v1` HMAC-SHA256 signature, and which addresses a
//! webhook may never be sent to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::Period;

/// Every event type the project writes (SPEC §8); `*` subscribes to all of them.
pub const EVENT_TYPES: [&str; 7] = [
    "payment.confirmed",
    "delivery.succeeded",
    "delivery.failed",
    "delivery.manual_review",
    "membership.grace",
    "membership.expired",
    "membership.renewed",
];

pub const ALL_EVENTS: &str = "*";

/// Whether an endpoint subscribed to `subscribed` wants an event of type `kind`.
pub fn subscribes_to(subscribed: &[String], kind: &str) -> bool {
    subscribed.iter().any(|s| s == ALL_EVENTS || s == kind)
}

/// Delays between webhook attempts after the first, immediate one (Svix's schedule):
/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — eight attempts over about 28 hours.
pub fn default_schedule() -> Vec<Period> {
    [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000].into_iter().map(Period::from_millis).collect()
}

/// After a rotation the previous secret keeps signing this long, beside the new one.
pub const PREVIOUS_SECRET_VALIDITY_MS: i64 = 24 * 3600 * 1000;

const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

/// A new `whsec_` secret: the prefix, then 32 random bytes in standard base64.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// One `v1,<base64>` signature of `{id}.{timestamp}.{body}` with the secret's key bytes (the
/// base64 after `whsec_`). None for a secret that is not ours to sign with (never generated here).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per valid secret, space-separated, the current
/// secret first.
pub fn signature_header<'a>(secrets: impl IntoIterator<Item = &'a str>, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let signatures: Vec<String> = secrets.into_iter().filter_map(|s| sign(s, msg_id, timestamp, body)).collect();
    (!signatures.is_empty()).then(|| signatures.join(" "))
}

/// Whether a webhook may be sent to this address: not loopback, private, link-local,
/// unspecified, carrier-grade NAT, multicast, broadcast or otherwise reserved.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0                                  // "this network"
        || (a == 100 && (64..128).contains(&b))     // carrier-grade NAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b == 18 || b == 19))       // benchmarking 198.18/15
        || a >= 240)                                // reserved 240/4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00   // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80   // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0   // site-local fec0::/10 (deprecated, still private)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and the rest of ::/96
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_the_prefix_and_at_least_24_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        let key = STANDARD.decode(a.strip_prefix("whsec_").expect("prefix")).expect("base64");
        assert!(key.len() >= 24);
    }

    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks spec and its reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).expect("signs");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_header_lists_one_signature_per_secret() {
        let (a, b) = (generate_secret(), generate_secret());
        let header = signature_header([a.as_str(), b.as_str()], "evt_1", 1, b"{}").expect("signed");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "evt_1", 1, b"{}").expect("a"));
        assert!(signature_header(["nope"], "evt_1", 1, b"{}").is_none());
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
            "255.255.255.255", "224.0.0.1", "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe", "::127.0.0.1"]
        {
            assert!(!is_public_ip(ip.parse().expect(ip)), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public_ip(ip.parse().expect(ip)), "{ip} is public");
        }
    }
}

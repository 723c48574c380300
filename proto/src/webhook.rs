//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), as
//! the node's profile dispatcher signs outbox deliveries (issue 17) and as
//! a receiver checks them.
//!
//! A delivery carries three headers:
//!
//! - `webhook-id`: the outbox item's id (`msg_<n>`), the same on every
//!   attempt, so a receiver can drop duplicates;
//! - `webhook-timestamp`: seconds since the Unix epoch when it was signed;
//! - `webhook-signature`: `v1,<base64 of HMAC-SHA256(secret, "id.timestamp.body")>`.
//!
//! The secret is written `whsec_<base64 of the secret bytes>`; the HMAC key
//! is the decoded bytes.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header names.
pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a receiver lets a timestamp be from its clock, seconds (the
/// specification's recommendation: 5 minutes).
pub const TOLERANCE_S: u64 = 5 * 60;

/// The webhook id of outbox item `id`.
pub fn message_id(id: u64) -> String {
    format!("msg_{id}")
}

/// The `v1,<base64>` signature of `body` sent as `id` at `timestamp`.
pub fn sign(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// The secret in its written form.
pub fn secret_string(secret: &[u8]) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret))
}

/// Whether `header` (space-separated signatures) holds a valid `v1`
/// signature of `body` for `id` and `timestamp`, and the timestamp is
/// within [`TOLERANCE_S`] of `now_s`. Compared in constant time.
pub fn verify(
    secret: &[u8],
    id: &str,
    timestamp: u64,
    body: &[u8],
    header: &str,
    now_s: u64,
) -> bool {
    if timestamp.abs_diff(now_s) > TOLERANCE_S {
        return false;
    }
    let want = sign(secret, id, timestamp, body);
    header.split(' ').any(|s| {
        s.len() == want.len() && s.bytes().zip(want.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature matches the specification's published example
    /// (standard-webhooks/spec, "Verifying"), and verify accepts it only
    /// with the right secret, body and a fresh timestamp.
    #[test]
    fn webhook_signature_matches_the_spec_example() {
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let v = |s: &[u8], b: &[u8], now| {
            verify(s, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b, &format!("v1,x {sig}"), now)
        };
        assert!(v(&secret, body, 1614265330 + 10));
        assert!(!v(b"other", body, 1614265330));
        assert!(!v(&secret, b"{}", 1614265330));
        assert!(!v(&secret, body, 1614265330 + TOLERANCE_S + 1));
        assert_eq!(secret_string(b"ab"), "whsec_YWI=");
    }
}

//! Session tokens signed with HMAC-SHA256 (MISSION M6), shared by the node
//! (which checks them) and the `herald token` CLI (which issues them).
//!
//! # Format
//!
//! ```text
//! v1.<b64uid>.<exp>.<b64sig>
//! ```
//!
//! - `v1`: the format version.
//! - `<b64uid>`: the uid's UTF-8 bytes, base64url without padding (the uid
//!   may contain dots; the encoded form cannot).
//! - `<exp>`: expiry, Unix seconds, decimal ASCII digits. The token is valid
//!   while `now < exp`.
//! - `<b64sig>`: base64url without padding of
//!   `HMAC-SHA256(key, "v1." + b64uid + "." + exp)`, i.e. of everything
//!   before the last dot.
//!
//! Decoding is strict (no padding, no stray bits, digits only), so a token
//! has exactly one accepted spelling. The MAC is compared in constant time.
//! Tokens are bearer credentials: anyone holding one can open sessions as
//! its uid until it expires; there is no revocation short of changing the
//! key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The format version, first field of every token.
pub const VERSION: &str = "v1";

/// Longest token accepted. A 128-byte uid (the node's limit) makes a token
/// of about 240 bytes; the cap leaves room for longer uids while refusing
/// oversized input before any decoding or MAC work.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Length of an HMAC-SHA256 tag.
const MAC_BYTES: usize = 32;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub uid: String,
    pub expires_at_unix_s: u64,
}

/// Why a token was refused. [`code`](TokenError::code) gives the stable
/// code clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a `v1` token of the documented shape (or longer than
    /// [`MAX_TOKEN_BYTES`]).
    #[error("malformed token")]
    Malformed,
    /// Well-formed, but not signed with this key (or altered).
    #[error("bad token signature")]
    BadSignature,
    /// Signed correctly but expired at `at` (Unix seconds).
    #[error("token expired at {at} (unix seconds)")]
    Expired { at: u64 },
    /// Signed correctly but for another uid.
    #[error("token was issued for another user")]
    WrongUser,
    /// Signed correctly but expiring further ahead than the node allows
    /// (`<auth max-token-lifetime-s>`): a token cannot be revoked, so its
    /// lifetime bounds how long a leaked one works.
    #[error("token expires at {at} (unix seconds), more than {max_s} s from now: longer than this cluster allows")]
    TooLongLived { at: u64, max_s: u64 },
}

impl TokenError {
    /// The stable snake_case code: `bad_token` (malformed or bad signature,
    /// deliberately not told apart), `token_expired`, `wrong_user`,
    /// `token_lifetime`.
    pub fn code(&self) -> crate::codes::Code {
        use crate::codes;
        match self {
            TokenError::Malformed | TokenError::BadSignature => codes::BAD_TOKEN,
            TokenError::Expired { .. } => codes::TOKEN_EXPIRED,
            TokenError::WrongUser => codes::WRONG_USER,
            TokenError::TooLongLived { .. } => codes::TOKEN_LIFETIME,
        }
    }
}

/// Issues a token for `uid` valid until `expires_at_unix_s`.
pub fn issue(key: &[u8], uid: &str, expires_at_unix_s: u64) -> String {
    let payload =
        format!("{VERSION}.{}.{expires_at_unix_s}", URL_SAFE_NO_PAD.encode(uid.as_bytes()));
    let sig = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// Checks that `token` is signed with `key`, names `uid` and has not
/// expired at `now_unix_s`. Syntax is checked first (Malformed), then the
/// signature, and only then what the token claims.
pub fn verify(key: &[u8], token: &str, uid: &str, now_unix_s: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (payload, b64sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut fields = payload.split('.');
    let (Some(version), Some(b64uid), Some(exp), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TokenError::Malformed);
    };
    if version != VERSION || exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires_at_unix_s: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD.decode(b64sig).map_err(|_| TokenError::Malformed)?;
    if sig.len() != MAC_BYTES {
        return Err(TokenError::Malformed);
    }
    let token_uid = URL_SAFE_NO_PAD
        .decode(b64uid)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|u| !u.is_empty())
        .ok_or(TokenError::Malformed)?;
    mac(key, payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    if token_uid != uid {
        return Err(TokenError::WrongUser);
    }
    if now_unix_s >= expires_at_unix_s {
        return Err(TokenError::Expired { at: expires_at_unix_s });
    }
    Ok(Claims { uid: token_uid, expires_at_unix_s })
}

/// [`verify`], and also refuses a token that expires more than
/// `max_lifetime_s` after `now_unix_s` ([`TokenError::TooLongLived`]).
pub fn verify_bounded(
    key: &[u8],
    token: &str,
    uid: &str,
    now_unix_s: u64,
    max_lifetime_s: u64,
) -> Result<Claims, TokenError> {
    let c = verify(key, token, uid, now_unix_s)?;
    if c.expires_at_unix_s.saturating_sub(now_unix_s) > max_lifetime_s {
        return Err(TokenError::TooLongLived { at: c.expires_at_unix_s, max_s: max_lifetime_s });
    }
    Ok(c)
}

/// The uid a token names, read without checking its signature: which user
/// a request claims to be when nothing else names one (the token is then
/// verified for that uid). None for anything that is not a `v1` token.
pub fn claimed_uid(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut fields = token.split('.');
    let (Some(VERSION), Some(b64uid)) = (fields.next(), fields.next()) else {
        return None;
    };
    let uid = String::from_utf8(URL_SAFE_NO_PAD.decode(b64uid).ok()?).ok()?;
    (!uid.is_empty()).then_some(uid)
}

/// A MAC over `payload` keyed with `key`, not yet finalised.
fn mac(key: &[u8], payload: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(payload.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"test key";
    const NOW: u64 = 1_700_000_000;

    /// Replaces field `i` (0-based, dot-separated) of `token`.
    fn with_field(token: &str, i: usize, value: &str) -> String {
        let mut f: Vec<&str> = token.split('.').collect();
        f[i] = value;
        f.join(".")
    }

    /// An issued token verifies for its uid and key and yields its claims,
    /// including uids with dots and non-ASCII text.
    #[test]
    fn token_roundtrip() {
        for uid in ["u1", "a.b.c", "ümlaut-用户", &"x".repeat(128)] {
            let t = issue(KEY, uid, NOW + 60);
            assert!(t.starts_with("v1.") && t.split('.').count() == 4, "{t}");
            assert_eq!(
                verify(KEY, &t, uid, NOW),
                Ok(Claims { uid: uid.into(), expires_at_unix_s: NOW + 60 })
            );
        }
    }

    /// The format is the documented one: the signature is the HMAC-SHA256
    /// of the first three fields (checked against an independent MAC).
    #[test]
    fn token_format_matches_docs() {
        let t = issue(KEY, "u1", 42);
        assert_eq!(&t[..t.rfind('.').unwrap()], "v1.dTE.42");
        let mut m = HmacSha256::new_from_slice(KEY).unwrap();
        m.update(b"v1.dTE.42");
        assert_eq!(
            t.rsplit('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        );
    }

    /// Changing the uid, the expiry or the signature breaks the signature.
    #[test]
    fn token_tampered_refused() {
        let t = issue(KEY, "u1", NOW + 60);
        let other_uid = with_field(&t, 1, &URL_SAFE_NO_PAD.encode("u2"));
        assert_eq!(verify(KEY, &other_uid, "u2", NOW), Err(TokenError::BadSignature));
        let later = with_field(&t, 2, &(NOW + 3600).to_string());
        assert_eq!(verify(KEY, &later, "u1", NOW), Err(TokenError::BadSignature));
        // Another valid 32-byte signature (of another payload).
        let foreign_sig = issue(KEY, "u1", NOW + 61).rsplit('.').next().unwrap().to_string();
        assert_eq!(
            verify(KEY, &with_field(&t, 3, &foreign_sig), "u1", NOW),
            Err(TokenError::BadSignature)
        );
        // One character of the signature changed.
        let mut sig: Vec<u8> = t.rsplit('.').next().unwrap().bytes().collect();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        let flipped = with_field(&t, 3, std::str::from_utf8(&sig).unwrap());
        assert_eq!(verify(KEY, &flipped, "u1", NOW), Err(TokenError::BadSignature));
    }

    /// A token is valid strictly before its expiry and refused from then on,
    /// with the expiry in the error.
    #[test]
    fn token_expired_refused() {
        let t = issue(KEY, "u1", NOW);
        assert!(verify(KEY, &t, "u1", NOW - 1).is_ok());
        assert_eq!(verify(KEY, &t, "u1", NOW), Err(TokenError::Expired { at: NOW }));
        assert_eq!(verify(KEY, &t, "u1", u64::MAX), Err(TokenError::Expired { at: NOW }));
        assert_eq!(TokenError::Expired { at: NOW }.code(), "token_expired");
    }

    /// A token signed with another key is refused as a bad signature.
    #[test]
    fn token_other_key_refused() {
        let t = issue(b"other key", "u1", NOW + 60);
        assert_eq!(verify(KEY, &t, "u1", NOW), Err(TokenError::BadSignature));
        assert_eq!(TokenError::BadSignature.code(), "bad_token");
    }

    /// A valid token of one user does not open a session for another.
    #[test]
    fn token_wrong_uid_refused() {
        let t = issue(KEY, "u1", NOW + 60);
        assert_eq!(verify(KEY, &t, "u2", NOW), Err(TokenError::WrongUser));
        assert_eq!(verify(KEY, &t, "", NOW), Err(TokenError::WrongUser));
        assert_eq!(TokenError::WrongUser.code(), "wrong_user");
    }

    /// Garbage of every kind is Malformed (code `bad_token`), never a panic.
    #[test]
    fn token_garbage_malformed() {
        let good = issue(KEY, "u1", NOW + 60);
        let huge = format!("v1.{}.{}.{}", "A".repeat(2000), NOW + 60, "A".repeat(43));
        let cases: Vec<String> = vec![
            "".into(),
            ".".into(),
            "...".into(),
            "....".into(),
            "v1".into(),
            "v1.dTE.1".into(),
            format!("{good}.extra"),
            format!("x{good}"),
            with_field(&good, 0, "v2"),
            with_field(&good, 1, "!!!"),
            with_field(&good, 1, "dTE="),
            with_field(&good, 2, ""),
            with_field(&good, 2, "+5"),
            with_field(&good, 2, "-5"),
            with_field(&good, 2, "99999999999999999999999"),
            with_field(&good, 2, "1e9"),
            with_field(&good, 3, ""),
            with_field(&good, 3, "$$$"),
            with_field(&good, 3, "AAAA"),
            format!("{good}="),
            huge,
            "v1.\u{0}.\u{ffff}.é".into(),
            "🙂".repeat(300),
        ];
        for c in &cases {
            assert_eq!(verify(KEY, c, "u1", NOW), Err(TokenError::Malformed), "{c:?}");
        }
        assert_eq!(TokenError::Malformed.code(), "bad_token");
    }

    /// A token whose uid field is not UTF-8 or empty is Malformed, signed
    /// or not.
    #[test]
    fn token_signed_bad_uid_malformed() {
        for raw in [&[0xff, 0xfe][..], &[][..]] {
            let payload = format!("v1.{}.{}", URL_SAFE_NO_PAD.encode(raw), NOW + 60);
            let sig = URL_SAFE_NO_PAD.encode(mac(KEY, &payload).finalize().into_bytes());
            assert_eq!(
                verify(KEY, &format!("{payload}.{sig}"), "u1", NOW),
                Err(TokenError::Malformed)
            );
        }
    }

    /// A token expiring within the maximum lifetime verifies; one a second
    /// beyond it (here the year-5138 expiry of the issue) is refused with
    /// `token_lifetime`, and an already expired one is still `token_expired`.
    #[test]
    fn token_lifetime_bounded() {
        let t = issue(KEY, "u1", NOW + 3600);
        assert!(verify_bounded(KEY, &t, "u1", NOW, 3600).is_ok());
        let e = verify_bounded(KEY, &t, "u1", NOW, 3599).unwrap_err();
        assert_eq!(e, TokenError::TooLongLived { at: NOW + 3600, max_s: 3599 });
        assert_eq!(e.code(), "token_lifetime");
        let far = issue(KEY, "u1", 99_999_999_999);
        assert_eq!(
            verify_bounded(KEY, &far, "u1", NOW, 86_400).unwrap_err().code(),
            "token_lifetime"
        );
        let old = issue(KEY, "u1", NOW - 1);
        assert_eq!(verify_bounded(KEY, &old, "u1", NOW, 60).unwrap_err().code(), "token_expired");
    }

    /// The claimed uid is read from a token without its key; anything that
    /// is not a v1 token claims nobody.
    #[test]
    fn token_claimed_uid() {
        assert_eq!(claimed_uid(&issue(KEY, "a.b", NOW)).as_deref(), Some("a.b"));
        for bad in ["", "v1", "v2.dTE.1.x", "v1.!!.1.x", "v1..1.x", "hk_abc"] {
            assert_eq!(claimed_uid(bad), None, "{bad}");
        }
    }

    /// The length cap is exact: a valid token just at the cap verifies.
    #[test]
    fn token_length_cap() {
        // v1. + b64(uid) + . + 10-digit exp + . + 43-char sig = 3+b+1+10+1+43.
        let b64_len = MAX_TOKEN_BYTES - 58;
        let uid = "x".repeat(b64_len * 3 / 4);
        let t = issue(KEY, &uid, NOW + 60);
        assert_eq!(t.len(), MAX_TOKEN_BYTES);
        assert!(verify(KEY, &t, &uid, NOW).is_ok());
        let uid = format!("{uid}x");
        assert_eq!(verify(KEY, &issue(KEY, &uid, NOW + 60), &uid, NOW), Err(TokenError::Malformed));
    }
}

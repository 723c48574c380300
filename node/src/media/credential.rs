//! Short-lived credentials minted by nodes (MISSION S1, S4): an upload
//! credential for one upload id and one uid, an access credential for one
//! media id and one viewer. HMAC-SHA256 with the cluster's media key, so
//! any node checks what another minted.
//!
//! ```text
//! <kind>.<b64 scope>.<b64 subject>.<expires_at_ms>.<b64 mac>
//! ```
//!
//! `kind` is `up1` or `ac1`; the MAC covers everything before the last dot
//! and is compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herald_proto::codes::{self, Code};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest credential accepted before any decoding work.
pub const MAX_CREDENTIAL_BYTES: usize = 1024;

/// What a credential grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PUT the bytes of one upload.
    Upload,
    /// GET the bytes of one media.
    Access,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Upload => "up1",
            Kind::Access => "ac1",
        }
    }
}

/// Why a credential was refused; [`code`](CredentialError::code) is what
/// clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("malformed credential")]
    Malformed,
    #[error("bad credential signature")]
    BadSignature,
    #[error("credential expired")]
    Expired,
    #[error("credential is for another {0}")]
    Scope(&'static str),
}

impl CredentialError {
    pub fn code(&self) -> Code {
        match self {
            CredentialError::Malformed | CredentialError::BadSignature => codes::BAD_CREDENTIAL,
            CredentialError::Expired => codes::CREDENTIAL_EXPIRED,
            CredentialError::Scope(_) => codes::CREDENTIAL_SCOPE,
        }
    }
}

/// A key derived from `key` for one purpose (HMAC of the label).
pub fn derive_key(key: &[u8], label: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(label);
    m.finalize().into_bytes().to_vec()
}

fn mac(key: &[u8], payload: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(payload.as_bytes());
    m
}

/// Mints a credential of `kind` for `scope` (upload or media id) and
/// `subject` (uid or viewer), valid until `expires_at_ms`.
pub fn mint(key: &[u8], kind: Kind, scope: &str, subject: &str, expires_at_ms: u64) -> String {
    let payload = format!(
        "{}.{}.{}.{expires_at_ms}",
        kind.tag(),
        URL_SAFE_NO_PAD.encode(scope.as_bytes()),
        URL_SAFE_NO_PAD.encode(subject.as_bytes())
    );
    let sig = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// Checks `cred` is a valid `kind` credential for `scope` at `now_ms`;
/// answers its subject.
pub fn check(
    key: &[u8],
    kind: Kind,
    cred: &str,
    scope: &str,
    now_ms: u64,
) -> Result<String, CredentialError> {
    if cred.len() > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::Malformed);
    }
    let (payload, sig) = cred.rsplit_once('.').ok_or(CredentialError::Malformed)?;
    let parts: Vec<&str> = payload.split('.').collect();
    let [tag, b64scope, b64subject, exp] = parts[..] else {
        return Err(CredentialError::Malformed);
    };
    if tag != kind.tag() || exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| CredentialError::Malformed)?;
    mac(key, payload).verify_slice(&sig).map_err(|_| CredentialError::BadSignature)?;
    let exp: u64 = exp.parse().map_err(|_| CredentialError::Malformed)?;
    let decode = |s: &str| -> Result<String, CredentialError> {
        String::from_utf8(URL_SAFE_NO_PAD.decode(s).map_err(|_| CredentialError::Malformed)?)
            .map_err(|_| CredentialError::Malformed)
    };
    if now_ms >= exp {
        return Err(CredentialError::Expired);
    }
    if decode(b64scope)? != scope {
        return Err(CredentialError::Scope(match kind {
            Kind::Upload => "upload",
            Kind::Access => "media",
        }));
    }
    decode(b64subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123";

    /// A minted credential checks for its scope and names its subject;
    /// expiry, another scope, another kind, another key and any altered
    /// character are refused with their codes.
    #[test]
    fn credential_scope_expiry_and_tampering() {
        let c = mint(KEY, Kind::Access, "abc", "bob", 1_000);
        assert_eq!(check(KEY, Kind::Access, &c, "abc", 999).unwrap(), "bob");
        assert_eq!(
            check(KEY, Kind::Access, &c, "abc", 1_000).unwrap_err().code(),
            "credential_expired"
        );
        assert_eq!(check(KEY, Kind::Access, &c, "abd", 10).unwrap_err().code(), "credential_scope");
        assert_eq!(check(KEY, Kind::Upload, &c, "abc", 10).unwrap_err().code(), "bad_credential");
        assert_eq!(
            check(b"another-key-0123456", Kind::Access, &c, "abc", 10).unwrap_err(),
            CredentialError::BadSignature
        );
        for i in 0..c.len() {
            let mut b = c.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            if let Ok(s) = String::from_utf8(b) {
                if s != c {
                    assert!(
                        check(KEY, Kind::Access, &s, "abc", 10).is_err(),
                        "altered at {i}: {s}"
                    );
                }
            }
        }
        assert_eq!(check(KEY, Kind::Access, "", "abc", 10).unwrap_err().code(), "bad_credential");
        assert_eq!(derive_key(KEY, b"x").len(), 32);
        assert_ne!(derive_key(KEY, b"x"), derive_key(KEY, b"y"));
    }
}

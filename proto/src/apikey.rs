//! Application API keys (issue 14), shared by the node (which checks them)
//! and the `herald key` CLI (which makes them).
//!
//! # Format
//!
//! ```text
//! hk_<43 characters of base64url>
//! ```
//!
//! A key is [`PREFIX`] followed by 32 random bytes in base64url without
//! padding. Nodes never hold a key, only its [`hash`] (`sha256:<64 hex>`)
//! in `<access><api-key hash=...>`: SHA-256 is enough for 256 random bits
//! (no dictionary to try), and the comparison is in constant time. The
//! prefix tells a key from a session token (`v1.` ...) without trying both.
//!
//! Keys are bearer credentials: `Authorization: Bearer hk_...` on HTTP,
//! `authorization: Bearer hk_...` metadata on gRPC.

use sha2::{Digest, Sha256};

/// What every API key starts with.
pub const PREFIX: &str = "hk_";

/// Random bytes of a key: 256 bits, so that a plain SHA-256 of it cannot be
/// reversed by guessing.
pub const KEY_BYTES: usize = 32;

/// Longest API key looked up. A key is 46 bytes; anything much longer is
/// refused before it is hashed.
pub const MAX_KEY_BYTES: usize = 256;

/// The prefix of a stored hash.
pub const HASH_PREFIX: &str = "sha256:";

/// The development key of `conf/herald.xml` (the embedded default),
/// `conf/cluster-3` and `conf/reference.xml`, with every scope. Nodes warn
/// when they hold its hash; `<security mode="production">` refuses it.
pub const DEVELOPMENT_KEY: &str = "hk_herald-development-key-change-me-0000000000";

/// What an application may do: each route of the publish port needs one
/// (node/src/api/routes.rs lists which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Push presence events.
    PresenceWrite,
    /// Query presence.
    PresenceRead,
    /// Send messages from any user.
    MessagesSend,
    /// Set, read and delete recipient groups.
    Groups,
    /// Read and change any user's offline-storage settings.
    Settings,
    /// Ask which gateway a user should connect to.
    Gateway,
    /// Read the cluster's status.
    ClusterRead,
    /// Change the cluster: membership and leader transfer.
    Admin,
    /// Read `/metrics` (unless `<access public-metrics="true">`).
    Metrics,
    /// Bind accounts, set and read any user's profile, read the outbox
    /// (issue 17); resending needs `admin`.
    Profile,
}

impl Scope {
    /// Every scope, in the order the README's table lists them.
    pub const ALL: &'static [Scope] = &[
        Scope::PresenceWrite,
        Scope::PresenceRead,
        Scope::MessagesSend,
        Scope::Groups,
        Scope::Settings,
        Scope::Gateway,
        Scope::ClusterRead,
        Scope::Admin,
        Scope::Metrics,
        Scope::Profile,
    ];

    /// The name written in `<api-key scopes>` and `herald key new --scopes`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::PresenceWrite => "presence:write",
            Scope::PresenceRead => "presence:read",
            Scope::MessagesSend => "messages:send",
            Scope::Groups => "groups",
            Scope::Settings => "settings",
            Scope::Gateway => "gateway",
            Scope::ClusterRead => "cluster:read",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
            Scope::Profile => "profile",
        }
    }

    /// The scope of a name, if it is one.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.iter().copied().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a list of scopes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?} (known: {list})", list = known())]
    Unknown(String),
    #[error("no scopes given (known: {list})", list = known())]
    Empty,
}

fn known() -> String {
    Scope::ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// Parses a space- (or comma-) separated list of scope names, sorted and
/// without repeats.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, ScopeError> {
    let mut out = Vec::new();
    for name in list.split(|c: char| c.is_whitespace() || c == ',').filter(|n| !n.is_empty()) {
        out.push(Scope::parse(name).ok_or_else(|| ScopeError::Unknown(name.to_string()))?);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(ScopeError::Empty);
    }
    Ok(out)
}

/// Whether `s` looks like an API key (its prefix): a key is looked up, and
/// anything else is a session token.
pub fn is_key(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// A new key from 32 random bytes.
pub fn from_random(bytes: &[u8; KEY_BYTES]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 digest of a key, as stored ([`digest_text`] writes it).
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<64 lowercase hex>` of a key: what `<api-key hash>` holds.
pub fn hash(key: &str) -> String {
    digest_text(&digest(key))
}

/// `sha256:<64 lowercase hex>` of a digest.
pub fn digest_text(d: &[u8; 32]) -> String {
    let mut s = String::with_capacity(HASH_PREFIX.len() + 64);
    s.push_str(HASH_PREFIX);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The digest of a `sha256:<64 hex>` text (either case of hex), if it is one.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix(HASH_PREFIX)?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Equality of two digests in time independent of where they differ.
pub fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's hash is the documented text: `sha256:` and the lowercase hex
    /// of SHA-256 of the key's bytes; it parses back to the same digest.
    #[test]
    fn apikey_hash_format() {
        let h = hash("hk_abc");
        assert!(h.starts_with("sha256:") && h.len() == 71, "{h}");
        assert_eq!(
            hash(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(parse_hash(&h), Some(digest("hk_abc")));
        assert_eq!(
            parse_hash(&h.to_uppercase().replace("SHA256:", "sha256:")),
            Some(digest("hk_abc"))
        );
        for bad in ["", "sha256:", "md5:00", &h[..70], &format!("{h}0"), &h.replace('a', "g")] {
            assert_eq!(parse_hash(bad), None, "{bad}");
        }
    }

    /// A generated key has the prefix and 43 base64url characters, is a key
    /// to [`is_key`], and a session token is not.
    #[test]
    fn apikey_generated_shape() {
        let k = from_random(&[7u8; KEY_BYTES]);
        assert!(is_key(&k) && k.len() == PREFIX.len() + 43, "{k}");
        assert!(k[3..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!is_key("v1.dTE.1.sig") && is_key(DEVELOPMENT_KEY));
        assert_eq!(DEVELOPMENT_KEY.len(), k.len(), "the development key has a key's shape");
    }

    /// Scope lists parse by name (spaces or commas), sorted without
    /// repeats; an unknown or empty list is refused naming the known ones.
    #[test]
    fn apikey_scopes_parse() {
        assert_eq!(
            parse_scopes("presence:read  presence:write,presence:read").unwrap(),
            vec![Scope::PresenceWrite, Scope::PresenceRead]
        );
        let e = parse_scopes("presence:read root").unwrap_err();
        assert_eq!(e, ScopeError::Unknown("root".into()));
        assert!(e.to_string().contains("admin"), "{e}");
        assert_eq!(parse_scopes(" ,"), Err(ScopeError::Empty));
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.name()), Some(*s));
        }
    }

    /// Digest equality is exact.
    #[test]
    fn apikey_digest_eq() {
        let (a, mut b) = (digest("x"), digest("x"));
        assert!(digest_eq(&a, &b));
        b[31] ^= 1;
        assert!(!digest_eq(&a, &b));
    }
}

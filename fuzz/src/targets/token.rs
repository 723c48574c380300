//! Session tokens (`herald_proto::token::verify`) and the media
//! credentials nodes mint (`herald_node::media::credential::check`): any
//! string is refused or accepted without panicking, and whatever
//! `issue`/`mint` makes from the input's text verifies.

use herald_node::media::credential::{self, CredentialError, Kind, MAX_CREDENTIAL_BYTES};
use herald_proto::token::{self, TokenError, MAX_TOKEN_BYTES};

use super::{words, Seed, Target};

pub const TARGET: Target = Target {
    name: "token",
    about:
        "tokens: herald_proto::token::verify and media credential::check, issue/mint round trips",
    run,
    seeds,
    dict,
    selftest: false,
};

const KEY: &[u8] = b"fuzz-hmac-key-0123456789";
const NOW_S: u64 = 1_700_000_000;
const NOW_MS: u64 = NOW_S * 1000;

fn run(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let _ = token::verify(KEY, &text, "alice", NOW_S);
    let _ = token::verify(b"", &text, "", 0);
    for kind in [Kind::Upload, Kind::Access] {
        let _ = credential::check(KEY, kind, &text, "media-1", NOW_MS);
    }

    // The input's text as a uid (or media id and viewer): what is issued
    // for it verifies, until it expires.
    let exp = NOW_S + 1 + input.len() as u64;
    let t = token::issue(KEY, &text, exp);
    if !text.is_empty() && t.len() <= MAX_TOKEN_BYTES {
        let claims = token::verify(KEY, &t, &text, NOW_S).expect("an issued token verifies");
        assert_eq!((claims.uid.as_str(), claims.expires_at_unix_s), (&*text, exp));
        assert_eq!(token::verify(KEY, &t, &text, exp), Err(TokenError::Expired { at: exp }));
        assert_eq!(token::verify(b"another key", &t, &text, NOW_S), Err(TokenError::BadSignature));
    }
    let c = credential::mint(KEY, Kind::Access, &text, "viewer", exp * 1000);
    if c.len() <= MAX_CREDENTIAL_BYTES {
        assert_eq!(
            credential::check(KEY, Kind::Access, &c, &text, NOW_MS).as_deref(),
            Ok("viewer")
        );
        assert_eq!(
            credential::check(KEY, Kind::Access, &c, &text, exp * 1000),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            credential::check(KEY, Kind::Upload, &c, &text, NOW_MS),
            Err(CredentialError::Malformed)
        );
    }
}

fn seeds() -> Vec<Seed> {
    vec![
        Seed::new("valid", token::issue(KEY, "alice", NOW_S + 3600)),
        Seed::new("expired", token::issue(KEY, "alice", NOW_S - 1)),
        Seed::new("other-user", token::issue(KEY, "bob", NOW_S + 3600)),
        Seed::new("other-key", token::issue(b"another key", "alice", NOW_S + 3600)),
        Seed::new("unicode-uid", token::issue(KEY, "ünï cødé", NOW_S + 3600)),
        Seed::new(
            "credential-access",
            credential::mint(KEY, Kind::Access, "media-1", "bob", NOW_MS + 60_000),
        ),
        Seed::new(
            "credential-upload",
            credential::mint(KEY, Kind::Upload, "media-1", "alice", NOW_MS + 60_000),
        ),
        Seed::new("malformed", "v1..."),
    ]
}

fn dict() -> Vec<Vec<u8>> {
    words(&[
        "v1",
        "up1",
        "ac1",
        ".",
        "..",
        "=",
        "+",
        "/",
        "_",
        "-",
        "AAAA",
        "YWxpY2U",
        "18446744073709551616",
    ])
}

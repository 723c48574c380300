//! `herald token ...`: issue and check HMAC session tokens offline, with
//! the key of the nodes' `<auth mode="hmac">` (format:
//! [`herald_proto::token`]). Talks to no node.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use herald_client::ClientError;
use herald_proto::token;
use serde::Serialize;

use super::output::format_ms;
use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a session token for a user; prints the token alone (T=$(herald token issue ...)).
    Issue(IssueArgs),
    /// Check a token for a user; prints its claims, or fails with the refusal code (bad_token, token_expired, wrong_user).
    Verify(VerifyArgs),
}

/// The HMAC key: exactly one of `--key` (or `HERALD_TOKEN_KEY`) and
/// `--key-file`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// The nodes' HMAC key, as in <auth mode="hmac" key>. On the command line it is visible to other local users; prefer HERALD_TOKEN_KEY or --key-file.
    #[arg(long, value_name = "KEY", env = "HERALD_TOKEN_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// File holding the HMAC key, as in <auth mode="hmac" key-file> (trailing whitespace is ignored).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// `token issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Internal user id the token is for.
    #[arg(long)]
    pub uid: String,
    /// How long the token is valid: <n>s, <n>m, <n>h or <n>d (e.g. 90s, 15m, 24h, 7d). Nodes refuse tokens that live longer than their <auth max-token-lifetime-s> (7 days by default) with token_lifetime.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: u64,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `token verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Internal user id the token must be for.
    #[arg(long)]
    pub uid: String,
    /// The token.
    pub token: String,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// What `token issue` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct Issued {
    pub token: String,
    pub uid: String,
    pub expires_at_unix_s: u64,
}

/// What `token verify` prints with `--json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Verified {
    pub uid: String,
    pub expires_at_unix_s: u64,
}

pub fn run(ctx: &Ctx, cmd: TokenCommand) -> Result<(), ClientError> {
    let now = now_unix_s()?;
    match cmd {
        TokenCommand::Issue(a) => {
            let key = read_key(&a.key)?;
            let issued = issue(&key, &a.uid, a.ttl, now)?;
            ctx.out.print(&issued, |i| i.token.clone())
        }
        TokenCommand::Verify(a) => {
            let key = read_key(&a.key)?;
            let v = verify(&key, &a.token, &a.uid, now)?;
            ctx.out.print(&v, |v| {
                format!(
                    "uid      {}\nexpires  {} ({})",
                    v.uid,
                    format_ms(v.expires_at_unix_s.saturating_mul(1000)),
                    v.expires_at_unix_s
                )
            })
        }
    }
}

/// Issues a token for `uid` valid `ttl_s` seconds from `now_unix_s`.
pub fn issue(key: &[u8], uid: &str, ttl_s: u64, now_unix_s: u64) -> Result<Issued, ClientError> {
    if uid.is_empty() {
        return Err(ClientError::InvalidArgument("--uid must not be empty".into()));
    }
    let expires_at_unix_s = now_unix_s
        .checked_add(ttl_s)
        .ok_or_else(|| ClientError::InvalidArgument("--ttl is too large".into()))?;
    Ok(Issued {
        token: token::issue(key, uid, expires_at_unix_s),
        uid: uid.to_string(),
        expires_at_unix_s,
    })
}

/// Checks `tok` for `uid`; a refusal is an error whose code is the
/// token's (`bad_token`, `token_expired`, `wrong_user`).
pub fn verify(key: &[u8], tok: &str, uid: &str, now_unix_s: u64) -> Result<Verified, ClientError> {
    token::verify(key, tok, uid, now_unix_s)
        .map(|c| Verified { uid: c.uid, expires_at_unix_s: c.expires_at_unix_s })
        .map_err(|e| ClientError::Server { code: e.code().to_string(), message: e.to_string() })
}

/// The key bytes from `--key`/`HERALD_TOKEN_KEY` or `--key-file`, read the
/// way the node reads `<auth>`: the text's bytes, or the file's bytes
/// without trailing whitespace.
pub fn read_key(k: &KeyArgs) -> Result<Vec<u8>, ClientError> {
    let key = match (&k.key, &k.key_file) {
        (Some(_), Some(_)) => {
            return Err(ClientError::InvalidArgument(
                "give either --key (or HERALD_TOKEN_KEY) or --key-file, not both".into(),
            ))
        }
        (None, None) => {
            return Err(ClientError::InvalidArgument(
                "no key: give --key-file PATH, --key KEY or set HERALD_TOKEN_KEY".into(),
            ))
        }
        (Some(key), None) => key.as_bytes().to_vec(),
        (None, Some(path)) => read_key_file(path)?,
    };
    if key.is_empty() {
        return Err(ClientError::InvalidArgument("the key is empty".into()));
    }
    Ok(key)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    let mut key = std::fs::read(path).map_err(|e| {
        ClientError::InvalidArgument(format!("cannot read the key file {}: {e}", path.display()))
    })?;
    let end = key.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    key.truncate(end);
    Ok(key)
}

/// Parses a duration `<n><unit>`, unit `s`, `m`, `h` or `d`, into seconds;
/// refuses 0, a missing unit and overflow.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a duration: use <n>s, <n>m, <n>h or <n>d, e.g. 90s, 15m, 24h, 7d");
    let unit = s.chars().last().ok_or_else(bad)?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is too long a duration"))?;
    if n == 0 {
        return Err(format!("{s:?}: the duration must be more than 0"));
    }
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too long a duration"))
}

fn now_unix_s() -> Result<u64, ClientError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| ClientError::InvalidArgument("the system clock is before 1970".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    const NOW: u64 = 1_700_000_000;

    fn parse(args: &[&str]) -> Result<TokenCommand, clap::Error> {
        let mut v = vec!["herald", "token"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Token(c) => Ok(c),
            other => panic!("not token: {other:?}"),
        }
    }

    fn key_args(key: Option<&str>, key_file: Option<&Path>) -> KeyArgs {
        KeyArgs { key: key.map(str::to_string), key_file: key_file.map(Path::to_path_buf) }
    }

    /// The four units parse to seconds.
    #[test]
    fn cli_token_ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("1s"), Ok(1));
    }

    /// Zero, missing or unknown units, signs, spaces, fractions, empty input
    /// and overflow are refused with a message naming the input.
    #[test]
    fn cli_token_ttl_refused() {
        for s in [
            "0s",
            "0d",
            "",
            "s",
            "90",
            "15x",
            "1.5h",
            "-5m",
            "+5m",
            " 5m",
            "5 m",
            "5M",
            "h24",
            "99999999999999999999d",
            "213503982334602d",
            "5ms",
            "é",
        ] {
            let e = parse_ttl(s).expect_err(s);
            assert!(e.contains(&format!("{s:?}")), "{s}: {e}");
        }
        assert!(parse_ttl("0s").unwrap_err().contains("more than 0"));
    }

    /// A token issued the way `token issue` does verifies the way `token
    /// verify` does, with the claimed uid and expiry.
    #[test]
    fn cli_token_issue_verify_roundtrip() {
        let i = issue(b"0123456789abcdef", "u1", 3600, NOW).unwrap();
        assert_eq!((i.uid.as_str(), i.expires_at_unix_s), ("u1", NOW + 3600));
        assert_eq!(
            verify(b"0123456789abcdef", &i.token, "u1", NOW).unwrap(),
            Verified { uid: "u1".into(), expires_at_unix_s: NOW + 3600 }
        );
    }

    /// `verify` refusals carry the token codes, which `main` prints as
    /// `error: <code>: ...` with exit 1.
    #[test]
    fn cli_token_verify_refusals() {
        let key = b"0123456789abcdef";
        let t = issue(key, "u1", 60, NOW).unwrap().token;
        assert_eq!(verify(key, &t, "u1", NOW + 60).unwrap_err().code(), "token_expired");
        assert_eq!(verify(key, &t, "u2", NOW).unwrap_err().code(), "wrong_user");
        assert_eq!(verify(b"another key 1234", &t, "u1", NOW).unwrap_err().code(), "bad_token");
        assert_eq!(verify(key, "garbage", "u1", NOW).unwrap_err().code(), "bad_token");
    }

    /// An empty uid and an expiry past u64 are refused before signing.
    #[test]
    fn cli_token_issue_refusals() {
        assert_eq!(issue(b"k", "", 60, NOW).unwrap_err().code(), "invalid_argument");
        assert_eq!(issue(b"k", "u1", u64::MAX, NOW).unwrap_err().code(), "invalid_argument");
    }

    /// Exactly one key source is required; both or none is a clear error;
    /// an empty key is refused.
    #[test]
    fn cli_token_key_sources() {
        assert_eq!(read_key(&key_args(Some("k1"), None)).unwrap(), b"k1");
        let both = read_key(&key_args(Some("k1"), Some(Path::new("/x")))).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let none = read_key(&key_args(None, None)).unwrap_err();
        assert!(none.to_string().contains("HERALD_TOKEN_KEY"), "{none}");
        assert!(read_key(&key_args(Some(""), None)).unwrap_err().to_string().contains("empty"));
    }

    /// A key file is read as bytes with trailing whitespace (a final
    /// newline) removed, leading and inner spaces kept; a missing file
    /// names its path.
    #[test]
    fn cli_token_key_file() {
        let path = std::env::temp_dir().join(format!("herald-token-key-{}", std::process::id()));
        std::fs::write(&path, b" my key\xff\n\r\n\t ").unwrap();
        let key = read_key(&key_args(None, Some(&path)));
        std::fs::write(&path, b"\n\n").unwrap();
        let blank = read_key(&key_args(None, Some(&path)));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(key.unwrap(), b" my key\xff");
        assert!(blank.unwrap_err().to_string().contains("empty"));
        let missing = read_key(&key_args(None, Some(&path))).unwrap_err();
        assert!(missing.to_string().contains(&path.display().to_string()), "{missing}");
    }

    /// The command line: `issue` needs --uid and a valid --ttl; `verify`
    /// needs --uid and the token; the key flags are optional for clap
    /// (checked by `read_key`, so HERALD_TOKEN_KEY can stand in).
    #[test]
    fn cli_parse_token() {
        let TokenCommand::Issue(a) =
            parse(&["issue", "--uid", "u1", "--ttl", "24h", "--key-file", "/k"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.uid.as_str(), a.ttl, a.key.key_file.as_deref()),
            ("u1", 86_400, Some(Path::new("/k")))
        );
        assert!(parse(&["issue", "--uid", "u1", "--ttl", "0s", "--key", "k"]).is_err());
        assert!(parse(&["issue", "--uid", "u1", "--key", "k"]).is_err());
        assert!(parse(&["issue", "--ttl", "1h", "--key", "k"]).is_err());
        let TokenCommand::Verify(a) =
            parse(&["verify", "--uid", "u1", "v1.x.1.y", "--key", "k"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.uid.as_str(), a.token.as_str(), a.key.key.as_deref()),
            ("u1", "v1.x.1.y", Some("k"))
        );
        assert!(parse(&["verify", "--uid", "u1"]).is_err());
    }
}

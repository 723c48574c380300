//! The credential a client sends with every gRPC call (issue 14): an
//! application's API key, or a user's session token (with the uid, for
//! nodes whose `<auth mode="external">` cannot read it from the token).
//! [`Credential`] is a tonic interceptor; [`AuthChannel`] a channel that
//! carries it.
//!
//! The command line takes it from a flag, an environment variable or a
//! file ([`Credential::from_sources`]): `--api-key` / `HERALD_API_KEY` /
//! `--api-key-file` (`HERALD_API_KEY_FILE`); programs can read the same
//! variables with [`Credential::from_env`].

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::ClientError;

/// A channel whose every call carries a [`Credential`].
pub type AuthChannel = InterceptedService<Channel, Credential>;

/// Longest key file read: a key is 46 bytes; the cap keeps a wrong path
/// (a device, a large file) from being read whole.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The `authorization` (and `x-herald-user`) metadata of every call; empty:
/// none (only anonymous routes answer).
#[derive(Clone, Default)]
pub struct Credential {
    bearer: Option<MetadataValue<Ascii>>,
    user: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credential {
    /// Never shows the key or token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .finish()
    }
}

fn value(what: &str, s: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    s.parse().map_err(|_| {
        ClientError::InvalidArgument(format!("the {what} is not printable ASCII: cannot send it"))
    })
}

impl Credential {
    /// No credential.
    pub fn none() -> Self {
        Credential::default()
    }

    /// An application's API key (`hk_...`).
    pub fn api_key(key: &str) -> Result<Self, ClientError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(ClientError::InvalidArgument("the API key is empty".into()));
        }
        Ok(Credential { bearer: Some(value("API key", &format!("Bearer {key}"))?), user: None })
    }

    /// A user's session token, naming the user too.
    pub fn user_token(uid: &str, token: &str) -> Result<Self, ClientError> {
        Ok(Credential {
            bearer: Some(value("session token", &format!("Bearer {}", token.trim()))?),
            user: Some(value("uid", uid)?),
        })
    }

    /// Whether any credential is set.
    pub fn is_set(&self) -> bool {
        self.bearer.is_some()
    }

    /// The API key of the command line: `key` (the flag or its environment
    /// variable), else the first line of `file`; none without either, and
    /// refused with both.
    pub fn from_sources(key: Option<&str>, file: Option<&Path>) -> Result<Self, ClientError> {
        match (key, file) {
            (Some(_), Some(f)) => Err(ClientError::InvalidArgument(format!(
                "give the API key once: --api-key (HERALD_API_KEY) or --api-key-file {}",
                f.display()
            ))),
            (Some(k), None) => Self::api_key(k),
            (None, Some(f)) => Self::api_key(&read_key_file(f)?),
            (None, None) => Ok(Self::none()),
        }
    }

    /// A session token given on the command line: `token` (the flag or
    /// `HERALD_TOKEN`), else the content of `file` (`--token-file` or
    /// `HERALD_TOKEN_FILE`, surrounding whitespace removed); refused with
    /// both or neither.
    pub fn token_from_sources(
        token: Option<&str>,
        file: Option<&Path>,
    ) -> Result<String, ClientError> {
        match (token, file) {
            (Some(_), Some(f)) => Err(ClientError::InvalidArgument(format!(
                "give the session token once: --token (HERALD_TOKEN) or --token-file {}",
                f.display()
            ))),
            (Some(t), None) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            (Some(_), None) => {
                Err(ClientError::InvalidArgument("the session token is empty".into()))
            }
            (None, Some(f)) => read_secret_file("--token-file", f),
            (None, None) => Err(ClientError::InvalidArgument(
                "a session token is required: --token, HERALD_TOKEN, --token-file or \
                 HERALD_TOKEN_FILE (`herald token issue` makes one)"
                    .into(),
            )),
        }
    }

    /// The API key of the environment, as the CLI reads it:
    /// `HERALD_API_KEY`, else the file `HERALD_API_KEY_FILE` names; none
    /// without either, refused with both.
    pub fn from_env() -> Result<Self, ClientError> {
        let key = std::env::var("HERALD_API_KEY").ok().filter(|k| !k.is_empty());
        let file = std::env::var_os("HERALD_API_KEY_FILE").filter(|f| !f.is_empty());
        Self::from_sources(key.as_deref(), file.as_deref().map(Path::new))
    }

    /// Adds the credential to a request's metadata.
    pub fn apply<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        if let Some(u) = &self.user {
            req.metadata_mut().insert("x-herald-user", u.clone());
        }
    }

    /// The HTTP `Authorization` header value, for HTTP clients.
    pub fn http_header(&self) -> Option<&str> {
        self.bearer.as_ref().and_then(|b| b.to_str().ok())
    }
}

impl tonic::service::Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.apply(&mut req);
        Ok(req)
    }
}

/// A key file's key: its content without surrounding whitespace.
fn read_key_file(path: &Path) -> Result<String, ClientError> {
    read_secret_file("--api-key-file", path)
}

/// A secret file's content without surrounding whitespace, read up to
/// `MAX_KEY_FILE_BYTES`; `flag` names it in errors.
fn read_secret_file(flag: &str, path: &Path) -> Result<String, ClientError> {
    use std::io::Read as _;
    let bad = |e: &dyn std::fmt::Display| {
        ClientError::InvalidArgument(format!("{flag} {}: {e}", path.display()))
    };
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES).read_to_string(&mut s))
        .map_err(|e| bad(&e))?;
    let key = s.trim();
    if key.is_empty() {
        return Err(bad(&"the file is empty"));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session token comes from the flag or from a file (trimmed); both,
    /// neither, an empty token or an empty file are refused, naming the
    /// flags.
    #[test]
    fn credential_token_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "  v1.abc.def \n").unwrap();
        assert_eq!(Credential::token_from_sources(Some(" t "), None).unwrap(), "t");
        assert_eq!(Credential::token_from_sources(None, Some(&f)).unwrap(), "v1.abc.def");
        let both = Credential::token_from_sources(Some("t"), Some(&f)).unwrap_err();
        assert!(both.to_string().contains("--token-file"), "{both}");
        let none = Credential::token_from_sources(None, None).unwrap_err();
        assert!(none.to_string().contains("HERALD_TOKEN_FILE"), "{none}");
        assert!(Credential::token_from_sources(Some(" "), None).is_err());
        std::fs::write(&f, "\n").unwrap();
        let empty = Credential::token_from_sources(None, Some(&f)).unwrap_err();
        assert!(empty.to_string().contains("--token-file"), "{empty}");
    }

    /// A key goes out as `authorization: Bearer <key>`, a user token with
    /// `x-herald-user` too; no credential adds nothing; Debug hides both.
    #[test]
    fn credential_metadata() {
        let mut req = tonic::Request::new(());
        Credential::api_key(" hk_abc\n").unwrap().apply(&mut req);
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer hk_abc");
        assert!(req.metadata().get("x-herald-user").is_none());
        let mut req = tonic::Request::new(());
        let c = Credential::user_token("alice", "v1.x.1.y").unwrap();
        c.apply(&mut req);
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer v1.x.1.y");
        assert_eq!(req.metadata().get("x-herald-user").unwrap(), "alice");
        assert!(!format!("{c:?}").contains("v1.x"), "{c:?}");
        let mut req = tonic::Request::new(());
        Credential::none().apply(&mut req);
        assert!(req.metadata().is_empty());
        assert!(Credential::api_key("  ").is_err() && Credential::api_key("hk_a\nb").is_err());
    }

    /// The key comes from the flag or the file (trimmed), never both; a
    /// missing or empty file is an `invalid_argument` naming it.
    #[test]
    fn credential_sources() {
        assert!(!Credential::from_sources(None, None).unwrap().is_set());
        let c = Credential::from_sources(Some("hk_a"), None).unwrap();
        assert_eq!(c.http_header(), Some("Bearer hk_a"));
        let dir = std::env::temp_dir().join(format!("herald-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "hk_file\n").unwrap();
        let c = Credential::from_sources(None, Some(&f)).unwrap();
        assert_eq!(c.http_header(), Some("Bearer hk_file"));
        assert_eq!(
            Credential::from_sources(Some("hk_a"), Some(&f)).unwrap_err().code(),
            "invalid_argument"
        );
        std::fs::write(&f, "\n").unwrap();
        let e = Credential::from_sources(None, Some(&f)).unwrap_err();
        assert!(e.message().contains("empty"), "{e}");
        let e = Credential::from_sources(None, Some(&dir.join("nope"))).unwrap_err();
        assert!(e.message().contains("nope"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

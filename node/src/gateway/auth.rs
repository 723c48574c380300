//! Session authentication (MISSION M6): the gateway checks a client's uid
//! and session token with [`Authenticator::check`] before anything else
//! happens for the session.
//!
//! The `<auth>` element of the XML picks the method ([`AuthConfig`]):
//!
//! - `Hmac`: tokens of [`herald_proto::token`], verified locally.
//! - `External`: `POST {url}` with JSON `{"uid", "token", "client"}`;
//!   2xx accepts, 401/403 refuses (`auth_denied`); anything else, including
//!   no answer within `timeout_ms`, refuses too (`auth_unavailable`): the
//!   gateway fails closed.
//! - `Unconfigured`: every session is refused (`auth_not_configured`).

use herald_proto::codes::{self, Code};
use std::time::Duration;

use herald_proto::token::{self, TokenError};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::AuthConfig;

/// Most of an external service's answer body that is read. Only the status
/// matters; the body is drained so the pooled connection can be reused,
/// and capped so a misbehaving service cannot make the node buffer an
/// unbounded answer per session (a larger body just drops the connection).
pub const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024;

/// Why a session was refused. [`code`](AuthError::code) gives the stable
/// code the client sees.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The HMAC token was refused (`bad_token`, `token_expired`,
    /// `wrong_user`, `token_lifetime`).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The external service answered 401 or 403.
    #[error("the authentication service refused the session (HTTP {status})")]
    Denied { status: u16 },
    /// The external service could not give an answer: unreachable, too
    /// slow, or an answer other than 2xx/401/403.
    #[error("the authentication service is unavailable: {0}")]
    Unavailable(String),
    /// No `<auth>` in the configuration (or an unusable one).
    #[error("authentication is not configured on this node")]
    NotConfigured,
}

impl AuthError {
    /// The stable snake_case code: `bad_token`, `token_expired`,
    /// `wrong_user`, `auth_denied`, `auth_unavailable`,
    /// `auth_not_configured`.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Token(e) => e.code(),
            AuthError::Denied { .. } => codes::AUTH_DENIED,
            AuthError::Unavailable(_) => codes::AUTH_UNAVAILABLE,
            AuthError::NotConfigured => codes::AUTH_NOT_CONFIGURED,
        }
    }
}

/// Checks session tokens the way the configuration says. Cheap to clone;
/// clones share the external service's connection pool.
#[derive(Clone)]
pub struct Authenticator {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Hmac { key: Vec<u8>, max_lifetime_s: u64 },
    External(Box<External>),
    Unconfigured,
}

#[derive(Clone)]
struct External {
    /// The parsed URL, or why it cannot be used (every check then answers
    /// `auth_unavailable`).
    uri: Result<Uri, String>,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Authenticator {
    /// Never shows the HMAC key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Hmac { .. } => f.write_str("Authenticator::Hmac"),
            Mode::External(e) => write!(f, "Authenticator::External({:?}, {:?})", e.uri, e.timeout),
            Mode::Unconfigured => f.write_str("Authenticator::Unconfigured"),
        }
    }
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Self {
        let mode = match cfg {
            // Anyone can sign with an empty key: treat it as no key at all.
            AuthConfig::Hmac { key, .. } if key.is_empty() => {
                tracing::warn!("auth: the HMAC key is empty; every session will be refused");
                Mode::Unconfigured
            }
            AuthConfig::Hmac { key, max_token_lifetime_s } => {
                Mode::Hmac { key: key.clone(), max_lifetime_s: *max_token_lifetime_s }
            }
            AuthConfig::External { url, timeout_ms } => {
                let uri = parse_url(url);
                if let Err(e) = &uri {
                    tracing::warn!("auth: {e}; every session will be refused");
                }
                Mode::External(Box::new(External {
                    uri,
                    timeout: Duration::from_millis(*timeout_ms),
                    client: Client::builder(TokioExecutor::new()).build_http(),
                }))
            }
            AuthConfig::Unconfigured => Mode::Unconfigured,
        };
        Authenticator { mode }
    }

    /// Checks a session token before anything else happens for the session.
    pub async fn check(
        &self,
        uid: &str,
        token: &str,
        client: &str,
        now_unix_s: u64,
    ) -> Result<(), AuthError> {
        match &self.mode {
            Mode::Hmac { key, max_lifetime_s } => {
                token::verify_bounded(key, token, uid, now_unix_s, *max_lifetime_s)
                    .map(|_| ())
                    .map_err(AuthError::from)
            }
            Mode::External(e) => e.check(uid, token, client).await,
            Mode::Unconfigured => Err(AuthError::NotConfigured),
        }
    }
}

/// The external service's URL, which must be plain `http://host[:port]/...`.
fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri =
        url.parse().map_err(|e| format!("the auth URL {url:?} is not a valid URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => {
            Err(format!("the auth URL {url:?} is https, which is not supported (http only)"))
        }
        _ => Err(format!("the auth URL {url:?} must be http://host[:port]/path")),
    }
}

impl External {
    async fn check(&self, uid: &str, token: &str, client: &str) -> Result<(), AuthError> {
        let uri = self.uri.clone().map_err(AuthError::Unavailable)?;
        let body = serde_json::json!({ "uid": uid, "token": token, "client": client }).to_string();
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::Unavailable(format!("cannot build the request: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => {
                return Err(AuthError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
            Ok(Err(e)) => return Err(AuthError::Unavailable(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        // The status decides; the body is only drained (see
        // MAX_RESPONSE_BODY_BYTES), within what is left of the timeout.
        let _ = tokio::time::timeout_at(
            deadline,
            Limited::new(resp.into_body(), MAX_RESPONSE_BODY_BYTES).collect(),
        )
        .await;
        if status.is_success() {
            Ok(())
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Err(AuthError::Denied { status: status.as_u16() })
        } else {
            Err(AuthError::Unavailable(format!("unexpected answer HTTP {}", status.as_u16())))
        }
    }
}

/// An error and its sources, `a: b: c` (hyper's own message is terse).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::Value;

    const KEY: &[u8] = b"gateway test key";
    const NOW: u64 = 1_700_000_000;

    fn hmac() -> Authenticator {
        Authenticator::new(&AuthConfig::Hmac { key: KEY.to_vec(), max_token_lifetime_s: 3600 })
    }

    fn external(url: String, timeout_ms: u64) -> Authenticator {
        Authenticator::new(&AuthConfig::External { url, timeout_ms })
    }

    /// Serves `app` on 127.0.0.1:0; returns its base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A service that accepts token "good" for uid "u1" and answers 403
    /// otherwise, recording every body it sees.
    async fn auth_service() -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/auth",
                post(
                    |State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                        let ok = v["uid"] == "u1" && v["token"] == "good";
                        seen.lock().unwrap().push(v);
                        if ok {
                            StatusCode::OK
                        } else {
                            StatusCode::FORBIDDEN
                        }
                    },
                ),
            )
            .with_state(seen.clone());
        (format!("{}/auth", serve(app).await), seen)
    }

    /// HMAC: a valid token for the uid is accepted.
    #[tokio::test]
    async fn gateway_auth_hmac_accepts() {
        let t = token::issue(KEY, "u1", NOW + 60);
        hmac().check("u1", &t, "mobile", NOW).await.unwrap();
    }

    /// HMAC: a token expiring further ahead than the configured lifetime
    /// (an hour here) is refused with `token_lifetime`; one within it is
    /// accepted.
    #[tokio::test]
    async fn gateway_auth_hmac_lifetime() {
        hmac().check("u1", &token::issue(KEY, "u1", NOW + 3600), "web", NOW).await.unwrap();
        let t = token::issue(KEY, "u1", 4_000_000_000);
        let e = hmac().check("u1", &t, "web", NOW).await.unwrap_err();
        assert_eq!(e.code(), "token_lifetime", "{e}");
    }

    /// HMAC: an expired token is refused with `token_expired`.
    #[tokio::test]
    async fn gateway_auth_hmac_expired() {
        let t = token::issue(KEY, "u1", NOW);
        let e = hmac().check("u1", &t, "mobile", NOW).await.unwrap_err();
        assert_eq!(e.code(), "token_expired", "{e}");
    }

    /// HMAC: a token signed with another key, or garbage, is `bad_token`.
    #[tokio::test]
    async fn gateway_auth_hmac_wrong_key() {
        let t = token::issue(b"another key", "u1", NOW + 60);
        assert_eq!(hmac().check("u1", &t, "mobile", NOW).await.unwrap_err().code(), "bad_token");
        assert_eq!(
            hmac().check("u1", "garbage", "mobile", NOW).await.unwrap_err().code(),
            "bad_token"
        );
    }

    /// HMAC: another user's valid token is refused with `wrong_user`.
    #[tokio::test]
    async fn gateway_auth_hmac_wrong_user() {
        let t = token::issue(KEY, "u2", NOW + 60);
        assert_eq!(hmac().check("u1", &t, "mobile", NOW).await.unwrap_err().code(), "wrong_user");
    }

    /// No `<auth>`, or an empty HMAC key, refuses every session with
    /// `auth_not_configured`, and the Debug form never shows the key.
    #[tokio::test]
    async fn gateway_auth_not_configured() {
        let a = Authenticator::new(&AuthConfig::Unconfigured);
        assert_eq!(
            a.check("u1", "t", "mobile", NOW).await.unwrap_err().code(),
            "auth_not_configured"
        );
        let a = Authenticator::new(&AuthConfig::Hmac { key: vec![], max_token_lifetime_s: 60 });
        let t = token::issue(b"", "u1", NOW + 60);
        assert_eq!(
            a.check("u1", &t, "mobile", NOW).await.unwrap_err().code(),
            "auth_not_configured"
        );
        assert!(!format!("{:?}", hmac()).contains("gateway test key"));
    }

    /// External: 200 accepts, 403 is `auth_denied`; the service saw the
    /// uid, token and client as JSON, once per check.
    #[tokio::test]
    async fn gateway_auth_external_accept_and_deny() {
        let (url, seen) = auth_service().await;
        let a = external(url, 2_000);
        a.check("u1", "good", "mobile", NOW).await.unwrap();
        let e = a.check("u1", "bad", "web", NOW).await.unwrap_err();
        assert_eq!(e.code(), "auth_denied", "{e}");
        assert!(matches!(e, AuthError::Denied { status: 403 }));
        let e = a.check("u2", "good", "pc", NOW).await.unwrap_err();
        assert_eq!(e.code(), "auth_denied", "{e}");
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                serde_json::json!({"uid": "u1", "token": "good", "client": "mobile"}),
                serde_json::json!({"uid": "u1", "token": "bad", "client": "web"}),
                serde_json::json!({"uid": "u2", "token": "good", "client": "pc"}),
            ]
        );
    }

    /// External: the request is a POST with `Content-Type:
    /// application/json` (axum's `Json` extractor refuses anything else,
    /// so check the header directly too).
    #[tokio::test]
    async fn gateway_auth_external_request_shape() {
        let app = Router::new().route(
            "/",
            post(|headers: http::HeaderMap| async move {
                if headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes())
                    == Some(b"application/json")
                {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::BAD_REQUEST
                }
            }),
        );
        let a = external(format!("{}/", serve(app).await), 2_000);
        a.check("u1", "t", "mobile", NOW).await.unwrap();
    }

    /// External: a service slower than timeout_ms is `auth_unavailable`,
    /// and the check returns at about the timeout.
    #[tokio::test]
    async fn gateway_auth_external_timeout() {
        let app = Router::new().route(
            "/",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        );
        let a = external(format!("{}/", serve(app).await), 200);
        let t0 = Instant::now();
        let e = a.check("u1", "good", "mobile", NOW).await.unwrap_err();
        assert_eq!(e.code(), "auth_unavailable", "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    /// External: nothing listening on the port is `auth_unavailable`.
    #[tokio::test]
    async fn gateway_auth_external_closed_port() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let a = external(format!("http://127.0.0.1:{port}/auth"), 2_000);
        let e = a.check("u1", "good", "mobile", NOW).await.unwrap_err();
        assert_eq!(e.code(), "auth_unavailable", "{e}");
    }

    /// External: 5xx and other unexpected statuses (here 500, 302, 404) are
    /// `auth_unavailable`, not acceptance.
    #[tokio::test]
    async fn gateway_auth_external_unexpected_status() {
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::FOUND, StatusCode::NOT_FOUND]
        {
            let app = Router::new().route("/", post(move || async move { status }));
            let a = external(format!("{}/", serve(app).await), 2_000);
            let e = a.check("u1", "good", "mobile", NOW).await.unwrap_err();
            assert_eq!(e.code(), "auth_unavailable", "{status}: {e}");
        }
    }

    /// External: a 2xx with a body over the cap still accepts (the status
    /// decides; the body is only drained).
    #[tokio::test]
    async fn gateway_auth_external_large_body() {
        let app =
            Router::new().route("/", post(|| async { "x".repeat(MAX_RESPONSE_BODY_BYTES * 4) }));
        let a = external(format!("{}/", serve(app).await), 2_000);
        a.check("u1", "good", "mobile", NOW).await.unwrap();
    }

    /// External: an https, relative or unparsable URL is refused at every
    /// check with `auth_unavailable` (fail closed), without panicking.
    #[tokio::test]
    async fn gateway_auth_external_bad_url() {
        for url in ["https://auth.example/check", "/auth", "not a url", ""] {
            let e = external(url.into(), 200).check("u1", "good", "mobile", NOW).await.unwrap_err();
            assert_eq!(e.code(), "auth_unavailable", "{url}: {e}");
        }
    }
}

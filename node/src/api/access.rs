//! Principals of the publish port (issue 14): who a request comes from,
//! checked by [`guard`] before any handler runs, against the rule of its
//! entry in [`super::routes::ROUTES`].
//!
//! - Applications send an API key (`Authorization: Bearer hk_...`; gRPC
//!   metadata `authorization`) listed in `<access>` by its SHA-256; the
//!   route's scope must be one of the key's.
//! - Users send their session token (the same header, or `?token=` on
//!   HTTP), checked by the gateway's [`crate::gateway::auth::Authenticator`]
//!   for the uid the route names ([`UserFrom`]).
//! - Anonymous callers reach `/healthz` and the standard gRPC health and
//!   reflection services only (and `/metrics` with
//!   `<access public-metrics="true">`).
//!
//! The principal travels to the handler as a request extension
//! ([`Principal`]); handlers whose uid is in the body bind it with
//! [`Principal::act_as`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_proto::apikey::{self, Scope};
use herald_proto::codes;
use http::{header, HeaderMap};

use super::routes::{self, Rule, UserFrom};
use super::{Api, ApiError};
use crate::config::AccessConfig;

/// Header (gRPC metadata) naming the user a session token is for, where
/// the route itself does not (`UserFrom::Claim` and the media viewer).
pub const USER_HEADER: &str = "x-herald-user";

/// One application key as the node holds it.
#[derive(Debug, Clone)]
struct Key {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// The application keys and the metrics setting of `<access>`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    keys: Vec<Key>,
    pub public_metrics: bool,
}

impl Access {
    pub fn new(cfg: &AccessConfig) -> Self {
        let keys = cfg
            .keys
            .iter()
            .map(|k| Key {
                name: k.name.as_str().into(),
                digest: k.digest,
                scopes: k.scopes.clone(),
            })
            .collect();
        Access { keys, public_metrics: cfg.public_metrics }
    }

    /// Whether `p` is an application whose key holds scope `s` (a route's
    /// own scope was checked by [`guard`]; this is for a request field that
    /// needs more, such as a watch of every user).
    pub fn holds(&self, p: &Principal, s: Scope) -> bool {
        p.key().and_then(|k| self.find(k)).is_some_and(|k| k.scopes.contains(&s))
    }

    /// The application holding `key`, if any: its hash is compared with
    /// every listed one in constant time (no early exit), so timing tells
    /// nothing about how close a guess came.
    fn find(&self, key: &str) -> Option<&Key> {
        if key.len() > apikey::MAX_KEY_BYTES {
            return None;
        }
        let d = apikey::digest(key);
        let mut found = None;
        for k in &self.keys {
            if apikey::digest_eq(&d, &k.digest) {
                found = Some(k);
            }
        }
        found
    }
}

/// Who a request comes from, as [`guard`] established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credential: an anonymous route, or one whose handler checks a
    /// capability of its own.
    Anonymous,
    /// An application's API key (kept to forward the call to the leader).
    App { name: Arc<str>, key: Arc<str> },
    /// A user's session token, checked for `uid`.
    User { uid: String },
}

impl Principal {
    /// Binds a uid the request body names to the principal: an
    /// application may name any user (its scope allowed the route); a user
    /// only itself (`wrong_user` otherwise); anonymous nobody.
    pub fn act_as(&self, uid: &str) -> Result<(), ApiError> {
        match self {
            Principal::App { .. } => Ok(()),
            Principal::User { uid: me } if me == uid => Ok(()),
            Principal::User { uid: me } => Err(ApiError::new(
                codes::WRONG_USER,
                format!("the session token is {me}'s: it cannot act as {uid:?}"),
            )),
            Principal::Anonymous => {
                Err(ApiError::new(codes::MISSING_CREDENTIAL, "this call needs a credential"))
            }
        }
    }

    /// [`act_as`](Self::act_as) for a uid field a user may leave empty:
    /// empty means the user itself.
    pub fn bind(&self, uid: &mut String) -> Result<(), ApiError> {
        if let (Principal::User { uid: me }, true) = (self, uid.is_empty()) {
            uid.clone_from(me);
        }
        self.act_as(uid)
    }

    /// The user, for a session token.
    pub fn user(&self) -> Option<&str> {
        match self {
            Principal::User { uid } => Some(uid),
            _ => None,
        }
    }

    /// The namespace of the principal's idempotency keys: one
    /// principal's keys never meet another's (`app:<name>` or `user`; a
    /// user's messages are all `from` itself, which keys them too).
    pub fn namespace(&self) -> String {
        match self {
            Principal::App { name, .. } => format!("app:{name}"),
            Principal::User { .. } => "user".into(),
            Principal::Anonymous => "anonymous".into(),
        }
    }

    /// The API key, to forward the call to another node.
    pub fn key(&self) -> Option<&str> {
        match self {
            Principal::App { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// A query parameter of the request (the first of that name).
fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The axum middleware over the whole publish port (HTTP and gRPC): looks
/// the request up in the route table, establishes its principal as the
/// rule says and refuses it with a stable code before the handler runs;
/// the handler finds the [`Principal`] in the request's extensions.
pub async fn guard(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    // Only Sync parts are held across the awaits (the body is not Sync).
    let (method, uri) = (req.method().clone(), req.uri().clone());
    match authorize(&api, &method, &uri, req.headers(), grpc).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            api.count_error(&e);
            if grpc {
                e.to_grpc().into_http::<axum::body::Body>().into_response()
            } else {
                e.into_response()
            }
        }
    }
}

/// The principal of a request, or why it is refused.
async fn authorize(
    api: &Api,
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    grpc: bool,
) -> Result<Principal, ApiError> {
    let Some(m) = routes::lookup(method, uri.path(), grpc) else {
        return Err(ApiError::new(codes::NOT_FOUND, "no such route"));
    };
    let (app, user) = match m.route.rule {
        Rule::Anonymous | Rule::Capability | Rule::Hello => return Ok(Principal::Anonymous),
        Rule::Metrics if api.access.public_metrics => return Ok(Principal::Anonymous),
        Rule::Metrics => (Some(Scope::Metrics), None),
        Rule::Principal { app, user } => (app, user),
    };
    // Session tokens may come as ?token= (a page opened in a browser);
    // API keys only in the header, never in a URL that ends up in logs.
    let header_cred = bearer(headers).map(str::to_owned);
    let cred = match (header_cred, user) {
        (Some(c), _) => c,
        (None, Some(_)) if !grpc => query_param(uri, "token").ok_or_else(|| missing(app))?,
        (None, _) => return Err(missing(app)),
    };
    if apikey::is_key(&cred) {
        let k = api.access.find(&cred).ok_or_else(|| {
            ApiError::new(codes::BAD_KEY, "the API key is not one this cluster's <access> lists")
        })?;
        return match app {
            Some(s) if k.scopes.contains(&s) => {
                Ok(Principal::App { name: k.name.clone(), key: cred.as_str().into() })
            }
            Some(s) => Err(ApiError::new(
                codes::FORBIDDEN,
                format!("the API key of {:?} does not hold the scope {s} this route needs", k.name),
            )),
            None => Err(ApiError::new(
                codes::FORBIDDEN,
                "this route is a user's own: it takes that user's session token, not an API key",
            )),
        };
    }
    let Some(from) = user else {
        let s = app.map(Scope::name).unwrap_or("?");
        return Err(ApiError::new(
            codes::FORBIDDEN,
            format!(
                "this route takes an API key with the scope {s}; a session token cannot call it"
            ),
        ));
    };
    let named = headers.get(USER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let uid = match from {
        UserFrom::Path => m.path_uid.clone(),
        UserFrom::Viewer => {
            named.or_else(|| query_param(uri, "viewer")).or_else(|| m.path_uid.clone())
        }
        UserFrom::Claim => named.or_else(|| herald_proto::token::claimed_uid(&cred)),
    };
    let uid = match (uid, from) {
        (Some(u), _) => u,
        (None, UserFrom::Viewer) => {
            return Err(ApiError::new(
                codes::MISSING_VIEWER,
                "name the viewer: X-Herald-User: <uid> (or ?viewer=)",
            ))
        }
        (None, _) => {
            return Err(ApiError::new(
                codes::BAD_TOKEN,
                "the session token names no user (send X-Herald-User: <uid>)",
            ))
        }
    };
    super::messages::check_uid("uid", &uid)?;
    let now_s = api.node.clock().now_ms() / 1000;
    let client = if grpc { "grpc" } else { "http" };
    api.gateway
        .auth
        .check(&uid, &cred, client, now_s)
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(Principal::User { uid })
}

/// The refusal of a request without a credential: `missing_token` where
/// only a user's session token will do, `missing_credential` otherwise.
fn missing(app: Option<Scope>) -> ApiError {
    match app {
        None => ApiError::new(
            codes::MISSING_TOKEN,
            "a session token is required: Authorization: Bearer <token> (or ?token=)",
        ),
        Some(s) => ApiError::new(
            codes::MISSING_CREDENTIAL,
            format!(
                "a credential is required: Authorization: Bearer <API key with scope {s}> \
                 (or a user's session token where the route allows)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn access() -> Access {
        Access::new(&AccessConfig {
            public_metrics: false,
            keys: vec![
                ApiKeyConfig {
                    name: "pool".into(),
                    digest: apikey::digest("hk_pool"),
                    scopes: vec![Scope::PresenceWrite],
                },
                ApiKeyConfig {
                    name: "ops".into(),
                    digest: apikey::digest("hk_ops"),
                    scopes: vec![Scope::Admin],
                },
            ],
        })
    }

    /// A listed key is found by its hash, with its name and scopes; an
    /// unlisted, altered or oversized one is not.
    #[test]
    fn access_finds_keys_by_hash() {
        let a = access();
        let k = a.find("hk_ops").unwrap();
        assert_eq!((&*k.name, k.scopes.as_slice()), ("ops", &[Scope::Admin][..]));
        assert_eq!(&*a.find("hk_pool").unwrap().name, "pool");
        assert!(a.find("hk_pooL").is_none() && a.find("hk_").is_none());
        assert!(a.find(&format!("hk_{}", "x".repeat(apikey::MAX_KEY_BYTES))).is_none());
        assert!(Access::default().find("hk_pool").is_none());
    }

    /// An application may act as any user, a user only as itself
    /// (`wrong_user`), anonymous as nobody; idempotency namespaces differ
    /// per application and between applications and users.
    #[test]
    fn access_principal_binding() {
        let app = Principal::App { name: "pool".into(), key: "hk_pool".into() };
        let alice = Principal::User { uid: "alice".into() };
        assert!(app.act_as("anyone").is_ok());
        assert!(alice.act_as("alice").is_ok());
        assert_eq!(alice.act_as("bob").unwrap_err().code(), "wrong_user");
        assert_eq!(Principal::Anonymous.act_as("bob").unwrap_err().code(), "missing_credential");
        let mut empty = String::new();
        alice.bind(&mut empty).unwrap();
        assert_eq!(empty, "alice", "a user's empty uid is itself");
        let mut empty = String::new();
        app.bind(&mut empty).unwrap();
        assert_eq!(empty, "", "an application's stays empty (and is refused later as invalid)");
        let other = Principal::App { name: "web".into(), key: "hk_web".into() };
        let spaces = [app.namespace(), other.namespace(), alice.namespace()];
        assert_eq!(spaces, ["app:pool".to_string(), "app:web".into(), "user".into()]);
        assert_eq!((app.key(), alice.key(), alice.user()), (Some("hk_pool"), None, Some("alice")));
    }

    /// Bearer credentials are read case-insensitively; other schemes are not.
    #[test]
    fn access_bearer_header() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}

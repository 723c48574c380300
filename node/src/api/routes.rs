//! The one route table of the publish port (issue 14): every HTTP route
//! and every gRPC method, with who may call it. [`super::access::guard`]
//! looks each request up here before any handler runs; a request with no
//! entry is refused (`not_found`), so a route cannot ship without a rule.
//! `routes_tests` checks that the routers serve exactly the HTTP entries
//! and the .proto files declare exactly the gRPC ones.

use herald_proto::apikey::Scope;

/// The method of an entry: an HTTP method, or a gRPC call (always an
/// HTTP/2 POST of `application/grpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Put,
    Post,
    Delete,
    Grpc,
}

impl Verb {
    /// The HTTP method name (`GRPC` for gRPC entries).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Put => "PUT",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
            Verb::Grpc => "GRPC",
        }
    }
}

/// Where the uid a session token must belong to comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFrom {
    /// The `{uid}` of the path: the route is that user's own.
    Path,
    /// The viewer: `X-Herald-User` or `?viewer=`, else the path's `{uid}`
    /// (a media view or shared page names who looks).
    Viewer,
    /// `X-Herald-User` (metadata `x-herald-user` on gRPC), else the uid
    /// the token itself names; the handler then binds the uid of the body
    /// (`from`, `uid`) to it.
    Claim,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, without a credential.
    Anonymous,
    /// `/metrics`: anyone with `<access public-metrics="true">`, else an
    /// API key with the `metrics` scope.
    Metrics,
    /// The handler checks a capability of its own (an upload or access
    /// credential from an earlier, authenticated call); no principal.
    Capability,
    /// `Gateway.Session`: the session token of the Hello frame, checked by
    /// the session before anything else happens.
    Hello,
    /// An API key holding `app` (None: no application may), or a session
    /// token of the user `user` names (None: no user may).
    Principal { app: Option<Scope>, user: Option<UserFrom> },
}

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    /// The path pattern (`{name}` matches one segment), or the gRPC path
    /// `/package.Service/Method`.
    pub path: &'static str,
    pub rule: Rule,
}

const fn app(s: Scope) -> Rule {
    Rule::Principal { app: Some(s), user: None }
}
const fn app_or_user(s: Scope, from: UserFrom) -> Rule {
    Rule::Principal { app: Some(s), user: Some(from) }
}
const fn user(from: UserFrom) -> Rule {
    Rule::Principal { app: None, user: Some(from) }
}
const fn r(verb: Verb, path: &'static str, rule: Rule) -> Route {
    Route { verb, path, rule }
}

use Scope::*;
use UserFrom::{Claim, Path, Viewer};
use Verb::*;

/// Every route of the publish port.
pub const ROUTES: &[Route] = &[
    // Health and metrics.
    r(Get, "/healthz", Rule::Anonymous),
    r(Get, "/metrics", Rule::Metrics),
    // The OpenAPI document of this table's HTTP routes (api::openapi): what
    // the README says, machine-readable; nothing of the state.
    r(Get, "/v1/openapi.json", Rule::Anonymous),
    // The web console's static files (api::console): no data, no secret;
    // the page asks for a key and calls the routes above with it.
    r(Get, "/console", Rule::Anonymous),
    r(Get, "/console/console.js", Rule::Anonymous),
    r(Get, "/console/console.css", Rule::Anonymous),
    // Presence (the status pool writes, web platforms read).
    r(Post, "/v1/presence/events", app(PresenceWrite)),
    r(Post, "/v1/presence/query", app(PresenceRead)),
    r(Get, "/v1/presence", app(PresenceRead)),
    r(Grpc, "/herald.v1.Presence/PushEvents", app(PresenceWrite)),
    r(Grpc, "/herald.v1.Presence/PushEventsStream", app(PresenceWrite)),
    r(Grpc, "/herald.v1.Presence/Query", app(PresenceRead)),
    r(Grpc, "/herald.v1.Presence/QueryStream", app(PresenceRead)),
    // Presence change feeds (issue 15): the batch query's credentials.
    r(Get, "/v1/presence/watch", app(PresenceRead)),
    // A watch (an application's key), or a browser's client session (its
    // user's token, also as ?token=; the Hello is checked again).
    r(Get, "/v1/ws", app_or_user(PresenceRead, Claim)),
    r(Grpc, "/herald.v1.Presence/Watch", app(PresenceRead)),
    // The cluster: reading it, and (operators) changing it.
    r(Get, "/v1/cluster", app(ClusterRead)),
    r(Post, "/v1/cluster/add-learner", app(Admin)),
    r(Post, "/v1/cluster/promote", app(Admin)),
    r(Post, "/v1/cluster/remove", app(Admin)),
    r(Post, "/v1/cluster/transfer-leader", app(Admin)),
    r(Grpc, "/herald.v1.Cluster/Status", app(ClusterRead)),
    r(Grpc, "/herald.v1.Cluster/AddLearner", app(Admin)),
    r(Grpc, "/herald.v1.Cluster/Promote", app(Admin)),
    r(Grpc, "/herald.v1.Cluster/Remove", app(Admin)),
    r(Grpc, "/herald.v1.Cluster/TransferLeader", app(Admin)),
    // Messages: senders from any user, or a user as itself.
    r(Post, "/v1/messages", app_or_user(MessagesSend, Claim)),
    r(Grpc, "/herald.v1.Messages/Send", app_or_user(MessagesSend, Claim)),
    r(Post, "/v1/messages/batch", app_or_user(MessagesSend, Claim)),
    r(Grpc, "/herald.v1.Messages/SendBatch", app_or_user(MessagesSend, Claim)),
    // Operators' view of the offline queues (the console's Messages page).
    r(Get, "/v1/messages/queues", app(ClusterRead)),
    r(Put, "/v1/groups/{name}", app(Groups)),
    r(Get, "/v1/groups/{name}", app(Groups)),
    r(Delete, "/v1/groups/{name}", app(Groups)),
    r(Grpc, "/herald.v1.Messages/SetGroup", app(Groups)),
    r(Grpc, "/herald.v1.Messages/GetGroup", app(Groups)),
    r(Put, "/v1/users/{uid}/settings", app_or_user(Settings, Path)),
    r(Get, "/v1/users/{uid}/settings", app_or_user(Settings, Path)),
    r(Grpc, "/herald.v1.Messages/SetSettings", app_or_user(Settings, Claim)),
    r(Grpc, "/herald.v1.Messages/GetSettings", app_or_user(Settings, Claim)),
    // Gateways: the pick, and a user's own session.
    r(Get, "/v1/gateway", app_or_user(Gateway, Claim)),
    r(Grpc, "/herald.v1.Gateway/Pick", app_or_user(Gateway, Claim)),
    r(Grpc, "/herald.v1.Gateway/Session", Rule::Hello),
    // Media, contacts and sharing: a user's own (docs/media.md).
    r(Post, "/v1/users/{uid}/uploads", user(Path)),
    r(Put, "/v1/uploads/{id}", Rule::Capability),
    r(Get, "/v1/media/{id}", user(Viewer)),
    r(Get, "/v1/media/{id}/content", Rule::Capability),
    r(Delete, "/v1/users/{uid}/media/{id}", user(Path)),
    r(Get, "/v1/users/{uid}/contacts", user(Path)),
    r(Put, "/v1/users/{uid}/contacts/{contact}", user(Path)),
    r(Delete, "/v1/users/{uid}/contacts/{contact}", user(Path)),
    r(Post, "/v1/users/{uid}/group-send", user(Path)),
    r(Get, "/v1/users/{uid}/shared", user(Viewer)),
    // Profile sync (issue 17): a user's own bindings and profile, or an
    // application's with the profile scope; the outbox is operators'.
    r(Post, "/v1/users/{uid}/bindings", app_or_user(Profile, Path)),
    r(Delete, "/v1/users/{uid}/bindings/{module}/{account}", app_or_user(Profile, Path)),
    r(Put, "/v1/users/{uid}/profile", app_or_user(Profile, Path)),
    r(Get, "/v1/users/{uid}/profile", app_or_user(Profile, Path)),
    r(Get, "/v1/outbox", app(Profile)),
    r(Post, "/v1/outbox/{id}/resend", app(Admin)),
    // The standard gRPC health service and server reflection (issue 18):
    // probes and tools (grpcurl) ask before they hold a credential; they
    // tell whether the node knows a leader and what the public API looks
    // like, nothing of the state.
    r(Grpc, "/grpc.health.v1.Health/Check", Rule::Anonymous),
    r(Grpc, "/grpc.health.v1.Health/Watch", Rule::Anonymous),
    r(Grpc, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Rule::Anonymous),
    r(Grpc, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Rule::Anonymous),
];

/// The standard gRPC services served beside `herald.v1` (not declared in
/// Herald's .proto files).
pub const STANDARD_GRPC: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The HTTP routes of a router as it is built: each route is added with
/// its verb and path through [`Served::at`], which records it, so that a
/// test can compare what the router serves with [`ROUTES`].
pub struct Served<S> {
    router: axum::Router<S>,
    served: Vec<(Verb, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Served<S> {
    fn default() -> Self {
        Served { router: axum::Router::new(), served: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Served<S> {
    /// Serves `handler` for `verb` on `path` (GET also answers HEAD).
    pub fn at<H, T>(mut self, verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        use axum::routing::{delete, get, post, put};
        let m = match verb {
            Get => get(handler),
            Put => put(handler),
            Post => post(handler),
            Delete => delete(handler),
            Grpc => panic!("gRPC methods are served by tonic, not Served::at ({path})"),
        };
        self.router = self.router.route(path, m);
        self.served.push((verb, path));
        self
    }

    /// Adds another module's routes.
    pub fn merge(mut self, other: Served<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    /// The router and what it serves.
    pub fn finish(self) -> (axum::Router<S>, Vec<(Verb, &'static str)>) {
        (self.router, self.served)
    }
}

/// A request matched to its entry, with the path's `{uid}` if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub route: &'static Route,
    pub path_uid: Option<String>,
}

/// The entry of a request, if any: gRPC requests (`content-type:
/// application/grpc...`) match gRPC entries only, others their method
/// (HEAD as GET). Path segments are compared after percent-decoding, as
/// the router does.
pub fn lookup(method: &http::Method, path: &str, grpc: bool) -> Option<Matched> {
    let verb = if grpc {
        if method != http::Method::POST {
            return None;
        }
        Grpc
    } else {
        match *method {
            http::Method::GET | http::Method::HEAD => Get,
            http::Method::PUT => Put,
            http::Method::POST => Post,
            http::Method::DELETE => Delete,
            _ => return None,
        }
    };
    ROUTES.iter().filter(|r| r.verb == verb).find_map(|r| {
        let path_uid = matches(r.path, path)?;
        Some(Matched { route: r, path_uid })
    })
}

/// Whether `path` matches `pattern`; Some(the decoded `{uid}`, if the
/// pattern has one).
fn matches(pattern: &str, path: &str) -> Option<Option<String>> {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    let mut uid = None;
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(uid),
            (Some(want), Some(got)) => {
                if let Some(name) = want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    if got.is_empty() {
                        return None;
                    }
                    if name == "uid" {
                        uid = Some(percent_decode(got)?);
                    }
                } else if want != got {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// A percent-decoded path segment (None if not UTF-8 once decoded).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    /// Each (method, path) is in the table once, every gRPC entry is a
    /// `/herald.v1.Service/Method` path, and every rule that takes a
    /// principal lets someone in.
    #[test]
    fn routes_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.verb, r.path)), "{} {} listed twice", r.verb.as_str(), r.path);
            if r.verb == Grpc {
                assert!(
                    (r.path.starts_with("/herald.v1.") || STANDARD_GRPC.contains(&r.path))
                        && r.path.matches('/').count() == 2
                );
            } else {
                assert!(r.path.starts_with('/') && !r.path.ends_with('/'), "{}", r.path);
            }
            if let Rule::Principal { app, user } = r.rule {
                assert!(app.is_some() || user.is_some(), "{} lets nobody in", r.path);
                if user == Some(UserFrom::Path) {
                    assert!(r.path.contains("{uid}"), "{} has no {{uid}}", r.path);
                }
            }
        }
        assert!(ROUTES.iter().any(|r| r.rule == Rule::Anonymous && r.path == "/healthz"));
        // Anonymous: /healthz, the OpenAPI document, the console's static
        // files and the standard gRPC health and reflection services,
        // nothing else.
        const STATIC: [&str; 5] = [
            "/healthz",
            "/v1/openapi.json",
            "/console",
            "/console/console.js",
            "/console/console.css",
        ];
        let anonymous: Vec<&str> =
            ROUTES.iter().filter(|r| r.rule == Rule::Anonymous).map(|r| r.path).collect();
        assert_eq!(anonymous.len(), STATIC.len() + STANDARD_GRPC.len(), "{anonymous:?}");
        assert!(anonymous.iter().all(|p| STATIC.contains(p) || STANDARD_GRPC.contains(p)));
    }

    /// The HTTP router serves exactly the table's HTTP entries (building
    /// it also proves no path and method is registered twice), and the
    /// public .proto files declare exactly its gRPC entries: a route or
    /// method added without a rule fails here (and the guard refuses it).
    #[test]
    fn routes_table_is_what_is_served() {
        use std::collections::BTreeSet;
        let (_, served) = crate::api::http::served().finish();
        let served_set: BTreeSet<(&str, &str)> =
            served.iter().map(|(v, p)| (v.as_str(), *p)).collect();
        assert_eq!(served_set.len(), served.len(), "a route is served twice: {served:?}");
        let http: BTreeSet<(&str, &str)> =
            ROUTES.iter().filter(|r| r.verb != Grpc).map(|r| (r.verb.as_str(), r.path)).collect();
        assert_eq!(served_set, http, "HTTP routes served vs the table");

        let protos = [
            include_str!("../../../proto/proto/herald/v1/presence.proto"),
            include_str!("../../../proto/proto/herald/v1/cluster.proto"),
            include_str!("../../../proto/proto/herald/v1/messages.proto"),
        ];
        let mut declared = BTreeSet::new();
        for text in protos {
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_owned);
                } else if let (Some(rest), Some(svc)) = (line.strip_prefix("rpc "), &service) {
                    let method = rest.split('(').next().unwrap().trim();
                    declared.insert(format!("/herald.v1.{svc}/{method}"));
                }
            }
        }
        declared.extend(STANDARD_GRPC.iter().map(|p| p.to_string()));
        let grpc: BTreeSet<String> =
            ROUTES.iter().filter(|r| r.verb == Grpc).map(|r| r.path.to_string()).collect();
        assert!(declared.len() >= 16, "the .proto files were not read: {declared:?}");
        assert_eq!(declared, grpc, "gRPC methods declared vs the table");
    }

    /// Lookup: method and path pick the entry (HEAD as GET), the path's
    /// `{uid}` is decoded, gRPC requests match gRPC entries only, and an
    /// unknown path, a wrong method or an extra segment match nothing.
    #[test]
    fn routes_lookup() {
        let m = lookup(&Method::GET, "/v1/users/a%20b/contacts", false).unwrap();
        assert_eq!(
            (m.route.path, m.path_uid.as_deref()),
            ("/v1/users/{uid}/contacts", Some("a b"))
        );
        let m = lookup(&Method::HEAD, "/v1/media/ab/content", false).unwrap();
        assert_eq!((m.route.rule, m.path_uid), (Rule::Capability, None));
        let m = lookup(&Method::POST, "/herald.v1.Presence/Query", true).unwrap();
        assert_eq!(m.route.rule, app(PresenceRead));
        assert_eq!(lookup(&Method::POST, "/herald.v1.Presence/Query", false), None);
        assert_eq!(lookup(&Method::POST, "/v1/presence/events", true), None);
        assert_eq!(lookup(&Method::POST, "/herald.v1.Presence/Nope", true), None);
        assert_eq!(lookup(&Method::DELETE, "/v1/presence/events", false), None);
        assert_eq!(lookup(&Method::GET, "/v1/users/u/contacts/extra/x", false), None);
        assert_eq!(lookup(&Method::GET, "/v1/users//contacts", false), None);
        assert_eq!(lookup(&Method::GET, "/nope", false), None);
        assert_eq!(lookup(&Method::PATCH, "/v1/groups/g", false), None);
        assert_eq!(percent_decode("%41%zz%4"), Some("A%zz%4".into()));
    }
}

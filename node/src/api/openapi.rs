//! The OpenAPI 3.1 document of the publish port's HTTP API, served at
//! `GET /v1/openapi.json` (issue 18). It is built from two tables: the
//! route table ([`super::routes::ROUTES`]: who may call, which scope) and
//! [`DOCS`] below (what each route does and which stable codes it
//! answers beyond the ones its rule, body and kind imply). `openapi_tests`
//! checks that every HTTP route the router serves is documented, that
//! every code named is in the catalog, and that the document lists each
//! operation with its codes under their HTTP statuses.

use std::collections::BTreeMap;

use herald_proto::codes::{self, Code};
use serde_json::{json, Map, Value};

use super::routes::{Route, Rule, UserFrom, Verb, ROUTES};

/// What a route takes as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// A JSON object (`application/json`), bounded by `max-request-bytes`.
    Json,
    /// Raw bytes (an upload's content), bounded by the upload's size.
    Bytes,
}

/// Whether the route is answered by the leader (a write or membership
/// change forwarded there), or by this node after a read barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answered from this node alone (health, metrics, this document).
    Local,
    /// A read: linearizable by default (a read barrier through the leader).
    Read,
    /// A write committed through Raft.
    Write,
    /// A long-lived stream (SSE or WebSocket).
    Stream,
}

/// One documented HTTP route.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    pub verb: Verb,
    pub path: &'static str,
    pub summary: &'static str,
    pub body: Body,
    pub kind: Kind,
    /// The codes this route answers beyond those of its rule, body and
    /// kind ([`implied_codes`]).
    pub codes: &'static [&'static str],
    /// Query parameters it takes (name, meaning).
    pub query: &'static [(&'static str, &'static str)],
}

const fn d(
    verb: Verb,
    path: &'static str,
    summary: &'static str,
    body: Body,
    kind: Kind,
    codes: &'static [&'static str],
) -> Doc {
    Doc { verb, path, summary, body, kind, codes, query: &[] }
}

const fn q(mut doc: Doc, query: &'static [(&'static str, &'static str)]) -> Doc {
    doc.query = query;
    doc
}

use Body::{Bytes, Json, None as NoBody};
use Kind::{Local, Read, Stream, Write};
use Verb::*;

const EVENT_CODES: &[&str] =
    &["no_events", "too_many_events", "invalid_event", "too_many_clients", "too_many_ext"];
const QUERY_CODES: &[&str] = &[
    "too_many_ids",
    "invalid_consistency",
    "invalid_uid",
    "response_too_large",
    "too_stale",
    "revision_not_reached",
];
const WATCH_CODES: &[&str] =
    &["no_watch_ids", "too_many_watch_ids", "too_many_watchers", "invalid_since", "invalid_uid"];
const MEMBER_CODES: &[&str] = &["membership_refused", "unknown_node", "not_a_voter"];

/// Every HTTP route of the publish port, documented.
pub const DOCS: &[Doc] = &[
    d(Get, "/healthz", "200 while this node is in touch with a live leader, else 503", NoBody, Local, &[]),
    d(Get, "/metrics", "Prometheus metrics of this node (text exposition format)", NoBody, Local, &[]),
    d(Get, "/v1/openapi.json", "This document", NoBody, Local, &[]),
    d(Get, "/console", "The web console's page (no data: it asks for an operator key)", NoBody, Local, &[]),
    d(Get, "/console/console.js", "The web console's script", NoBody, Local, &[]),
    d(Get, "/console/console.css", "The web console's style", NoBody, Local, &[]),
    d(Post, "/v1/presence/events", "Push presence events (login, logout, heartbeat, ext); one Raft entry per request", Json, Write, EVENT_CODES),
    d(Post, "/v1/presence/query", "Batch presence query by uids and sids", Json, Read, QUERY_CODES),
    q(
        d(Get, "/v1/presence", "Batch presence query in the query string", NoBody, Read, QUERY_CODES),
        &[("uid", "a uid (repeatable)"), ("sid", "a session id (repeatable)"), ("consistency", "linearizable (default), local or bounded"), ("max_staleness_ms", "the bound of a bounded read"), ("min_revision", "answer only from a state at or after this revision")],
    ),
    q(
        d(Get, "/v1/presence/watch", "Server-sent events: a snapshot of the watched users, then every change, progress frames; resumes with Last-Event-ID", NoBody, Stream, WATCH_CODES),
        &[("uid", "a uid to watch (repeatable)"), ("sid", "a sid to watch (repeatable)"), ("since_revision", "resume after this revision")],
    ),
    d(Get, "/v1/ws", "WebSocket (JSON frames): presence watches, or a browser's client session (hello with token, heartbeats, deliveries, acks)", NoBody, Stream, &["expected_hello", "invalid_hello", "unexpected_frame", "sid_taken", "hello_timeout", "heartbeat_timeout", "too_many_watchers", "no_watch_ids", "too_many_watch_ids", "invalid_since"]),
    q(
        d(Get, "/v1/cluster", "The cluster as this node sees it: nodes, leader, master, time master, indexes, clocks, gateways, media", NoBody, Local, &[]),
        &[("view", "\"local\": this node only, without asking the leader")],
    ),
    d(Post, "/v1/cluster/add-learner", "Add a node as a learner (addresses from the XML server list if left out)", Json, Write, &["missing_address", "invalid_address", "membership_refused", "unknown_node"]),
    d(Post, "/v1/cluster/promote", "Make a caught-up learner a voter", Json, Write, MEMBER_CODES),
    d(Post, "/v1/cluster/remove", "Remove a node from the cluster", Json, Write, MEMBER_CODES),
    d(Post, "/v1/cluster/transfer-leader", "Hand leadership to another voter", Json, Write, MEMBER_CODES),
    d(Post, "/v1/messages", "Send a message to users, a group or everyone (stored for offline users until acknowledged)", Json, Write, &["invalid_idempotency_key", "invalid_recipients", "too_many_recipients", "invalid_uid", "invalid_group", "unknown_group", "no_recipients", "ttl_not_supported", "invalid_ttl", "invalid_content_type", "invalid_body", "no_gateway"]),
    d(Post, "/v1/messages/batch", "Send up to 1,000 messages in one request and one log entry; each answered in order (a bad one refuses the batch, nothing stored)", Json, Write, &["no_messages", "too_many_messages", "invalid_idempotency_key", "invalid_recipients", "too_many_recipients", "invalid_uid", "invalid_group", "unknown_group", "no_recipients", "ttl_not_supported", "invalid_ttl", "invalid_content_type", "invalid_body", "no_gateway"]),
    q(
        d(Get, "/v1/messages/queues", "The longest offline queues (oldest message age), groups, live broadcasts", NoBody, Read, &[]),
        &[("top", "how many queues and broadcasts (1 to 100, default 20)")],
    ),
    d(Put, "/v1/groups/{name}", "Set a recipient group's members", Json, Write, &["invalid_group", "no_members", "too_many_recipients", "invalid_uid"]),
    d(Get, "/v1/groups/{name}", "Read a recipient group", NoBody, Read, &["invalid_group", "unknown_group"]),
    d(Delete, "/v1/groups/{name}", "Delete a recipient group", NoBody, Write, &["invalid_group", "unknown_group"]),
    d(Put, "/v1/users/{uid}/settings", "Set a user's offline-storage settings", Json, Write, &["invalid_uid"]),
    d(Get, "/v1/users/{uid}/settings", "Read a user's offline-storage settings", NoBody, Read, &["invalid_uid"]),
    q(
        d(Get, "/v1/gateway", "Pick the gateway a user's client should connect to", NoBody, Local, &["no_gateway", "invalid_uid"]),
        &[("uid", "the user")],
    ),
    d(Post, "/v1/users/{uid}/uploads", "Open an upload (answers its URL and credential)", Json, Write, &["invalid_size", "invalid_name", "media_too_large", "media_quota_exceeded", "too_many_uploads", "media_not_configured", "storage_unhealthy", "insufficient_storage"]),
    d(Put, "/v1/uploads/{id}", "Send an upload's bytes (its credential in the URL)", Bytes, Write, &["unknown_upload", "upload_in_progress", "size_mismatch", "upload_interrupted", "upload_timeout", "media_too_large", "media_quota_exceeded", "invalid_image", "image_too_large", "replication_failed", "storage_error", "insufficient_storage"]),
    q(
        d(Get, "/v1/media/{id}", "A media's description and download URL, for a viewer allowed to see it", NoBody, Read, &["invalid_media_id", "unknown_media", "access_denied", "missing_viewer"]),
        &[("viewer", "who looks (else X-Herald-User)")],
    ),
    d(Get, "/v1/media/{id}/content", "A media's bytes (its download credential in the URL; Range supported)", NoBody, Local, &["invalid_media_id", "unknown_media", "range_not_satisfiable", "media_unavailable", "storage_error"]),
    d(Delete, "/v1/users/{uid}/media/{id}", "Delete one's own media", NoBody, Write, &["invalid_media_id", "unknown_media", "not_owner", "refused"]),
    d(Get, "/v1/users/{uid}/contacts", "A user's contacts and their groups", NoBody, Read, &[]),
    d(Put, "/v1/users/{uid}/contacts/{contact}", "Add or change a contact", Json, Write, &["self_contact", "too_many_contacts", "too_many_groups", "invalid_uid", "refused"]),
    d(Delete, "/v1/users/{uid}/contacts/{contact}", "Remove a contact", NoBody, Write, &["invalid_uid", "refused"]),
    d(Post, "/v1/users/{uid}/group-send", "Send media to contacts or their groups (stored once)", Json, Write, &["no_recipients", "not_owner", "invalid_text", "invalid_media_id", "unknown_media", "too_many_recipients"]),
    q(
        d(Get, "/v1/users/{uid}/shared", "The media a friend shares with the viewer", NoBody, Read, &["not_a_friend", "missing_viewer"]),
        &[("viewer", "who looks (else X-Herald-User)")],
    ),
    d(Post, "/v1/users/{uid}/bindings", "Bind an account of a supported IM module to the user", Json, Write, &["unsupported_module", "invalid_binding", "account_bound_elsewhere", "too_many_bindings", "invalid_uid"]),
    d(Delete, "/v1/users/{uid}/bindings/{module}/{account}", "Unbind one of the user's accounts", NoBody, Write, &["not_bound", "invalid_binding", "invalid_uid"]),
    d(Put, "/v1/users/{uid}/profile", "Set the user's profile from one bound module: one outbox item per other bound account, in the same entry; answers the update's own revision (distinct per update, growing with log order: what receivers order by)", Json, Write, &["module_not_bound", "unsupported_module", "profile_too_large", "invalid_uid"]),
    d(Get, "/v1/users/{uid}/profile", "Read the user's profile and bindings", NoBody, Read, &["invalid_uid"]),
    q(
        d(Get, "/v1/outbox", "Pending (or dead-lettered) profile deliveries", NoBody, Read, &[]),
        &[("dead", "true: the dead-letter list"), ("limit", "most items listed (default 1000, at most 10000)")],
    ),
    d(Post, "/v1/outbox/{id}/resend", "Deliver a dead-lettered or pending item again, now", NoBody, Write, &["unknown_outbox_item"]),
];

/// The codes every route of its rule, body and kind may answer.
pub fn implied_codes(route: &Route, doc: &Doc) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    match route.rule {
        Rule::Anonymous | Rule::Hello => {}
        Rule::Metrics => out.extend(["missing_credential", "bad_key", "forbidden"]),
        Rule::Capability => out.extend([
            "missing_credential",
            "bad_credential",
            "credential_expired",
            "credential_scope",
        ]),
        Rule::Principal { app, user } => {
            out.push(if app.is_some() { "missing_credential" } else { "missing_token" });
            if app.is_some() {
                out.extend(["bad_key", "forbidden"]);
            }
            if user.is_some() {
                out.extend(["bad_token", "token_expired", "token_lifetime", "wrong_user"]);
            }
            if user == Some(UserFrom::Viewer) {
                out.push("missing_viewer");
            }
        }
    }
    match doc.body {
        Body::Json => out.extend([
            "malformed_json",
            "invalid_field",
            "unsupported_content_type",
            "bad_request",
            "payload_too_large",
        ]),
        Body::Bytes | Body::None => {}
    }
    if !doc.query.is_empty() {
        out.extend(["invalid_query_string", "unknown_parameter"]);
    }
    match doc.kind {
        Kind::Local => {}
        Kind::Read | Kind::Stream => out.extend(["no_leader", "leader_unavailable", "timeout"]),
        Kind::Write => out.extend(["no_leader", "not_leader", "leader_unavailable", "timeout"]),
    }
    if doc.kind != Kind::Local || route.rule != Rule::Anonymous {
        out.extend(["overloaded", "internal"]);
    }
    out
}

/// Every code of a route: implied and listed, each once, in catalog order.
pub fn route_codes(route: &Route, doc: &Doc) -> Vec<Code> {
    let mut names = implied_codes(route, doc);
    names.extend(doc.codes.iter().copied());
    codes::ALL.iter().copied().filter(|c| names.contains(&c.name)).collect()
}

/// The route table's entry of a documented route.
fn route_of(doc: &Doc) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.verb == doc.verb && r.path == doc.path)
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for doc in DOCS {
        let Some(route) = route_of(doc) else { continue };
        paths
            .entry(doc.path)
            .or_default()
            .insert(doc.verb.as_str().to_lowercase(), operation(route, doc));
    }
    let paths: Map<String, Value> =
        paths.into_iter().map(|(p, ops)| (p.to_string(), Value::Object(ops))).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The publish port's HTTP API. gRPC (package herald.v1) is served on the same port; grpc.reflection describes it. Every refusal is {\"error\":{\"code\",\"message\"}} with a stable code (x-herald-codes lists each operation's).",
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An application's API key (hk_...), listed in <access> with its scopes; the operation's scope must be one of them."},
                "sessionToken": {"type": "http", "scheme": "bearer", "description": "A user's session token (also ?token=), for the user's own routes."},
                "capability": {"type": "apiKey", "in": "query", "name": "credential", "description": "An upload or download credential returned by an earlier call."},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "enum": codes::ALL.iter().map(|c| c.name).collect::<Vec<_>>()},
                        "message": {"type": "string"},
                    }}},
                },
            },
        },
        "paths": paths,
    })
}

fn operation(route: &Route, doc: &Doc) -> Value {
    let mut op = Map::new();
    op.insert("summary".into(), json!(doc.summary));
    op.insert("operationId".into(), json!(format!("{} {}", doc.verb.as_str(), doc.path)));
    let security = match route.rule {
        Rule::Anonymous | Rule::Hello => json!([]),
        Rule::Metrics => json!([{"apiKey": ["metrics"]}, {}]),
        Rule::Capability => json!([{"capability": []}]),
        Rule::Principal { app, user } => {
            let mut alts = Vec::new();
            if let Some(s) = app {
                alts.push(json!({"apiKey": [s.name()]}));
            }
            if user.is_some() {
                alts.push(json!({"sessionToken": []}));
            }
            Value::Array(alts)
        }
    };
    op.insert("security".into(), security);
    let mut params: Vec<Value> = doc
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(doc.query.iter().map(|(name, what)| {
        json!({"name": name, "in": "query", "required": false, "description": what, "schema": {"type": "string"}})
    }));
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    match doc.body {
        Body::None => {}
        Body::Json => {
            op.insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}));
        }
        Body::Bytes => {
            op.insert("requestBody".into(), json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}));
        }
    }
    let all = route_codes(route, doc);
    let mut responses = Map::new();
    let ok = match doc.kind {
        Kind::Stream => "the stream (text/event-stream, or 101 Switching Protocols for /v1/ws)",
        _ => "success",
    };
    responses.insert("200".into(), json!({"description": ok}));
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for c in &all {
        by_status.entry(c.http).or_default().push(*c);
    }
    for (status, list) in by_status {
        let text: Vec<String> =
            list.iter().map(|c| format!("`{}`: {}", c.name, c.meaning)).collect();
        responses.insert(
            status.to_string(),
            json!({
                "description": text.join("; "),
                "x-herald-codes": list.iter().map(|c| c.name).collect::<Vec<_>>(),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert("x-herald-codes".into(), json!(all.iter().map(|c| c.name).collect::<Vec<_>>()));
    Value::Object(op)
}

#[cfg(test)]
mod openapi_tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every HTTP route the router serves has one entry in DOCS and in the
    /// document (and nothing else does); every code DOCS names is in the
    /// catalog; every operation lists under each HTTP status exactly the
    /// codes of that status, and at least the codes its guard rule answers.
    #[test]
    fn openapi_documents_every_served_route_with_its_codes() {
        let (_, served) = crate::api::http::served().finish();
        let served: BTreeSet<(&str, &str)> = served.iter().map(|(v, p)| (v.as_str(), *p)).collect();
        let documented: BTreeSet<(&str, &str)> =
            DOCS.iter().map(|d| (d.verb.as_str(), d.path)).collect();
        assert_eq!(documented.len(), DOCS.len(), "a route is documented twice");
        assert_eq!(served, documented, "served vs documented");
        for doc in DOCS {
            for c in doc.codes {
                assert!(
                    codes::named(c).is_some(),
                    "{} {}: {c} is not in the catalog",
                    doc.verb.as_str(),
                    doc.path
                );
            }
        }
        let v = document();
        let mut ops = 0;
        for doc in DOCS {
            let route = route_of(doc).expect("documented routes are in ROUTES");
            let op = &v["paths"][doc.path][doc.verb.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {} missing from the document", doc.verb.as_str(), doc.path);
            ops += 1;
            let listed: BTreeSet<&str> = op["x-herald-codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            for c in implied_codes(route, doc).into_iter().chain(doc.codes.iter().copied()) {
                assert!(listed.contains(c), "{}: {c} not listed", doc.path);
            }
            for c in &listed {
                let code = codes::named(c).unwrap();
                let under = &op["responses"][code.http.to_string()]["x-herald-codes"];
                assert!(
                    under.as_array().unwrap().iter().any(|x| x == *c),
                    "{}: {c} not under {}",
                    doc.path,
                    code.http
                );
            }
            if let Rule::Principal { app: Some(s), .. } = route.rule {
                assert_eq!(op["security"][0]["apiKey"][0], s.name(), "{}", doc.path);
            }
        }
        assert_eq!(ops, served.len());
        let paths = v["paths"].as_object().unwrap();
        let in_doc: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(in_doc, served.len(), "the document has operations no route serves");
        // Path parameters are declared for every {name}.
        let media = &v["paths"]["/v1/users/{uid}/media/{id}"]["delete"]["parameters"];
        let names: Vec<&str> =
            media.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["uid", "id"]);
    }
}

//! HTTP/JSON web service for web platforms (MISSION P4), on the publish port
//! beside gRPC. Paths and shapes are part of the public contract; see
//! README.md.

use herald_proto::codes;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::access::Principal;
use super::routes::{Served, Verb};
use super::{Api, ApiError, Consistency, MembershipOp};
#[cfg(test)]
use herald_domain::presence::QueryResult;
use herald_domain::presence::{Event, Record};
use herald_proto::wire::cluster::{Health, MembershipBody as NumberBody, TransferLeaderAnswer};
use herald_proto::wire::presence::{EventsBody, QueryBody};
use herald_proto::wire::{self, ErrorBody, Revision};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody::new(self.code(), self.to_string()))).into_response()
    }
}

/// Maps axum's JSON rejections to our error shape and codes.
pub(crate) fn json_error(r: JsonRejection, limit: usize) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::new(codes::INVALID_FIELD, e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(codes::MALFORMED_JSON, e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            codes::UNSUPPORTED_CONTENT_TYPE,
            "expected Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large(limit)
        }
        other => ApiError::new(codes::BAD_REQUEST, other.body_text()),
    }
}

/// An event of `POST /v1/presence/events` as the domain takes it.
fn event_from_wire(e: wire::presence::Event) -> Event {
    use wire::presence::Event as W;
    match e {
        W::Login { uid, sid, client, accepts_strangers, ext } => {
            Event::Login { uid, sid, client, accepts_strangers, ext }
        }
        W::Logout { uid, sid, client, ext } => Event::Logout { uid, sid, client, ext },
        W::Permission { uid, sid, accepts_strangers, ext } => {
            Event::Permission { uid, sid, accepts_strangers, ext }
        }
    }
}

/// One user of a query answer as the node writes it: the borrowing twin of
/// [`wire::presence::UserPresence`] (which owns its strings), so that an
/// answer of many records is not copied before it is serialized. Inside
/// `serde_json::json!` its keys come out in alphabetical order, the order
/// of the wire type's fields; `query_answer_matches_the_wire_type` checks
/// that the two agree byte for byte.
#[derive(Debug, Serialize)]
pub struct UserJson<'a> {
    uid: &'a str,
    sid: u64,
    online: bool,
    clients: Vec<&'a str>,
    accepts_strangers: bool,
    ext: &'a BTreeMap<String, String>,
    changed_at_ms: u64,
    revision: u64,
}

impl<'a> From<&'a Record> for UserJson<'a> {
    fn from(r: &'a Record) -> Self {
        UserJson {
            uid: &r.uid,
            sid: r.sid,
            online: r.online(),
            clients: r.clients.iter().map(|s| s.as_str()).collect(),
            accepts_strangers: r.accepts_strangers,
            ext: &r.ext,
            changed_at_ms: r.changed_at_ms,
            revision: r.revision,
        }
    }
}

/// The JSON answer of a query as the node wrote it from owned records
/// before issue 13: what [`super::answer::query_json`] is checked against.
#[cfg(test)]
pub(crate) fn query_json(q: &QueryResult, info: Option<super::ReadInfo>) -> serde_json::Value {
    let users: Vec<UserJson> = q.users.iter().map(UserJson::from).collect();
    let mut v = serde_json::json!({
        "revision": q.revision,
        "users": users,
        "unknown": q.unknown,
        "unknown_sids": q.unknown_sids,
    });
    if let Some(ms) = info.and_then(|i| i.staleness_ms) {
        v["staleness_ms"] = ms.into();
    }
    v
}

type AppState = Arc<Api>;

/// Every HTTP route of the publish port, recorded as it is added (see
/// [`Served`]; who may call each is [`super::routes::ROUTES`]).
pub fn served() -> Served<AppState> {
    use Verb::*;
    Served::default()
        .at(Post, "/v1/presence/events", post_events)
        .at(Post, "/v1/presence/query", post_query)
        .at(Get, "/v1/presence", get_presence)
        .at(Get, "/v1/cluster", get_cluster)
        .at(Post, "/v1/cluster/add-learner", post_add_learner)
        .at(Post, "/v1/cluster/promote", post_promote)
        .at(Post, "/v1/cluster/remove", post_remove)
        .at(Post, "/v1/cluster/transfer-leader", post_transfer_leader)
        .at(Get, "/healthz", healthz)
        .at(Get, "/metrics", metrics)
        .at(Get, "/v1/openapi.json", openapi)
        .merge(super::messages::http::routes())
        .merge(super::media::http::routes())
        .merge(super::watch_http::routes())
        .merge(super::console::routes())
        .merge(super::profile::routes())
}

/// The HTTP routes; `max_body` bounds every request body.
pub fn router(api: Arc<Api>) -> Router {
    let limit = api.limits.max_request_bytes;
    let (router, _) = served().finish();
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(api.clone(), super::size::limit_json_answers))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(api)
}

async fn not_found() -> ApiError {
    ApiError::new(codes::NOT_FOUND, "no such path")
}

async fn post_events(
    State(api): State<AppState>,
    body: Result<Json<EventsBody>, JsonRejection>,
) -> Result<Json<Revision>, ApiError> {
    let Json(body) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    let events: Vec<Event> = body.events.into_iter().map(event_from_wire).collect();
    let revision = api.push_events(events).await?;
    Ok(Json(Revision { revision }))
}

/// A query's JSON answer, written from the state under its lock
/// ([`super::answer::query_json`]).
async fn query_answer(
    api: &Api,
    uids: &[String],
    sids: &[u64],
    spec: super::ReadSpec,
) -> Result<Response, ApiError> {
    let body = api
        .query(uids, sids, spec, |q, info, max| {
            super::answer::query_json(q, info.staleness_ms, max)
        })
        .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn post_query(
    State(api): State<AppState>,
    body: Result<Json<QueryBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(q) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    let spec = super::ReadSpec {
        consistency: q.consistency.into(),
        max_staleness_ms: q.max_staleness_ms,
        min_revision: q.min_revision,
    };
    query_answer(&api, &q.uids, &q.sids, spec).await
}

/// `GET /v1/presence?uid=u1&uid=u2&sid=10001[&consistency=local|bounded]
/// [&max_staleness_ms=N][&min_revision=R]`.
async fn get_presence(
    State(api): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.to_string()))?;
    let (mut uids, mut sids, mut consistency) = (Vec::new(), Vec::new(), Consistency::default());
    let (mut max_staleness_ms, mut min_revision) = (None, None);
    let number = |k: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| ApiError::new(codes::INVALID_FIELD, format!("{k} {v:?} is not a number")))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "uid" => uids.push(v),
            "sid" => sids.push(v.parse::<u64>().map_err(|_| {
                ApiError::new(codes::INVALID_FIELD, format!("sid {v:?} is not a number"))
            })?),
            "consistency" => consistency = Consistency::parse(&v)?,
            "max_staleness_ms" => max_staleness_ms = Some(number(&k, &v)?),
            "min_revision" => min_revision = Some(number(&k, &v)?),
            other => {
                return Err(ApiError::new(
                    codes::UNKNOWN_PARAMETER,
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    let spec = super::ReadSpec { consistency, max_staleness_ms, min_revision };
    query_answer(&api, &uids, &sids, spec).await
}

#[derive(Debug, Deserialize, Default)]
struct ClusterQuery {
    #[serde(default)]
    local: bool,
}

/// `GET /v1/cluster[?local=true]`.
async fn get_cluster(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<axum::extract::Query<ClusterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<super::ClusterView>, ApiError> {
    let q = q.map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.body_text()))?;
    Ok(Json(api.cluster_view(q.0.local, &p).await))
}

async fn post_transfer_leader(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<TransferLeaderAnswer>, ApiError> {
    let Json(b) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    let leader = api.transfer_leader(b.number, &p).await?;
    Ok(Json(TransferLeaderAnswer { leader }))
}

async fn membership(
    api: AppState,
    p: Principal,
    body: Result<Json<NumberBody>, JsonRejection>,
    f: impl FnOnce(NumberBody) -> MembershipOp,
) -> Result<Json<super::MembershipResult>, ApiError> {
    let Json(b) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    Ok(Json(api.membership(f(b), &p).await?))
}

async fn post_add_learner(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<super::MembershipResult>, ApiError> {
    membership(api, p, body, |b| MembershipOp::AddLearner {
        number: b.number,
        sync: b.sync.unwrap_or_default(),
        publish: b.publish.unwrap_or_default(),
        zone: b.zone.unwrap_or_default(),
        replica: b.replica,
    })
    .await
}

async fn post_promote(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<super::MembershipResult>, ApiError> {
    membership(api, p, body, |b| MembershipOp::Promote { number: b.number }).await
}

async fn post_remove(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<super::MembershipResult>, ApiError> {
    membership(api, p, body, |b| MembershipOp::Remove { number: b.number }).await
}

async fn healthz(State(api): State<AppState>) -> Response {
    let st = api.node.status();
    let ok = api.node.leader_is_live();
    let body = Health { leader: st.leader, node: st.node, ok, state: st.state };
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// The OpenAPI document, built once from the route tables.
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOC.get_or_init(|| super::openapi::document().to_string());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

async fn metrics(State(api): State<AppState>) -> Response {
    api.metrics.set_media(&api.media.status());
    let st = api.node.status();
    let (users, online, stored, inboxes) = api.node.read_local(|s| {
        (s.presence.len(), s.presence.online_count(), s.msgs.stored_messages(), s.msgs.inboxes())
    });
    let changes = api.node.master_changes.load(std::sync::atomic::Ordering::Relaxed);
    let g = &api.gateway;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let figures = crate::metrics::GatewayFigures {
        sessions: g.session_count() as u64,
        sessions_opened: ld(&g.sessions_opened),
        sessions_refused: ld(&g.sessions_refused),
        pushes: ld(&g.pushes),
        stored_messages: stored as u64,
        inboxes: inboxes as u64,
    };
    let now = api.node.clock().now_ms();
    let (pending, dead, oldest) = api.node.read_local(|s| {
        let p = &s.profiles;
        let oldest = p.pending().map(|i| i.created_ms).min();
        (p.pending_count(), p.dead_count(), oldest.map_or(0, |t| now.saturating_sub(t)))
    });
    api.metrics.set_outbox(pending, dead, oldest);
    api.metrics.set_feed(&api.node.feed());
    let body = api.metrics.render(&st, users, online, &api.time.status(), changes, figures);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A query answer as the node writes it (through the borrowing
    /// `UserJson`) parses as the wire type with every field, and the wire
    /// type serializes back to the very same bytes: the two stay in step.
    #[test]
    fn query_answer_matches_the_wire_type() {
        let rec = |uid: &str, sid: u64, clients: &[&str]| Record {
            uid: uid.into(),
            sid,
            clients: clients.iter().map(|c| c.to_string()).collect::<BTreeSet<_>>(),
            accepts_strangers: uid == "u2",
            ext: [("k".to_string(), format!("v{sid}"))].into(),
            changed_at_ms: 1_700_000_000_000 + sid,
            revision: sid * 3,
            gateways: Default::default(),
        };
        let q = QueryResult {
            revision: 42,
            users: vec![rec("u1", 1001, &["web", "mobile"]), rec("u2", 1002, &[])],
            unknown: vec!["nobody".into()],
            unknown_sids: vec![9],
        };
        let node = serde_json::to_string(&query_json(&q, None)).unwrap();
        let w: wire::presence::QueryAnswer = serde_json::from_str(&node).unwrap();
        assert_eq!((w.revision, &w.unknown, &w.unknown_sids), (42, &q.unknown, &q.unknown_sids));
        assert_eq!(w.users.len(), 2);
        for (u, r) in w.users.iter().zip(&q.users) {
            assert_eq!((&u.uid, u.sid, u.online), (&r.uid, r.sid, r.online()));
            assert_eq!(u.clients, r.clients.iter().cloned().collect::<Vec<_>>());
            assert_eq!((u.accepts_strangers, &u.ext), (r.accepts_strangers, &r.ext));
            assert_eq!((u.changed_at_ms, u.revision), (r.changed_at_ms, r.revision));
        }
        assert_eq!(serde_json::to_string(&w).unwrap(), node);
    }

    /// The error body, the push and transfer answers and the health body
    /// are byte-for-byte what the node wrote with `serde_json::json!`
    /// before they were wire types.
    #[test]
    fn small_answers_keep_their_bytes() {
        let e = ApiError::new(codes::NO_EVENTS, "events must not be empty");
        let old = serde_json::json!({"error": {"code": e.code(), "message": e.to_string()}});
        let new = ErrorBody::new(e.code(), e.to_string());
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        let old = serde_json::json!({ "revision": 7 });
        assert_eq!(serde_json::to_string(&Revision { revision: 7 }).unwrap(), old.to_string());
        let old = serde_json::json!({ "leader": 3 });
        let new = TransferLeaderAnswer { leader: 3 };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        for leader in [None, Some(1)] {
            let old = serde_json::json!({"ok": leader.is_some(), "node": 2, "state": "follower", "leader": leader});
            let new = Health { leader, node: 2, ok: leader.is_some(), state: "follower".into() };
            assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        }
    }

    /// An HTTP event converts to the domain event field by field, kind by
    /// kind.
    #[test]
    fn http_event_from_wire() {
        use wire::presence::Event as W;
        let ext: herald_domain::presence::Ext = [("a".to_string(), "b".to_string())].into();
        let e = event_from_wire(W::Login {
            uid: "u".into(),
            sid: 1,
            client: "web".into(),
            accepts_strangers: Some(false),
            ext: ext.clone(),
        });
        assert_eq!(
            e,
            Event::Login {
                uid: "u".into(),
                sid: 1,
                client: "web".into(),
                accepts_strangers: Some(false),
                ext: ext.clone()
            }
        );
        let e = event_from_wire(W::Logout {
            uid: "u".into(),
            sid: 1,
            client: "web".into(),
            ext: ext.clone(),
        });
        assert_eq!(e, Event::Logout { uid: "u".into(), sid: 1, client: "web".into(), ext });
        let e = event_from_wire(W::Permission {
            uid: "u".into(),
            sid: 1,
            accepts_strangers: true,
            ext: Default::default(),
        });
        assert_eq!(
            e,
            Event::Permission {
                uid: "u".into(),
                sid: 1,
                accepts_strangers: true,
                ext: Default::default()
            }
        );
    }
}

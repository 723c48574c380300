//! HTTP/JSON web service for web platforms (MISSION P4), on the publish port
//! beside gRPC. Paths and shapes are part of the public contract; see
//! README.md.

use herald_proto::codes;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Api, ApiError, Consistency, MembershipOp};
use herald_domain::presence::{Event, Ext, QueryResult, Record};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        (status, Json(body)).into_response()
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

/// One event as web platforms send it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JsonEvent {
    Login {
        uid: String,
        sid: u64,
        client: String,
        #[serde(default)]
        accepts_strangers: Option<bool>,
        #[serde(default)]
        ext: Ext,
    },
    Logout {
        uid: String,
        sid: u64,
        client: String,
        #[serde(default)]
        ext: Ext,
    },
    Permission {
        uid: String,
        sid: u64,
        accepts_strangers: bool,
        #[serde(default)]
        ext: Ext,
    },
}

impl From<JsonEvent> for Event {
    fn from(e: JsonEvent) -> Self {
        match e {
            JsonEvent::Login { uid, sid, client, accepts_strangers, ext } => {
                Event::Login { uid, sid, client, accepts_strangers, ext }
            }
            JsonEvent::Logout { uid, sid, client, ext } => Event::Logout { uid, sid, client, ext },
            JsonEvent::Permission { uid, sid, accepts_strangers, ext } => {
                Event::Permission { uid, sid, accepts_strangers, ext }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EventsBody {
    pub events: Vec<JsonEvent>,
}

#[derive(Debug, Deserialize)]
pub struct QueryBody {
    #[serde(default)]
    pub uids: Vec<String>,
    #[serde(default)]
    pub sids: Vec<u64>,
    #[serde(default)]
    pub consistency: Consistency,
}

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

fn query_json(q: &QueryResult) -> serde_json::Value {
    let users: Vec<UserJson> = q.users.iter().map(UserJson::from).collect();
    serde_json::json!({
        "revision": q.revision,
        "users": users,
        "unknown": q.unknown,
        "unknown_sids": q.unknown_sids,
    })
}

type AppState = Arc<Api>;

/// The HTTP routes; `max_body` bounds every request body.
pub fn router(api: Arc<Api>) -> Router {
    let limit = api.limits.max_request_bytes;
    Router::new()
        .route("/v1/presence/events", post(post_events))
        .route("/v1/presence/query", post(post_query))
        .route("/v1/presence", get(get_presence))
        .route("/v1/cluster", get(get_cluster))
        .route("/v1/cluster/add-learner", post(post_add_learner))
        .route("/v1/cluster/promote", post(post_promote))
        .route("/v1/cluster/remove", post(post_remove))
        .route("/v1/cluster/transfer-leader", post(post_transfer_leader))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(super::messages::routes())
        .merge(super::media::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(api)
}

async fn not_found() -> ApiError {
    ApiError::new(codes::NOT_FOUND, "no such path")
}

async fn post_events(
    State(api): State<AppState>,
    body: Result<Json<EventsBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    let events: Vec<Event> = body.events.into_iter().map(Event::from).collect();
    let revision = api.push_events(events).await?;
    Ok(Json(serde_json::json!({ "revision": revision })))
}

async fn post_query(
    State(api): State<AppState>,
    body: Result<Json<QueryBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(q) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    let res = api.query(&q.uids, &q.sids, q.consistency).await?;
    Ok(Json(query_json(&res)))
}

/// `GET /v1/presence?uid=u1&uid=u2&sid=10001[&consistency=local]`.
async fn get_presence(
    State(api): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.to_string()))?;
    let (mut uids, mut sids, mut consistency) = (Vec::new(), Vec::new(), Consistency::default());
    for (k, v) in pairs {
        match k.as_str() {
            "uid" => uids.push(v),
            "sid" => sids.push(v.parse::<u64>().map_err(|_| {
                ApiError::new(codes::INVALID_FIELD, format!("sid {v:?} is not a number"))
            })?),
            "consistency" => consistency = Consistency::parse(&v)?,
            other => {
                return Err(ApiError::new(
                    codes::UNKNOWN_PARAMETER,
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    let res = api.query(&uids, &sids, consistency).await?;
    Ok(Json(query_json(&res)))
}

#[derive(Debug, Deserialize, Default)]
struct ClusterQuery {
    #[serde(default)]
    local: bool,
}

/// `GET /v1/cluster[?local=true]`.
async fn get_cluster(
    State(api): State<AppState>,
    q: Result<axum::extract::Query<ClusterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<super::ClusterView>, ApiError> {
    let q = q.map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.body_text()))?;
    Ok(Json(api.cluster_view(q.0.local).await))
}

async fn post_transfer_leader(
    State(api): State<AppState>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(b) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    let leader = api.transfer_leader(b.number).await?;
    Ok(Json(serde_json::json!({ "leader": leader })))
}

#[derive(Debug, Deserialize)]
struct NumberBody {
    number: u64,
    #[serde(default)]
    sync: Option<String>,
    #[serde(default)]
    publish: Option<String>,
}

async fn membership(
    api: AppState,
    body: Result<Json<NumberBody>, JsonRejection>,
    f: impl FnOnce(NumberBody) -> MembershipOp,
) -> Result<Json<super::MembershipResult>, ApiError> {
    let Json(b) = body.map_err(|r| json_error(r, api.limits.max_request_bytes))?;
    Ok(Json(api.membership(f(b)).await?))
}

async fn post_add_learner(
    State(api): State<AppState>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<super::MembershipResult>, ApiError> {
    membership(api, body, |b| MembershipOp::AddLearner {
        number: b.number,
        sync: b.sync.unwrap_or_default(),
        publish: b.publish.unwrap_or_default(),
    })
    .await
}

async fn post_promote(
    State(api): State<AppState>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<super::MembershipResult>, ApiError> {
    membership(api, body, |b| MembershipOp::Promote { number: b.number }).await
}

async fn post_remove(
    State(api): State<AppState>,
    body: Result<Json<NumberBody>, JsonRejection>,
) -> Result<Json<super::MembershipResult>, ApiError> {
    membership(api, body, |b| MembershipOp::Remove { number: b.number }).await
}

async fn healthz(State(api): State<AppState>) -> Response {
    let st = api.node.status();
    let ok = st.leader.is_some();
    let body =
        serde_json::json!({"ok": ok, "node": st.node, "state": st.state, "leader": st.leader});
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
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
    let body = api.metrics.render(&st, users, online, &api.time.status(), changes, figures);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response()
}

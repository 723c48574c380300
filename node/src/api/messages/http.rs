//! Messages over HTTP (`/v1/messages`, `/v1/messages/batch`, `/v1/groups/{name}`,
//! `/v1/users/{uid}/settings`, `/v1/gateway`): thin axum handlers over the
//! logic in [`super`].

use herald_proto::codes;
use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use herald_proto::wire::messages::{
    GatewayChoice, GroupAnswer, GroupBody, GroupDeleted, SendAnswer, SendBatchAnswer,
    SendBatchBody, SendBatchItem, SendBody, SettingsAnswer, SettingsBody,
};
use herald_proto::wire::ErrorBody;
use serde::Deserialize;

use super::{Submission, MAX_SEND_BATCH};
use crate::api::access::Principal;
use crate::api::routes::{Served, Verb};
use crate::api::{Api, ApiError};

#[derive(Debug, Deserialize, Default)]
struct GatewayQuery {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    #[allow(dead_code)]
    client: String,
    /// The client's data center (else the zone of the node asked).
    #[serde(default)]
    zone: String,
}

type AppState = Arc<Api>;

/// Routes of this module, merged into the HTTP router.
pub fn routes() -> Served<AppState> {
    use Verb::*;
    Served::default()
        .at(Post, "/v1/messages", post_message)
        .at(Post, "/v1/messages/batch", post_message_batch)
        .at(Put, "/v1/groups/{name}", put_group)
        .at(Get, "/v1/groups/{name}", get_group)
        .at(Delete, "/v1/groups/{name}", delete_group)
        .at(Put, "/v1/users/{uid}/settings", put_settings)
        .at(Get, "/v1/users/{uid}/settings", get_settings)
        .at(Get, "/v1/gateway", get_gateway)
        .at(Get, "/v1/messages/queues", get_queues)
}

/// Longest list of inboxes (and of live broadcasts) `GET
/// /v1/messages/queues` answers: an operator's top list, and the summary
/// is built under the state's read lock (one pass over the inboxes).
const MAX_QUEUES_TOP: usize = 100;
/// Its default length.
const DEFAULT_QUEUES_TOP: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueuesQuery {
    top: Option<usize>,
}

/// The operator's view of the offline queues (the console's Messages
/// page): the longest inboxes with their oldest message's age, the number
/// of groups, live broadcasts with their acknowledgements; linearizable.
async fn get_queues(
    State(api): State<AppState>,
    q: Result<Query<QueuesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = q.map_err(|e| {
        let text = e.body_text();
        let code = if text.contains("unknown field") {
            codes::UNKNOWN_PARAMETER
        } else {
            codes::INVALID_QUERY_STRING
        };
        ApiError::new(code, text)
    })?;
    let top = q.0.top.unwrap_or(DEFAULT_QUEUES_TOP);
    if top == 0 || top > MAX_QUEUES_TOP {
        return Err(ApiError::new(
            codes::INVALID_FIELD,
            format!("top must be from 1 to {MAX_QUEUES_TOP}"),
        ));
    }
    let now = api.time.clock.now_ms();
    let (s, revision) = api
        .node
        .read(crate::raft::Consistency::Linearizable, |st| {
            (st.msgs.queue_summary(top, now), st.applied())
        })
        .await?;
    Ok(Json(serde_json::json!({
        "revision": revision,
        "stored_messages": s.stored_messages,
        "inboxes": s.inboxes,
        "groups": s.groups,
        "queues": s.queues.iter().map(|l| serde_json::json!({
            "uid": l.uid, "queued": l.queued, "oldest_age_ms": l.oldest_age_ms,
        })).collect::<Vec<_>>(),
        "broadcasts": s.broadcasts.iter().map(|b| serde_json::json!({
            "id": b.id, "from": b.from, "expires_at_ms": b.expires_at_ms, "acked": b.acked,
        })).collect::<Vec<_>>(),
    })))
}

async fn post_message(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<SendBody>, JsonRejection>,
) -> Result<Json<SendAnswer>, ApiError> {
    let Json(b) =
        body.map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))?;
    Ok(Json(api.send(submission(&p, b)?).await?))
}

/// `POST /v1/messages/batch`: many submissions in one log entry; each
/// answered in order (a bad one refuses the batch: nothing stored).
async fn post_message_batch(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<SendBatchBody>, JsonRejection>,
) -> Result<Json<SendBatchAnswer>, ApiError> {
    let Json(b) =
        body.map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))?;
    let mut subs = Vec::with_capacity(b.messages.len().min(MAX_SEND_BATCH + 1));
    for (i, m) in b.messages.into_iter().enumerate() {
        subs.push(submission(&p, m).map_err(|e| e.prefixed(&format!("message {i}")))?);
    }
    let (revision, items) = api.send_batch(subs).await?;
    let results = items
        .into_iter()
        .map(|a| match a {
            Ok(a) => SendBatchItem::Sent(a),
            Err(e) => SendBatchItem::Refused(ErrorBody::new(e.code(), e.to_string())),
        })
        .collect();
    Ok(Json(SendBatchAnswer { revision, results }))
}

/// A submission from a JSON body, sent by principal `p`.
fn submission(p: &Principal, mut b: SendBody) -> Result<Submission, ApiError> {
    // A user sends as itself only (an empty `from` is itself); an
    // application as anyone.
    p.bind(&mut b.from)?;
    let body = match (b.body, b.body_base64) {
        (Some(t), None) => t.into_bytes(),
        (None, Some(b64)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| ApiError::new(codes::INVALID_BODY, format!("body_base64: {e}")))?
        }
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            return Err(ApiError::new(codes::INVALID_BODY, "give body or body_base64, not both"))
        }
    };
    let s = Submission {
        idempotency_key: b.idempotency_key,
        from: b.from,
        to: b.to,
        group: b.group,
        broadcast: b.broadcast,
        ttl_s: b.ttl_s,
        content_type: b.content_type,
        body,
        grant_media: None,
        namespace: p.namespace(),
    };
    Ok(s)
}

async fn put_group(
    State(api): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> Result<Json<GroupAnswer>, ApiError> {
    let Json(b) =
        body.map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))?;
    if b.members.is_empty() {
        return Err(ApiError::new(
            codes::NO_MEMBERS,
            "a group needs members; DELETE removes a group",
        ));
    }
    let members: Vec<String> = {
        let mut seen = HashSet::new();
        b.members.into_iter().filter(|m| seen.insert(m.clone())).collect()
    };
    let revision = api.set_group(&name, members.clone()).await?;
    Ok(Json(GroupAnswer { members, name, revision }))
}

async fn get_group(
    State(api): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<GroupAnswer>, ApiError> {
    let (members, revision) = api.get_group(&name).await?;
    Ok(Json(GroupAnswer { members, name, revision }))
}

async fn delete_group(
    State(api): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<GroupDeleted>, ApiError> {
    api.get_group(&name).await?;
    let revision = api.set_group(&name, Vec::new()).await?;
    Ok(Json(GroupDeleted { deleted: true, name, revision }))
}

async fn put_settings(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    body: Result<Json<SettingsBody>, JsonRejection>,
) -> Result<Json<SettingsAnswer>, ApiError> {
    p.act_as(&uid)?;
    let Json(b) =
        body.map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))?;
    Ok(Json(api.set_settings(&uid, b.offline).await?))
}

async fn get_settings(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
) -> Result<Json<SettingsAnswer>, ApiError> {
    p.act_as(&uid)?;
    Ok(Json(api.get_settings(&uid).await?))
}

/// `GET /v1/gateway?uid=U`: the best node for this client, and all of them.
async fn get_gateway(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<GatewayQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GatewayChoice>, ApiError> {
    let mut q = q.map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.body_text()))?;
    // A user asks for itself (the uid may be left out).
    p.bind(&mut q.0.uid)?;
    let r = api.pick_gateway(&q.0.uid, &q.0.zone)?;
    Ok(Json(GatewayChoice::from(r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::v1 as pb;

    /// The group answers and the gateway choice are byte-for-byte what the
    /// node wrote with `serde_json::json!` before they were wire types.
    #[test]
    fn messages_answers_keep_their_bytes() {
        let (name, members, revision) = ("crew".to_string(), vec!["b".to_string(), "a".into()], 5);
        let old = serde_json::json!({ "name": name, "members": members, "revision": revision });
        let new = GroupAnswer { members: members.clone(), name: name.clone(), revision };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        let old = serde_json::json!({ "name": name, "deleted": true, "revision": revision });
        let new = GroupDeleted { deleted: true, name, revision };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());

        let old_gateway = |g: &pb::GatewayInfo| {
            serde_json::json!({
                "node": g.node, "publish": g.publish, "sessions": g.sessions, "max_sessions": g.max_sessions,
                "load": g.load, "healthy": g.healthy, "age_ms": g.age_ms,
            })
        };
        let g = |node: u64, load: f64| pb::GatewayInfo {
            node,
            publish: format!("h:7{node}03"),
            sessions: 3,
            max_sessions: 10,
            load,
            healthy: node != 3,
            age_ms: 250,
            zone: String::new(),
        };
        let r = pb::PickGatewayResponse {
            best: Some(g(2, 0.3)),
            candidates: vec![g(2, 0.3), g(3, 1.0 / 3.0)],
            reason: String::new(),
        };
        let old = serde_json::json!({
            "best": r.best.as_ref().map(old_gateway),
            "candidates": r.candidates.iter().map(old_gateway).collect::<Vec<_>>(),
        });
        assert_eq!(serde_json::to_string(&GatewayChoice::from(r)).unwrap(), old.to_string());
    }
}

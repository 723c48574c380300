//! Messages over HTTP: `POST /v1/messages`, recipient groups
//! (`/v1/groups/{name}`), offline-storage settings
//! (`/v1/users/{uid}/settings`) and the gateway choice (`GET /v1/gateway`).

use serde::{Deserialize, Serialize};

use super::is_zero;
use crate::v1 as pb;

/// Ids one gateway `Ack` frame may name: the gateway refuses a frame naming
/// more (`too_many_ids`) and the client library splits its acks at it.
/// 4,096 ids are 32 KiB of varints at most, far below the session frame
/// limit, and more than the gateway's window of unacknowledged messages.
pub const MAX_ACK_IDS: usize = 4096;

/// `POST /v1/messages` body. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// Required (a missing key is `invalid_field`; an empty one
    /// `invalid_idempotency_key`).
    pub idempotency_key: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl_s: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_type: String,
    /// The body as text...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// ...or as base64 (binary bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// `POST /v1/messages/batch` body: many submissions in one log entry (at
/// most 1,000, at most 4 MiB of bodies). Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBatchBody {
    pub messages: Vec<SendBody>,
}

/// One submission's answer in a batch: what [`SendAnswer`] says, or the
/// stable error apply gave it (e.g. `unknown_group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendBatchItem {
    Sent(SendAnswer),
    Refused(super::ErrorBody),
}

/// The answer to `POST /v1/messages/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBatchAnswer {
    /// The log entry that holds the batch.
    pub revision: u64,
    /// One per submission, in order.
    pub results: Vec<SendBatchItem>,
}

/// What happened for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    pub uid: String,
    /// delivered | stored | dropped | rejected
    pub outcome: String,
    /// Why dropped or rejected (`not_subscribed`, `quota_exceeded`).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
}

impl From<pb::RecipientOutcome> for RecipientOutcome {
    fn from(o: pb::RecipientOutcome) -> Self {
        RecipientOutcome { uid: o.uid, outcome: o.outcome, reason: o.reason }
    }
}

impl From<RecipientOutcome> for pb::RecipientOutcome {
    fn from(o: RecipientOutcome) -> Self {
        pb::RecipientOutcome { uid: o.uid, outcome: o.outcome, reason: o.reason }
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAnswer {
    pub message_id: u64,
    pub revision: u64,
    /// Answered from an earlier submission with the same idempotency key.
    pub duplicate: bool,
    pub recipients: Vec<RecipientOutcome>,
    /// Broadcasts: "online_only" or "stored".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<String>,
    /// Broadcasts with a lifetime: when they expire (cluster time, ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expires_at_ms: u64,
}

impl From<pb::SendResponse> for SendAnswer {
    fn from(r: pb::SendResponse) -> Self {
        SendAnswer {
            message_id: r.message_id,
            revision: r.revision,
            duplicate: r.duplicate,
            recipients: r.recipients.into_iter().map(RecipientOutcome::from).collect(),
            broadcast: (!r.broadcast.is_empty()).then_some(r.broadcast),
            expires_at_ms: r.expires_at_ms,
        }
    }
}

impl From<SendAnswer> for pb::SendResponse {
    fn from(a: SendAnswer) -> Self {
        pb::SendResponse {
            message_id: a.message_id,
            revision: a.revision,
            duplicate: a.duplicate,
            recipients: a.recipients.into_iter().map(pb::RecipientOutcome::from).collect(),
            broadcast: a.broadcast.unwrap_or_default(),
            expires_at_ms: a.expires_at_ms,
        }
    }
}

/// `PUT /v1/groups/{name}` body. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub members: Vec<String>,
}

/// The answer of `PUT` and `GET /v1/groups/{name}`. Fields in alphabetical
/// order: the order the node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAnswer {
    pub members: Vec<String>,
    pub name: String,
    pub revision: u64,
}

/// The answer of `DELETE /v1/groups/{name}` (`deleted` is always true).
/// Fields in alphabetical order: the order the node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDeleted {
    pub deleted: bool,
    pub name: String,
    pub revision: u64,
}

/// `PUT /v1/users/{uid}/settings` body. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    pub offline: bool,
}

/// A user's offline-storage setting and queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsAnswer {
    pub uid: String,
    /// Subscribed to offline storage.
    pub offline: bool,
    /// Messages stored for the user and not yet acknowledged.
    pub queued: u64,
    pub revision: u64,
}

impl From<pb::SettingsResponse> for SettingsAnswer {
    fn from(r: pb::SettingsResponse) -> Self {
        SettingsAnswer { uid: r.uid, offline: r.offline, queued: r.queued, revision: r.revision }
    }
}

impl From<SettingsAnswer> for pb::SettingsResponse {
    fn from(a: SettingsAnswer) -> Self {
        pb::SettingsResponse {
            uid: a.uid,
            offline: a.offline,
            queued: a.queued,
            revision: a.revision,
        }
    }
}

/// One gateway as the cluster rates it. Fields in alphabetical order: the
/// order the node writes them in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// Milliseconds since this load was measured.
    pub age_ms: u64,
    pub healthy: bool,
    /// 0..1: the larger of session fill and the other measures.
    pub load: f64,
    pub max_sessions: u64,
    pub node: u64,
    /// host:port of the node's publish port.
    pub publish: String,
    pub sessions: u64,
    /// The node's data center.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

impl From<pb::GatewayInfo> for GatewayInfo {
    fn from(g: pb::GatewayInfo) -> Self {
        GatewayInfo {
            node: g.node,
            publish: g.publish,
            sessions: g.sessions,
            max_sessions: g.max_sessions,
            load: g.load,
            healthy: g.healthy,
            age_ms: g.age_ms,
            zone: g.zone,
        }
    }
}

/// The answer of `GET /v1/gateway?uid=U`: the best gateway and every
/// candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayChoice {
    pub best: Option<GatewayInfo>,
    pub candidates: Vec<GatewayInfo>,
    /// Why `best` was chosen (zone preference, load).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl From<pb::PickGatewayResponse> for GatewayChoice {
    fn from(r: pb::PickGatewayResponse) -> Self {
        GatewayChoice {
            best: r.best.map(GatewayInfo::from),
            candidates: r.candidates.into_iter().map(GatewayInfo::from).collect(),
            reason: r.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The send body is as strict as the node always was: key and sender
    /// required, everything else defaults, unknown fields refused.
    #[test]
    fn wire_messages_send_body_parsing() {
        let b: SendBody =
            serde_json::from_str(r#"{"idempotency_key":"k","from":"a","to":["b"]}"#).unwrap();
        assert_eq!(
            b,
            SendBody {
                idempotency_key: "k".into(),
                from: "a".into(),
                to: vec!["b".into()],
                ..SendBody::default()
            }
        );
        for bad in [
            r#"{"from":"a","to":["b"]}"#,
            r#"{"idempotency_key":"k","to":["b"]}"#,
            r#"{"idempotency_key":"k","from":"a","to":["b"],"ttl":3}"#,
            r#"{"idempotency_key":"k","from":"a","broadcast":"yes"}"#,
        ] {
            assert!(serde_json::from_str::<SendBody>(bad).is_err(), "{bad}");
        }
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, r#"{"idempotency_key":"k","from":"a","to":["b"]}"#);
    }

    /// Group and settings bodies need their one field and refuse others.
    #[test]
    fn wire_messages_group_and_settings_bodies() {
        let g: GroupBody = serde_json::from_str(r#"{"members":["a","b"]}"#).unwrap();
        assert_eq!(g.members, vec!["a".to_string(), "b".to_string()]);
        assert!(serde_json::from_str::<GroupBody>("{}").is_err());
        assert!(serde_json::from_str::<GroupBody>(r#"{"members":[],"x":1}"#).is_err());
        let s: SettingsBody = serde_json::from_str(r#"{"offline":false}"#).unwrap();
        assert!(!s.offline);
        assert!(serde_json::from_str::<SettingsBody>("{}").is_err());
        assert!(serde_json::from_str::<SettingsBody>(r#"{"offline":true,"x":1}"#).is_err());
    }

    /// Send answers as the node writes them (directed: no broadcast, no
    /// expiry, empty reasons left out; broadcast with a lifetime) parse and
    /// serialize back to the same bytes; protobuf converts both ways.
    #[test]
    fn wire_messages_send_answer_round_trip() {
        let directed = r#"{"message_id":7,"revision":12,"duplicate":false,"recipients":[{"uid":"b","outcome":"delivered"},{"uid":"c","outcome":"dropped","reason":"not_subscribed"}]}"#;
        let a: SendAnswer = serde_json::from_str(directed).unwrap();
        assert_eq!((a.broadcast.as_deref(), a.expires_at_ms), (None, 0));
        assert_eq!(
            (a.recipients[0].reason.as_str(), a.recipients[1].reason.as_str()),
            ("", "not_subscribed")
        );
        assert_eq!(serde_json::to_string(&a).unwrap(), directed);
        let bc = r#"{"message_id":8,"revision":13,"duplicate":true,"recipients":[],"broadcast":"stored","expires_at_ms":99}"#;
        let b: SendAnswer = serde_json::from_str(bc).unwrap();
        assert_eq!((b.broadcast.as_deref(), b.expires_at_ms), (Some("stored"), 99));
        assert_eq!(serde_json::to_string(&b).unwrap(), bc);
        assert_eq!(SendAnswer::from(pb::SendResponse::from(a.clone())), a);
        assert_eq!(SendAnswer::from(pb::SendResponse::from(b.clone())), b);
    }

    /// Group, deleted-group, settings and gateway answers are byte-for-byte
    /// what the node writes.
    #[test]
    fn wire_messages_small_answers_round_trip() {
        let node = r#"{"members":["a","b"],"name":"crew","revision":5}"#;
        let g: GroupAnswer = serde_json::from_str(node).unwrap();
        assert_eq!(serde_json::to_string(&g).unwrap(), node);
        let node = r#"{"deleted":true,"name":"crew","revision":6}"#;
        let d: GroupDeleted = serde_json::from_str(node).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), node);
        let node = r#"{"uid":"u","offline":true,"queued":3,"revision":7}"#;
        let s: SettingsAnswer = serde_json::from_str(node).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), node);
        assert_eq!(SettingsAnswer::from(pb::SettingsResponse::from(s.clone())), s);
        let node = r#"{"best":{"age_ms":12,"healthy":true,"load":0.5,"max_sessions":100,"node":2,"publish":"h:7203","sessions":50},"candidates":[{"age_ms":12,"healthy":true,"load":0.5,"max_sessions":100,"node":2,"publish":"h:7203","sessions":50}]}"#;
        let c: GatewayChoice = serde_json::from_str(node).unwrap();
        assert_eq!(c.best.as_ref().map(|b| b.node), Some(2));
        assert_eq!(serde_json::to_string(&c).unwrap(), node);
        let none = GatewayChoice { best: None, candidates: vec![], reason: String::new() };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"best":null,"candidates":[]}"#);
    }

    /// The gateway choice converts from protobuf field by field.
    #[test]
    fn wire_messages_gateway_from_pb() {
        let g = pb::GatewayInfo {
            node: 3,
            publish: "p".into(),
            sessions: 4,
            max_sessions: 5,
            load: 0.75,
            healthy: true,
            age_ms: 6,
            zone: "dc1".into(),
        };
        let c = GatewayChoice::from(pb::PickGatewayResponse {
            best: Some(g.clone()),
            candidates: vec![g],
            reason: "why".into(),
        });
        assert_eq!((c.reason.as_str(), c.candidates[0].zone.as_str()), ("why", "dc1"));
        let b = c.best.unwrap();
        assert_eq!((b.node, b.publish.as_str(), b.sessions, b.max_sessions), (3, "p", 4, 5));
        assert_eq!((b.load, b.healthy, b.age_ms), (0.75, true, 6));
        assert_eq!(c.candidates.len(), 1);
    }
}

//! Presence over HTTP: `POST /v1/presence/events`, `POST
//! /v1/presence/query` and `GET /v1/presence` (the query's answer).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// Free key/values carried by an event and kept on the user's record.
pub type Ext = BTreeMap<String, String>;

/// One event as web platforms send it (tag `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The user came online on `client`; `accepts_strangers` optionally
    /// changes the permission at the same time.
    Login {
        uid: String,
        sid: u64,
        client: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accepts_strangers: Option<bool>,
        #[serde(default, skip_serializing_if = "Ext::is_empty")]
        ext: Ext,
    },
    /// The user went offline on `client`.
    Logout {
        uid: String,
        sid: u64,
        client: String,
        #[serde(default, skip_serializing_if = "Ext::is_empty")]
        ext: Ext,
    },
    /// The user changed whether strangers may open sessions with it.
    Permission {
        uid: String,
        sid: u64,
        accepts_strangers: bool,
        #[serde(default, skip_serializing_if = "Ext::is_empty")]
        ext: Ext,
    },
}

/// `POST /v1/presence/events` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsBody {
    pub events: Vec<Event>,
}

/// Read consistency of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read-index confirmed by the leader: reflects every write
    /// acknowledged before the query.
    #[default]
    Linearizable,
    /// The queried node's current state, no round trip; may be stale.
    Local,
    /// The queried node's state if no staler than `max_staleness_ms`
    /// (measured); else it waits briefly, then forwards or fails.
    Bounded,
}

impl Consistency {
    /// The protobuf enum value (`herald.v1.Consistency`).
    pub fn to_pb(self) -> i32 {
        match self {
            Consistency::Linearizable => pb::Consistency::Linearizable as i32,
            Consistency::Local => pb::Consistency::Local as i32,
            Consistency::Bounded => pb::Consistency::Bounded as i32,
        }
    }
}

/// `POST /v1/presence/query` body; every field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryBody {
    #[serde(default)]
    pub uids: Vec<String>,
    #[serde(default)]
    pub sids: Vec<u64>,
    #[serde(default)]
    pub consistency: Consistency,
    /// `bounded`: the most staleness accepted, ms (else the node's
    /// `<reads max-staleness-ms>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness_ms: Option<u64>,
    /// Read-your-writes: served once the node applied this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_revision: Option<u64>,
}

/// The presence record of one user. Fields in alphabetical order: the
/// order the node writes them in. (The node serializes its own borrowing
/// twin of this type, `UserJson` in herald-node, to avoid copying every
/// record of an answer; a node test checks that the two agree.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub accepts_strangers: bool,
    /// Cluster time of the last change, ms since the Unix epoch.
    pub changed_at_ms: u64,
    /// Client types the user is online on, sorted.
    pub clients: Vec<String>,
    pub ext: Ext,
    pub online: bool,
    /// Log index of the last change.
    pub revision: u64,
    pub sid: u64,
    pub uid: String,
}

impl From<pb::UserPresence> for UserPresence {
    fn from(u: pb::UserPresence) -> Self {
        let mut clients = u.clients;
        clients.sort();
        UserPresence {
            uid: u.uid,
            sid: u.sid,
            online: u.online,
            clients,
            accepts_strangers: u.accepts_strangers,
            ext: u.ext.into_iter().collect(),
            changed_at_ms: u.changed_at_ms,
            revision: u.revision,
        }
    }
}

/// The answer to a query. Fields in alphabetical order: the order the node
/// writes them in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryAnswer {
    /// Applied index the answer was served at. When the query was split
    /// into several requests, the lowest of their revisions: every part of
    /// the answer reflects at least the log up to here.
    pub revision: u64,
    /// How stale the answer may be, ms (0: confirmed by the leader; none:
    /// the node applied nothing stamped yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness_ms: Option<u64>,
    /// Uids that have no record, in request order.
    pub unknown: Vec<String>,
    /// Sids that resolve to no user, in request order.
    pub unknown_sids: Vec<u64>,
    /// Records found, by uid then by sid, each user at most once, in
    /// request order.
    pub users: Vec<UserPresence>,
}

impl From<pb::QueryResponse> for QueryAnswer {
    fn from(r: pb::QueryResponse) -> Self {
        QueryAnswer {
            revision: r.revision,
            staleness_ms: r.staleness_ms,
            users: r.users.into_iter().map(UserPresence::from).collect(),
            unknown: r.unknown,
            unknown_sids: r.unknown_sids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events parse as the node always parsed them: tag `type`, optional
    /// `accepts_strangers` and `ext` on login, `accepts_strangers` required
    /// on permission, an unknown type refused; unknown fields are ignored.
    #[test]
    fn wire_presence_event_parsing() {
        let b: EventsBody = serde_json::from_str(
            r#"{"events":[{"type":"login","uid":"u","sid":1,"client":"web","extra":1},
            {"type":"logout","uid":"u","sid":1,"client":"web","ext":{"k":"v"}},
            {"type":"permission","uid":"u","sid":1,"accepts_strangers":false}]}"#,
        )
        .unwrap();
        let ext: Ext = [("k".to_string(), "v".to_string())].into();
        assert_eq!(
            b.events,
            vec![
                Event::Login {
                    uid: "u".into(),
                    sid: 1,
                    client: "web".into(),
                    accepts_strangers: None,
                    ext: Ext::new()
                },
                Event::Logout { uid: "u".into(), sid: 1, client: "web".into(), ext },
                Event::Permission {
                    uid: "u".into(),
                    sid: 1,
                    accepts_strangers: false,
                    ext: Ext::new()
                },
            ]
        );
        let bad = [
            r#"{"events":[{"type":"permission","uid":"u","sid":1}]}"#,
            r#"{"events":[{"type":"wave","uid":"u","sid":1}]}"#,
            r#"{"events":[{"uid":"u","sid":1,"client":"web"}]}"#,
            r#"{}"#,
        ];
        for j in bad {
            assert!(serde_json::from_str::<EventsBody>(j).is_err(), "{j}");
        }
        let e = Event::Login {
            uid: "u".into(),
            sid: 1,
            client: "web".into(),
            accepts_strangers: None,
            ext: Ext::new(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"login","uid":"u","sid":1,"client":"web"}"#
        );
    }

    /// A query body may be empty (linearizable, no ids); consistency is
    /// `linearizable` or `local`, anything else is refused.
    #[test]
    fn wire_presence_query_body() {
        let q: QueryBody = serde_json::from_str("{}").unwrap();
        assert_eq!(q, QueryBody::default());
        assert_eq!(q.consistency, Consistency::Linearizable);
        let q: QueryBody =
            serde_json::from_str(r#"{"uids":["a"],"sids":[7],"consistency":"local"}"#).unwrap();
        assert_eq!(
            (q.uids, q.sids, q.consistency),
            (vec!["a".into()], vec![7], Consistency::Local)
        );
        assert!(serde_json::from_str::<QueryBody>(r#"{"consistency":"eventual"}"#).is_err());
        assert!(serde_json::from_str::<QueryBody>(r#"{"consistency":""}"#).is_err());
    }

    /// A query answer as the node writes it parses, and serializes back to
    /// the same bytes.
    #[test]
    fn wire_presence_query_answer_round_trip() {
        let node = r#"{"revision":9,"unknown":["x"],"unknown_sids":[5],"users":[{"accepts_strangers":true,"changed_at_ms":1700000000000,"clients":["mobile","web"],"ext":{"k":"v"},"online":true,"revision":8,"sid":1001,"uid":"u1"}]}"#;
        let a: QueryAnswer = serde_json::from_str(node).unwrap();
        assert_eq!(
            (a.revision, a.unknown.as_slice(), a.unknown_sids.as_slice()),
            (9, &["x".to_string()][..], &[5][..])
        );
        assert_eq!(a.users[0].clients, vec!["mobile".to_string(), "web".to_string()]);
        assert_eq!(a.users[0].ext.get("k").map(String::as_str), Some("v"));
        assert_eq!(serde_json::to_string(&a).unwrap(), node);
    }

    /// A protobuf record converts with its clients sorted and its ext kept.
    #[test]
    fn wire_presence_user_from_pb() {
        let u = UserPresence::from(pb::UserPresence {
            uid: "u".into(),
            sid: 3,
            online: true,
            clients: vec!["web".into(), "mobile".into()],
            accepts_strangers: false,
            ext: [("a".to_string(), "b".to_string())].into(),
            changed_at_ms: 5,
            revision: 6,
        });
        assert_eq!(u.clients, vec!["mobile".to_string(), "web".to_string()]);
        assert_eq!((u.uid.as_str(), u.sid, u.changed_at_ms, u.revision), ("u", 3, 5, 6));
        assert_eq!(u.ext.get("a").map(String::as_str), Some("b"));
    }
}

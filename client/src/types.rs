//! Plain Rust types of the API (serde-serialisable, for `--json`), and their
//! conversions to and from the generated protobuf messages. The answer
//! types are the HTTP API's JSON types ([`herald_proto::wire`]), which
//! also convert from protobuf; [`Event`] is this library's own (its JSON
//! tag is `kind`, for `--json`; the HTTP API's event is
//! [`herald_proto::wire::presence::Event`], tagged `type`).

use std::collections::BTreeMap;

use herald_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// Free key/values carried by an event and kept on the user's record.
pub use herald_proto::wire::presence::Ext;

/// One event of an IM system's user status pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The user came online on `client`; `accepts_strangers` optionally
    /// changes the permission at the same time.
    Login {
        uid: String,
        sid: u64,
        client: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accepts_strangers: Option<bool>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        ext: Ext,
    },
    /// The user went offline on `client`.
    Logout {
        uid: String,
        sid: u64,
        client: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        ext: Ext,
    },
    /// The user changed whether strangers may open sessions with it.
    Permission {
        uid: String,
        sid: u64,
        accepts_strangers: bool,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        ext: Ext,
    },
}

impl Event {
    /// A login without permission change or ext.
    pub fn login(uid: impl Into<String>, sid: u64, client: impl Into<String>) -> Self {
        Event::Login {
            uid: uid.into(),
            sid,
            client: client.into(),
            accepts_strangers: None,
            ext: Ext::new(),
        }
    }

    /// A logout without ext.
    pub fn logout(uid: impl Into<String>, sid: u64, client: impl Into<String>) -> Self {
        Event::Logout { uid: uid.into(), sid, client: client.into(), ext: Ext::new() }
    }

    /// A permission change without ext.
    pub fn permission(uid: impl Into<String>, sid: u64, accepts_strangers: bool) -> Self {
        Event::Permission { uid: uid.into(), sid, accepts_strangers, ext: Ext::new() }
    }

    pub(crate) fn into_pb(self) -> pb::PresenceEvent {
        use pb::presence_event::Kind;
        let (kind, uid, sid, client, accepts_strangers, ext) = match self {
            Event::Login { uid, sid, client, accepts_strangers, ext } => {
                (Kind::Login, uid, sid, client, accepts_strangers, ext)
            }
            Event::Logout { uid, sid, client, ext } => (Kind::Logout, uid, sid, client, None, ext),
            Event::Permission { uid, sid, accepts_strangers, ext } => {
                (Kind::Permission, uid, sid, String::new(), Some(accepts_strangers), ext)
            }
        };
        pb::PresenceEvent {
            kind: kind as i32,
            uid,
            sid,
            client,
            accepts_strangers,
            ext: ext.into_iter().collect(),
        }
    }
}

/// Read consistency of a query (the HTTP API's, [`herald_proto::wire`]).
pub use herald_proto::wire::presence::Consistency;

/// How a query is to be served: its consistency, the staleness bound of a
/// `bounded` one (None: the node's `<reads max-staleness-ms>`), and a
/// revision the answer must include (read-your-writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    pub consistency: Consistency,
    pub max_staleness_ms: Option<u64>,
    pub min_revision: Option<u64>,
}

/// The presence record of one user, and the answer to a batch query
/// (shared with the node's HTTP API, [`herald_proto::wire::presence`]).
pub use herald_proto::wire::presence::{QueryAnswer as QueryResult, UserPresence};

/// The cluster as one node sees it, one member, its clock, and the result
/// of a membership change (shared with the node's `GET /v1/cluster`,
/// [`herald_proto::wire::cluster`]). Over gRPC, which this client uses,
/// everything is carried but the answering node's cluster-wide `media`
/// summary (HTTP only: `None` here); each member's own `media` storage is
/// carried.
pub use herald_proto::wire::cluster::{
    ClockStatus, ClusterView as Status, MembershipResult as Membership, NodeMedia,
    NodeView as NodeStatus,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Each event kind maps to its protobuf kind; permission carries
    /// `accepts_strangers` and no client, logout carries no permission.
    #[test]
    fn client_types_event_to_pb() {
        use pb::presence_event::Kind;
        let mut ext = Ext::new();
        ext.insert("k".into(), "v".into());
        let e = Event::Login {
            uid: "u".into(),
            sid: 7,
            client: "web".into(),
            accepts_strangers: Some(false),
            ext,
        };
        let p = e.into_pb();
        assert_eq!(
            (p.kind, p.uid.as_str(), p.sid, p.client.as_str()),
            (Kind::Login as i32, "u", 7, "web")
        );
        assert_eq!(p.accepts_strangers, Some(false));
        assert_eq!(p.ext.get("k").map(String::as_str), Some("v"));
        let p = Event::logout("u", 7, "web").into_pb();
        assert_eq!((p.kind, p.accepts_strangers), (Kind::Logout as i32, None));
        let p = Event::permission("u", 7, true).into_pb();
        assert_eq!(
            (p.kind, p.client.as_str(), p.accepts_strangers),
            (Kind::Permission as i32, "", Some(true))
        );
    }

    /// Consistency defaults to linearizable and maps to the protobuf enum.
    #[test]
    fn client_types_consistency_default_and_pb() {
        assert_eq!(Consistency::default(), Consistency::Linearizable);
        assert_eq!(Consistency::Linearizable.to_pb(), pb::Consistency::Linearizable as i32);
        assert_eq!(Consistency::Local.to_pb(), pb::Consistency::Local as i32);
    }

    /// Events serialise to JSON with a snake_case `kind` tag and round-trip.
    #[test]
    fn client_types_event_json_round_trip() {
        let e = Event::permission("u1", 3, false);
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"kind":"permission","uid":"u1","sid":3,"accepts_strangers":false}"#);
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
    }
}

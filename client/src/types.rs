//! Plain Rust types of the API (serde-serialisable, for `--json`), and their
//! conversions to and from the generated protobuf messages.

use std::collections::BTreeMap;

use herald_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// Free key/values carried by an event and kept on the user's record.
pub type Ext = BTreeMap<String, String>;

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
}

impl Consistency {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            Consistency::Linearizable => pb::Consistency::Linearizable as i32,
            Consistency::Local => pb::Consistency::Local as i32,
        }
    }
}

/// The presence record of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub uid: String,
    pub sid: u64,
    pub online: bool,
    /// Client types the user is online on, sorted.
    pub clients: Vec<String>,
    pub accepts_strangers: bool,
    pub ext: Ext,
    /// Cluster time of the last change, ms since the Unix epoch.
    pub changed_at_ms: u64,
    /// Log index of the last change.
    pub revision: u64,
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

/// The answer to a batch query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResult {
    /// Applied index the answer was served at. When the query was split
    /// into several requests, the lowest of their revisions: every part of
    /// the answer reflects at least the log up to here.
    pub revision: u64,
    /// Records found, by uid then by sid, each user at most once, in
    /// request order.
    pub users: Vec<UserPresence>,
    /// Uids that have no record, in request order.
    pub unknown: Vec<String>,
    /// Sids that resolve to no user, in request order.
    pub unknown_sids: Vec<u64>,
}

impl From<pb::QueryResponse> for QueryResult {
    fn from(r: pb::QueryResponse) -> Self {
        QueryResult {
            revision: r.revision,
            users: r.users.into_iter().map(UserPresence::from).collect(),
            unknown: r.unknown,
            unknown_sids: r.unknown_sids,
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub number: u64,
    /// host:port of Raft traffic.
    pub sync: String,
    /// host:port of gRPC + HTTP.
    pub publish: String,
    /// leader | follower | learner | candidate | unknown
    pub role: String,
    /// Replication to it keeps up (as seen by the leader), or it is the
    /// answering node.
    pub healthy: bool,
    /// Last log index known replicated to it (leader's view).
    pub matched_index: Option<u64>,
    /// Its cluster clock against the time master, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStatus>,
}

/// A node's cluster clock against the time master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// Error at the last poll, ms (positive: the master is ahead).
    pub offset_ms: f64,
    /// Round trip of the best sample, ms.
    pub rtt_ms: f64,
    /// Cluster time of the last successful poll (0: never).
    pub last_sync_ms: u64,
    pub in_tolerance: bool,
    pub time_master: Option<u64>,
    /// Why the last poll failed, if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl From<pb::ClockStatus> for ClockStatus {
    fn from(c: pb::ClockStatus) -> Self {
        ClockStatus {
            offset_ms: c.offset_ms,
            rtt_ms: c.rtt_ms,
            last_sync_ms: c.last_sync_ms,
            in_tolerance: c.in_tolerance,
            time_master: c.time_master,
            error: c.error,
        }
    }
}

impl From<pb::NodeStatus> for NodeStatus {
    fn from(n: pb::NodeStatus) -> Self {
        NodeStatus {
            number: n.number,
            sync: n.sync,
            publish: n.publish,
            role: n.role,
            healthy: n.healthy,
            matched_index: n.matched_index,
            clock: n.clock.map(ClockStatus::from),
        }
    }
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Cluster name.
    pub cluster: String,
    /// Number of the node that answered.
    pub node: u64,
    /// That node's own server state (leader, follower, ...).
    pub state: String,
    pub leader: Option<u64>,
    /// The numbered master (the leader, steered to the lowest number).
    pub master: Option<u64>,
    /// Whose clock is the standard time.
    pub time_master: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub nodes: Vec<NodeStatus>,
}

impl From<pb::StatusResponse> for Status {
    fn from(s: pb::StatusResponse) -> Self {
        Status {
            cluster: s.cluster,
            node: s.node,
            state: s.state,
            leader: s.leader,
            master: s.master,
            time_master: s.time_master,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            nodes: s.nodes.into_iter().map(NodeStatus::from).collect(),
        }
    }
}

/// The result of a membership change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// Log index of the membership change.
    pub revision: u64,
    /// The members afterwards.
    pub nodes: Vec<NodeStatus>,
}

impl From<pb::MembershipResponse> for Membership {
    fn from(m: pb::MembershipResponse) -> Self {
        Membership {
            revision: m.revision,
            nodes: m.nodes.into_iter().map(NodeStatus::from).collect(),
        }
    }
}

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

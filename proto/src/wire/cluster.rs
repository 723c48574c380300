//! The cluster over HTTP: `GET /v1/cluster` ([`ClusterView`], with each
//! member's [`ClockStatus`], gateway load and own [`NodeMedia`] storage, and this node's
//! [`MediaStatus`]), the membership changes `POST /v1/cluster/{add-learner,
//! promote, remove}`, `POST /v1/cluster/transfer-leader` and `GET
//! /healthz`.
//!
//! The gRPC `Cluster.Status` answers the same view, except the answering
//! node's `media` (HTTP only; `None` when converted from protobuf).

use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// A node's cluster clock against the time master, as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClockStatus {
    /// Error of this node's cluster clock against the time master at the
    /// last poll, in ms (positive: the master is ahead).
    pub offset_ms: f64,
    /// Round trip of the best sample of the last poll, in ms.
    pub rtt_ms: f64,
    /// Cluster time of the last successful poll (0: never).
    pub last_sync_ms: u64,
    pub in_tolerance: bool,
    /// The time master this node followed at the last poll (itself when it
    /// is the master).
    pub time_master: Option<u64>,
    /// Why the last poll failed, if it did; the clock keeps its last correction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Corrections applied since start.
    pub corrections: u64,
}

impl From<pb::ClockStatus> for ClockStatus {
    fn from(c: pb::ClockStatus) -> Self {
        ClockStatus {
            offset_ms: c.offset_ms,
            rtt_ms: c.rtt_ms,
            last_sync_ms: c.last_sync_ms,
            in_tolerance: c.in_tolerance,
            time_master: c.time_master,
            error: (!c.error.is_empty()).then_some(c.error),
            corrections: c.corrections,
        }
    }
}

impl From<ClockStatus> for pb::ClockStatus {
    fn from(c: ClockStatus) -> Self {
        pb::ClockStatus {
            offset_ms: c.offset_ms,
            rtt_ms: c.rtt_ms,
            last_sync_ms: c.last_sync_ms,
            in_tolerance: c.in_tolerance,
            time_master: c.time_master,
            error: c.error.unwrap_or_default(),
            corrections: c.corrections,
        }
    }
}

/// Sessions and load of one gateway, as the answering node last heard them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayView {
    pub sessions: u64,
    pub load: f64,
    /// Heard from within the freshness window (always true for the
    /// answering node).
    pub fresh: bool,
}

/// A member's own media storage, as it reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeMedia {
    /// The last write probe of its media directory succeeded.
    pub healthy: bool,
    /// Media files it holds, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Free space of its media file system.
    pub free_bytes: u64,
    /// Uploads in progress on it.
    pub open_uploads: u64,
}

impl From<&MediaStatus> for NodeMedia {
    fn from(m: &MediaStatus) -> Self {
        NodeMedia {
            healthy: m.healthy,
            files: m.files_here,
            bytes: m.bytes_here,
            free_bytes: m.free_bytes,
            open_uploads: m.open_uploads,
        }
    }
}

/// One member in `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub number: u64,
    /// host:port of Raft traffic.
    #[serde(default)]
    pub sync: String,
    /// host:port of gRPC + HTTP.
    #[serde(default)]
    pub publish: String,
    /// leader | follower | learner | candidate | unknown
    #[serde(default)]
    pub role: String,
    /// Replication to it keeps up (as seen by the leader), or it is the
    /// answering node.
    #[serde(default)]
    pub healthy: bool,
    /// Last log index known replicated to it (leader's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    /// The member's cluster clock against the time master, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStatus>,
    /// The member's gateway load as the answering node last heard it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayView>,
    /// The member's data center (zone), from the replicated membership.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// A non-voting replica kept as one (role `replica` in XML).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica: bool,
    /// Entries the leader has not replicated to it yet (leader's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<u64>,
    /// The member's own staleness: its cluster time minus the leader's
    /// time stamped into the newest entry it applied, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// The member's own media storage, as it reports it (unknown when it
    /// did not answer in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<NodeMedia>,
}

impl From<pb::NodeStatus> for NodeView {
    fn from(n: pb::NodeStatus) -> Self {
        NodeView {
            number: n.number,
            sync: n.sync,
            publish: n.publish,
            role: n.role,
            healthy: n.healthy,
            matched_index: n.matched_index,
            clock: n.clock.map(ClockStatus::from),
            gateway: n.gateway.map(|g| GatewayView {
                sessions: g.sessions,
                load: g.load,
                fresh: g.fresh,
            }),
            zone: n.zone,
            replica: n.replica,
            lag_entries: n.lag_entries,
            lag_ms: n.lag_ms,
            media: n.media.map(|m| NodeMedia {
                healthy: m.healthy,
                files: m.files,
                bytes: m.bytes,
                free_bytes: m.free_bytes,
                open_uploads: m.open_uploads,
            }),
        }
    }
}

impl From<NodeView> for pb::NodeStatus {
    fn from(n: NodeView) -> Self {
        pb::NodeStatus {
            number: n.number,
            sync: n.sync,
            publish: n.publish,
            role: n.role,
            healthy: n.healthy,
            matched_index: n.matched_index,
            clock: n.clock.map(pb::ClockStatus::from),
            gateway: n.gateway.map(|g| pb::GatewayLoad {
                sessions: g.sessions,
                load: g.load,
                fresh: g.fresh,
            }),
            zone: n.zone,
            replica: n.replica,
            lag_entries: n.lag_entries,
            lag_ms: n.lag_ms,
            media: n.media.map(|m| pb::NodeMedia {
                healthy: m.healthy,
                files: m.files,
                bytes: m.bytes,
                free_bytes: m.free_bytes,
                open_uploads: m.open_uploads,
            }),
        }
    }
}

/// What a node's media storage is doing (status page and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaStatus {
    /// The last write probe of the media directory succeeded.
    pub healthy: bool,
    pub free_bytes: u64,
    pub reserve_bytes: u64,
    /// Media files on this node, and their bytes.
    pub files_here: u64,
    pub bytes_here: u64,
    /// Media the cluster knows, and their bytes (one copy each).
    pub media: u64,
    pub media_bytes: u64,
    /// Known media with fewer live replicas than required.
    pub under_replicated: u64,
    pub open_uploads: u64,
    /// Replicas an upload needs now.
    pub required_replicas: u64,
}

/// The body of `GET /v1/cluster`: the cluster as one node sees it.
/// `node`, `state`, `term` and `nodes` are required when parsing (a reply
/// without them is not a cluster view); the rest default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Cluster name.
    #[serde(default)]
    pub cluster: String,
    /// Number of the node that answered.
    pub node: u64,
    /// That node's own server state (leader, follower, ...).
    pub state: String,
    #[serde(default)]
    pub leader: Option<u64>,
    /// The numbered master (the Raft leader, steered to the lowest number).
    #[serde(default)]
    pub master: Option<u64>,
    /// Whose clock is the standard time, as the answering node last
    /// followed it.
    #[serde(default)]
    pub time_master: Option<u64>,
    pub term: u64,
    #[serde(default)]
    pub last_log_index: u64,
    #[serde(default)]
    pub commit_index: u64,
    #[serde(default)]
    pub applied_index: u64,
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    pub nodes: Vec<NodeView>,
    /// Whether the answering node's sync port uses mutual TLS between peers
    /// (`<peer-tls>`); false: plaintext peers, a development setting that
    /// lets anyone who reaches the sync port act as a member.
    #[serde(default)]
    pub peer_tls: bool,
    /// The answering node's media storage (HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaStatus>,
}

impl From<pb::StatusResponse> for ClusterView {
    fn from(s: pb::StatusResponse) -> Self {
        ClusterView {
            cluster: s.cluster,
            node: s.node,
            state: s.state,
            leader: s.leader,
            master: s.master,
            time_master: s.time_master,
            term: s.term,
            last_log_index: s.last_log_index,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            nodes: s.nodes.into_iter().map(NodeView::from).collect(),
            peer_tls: s.peer_tls,
            media: None,
        }
    }
}

impl From<ClusterView> for pb::StatusResponse {
    fn from(v: ClusterView) -> Self {
        pb::StatusResponse {
            cluster: v.cluster,
            node: v.node,
            leader: v.leader,
            term: v.term,
            commit_index: v.commit_index,
            applied_index: v.applied_index,
            nodes: v.nodes.into_iter().map(pb::NodeStatus::from).collect(),
            state: v.state,
            master: v.master,
            time_master: v.time_master,
            last_log_index: v.last_log_index,
            snapshot_index: v.snapshot_index,
            peer_tls: v.peer_tls,
        }
    }
}

/// Body of `POST /v1/cluster/{add-learner,promote,remove,transfer-leader}`:
/// the node number; add-learner may give the addresses (else they come
/// from the answering node's XML server list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipBody {
    pub number: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// add-learner / add-replica: the node's data center (else the XML's,
    /// else "default").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// add-learner: a replica, kept as a learner (`POST
    /// /v1/cluster/add-learner` with `"replica": true` is add-replica).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica: bool,
}

/// The answer to a membership change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipResult {
    /// Log index of the membership change.
    pub revision: u64,
    /// The members afterwards.
    pub nodes: Vec<NodeView>,
}

impl From<pb::MembershipResponse> for MembershipResult {
    fn from(m: pb::MembershipResponse) -> Self {
        MembershipResult {
            revision: m.revision,
            nodes: m.nodes.into_iter().map(NodeView::from).collect(),
        }
    }
}

impl From<MembershipResult> for pb::MembershipResponse {
    fn from(r: MembershipResult) -> Self {
        pb::MembershipResponse {
            revision: r.revision,
            nodes: r.nodes.into_iter().map(pb::NodeStatus::from).collect(),
        }
    }
}

/// The answer to `POST /v1/cluster/transfer-leader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderAnswer {
    /// The node asked to lead.
    pub leader: u64,
}

/// The body of `GET /healthz` (503 when `ok` is false: no leader known).
/// Fields in alphabetical order: the order the node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub leader: Option<u64>,
    pub node: u64,
    pub ok: bool,
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full `GET /v1/cluster` answer as the node writes it (a member with
    /// clock and gateway, one without, a clock with an error, media)
    /// parses, and serializes back to the same bytes.
    #[test]
    fn wire_cluster_view_round_trip() {
        let node = concat!(
            r#"{"cluster":"c","node":1,"state":"leader","leader":1,"master":1,"time_master":1,"#,
            r#""term":3,"last_log_index":10,"commit_index":10,"applied_index":9,"snapshot_index":null,"#,
            r#""nodes":[{"number":1,"sync":"h:7101","publish":"h:7103","role":"leader","healthy":true,"#,
            r#""matched_index":10,"clock":{"offset_ms":0.0,"rtt_ms":0.0,"last_sync_ms":1700000000000,"#,
            r#""in_tolerance":true,"time_master":1,"corrections":0},"gateway":{"sessions":2,"load":0.25,"fresh":true},"#,
            r#""media":{"healthy":true,"files":1,"bytes":5,"free_bytes":100,"open_uploads":0}},"#,
            r#"{"number":2,"sync":"h:7201","publish":"h:7203","role":"follower","healthy":false,"#,
            r#""clock":{"offset_ms":-1.5,"rtt_ms":0.3,"last_sync_ms":0,"in_tolerance":false,"#,
            r#""time_master":null,"error":"sntp: timed out","corrections":2}},"#,
            r#"{"number":3,"sync":"h:7301","publish":"h:7303","role":"learner","healthy":false}],"peer_tls":true,"#,
            r#""media":{"healthy":true,"free_bytes":100,"reserve_bytes":10,"files_here":1,"bytes_here":5,"media":1,"#,
            r#""media_bytes":5,"under_replicated":0,"open_uploads":0,"required_replicas":2}}"#
        );
        let v: ClusterView = serde_json::from_str(node).unwrap();
        assert_eq!((v.node, v.term, v.leader, v.snapshot_index), (1, 3, Some(1), None));
        assert_eq!(v.nodes.len(), 3);
        assert_eq!(v.nodes[0].gateway.as_ref().map(|g| g.sessions), Some(2));
        let c = v.nodes[1].clock.as_ref().unwrap();
        assert_eq!(
            (c.error.as_deref(), c.corrections, c.time_master),
            (Some("sntp: timed out"), 2, None)
        );
        assert_eq!((v.nodes[2].matched_index, v.nodes[2].clock.as_ref()), (None, None));
        assert_eq!(v.media.as_ref().map(|m| m.required_replicas), Some(2));
        assert_eq!(v.nodes[0].media.as_ref().map(|m| (m.files, m.bytes)), Some((1, 5)));
        assert_eq!(v.nodes[1].media, None, "a member that did not answer: unknown");
        assert!(v.peer_tls);
        assert_eq!(serde_json::to_string(&v).unwrap(), node);
    }

    /// A reply lacking node, state, term or nodes is not a cluster view;
    /// a member needs only its number (the rest default), a clock nothing.
    #[test]
    fn wire_cluster_view_tolerance() {
        let v: ClusterView = serde_json::from_str(
            r#"{"node":2,"state":"follower","term":6,"nodes":[{"number":4},{"number":2,"clock":{}}]}"#,
        )
        .unwrap();
        assert!(!v.peer_tls, "a view without peer_tls (an older node) says plaintext");
        assert_eq!((v.cluster.as_str(), v.leader, v.last_log_index, v.media), ("", None, 0, None));
        assert_eq!((v.nodes[0].role.as_str(), v.nodes[0].healthy), ("", false));
        assert_eq!(v.nodes[1].clock, Some(ClockStatus::default()));
        for bad in [
            r#"{"state":"follower","term":6,"nodes":[]}"#,
            r#"{"node":2,"term":6,"nodes":[]}"#,
            r#"{"node":2,"state":"follower","nodes":[]}"#,
            r#"{"node":2,"state":"follower","term":6}"#,
            r#"{"node":2,"state":"follower","term":6,"nodes":[{"role":"leader"}]}"#,
        ] {
            assert!(serde_json::from_str::<ClusterView>(bad).is_err(), "{bad}");
        }
    }

    /// Protobuf status converts both ways: an empty clock error is none,
    /// log and snapshot index, corrections and gateway load come across,
    /// only the HTTP-only media is none, and back to protobuf nothing gRPC
    /// carries is lost.
    #[test]
    fn wire_cluster_pb_conversions() {
        let pb_node = |error: &str| pb::NodeStatus {
            number: 2,
            sync: "s".into(),
            publish: "p".into(),
            role: "follower".into(),
            healthy: true,
            matched_index: Some(4),
            clock: Some(pb::ClockStatus {
                offset_ms: 1.5,
                rtt_ms: 0.5,
                last_sync_ms: 9,
                in_tolerance: true,
                time_master: Some(1),
                error: error.into(),
                corrections: 3,
            }),
            gateway: Some(pb::GatewayLoad { sessions: 5, load: 0.5, fresh: true }),
            zone: "dc2".into(),
            replica: true,
            lag_entries: Some(3),
            lag_ms: Some(120),
            media: Some(pb::NodeMedia {
                healthy: true,
                files: 2,
                bytes: 77,
                free_bytes: 1000,
                open_uploads: 1,
            }),
        };
        let s = pb::StatusResponse {
            cluster: "c".into(),
            node: 2,
            leader: Some(1),
            term: 3,
            commit_index: 7,
            applied_index: 6,
            nodes: vec![pb_node(""), pb_node("late")],
            state: "follower".into(),
            master: Some(1),
            time_master: Some(1),
            last_log_index: 8,
            snapshot_index: Some(2),
            peer_tls: true,
        };
        let v = ClusterView::from(s.clone());
        assert_eq!((v.last_log_index, v.snapshot_index, v.media.as_ref()), (8, Some(2), None));
        assert!(v.peer_tls);
        assert_eq!(v.nodes[0].clock.as_ref().unwrap().corrections, 3);
        assert_eq!(v.nodes[0].clock.as_ref().unwrap().error, None);
        assert_eq!(v.nodes[1].clock.as_ref().unwrap().error.as_deref(), Some("late"));
        assert_eq!(v.nodes[0].gateway, Some(GatewayView { sessions: 5, load: 0.5, fresh: true }));
        assert_eq!(pb::StatusResponse::from(v), s);
        let m = pb::MembershipResponse { revision: 5, nodes: vec![pb_node("")] };
        let r = MembershipResult::from(m.clone());
        assert_eq!((r.revision, r.nodes[0].number), (5, 2));
        assert_eq!(pb::MembershipResponse::from(r), m);
    }

    /// Membership bodies: the number is required, the addresses optional;
    /// unknown fields are ignored (as the node always did).
    #[test]
    fn wire_cluster_membership_body() {
        let b: MembershipBody = serde_json::from_str(r#"{"number":4,"extra":true}"#).unwrap();
        assert_eq!(b, MembershipBody { number: 4, ..MembershipBody::default() });
        let b: MembershipBody =
            serde_json::from_str(r#"{"number":5,"zone":"dc4","replica":true}"#).unwrap();
        assert_eq!((b.zone.as_deref(), b.replica), (Some("dc4"), true));
        let b: MembershipBody =
            serde_json::from_str(r#"{"number":4,"sync":"h:1","publish":"h:3"}"#).unwrap();
        assert_eq!((b.sync.as_deref(), b.publish.as_deref()), (Some("h:1"), Some("h:3")));
        assert!(serde_json::from_str::<MembershipBody>(r#"{"sync":"h:1"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&MembershipBody { number: 4, ..Default::default() }).unwrap(),
            r#"{"number":4}"#
        );
    }

    /// Health, transfer-leader and membership answers are byte-for-byte
    /// what the node writes.
    #[test]
    fn wire_cluster_small_answers_round_trip() {
        for node in [
            r#"{"leader":null,"node":2,"ok":false,"state":"candidate"}"#,
            r#"{"leader":1,"node":2,"ok":true,"state":"follower"}"#,
        ] {
            let h: Health = serde_json::from_str(node).unwrap();
            assert_eq!(serde_json::to_string(&h).unwrap(), node);
        }
        let t: TransferLeaderAnswer = serde_json::from_str(r#"{"leader":3}"#).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"leader":3}"#);
        let node = r#"{"revision":12,"nodes":[{"number":4,"sync":"h:7401","publish":"h:7403","role":"learner","healthy":true}]}"#;
        let m: MembershipResult = serde_json::from_str(node).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), node);
    }
}

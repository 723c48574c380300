//! Real values of every type the sync port decodes, for the seed corpora
//! of the `codec` and `snapshot` targets: the ops a follower forwards, the
//! state items they make, and openraft's messages with Herald's types.

use std::collections::{BTreeMap, BTreeSet};

use herald_domain::library::LibOp;
use herald_domain::messages::{MsgOp, Origin, SendOp};
use herald_domain::presence::{Event, Ext};
use herald_domain::state::{Command, Effects, Item, Op, State};
use herald_node::raft::types::{
    Entry, LogId, Membership, NodeAddr, SnapshotMeta, TypeConfig, Vote,
};
use openraft::entry::RaftEntry;
use openraft::StoredMembership;

/// Cluster time of the seed commands (2023-11-14).
pub const AT_MS: u64 = 1_700_000_000_000;

pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

pub fn vote(term: u64, node: u64, committed: bool) -> Vote {
    if committed {
        Vote::new_committed(term, node)
    } else {
        Vote::new(term, node)
    }
}

fn ext(pairs: &[(&str, &str)]) -> Ext {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn send(key: &str, to: &[&str], group: Option<&str>, broadcast: bool, body: &[u8]) -> Op {
    Op::Msg(MsgOp::Send(SendOp {
        idempotency_key: key.into(),
        from: "app".into(),
        to: to.iter().map(|s| s.to_string()).collect(),
        group: group.map(Into::into),
        broadcast,
        ttl_ms: 60_000,
        content_type: "text/plain".into(),
        body: body.to_vec(),
        origin: Origin { node: 1, req: 42 },
        quota: 100,
        idempotency_window_ms: 600_000,
    }))
}

/// Batches of ops as followers forward them, one of every kind.
pub fn op_batches() -> Vec<(&'static str, Vec<Op>)> {
    vec![
        (
            "presence",
            vec![
                Op::Presence(Event::Login {
                    uid: "alice".into(),
                    sid: 7,
                    client: "mobile".into(),
                    accepts_strangers: Some(true),
                    ext: ext(&[("nick", "Al")]),
                }),
                Op::Presence(Event::Permission {
                    uid: "alice".into(),
                    sid: 7,
                    accepts_strangers: false,
                    ext: Ext::new(),
                }),
                Op::Presence(Event::Logout {
                    uid: "bob".into(),
                    sid: 8,
                    client: "web".into(),
                    ext: Ext::new(),
                }),
            ],
        ),
        (
            "sessions",
            vec![
                Op::SessionLogin { uid: "carol".into(), sid: 9, client: "pc".into(), gateway: 2 },
                Op::SessionLogout { uid: "carol".into(), client: "pc".into(), gateway: 2 },
                Op::GatewayReset { gateway: 3 },
            ],
        ),
        (
            "messages",
            vec![
                Op::Msg(MsgOp::SetGroup {
                    name: "team".into(),
                    members: vec!["alice".into(), "bob".into()],
                }),
                Op::Msg(MsgOp::SetOffline { uid: "bob".into(), enabled: true }),
                send("k1", &["alice", "bob"], None, false, b"hello"),
                send("k2", &[], Some("team"), false, &[0, 1, 2, 255]),
                send("k3", &[], None, true, b"everyone"),
                Op::Msg(MsgOp::Ack { uid: "bob".into(), ids: vec![1, 2], up_to: 2 }),
            ],
        ),
        (
            "library",
            vec![
                Op::Lib(LibOp::MediaCommit {
                    id: "m1".into(),
                    size: 1024,
                    content_type: "image/png".into(),
                    owner: "alice".into(),
                    name: "cat.png".into(),
                    replicas: vec![1, 2],
                    quota_bytes: 1 << 30,
                    expect_existing: false,
                }),
                Op::Lib(LibOp::MediaAddReplica { id: "m1".into(), node: 3 }),
                Op::Lib(LibOp::MediaGrant { id: "m1".into(), uids: vec!["bob".into()] }),
                Op::Lib(LibOp::ContactSet {
                    uid: "alice".into(),
                    contact: "bob".into(),
                    groups: vec!["family".into()],
                }),
                Op::Lib(LibOp::MediaDropReplica { id: "m1".into(), node: 2 }),
                Op::Lib(LibOp::MediaUnshare { id: "m1".into(), owner: "alice".into() }),
                Op::Lib(LibOp::MediaGc { id: "m1".into(), grace_ms: 0 }),
                Op::Lib(LibOp::ContactRemove { uid: "alice".into(), contact: "carol".into() }),
            ],
        ),
    ]
}

/// The commands of [`op_batches`], stamped like the leader does.
pub fn commands() -> Vec<Command> {
    op_batches()
        .into_iter()
        .enumerate()
        .map(|(i, (_, ops))| Command { at_ms: AT_MS + i as u64, ops })
        .collect()
}

/// The state the commands make, as snapshot items (every kind of item).
pub fn items() -> Vec<Item> {
    let mut st = State::default();
    // The media is collected by the last batch: apply the library batch
    // without its last three ops too, so that its item exists.
    let mut cmds = commands();
    let mut lib = cmds[3].clone();
    lib.ops.truncate(4);
    cmds.insert(3, lib);
    for (i, c) in cmds.iter().enumerate() {
        st.apply(c, i as u64 + 1, &mut Effects::default());
    }
    st.items()
}

pub fn nodes() -> BTreeMap<u64, NodeAddr> {
    (1..=3)
        .map(|n| {
            (
                n,
                NodeAddr {
                    sync: format!("127.0.0.1:74{n}1"),
                    publish: format!("127.0.0.1:74{n}2"),
                    zone: format!("dc{n}"),
                    replica: false,
                },
            )
        })
        .collect()
}

pub fn membership() -> Membership {
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes()).expect("a valid membership")
}

/// A joint membership (a node being added) with a learner.
pub fn joint_membership() -> Membership {
    let mut nodes = nodes();
    let addr = |sync: &str, publish: &str, replica| NodeAddr {
        sync: sync.into(),
        publish: publish.into(),
        zone: "dc4".into(),
        replica,
    };
    nodes.insert(4, addr("127.0.0.1:7441", "127.0.0.1:7442", false));
    nodes.insert(5, addr("[::1]:7451", "[::1]:7452", true));
    Membership::new(vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2, 3, 4])], nodes)
        .expect("a valid membership")
}

/// Log entries of every payload kind.
pub fn entries() -> Vec<Entry> {
    let mut out =
        vec![Entry::new_blank(log_id(2, 10)), Entry::new_membership(log_id(2, 11), membership())];
    for (i, c) in commands().into_iter().enumerate() {
        out.push(Entry::new_normal(log_id(2, 12 + i as u64), c));
    }
    out.push(Entry::new_membership(log_id(2, 20), joint_membership()));
    out
}

pub fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 20)),
        last_membership: StoredMembership::new(Some(log_id(2, 11)), membership()),
    }
}

//! Storage tests: openraft's conformance suite on the herald-wal log store
//! and the presence state machine, snapshot round trip and verification, and
//! the log's durability across reopen, damage and the upgrade from sled.

use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

use super::state_machine::StateMachine;
use super::types::{Entry, LogId, TypeConfig};
use super::wal_store::WalStore;
use herald_domain::library::LibOp;
use herald_domain::messages::{MsgOp, Origin, SendOp};
use herald_domain::presence::{Event, Ext};
use herald_domain::state::{Command, Op};

fn open(dir: &std::path::Path) -> (WalStore, StateMachine) {
    let log =
        WalStore::open_or_import(&dir.join("raft-log"), &dir.join("sled")).expect("log store");
    let sm = StateMachine::open(dir.join("snapshots")).expect("state machine");
    (log, sm)
}

struct Builder;

impl StoreBuilder<TypeConfig, WalStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, WalStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("tempdir");
        let (log, sm) = open(dir.path());
        Ok((dir, log, sm))
    }
}

/// openraft's storage conformance suite passes on the herald-wal log store
/// and the presence state machine (log, vote, purge, truncate, apply,
/// snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_openraft_conformance_suite() {
    Suite::test_all(Builder).await.expect("conformance suite");
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn login(uid: &str, sid: u64, client: &str) -> Event {
    let mut ext = Ext::new();
    ext.insert("k".into(), format!("{uid}-{sid}"));
    Event::Login {
        uid: uid.into(),
        sid,
        client: client.into(),
        accepts_strangers: Some(sid.is_multiple_of(2)),
        ext,
    }
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply");
}

fn send(i: u64, to: Vec<String>, broadcast: bool) -> Op {
    Op::Msg(MsgOp::Send(SendOp {
        idempotency_key: format!("k{i}"),
        from: "app".into(),
        to,
        group: None,
        broadcast,
        ttl_ms: if broadcast { 1_000_000 } else { 0 },
        content_type: "text/plain".into(),
        body: vec![i as u8; 100],
        origin: Origin { node: 1, req: i },
        quota: 50,
        idempotency_window_ms: 60_000,
    }))
}

/// The mix of operations the storage tests apply at index `i`: presence,
/// sessions, sends, acks, groups, subscriptions, broadcasts.
fn ops(i: u64) -> Vec<Op> {
    let uid = format!("u{}", i % 37);
    let mut v =
        vec![Op::Presence(login(&uid, i % 11, if i.is_multiple_of(3) { "web" } else { "mobile" }))];
    match i % 7 {
        0 => v.push(send(i, vec![uid.clone(), format!("u{}", (i + 1) % 37)], false)),
        1 => v.push(Op::Msg(MsgOp::Ack {
            uid: format!("u{}", (i + 30) % 37),
            ids: vec![],
            up_to: i / 2,
        })),
        2 => v.push(Op::SessionLogin { uid, sid: 0, client: "pc".into(), gateway: i % 3 + 1 }),
        3 => v.push(Op::Msg(MsgOp::SetGroup {
            name: format!("g{}", i % 4),
            members: vec![uid, "x".into()],
        })),
        4 => v.push(Op::Msg(MsgOp::SetOffline { uid, enabled: i.is_multiple_of(2) })),
        5 => v.push(send(i, vec![], true)),
        _ => v.push(Op::GatewayReset { gateway: i % 3 + 1 }),
    }
    // Media metadata and contacts.
    let id = format!("{:064x}", i % 13);
    v.push(match i % 5 {
        0 => Op::Lib(LibOp::MediaCommit {
            id,
            size: i,
            content_type: "image/png".into(),
            owner: format!("u{}", i % 7),
            name: format!("f{i}.png"),
            replicas: vec![i % 3 + 1],
            quota_bytes: 0,
            expect_existing: false,
        }),
        1 => Op::Lib(LibOp::MediaGrant { id, uids: vec![format!("u{}", i % 5)] }),
        2 => Op::Lib(LibOp::ContactSet {
            uid: format!("u{}", i % 7),
            contact: format!("u{}", i % 11),
            groups: vec![format!("g{}", i % 3)],
        }),
        3 => Op::Lib(LibOp::MediaUnshare { id, owner: format!("u{}", i % 7) }),
        _ => Op::Lib(LibOp::MediaGc { id, grace_ms: 0 }),
    });
    v
}

/// A state machine's snapshot, installed into an empty one, gives identical
/// contents (presence and messages); and a state machine reopened from sled
/// equals the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_snapshot_roundtrip_identical() {
    let (a_dir, b_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (_la, mut a) = open(a_dir.path());
    let mut entries = Vec::new();
    for i in 1..=200u64 {
        let cmd = Command { at_ms: 1000 + i, ops: ops(i) };
        entries.push(Entry::new_normal(log_id(1, i), cmd));
    }
    apply(&mut a, entries).await;
    let snap = a.get_snapshot_builder().await.build_snapshot().await.expect("build");
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 200)));

    let (_lb, mut b) = open(b_dir.path());
    b.install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
    let sa = a.shared_state();
    let sb = b.shared_state();
    assert_eq!(*sa.read().unwrap(), *sb.read().unwrap(), "installed snapshot differs");
    assert_eq!(sb.read().unwrap().presence.len(), 37);
    assert!(sb.read().unwrap().msgs.stored_messages() > 0);
    assert_eq!(b.applied_state().await.unwrap().0, Some(log_id(1, 200)));
    drop(b);
    drop(_lb);

    // Reopen b from disk: the same state again.
    let (_lb2, b2) = open(b_dir.path());
    assert_eq!(*sa.read().unwrap(), *b2.shared_state().read().unwrap(), "reopened state differs");
    let _ = Arc::strong_count(&sa);
}

/// Log entries survive a reopen of the log store, and purge/truncate leave
/// the reported log state consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_log_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        let entries: Vec<Entry> = (1..=10).map(|i| Entry::new_blank(log_id(2, i))).collect();
        append_flushed(&mut log, entries).await;
        log.purge(log_id(2, 3)).await.unwrap();
        log.truncate_after(Some(log_id(2, 8))).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path());
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(2, 3)));
    assert_eq!(st.last_log_id, Some(log_id(2, 8)));
    use openraft::storage::RaftLogReader;
    let got = log.try_get_log_entries(4..=8).await.unwrap();
    assert_eq!(got.iter().map(|e| e.index()).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
}

/// What replication reads back from the log is kept as the log's own
/// bytes (`entry_bytes`): an AppendEntries built from them is the one
/// encoded whole, and nothing is kept before a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_entries_read_back_are_kept_for_replication() {
    use openraft::raft::AppendEntriesRequest;
    use openraft::storage::RaftLogReader;
    let dir = TempDir::new().unwrap();
    let (mut log, _sm) = open(dir.path());
    let entries: Vec<Entry> = (1..=4)
        .map(|i| Entry::new_normal(log_id(2, i), Command { at_ms: i, ops: ops(i) }))
        .collect();
    append_flushed(&mut log, entries.clone()).await;
    let kept = log.entry_bytes();
    assert!(kept.get(&log_id(2, 1)).is_none(), "an append keeps nothing");
    let read = log.try_get_log_entries(1..=4).await.unwrap();
    for e in &read {
        let b = kept.get(&e.log_id).expect("kept once read");
        assert_eq!(b.as_ref(), super::codec::encode(e).unwrap().as_slice());
    }
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(2, 1),
        prev_log_id: None,
        entries: read,
        leader_commit: Some(log_id(2, 4)),
    };
    assert_eq!(
        super::entry_bytes::encode_append(&rpc, &kept).unwrap(),
        super::codec::encode(&rpc).unwrap()
    );
}

/// A received snapshot is verified completely before it replaces the
/// current one: a truncated copy and a copy with one flipped byte are
/// refused (by `verify_snapshot_file`, which the sync port runs first, and
/// by `install_snapshot` itself); the receiving state machine keeps its
/// state and its own snapshot, and no temporary file is left behind. The
/// good file still installs afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_bad_snapshot_is_refused_and_changes_nothing() {
    use std::io::{Read, Seek, Write};
    let (a_dir, b_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (_la, mut a) = open(a_dir.path());
    let entries = (1..=120u64)
        .map(|i| Entry::new_normal(log_id(1, i), Command { at_ms: 1000 + i, ops: ops(i) }))
        .collect();
    apply(&mut a, entries).await;
    let mut snap = a.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let mut good = Vec::new();
    snap.snapshot.rewind().unwrap();
    snap.snapshot.read_to_end(&mut good).unwrap();

    // b has a state and a snapshot of its own.
    let (_lb, mut b) = open(b_dir.path());
    let entries = (1..=10u64)
        .map(|i| Entry::new_normal(log_id(1, i), Command { at_ms: 5000 + i, ops: ops(i * 3) }))
        .collect();
    apply(&mut b, entries).await;
    let own = b.get_snapshot_builder().await.build_snapshot().await.expect("build b");
    let before = b.shared_state().read().unwrap().clone();

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let variants: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped", flipped),
        ("trailing bytes", [good.clone(), vec![0]].concat()),
    ];
    for (what, bytes) in variants {
        let path = b_dir.path().join(format!("bad-{}.snap", what.replace(' ', "-")));
        std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
        assert!(super::state_machine::verify_snapshot_file(&path).is_err(), "{what} verified");
        let f = std::fs::File::options().read(true).open(&path).unwrap();
        assert!(b.install_snapshot(&snap.meta, f).await.is_err(), "{what} installed");
        assert_eq!(*b.shared_state().read().unwrap(), before, "{what} changed the state");
        let cur = b.get_current_snapshot().await.unwrap().expect("b keeps its snapshot");
        assert_eq!(cur.meta, own.meta, "{what} replaced b's snapshot");
        let tmps: Vec<_> = std::fs::read_dir(b_dir.path().join("snapshots"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
            .collect();
        assert!(tmps.is_empty(), "{what} left {tmps:?}");
    }
    // The intact file installs.
    let path = b_dir.path().join("good.snap");
    std::fs::File::create(&path).unwrap().write_all(&good).unwrap();
    assert_eq!(super::state_machine::verify_snapshot_file(&path).unwrap(), snap.meta);
    b.install_snapshot(&snap.meta, std::fs::File::open(&path).unwrap()).await.expect("install");
    assert_eq!(*b.shared_state().read().unwrap(), *a.shared_state().read().unwrap());
}

async fn append_flushed(log: &mut WalStore, entries: Vec<Entry>) {
    use openraft::type_config::TypeConfigExt;
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, openraft::storage::IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

/// A saved vote and the committed log id survive a reopen of the log store
/// (the vote is what keeps a restarted node from voting twice in a term).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_vote_and_committed_survive_reopen() {
    use openraft::storage::RaftLogReader;
    let dir = TempDir::new().unwrap();
    let vote = openraft::Vote::new(7, 2);
    {
        let (mut log, _sm) = open(dir.path());
        assert_eq!(log.read_vote().await.unwrap(), None);
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(7, 3))).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(7, 3)));
}

/// A torn last entry (a crash mid-write) is dropped at reopen and the log
/// state ends at the entry before it; a damaged entry in the middle makes the
/// store refuse to open, naming the segment file and the byte offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_torn_tail_recovers_and_corruption_refuses_to_start() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        let entries: Vec<Entry> = (1..=5).map(|i| Entry::new_blank(log_id(3, i))).collect();
        append_flushed(&mut log, entries).await;
    }
    let seg = dir.path().join("raft-log").join("00000000000000000001.wal");
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    {
        let (mut log, _sm) = open(dir.path());
        assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(3, 4)));
    }
    // Flip a byte inside the second entry's record (after the 24-byte header
    // and the first record).
    let mut b = std::fs::read(&seg).unwrap();
    let first_len = (b.len() - 24) / 4;
    let at = 24 + first_len + 6;
    b[at] ^= 0x40;
    std::fs::write(&seg, &b).unwrap();
    let err = WalStore::open(&dir.path().join("raft-log")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(msg.contains("00000000000000000001.wal"), "{msg}");
    assert!(msg.contains(&format!("byte offset {}", 24 + first_len)), "{msg}");
}

/// Upgrading a node whose Raft log was in sled imports it: entries above the
/// purge point, the purge point, the vote and the committed log id are all
/// there afterwards; the sled directory is moved aside, so it is imported
/// once and never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_imports_the_former_sled_log() {
    use super::codec::encode;
    use openraft::storage::RaftLogReader;
    let dir = TempDir::new().unwrap();
    let vote = openraft::Vote::new_committed(4, 1);
    {
        // The former layout: trees `log` (index BE -> entry) and `raft_meta`.
        // No flusher thread, so that the file lock is released on drop.
        let db = sled::Config::new().path(dir.path().join("sled")).flush_every_ms(None).open();
        let db = db.unwrap();
        let t = db.open_tree("log").unwrap();
        for i in 1..=9u64 {
            t.insert(i.to_be_bytes(), encode(&Entry::new_blank(log_id(4, i))).unwrap()).unwrap();
        }
        let m = db.open_tree("raft_meta").unwrap();
        m.insert(b"vote", encode(&vote).unwrap()).unwrap();
        m.insert(b"committed", encode(&Some(log_id(4, 6))).unwrap()).unwrap();
        m.insert(b"purged", encode(&log_id(4, 2)).unwrap()).unwrap();
        db.flush().unwrap();
    }
    {
        let (mut log, _sm) = open(dir.path());
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(4, 2)));
        assert_eq!(st.last_log_id, Some(log_id(4, 9)));
        let got = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(got.iter().map(|e| e.index()).collect::<Vec<_>>(), (3..=9).collect::<Vec<_>>());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(4, 6)));
        // New appends after the import, then a reopen: no second import.
        append_flushed(&mut log, vec![Entry::new_blank(log_id(5, 10))]).await;
    }
    assert!(!dir.path().join("sled").exists());
    assert!(dir.path().join("sled.imported").is_dir());
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(5, 10)));
}

//! Mutual TLS between peers on the sync port with real heraldd processes
//! (issue 14, "Peers"): the harness runs every cluster with `<peer-tls>`
//! (certificates from `herald cert`'s library); here the sync port is
//! attacked the way issue 14 found it open, with hand-built RPCs:
//! outsiders (plaintext, TLS without a certificate, a certificate of
//! another CA) and a member that claims another member's number.

use std::time::Duration;

use anyhow::{bail, Result};
use herald_domain::presence::Event;
use herald_domain::state::Op;
use herald_node::raft::codec::encode;
use herald_node::raft::types::{TypeConfig, Vote};
use herald_proto::raft::gateway_peers_client::GatewayPeersClient;
use herald_proto::raft::media_blobs_client::MediaBlobsClient;
use herald_proto::raft::raft_internal_client::RaftInternalClient;
use herald_proto::raft::{BlobRequest, RaftBytes, ReadIndexRequest, SnapshotChunk};
use herald_tests::{
    get_json, local_view, login_event, phase, push, query, Cluster, Tuning, CLUSTER_NAME,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a hand-built client reaches a sync port.
#[derive(Clone)]
enum As {
    /// No TLS at all.
    Plaintext,
    /// TLS trusting the cluster's CA, without a client certificate.
    NoCertificate,
    /// TLS with this certificate and key (PEM).
    Peer(Vec<u8>, Vec<u8>),
}

/// A channel to node `target`'s sync port on `port`, checking its
/// certificate as a member would (the cluster's CA, `node<target>`).
async fn channel(port: u16, target: u64, ca: &[u8], who: &As) -> Result<Channel, String> {
    let name = herald_proto::peer::node_name(CLUSTER_NAME, target);
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name(name);
    let endpoint = match who {
        As::Plaintext => Endpoint::from_shared(format!("http://127.0.0.1:{port}")),
        As::NoCertificate => Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .and_then(|e| e.tls_config(tls)),
        As::Peer(cert, key) => Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .and_then(|e| e.tls_config(tls.identity(Identity::from_pem(cert, key)))),
    }
    .map_err(|e| e.to_string())?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| format!("connect: {e}"))
}

fn login_ops(uid: &str) -> Vec<Op> {
    vec![Op::Presence(Event::Login {
        uid: uid.into(),
        sid: 7,
        client: "mobile".into(),
        accepts_strangers: None,
        ext: Default::default(),
    })]
}

/// A forged `Forward` of a login for `uid`: Ok when the node ran it.
async fn forward(ch: &Channel, uid: &str) -> Result<(), tonic::Status> {
    let data = encode(&login_ops(uid)).unwrap();
    RaftInternalClient::new(ch.clone()).forward(RaftBytes { data }).await.map(|_| ())
}

/// A forged `Snapshot`: one chunk with `vote` and an empty state.
async fn snapshot(ch: &Channel, vote: Vote) -> Result<(), tonic::Status> {
    let first =
        SnapshotChunk { vote: encode(&vote).unwrap(), meta: vec![], data: vec![], done: true };
    let stream = tokio_stream::iter(vec![first]);
    RaftInternalClient::new(ch.clone()).snapshot(stream).await.map(|_| ())
}

/// A `GetBlob` of any id (Ok = answered, even with an empty stream).
async fn get_blob(ch: &Channel) -> Result<(), tonic::Status> {
    let req = BlobRequest { id: "00".repeat(32), offset: 0, length: 0 };
    MediaBlobsClient::new(ch.clone()).get_blob(req).await.map(|_| ())
}

/// Whether `uid` is online according to a linearizable query at `addr`.
fn online(addr: &str, uid: &str) -> Result<bool> {
    let v = query(addr, &[uid.to_string()], "linearizable")?;
    let users = v["users"].as_array().cloned().unwrap_or_default();
    Ok(users.iter().any(|u| u["uid"] == uid && u["online"] == true))
}

/// Proves the peer part of issue 14 against a running 3-node cluster with
/// `<peer-tls>`: it elects and replicates (a write through a follower is
/// forwarded over mutual TLS) and says `peer_tls` in /v1/cluster; an
/// outsider — plaintext, TLS without a certificate, or with a certificate
/// for node 2 from another CA — gets no answer to a forged `Forward`
/// (login), `Snapshot` (empty state, the wipe of issue 14), `GetBlob` or
/// `ReadIndex`; a member's real certificate (node 2) that claims to be
/// node 3 in a `Vote`, `AppendEntries` (unary or on an `AppendStream`) or
/// `Snapshot` is refused with
/// `peer_wrong_number`; a certificate of the cluster's CA for node 9, which
/// is no member, gets `peer_not_member` from the gateway peers' `Load` and
/// `Delivered`, `Forward`, `GetBlob` and `ReadIndex`; node 2's own number
/// passes (a `PreVote`) and its
/// `Forward` runs (the forging code works); afterwards the forged logins
/// are absent, the real one is still there, and term and leader are
/// unchanged.
#[test]
fn peer_tls_refuses_outsiders_and_wrong_numbers() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    phase("mutual TLS cluster replicates");
    push(&c.addr(follower), vec![login_event("kept", 1, "mobile", "1")])?;
    assert!(online(&c.addr(leader), "kept")?);
    for n in 1..=3 {
        let v = local_view(&c.addr(n))?;
        assert_eq!(v["peer_tls"], true, "node {n}: {v}");
    }
    let term = local_view(&c.addr(leader))?["term"].as_u64().unwrap();

    let certs = c.certs_dir();
    let ca = std::fs::read(certs.join("ca.pem"))?;
    let node2 = As::Peer(
        std::fs::read(certs.join("node2.pem"))?,
        std::fs::read(certs.join("node2-key.pem"))?,
    );
    let other = tempfile::tempdir()?;
    let o = herald_client::cert::issue_node(other.path(), CLUSTER_NAME, 2, &["127.0.0.1".into()])?;
    let other_ca = As::Peer(std::fs::read(&o.cert)?, std::fs::read(&o.key)?);
    let port = c.nodes.iter().find(|n| n.number == leader).unwrap().ports.sync;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        phase("outsiders get no answer");
        for (what, who) in [
            ("plaintext", As::Plaintext),
            ("no certificate", As::NoCertificate),
            ("another CA", other_ca.clone()),
        ] {
            let ch = match channel(port, leader, &ca, &who).await {
                // Refused in the handshake (TLS 1.2, or a plaintext client).
                Err(_) => continue,
                Ok(ch) => ch,
            };
            // TLS 1.3: the client's side of the handshake finishes before
            // the server checks the certificate; the first call fails.
            assert!(forward(&ch, &format!("forged-{what}")).await.is_err(), "{what}: forward");
            assert!(
                snapshot(&ch, Vote::new(term + 100, leader)).await.is_err(),
                "{what}: snapshot"
            );
            assert!(get_blob(&ch).await.is_err(), "{what}: get_blob");
            let ri = RaftInternalClient::new(ch.clone()).read_index(ReadIndexRequest {}).await;
            assert!(ri.is_err(), "{what}: read_index");
        }

        phase("a member claiming another number is refused");
        let ch = channel(port, leader, &ca, &node2).await.expect("node 2's certificate connects");
        let mut raft = RaftInternalClient::new(ch.clone());
        let wrong = |r: Result<tonic::Response<RaftBytes>, tonic::Status>, what: &str| {
            let s = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{what}: {s:?}");
            assert!(s.message().starts_with("peer_wrong_number"), "{what}: {s:?}");
            assert_eq!(
                s.metadata().get("x-herald-code").and_then(|v| v.to_str().ok()),
                Some("peer_wrong_number")
            );
        };
        let vote = VoteRequest::<TypeConfig>::new(Vote::new(term + 100, 3), None);
        wrong(raft.vote(RaftBytes { data: encode(&vote).unwrap() }).await, "vote");
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term + 100, 3),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        wrong(raft.append_entries(RaftBytes { data: encode(&append).unwrap() }).await, "append");
        // The pipelined AppendStream opens before any request is seen; the
        // first request's claim is refused, and the stream ends with it.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(RaftBytes { data: encode(&append).unwrap() }).await.unwrap();
        let mut answers = raft
            .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("an append stream opens")
            .into_inner();
        let refusal = answers.message().await.expect_err("the forged append is refused");
        wrong(Err(refusal), "append stream");
        let s = snapshot(&ch, Vote::new_committed(term + 100, 3)).await.unwrap_err();
        assert!(s.message().starts_with("peer_wrong_number"), "snapshot: {s:?}");

        phase("a certificate of the cluster's CA for a non-member is refused");
        let n9 = herald_client::cert::issue_node(&certs, CLUSTER_NAME, 9, &["127.0.0.1".into()])
            .expect("a certificate for node 9 from the cluster's CA");
        let node9 = As::Peer(std::fs::read(&n9.cert).unwrap(), std::fs::read(&n9.key).unwrap());
        let ch9 = channel(port, leader, &ca, &node9).await.expect("the CA's certificate connects");
        let not_member = |r: Result<(), tonic::Status>, what: &str| {
            let s = r.err().unwrap_or_else(|| panic!("{what}: accepted from a non-member"));
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{what}: {s:?}");
            assert!(s.message().starts_with("peer_not_member"), "{what}: {s:?}");
        };
        let mut gw = GatewayPeersClient::new(ch9.clone());
        not_member(gw.load(RaftBytes { data: vec![] }).await.map(|_| ()), "load");
        let report = encode(&()).unwrap();
        not_member(gw.delivered(RaftBytes { data: report }).await.map(|_| ()), "delivered");
        not_member(forward(&ch9, "forged-non-member").await, "forward");
        not_member(get_blob(&ch9).await, "get_blob");
        let ri = RaftInternalClient::new(ch9.clone()).read_index(ReadIndexRequest {}).await;
        not_member(ri.map(|_| ()), "read_index");

        // Controls: its own number passes the guard (a pre-vote changes
        // nothing), and a member's Forward runs.
        let own = VoteRequest::<TypeConfig>::new(Vote::new(term, 2), None);
        raft.pre_vote(RaftBytes { data: encode(&own).unwrap() })
            .await
            .expect("node 2 claiming node 2 passes the guard");
        forward(&ch, "member-forward").await.expect("a member's forward runs");
    });

    phase("nothing changed");
    let addr = c.addr(leader);
    for what in ["plaintext", "no certificate", "another CA", "non-member"] {
        assert!(!online(&addr, &format!("forged-{what}"))?, "{what}");
    }
    assert!(online(&addr, "kept")?, "the real login survived");
    assert!(online(&addr, "member-forward")?, "the control forward ran");
    let after = local_view(&addr)?;
    assert_eq!(after["term"].as_u64(), Some(term), "{after}");
    assert_eq!(c.wait_leader(Duration::from_secs(5))?, leader);
    Ok(())
}

/// Proves that `<security mode="production">` refuses to start without
/// `<peer-tls>`: heraldd exits with an error that names the config file and
/// says how to fix it, before it serves anything.
#[test]
fn peer_tls_production_refuses_plaintext_peers() -> Result<()> {
    let tuning = Tuning {
        peer_tls: false,
        extra_xml: "  <security mode=\"production\"/>".into(),
        ..Tuning::default()
    };
    let mut c = Cluster::configure(1, tuning)?;
    c.nodes[0].start()?;
    let Some(status) = c.nodes[0].wait_exit(Duration::from_secs(20))? else {
        bail!("heraldd kept running with plaintext peers in production");
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&c.nodes[0].log)?;
    assert!(log.contains("refuses plaintext peers"), "{log}");
    assert!(log.contains("node1.xml") && log.contains("<peer-tls"), "{log}");
    assert!(get_json(&c.addr(1), "/healthz").is_err(), "it never served");
    Ok(())
}

/// Proves the development plaintext path: without `<peer-tls>` a
/// 3-node cluster still elects and replicates, every node warns at start
/// that its peers are plaintext, and /v1/cluster says `peer_tls: false`.
#[test]
fn peer_tls_development_plaintext_warns_and_shows() -> Result<()> {
    let c = Cluster::start(3, Tuning { peer_tls: false, ..Tuning::default() })?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    push(&c.addr(follower), vec![login_event("plain", 1, "mobile", "1")])?;
    assert!(online(&c.addr(leader), "plain")?);
    for n in &c.nodes {
        let v = local_view(&n.publish())?;
        assert_eq!(v["peer_tls"], false, "node {}: {v}", n.number);
        let log = std::fs::read_to_string(&n.log)?;
        assert!(log.contains("PLAINTEXT PEERS"), "node {}: {log}", n.number);
    }
    Ok(())
}

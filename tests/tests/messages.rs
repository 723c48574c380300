//! Real-process tests of messages, sessions and gateways (MISSION M1–M7):
//! offline store and delivery on login, online push across nodes, gateway
//! and leader failures, heartbeats and the dead-gateway grace period,
//! broadcasts with a lifetime, load balancing, and refusals.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use herald_client::session::{Message, Session, SessionConfig, SessionEvent};
use herald_proto::v1 as pb;
use herald_tests::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const LEADER_WAIT: Duration = Duration::from_secs(20);

fn seeds(c: &Cluster) -> Vec<String> {
    c.nodes.iter().map(|n| n.publish()).collect()
}

fn msg(key: &str, to: &[&str], body: &str) -> Value {
    json!({"idempotency_key": key, "from": "app", "to": to, "body": body})
}

/// POSTs a message through `addr`, retrying transient errors with the same
/// idempotency key (so a retry never stores twice) for up to `patience`.
fn send(addr: &str, body: &Value, patience: Duration) -> Result<Value> {
    let deadline = Instant::now() + patience;
    loop {
        match post_json(addr, "/v1/messages", body) {
            Ok((200, v)) => return Ok(v),
            Ok((st, v)) if st < 500 => bail!("send refused: {st} {v}"),
            Ok((st, v)) if Instant::now() >= deadline => bail!("send failed: {st} {v}"),
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn send_async(
    addr: String,
    body: Value,
    patience: Duration,
) -> tokio::task::JoinHandle<Result<Value>> {
    tokio::task::spawn_blocking(move || send(&addr, &body, patience))
}

fn queued(addr: &str, uid: &str) -> Result<u64> {
    let (st, v) = get_json(addr, &format!("/v1/users/{uid}/settings"))?;
    if st != 200 {
        bail!("settings {st}: {v}");
    }
    v["queued"].as_u64().context("queued")
}

fn online(addr: &str, uid: &str) -> Result<bool> {
    let v = query(addr, &[uid.to_string()], "linearizable")?;
    Ok(v["users"]
        .as_array()
        .and_then(|u| u.first())
        .and_then(|u| u["online"].as_bool())
        .unwrap_or(false))
}

async fn session(c: &Cluster, uid: &str, seeds: Vec<String>) -> Result<(Session, u64)> {
    let mut cfg = SessionConfig::new(seeds, uid, token(uid));
    cfg.client = "mobile".into();
    let _ = c;
    let mut s = Session::connect(cfg).await?;
    match tokio::time::timeout(Duration::from_secs(10), s.recv()).await? {
        Some(SessionEvent::Connected { node, .. }) => Ok((s, node)),
        other => bail!("expected Connected, got {other:?}"),
    }
}

/// The next `n` messages (skipping connection events), or what came
/// before the timeout.
async fn recv_n(s: &mut Session, n: usize, timeout: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, s.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => out.push(m),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Runs a session in the background that acknowledges every message (after
/// `delay`) and reports it; returns the gateway it first connected to.
async fn acking_session(
    c: &Cluster,
    uid: &str,
    seeds: Vec<String>,
    delay: Duration,
) -> Result<(u64, mpsc::UnboundedReceiver<SessionEvent>, tokio::task::JoinHandle<()>)> {
    let (mut s, node) = session(c, uid, seeds).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let h = tokio::spawn(async move {
        while let Some(ev) = s.recv().await {
            if let SessionEvent::Message(m) = &ev {
                tokio::time::sleep(delay).await;
                s.ack(vec![m.id]).await;
            }
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Ok((node, rx, h))
}

/// Offline messages wait for the user, come in submission order on login,
/// are deleted only when acknowledged, and unacknowledged ones come again
/// on the next session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_offline_delivery_in_order_ack_then_delete() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    c.wait_leader(LEADER_WAIT)?;
    let n2 = c.addr(2);
    phase("submit 5 messages for offline u1 through node 2");
    for i in 0..5 {
        let v =
            send(&n2, &msg(&format!("k{i}"), &["u1"], &format!("m{i}")), Duration::from_secs(10))?;
        assert_eq!(v["recipients"][0]["outcome"], "stored", "{v}");
    }
    assert_eq!(queued(&c.addr(3), "u1")?, 5);

    phase("session 1: all 5 in order; acknowledge the first 2");
    let (mut s, _) = session(&c, "u1", seeds(&c)).await?;
    let got = recv_n(&mut s, 5, Duration::from_secs(10)).await;
    let bodies: Vec<String> =
        got.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect();
    assert_eq!(bodies, vec!["m0", "m1", "m2", "m3", "m4"]);
    let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert!(got.iter().all(|m| m.stored && m.kind == "direct"));
    s.ack(ids[..2].to_vec()).await;
    eventually(Duration::from_secs(10), || match queued(&n2, "u1")? {
        3 => Ok(()),
        q => bail!("queued {q}"),
    })?;
    drop(s);

    phase("session 2: the 3 unacknowledged come again");
    let (mut s, _) = session(&c, "u1", seeds(&c)).await?;
    let again = recv_n(&mut s, 3, Duration::from_secs(10)).await;
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), ids[2..].to_vec());
    s.ack(ids[2..].to_vec()).await;
    eventually(Duration::from_secs(10), || match queued(&n2, "u1")? {
        0 => Ok(()),
        q => bail!("queued {q}"),
    })?;
    drop(s);

    phase("session 3: nothing is left");
    let (mut s, _) = session(&c, "u1", seeds(&c)).await?;
    assert!(recv_n(&mut s, 1, Duration::from_millis(800)).await.is_empty());
    Ok(())
}

/// A message submitted through one node reaches a session held by another
/// node at once, and the sender hears "delivered"; a recipient without a
/// session is "stored" in the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_online_push_across_nodes() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    c.wait_leader(LEADER_WAIT)?;
    phase("u2 opens a session on node 1");
    let (gw, mut rx, _h) = acking_session(&c, "u2", vec![c.addr(1)], Duration::ZERO).await?;
    let sender = c.nodes.iter().map(|n| n.number).find(|n| *n != gw).unwrap();
    phase(&format!("send through node {sender}; gateway is node {gw}"));
    let t0 = Instant::now();
    let v = send_async(
        c.addr(sender),
        msg("live-1", &["u2", "offline-user"], "hi"),
        Duration::from_secs(10),
    )
    .await??;
    let took = t0.elapsed();
    let outcomes: HashMap<String, String> = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["uid"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(outcomes["u2"], "delivered", "{v}");
    assert_eq!(outcomes["offline-user"], "stored", "{v}");
    assert!(took < Duration::from_secs(2), "delivered within the push timeout: {took:?}");
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await? {
            Some(SessionEvent::Message(m)) => break m,
            Some(_) => continue,
            None => bail!("session ended"),
        }
    };
    assert_eq!(got.body, b"hi");
    assert_eq!(got.node, gw);
    eprintln!("submit → delivered answer: {took:?}");
    eventually(Duration::from_secs(5), || match queued(&c.addr(sender), "u2")? {
        0 => Ok(()),
        q => bail!("queued {q}"),
    })?;
    Ok(())
}

/// The recipient's gateway is SIGKILLed while stored messages are being
/// delivered: the client asks for another gateway, reconnects, and in the
/// end has received every message; none is lost and the store empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_gateway_killed_mid_delivery_client_reconnects() -> Result<()> {
    let mut c = Cluster::start(3, Tuning::default())?;
    c.wait_leader(LEADER_WAIT)?;
    // More than the server's window (256 unacknowledged), so part of the
    // queue has not even been sent when the gateway dies.
    phase("store 300 messages for u3");
    let mut want = BTreeSet::new();
    for i in 0..300 {
        let v = send(
            &c.addr(1 + i % 3),
            &msg(&format!("g{i}"), &["u3"], &format!("b{i}")),
            Duration::from_secs(10),
        )?;
        want.insert(v["message_id"].as_u64().unwrap());
    }
    phase("slow-acking session; kill its gateway after 20 messages");
    let (gw, mut rx, _h) = acking_session(&c, "u3", seeds(&c), Duration::from_millis(10)).await?;
    let mut got = BTreeSet::new();
    let mut reconnected_to = None;
    let mut killed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&got) || reconnected_to.is_none() {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("timed out waiting for messages")?;
        match ev {
            Some(SessionEvent::Message(m)) => {
                got.insert(m.id);
                if got.len() == 20 && !killed {
                    phase(&format!("SIGKILL gateway node {gw}"));
                    c.node(gw).kill9()?;
                    killed = true;
                }
            }
            Some(SessionEvent::Connected { node, .. }) => {
                phase(&format!("reconnected through node {node}"));
                reconnected_to = Some(node);
            }
            Some(SessionEvent::Disconnected { code, message, fatal }) => {
                eprintln!("disconnected: {code}: {message}");
                assert!(!fatal);
            }
            None => bail!("session ended"),
        }
    }
    assert!(killed);
    let other = reconnected_to.context("reconnected")?;
    assert_ne!(other, gw, "reconnected through another gateway");
    assert!(want.is_subset(&got), "missing {:?}", want.difference(&got).collect::<Vec<_>>());
    let alive = c.nodes.iter().find(|n| n.number != gw).unwrap().publish();
    eventually(Duration::from_secs(20), || match queued(&alive, "u3")? {
        0 => Ok(()),
        q => bail!("queued {q}"),
    })?;
    Ok(())
}

/// The leader is SIGKILLed while applications submit messages (retrying
/// with their idempotency keys): every acknowledged submission is
/// delivered at least once, and none is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_leader_killed_during_submissions_none_lost() -> Result<()> {
    let mut c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let followers: Vec<String> =
        c.nodes.iter().filter(|n| n.number != leader).map(|n| n.publish()).collect();
    phase("4 writers submit 60 messages each through the followers");
    let acked = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (addr, acked) = (followers[w % followers.len()].clone(), acked.clone());
        writers.push(std::thread::spawn(move || {
            for i in 0..60 {
                let key = format!("w{w}-{i}");
                if let Ok(v) = send(&addr, &msg(&key, &["u4"], &key), Duration::from_secs(20)) {
                    acked.lock().unwrap().insert(key, v["message_id"].as_u64().unwrap());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    phase(&format!("SIGKILL leader {leader}"));
    c.node(leader).kill9()?;
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("acknowledged submissions: {}", acked.len());
    assert!(acked.len() >= 200, "most submissions get through the failover: {}", acked.len());
    let ids: BTreeSet<u64> = acked.values().copied().collect();
    assert_eq!(ids.len(), acked.len(), "one id per key");
    assert_eq!(queued(&followers[0], "u4")?, ids.len() as u64, "stored once each");

    phase("u4 logs in and receives every acknowledged message");
    let (_gw, mut rx, _h) = acking_session(&c, "u4", followers.clone(), Duration::ZERO).await?;
    let mut got = BTreeSet::new();
    while !ids.is_subset(&got) {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .context("waiting for messages")?
        {
            Some(SessionEvent::Message(m)) => {
                got.insert(m.id);
            }
            Some(_) => {}
            None => bail!("session ended"),
        }
    }
    Ok(())
}

/// Opens a raw gRPC session (Hello only, no heartbeats) and returns the
/// server's frames and the sender that keeps the stream open.
async fn raw_session(
    addr: &str,
    uid: &str,
    tok: &str,
) -> Result<(tonic::Streaming<pb::ServerFrame>, mpsc::Sender<pb::ClientFrame>)> {
    let mut c = pb::gateway_client::GatewayClient::connect(format!("http://{addr}")).await?;
    let (tx, rx) = mpsc::channel(8);
    let hello = pb::Hello { uid: uid.into(), token: tok.into(), client: "mobile".into(), sid: 0 };
    tx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Hello(hello)) }).await?;
    let r = c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
    Ok((r.into_inner(), tx))
}

/// The first frame's error code, if the server refused.
async fn first_error(frames: &mut tonic::Streaming<pb::ServerFrame>) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(10), frames.message()).await {
        Ok(Ok(Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Error(e)) }))) => {
            Some(e.code)
        }
        Ok(Err(s)) => {
            s.metadata().get("x-herald-code").and_then(|v| v.to_str().ok()).map(str::to_string)
        }
        _ => None,
    }
}

/// A session that stops heartbeating ends after heartbeat-ms × misses and
/// its user goes offline; heartbeats themselves keep it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_heartbeat_timeout_goes_offline() -> Result<()> {
    let t = Tuning { session_heartbeat_ms: 300, heartbeat_misses: 3, ..Tuning::default() };
    let c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    phase("a heartbeating session stays online past the timeout");
    let (_s, node) = session(&c, "alive", seeds(&c)).await?;
    let (mut frames, tx) = raw_session(&c.addr(1), "silent", &token("silent")).await?;
    match frames.message().await? {
        Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Welcome(w)) }) => {
            assert_eq!(w.heartbeat_timeout_ms, 900)
        }
        other => bail!("expected Welcome, got {other:?}"),
    }
    assert!(online(&c.addr(2), "silent")?);
    let t0 = Instant::now();
    phase("the silent one goes offline after ~900 ms");
    let code = first_error(&mut frames).await;
    assert_eq!(code.as_deref(), Some("heartbeat_timeout"));
    eventually(Duration::from_secs(5), || {
        if online(&c.addr(2), "silent")? {
            bail!("still online")
        } else {
            Ok(())
        }
    })?;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(800), "not before the timeout: {took:?}");
    eprintln!("silent session offline after {took:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        online(&c.addr(3), "alive")?,
        "the heartbeating session (gateway {node}) is still online"
    );
    drop(tx);
    Ok(())
}

/// A client that closes its session goes offline at once, long before any
/// heartbeat timeout: the session (which runs inside its response stream)
/// is dropped with the stream and writes the logout. A user with two
/// sessions of one client type on the node stays online until the second
/// closes; the node's open-session gauge counts both down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_closed_by_the_client_go_offline_at_once() -> Result<()> {
    // Heartbeat timeout 30 s: only the close can make a user offline here.
    let t = Tuning { session_heartbeat_ms: 10_000, ..Tuning::default() };
    let hb = Duration::from_millis(t.session_heartbeat_ms);
    let c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    let welcome = |f: Option<pb::ServerFrame>| {
        matches!(f, Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Welcome(_)) }))
    };
    let gauge = || -> Result<f64> {
        tokio::task::block_in_place(|| metric(&c.addr(1), "herald_gateway_sessions"))
    };
    let offline_within = |uid: &'static str, within: Duration| {
        eventually(within, || if online(&c.addr(2), uid)? { bail!("still online") } else { Ok(()) })
    };
    phase("two sessions of twice (same client type) and one of once, all on node 1");
    let (mut a, a_tx) = raw_session(&c.addr(1), "twice", &token("twice")).await?;
    assert!(welcome(a.message().await?));
    let (mut b, b_tx) = raw_session(&c.addr(1), "twice", &token("twice")).await?;
    assert!(welcome(b.message().await?));
    let (mut o, o_tx) = raw_session(&c.addr(1), "once", &token("once")).await?;
    assert!(welcome(o.message().await?));
    assert!(online(&c.addr(2), "twice")? && online(&c.addr(2), "once")?);
    assert_eq!(gauge()?, 3.0);

    phase("once closes: offline well inside one heartbeat interval");
    let t0 = Instant::now();
    drop((o, o_tx));
    offline_within("once", Duration::from_secs(5))?;
    let took = t0.elapsed();
    assert!(took < hb, "offline after {took:?}, not by the heartbeat timeout ({hb:?} per beat)");
    eprintln!("closed session offline after {took:?}");

    phase("twice closes one of two: still online; then the other: offline");
    drop((a, a_tx));
    eventually(Duration::from_secs(5), || {
        let g = gauge()?;
        ensure!(g == 1.0, "{g} sessions open");
        Ok(())
    })?;
    assert!(online(&c.addr(2), "twice")?, "one session of the client type is still open");
    drop((b, b_tx));
    offline_within("twice", Duration::from_secs(5))?;
    assert_eq!(gauge()?, 0.0);
    Ok(())
}

/// SIGKILL of a gateway leaves its sessions online only for the grace
/// period: then the cluster marks them offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_dead_gateway_offline_after_grace() -> Result<()> {
    let t = Tuning { grace_ms: 3000, ..Tuning::default() };
    let mut c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    // Gateway: node 3 (the numbered master prefers node 1 as leader, so
    // this kill is a gateway failure, not a leader failure).
    let (mut frames, _tx) = raw_session(&c.addr(3), "orphan", &token("orphan")).await?;
    assert!(matches!(
        frames.message().await?,
        Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Welcome(_)) })
    ));
    assert!(online(&c.addr(1), "orphan")?);
    phase("SIGKILL gateway node 3");
    c.node(3).kill9()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(online(&c.addr(1), "orphan")?, "still online within the grace period");
    eventually(Duration::from_secs(15), || {
        if online(&c.addr(1), "orphan")? {
            bail!("still online")
        } else {
            Ok(())
        }
    })?;
    let took = t0.elapsed();
    eprintln!("dead gateway's session offline {took:?} after the kill (grace 3 s)");
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(12), "{took:?}");
    Ok(())
}

/// A broadcast with a lifetime reaches a user who logs in within it (once)
/// and not one who logs in after it; one without a lifetime reaches online
/// sessions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_broadcast_lifetime() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    c.wait_leader(LEADER_WAIT)?;
    phase("online-only broadcast reaches the online session");
    let (mut online_s, _) = session(&c, "b-online", seeds(&c)).await?;
    let v = send(
        &c.addr(2),
        &json!({"idempotency_key": "b0", "from": "ops", "broadcast": true, "body": "now"}),
        Duration::from_secs(10),
    )?;
    assert_eq!(v["broadcast"], "online_only");
    let got = recv_n(&mut online_s, 1, Duration::from_secs(5)).await;
    assert_eq!(
        got.first().map(|m| (m.kind.as_str(), m.body.as_slice())),
        Some(("broadcast", &b"now"[..]))
    );
    online_s.ack(vec![got[0].id]).await;

    phase("broadcast with a 3 s lifetime");
    let v = send(
        &c.addr(2),
        &json!({"idempotency_key": "b1", "from": "ops", "broadcast": true, "ttl_s": 3, "body": "sale"}),
        Duration::from_secs(10),
    )?;
    assert_eq!(v["broadcast"], "stored");
    let bid = v["message_id"].as_u64().unwrap();
    phase("a user logging in within the lifetime gets it, once");
    let (mut early, _) = session(&c, "b-early", seeds(&c)).await?;
    let got = recv_n(&mut early, 1, Duration::from_secs(5)).await;
    assert_eq!(got.first().map(|m| m.id), Some(bid));
    early.ack(vec![bid]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(early);
    let (mut early2, _) = session(&c, "b-early", seeds(&c)).await?;
    assert!(
        recv_n(&mut early2, 1, Duration::from_millis(800)).await.is_empty(),
        "acknowledged: not again"
    );
    phase("a user logging in after it expired does not");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (mut late, _) = session(&c, "b-late", seeds(&c)).await?;
    send(&c.addr(3), &msg("marker", &["b-late"], "marker"), Duration::from_secs(10))?;
    let got = recv_n(&mut late, 1, Duration::from_secs(5)).await;
    assert_eq!(
        got.first().map(|m| m.body.as_slice()),
        Some(&b"marker"[..]),
        "the expired broadcast is not delivered"
    );
    Ok(())
}

/// Idempotency keys, the per-user quota, offline-storage subscription and
/// recipient groups behave as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_idempotency_quota_subscription_groups() -> Result<()> {
    let t = Tuning { quota_per_user: 3, ..Tuning::default() };
    let c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(1);
    phase("a retry with the same key is not stored twice");
    let first = send(&a, &msg("same", &["q1"], "x"), Duration::from_secs(10))?;
    let again = send(&c.addr(2), &msg("same", &["q1"], "x"), Duration::from_secs(10))?;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(queued(&a, "q1")?, 1);
    phase("quota 3: the 4th is rejected, the first 3 kept");
    for i in 0..2 {
        send(&a, &msg(&format!("q{i}"), &["q1"], "x"), Duration::from_secs(10))?;
    }
    let v = send(&a, &msg("q-over", &["q1"], "x"), Duration::from_secs(10))?;
    assert_eq!(v["recipients"][0]["outcome"], "rejected");
    assert_eq!(v["recipients"][0]["reason"], "quota_exceeded");
    assert_eq!(queued(&a, "q1")?, 3);
    phase("an unsubscribed user's message is dropped");
    let (st, v) = put_json(&a, "/v1/users/nosub/settings", &json!({"offline": false}))?;
    assert_eq!((st, v["offline"].clone()), (200, json!(false)));
    let v = send(&a, &msg("ns", &["nosub"], "x"), Duration::from_secs(10))?;
    assert_eq!(
        (v["recipients"][0]["outcome"].clone(), v["recipients"][0]["reason"].clone()),
        (json!("dropped"), json!("not_subscribed"))
    );
    assert_eq!(queued(&a, "nosub")?, 0);
    phase("a group send reaches exactly the group's members");
    let (st, _) = put_json(&a, "/v1/groups/team", &json!({"members": ["g1", "g2"]}))?;
    assert_eq!(st, 200);
    let (st, v) = get_json(&c.addr(3), "/v1/groups/team")?;
    assert_eq!((st, v["members"].clone()), (200, json!(["g1", "g2"])));
    let v = send(
        &c.addr(3),
        &json!({"idempotency_key": "grp", "from": "app", "group": "team", "body": "hey"}),
        Duration::from_secs(10),
    )?;
    let uids: Vec<&str> =
        v["recipients"].as_array().unwrap().iter().map(|r| r["uid"].as_str().unwrap()).collect();
    assert_eq!(uids, vec!["g1", "g2"]);
    assert_eq!((queued(&a, "g1")?, queued(&a, "g2")?), (1, 1));
    Ok(())
}

/// Bad token, expired token, bad JSON, oversize body, unknown group and
/// missing fields are each refused with a clear code, and nothing is
/// stored or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_refusals_have_codes_and_store_nothing() -> Result<()> {
    let t = Tuning { max_body_bytes: 1024, ..Tuning::default() };
    let c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(2);
    phase("bad and expired tokens");
    let (mut f, _tx) = raw_session(&a, "r1", "garbage").await?;
    assert_eq!(first_error(&mut f).await.as_deref(), Some("bad_token"));
    let expired = herald_proto::token::issue(TEST_AUTH_KEY.as_bytes(), "r1", 1);
    let (mut f, _tx2) = raw_session(&a, "r1", &expired).await?;
    assert_eq!(first_error(&mut f).await.as_deref(), Some("token_expired"));
    let other = token("someone-else");
    let (mut f, _tx3) = raw_session(&a, "r1", &other).await?;
    assert_eq!(first_error(&mut f).await.as_deref(), Some("wrong_user"));
    let q = query(&a, &["r1".to_string()], "linearizable")?;
    assert_eq!(q["unknown"], json!(["r1"]), "no presence change: {q}");

    phase("bad JSON, oversize body, unknown group, missing key, two ways of naming recipients");
    let (st, v) = post_raw(&a, "/v1/messages", "application/json", b"{not json".to_vec())?;
    assert_eq!((st, v["error"]["code"].clone()), (400, json!("malformed_json")));
    let (st, v) = post_json(&a, "/v1/messages", &msg("big", &["r1"], &"x".repeat(1025)))?;
    assert_eq!((st, v["error"]["code"].clone()), (413, json!("payload_too_large")));
    let (st, v) = post_json(
        &a,
        "/v1/messages",
        &json!({"idempotency_key": "g", "from": "app", "group": "nope", "body": "x"}),
    )?;
    assert_eq!((st, v["error"]["code"].clone()), (404, json!("unknown_group")));
    let (st, v) = post_json(
        &a,
        "/v1/messages",
        &json!({"idempotency_key": "", "from": "app", "to": ["r1"], "body": "x"}),
    )?;
    assert_eq!((st, v["error"]["code"].clone()), (400, json!("invalid_idempotency_key")));
    let (st, v) = post_json(
        &a,
        "/v1/messages",
        &json!({"idempotency_key": "t", "from": "app", "to": ["r1"], "broadcast": true}),
    )?;
    assert_eq!((st, v["error"]["code"].clone()), (400, json!("invalid_recipients")));
    let (st, v) = post_json(&a, "/v1/messages", &json!({"from": "app", "to": ["r1"]}))?;
    assert_eq!(st, 400, "{v}");
    assert_eq!(queued(&a, "r1")?, 0, "nothing stored");
    Ok(())
}

/// `GET /v1/gateway` prefers the least loaded healthy node: with sessions
/// piled on node 1 it points elsewhere, and it never names a dead node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_pick_balances_load_and_skips_dead_nodes() -> Result<()> {
    let t = Tuning { max_sessions: 10, ..Tuning::default() };
    let mut c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    phase("6 sessions on node 1 (load 0.6)");
    let mut held = Vec::new();
    for i in 0..6 {
        let uid = format!("lb{i}");
        held.push(raw_session(&c.addr(1), &uid, &token(&uid)).await?);
    }
    let n1 = c.addr(1);
    let v = eventually(Duration::from_secs(10), || {
        let (_, v) = get_json(&n1, "/v1/gateway?uid=x")?;
        let best = v["best"]["node"].as_u64().unwrap_or(0);
        let n1_sessions = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["node"] == 1)
            .map(|g| g["sessions"].clone());
        if best == 1 || n1_sessions != Some(json!(6)) {
            bail!("not balanced yet: {v}");
        }
        Ok(v)
    })?;
    eprintln!("gateway answer: {v}");
    phase("SIGKILL node 3: never recommended while dead");
    c.node(3).kill9()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..20 {
        let (st, v) = get_json(&c.addr(2), &format!("/v1/gateway?uid=u{i}"))?;
        assert_eq!(st, 200);
        // (node 1's raw sessions have timed out by now: loads are near
        // equal and the uid spreads clients over nodes 1 and 2.)
        assert_ne!(v["best"]["node"], 3, "{v}");
        let n3 =
            v["candidates"].as_array().unwrap().iter().find(|g| g["node"] == 3).cloned().unwrap();
        assert_eq!(n3["healthy"], false, "{v}");
    }
    Ok(())
}

/// A gateway that restarts (SIGKILL, then start again well within the grace
/// period) ends the sessions of its previous run itself: the users go
/// offline as soon as it is back, not after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_restarted_gateway_resets_its_sessions() -> Result<()> {
    let t = Tuning { grace_ms: 60_000, ..Tuning::default() };
    let mut c = Cluster::start(3, t)?;
    c.wait_leader(LEADER_WAIT)?;
    let (mut frames, _tx) = raw_session(&c.addr(3), "restarted", &token("restarted")).await?;
    assert!(matches!(
        frames.message().await?,
        Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Welcome(_)) })
    ));
    assert!(online(&c.addr(1), "restarted")?);
    phase("SIGKILL node 3 and start it again");
    c.node(3).kill9()?;
    assert!(
        online(&c.addr(1), "restarted")?,
        "a dead gateway's session stays online within the grace period"
    );
    let t0 = Instant::now();
    c.node(3).start()?;
    eventually(Duration::from_secs(15), || {
        if online(&c.addr(1), "restarted")? {
            bail!("still online")
        } else {
            Ok(())
        }
    })?;
    let took = t0.elapsed();
    eprintln!("restarted gateway reset its sessions {took:?} after the restart (grace 60 s)");
    assert!(took < Duration::from_secs(15));
    Ok(())
}

/// `GET /v1/messages/queues` (the console's Messages page): the longest
/// offline queues first with their oldest message's age, the stored and
/// inbox counts, cut at `top`; a `top` out of 1..=100 or an unknown
/// parameter is refused with its code.
#[test]
fn messages_queue_summary_lists_the_longest_queues() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    for (i, to) in [vec!["q1", "q2"], vec!["q1", "q3"], vec!["q1", "q2"]].into_iter().enumerate() {
        let body =
            json!({"idempotency_key": format!("k{i}"), "from": "app", "to": to, "body": "hi"});
        let (st, v) = herald_tests::post_json(&a, "/v1/messages", &body)?;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = herald_tests::get_json(&a, "/v1/messages/queues?top=2")?;
    assert_eq!(st, 200, "{v}");
    let q: Vec<(String, u64)> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["uid"].as_str().unwrap().to_string(), l["queued"].as_u64().unwrap()))
        .collect();
    assert_eq!(q, vec![("q1".to_string(), 3), ("q2".to_string(), 2)]);
    assert_eq!((v["stored_messages"].as_u64(), v["inboxes"].as_u64()), (Some(3), Some(3)));
    assert!(v["queues"][0]["oldest_age_ms"].as_u64().is_some());
    let (st, v) = herald_tests::get_json(&a, "/v1/messages/queues?top=0")?;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_field")), "{v}");
    let (st, v) = herald_tests::get_json(&a, "/v1/messages/queues?nope=1")?;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("unknown_parameter")), "{v}");
    Ok(())
}

/// A batch send (`POST /v1/messages/batch`, gRPC `SendBatch`) commits its
/// messages in one log entry and answers each in order: an online
/// recipient's messages "delivered", an offline one's "stored", all at the
/// entry's revision; a retried batch is answered from the log (duplicates,
/// nothing stored twice); an empty, an oversize (1,001) and a batch with
/// one bad message are refused with their codes, naming the bad message,
/// and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_batch_send_one_entry_in_order_and_refusals() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    c.wait_leader(LEADER_WAIT)?;
    let addr = c.addr(2);
    phase("b-on opens a session; b-off stays offline");
    let (_gw, mut rx, _h) = acking_session(&c, "b-on", seeds(&c), Duration::ZERO).await?;
    let batch = json!({"messages": [
        msg("bk-1", &["b-on"], "one"),
        msg("bk-2", &["b-off"], "two"),
        msg("bk-3", &["b-on"], "three"),
        msg("bk-4", &["b-off"], "four"),
    ]});
    phase("HTTP batch of 4");
    let (st, v) = {
        let (a, b) = (addr.clone(), batch.clone());
        tokio::task::spawn_blocking(move || post_json(&a, "/v1/messages/batch", &b)).await??
    };
    assert_eq!(st, 200, "{v}");
    let rev = v["revision"].as_u64().context("revision")?;
    let results = v["results"].as_array().context("results")?;
    let got: Vec<(u64, &str, &str, bool)> = results
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap_or(0),
                r["recipients"][0]["uid"].as_str().unwrap_or(""),
                r["recipients"][0]["outcome"].as_str().unwrap_or(""),
                r["duplicate"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (rev, "b-on", "delivered", false),
            (rev, "b-off", "stored", false),
            (rev, "b-on", "delivered", false),
            (rev, "b-off", "stored", false),
        ],
        "{v}"
    );
    let bodies: Vec<Vec<u8>> = recv_until(&mut rx, 2).await?;
    assert_eq!(bodies, vec![b"one".to_vec(), b"three".to_vec()], "in submission order");
    assert_eq!(queued(&addr, "b-off")?, 2);

    phase("the same batch again: duplicates, nothing stored twice");
    let (st, again) = {
        let (a, b) = (addr.clone(), batch.clone());
        tokio::task::spawn_blocking(move || post_json(&a, "/v1/messages/batch", &b)).await??
    };
    assert_eq!(st, 200, "{again}");
    let ids = |v: &Value| -> Vec<(u64, bool)> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["message_id"].as_u64().unwrap(), r["duplicate"].as_bool().unwrap()))
            .collect()
    };
    assert_eq!(
        ids(&again).iter().map(|x| x.0).collect::<Vec<_>>(),
        ids(&v).iter().map(|x| x.0).collect::<Vec<_>>()
    );
    assert!(ids(&again).iter().all(|x| x.1), "{again}");
    assert_eq!(queued(&addr, "b-off")?, 2);

    phase("refusals: empty, 1,001 messages, one bad uid among good ones");
    let refused = |body: Value| {
        let a = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || post_json(&a, "/v1/messages/batch", &body)).await?
        }
    };
    let (st, e) = refused(json!({"messages": []})).await?;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("no_messages")), "{e}");
    let many: Vec<Value> = (0..1001).map(|i| msg(&format!("m{i}"), &["b-many"], "x")).collect();
    let (st, e) = refused(json!({ "messages": many })).await?;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("too_many_messages")), "{e}");
    let bad = json!({"messages": [
        msg("bad-0", &["b-bad"], "fine"),
        msg("bad-1", &[""], "empty uid"),
    ]});
    let (st, e) = refused(bad).await?;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("invalid_uid")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap_or("").starts_with("message 1"), "{e}");
    assert_eq!(queued(&addr, "b-bad")?, 0, "the good message of a refused batch is not stored");
    assert_eq!(queued(&addr, "b-many")?, 0);

    phase("gRPC SendBatch through the client library");
    let client = herald_client::HeraldClient::connect(&c.addr(3))
        .await?
        .with_credential(herald_tests::test_credential());
    let out = |k: &str, to: &str| herald_client::messages::Outgoing {
        idempotency_key: k.into(),
        from: "app".into(),
        to: herald_client::messages::Recipients::To(vec![to.into()]),
        ttl_s: 0,
        content_type: "text/plain".into(),
        body: k.as_bytes().to_vec(),
    };
    let (grev, items) = client.send_batch(vec![out("g-1", "b-off"), out("g-2", "b-on")]).await?;
    let items: Vec<_> = items.into_iter().collect::<Result<Vec<_>, _>>()?;
    assert_eq!(
        items.iter().map(|a| (a.revision, a.recipients[0].outcome.as_str())).collect::<Vec<_>>(),
        vec![(grev, "stored"), (grev, "delivered")]
    );
    assert!(grev > rev);
    assert_eq!(recv_until(&mut rx, 1).await?, vec![b"g-2".to_vec()]);
    let e = client.send_batch(Vec::new()).await.expect_err("empty batch");
    assert_eq!(e.code(), "no_messages", "{e}");
    eventually(Duration::from_secs(5), || match queued(&addr, "b-off")? {
        3 => Ok(()),
        q => bail!("queued {q}"),
    })?;
    Ok(())
}

/// The bodies of the next `n` messages an acking session reported.
async fn recv_until(
    rx: &mut mpsc::UnboundedReceiver<SessionEvent>,
    n: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await? {
            Some(SessionEvent::Message(m)) => out.push(m.body),
            Some(_) => continue,
            None => bail!("session ended"),
        }
    }
    Ok(out)
}

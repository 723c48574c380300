//! Zones across data centers (issue 16), with real processes: three voters
//! in zone dc1 and a replica in a remote zone dc2, every peer link between
//! the zones through a userspace delaying proxy (`herald_tests::delay_proxy`:
//! 40 ms ± 10 ms each way, netem being unavailable here).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herald_tests::delay_proxy::{Delay, DelayProxy};
use herald_tests::*;
use serde_json::{json, Value};

/// One-way delay between the zones.
const WAN: Delay = Delay { ms: 40, jitter_ms: 10 };
/// The replica's number (servers 1–3 are the voters).
const REPLICA: u64 = 4;
/// `<reads max-staleness-ms>` of the test cluster: the bound a bounded read
/// gives when it names none.
const BOUND_MS: u64 = 1000;

/// The cluster and the proxies of every dc1 ↔ dc2 link (they must outlive it).
struct Zoned {
    c: Cluster,
    proxies: Vec<DelayProxy>,
}

impl Zoned {
    fn cut(&self) {
        self.proxies.iter().for_each(DelayProxy::cut);
    }
    fn heal(&self) {
        self.proxies.iter().for_each(DelayProxy::heal);
    }
}

/// Voters 1–3 in dc1, replica 4 in dc2; node 4 reaches each voter through
/// its own proxy and the voters reach node 4 through one, so every byte
/// between the zones (Raft, forwards, read index, gateway load) crosses the
/// WAN both ways.
fn start_zoned(when_stale: &str) -> Result<Zoned> {
    let mut t = Tuning::default();
    for n in 1..=3 {
        t.server_attrs.push((n, "zone=\"dc1\"".into()));
    }
    t.server_attrs.push((REPLICA, "zone=\"dc2\" role=\"replica\"".into()));
    t.extra_xml = format!(
        "<reads max-staleness-ms=\"{BOUND_MS}\" tick-ms=\"50\" stale-wait-ms=\"100\" \
         when-stale=\"{when_stale}\" min-revision-wait-ms=\"3000\"/>"
    );
    let mut c = Cluster::configure(4, t)?;
    let sync = |c: &Cluster, n: u64| -> std::net::SocketAddr {
        let p = c.nodes.iter().find(|x| x.number == n).unwrap().ports.sync;
        std::net::SocketAddr::from(([127, 0, 0, 1], p))
    };
    let mut proxies = Vec::new();
    let to_replica = DelayProxy::start(sync(&c, REPLICA), WAN)?;
    for v in 1..=3 {
        c.set_sync_via(v, REPLICA, &to_replica.addr().to_string())?;
        let to_voter = DelayProxy::start(sync(&c, v), WAN)?;
        c.set_sync_via(REPLICA, v, &to_voter.addr().to_string())?;
        proxies.push(to_voter);
    }
    proxies.push(to_replica);
    for n in &mut c.nodes {
        n.start()?;
    }
    Ok(Zoned { c, proxies })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// A presence query through HTTP with the fields of issue 16.
fn query_with(addr: &str, uid: &str, body: Value) -> Result<(u16, Value)> {
    let mut b = body;
    b["uids"] = json!([uid]);
    post_json(addr, "/v1/presence/query", &b)
}

/// Waits until the leader lists node 4 as a replica in zone dc2.
fn wait_replica(c: &Cluster, leader: u64) -> Result<Value> {
    eventually(Duration::from_secs(20), || {
        let v = local_view(&c.addr(leader))?;
        let n = v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["number"] == REPLICA))
            .cloned()
            .context("replica not a member yet")?;
        if n["role"] != "replica" || n["zone"] != "dc2" || n["replica"] != true {
            bail!("not a dc2 replica yet: {n}");
        }
        Ok(v)
    })
}

/// The median of `n` timed runs of `f`.
fn median_ms(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[n / 2])
}

/// The replica in the remote zone: bootstrap makes it a learner that stays
/// one, and `/v1/cluster` shows every node's zone, role and lag. A write
/// through the leader is seen at once on the replica by a `min_revision`
/// read. `bounded` reads there are answered locally — median time near a
/// local read and far below a linearizable read through the same 40 ms WAN
/// — with their revision and measured staleness. Cut the zone off: bounded
/// reads keep answering until the bound runs out, then fail with
/// `too_stale`; writes from there fail with a clear code while the voters
/// keep committing. Heal: the replica catches up (a `min_revision` read of
/// the write made during the cut) and bounded reads are served again.
#[test]
fn remote_replica_serves_bounded_reads_and_survives_a_cut() -> Result<()> {
    let z = start_zoned("fail")?;
    let c = &z.c;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    assert!(leader <= 3, "the replica cannot lead");

    phase("the replica is a learner in dc2, status shows zones and lag");
    let view = wait_replica(c, leader)?;
    for n in view["nodes"].as_array().unwrap() {
        let want = if n["number"] == REPLICA { "dc2" } else { "dc1" };
        assert_eq!(n["zone"], want, "{n}");
        assert!(n["lag_entries"].is_u64(), "the leader knows every member's lag: {n}");
    }
    let replica = c.addr(REPLICA);
    // The ticks make an idle replica fresh: its own lag in ms is measured.
    eventually(Duration::from_secs(10), || {
        let v = get_json(&c.addr(leader), "/v1/cluster")?.1;
        let n = v["nodes"].as_array().unwrap().iter().find(|n| n["number"] == REPLICA).cloned();
        match n.and_then(|n| n["lag_ms"].as_u64()) {
            Some(ms) if ms < BOUND_MS => Ok(()),
            other => bail!("replica lag_ms {other:?}: {v}"),
        }
    })?;

    phase("read-your-writes: min_revision on the replica right after a write");
    let rev = push(&c.addr(leader), vec![login_event("ryw", 1, "web", "x")])?;
    let (st, v) =
        query_with(&replica, "ryw", json!({"consistency": "local", "min_revision": rev}))?;
    assert_eq!(st, 200, "{v}");
    assert!(v["revision"].as_u64().unwrap() >= rev, "{v}");
    assert_eq!(v["users"][0]["uid"], "ryw", "the write is included: {v}");

    phase("bounded reads are local; linearizable ones cross the WAN");
    let bounded = median_ms(15, || {
        let (st, v) = query_with(&replica, "ryw", json!({"consistency": "bounded"}))?;
        if st != 200 {
            bail!("bounded → {st}: {v}");
        }
        let s = v["staleness_ms"].as_u64().context("staleness_ms")?;
        if s > BOUND_MS {
            bail!("staleness {s} over the bound: {v}");
        }
        Ok(())
    })?;
    let linear = median_ms(15, || {
        let (st, v) = query_with(&replica, "ryw", json!({"consistency": "linearizable"}))?;
        if st != 200 {
            bail!("linearizable → {st}: {v}");
        }
        Ok(())
    })?;
    let local =
        median_ms(15, || query_with(&replica, "ryw", json!({"consistency": "local"})).map(|_| ()))?;
    eprintln!(
        "replica in dc2: local {local:.1} ms, bounded {bounded:.1} ms, linearizable {linear:.1} ms"
    );
    assert!(linear >= 50.0, "a linearizable read crosses the WAN twice: {linear:.1} ms");
    assert!(bounded < linear / 2.0, "bounded {bounded:.1} ms vs linearizable {linear:.1} ms");
    assert!(bounded < local + 25.0, "bounded {bounded:.1} ms vs local {local:.1} ms");

    phase("cut dc2 off: bounded reads answer until the bound runs out");
    z.cut();
    let cut_at = Instant::now();
    let (st, v) = query_with(&replica, "ryw", json!({"consistency": "bounded"}))?;
    assert_eq!(st, 200, "just after the cut the replica is within the bound: {v}");
    let failed_after = loop {
        let (st, v) = query_with(&replica, "ryw", json!({"consistency": "bounded"}))?;
        if st != 200 {
            assert_eq!((st, code(&v)), (503, "too_stale"), "{v}");
            break cut_at.elapsed();
        }
        assert!(v["staleness_ms"].as_u64().unwrap() <= BOUND_MS, "{v}");
        if cut_at.elapsed() > Duration::from_secs(10) {
            bail!("bounded reads still answered 10 s after the cut: {v}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("bounded reads failed {failed_after:?} after the cut");
    assert!(
        failed_after >= Duration::from_millis(BOUND_MS / 2),
        "failed too early: {failed_after:?}"
    );
    // A looser bound still answers; a local read always does.
    let (st, v) =
        query_with(&replica, "ryw", json!({"consistency": "bounded", "max_staleness_ms": 60_000}))?;
    assert_eq!(st, 200, "{v}");
    let (st, _) = query_with(&replica, "ryw", json!({"consistency": "local"}))?;
    assert_eq!(st, 200);

    phase("writes from the cut zone fail clearly; the voters keep committing");
    let (st, v) = post_json(
        &replica,
        "/v1/presence/events",
        &json!({"events": [login_event("cut", 2, "web", "y")]}),
    )?;
    assert!(
        matches!(
            (st, code(&v)),
            (503, "no_leader") | (503, "leader_unavailable") | (504, "timeout")
        ),
        "{st} {v}"
    );
    let during = push(&c.addr(leader), vec![login_event("during", 3, "web", "z")])?;
    let (st, v) =
        query_with(&replica, "during", json!({"consistency": "local", "min_revision": during}))?;
    assert_eq!((st, code(&v)), (504, "revision_not_reached"), "{v}");

    phase("heal: the replica catches up and serves bounded reads again");
    z.heal();
    eventually(Duration::from_secs(20), || {
        let (st, v) = query_with(
            &replica,
            "during",
            json!({"consistency": "bounded", "min_revision": during}),
        )?;
        if st != 200 || v["users"][0]["uid"] != "during" {
            bail!("{st}: {v}");
        }
        Ok(())
    })?;
    Ok(())
}

/// With `when-stale="forward"` a bounded read the replica cannot serve
/// fresh enough goes through the leader instead (staleness 0); a bound the
/// replica meets is served locally with its measured staleness. The
/// gateway pick prefers healthy gateways of the zone the client names (the
/// dc2 replica), else of the asked node's zone, and says why.
#[test]
fn bounded_read_too_stale_is_forwarded() -> Result<()> {
    let z = start_zoned("forward")?;
    let c = &z.c;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    wait_replica(c, leader)?;
    let replica = c.addr(REPLICA);
    let rev = push(&c.addr(leader), vec![login_event("f", 1, "web", "x")])?;
    eventually(Duration::from_secs(10), || {
        let (st, v) =
            query_with(&replica, "f", json!({"consistency": "bounded", "min_revision": rev}))?;
        match v["staleness_ms"].as_u64() {
            Some(s) if st == 200 && s > 0 => Ok(()),
            _ => bail!("not served locally: {st} {v}"),
        }
    })?;
    // The gateway pick prefers the client's zone, then the asked node's.
    let pick = |addr: &str, q: &str| -> Result<Value> {
        eventually(Duration::from_secs(10), || {
            let (st, v) = get_json(addr, &format!("/v1/gateway?uid=g{q}"))?;
            let healthy = v["candidates"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|g| g["healthy"] == true).count());
            if st != 200 || healthy < 4 {
                bail!("{st} {v}");
            }
            Ok(v)
        })
    };
    let v = pick(&c.addr(1), "&zone=dc2")?;
    assert_eq!(
        (v["best"]["node"].as_u64(), v["best"]["zone"].as_str()),
        (Some(REPLICA), Some("dc2")),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("in zone dc2"), "{v}");
    let v = pick(&c.addr(1), "")?;
    assert_eq!(v["best"]["zone"], "dc1", "no zone given: the asked node's: {v}");
    let v = pick(&c.addr(1), "&zone=dc7")?;
    assert!(v["reason"].as_str().unwrap().contains("no healthy gateway in zone dc7"), "{v}");
    // 1 ms cannot be met across a 40 ms WAN: forwarded, confirmed by the leader.
    let (st, v) =
        query_with(&replica, "f", json!({"consistency": "bounded", "max_staleness_ms": 1}))?;
    assert_eq!((st, v["staleness_ms"].as_u64()), (200, Some(0)), "{v}");
    Ok(())
}

/// `add-replica` (add-learner with `replica: true` and a zone) adds a
/// joining node as a replica: the membership keeps its zone and role on
/// every node, and nothing promotes it.
#[test]
fn add_replica_keeps_zone_and_role() -> Result<()> {
    let mut c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let n = c.start_joining_node()?;
    let ports = c.node(n).ports.clone();
    let (st, v) = post_json(
        &c.addr(2),
        "/v1/cluster/add-learner",
        &json!({
            "number": n,
            "sync": format!("127.0.0.1:{}", ports.sync),
            "publish": format!("127.0.0.1:{}", ports.publish),
            "zone": "dc9",
            "replica": true,
        }),
    )?;
    assert_eq!(st, 200, "{v}");
    let me = v["nodes"].as_array().unwrap().iter().find(|x| x["number"] == n).cloned().unwrap();
    assert_eq!((me["role"].as_str(), me["zone"].as_str()), (Some("replica"), Some("dc9")), "{me}");
    // Every node, the replica included, knows its zone from the membership.
    eventually(Duration::from_secs(10), || {
        for addr in [c.addr(1), c.addr(3), c.addr(n)] {
            let v = local_view(&addr)?;
            let x = v["nodes"].as_array().unwrap().iter().find(|x| x["number"] == n).cloned();
            if x.as_ref().map(|x| (x["zone"].clone(), x["replica"].clone()))
                != Some((json!("dc9"), json!(true)))
            {
                bail!("{addr}: {v}");
            }
        }
        Ok(())
    })?;
    // A bad zone is refused before anything is proposed.
    let (st, v) = post_json(
        &c.addr(leader),
        "/v1/cluster/add-learner",
        &json!({"number": 9, "sync": "127.0.0.1:1", "publish": "127.0.0.1:2", "zone": "a b"}),
    )?;
    assert_eq!((st, code(&v)), (400, "invalid_field"), "{v}");
    // Still a replica after a few hold-downs: the cluster never promotes it.
    std::thread::sleep(Duration::from_secs(3));
    let v = local_view(&c.addr(c.wait_leader(Duration::from_secs(10))?))?;
    let x = v["nodes"].as_array().unwrap().iter().find(|x| x["number"] == n).cloned().unwrap();
    assert_eq!(x["role"], "replica", "{v}");
    Ok(())
}

/// A raw gateway Hello on `addr`: the refusal code of the first frame, or
/// None when the session opened.
async fn hello_code(addr: &str, uid: &str, sid: u64) -> Result<Option<String>> {
    use herald_proto::v1 as pb;
    let mut c = pb::gateway_client::GatewayClient::connect(format!("http://{addr}")).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let h = pb::Hello { uid: uid.into(), token: token(uid), client: "web".into(), sid };
    tx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Hello(h)) }).await?;
    let mut frames = c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    Ok(match tokio::time::timeout(Duration::from_secs(10), frames.message()).await {
        Ok(Ok(Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Error(e)) }))) => {
            Some(e.code)
        }
        Ok(Ok(Some(_))) => None,
        other => bail!("no answer to the Hello: {other:?}"),
    })
}

/// A login on the gateway of the remote replica reads nothing from the
/// leader (issue 16): the sid-owner check is part of the login's apply, so
/// opening a session makes no ReadIndex round trip across the WAN (the
/// replica's `read_index_rpcs` counter stays put, while one linearizable
/// query there moves it); the user's offline messages, stored through dc1,
/// are delivered by the replica from its own state, in order; a Hello
/// naming a sid another user holds is still refused with `sid_taken` and
/// leaves the sid with its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_on_the_remote_replica_reads_nothing_from_the_leader() -> Result<()> {
    use herald_client::session::{Session, SessionConfig, SessionEvent};
    let z = tokio::task::block_in_place(|| start_zoned("fail"))?;
    let c = &z.c;
    let replica = c.addr(REPLICA);
    tokio::task::block_in_place(|| -> Result<()> {
        let leader = c.wait_leader(Duration::from_secs(20))?;
        wait_replica(c, leader)?;
        let l = c.addr(leader);
        phase("three messages stored for offline zu1 through the leader; zu0 holds sid 4242");
        for i in 0..3 {
            let body = json!({"idempotency_key": format!("z{i}"), "from": "app", "to": ["zu1"], "body": format!("m{i}")});
            let (st, v) = post_json(&l, "/v1/messages", &body)?;
            assert_eq!((st, v["recipients"][0]["outcome"].as_str()), (200, Some("stored")), "{v}");
        }
        let rev = push(&l, vec![login_event("zu0", 4242, "web", "here")])?;
        // The replica has applied all of it before the logins begin.
        let (st, v) =
            query_with(&replica, "zu0", json!({"consistency": "local", "min_revision": rev}))?;
        assert_eq!(st, 200, "{v}");
        Ok(())
    })?;
    let before =
        tokio::task::block_in_place(|| metric(&replica, "herald_read_index_rpcs_total"))? as u64;

    phase("zu1 logs in on the replica: its 3 messages come, in order");
    let mut cfg = SessionConfig::new(vec![replica.clone()], "zu1", token("zu1"));
    cfg.client = "web".into();
    let mut s = Session::connect(cfg).await?;
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while bodies.len() < 3 {
        match tokio::time::timeout_at(deadline, s.recv()).await {
            Ok(Some(SessionEvent::Connected { node, queued, .. })) => {
                assert_eq!((node, queued), (REPLICA, 3), "the dc2 gateway, 3 waiting");
            }
            Ok(Some(SessionEvent::Message(m))) => {
                assert_eq!(m.node, REPLICA);
                s.ack(vec![m.id]).await;
                bodies.push(String::from_utf8_lossy(&m.body).into_owned());
            }
            other => bail!("session on the replica: {other:?} after {bodies:?}"),
        }
    }
    assert_eq!(bodies, ["m0", "m1", "m2"]);

    phase("a Hello with zu0's sid is refused on the replica");
    assert_eq!(hello_code(&replica, "zu2", 4242).await?.as_deref(), Some("sid_taken"));
    assert_eq!(hello_code(&replica, "zu0", 4242).await?, None, "the owner's own sid opens");
    let after =
        tokio::task::block_in_place(|| metric(&replica, "herald_read_index_rpcs_total"))? as u64;
    assert_eq!(after, before, "no ReadIndex round trip for logins on the replica");
    tokio::task::block_in_place(|| -> Result<()> {
        let v = query(&replica, &["zu2".into()], "linearizable")?;
        let users = v["users"].as_array().cloned().unwrap_or_default();
        assert!(
            !users.iter().any(|u| u["uid"] == "zu2" && u["online"] == true),
            "zu2 did not come online: {v}"
        );
        let (_, v) = get_json(&replica, "/v1/presence?sid=4242")?;
        assert_eq!(v["users"][0]["uid"], "zu0", "{v}");
        // The counter can move: a linearizable read on the replica asks the leader.
        assert!(metric(&replica, "herald_read_index_rpcs_total")? as u64 > before);
        Ok(())
    })?;
    drop(s);
    Ok(())
}

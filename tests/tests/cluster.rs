//! Real-process cluster tests: formation from XML, replication, failover,
//! restart and membership. Each starts its own heraldd processes on free
//! ports in a temp dir.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use herald_tests::*;
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(20);

/// POSTs an admin call until it answers 200, riding out transient answers
/// (leadership moving to the numbered master, a membership change still in
/// progress); returns the last answer.
fn admin(addr: &str, path: &str, body: Value) -> Result<Value> {
    eventually(Duration::from_secs(15), || {
        let (st, v) = post_json(addr, path, &body)?;
        if st != 200 {
            bail!("{path} → {st}: {v}");
        }
        Ok(v)
    })
}

/// Pushes `n` single-event logins `prefix0..n` through `addr` from `threads`
/// concurrent clients; returns how many were acknowledged.
fn push_logins(addr: &str, prefix: &str, n: usize, threads: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (next, acked, addr, prefix) =
                (next.clone(), acked.clone(), addr.to_string(), prefix.to_string());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let uid = format!("{prefix}{i}");
                match push(&addr, vec![login_event(&uid, 100_000 + i as u64, "mobile", &uid)]) {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("login {uid} failed: {e}"),
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    acked.load(Ordering::SeqCst)
}

fn uids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Three nodes started from XML with empty data dirs form one cluster: they
/// agree on one leader and every node lists three healthy voters.
#[test]
fn cluster_forms_from_xml() -> Result<()> {
    phase("start 3 nodes");
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    phase("check /v1/cluster on every node");
    let view = eventually(Duration::from_secs(10), || {
        let (st, v) = get_json(&c.addr(leader), "/v1/cluster")?;
        let healthy = v["nodes"]
            .as_array()
            .map(|a| a.iter().filter(|n| n["healthy"] == json!(true)).count())
            .unwrap_or(0);
        if st != 200 || healthy != 3 {
            bail!("not all healthy: {v}");
        }
        Ok(v)
    })?;
    assert_eq!(view["cluster"], "test");
    let roles: Vec<&str> =
        view["nodes"].as_array().unwrap().iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{view}");
    assert_eq!(roles.iter().filter(|r| **r == "follower").count(), 2, "{view}");
    for n in 1..=3 {
        let (_, v) = get_json(&c.addr(n), "/v1/cluster")?;
        assert_eq!(v["leader"], json!(leader), "node {n}: {v}");
        assert_eq!(v["node"], json!(n));
        assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    }
    Ok(())
}

/// 1,000 logins pushed concurrently through one follower are all visible in
/// one linearizable batch query through another node, and group commit puts
/// them into far fewer log entries than events.
#[test]
fn cluster_writes_via_follower_read_linearizable_elsewhere() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    phase("push 1000 logins through a follower");
    let (_, before) = get_json(&c.addr(leader), "/v1/cluster")?;
    let acked = push_logins(&c.addr(followers[0]), "u", 1000, 32);
    assert_eq!(acked, 1000);
    phase("linearizable query through the other follower");
    assert_all_online(&c.addr(followers[1]), &uids("u", 1000), "linearizable")?;
    phase("and through the leader, by GET");
    let (st, v) = get_json(&c.addr(leader), "/v1/presence?uid=u0&uid=u999&sid=100500&uid=nobody")?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["users"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["unknown"], json!(["nobody"]));
    let (_, after) = get_json(&c.addr(leader), "/v1/cluster")?;
    let entries =
        after["last_log_index"].as_u64().unwrap() - before["last_log_index"].as_u64().unwrap();
    eprintln!("1000 events in {entries} log entries");
    assert!(entries <= 1000, "no more entries than events");
    Ok(())
}

/// SIGKILL of the leader: a new leader is elected, writes and linearizable
/// reads continue; the killed node restarts from its data dir and catches
/// up, also past a snapshot (snapshot-logs is small here).
#[test]
fn cluster_leader_sigkill_failover_and_catch_up() -> Result<()> {
    let mut c = Cluster::start(3, Tuning { snapshot_logs: 50, ..Tuning::default() })?;
    let old = c.wait_leader(LEADER_WAIT)?;
    phase("writes before the kill");
    let survivor = (1..=3).find(|n| *n != old).unwrap();
    assert_eq!(push_logins(&c.addr(survivor), "a", 200, 8), 200);
    phase("SIGKILL the leader");
    c.node(old).kill9()?;
    let new = c.wait_leader(LEADER_WAIT)?;
    assert_ne!(new, old);
    phase("writes and reads continue");
    assert_eq!(push_logins(&c.addr(survivor), "b", 300, 8), 300);
    let mut all = uids("a", 200);
    all.extend(uids("b", 300));
    assert_all_online(&c.addr(survivor), &all, "linearizable")?;
    phase("restart the killed node from its data dir");
    c.node(old).start()?;
    let addr = c.addr(old);
    eventually(Duration::from_secs(30), || assert_all_online(&addr, &all, "local"))?;
    assert_all_online(&addr, &all, "linearizable")?;
    Ok(())
}

/// A whole-cluster stop (SIGKILL of every node) and start loses nothing
/// that was acknowledged.
#[test]
fn cluster_full_restart_loses_nothing_acknowledged() -> Result<()> {
    let mut c = Cluster::start(3, Tuning { snapshot_logs: 100, ..Tuning::default() })?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    phase("acknowledged writes");
    assert_eq!(push_logins(&c.addr(leader), "r", 500, 16), 500);
    phase("SIGKILL every node");
    for n in 1..=3 {
        c.node(n).kill9()?;
    }
    phase("start every node again");
    for n in 1..=3 {
        c.node(n).start()?;
    }
    let leader = c.wait_leader(LEADER_WAIT)?;
    let all = uids("r", 500);
    for n in 1..=3 {
        let addr = c.addr(n);
        eventually(Duration::from_secs(20), || assert_all_online(&addr, &all, "linearizable"))?;
    }
    phase("clean stop and start");
    for n in 1..=3 {
        c.node(n).stop()?;
    }
    for n in 1..=3 {
        c.node(n).start()?;
    }
    c.wait_leader(LEADER_WAIT)?;
    assert_all_online(&c.addr(leader), &all, "linearizable")?;
    Ok(())
}

/// A follower stops promptly on SIGTERM: the leader's append stream into
/// it (pipelined replication, a stream that never ends by itself) is ended
/// by the stop, so the sync port's graceful shutdown does not wait out its
/// 5 s bound for it (it did: every follower took 5 s to stop). The node
/// comes back and catches up.
#[test]
fn cluster_follower_stops_without_waiting_for_the_append_stream() -> Result<()> {
    let mut c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    assert_eq!(push_logins(&c.addr(leader), "s", 50, 4), 50);
    let f = (1..=3).find(|n| *n != leader).expect("a follower");
    phase("SIGTERM a follower that the leader is streaming appends to");
    let t0 = Instant::now();
    c.node(f).stop()?;
    let took = t0.elapsed();
    eprintln!("follower {f} stopped in {took:?}");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}: the 5 s grace was waited out");
    c.node(f).start()?;
    let all = uids("s", 50);
    let addr = c.addr(f);
    eventually(Duration::from_secs(20), || assert_all_online(&addr, &all, "linearizable"))?;
    Ok(())
}

/// A node started with join="true" is added as a learner through a
/// follower's admin API, catches up, is promoted to voter, and then serves
/// linearizable queries; removing it shrinks the membership again.
#[test]
fn cluster_learner_add_promote_serves_queries() -> Result<()> {
    let mut c = Cluster::start(3, Tuning { snapshot_logs: 50, ..Tuning::default() })?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    assert_eq!(push_logins(&c.addr(leader), "m", 300, 8), 300);
    phase("start node 4 with join=true");
    let n4 = c.start_joining_node()?;
    let p = c.nodes.iter().find(|n| n.number == n4).unwrap().ports.clone();
    phase("add-learner through a follower");
    let v = admin(
        &c.addr(follower),
        "/v1/cluster/add-learner",
        json!({"number": n4, "sync": format!("127.0.0.1:{}", p.sync), "publish": format!("127.0.0.1:{}", p.publish)}),
    )?;
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["number"] == json!(n4) && n["role"] == "learner"),
        "{v}"
    );
    phase("promote");
    admin(&c.addr(leader), "/v1/cluster/promote", json!({"number": n4}))?;
    let (_, view) = get_json(&c.addr(leader), "/v1/cluster")?;
    assert!(
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["number"] == json!(n4) && n["role"] == "follower"),
        "{view}"
    );
    phase("node 4 serves linearizable queries");
    let addr4 = c.addr(n4);
    eventually(Duration::from_secs(20), || {
        assert_all_online(&addr4, &uids("m", 300), "linearizable")
    })?;
    assert_eq!(push_logins(&addr4, "n", 50, 4), 50);
    assert_all_online(&c.addr(leader), &uids("n", 50), "linearizable")?;
    phase("unknown node is refused; remove node 4");
    let (st, v) = post_json(&c.addr(leader), "/v1/cluster/promote", &json!({"number": 99}))?;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("unknown_node")), "{v}");
    let v = admin(&c.addr(leader), "/v1/cluster/remove", json!({"number": n4}))?;
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3, "{v}");
    Ok(())
}

/// transfer-leader to the node that already leads is a no-op answer, and
/// the lone node keeps taking writes afterwards (it used to answer every
/// write 503 `not_leader` until restarted); to a node that is not a member,
/// a 4xx with a stable code and nothing changes.
#[test]
fn cluster_transfer_leader_to_self_is_a_noop() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(1);
    let (st, v) = post_json(&a, "/v1/cluster/transfer-leader", &json!({"number": 1}))?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["leader"], json!(1), "{v}");
    // Writes go on at once (a bounded retry only rides out slow CI).
    let rev = eventually(Duration::from_secs(3), || {
        push(&a, vec![login_event("after-transfer", 1, "mobile", "x")])
    })?;
    assert!(rev > 0);
    let (st, v) = post_json(&a, "/v1/cluster/transfer-leader", &json!({"number": 9}))?;
    assert_eq!((st, v["error"]["code"].clone()), (404, json!("unknown_node")), "{v}");
    assert_eq!(local_view(&a)?["leader"], json!(1));
    Ok(())
}

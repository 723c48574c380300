//! Smoke runs of `herald bench` against a real 3-node cluster: seconds,
//! tiny N, so that the benchmark cannot rot. The figures are not checked,
//! only that the runs complete without errors and report what they should.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use herald_tests::{eventually, heraldd_path, phase, Cluster, Tuning, TEST_API_KEY};
use serde_json::Value;

/// The `herald` CLI, built beside `heraldd` (`cargo build --workspace --bins`).
fn herald_path() -> PathBuf {
    let p = heraldd_path().with_file_name("herald");
    assert!(p.exists(), "{} not found: run `cargo build --workspace --bins` first", p.display());
    p
}

/// Runs `herald --node <addr> bench <args> --json` and parses its output.
fn bench(addr: &str, args: &[&str]) -> Result<Value> {
    let out = Command::new(herald_path())
        .arg("--node")
        .arg(addr)
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("HERALD_API_KEY", TEST_API_KEY)
        .output()
        .context("run herald bench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "herald bench {args:?} failed ({}):\n{}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_str(&stdout).with_context(|| format!("bench output is not JSON:\n{stdout}"))
}

/// Every result ran operations without a single error.
fn assert_clean(v: &Value) -> &Vec<Value> {
    let results = v["results"].as_array().expect("results array");
    assert!(!results.is_empty(), "{v:#}");
    for r in results {
        assert!(r["ops"].as_u64().unwrap_or(0) > 0, "no operations: {r:#}");
        assert_eq!(r["errors"].as_u64(), Some(0), "errors: {r:#}");
    }
    results
}

/// `bench presence-write` against a 3-node cluster commits writes with no
/// errors, reports throughput and ordered percentiles, and finds the three
/// local heraldd processes with their memory.
#[test]
fn bench_smoke_presence_write() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench presence-write");
    let v = bench(
        &c.addr(leader),
        &["presence-write", "--users", "200", "--clients", "4", "--duration", "2s"],
    )?;
    let results = assert_clean(&v);
    let r = &results[0];
    assert_eq!((r["workload"].as_str(), r["clients"].as_u64()), (Some("presence-write"), Some(4)));
    assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    let l = &r["latency"];
    let (p50, p99, p999) = (
        l["p50_ms"].as_f64().unwrap(),
        l["p99_ms"].as_f64().unwrap(),
        l["p999_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{l}");
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{r:#}");
    for n in nodes {
        assert!(
            n["pid"].as_u64().is_some() && n["peak_rss_bytes"].as_u64().unwrap_or(0) > 0,
            "node memory: {n}"
        );
    }
    Ok(())
}

/// `bench batch-query` (after its preload) and `bench mixed` answer every
/// query in full, from a follower and from the leader, linearizable and
/// local; batched writes count events, not requests.
#[test]
fn bench_smoke_query_and_mixed() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench batch-query");
    let v = bench(
        &c.addr(leader),
        &["batch-query", "--users", "500", "--ids", "100", "--clients", "2", "--duration", "1s"],
    )?;
    let results = assert_clean(&v);
    // load + follower/leader × linearizable/local
    assert_eq!(results.len(), 5, "{v:#}");
    assert_eq!(results[0]["workload"], "load");
    for r in &results[1..] {
        let ids_per_s = r["items_per_s"].as_f64().unwrap();
        assert!((ids_per_s / r["ops_per_s"].as_f64().unwrap() - 100.0).abs() < 1e-6, "{r:#}");
    }
    phase("bench mixed, batched writes");
    let v = bench(
        &c.addr(leader),
        &[
            "mixed",
            "--users",
            "500",
            "--ids",
            "50",
            "--clients",
            "4",
            "--duration",
            "1s",
            "--batch",
            "10",
            "--no-preload",
        ],
    )?;
    let r = &assert_clean(&v)[0];
    assert_eq!(r["read_percent"].as_u64(), Some(90), "{r:#}");
    Ok(())
}

/// `bench failover` SIGKILLs the leader it finds by its port and reports
/// when writes succeeded again through the followers, and when the numbered
/// master (node 2, the lowest survivor) was back.
#[test]
fn bench_smoke_failover() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    // Let the numbered master settle on node 1 first.
    let leader =
        eventually(Duration::from_secs(20), || match c.wait_leader(Duration::from_secs(20))? {
            1 => Ok(1),
            l => bail!("leader is {l}"),
        })?;
    let follower = c.nodes.iter().map(|n| n.number).find(|n| *n != leader).unwrap();
    phase("bench failover");
    let v = bench(
        &c.addr(follower),
        &["failover", "--users", "200", "--clients", "2", "--warmup", "1s", "--duration", "3s"],
    )?;
    let r = &v["results"][0];
    assert!(r["ops"].as_u64().unwrap() > 0, "{r:#}");
    let ms = r["failover_ms"]
        .as_f64()
        .with_context(|| format!("no successful write after the kill: {r:#}"))?;
    assert!(ms > 0.0 && ms < 3000.0, "{r:#}");
    let back =
        r["master_back_ms"].as_f64().with_context(|| format!("numbered master not back: {r:#}"))?;
    assert!(back > 0.0 && back < 13_000.0, "{r:#}");
    // The bench killed the leader behind the harness's back; dropping the
    // cluster reaps it.
    Ok(())
}

/// The measures of a newer workload's result, by name.
fn measure(r: &Value, name: &str) -> Option<f64> {
    r["measures"].as_array()?.iter().find(|m| m["name"] == name)?["value"].as_f64()
}

/// `bench stream` pushes batches through 1 and 2 PushEventsStream
/// connections with a window of 4: every combination is a row with
/// answered batches, events counted per batch, ordered percentiles, and
/// its setting named.
#[test]
fn bench_smoke_stream() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench stream");
    let v = bench(
        &c.addr(leader),
        &[
            "stream",
            "--users",
            "400",
            "--batch",
            "20",
            "--streams",
            "1,2",
            "--window",
            "4",
            "--duration",
            "1s",
        ],
    )?;
    let results = assert_clean(&v);
    assert_eq!(results.len(), 2, "{v:#}");
    for (r, s) in results.iter().zip([1, 2]) {
        assert_eq!(r["setting"], format!("streams={s} window=4"), "{r:#}");
        let (ops, items) = (r["ops_per_s"].as_f64().unwrap(), r["items_per_s"].as_f64().unwrap());
        assert!((items / ops - 20.0).abs() < 1e-6, "{r:#}");
        let l = &r["latency"];
        assert!(0.0 < l["p50_ms"].as_f64().unwrap(), "{l}");
        assert!(l["p50_ms"].as_f64() <= l["p99_ms"].as_f64(), "{l}");
    }
    Ok(())
}

/// `bench watch` opens 40 watchers of 10 uids each (4 per connection, over
/// the three nodes) and 0 watchers, under 4 writers: with watchers, changes
/// are delivered and every frame matches an acknowledged write with a
/// commit-to-delivery latency; without, nothing is delivered; both report
/// the nodes' CPU per applied entry.
#[test]
fn bench_smoke_watch() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench watch");
    let v = bench(
        &c.addr(leader),
        &[
            "watch",
            "--users",
            "200",
            "--watchers",
            "40,0",
            "--watch-ids",
            "10",
            "--watches-per-conn",
            "4",
            "--clients",
            "4",
            "--duration",
            "1s",
        ],
    )?;
    let results = v["results"].as_array().context("results")?;
    assert_eq!(results.len(), 2, "{v:#}");
    let (with, without) = (&results[0], &results[1]);
    assert_eq!(with["setting"], "watchers=40 ids=10 per-conn=4", "{with:#}");
    assert_eq!(measure(with, "watchers open"), Some(40.0), "{with:#}");
    assert_eq!(measure(with, "connections"), Some(10.0), "{with:#}");
    assert!(with["ops"].as_u64().unwrap_or(0) > 0, "nothing delivered: {with:#}");
    assert_eq!(with["errors"].as_u64(), Some(0), "{with:#}");
    assert_eq!(measure(with, "frames without a matching write"), Some(0.0), "{with:#}");
    let l = &with["latency"];
    assert!(
        l["count"].as_u64().unwrap_or(0) > 0 && l["p50_ms"].as_f64() <= l["p99_ms"].as_f64(),
        "{l}"
    );
    assert_eq!(without["ops"].as_u64(), Some(0), "{without:#}");
    for r in results {
        assert!(
            measure(r, "node CPU per applied entry (µs, per node)").is_some_and(|c| c > 0.0),
            "{r:#}"
        );
    }
    Ok(())
}

/// `bench heartbeat` opens 200 sessions on a follower, every one answers
/// its heartbeats, the node's CPU and RssAnon per session are reported,
/// and heartbeats append nothing to the Raft log.
#[test]
fn bench_smoke_heartbeat() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench heartbeat");
    let v = bench(
        &c.addr(leader),
        &[
            "heartbeat",
            "--sessions",
            "200",
            "--heartbeat-every",
            "200ms",
            "--duration",
            "2s",
            "--auth-key",
            herald_tests::TEST_AUTH_KEY,
        ],
    )?;
    let r = &assert_clean(&v)[0];
    assert_eq!(measure(r, "sessions open"), Some(200.0), "{r:#}");
    // 200 sessions × 5/s for 2 s, minus ticks lost to scheduling.
    let hb = measure(r, "heartbeats/s").unwrap();
    assert!(hb > 500.0 && hb < 1_200.0, "{r:#}");
    assert_eq!(measure(r, "log entries while heartbeating"), Some(0.0), "{r:#}");
    assert!(measure(r, "log entries opening sessions").unwrap() > 0.0, "logins are writes: {r:#}");
    assert!(measure(r, "node CPU (cores)").unwrap() > 0.0, "{r:#}");
    assert!(measure(r, "RssAnon per session (B)").is_some(), "{r:#}");
    Ok(())
}

/// `bench messages` runs both paths without an error: online sends are
/// answered "delivered" (the recipient's session acknowledged them),
/// offline ones "stored", and every offline recipient then logs in and
/// drains its messages.
#[test]
fn bench_smoke_messages() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench messages");
    let v = bench(
        &c.addr(leader),
        &[
            "messages",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--auth-key",
            herald_tests::TEST_AUTH_KEY,
        ],
    )?;
    let results = assert_clean(&v);
    assert_eq!(results.len(), 2, "{v:#}");
    assert_eq!(
        (results[0]["setting"].as_str(), results[1]["setting"].as_str()),
        (Some("path=online"), Some("path=offline"))
    );
    let off = &results[1];
    let recipients = measure(off, "recipients").unwrap();
    assert!((1.0..=2.0 * 64.0).contains(&recipients), "{off:#}");
    assert!(measure(off, "drained msgs/s").unwrap() > 0.0, "{off:#}");
    Ok(())
}

/// `bench restart` SIGTERMs a follower after loading users, starts it
/// again from its own command line, and times it until a linearizable
/// query there sees the users; the restarted process serves afterwards.
#[test]
fn bench_smoke_restart() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    phase("bench restart");
    let v = bench(&c.addr(leader), &["restart", "--users", "3000"])?;
    let r = &v["results"][1];
    let pid = r["restarted_pid"].as_u64().with_context(|| format!("no restarted pid: {v:#}"))?;
    // The bench started it behind the harness's back: stop it at the end.
    struct Reap(u64);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg("-KILL").arg(self.0.to_string()).status();
        }
    }
    let _reap = Reap(pid);
    assert_eq!(v["results"][0]["workload"], "load", "{v:#}");
    assert_eq!((r["workload"].as_str(), r["via"].as_str()), (Some("restart"), Some("follower")));
    let serve = measure(r, "start → serving ms").unwrap();
    assert!(serve > 0.0 && serve < 60_000.0, "{r:#}");
    assert!(measure(r, "SIGTERM → exit ms").unwrap() > 0.0, "{r:#}");
    let restarted =
        c.nodes.iter().find(|n| n.pid().is_some_and(|p| !herald_alive(p))).map(|n| n.number);
    let number = restarted.with_context(|| format!("no node was stopped: {v:#}"))?;
    let q = herald_tests::query(&c.addr(number), &["u2999".to_string()], "linearizable")?;
    assert_eq!(q["users"].as_array().map(|a| a.len()), Some(1), "{q}");
    Ok(())
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn herald_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !matches!(
                s.rsplit(')').next().and_then(|r| r.split_whitespace().next()),
                Some("Z" | "X")
            )
        })
        .unwrap_or(false)
}

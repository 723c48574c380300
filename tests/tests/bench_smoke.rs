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

//! Deployment (issue 16, docs/deploy-zones.md): the guide's layouts are
//! valid XML, the shipped systemd unit is valid for systemd and names real
//! heraldd flags, and the rolling upgrade
//! of the guide — one node at a time, graceful stop, start on the same data
//! dir, wait until caught up, the leader last after a leadership transfer —
//! keeps a 3-node cluster taking writes and loses none acknowledged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use herald_tests::*;
use serde_json::json;

const LEADER_WAIT: Duration = Duration::from_secs(20);
/// Where the unit expects the binary (and its install comment puts it).
const UNIT_BIN: &str = "/usr/local/bin/heraldd";
/// Writer threads of the background load: enough to keep every node busy
/// with forwards, few enough for a shared 2-core machine.
const WRITERS: usize = 4;
/// Longest time without any acknowledged write allowed during the rolling
/// restart. A follower's restart should cost nothing (the writers move to
/// another node at the first refused connection); the leader's is a
/// transfer (one election, ~0.6 s with the test tuning) plus a debug build
/// on a loaded machine.
const MAX_ACK_GAP: Duration = Duration::from_secs(5);
/// After a node is caught up again, errors may still trail for this long
/// (a write that left for the stopped node just before it came back).
const ERROR_SLACK: Duration = Duration::from_secs(2);
/// The most uids one verification query names (under `max-ids-per-query`).
const QUERY_CHUNK: usize = 5000;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/systemd/heraldd.service")
}

/// Runs `systemd-analyze verify` on `unit`: (exit status, stderr).
fn verify(unit: &Path) -> Result<(std::process::ExitStatus, String)> {
    let out = Command::new("systemd-analyze").arg("verify").arg(unit).output().context(
        "systemd-analyze not found: install package systemd (scripts/setup-test-deps does)",
    )?;
    Ok((out.status, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// The lines of `stderr` that are about the unit named `name`.
fn unit_warnings(stderr: &str, name: &str) -> Vec<String> {
    stderr.lines().filter(|l| l.contains(name)).map(str::to_string).collect()
}

/// conf/systemd/heraldd.service passes `systemd-analyze verify` (systemd
/// 252) with no warning about the unit (its ExecStart pointed at the
/// heraldd under test, since verify needs the binary to exist), while a
/// copy with a misspelt directive does get one — so the check sees bad
/// units. The unit's ExecStartPre and ExecStart are real heraldd command
/// lines: run against a real node file, the check one exits 0.
#[test]
fn deploy_systemd_unit_verifies() -> Result<()> {
    let text = std::fs::read_to_string(unit_path())?;
    ensure!(text.contains(&format!("ExecStart={UNIT_BIN} ")), "unit does not start {UNIT_BIN}");
    let heraldd = heraldd_path();
    let dir = tempfile::Builder::new().prefix("herald-unit-").tempdir()?;

    phase("systemd-analyze verify on the unit");
    let unit = dir.path().join("heraldd.service");
    std::fs::write(&unit, text.replace(UNIT_BIN, &heraldd.display().to_string()))?;
    let (st, stderr) = verify(&unit)?;
    assert!(st.success(), "verify failed ({st}):\n{stderr}");
    let warned = unit_warnings(&stderr, "heraldd.service");
    assert!(warned.is_empty(), "warnings about the unit:\n{}", warned.join("\n"));

    phase("a misspelt directive is reported");
    let bad = dir.path().join("heraldd-bad.service");
    std::fs::write(
        &bad,
        text.replace(UNIT_BIN, &heraldd.display().to_string())
            .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    )?;
    let (_, stderr) = verify(&bad)?;
    assert!(
        !unit_warnings(&stderr, "heraldd-bad.service").is_empty(),
        "verify said nothing of an unknown key:\n{stderr}"
    );

    phase("the unit's heraldd command lines parse");
    let c = Cluster::configure(1, Tuning::default())?;
    let config = c.nodes[0].config.display().to_string();
    for key in ["ExecStartPre=", "ExecStart="] {
        let line =
            text.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} line"))?;
        let args: Vec<String> = line[key.len()..]
            .split_whitespace()
            .skip(1)
            .map(|a| if a == "/etc/herald/heraldd.xml" { config.clone() } else { a.to_string() })
            .collect();
        // ExecStart would run the node: add --check so it parses and exits.
        let mut args = args;
        if !args.iter().any(|a| a == "--check") {
            args.push("--check".into());
        }
        let out = Command::new(&heraldd).args(&args).output()?;
        assert!(
            out.status.success(),
            "{key}: heraldd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `<servers>` XML of the guide's three layouts, in order (A, B, C).
fn guide_layouts() -> Result<Vec<String>> {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy-zones.md");
    let text = std::fs::read_to_string(guide)?;
    Ok(text
        .split("```xml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(String::from)
        .collect())
}

/// Runs `heraldd --check` on a node file made of `body` (node 1's): Ok,
/// or the error it printed.
fn check_layout(dir: &Path, name: &str, body: &str) -> Result<std::result::Result<(), String>> {
    let file = dir.join(format!("{name}.xml"));
    let data = dir.join(name);
    std::fs::write(
        &file,
        format!(
            "<herald cluster=\"guide\">\n  <node number=\"1\" data-dir=\"{}\"/>\n{body}</herald>\n",
            data.display()
        ),
    )?;
    let out = Command::new(heraldd_path()).arg("--check").arg("--config").arg(&file).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    Ok(if out.status.success() {
        Ok(())
    } else {
        Err(err.lines().find(|l| l.starts_with("Error")).unwrap_or(&err).to_string())
    })
}

/// The three layouts of docs/deploy-zones.md are valid heraldd XML as
/// printed (each as node 1's file), B and C with `zone-survival="true"`;
/// and layout A is refused once `zone-survival="true"` is added, as the
/// guide says (losing dc1 leaves no voter).
#[test]
fn deploy_guide_layouts_are_valid_xml() -> Result<()> {
    let layouts = guide_layouts()?;
    assert_eq!(layouts.len(), 3, "the guide should show layouts A, B and C");
    let dir = tempfile::Builder::new().prefix("herald-guide-").tempdir()?;
    for (name, body) in ["a", "b", "c"].iter().zip(&layouts) {
        if let Err(e) = check_layout(dir.path(), name, body)? {
            panic!("layout {name} refused: {e}\n{body}");
        }
    }
    for (name, body) in ["b", "c"].iter().zip(&layouts[1..]) {
        assert!(body.contains("<servers zone-survival=\"true\">"), "layout {name}: {body}");
    }
    let a = layouts[0].replace("<servers>", "<servers zone-survival=\"true\">");
    ensure!(a != layouts[0], "layout A has no plain <servers>");
    let refused = check_layout(dir.path(), "a-survival", &a)?;
    let err = refused.expect_err("layout A with zone-survival must be refused");
    assert!(err.contains("zone-survival") && err.contains("dc1"), "{err}");
    Ok(())
}

/// What the background writers saw.
#[derive(Default)]
struct Load {
    /// Acknowledged writes: when, and the uid (its value is the uid too).
    acked: Vec<(Instant, String)>,
    /// Failed writes (outcome unknown): when, through which node, why.
    errors: Vec<(Instant, String, String)>,
}

/// Starts `WRITERS` threads that log in a fresh uid per write, each on one
/// node until a write fails there, then on the next; they stop with `stop`.
fn start_load(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    load: Arc<Mutex<Load>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|t| {
            let (addrs, stop, load) = (addrs.clone(), stop.clone(), load.clone());
            std::thread::spawn(move || {
                let mut node = t % addrs.len();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let uid = format!("w{t}-{i}");
                    let sid = (t as u64 + 1) * 1_000_000 + i;
                    i += 1;
                    match push(&addrs[node], vec![login_event(&uid, sid, "web", &uid)]) {
                        Ok(_) => load.lock().unwrap().acked.push((Instant::now(), uid)),
                        Err(e) => {
                            load.lock().unwrap().errors.push((
                                Instant::now(),
                                addrs[node].clone(),
                                e.to_string(),
                            ));
                            node = (node + 1) % addrs.len();
                            // A refused connection fails at once: do not spin.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect()
}

/// The rolling upgrade of docs/deploy-zones.md on a 3-node cluster under
/// continuous write load (4 writers, one login each per request, every
/// acknowledged uid recorded): each follower in turn is stopped with
/// SIGTERM, started again on its data dir and waited for until caught up
/// (the leader sees it healthy and it applied the leader's commit index);
/// then leadership is transferred away and the old leader goes the same
/// way. Afterwards every acknowledged write is read back linearizably
/// through every node; writes were acknowledged during every restart, the
/// load never went more than `MAX_ACK_GAP` without an acknowledgement, and
/// every failed write happened while a node was being restarted.
#[test]
fn deploy_rolling_restart_under_load_loses_nothing() -> Result<()> {
    let mut c = Cluster::start(3, Tuning { prefer_lowest: false, ..Tuning::default() })?;
    let first_leader = c.wait_leader(LEADER_WAIT)?;
    let addrs: Vec<String> = (1..=3).map(|n| c.addr(n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));

    phase("write load");
    let writers = start_load(addrs, stop.clone(), load.clone());
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();

    // Followers first, the leader last.
    let mut order: Vec<u64> = (1..=3).filter(|n| *n != first_leader).collect();
    order.push(first_leader);
    // (node, window start, caught up at)
    let mut windows: Vec<(u64, Instant, Instant)> = Vec::new();
    for n in order {
        let from = Instant::now();
        let leader = c.wait_leader(LEADER_WAIT)?;
        if leader == n {
            let to = (1..=3).find(|x| *x != n).unwrap();
            phase(&format!("transfer leadership from {n} to {to}"));
            eventually(Duration::from_secs(15), || {
                let (st, v) =
                    post_json(&c.addr(n), "/v1/cluster/transfer-leader", &json!({ "number": to }))?;
                if st != 200 {
                    bail!("transfer-leader → {st}: {v}");
                }
                let now = c.wait_leader(Duration::from_secs(5))?;
                if now == n {
                    bail!("node {n} still leads");
                }
                Ok(())
            })?;
        }
        phase(&format!("restart node {n}"));
        c.node(n).stop()?;
        // The new binary would be put in place here.
        std::thread::sleep(Duration::from_millis(500));
        c.node(n).start()?;
        let index = c.wait_caught_up(n, Duration::from_secs(60))?;
        let done = Instant::now();
        eprintln!("node {n} caught up at index {index} after {:?}", done - from);
        windows.push((n, from, done));
        // Some load with the whole cluster up between two restarts.
        std::thread::sleep(Duration::from_secs(1));
    }
    let end = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer panicked");
    }

    let load = load.lock().unwrap();
    let total = load.acked.len();
    eprintln!(
        "rolling restart: {total} writes acknowledged, {} failed, in {:?}",
        load.errors.len(),
        end - start
    );
    phase("writes went on during every restart");
    for (n, from, done) in &windows {
        let during = load.acked.iter().filter(|(t, _)| t > from && t < done).count();
        let failed = load.errors.iter().filter(|(t, _, _)| t > from && t < done).count();
        eprintln!("node {n}: {during} acknowledged, {failed} failed in {:?}", *done - *from);
        assert!(during > 0, "no write acknowledged while node {n} restarted");
    }
    let mut times: Vec<Instant> =
        load.acked.iter().map(|(t, _)| *t).filter(|t| *t >= start).collect();
    times.sort();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(times.first().map(|t| *t - start))
        .max()
        .unwrap_or(end - start);
    eprintln!("longest time without an acknowledged write: {gap:?}");
    assert!(gap <= MAX_ACK_GAP, "writes stalled for {gap:?}\n{}", c.logs_tail());
    let stray: Vec<_> = load
        .errors
        .iter()
        .filter(|(t, _, _)| {
            !windows.iter().any(|(_, from, done)| t >= from && *t <= *done + ERROR_SLACK)
        })
        .collect();
    assert!(
        stray.is_empty(),
        "{} writes failed outside any restart, e.g. through {}: {}",
        stray.len(),
        stray[0].1,
        stray[0].2
    );

    phase("every acknowledged write is there, through every node");
    let uids: Vec<String> = load.acked.iter().map(|(_, u)| u.clone()).collect();
    for n in 1..=3 {
        let addr = c.addr(n);
        for chunk in uids.chunks(QUERY_CHUNK) {
            eventually(Duration::from_secs(10), || assert_all_online(&addr, chunk, "linearizable"))
                .with_context(|| format!("through node {n}"))?;
        }
    }
    Ok(())
}

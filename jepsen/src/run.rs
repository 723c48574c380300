//! One test run, end to end: preflight, hosts, cluster, workers + nemesis
//! schedule, heal, final reads, teardown, then history files, checkers and
//! report. Cleanup is guaranteed by drop guards (also on error and panic) and
//! a SIGINT/SIGTERM flag that ends the run early but orderly.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::checker::run_facts::{self, Shutdown};
use crate::checker::watch as watch_checker;
use crate::checker::{
    linear, master_clock, master_final, master_monotonic, master_report, master_term,
    outbox as outbox_checker, queue, Checkers, Results, ToJson, Verdict,
};
use crate::client::Api;
use crate::db::{self, Db, RaftParams};
use crate::history::{self, Op, Recorder};
use crate::nemesis::Nemesis;
use crate::schedule::{self, Action, Family};
use crate::workload::{master, messages, outbox, presence, watch, zone_reads, Workload};
use crate::{edn, netns, report};

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[derive(Clone, Debug)]
pub struct TestOpts {
    pub workload: Workload,
    pub nemesis: String,
    pub nodes: usize,
    pub time_limit: u64,
    pub concurrency: usize,
    pub seed: u64,
    pub interval: u64,
    pub ops_per_key: u64,
    pub rate: f64,
    pub timeout_ms: u64,
    pub recovery: u64,
    pub checker_time_limit: u64,
    /// `<master hold-down-ms>` written into every node's XML.
    pub hold_down_ms: u64,
    /// `<time tolerance-ms>` written into every node's XML.
    pub tolerance_ms: u64,
    /// Period of the master workload's status polls, per node.
    pub status_ms: u64,
    /// Messages workload: mailboxes (uids mbox0..), writer threads, target
    /// submissions per second over all writers, attempts per submission,
    /// and the time limit of the final drain.
    pub mailboxes: usize,
    pub msg_writers: usize,
    pub msg_rate: f64,
    pub msg_attempts: usize,
    pub drain_s: u64,
    /// `<raft snapshot-logs>` written into every node's XML.
    pub snapshot_logs: u64,
    /// Watch workload: watcher threads.
    pub watchers: usize,
    /// Zones, WAN proxies and zone reads (`--zones`, ...).
    pub zone: crate::zones::ZoneArgs,
    /// Outbox workload: modules (receivers), uids, writer threads, target
    /// updates per second, share of requests the receivers refuse.
    pub modules: usize,
    pub accounts: usize,
    pub outbox_writers: usize,
    pub outbox_rate: f64,
    pub refuse: f64,
    pub heraldd: PathBuf,
    pub store: PathBuf,
    pub no_setup: bool,
    pub command: String,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `heraldd` next to the running harness binary (cargo builds both into
/// the same target dir, wherever `CARGO_TARGET_DIR` points), else
/// `<workspace>/target/debug/heraldd`.
pub fn default_heraldd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("heraldd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| workspace_root().join("target/debug/heraldd"))
}

pub fn default_store() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.is_dir() {
        here.join("store")
    } else {
        PathBuf::from("store")
    }
}

/// UTC timestamp like 20261121T103500Z (the harness' wall clock is never faked).
pub fn utc_stamp(secs: u64) -> String {
    herald_proto::date::utc_basic(secs)
}

pub fn commit() -> String {
    let root = workspace_root();
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    let mut c = match head {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "none".to_string(),
    };
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output();
    if let Ok(o) = dirty {
        if o.status.success() && !o.stdout.is_empty() {
            c.push_str("+dirty");
        }
    }
    c
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn missing_tools(clock: bool) -> Vec<String> {
    let mut m: Vec<String> = ["ip", "iptables", "iptables-restore"]
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| t.to_string())
        .collect();
    if clock && db::find_faketime().is_none() {
        m.push("libfaketimeMT.so.1 (Debian package faketime)".into());
    }
    m
}

pub fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("setup.sh")
}

/// Root, tools (installed via jepsen/setup.sh when missing), heraldd.
pub fn preflight(opts: &TestOpts, clock: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("herald-jepsen test must run as root: it creates network namespaces (ip netns), veth pairs, iptables rules, and signals heraldd processes. Re-run as root (e.g. sudo).");
    }
    let mut missing = missing_tools(clock);
    if !missing.is_empty() && !opts.no_setup {
        let script = setup_script();
        eprintln!("missing {}: running {}", missing.join(", "), script.display());
        let st = std::process::Command::new("bash").arg(&script).status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!("warning: {} did not succeed ({st:?})", script.display());
        }
        missing = missing_tools(clock);
    }
    if !missing.is_empty() {
        bail!("cannot run: missing {}. Install with `bash {}` (apt-get install -y iproute2 iptables faketime).", missing.join(", "), setup_script().display());
    }
    if !opts.heraldd.is_file() {
        bail!("heraldd not found at {}: build it with `cargo build -p herald-node`, or pass --heraldd PATH", opts.heraldd.display());
    }
    Ok(())
}

/// Exclusive lock so two harness runs never clean up each other.
pub fn lock() -> Result<File> {
    let f = File::create("/run/herald-jepsen.lock").context("create /run/herald-jepsen.lock")?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another herald-jepsen run holds /run/herald-jepsen.lock");
    }
    Ok(f)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Deletes our namespaces (and what runs in them) when dropped.
struct NetGuard;

impl Drop for NetGuard {
    fn drop(&mut self) {
        match netns::cleanup() {
            Ok(_) => {}
            Err(e) => eprintln!("warning: cleanup failed: {e}; run `herald-jepsen cleanup`"),
        }
    }
}

fn sleep_until(t: Instant, mut tick: impl FnMut()) {
    while Instant::now() < t && !interrupted() {
        std::thread::sleep((t - Instant::now()).min(Duration::from_millis(200)));
        tick();
    }
}

fn log_tails(db: &Db, lines: usize) -> String {
    let mut s = String::new();
    for n in &db.nodes {
        let text = fs::read_to_string(&n.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        s.push_str(&format!("--- {} ({}) ---\n", n.name, n.log.display()));
        for l in tail.into_iter().rev() {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

/// Each live node's view (node index, leader number or None).
fn views(db: &Db) -> Vec<(usize, Option<u64>)> {
    let ips: Vec<(usize, String)> =
        (0..db.len()).filter(|&i| db.running(i)).map(|i| (i, db.nodes[i].ip.clone())).collect();
    netns::run_in(netns::CLIENT_NS, || {
        let api = Api::new(Duration::from_millis(1000));
        ips.iter().filter_map(|(i, ip)| api.cluster(ip).ok().map(|v| (*i, v.leader))).collect()
    })
    .unwrap_or_default()
}

/// Waits until every node (or, after `strict_for`, a majority) agrees on a leader.
fn wait_leader(db: &Db, strict_for: Duration, limit: Duration) -> Option<u64> {
    let start = Instant::now();
    while start.elapsed() < limit && !interrupted() {
        let v = views(db);
        let mut counts: std::collections::HashMap<u64, usize> = Default::default();
        for (_, l) in &v {
            if let Some(l) = l {
                *counts.entry(*l).or_default() += 1;
            }
        }
        if let Some((&l, &c)) = counts.iter().max_by_key(|(_, c)| **c) {
            let need = if start.elapsed() < strict_for { db.len() } else { db.len() / 2 + 1 };
            if c >= need {
                return Some(l);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

fn store_dir(store: &Path, workload: &str) -> Result<PathBuf> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let base = store.join(workload);
    let stamp = utc_stamp(now);
    let mut dir = base.join(&stamp);
    let mut k = 2;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{k}"));
        k += 1;
    }
    fs::create_dir_all(&dir)?;
    let latest = base.join("latest");
    let _ = fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(dir.file_name().unwrap(), &latest);
    Ok(dir)
}

/// Runs all requested workloads; returns the merged verdict.
pub fn test(opts: &TestOpts) -> Result<Verdict> {
    let families = Family::parse_list(&opts.nemesis)?;
    if opts.nodes == 0 || opts.nodes > 50 {
        bail!("--nodes must be 1..=50");
    }
    preflight(opts, families.contains(&Family::Clock))?;
    install_signal_handlers();
    let _lock = lock()?;
    test_one(opts, opts.workload, &families)
}

/// How long after healing the master may take to settle: the hold-down,
/// plus eight election timeouts (an election, a transfer attempt every
/// ~3 timeouts, a lost transfer), plus 5 s for restarted nodes to start and
/// catch up.
pub fn master_settle_ms(raft: &RaftParams) -> u64 {
    raft.master_hold_down_ms + 8 * raft.election_max_ms + 5000
}

/// How long after healing the clocks may take: the master's settle time,
/// 10 s, and 2.2× the largest clock fault of the run (cluster time never
/// goes back and backward corrections slew at half speed, so a clock B ms
/// ahead needs ~2·B ms to converge).
pub fn clock_settle_ms(raft: &RaftParams, largest_fault_ms: i64) -> u64 {
    master_settle_ms(raft) + 10_000 + (2.2 * largest_fault_ms.unsigned_abs() as f64) as u64
}

fn test_one(opts: &TestOpts, workload: Workload, families: &[Family]) -> Result<Verdict> {
    let n = opts.nodes;
    let raft = RaftParams {
        master_hold_down_ms: opts.hold_down_ms,
        time_tolerance_ms: opts.tolerance_ms.max(1),
        snapshot_logs: opts.snapshot_logs.max(1),
        zones: opts.zone.layout(),
        profile_sync_xml: if workload.includes(Workload::Outbox) {
            outbox::profile_sync_xml(opts.modules)
        } else {
            String::new()
        },
        ..RaftParams::default()
    };
    let with_presence = workload.includes(Workload::Presence);
    let with_master = workload.includes(Workload::Master);
    let with_messages = workload.includes(Workload::Messages);
    let with_watch = workload.includes(Workload::Watch);
    let with_outbox = workload.includes(Workload::Outbox);
    let dir = store_dir(&opts.store, workload.name())?;
    let steps =
        schedule::generate(opts.seed, families, n, opts.time_limit * 1000, opts.interval * 1000);
    let meta = json!({
        "workload": workload.name(),
        "nemesis": opts.nemesis,
        "families": families,
        "nodes": n,
        "time_limit": opts.time_limit,
        "concurrency": opts.concurrency,
        "seed": opts.seed,
        "interval": opts.interval,
        "ops_per_key": opts.ops_per_key,
        "rate": opts.rate,
        "timeout_ms": opts.timeout_ms,
        "status_ms": opts.status_ms,
        "sut_config": {
            "raft": {"snapshot_logs": raft.snapshot_logs, "heartbeat_ms": raft.heartbeat_ms, "election_min_ms": raft.election_min_ms, "election_max_ms": raft.election_max_ms, "write_timeout_ms": raft.write_timeout_ms},
            "time": {"interval_ms": raft.time_interval_ms, "tolerance_ms": raft.time_tolerance_ms, "samples": raft.time_samples},
            "master": {"prefer_lowest": raft.master_prefer_lowest, "hold_down_ms": raft.master_hold_down_ms},
            "gateway": {"heartbeat_ms": raft.gateway_heartbeat_ms, "heartbeat_misses": 3, "grace_ms": raft.gateway_grace_ms, "push_timeout_ms": raft.push_timeout_ms},
        },
        "messages": with_messages.then(|| json!({
            "mailboxes": opts.mailboxes, "writers": opts.msg_writers, "rate": opts.msg_rate,
            "attempts": opts.msg_attempts, "drain_s": opts.drain_s,
            "ack_probability": messages::ACK_PROBABILITY, "resubmit_probability": messages::RESUBMIT_PROBABILITY,
        })),
        "watch": with_watch.then(|| json!({
            "watchers": opts.watchers, "progress_ms": watch::PROGRESS_MS, "idle_ms": watch::IDLE.as_millis() as u64,
            "window_changes": db::WATCH_WINDOW_CHANGES,
        })),
        "zones": raft.zones.as_ref().map(|z| json!({
            "layout": z, "zone_read_share": opts.zone.zone_read_share,
            "answer_slack_ms": crate::checker::zone_reads::ANSWER_SLACK_MS,
        })),
        "outbox": with_outbox.then(|| json!({
            "modules": opts.modules, "accounts": opts.accounts, "writers": opts.outbox_writers,
            "rate": opts.outbox_rate, "refuse": opts.refuse,
        })),
        "commit": commit(),
        "command": opts.command,
        "heraldd": opts.heraldd.display().to_string(),
        "heraldd_built": fs::metadata(&opts.heraldd).ok().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| utc_stamp(d.as_secs())),
        "heraldd_bytes": fs::metadata(&opts.heraldd).map(|m| m.len()).unwrap_or(0),
        "started_at": utc_stamp(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()),
        "schedule": steps,
    });
    fs::write(dir.join("test.json"), serde_json::to_string_pretty(&meta)?)?;
    eprintln!("store: {}", dir.display());

    let removed = netns::cleanup()?;
    if !removed.is_empty() {
        eprintln!("cleared leftovers of an earlier run: {}", removed.join(", "));
    }
    let guard = NetGuard;
    for c in netns::setup_commands(n) {
        netns::run(&c)?;
    }
    netns::heal(n)?;

    let clock = families.contains(&Family::Clock);
    let faketime = if clock { db::find_faketime() } else { None };
    // Run a private copy, so that a rebuild of target/debug/heraldd during the
    // run cannot make restarted nodes run another build. Removed at the end.
    let bin = dir.join("heraldd.bin");
    fs::copy(&opts.heraldd, &bin).with_context(|| format!("copy {}", opts.heraldd.display()))?;
    let _bin_guard = RemoveOnDrop(bin.clone());
    let mut db = Db::new(&bin, &dir, n, &raft, faketime, Instant::now())?;
    if let Some(z) = &raft.zones {
        let wan = crate::zones::Wan::start(z, n)?;
        eprintln!(
            "zones: {} zones, {} WAN links at {} ± {} ms one way{}",
            z.zones,
            wan.len(),
            z.wan_ms,
            z.wan_jitter_ms,
            if z.replica { format!(", n{} a replica", n) } else { String::new() }
        );
        db.wan = Some(wan);
    }
    for i in 0..n {
        db.start(i)?;
    }
    eprintln!("waiting for {n} heraldd nodes to elect a leader...");
    if wait_leader(&db, Duration::from_secs(30), Duration::from_secs(60)).is_none() {
        let tails = log_tails(&db, 15);
        db.reap();
        bail!(
            "cluster did not elect a leader within 60 s (unexpected exits: {:?})\n{tails}",
            db.unexpected_exits
        );
    }

    // Main phase.
    let t0 = Instant::now();
    db.set_start(t0);
    let rec = Arc::new(Recorder::new(t0));
    let stop = Arc::new(AtomicBool::new(false));
    let nodes: Vec<(String, String)> =
        db.nodes.iter().map(|s| (s.name.clone(), s.ip.clone())).collect();
    let wopts = presence::Opts {
        concurrency: opts.concurrency,
        nodes: nodes.clone(),
        ops_per_key: opts.ops_per_key,
        rate: opts.rate,
        seed: opts.seed,
        timeout: Duration::from_millis(opts.timeout_ms),
        zone_reads: raft.zones.as_ref().filter(|_| opts.zone.zone_read_share > 0.0).map(|z| {
            zone_reads::ZoneReads::new(
                opts.zone.zone_read_share.min(1.0),
                z.max_staleness_ms,
                raft.time_tolerance_ms,
            )
        }),
    };
    let mopts = master::Opts {
        nodes: nodes.clone(),
        period: Duration::from_millis(opts.status_ms.max(10)),
        timeout: Duration::from_millis(1000),
        sntp_samples: 3,
    };
    let msgopts = messages::Opts {
        nodes: nodes.clone(),
        writers: opts.msg_writers.max(1),
        mailboxes: opts.mailboxes.max(1),
        rate: opts.msg_rate,
        seed: opts.seed,
        timeout: Duration::from_millis(opts.timeout_ms),
        attempts: opts.msg_attempts.max(1),
    };
    let watchopts = watch::Opts {
        nodes: nodes.clone(),
        watchers: opts.watchers.max(1),
        seed: opts.seed,
        timeout: Duration::from_millis(opts.timeout_ms),
    };
    let outopts = outbox::Opts {
        nodes: nodes.clone(),
        writers: opts.outbox_writers.max(1),
        modules: opts.modules.max(2),
        accounts: opts.accounts.max(1),
        rate: opts.outbox_rate,
        refuse: opts.refuse,
        seed: opts.seed,
        timeout: Duration::from_millis(opts.timeout_ms),
    };
    eprintln!(
        "running {} for {} s, nemesis {:?}",
        [
            with_presence.then(|| format!("{} presence workers", opts.concurrency)),
            with_master.then(|| format!("{n} status pollers (every {} ms)", opts.status_ms)),
            with_messages.then(|| format!(
                "{} message writers ({}/s) + {} mailbox consumers",
                msgopts.writers, msgopts.rate, msgopts.mailboxes
            )),
            with_watch.then(|| format!("{} watchers", watchopts.watchers)),
            with_outbox.then(|| format!(
                "{} profile writers ({}/s, {} accounts) + {} receivers",
                outopts.writers, outopts.rate, outopts.accounts, outopts.modules
            )),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + "),
        opts.time_limit,
        opts.nemesis
    );
    let mut workers = Vec::new();
    let mut shared = None;
    if with_presence {
        let (s, w) = presence::spawn(&wopts, rec.clone(), stop.clone());
        shared = Some(s);
        workers.extend(w);
    }
    if with_master {
        let all: Vec<usize> = (0..n).collect();
        workers.extend(master::spawn(&mopts, &all, rec.clone(), stop.clone()));
    }
    let mut watch_shared = None;
    if let (true, Some(keys)) = (with_watch, shared.as_ref()) {
        let (s, w) = watch::spawn(&watchopts, keys.clone(), rec.clone(), stop.clone());
        watch_shared = Some(s);
        workers.extend(w);
    }
    let mut msg_shared = None;
    if with_messages {
        let (s, w) = messages::spawn(&msgopts, rec.clone(), stop.clone());
        msg_shared = Some(s);
        workers.extend(w);
    }
    let receivers = if with_outbox {
        let r = outbox::Receivers::start(&outopts, rec.clone())?;
        workers.extend(outbox::spawn(&outopts, rec.clone(), stop.clone()));
        Some(r)
    } else {
        None
    };
    let end = t0 + Duration::from_secs(opts.time_limit);
    let mut nem = Nemesis::new(&mut db, &rec);
    for s in &steps {
        sleep_until(t0 + Duration::from_millis(s.at_ms), || nem.watch_crashes());
        if interrupted() || Instant::now() >= end {
            break;
        }
        match &s.action {
            Action::Start { fault } => {
                eprintln!("[{:>5.1}s] nemesis start {}", t0.elapsed().as_secs_f64(), fault.name());
                nem.start(fault)
            }
            Action::Stop => {
                eprintln!("[{:>5.1}s] nemesis stop", t0.elapsed().as_secs_f64());
                nem.stop()
            }
        }
    }
    sleep_until(end, || nem.watch_crashes());
    stop.store(true, Ordering::SeqCst);
    let mut worker_errors = Vec::new();
    for h in workers {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => worker_errors.push(e.to_string()),
            Err(_) => worker_errors.push("worker panicked".into()),
        }
    }
    if !worker_errors.is_empty() {
        eprintln!("worker errors: {worker_errors:?}");
    }

    // Recovery: heal everything, wait for a leader, then final reads.
    eprintln!(
        "[{:>5.1}s] healing; waiting up to {} s for the cluster to recover",
        t0.elapsed().as_secs_f64(),
        opts.recovery
    );
    nem.heal_all();
    drop(nem);
    let interrupted_run = interrupted();
    let mut final_reads = None;
    let mut master_final = None;
    let mut messages_final = None;
    let mut watch_final = None;
    if !interrupted_run {
        // The master workload's final phase polls from the end of the heal,
        // while the presence workload waits for a leader and reads back.
        let from = rec.len();
        let from_ns = rec.now();
        let largest = master_clock::clock_fault_max_ms(&rec.snapshot());
        let running: Vec<usize> = (0..n).filter(|&i| db.running(i)).collect();
        let params = master_final::FinalParams {
            from_ns,
            master_deadline_ns: from_ns + master_settle_ms(&raft) * 1_000_000,
            clock_deadline_ns: from_ns + clock_settle_ms(&raft, largest) * 1_000_000,
            stable_ns: 2_000_000_000,
            running: running.iter().map(|&i| i as u64 + 1).collect(),
            tolerance_ms: raft.time_tolerance_ms as f64,
            sntp_slack_ms: 5.0,
            note: format!(
                "master: hold-down {} ms + 8 x election-max {} ms + 5 s; clocks: that + 10 s + 2.2 x largest clock fault ({largest} ms); stable for 2 s",
                raft.master_hold_down_ms, raft.election_max_ms
            ),
        };
        let db_ref = &db;
        let (fr, mf, md, wf) = std::thread::scope(|sc| {
            let poller = with_master.then(|| {
                let (rec, mopts, running, params) = (&rec, &mopts, &running, params.clone());
                sc.spawn(move || {
                    master::final_phase(rec, mopts, running, params, from, interrupted)
                })
            });
            let leader = wait_leader(
                db_ref,
                Duration::from_secs(opts.recovery),
                Duration::from_secs(opts.recovery * 3),
            );
            eprintln!(
                "[{:>5.1}s] leader after heal: {leader:?}{}{}",
                t0.elapsed().as_secs_f64(),
                if with_presence { "; final reads" } else { "" },
                if with_messages { "; draining mailboxes" } else { "" }
            );
            let drainer = msg_shared.as_ref().map(|shared| {
                let (rec, msgopts) = (&rec, &msgopts);
                let limit = Duration::from_secs(opts.drain_s);
                sc.spawn(move || messages::drain(rec, msgopts, &shared.stats, limit))
            });
            let fr = shared.as_ref().map(|shared| {
                presence::final_reads(
                    &rec,
                    &shared.keys(),
                    &nodes,
                    Duration::from_millis(opts.timeout_ms),
                    Instant::now() + Duration::from_secs(30),
                )
            });
            if poller.is_some() {
                eprintln!(
                    "[{:>5.1}s] master/time: polling until n{:?}'s lowest running voter leads and clocks converge (deadlines +{:.1} s / +{:.1} s)",
                    t0.elapsed().as_secs_f64(),
                    params.running,
                    (params.master_deadline_ns - from_ns) as f64 / 1e9,
                    (params.clock_deadline_ns - from_ns) as f64 / 1e9
                );
            }
            let wf = watch_shared.as_ref().map(|ws| {
                let last = std::mem::take(&mut *ws.last.lock().unwrap());
                eprintln!(
                    "[{:>5.1}s] watch: {} last watches query their uids and catch up",
                    t0.elapsed().as_secs_f64(),
                    last.len()
                );
                let s = watch::final_phase(&rec, &watchopts, last);
                eprintln!(
                    "[{:>5.1}s] watch: {}/{} queried, {} reached the query's revision in {} ms",
                    t0.elapsed().as_secs_f64(),
                    s.queried,
                    s.watches,
                    s.reached,
                    s.elapsed_ms
                );
                s
            });
            let outbox_final = receivers.as_ref().map(|_| {
                let (rec, outopts) = (&rec, &outopts);
                let limit = Duration::from_secs(opts.drain_s);
                sc.spawn(move || outbox::final_phase(rec, outopts, limit))
            });
            let md = drainer.and_then(|h| h.join().ok());
            if let Some(of) = outbox_final.and_then(|h| h.join().ok()) {
                eprintln!(
                    "[{:>5.1}s] outbox: pending/dead at the end {of:?}",
                    t0.elapsed().as_secs_f64()
                );
            }
            if let Some(d) = &md {
                eprintln!(
                    "[{:>5.1}s] messages: drained {}/{} mailboxes in {:.0} ms",
                    t0.elapsed().as_secs_f64(),
                    d.mailboxes.iter().filter(|m| m.drained).count(),
                    d.mailboxes.len(),
                    d.elapsed_ms
                );
            }
            let mf = poller.and_then(|h| h.join().ok());
            (fr, mf, md, wf)
        });
        if let Some(m) = &mf {
            eprintln!(
                "[{:>5.1}s] master/time: {} — master {} (n{} after {} ms), clocks {} (after {} ms)",
                t0.elapsed().as_secs_f64(),
                m.stopped_because,
                m.master.valid.as_str(),
                report::json_text(&m.master.leader),
                report::json_text(&m.master.settled_after_ms),
                m.clock.valid.as_str(),
                report::json_text(&m.clock.settled_after_ms)
            );
        }
        final_reads = fr;
        master_final = mf;
        messages_final = md;
        watch_final = wf;
    }
    let mut nem = Nemesis::new(&mut db, &rec);
    nem.watch_crashes();
    drop(nem);
    if let Some(r) = receivers {
        worker_errors.extend(r.stop());
    }
    let shutdown = db.stop_all(Duration::from_secs(5));
    let exits = db.unexpected_exits.clone();
    drop(db);
    drop(guard);

    // Files, checkers, report.
    let hist = rec.snapshot();
    history::write_jsonl(&dir.join("history.jsonl"), &hist)?;
    edn::write(&dir.join("history.edn"), &hist)?;
    let run = RunFacts {
        interrupted: interrupted_run,
        final_reads,
        master_final,
        messages_final,
        messages_stats: msg_shared.as_ref().map(|s| s.stats.to_json()),
        watch_final,
        unexpected_exits: Some(exits),
        shutdown: shutdown.into_iter().map(|(node, status)| Shutdown { node, status }).collect(),
        worker_errors,
    };
    // Through a Value: keys sorted, as always.
    fs::write(dir.join("run.json"), serde_json::to_string_pretty(&run.to_json())?)?;
    let v = check_dir(&dir, opts.checker_time_limit)?;
    if interrupted_run {
        eprintln!("interrupted: partial history kept in {}", dir.display());
        return Ok(Verdict::Unknown);
    }
    Ok(v)
}

/// run.json: what the run saw besides the history, for the checkers (final
/// reads, the master workload's final phase, the final drain, unexpected
/// exits and the final shutdown) and for the reader.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFacts {
    #[serde(deserialize_with = "lenient")]
    pub interrupted: bool,
    #[serde(deserialize_with = "lenient")]
    pub final_reads: Option<presence::FinalReads>,
    #[serde(deserialize_with = "lenient")]
    pub master_final: Option<master::FinalSummary>,
    #[serde(deserialize_with = "lenient")]
    pub messages_final: Option<messages::DrainSummary>,
    /// Informational counters of the messages workload.
    pub messages_stats: Option<Value>,
    /// How the watch workload's final phase went (informational: the
    /// watch checker reads the ops it recorded).
    #[serde(deserialize_with = "lenient")]
    pub watch_final: Option<watch::FinalSummary>,
    /// None: not recorded (no crash check).
    #[serde(deserialize_with = "lenient")]
    pub unexpected_exits: Option<Vec<db::Exit>>,
    #[serde(deserialize_with = "lenient")]
    pub shutdown: Vec<Shutdown>,
    #[serde(deserialize_with = "lenient")]
    pub worker_errors: Vec<String>,
}

/// A run.json field that does not parse (a run of an older harness) counts
/// as absent, so that the other checkers still run.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(d)?).unwrap_or_default())
}

/// Runs the checkers over a stored history, writes results.json, report.html
/// and report.txt, prints the summary. Used by `test` and by `check`.
pub fn check_dir(dir: &Path, checker_time_limit: u64) -> Result<Verdict> {
    let meta: Value = serde_json::from_str(
        &fs::read_to_string(dir.join("test.json")).context("read test.json")?,
    )?;
    let run: RunFacts = fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let hist = history::read_jsonl(&dir.join("history.jsonl"))?;
    let results = analyze(&hist, &run, Duration::from_secs(checker_time_limit));
    // Through a Value: keys sorted, as always.
    fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results.to_json())?)?;
    let shown = dir.display().to_string();
    let summary = report::summary(&meta, &hist, &results, &shown);
    fs::write(dir.join("report.txt"), &summary)?;
    fs::write(dir.join("report.html"), report::html(&meta, &hist, &results, &shown))?;
    println!("{summary}");
    Ok(results.valid)
}

/// All checkers over one history (+ facts about the run from run.json).
pub fn analyze(hist: &[Op], run: &RunFacts, limit: Duration) -> Results {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let has = |f: &str| hist.iter().any(|o| o.f == f);
    let mut c = Checkers { history: Some(run_facts::history(hist)), ..Default::default() };
    if has("read") || has("write") {
        c.linear = Some(linear::check(hist, threads, limit));
    }
    if has(zone_reads::F_BOUNDED) || has(zone_reads::F_MIN_REV) {
        c.zone_reads = Some(crate::checker::zone_reads::check(hist));
    }
    if has("frame") {
        c.watch = Some(watch_checker::check(hist));
    }
    if has("enqueue") {
        c.queue = Some(queue::check(hist, queue::QueueOptions::default()));
    }
    if has("profile-set") {
        c.outbox = Some(outbox_checker::check(hist));
    }
    if has("status") {
        c.master_term = Some(master_term::check(hist));
        c.clock_report = Some(master_report::check(hist));
        c.clock_monotonic = Some(master_monotonic::check(hist));
    }
    if let Some(p) = run.master_final.as_ref().map(|m| &m.params) {
        let m = master_final::check(hist, p);
        c.master_final =
            Some(master_final::MasterFinal { deadline_rule: Some(p.note.clone()), ..m });
        c.clock_final = Some(master_clock::check(hist, p));
    }
    c.messages_final = run.messages_final.clone().map(run_facts::messages_final);
    c.final_reads = run.final_reads.clone().map(run_facts::final_reads);
    c.crashes = run.unexpected_exits.as_deref().map(|e| run_facts::crashes(e, &run.shutdown));
    Results::new(c, run.interrupted)
}

/// `herald-jepsen cleanup`.
pub fn cleanup() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cleanup must run as root");
    }
    let _lock = lock()
        .context("a herald-jepsen run seems active; stop it first (its own guards clean up)")?;
    let removed = netns::cleanup()?;
    if removed.is_empty() {
        println!("nothing to clean up");
    } else {
        for r in removed {
            println!("removed {r}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use crate::history::OpType::*;

    /// Proves store-dir timestamps are correct UTC civil dates.
    #[test]
    fn history_store_timestamp_is_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_257_256), "20261121T103416Z");
    }

    /// run.json as a test writes it.
    fn facts(v: Value) -> RunFacts {
        serde_json::from_value(v).expect("run.json shape")
    }

    /// Proves the overall verdict merges checkers: a lost final read or a
    /// crash makes a linearizable history invalid; an interrupted run is unknown.
    #[test]
    fn checker_analyze_merges_verdicts() {
        let h = hist(&[(0, Invoke, "write", json!(["k", 1])), (0, Ok, "write", json!(["k", 1]))]);
        let ok = analyze(
            &h,
            &facts(json!({"final_reads": {"unread": []}, "unexpected_exits": []})),
            Duration::from_secs(1),
        );
        assert_eq!(ok.to_json()["valid"], json!(true));
        let lost = analyze(
            &h,
            &facts(json!({"final_reads": {"unread": ["k"]}, "unexpected_exits": []})),
            Duration::from_secs(1),
        );
        assert_eq!(lost.to_json()["valid"], json!(false));
        let crash = analyze(
            &h,
            &facts(json!({"unexpected_exits": [{"node": "n1"}]})),
            Duration::from_secs(1),
        );
        assert_eq!(crash.to_json()["valid"], json!(false));
        let intr = analyze(&h, &facts(json!({"interrupted": true})), Duration::from_secs(1));
        assert_eq!(intr.to_json()["valid"], json!("unknown"));
    }

    /// Proves results.json reads back into the typed results and writes out
    /// unchanged, for every checker, with anomalies of each kind: a stale
    /// read, a lost and an unexpected message, an undrained mailbox, unread
    /// keys, a crash, two leaders in a term, a step back of cluster time, a
    /// persistent clock misreport and a node silent at the end.
    #[test]
    fn checker_results_json_round_trips() {
        use crate::checker::master_final::tests::params;
        use crate::checker::master_monotonic::tests::at;
        use crate::checker::status::tests::{status_hist, sv};
        let ops = hist(&[
            (0, Invoke, "write", json!(["k", 1])),
            (0, Ok, "write", json!(["k", 1])),
            (0, Invoke, "write", json!(["k", 2])),
            (0, Ok, "write", json!(["k", 2])),
            (1, Invoke, "read", json!(["k", null])),
            (1, Ok, "read", json!(["k", 1])),
            (2, Invoke, "enqueue", json!(["m1", 7])),
            (2, Ok, "enqueue", json!(["m1", 7, {"message_id": 3}])),
            (3, Invoke, "dequeue", json!(["m1", null])),
            (3, Ok, "dequeue", json!(["m1", 9, {"message_id": 4, "session": "s1"}])),
        ]);
        let run = facts(json!({
            "final_reads": {"keys": 2, "read_ok": 1, "attempts": 3, "unread": ["k"]},
            "messages_final": {"limit_ms": 1000, "elapsed_ms": 1000.5, "mailboxes": [
                {"mailbox": "m1", "drained": false, "queued_first": 2, "queued_last": 1,
                 "delivered": 1, "sessions": 1, "after_ms": null, "last_error": "timeout"}]},
            "master_final": {"params": params(&[1, 2, 3]), "polled_ms": 5.0,
                             "stopped_because": "deadline passed"},
            "unexpected_exits": [{"node": "n2", "status": "signal 9", "at_ns": 5}],
            "shutdown": [{"node": "n1", "status": "exit 0"}, {"node": "n3", "status": "exit 1"}],
        }));
        let statuses = status_hist(&[
            (1000, 2, Some(sv(2, 5, Some(2), "leader"))),
            (1010, 3, Some(sv(3, 5, Some(3), "leader"))),
            at(1100, 1, 5000.0),
            at(1250, 1, 4960.0),
            (1300, 2, None),
        ]);
        let misreports = crate::checker::master_report::tests::run(0, 6000, |t| {
            if (1000..4000).contains(&t) {
                138_000.0 - t as f64
            } else {
                50_000.0
            }
        });
        let mut read_back = Vec::new();
        for h in [ops, statuses, misreports] {
            let r = analyze(&h, &run, Duration::from_secs(1));
            let written = r.to_json();
            let back: Results = serde_json::from_value(written.clone()).expect("reads back");
            assert_eq!(back.to_json(), written);
            read_back.push(back.checkers);
        }
        // The anomalies were there to read back.
        let [ops, statuses, misreports] = &read_back[..] else { unreachable!() };
        assert!(ops.linear.as_ref().unwrap().failures[0].anomaly.is_some());
        let q = ops.queue.as_ref().unwrap();
        assert_eq!((q.lost_ops.len(), q.unexpected.len()), (1, 1));
        assert_eq!(ops.crashes.as_ref().unwrap().unclean_shutdown.len(), 1);
        assert_eq!(statuses.master_term.as_ref().unwrap().violations.len(), 1);
        assert_eq!(statuses.clock_monotonic.as_ref().unwrap().violations.len(), 1);
        let views = &statuses.master_final.as_ref().unwrap().final_views;
        assert!(views.iter().any(|v| matches!(v, master_final::FinalView::Silent { .. })));
        assert!(views.iter().any(|v| matches!(v, master_final::FinalView::Answered { .. })));
        assert_eq!(misreports.clock_report.as_ref().unwrap().streaks.len(), 1);
    }
}

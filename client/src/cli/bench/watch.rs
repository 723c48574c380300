//! `bench watch`: `--watchers` change-feed watchers (`Presence.Watch`),
//! each following `--watch-ids` random uids, spread over every node, under
//! the presence-write load of `--clients` closed-loop writers (one login or
//! logout per request, through the leader, on random users of the same
//! `--users`); Herald-only.
//!
//! Reports changes delivered per second (user records in change frames,
//! over all watchers) and the commit-to-delivery latency: a writer notes
//! when its write was acknowledged (the first acknowledgement of each
//! revision: writes batched into one entry share it), a watcher when the
//! frame of that revision arrived; same process, same clock. A frame that
//! arrives before its writer's acknowledgement counts 0.
//!
//! Also the CPU the nodes spend per applied entry (all nodes' CPU time in
//! the measured window over the log entries appended, per node): run it
//! with `--watchers 0,1000,10000` and the difference is what the watchers'
//! filtering costs (ARCHITECTURE "Known limits").
//!
//! Watch streams share connections, `--watches-per-conn` each (HTTP/2
//! streams), so 10,000 watchers need 100 connections, not 10,000 open
//! files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_client::proto::presence_client::PresenceClient;
use herald_client::proto::{self as pb, watch_frame::Kind};
use herald_client::{ConnectOptions, Event, Ext};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::procstat::{self, CpuClock};
use super::report::BenchResult;
use super::stats::Samples;
use super::target::{self, OpError, System, Topology};
use super::RunArgs;

/// Watches being opened at once (each passes the node's read barrier and
/// gets a snapshot of its ids).
const OPEN_CONCURRENCY: usize = 64;
/// How long one watch may take to open and send its snapshot.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// File descriptors the benchmark keeps for itself beside its connections.
const SPARE_FDS: u64 = 256;
/// After the writers stop: time for the last frames to arrive.
const DRAIN: Duration = Duration::from_secs(2);

/// What every watcher and writer shares.
struct Shared {
    /// revision → when its first write was acknowledged.
    acked: Mutex<HashMap<u64, Instant>>,
    /// Measuring: deliveries count and are timed only while set.
    measuring: AtomicBool,
    delivered: AtomicU64,
    frames: AtomicU64,
    ended: AtomicU64,
}

/// A small xorshift64* generator: cheap uniform user numbers.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// `k` distinct users of `users` for watcher `seed` (all of them when
/// `k >= users`).
pub fn pick_users(seed: u64, k: usize, users: u64) -> Vec<u64> {
    if k as u64 >= users {
        return (0..users).collect();
    }
    let mut rng = Rng::new(seed + 1);
    let mut set = std::collections::BTreeSet::new();
    while set.len() < k {
        set.insert(rng.below(users));
    }
    set.into_iter().collect()
}

async fn open_conn(addr: &str) -> Result<Channel, OpError> {
    herald_client::endpoint(addr, &ConnectOptions::default())?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| OpError::new("connect", format!("{addr}: {e}")))
}

/// Opens one watch on `ch`, waits for its snapshot, then spawns the task
/// that reads its frames, and answers it with where it notes the delivery
/// times it measured (revision, when the frame arrived).
async fn open_watch(
    ch: Channel,
    uids: Vec<String>,
    shared: Arc<Shared>,
) -> Result<(tokio::task::JoinHandle<()>, Deliveries), OpError> {
    let cred = target::credential()
        .ok_or_else(|| OpError::new("internal", "no credential: discover first"))?;
    let mut c = PresenceClient::with_interceptor(ch, cred);
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::WatchRequest { uids, ..Default::default() })
        .await
        .map_err(|_| OpError::new("closed", "request channel closed"))?;
    let mut frames = c.watch(ReceiverStream::new(rx)).await?.into_inner();
    loop {
        match frames.message().await? {
            Some(f) if f.kind == Kind::Snapshot as i32 => break,
            Some(f) if f.kind == Kind::Error as i32 => {
                return Err(OpError::new(&f.code, f.message))
            }
            Some(_) => continue,
            None => return Err(OpError::new("closed", "the watch ended before its snapshot")),
        }
    }
    let seen: Deliveries = Default::default();
    let noted = seen.clone();
    let task = tokio::spawn(async move {
        let _requests = tx;
        while let Ok(Some(f)) = frames.message().await {
            if f.kind != Kind::Change as i32 || !shared.measuring.load(Ordering::Relaxed) {
                continue;
            }
            shared.frames.fetch_add(1, Ordering::Relaxed);
            shared.delivered.fetch_add(f.users.len() as u64, Ordering::Relaxed);
            noted.lock().unwrap().push((f.revision, Instant::now()));
        }
        shared.ended.fetch_add(1, Ordering::Relaxed);
    });
    Ok((task, seen))
}

/// One watcher's deliveries: (revision, when its frame arrived).
type Deliveries = Arc<Mutex<Vec<(u64, Instant)>>>;

/// One closed-loop writer until `stop`: a login or logout of a random
/// user per request; notes each revision's first acknowledgement.
async fn writer(
    addr: String,
    users: u64,
    seed: u64,
    op_timeout: Duration,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let Ok(c) = target::herald(&addr).await else { return (0, 1) };
    let mut rng = Rng::new(seed);
    let (mut ok, mut errors) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let i = rng.below(users);
        let (uid, sid, client) = (target::uid(i), target::sid(i), target::CLIENT_TYPE);
        let ev = if rng.below(2) == 0 {
            Event::Login {
                uid,
                sid,
                client: client.into(),
                accepts_strangers: None,
                ext: Ext::new(),
            }
        } else {
            Event::logout(uid, sid, client)
        };
        match tokio::time::timeout(op_timeout, c.push_events(vec![ev])).await {
            Ok(Ok(rev)) => {
                let now = Instant::now();
                shared.acked.lock().unwrap().entry(rev).or_insert(now);
                ok += 1;
            }
            _ => errors += 1,
        }
    }
    (ok, errors)
}

async fn last_log_index(addr: &str) -> Result<u64, OpError> {
    Ok(target::herald(addr).await?.status().await?.last_log_index)
}

/// One run with `watchers` watchers.
async fn run_one(
    topo: &Topology,
    a: &RunArgs,
    users: u64,
    watchers: usize,
    op_timeout: Duration,
) -> Result<BenchResult, OpError> {
    let leader = topo.leader().ok_or_else(|| OpError::new("no_leader", "no leader"))?.clone();
    let per_conn = a.watches_per_conn.max(1);
    let ids = a.watch_ids.max(1);
    let conns = watchers.div_ceil(per_conn);
    if let Some(limit) = procstat::raise_own_nofile(conns as u64 + SPARE_FDS) {
        if limit < conns as u64 + SPARE_FDS {
            return Err(OpError::new(
                "fd_limit",
                format!(
                    "{conns} connections need {} open files; this process may have {limit}",
                    conns as u64 + SPARE_FDS
                ),
            ));
        }
    }
    let shared = Arc::new(Shared {
        acked: Mutex::new(HashMap::new()),
        measuring: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        ended: AtomicU64::new(0),
    });
    // Open: `conns` connections round-robin over the nodes, `per_conn`
    // watches on each.
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let opened_at = Instant::now();
    let mut set = JoinSet::new();
    for k in 0..conns {
        let node = topo.nodes[k % topo.nodes.len()].addr.clone();
        let (gate, shared) = (gate.clone(), shared.clone());
        let n = per_conn.min(watchers - k * per_conn);
        set.spawn(async move {
            let ch = tokio::time::timeout(OPEN_TIMEOUT, open_conn(&node))
                .await
                .map_err(|_| OpError::new("timeout", "connect timed out"))??;
            let mut tasks = Vec::with_capacity(n);
            let mut first_err = None;
            for s in 0..n {
                let _permit = gate.acquire().await.map_err(|_| OpError::new("internal", "gate"))?;
                let w = (k * per_conn + s) as u64;
                let uids = pick_users(w, ids, users).into_iter().map(target::uid).collect();
                match tokio::time::timeout(
                    OPEN_TIMEOUT,
                    open_watch(ch.clone(), uids, shared.clone()),
                )
                .await
                {
                    Ok(Ok(t)) => tasks.push(t),
                    Ok(Err(e)) => first_err = first_err.or(Some(e)),
                    Err(_) => {
                        first_err = first_err.or(Some(OpError::new("timeout", "no snapshot")))
                    }
                }
            }
            Ok::<_, OpError>((tasks, first_err, n))
        });
    }
    let (mut tasks, mut failed, mut first_error) = (Vec::new(), 0u64, None);
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| OpError::new("internal", e.to_string()))? {
            Ok((t, e, n)) => {
                failed += (n - t.len()) as u64;
                tasks.extend(t);
                first_error = first_error.or(e);
            }
            Err(e) => {
                failed += per_conn as u64;
                first_error = first_error.or(Some(e));
            }
        }
    }
    let open_s = opened_at.elapsed().as_secs_f64();
    let open = tasks.len();
    if open == 0 && watchers > 0 {
        return Err(first_error.unwrap_or_else(|| OpError::new("no_watch", "no watch opened")));
    }

    // Load: writers through the leader; measure after the warmup.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = a.clients.first().copied().unwrap_or(16).max(1);
    let mut ws = JoinSet::new();
    for c in 0..clients {
        ws.spawn(writer(
            leader.addr.clone(),
            users,
            0xbe7c_0000 + c as u64,
            op_timeout,
            shared.clone(),
            stop.clone(),
        ));
    }
    tokio::time::sleep(a.warmup).await;
    let pids: Vec<u32> = topo.nodes.iter().filter_map(|n| n.pid).collect();
    let log0 = last_log_index(&leader.addr).await?;
    shared.measuring.store(true, Ordering::Relaxed);
    let node_cpu = CpuClock::start(&pids);
    let own_cpu = CpuClock::start(&[std::process::id()]);
    let t0 = Instant::now();
    tokio::time::sleep(a.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let node_cores = node_cpu.cores();
    let own_cores = own_cpu.cores();
    let log1 = last_log_index(&leader.addr).await?;
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let frames = shared.frames.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (mut wrote, mut werrors) = (0u64, 0u64);
    while let Some(r) = ws.join_next().await {
        if let Ok((o, e)) = r {
            wrote += o;
            werrors += e;
        }
    }
    tokio::time::sleep(DRAIN).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let ended = shared.ended.load(Ordering::Relaxed);
    // Latency of the frames of revisions acknowledged in the run.
    let acked = std::mem::take(&mut *shared.acked.lock().unwrap());
    let mut lat = Samples::new();
    let mut unmatched = 0u64;
    for (t, seen) in tasks {
        t.abort();
        for (rev, at) in seen.lock().unwrap().drain(..) {
            match acked.get(&rev) {
                Some(ack) => lat.record(at.saturating_duration_since(*ack)),
                None => unmatched += 1,
            }
        }
    }
    let entries = log1.saturating_sub(log0);

    let mut r = BenchResult::new(System::Herald, "watch");
    r.via = "all".into();
    r.clients = clients;
    r.users = users;
    r.elapsed_s = elapsed;
    r.ops = delivered;
    r.errors = failed + werrors;
    r.ops_per_s = delivered as f64 / elapsed.max(1e-9);
    r.setting = format!("watchers={watchers} ids={ids} per-conn={per_conn}");
    if let Some(e) = first_error {
        r.error_codes
            .insert(e.code.clone(), super::report::ErrorInfo { count: failed, example: e.message });
    }
    r.latency = lat.summary();
    r.measure("watchers open", open as f64);
    r.measure("watches opened/s", open as f64 / open_s.max(1e-9));
    r.measure("connections", conns as f64);
    r.measure("changes delivered/s", r.ops_per_s);
    r.measure("change frames/s", frames as f64 / elapsed.max(1e-9));
    r.measure("commit-to-delivery p50 (ms)", r.latency.p50_ms);
    r.measure("commit-to-delivery p99 (ms)", r.latency.p99_ms);
    r.measure("writes/s", wrote as f64 / (elapsed + a.warmup.as_secs_f64()).max(1e-9));
    r.measure("log entries/s", entries as f64 / elapsed.max(1e-9));
    if let Some(c) = node_cores {
        r.measure("node CPU (cores, all nodes)", c);
        if entries > 0 {
            let per_node_us = c * elapsed / topo.nodes.len().max(1) as f64 / entries as f64 * 1e6;
            r.measure("node CPU per applied entry (µs, per node)", per_node_us);
        }
    }
    if let Some(c) = own_cores {
        r.measure("bench CPU (cores)", c);
    }
    r.measure("frames without a matching write", unmatched as f64);
    r.measure("watches ended early", ended as f64);
    Ok(r)
}

/// Every `--watchers` count, one run and one row each.
pub async fn run(
    topo: &Topology,
    a: &RunArgs,
    users: u64,
    op_timeout: Duration,
) -> Result<Vec<BenchResult>, OpError> {
    if topo.system != System::Herald {
        return Err(OpError::new(
            "unsupported",
            "watch is Herald-only (etcd watches are not compared here)",
        ));
    }
    let counts = if a.watchers.is_empty() { vec![10_000] } else { a.watchers.clone() };
    let mut out = Vec::new();
    for w in counts {
        out.push(run_one(topo, a, users, w, op_timeout).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watcher's users are distinct, within range, the same for the same
    /// watcher, and differ between watchers; asking for more than exist
    /// gives all of them.
    #[test]
    fn bench_watch_picks_distinct_users() {
        let a = pick_users(7, 100, 100_000);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 100_000);
        assert_eq!(a, pick_users(7, 100, 100_000));
        assert_ne!(a, pick_users(8, 100, 100_000));
        assert_eq!(pick_users(1, 10, 5), vec![0, 1, 2, 3, 4]);
    }
}

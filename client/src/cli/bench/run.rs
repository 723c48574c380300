//! Running workloads: closed-loop client tasks (each sends its next request
//! when the previous one is answered), the preload of users, waiting for
//! every replica to catch up, and the failover clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_client::ClientError;
use tokio::task::JoinSet;

use super::procs;
use super::procstat;
use super::report::{BenchResult, NodeMem, Report};
use super::stats::{throughput, Samples};
use super::target::{self, Conn, Cons, ErrorCounts, NodeInfo, OpError, System, Topology};
use super::{RunArgs, Via};

/// The workloads of `herald bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PresenceWrite,
    BatchQuery,
    Mixed,
    Memory,
    Failover,
    Stream,
    Heartbeat,
    Messages,
    Restart,
    Watch,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::PresenceWrite => "presence-write",
            Workload::BatchQuery => "batch-query",
            Workload::Mixed => "mixed",
            Workload::Memory => "memory",
            Workload::Failover => "failover",
            Workload::Stream => "stream",
            Workload::Heartbeat => "heartbeat",
            Workload::Messages => "messages",
            Workload::Restart => "restart",
            Workload::Watch => "watch",
        }
    }
}

/// A small, fast, seedable generator (xorshift64*): the benchmark needs
/// cheap uniform ids, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// `k` distinct values of `0..n` (all of them when k ≥ n), in random
    /// order.
    pub fn distinct(&mut self, k: usize, n: u64) -> Vec<u64> {
        if k as u64 >= n {
            return (0..n).collect();
        }
        let mut seen = std::collections::HashSet::with_capacity(k * 2);
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let v = self.below(n);
            if seen.insert(v) {
                out.push(v);
            }
        }
        out
    }
}

/// The users client `idx` of `clients` writes: a disjoint slice of
/// `0..users`, never empty (clients share users when there are fewer users
/// than clients).
pub fn slice_of(idx: usize, clients: usize, users: u64) -> (u64, u64) {
    let c = clients.max(1) as u64;
    let lo = idx as u64 * users / c;
    let hi = (idx as u64 + 1) * users / c;
    if hi > lo {
        (lo, hi)
    } else {
        let u = idx as u64 % users.max(1);
        (u, u + 1)
    }
}

/// Walks a client's slice: each op takes the next `batch` users; the first
/// pass logs them in, the next logs them out, and so on, so every event
/// changes the record.
#[derive(Debug, Clone)]
pub struct Writer {
    lo: u64,
    hi: u64,
    cur: u64,
    online: bool,
}

impl Writer {
    pub fn new((lo, hi): (u64, u64)) -> Self {
        Writer { lo, hi, cur: lo, online: true }
    }

    /// The next `batch` events `(user, online)`.
    pub fn next(&mut self, batch: usize) -> Vec<(u64, bool)> {
        let mut v = Vec::with_capacity(batch);
        for _ in 0..batch {
            v.push((self.cur, self.online));
            self.cur += 1;
            if self.cur == self.hi {
                self.cur = self.lo;
                self.online = !self.online;
            }
        }
        v
    }
}

/// What one closed-loop run does.
#[derive(Debug, Clone)]
struct LoopCfg {
    read_percent: u8,
    users: u64,
    clients: usize,
    batch: usize,
    ids: usize,
    cons: Cons,
    /// Operations that start before this are not measured.
    measure_from: Instant,
    /// No operation starts after this.
    deadline: Instant,
    op_timeout: Duration,
    /// Keep (start, end, ok) of every operation (failover).
    timeline: bool,
}

#[derive(Debug, Default)]
struct TaskOut {
    reads: Samples,
    writes: Samples,
    errors: ErrorCounts,
    last_end: Option<Instant>,
    timeline: Vec<(Instant, Instant, bool)>,
}

async fn client_loop(mut conn: Conn, cfg: Arc<LoopCfg>, idx: usize, start_at: Instant) -> TaskOut {
    let mut out = TaskOut::default();
    let mut rng = Rng::new(
        0x5EED ^ ((idx as u64 + 1) << 20) ^ cfg.measure_from.elapsed().subsec_nanos() as u64,
    );
    let mut writer = Writer::new(slice_of(idx, cfg.clients, cfg.users));
    tokio::time::sleep_until(start_at.into()).await;
    loop {
        let start = Instant::now();
        if start >= cfg.deadline {
            break;
        }
        let read = cfg.read_percent > 0
            && (cfg.read_percent >= 100 || rng.below(100) < cfg.read_percent as u64);
        let res = if read {
            let ids = rng.distinct(cfg.ids, cfg.users);
            tokio::time::timeout(cfg.op_timeout, conn.query(&ids, cfg.cons))
                .await
                .map(|r| r.map(|_| ()))
        } else {
            let events = writer.next(cfg.batch);
            tokio::time::timeout(cfg.op_timeout, conn.write(&events)).await
        };
        let end = Instant::now();
        let res = res.unwrap_or_else(|_| {
            Err(OpError::new("client_timeout", format!("no answer within {:?}", cfg.op_timeout)))
        });
        if cfg.timeline {
            out.timeline.push((start, end, res.is_ok()));
        }
        let measured = start >= cfg.measure_from;
        match res {
            Ok(()) if measured => {
                if read {
                    out.reads.record(end - start);
                } else {
                    out.writes.record(end - start);
                }
                out.last_end = Some(end);
            }
            Ok(()) => {}
            Err(e) => {
                if measured {
                    out.errors.add(&e);
                    out.last_end = Some(end);
                }
                // Do not spin on a node that refuses everything.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    out
}

/// Addresses the clients of a run connect to, client `k` to `addrs[k % len]`.
pub(super) fn addrs_for(topo: &Topology, via: Via) -> Result<Vec<String>, OpError> {
    let v: Vec<String> = match via {
        Via::Leader => topo.leader().map(|n| n.addr.clone()).into_iter().collect(),
        Via::Follower => topo.followers().first().map(|n| n.addr.clone()).into_iter().collect(),
        Via::All => topo.nodes.iter().map(|n| n.addr.clone()).collect(),
        Via::Replica => {
            topo.nodes.iter().find(|n| n.replica).map(|n| n.addr.clone()).into_iter().collect()
        }
    };
    if v.is_empty() {
        return Err(OpError::new(
            "no_node",
            format!("the cluster has no node to reach via {}", via.name()),
        ));
    }
    Ok(v)
}

pub(super) async fn open_conns(
    topo: &Topology,
    addrs: &[String],
    n: usize,
) -> Result<Vec<Conn>, OpError> {
    let mut conns = Vec::with_capacity(n);
    for k in 0..n {
        conns.push(Conn::open(topo, &addrs[k % addrs.len()]).await?);
    }
    Ok(conns)
}

/// The combined result of a closed-loop run.
struct LoopOut {
    reads: Samples,
    writes: Samples,
    errors: ErrorCounts,
    elapsed: Duration,
    timeline: Vec<(Instant, Instant, bool)>,
}

async fn closed_loop(
    conns: Vec<Conn>,
    mut cfg: LoopCfg,
    warmup: Duration,
    duration: Duration,
) -> LoopOut {
    // Every client starts at the same instant, after all connected.
    let start_at = Instant::now() + Duration::from_millis(20);
    cfg.measure_from = start_at + warmup;
    cfg.deadline = cfg.measure_from + duration;
    let cfg = Arc::new(cfg);
    let mut set = JoinSet::new();
    for (idx, conn) in conns.into_iter().enumerate() {
        set.spawn(client_loop(conn, cfg.clone(), idx, start_at));
    }
    let mut out = LoopOut {
        reads: Samples::new(),
        writes: Samples::new(),
        errors: ErrorCounts::default(),
        elapsed: Duration::ZERO,
        timeline: Vec::new(),
    };
    let mut last_end = cfg.measure_from;
    while let Some(r) = set.join_next().await {
        let Ok(t) = r else { continue };
        out.reads.merge(t.reads);
        out.writes.merge(t.writes);
        out.errors.merge(t.errors);
        out.timeline.extend(t.timeline);
        if let Some(e) = t.last_end {
            last_end = last_end.max(e);
        }
    }
    // Operations that started before the deadline are counted in full, so
    // the measured window runs to the last answer (at least the duration).
    out.elapsed = (last_end - cfg.measure_from).max(duration);
    out
}

/// Memory of every node (and of `--pids` not matched to a node).
fn node_mems(topo: &Topology, pids: &[u32]) -> Vec<NodeMem> {
    let mut out: Vec<NodeMem> = topo
        .nodes
        .iter()
        .map(|n| {
            let pid = n.pid.filter(|p| pids.is_empty() || pids.contains(p));
            NodeMem::new(n, pid, pid.and_then(procs::mem))
        })
        .collect();
    for &p in pids {
        if !out.iter().any(|m| m.pid == Some(p)) {
            out.push(NodeMem::unmatched(p, procs::mem(p)));
        }
    }
    if out.iter().all(|m| m.pid.is_none()) {
        // No node found by its port (e.g. not allowed to read other
        // processes' fds): fall back to every process of the server's name.
        for p in procs::pids_named(topo.system.program()) {
            out.push(NodeMem::unmatched(p, procs::mem(p)));
        }
    }
    out
}

/// Loads users `0..users` (even ones online, odd ones offline), `batch`
/// events per request from `clients` concurrent clients on the leader,
/// then writes one sentinel after them and waits until every node has
/// applied it, so that every replica holds every user.
pub(super) async fn load(
    topo: &Topology,
    users: u64,
    batch: usize,
    clients: usize,
    op_timeout: Duration,
) -> Result<BenchResult, OpError> {
    let addrs = addrs_for(topo, Via::Leader)?;
    let conns = open_conns(topo, &addrs, clients.max(1)).await?;
    let batch = batch.max(1) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for mut conn in conns {
        let next = next.clone();
        set.spawn(async move {
            let mut lat = Samples::new();
            let mut errors = ErrorCounts::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let lo = k * batch;
                if lo >= users {
                    break;
                }
                let events: Vec<(u64, bool)> =
                    (lo..(lo + batch).min(users)).map(|i| (i, i % 2 == 0)).collect();
                let mut tries = 0;
                loop {
                    let t = Instant::now();
                    let r =
                        tokio::time::timeout(op_timeout, conn.write(&events)).await.unwrap_or_else(
                            |_| Err(OpError::new("client_timeout", "load request timed out")),
                        );
                    match r {
                        Ok(()) => {
                            lat.record(t.elapsed());
                            break;
                        }
                        Err(e) => {
                            errors.add(&e);
                            tries += 1;
                            if tries >= 10 {
                                return Err(e);
                            }
                            tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                        }
                    }
                }
            }
            Ok((lat, errors))
        });
    }
    let mut lat = Samples::new();
    let mut errors = ErrorCounts::default();
    while let Some(r) = set.join_next().await {
        let (l, e) = r.map_err(|e| OpError::new("internal", e.to_string()))??;
        lat.merge(l);
        errors.merge(e);
    }
    let elapsed = started.elapsed();
    // The sentinel is acknowledged after every load request, so it comes
    // later in the log: a node that has applied it has applied them all.
    let mut c = Conn::open(topo, &addrs[0]).await?;
    c.write(&[(users, true)]).await?;
    for n in &topo.nodes {
        let mut c = Conn::open(topo, &n.addr).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if c.query(&[users], Cons::Local).await.unwrap_or(0) == 1 {
                break;
            }
            if Instant::now() > deadline {
                return Err(OpError::new(
                    "timeout",
                    format!("node {} did not catch up within 120 s", n.addr),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ops = lat.len() as u64;
    let mut r = BenchResult::new(topo.system, "load");
    r.via = Via::Leader.name().into();
    r.clients = clients;
    r.batch = batch as usize;
    r.users = users;
    r.set_mixed(Samples::new(), lat, &errors, elapsed);
    // The last request may be short: count the events actually sent.
    r.items_per_s = throughput(users, elapsed);
    debug_assert!(ops as usize * r.batch >= users as usize);
    Ok(r)
}

/// Runs `workload` against the cluster `node` belongs to (or the etcd
/// `--endpoints`) and collects the results.
pub async fn bench(
    workload: Workload,
    node: &str,
    a: &RunArgs,
    credential: &herald_client::Credential,
) -> Result<Report, ClientError> {
    let to_client = |e: OpError| ClientError::Server { code: e.code, message: e.message };
    if a.target == System::Herald {
        target::check_addr(node).map_err(to_client)?;
    }
    let etcd = target::EtcdOpts {
        txn_ops: a.etcd_txn_ops.max(1),
        conns: a.etcd_conns.max(1),
        txns: a.etcd_txns,
        codec: a.etcd_codec,
        value: a.etcd_value,
    };
    target::set_max_staleness(a.max_staleness_ms);
    let topo = target::discover(a.target, node, &a.endpoints, etcd, credential)
        .await
        .map_err(to_client)?;
    let mut report = Report::new(a.target);
    inner(workload, &topo, a, &mut report).await.map_err(to_client)?;
    // restart: the node restarted is a new process.
    let (mut topo, mut pids) = (topo, a.pids.clone());
    for p in report.results.iter().filter_map(|r| r.restarted_pid) {
        if let Some(n) = topo.nodes.iter_mut().find(|n| n.pid.is_some_and(procstat::exited)) {
            pids.retain(|x| Some(*x) != n.pid);
            n.pid = Some(p);
            if !pids.is_empty() {
                pids.push(p);
            }
        }
    }
    report.nodes = node_mems(&topo, &pids);
    for m in &mut report.nodes {
        if m.pid.is_some() && report.results.iter().any(|r| r.killed_pid == m.pid) {
            m.role = "killed leader".into();
        }
    }
    Ok(report)
}

fn defaults<T: Clone>(given: &[T], default: &[T]) -> Vec<T> {
    if given.is_empty() {
        default.to_vec()
    } else {
        given.to_vec()
    }
}

async fn inner(
    workload: Workload,
    topo: &Topology,
    a: &RunArgs,
    report: &mut Report,
) -> Result<(), OpError> {
    let users = a
        .users
        .unwrap_or(match workload {
            Workload::Memory | Workload::Restart => 1_000_000,
            _ => 100_000,
        })
        .max(1);
    let op_timeout = a.op_timeout.unwrap_or(if workload == Workload::Failover {
        // A request caught by the leader's death may hang until a server
        // timeout (etcd: 7 s); a real client gives up and retries sooner.
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    });
    let load_batch = a.load_batch.unwrap_or(match topo.system {
        System::Herald => 1000,
        System::Etcd => a.etcd_txn_ops,
    });
    report.durability = target::durability(topo.system).into();
    let base = LoopCfg {
        read_percent: 0,
        users,
        clients: 1,
        batch: a.batch.max(1),
        ids: a.ids.max(1),
        cons: Cons::Linearizable,
        measure_from: Instant::now(),
        deadline: Instant::now(),
        op_timeout,
        timeline: false,
    };
    // Each client writes its own slice of users; a request must not name a
    // user twice (etcd refuses duplicate keys in a txn).
    let check_slices = |clients: &[usize]| -> Result<(), OpError> {
        match clients.iter().find(|&&c| users / (c.max(1) as u64) < base.batch as u64) {
            Some(c) => Err(OpError::new(
                "invalid_argument",
                format!("{users} users over {c} clients is fewer than --batch {} per client: raise --users", base.batch),
            )),
            None => Ok(()),
        }
    };
    match workload {
        Workload::PresenceWrite | Workload::BatchQuery | Workload::Mixed => {
            let (clients, vias, conses, read_percent) = match workload {
                Workload::PresenceWrite => (
                    defaults(&a.clients, &[1, 16, 64, 256]),
                    defaults(&a.via, &[Via::Leader]),
                    vec![Cons::Linearizable],
                    0,
                ),
                Workload::BatchQuery => (
                    defaults(&a.clients, &[16]),
                    defaults(&a.via, &[Via::Follower, Via::Leader]),
                    defaults(&a.consistency, &[Cons::Linearizable, Cons::Local]),
                    100,
                ),
                _ => (
                    defaults(&a.clients, &[16]),
                    defaults(&a.via, &[Via::All]),
                    defaults(&a.consistency, &[Cons::Linearizable]),
                    a.read_percent,
                ),
            };
            if read_percent < 100 {
                check_slices(&clients)?;
            }
            if workload != Workload::PresenceWrite && !a.no_preload {
                let r = load(topo, users, load_batch, a.load_clients, op_timeout).await?;
                report.results.push(r);
            }
            for &via in &vias {
                let addrs = addrs_for(topo, via)?;
                for &cons in &conses {
                    for &c in &clients {
                        let conns = open_conns(topo, &addrs, c.max(1)).await?;
                        let cfg = LoopCfg { read_percent, clients: c.max(1), cons, ..base.clone() };
                        let cpu = CpuWatch::start(topo, a.warmup, a.duration);
                        let out = closed_loop(conns, cfg, a.warmup, a.duration).await;
                        let mut r = BenchResult::new(topo.system, workload.name());
                        r.via = via.name().into();
                        r.clients = c.max(1);
                        r.users = users;
                        if read_percent > 0 {
                            r.consistency = Some(cons.name().into());
                            r.ids = base.ids.min(users as usize);
                        }
                        if read_percent < 100 {
                            r.batch = base.batch;
                        }
                        r.read_percent = (workload == Workload::Mixed).then_some(read_percent);
                        r.set_mixed(out.reads, out.writes, &out.errors, out.elapsed);
                        cpu.finish(&mut r).await;
                        r.nodes = node_mems(topo, &a.pids);
                        report.results.push(r);
                    }
                }
            }
        }
        Workload::Memory => {
            let before = node_mems(topo, &a.pids);
            let mut r = load(topo, users, load_batch, a.load_clients, op_timeout).await?;
            // Let allocators and caches settle before reading RSS.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = node_mems(topo, &a.pids);
            r.workload = "memory".into();
            r.nodes = after
                .into_iter()
                .map(|mut m| {
                    if let (Some(now), Some(b)) = (
                        m.rss_bytes,
                        before.iter().find(|b| b.pid == m.pid).and_then(|b| b.rss_bytes),
                    ) {
                        m.bytes_per_user = Some(now.saturating_sub(b) as f64 / users as f64);
                    }
                    if let (Some(now), Some(b)) = (
                        m.anon_rss_bytes,
                        before.iter().find(|b| b.pid == m.pid).and_then(|b| b.anon_rss_bytes),
                    ) {
                        m.anon_bytes_per_user = Some(now.saturating_sub(b) as f64 / users as f64);
                    }
                    m
                })
                .collect();
            r.bytes_per_user = r.nodes.iter().filter_map(|m| m.bytes_per_user).reduce(f64::max);
            report.results.push(r);
        }
        Workload::Stream => {
            let rs = super::stream::run(topo, a, users).await?;
            for mut r in rs {
                r.nodes = node_mems(topo, &a.pids);
                report.results.push(r);
            }
        }
        Workload::Messages => {
            for mut r in super::messages::run(topo, a, op_timeout).await? {
                r.nodes = node_mems(topo, &a.pids);
                report.results.push(r);
            }
        }
        Workload::Watch => {
            let clients = defaults(&a.clients, &[16]);
            check_slices(&clients)?;
            for mut r in super::watch::run(topo, a, users, op_timeout).await? {
                r.nodes = node_mems(topo, &a.pids);
                report.results.push(r);
            }
        }
        Workload::Heartbeat => {
            let mut r = super::heartbeat::run(topo, a).await?;
            r.nodes = node_mems(topo, &a.pids);
            report.results.push(r);
        }
        Workload::Restart => {
            if !a.no_preload {
                let r = load(topo, users, load_batch, a.load_clients, op_timeout).await?;
                report.results.push(r);
            }
            let mut r = super::restart::run(topo, a, users).await?;
            // The restarted node is a new process: its memory is in the
            // report's nodes (see `bench`).
            r.nodes = node_mems(topo, &a.pids);
            report.results.push(r);
        }
        Workload::Failover => {
            let leader: &NodeInfo =
                topo.leader().ok_or_else(|| OpError::new("no_leader", "no leader"))?;
            let pid = a.leader_pid.or(leader.pid).ok_or_else(|| {
                OpError::new(
                    "no_leader_pid",
                    format!(
                        "cannot find the process of leader {} ({}): pass --leader-pid",
                        leader.number, leader.addr
                    ),
                )
            })?;
            let clients = defaults(&a.clients, &[16])[0].max(1);
            check_slices(&[clients])?;
            let followers: Vec<String> = topo.followers().iter().map(|n| n.addr.clone()).collect();
            if followers.is_empty() {
                return Err(OpError::new("no_node", "failover needs at least one follower"));
            }
            let conns = open_conns(topo, &followers, clients).await?;
            let before_kill = a.warmup.max(Duration::from_secs(1));
            let cfg = LoopCfg { clients, timeline: true, ..base.clone() };
            let mut node_before = node_mems(topo, &a.pids);
            let killer = tokio::spawn(async move {
                tokio::time::sleep(before_kill + Duration::from_millis(20)).await;
                // The clock starts once kill(2) has returned: from then on the
                // process runs no more code. (Before it, `kill` is still being
                // spawned and the leader still commits.)
                procs::kill9(pid).map(|_| Instant::now())
            });
            // Measure everything: before the kill, and `duration` after it.
            // Herald: also clock how long until the numbered master is back
            // (the lowest-numbered surviving node leads again).
            let master_watch = (topo.system == System::Herald).then(|| {
                let survivors: Vec<(u64, String)> = topo
                    .nodes
                    .iter()
                    .filter(|n| n.number != leader.number)
                    .map(|n| (n.number, n.addr.clone()))
                    .collect();
                let limit = before_kill + a.duration + Duration::from_secs(10);
                tokio::spawn(watch_master(survivors, limit))
            });
            let out = closed_loop(conns, cfg, Duration::ZERO, before_kill + a.duration).await;
            let killed_at = killer
                .await
                .map_err(|e| OpError::new("internal", e.to_string()))?
                .map_err(|e| OpError::new("kill_failed", e.to_string()))?;
            let master_back = match master_watch {
                Some(h) => h.await.ok().flatten(),
                None => None,
            };
            let f = failover_stats(&out.timeline, killed_at);
            let mut r = BenchResult::new(topo.system, "failover");
            r.via = Via::Follower.name().into();
            r.clients = clients;
            r.batch = base.batch;
            r.users = users;
            r.set_mixed(out.reads, out.writes, &out.errors, out.elapsed);
            r.failover_ms = f.first_success_ms;
            r.max_gap_ms = f.max_gap_ms;
            r.master_back_ms =
                master_back.map(|t| t.saturating_duration_since(killed_at).as_secs_f64() * 1000.0);
            r.killed_pid = Some(pid);
            for m in &mut node_before {
                if m.pid == Some(pid) {
                    m.role = "killed leader".into();
                }
            }
            r.nodes = node_before;
            report.results.push(r);
        }
    }
    Ok(())
}

/// The CPU of the servers and of the benchmark itself over a run's
/// measured window (after its warm-up), in cores: the benchmark runs on
/// the same cores as the servers, so a run where it takes much of them
/// drives the servers less hard than they could be driven.
struct CpuWatch(tokio::task::JoinHandle<(Option<f64>, Option<f64>)>);

impl CpuWatch {
    fn start(topo: &Topology, warmup: Duration, duration: Duration) -> Self {
        let servers: Vec<u32> = topo.nodes.iter().filter_map(|n| n.pid).collect();
        CpuWatch(tokio::spawn(async move {
            // closed_loop starts its clients 20 ms from now.
            tokio::time::sleep(Duration::from_millis(20) + warmup).await;
            let s = procstat::CpuClock::start(&servers);
            let me = procstat::CpuClock::start(&[std::process::id()]);
            tokio::time::sleep(duration).await;
            (s.cores(), me.cores())
        }))
    }

    async fn finish(self, r: &mut BenchResult) {
        if let Ok((servers, me)) = self.0.await {
            if let Some(c) = servers {
                r.measure("servers CPU (cores)", c);
            }
            if let Some(c) = me {
                r.measure("bench CPU (cores)", c);
            }
        }
    }
}

/// Polls the survivors until one reports the lowest-numbered survivor as
/// master (the numbered master is back); the instant it was first seen.
async fn watch_master(survivors: Vec<(u64, String)>, limit: Duration) -> Option<Instant> {
    let want = survivors.iter().map(|(n, _)| *n).min()?;
    let start = Instant::now();
    let mut clients = Vec::new();
    for (_, addr) in &survivors {
        if let Ok(c) = target::herald(addr).await {
            clients.push(c);
        }
    }
    // Give the kill time to happen: the old master is still master before it.
    let mut seen_other = false;
    while start.elapsed() < limit {
        for c in &clients {
            if let Ok(s) = c.status().await {
                if s.master != Some(want) {
                    seen_other = true;
                } else if seen_other {
                    return Some(Instant::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What the clients saw around the leader's death.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failover {
    /// From the kill to the answer of the first write sent after it that
    /// succeeded (None: no such write).
    pub first_success_ms: Option<f64>,
    /// Longest time without any successful answer, from the last one before
    /// the kill (or the kill) to the first after.
    pub max_gap_ms: Option<f64>,
}

/// Failover figures from every operation's (start, end, ok) and the kill
/// instant. Writes that started before the kill and succeeded after it may
/// have been committed by the old leader, so they do not end the outage.
pub fn failover_stats(timeline: &[(Instant, Instant, bool)], killed_at: Instant) -> Failover {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let first =
        timeline.iter().filter(|(s, _, ok)| *ok && *s >= killed_at).map(|(_, e, _)| *e).min();
    let last_before =
        timeline.iter().filter(|(_, e, ok)| *ok && *e <= killed_at).map(|(_, e, _)| *e).max();
    Failover {
        first_success_ms: first.map(|e| ms(e - killed_at)),
        max_gap_ms: first.map(|e| ms(e - last_before.unwrap_or(killed_at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client slices are disjoint and cover every user; with fewer users
    /// than clients each client still gets one.
    #[test]
    fn bench_run_slices_cover_users() {
        let mut covered = Vec::new();
        for i in 0..7 {
            let (lo, hi) = slice_of(i, 7, 100);
            covered.extend(lo..hi);
        }
        assert_eq!(covered, (0..100).collect::<Vec<_>>());
        assert_eq!(slice_of(5, 8, 3), (1, 2));
        assert_eq!((slice_of(0, 8, 3), slice_of(1, 8, 3)), ((0, 1), (1, 2)));
        assert_eq!(slice_of(0, 1, 1), (0, 1));
    }

    /// A writer logs its slice in, then out, wrapping inside its slice.
    #[test]
    fn bench_run_writer_alternates_login_logout() {
        let mut w = Writer::new((10, 13));
        assert_eq!(w.next(2), vec![(10, true), (11, true)]);
        assert_eq!(w.next(2), vec![(12, true), (10, false)]);
        assert_eq!(w.next(3), vec![(11, false), (12, false), (10, true)]);
    }

    /// Query ids are distinct and in range; asking for more than exist
    /// gives them all.
    #[test]
    fn bench_run_rng_distinct_ids() {
        let mut r = Rng::new(7);
        let v = r.distinct(1000, 5000);
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!((v.len(), set.len()), (1000, 1000));
        assert!(v.iter().all(|&x| x < 5000));
        assert_eq!(r.distinct(10, 4), vec![0, 1, 2, 3]);
        let hits = (0..10_000).filter(|_| r.below(100) < 90).count();
        assert!((8_800..9_200).contains(&hits), "{hits}");
    }

    /// Failover is timed to the first success of a write sent after the
    /// kill: an old write answered after the kill does not count, and the
    /// gap runs from the last success before the kill.
    #[test]
    fn bench_run_failover_stats() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let kill = at(1000);
        let timeline = vec![
            (at(900), at(950), true),  // last success before the kill
            (at(990), at(1100), true), // in flight at the kill: ignored
            (at(1010), at(1200), false),
            (at(1300), at(1750), true), // first real success: 750 ms
            (at(1800), at(1810), true),
        ];
        let f = failover_stats(&timeline, kill);
        assert_eq!(f.first_success_ms, Some(750.0));
        assert_eq!(f.max_gap_ms, Some(800.0));
        let none = failover_stats(&[(at(1100), at(1200), false)], kill);
        assert_eq!(none, Failover { first_success_ms: None, max_gap_ms: None });
    }
}

//! `bench heartbeat`: `--sessions` gateway sessions
//! (`herald.v1.Gateway/Session`) on one node, heartbeating; Herald-only.
//!
//! Reports, for the node: CPU in cores while the sessions only heartbeat
//! (from `/proc/PID/stat`), RssAnon growth per session (opening them), and
//! the Raft log entries appended while they heartbeat (the node's
//! `last_log_index` before and after: heartbeats must stay off the log).
//!
//! Sessions are driven lean (not [`herald_client::session::Session`], whose
//! reconnecting task and event queues would make the benchmark heavier than
//! the node): one task per session, its heartbeat ticks spread over the
//! period. By default each session has its own TCP connection, as real
//! clients do; on loopback the connections come from many source
//! addresses (127.x.y.z, [`CONNS_PER_SOURCE_IP`] each), so neither the
//! ephemeral ports of one address nor the node's per-address connection
//! cap runs out. The node still needs `<limits max-connections>` above the
//! connection count, `<gateway max-sessions>` above the sessions and an
//! open-file limit above both; the benchmark raises its own.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_client::proto::gateway_client::GatewayClient;
use herald_client::proto::{self as pb, client_frame, server_frame};
use herald_client::ConnectOptions;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::messages::{auth_key, token};
use super::procstat::{self, CpuClock};
use super::report::BenchResult;
use super::target::{OpError, System, Topology, CLIENT_TYPE};
use super::{RunArgs, Via};

/// Sessions being opened at once: enough to open 100,000 in tens of
/// seconds, few enough not to overflow the node's accept backlog.
pub const OPEN_CONCURRENCY: usize = 256;
/// Connections from one loopback source address: under the node's default
/// `<limits max-connections-per-ip>` (256) and far under the ~28,000
/// ephemeral ports of one address.
pub const CONNS_PER_SOURCE_IP: usize = 250;
/// File descriptors the benchmark keeps for itself beside its connections.
const SPARE_FDS: u64 = 1024;
/// Time for the logins of the opened sessions to be applied before the
/// measured window starts.
const SETTLE: Duration = Duration::from_secs(2);
/// How long one session may take to be welcomed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The loopback source address of connection `k` (127.0.0.1 onwards,
/// [`CONNS_PER_SOURCE_IP`] connections each; never x.x.x.0 or .255).
pub fn source_ip(k: usize) -> IpAddr {
    let n = (k / CONNS_PER_SOURCE_IP) as u32;
    let (hi, lo) = (n / 254, n % 254);
    let (b, c) = ((hi / 256) as u8, (hi % 256) as u8);
    IpAddr::V4(Ipv4Addr::new(127, b, c, (lo + 1) as u8))
}

/// Counters shared by every session task.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    ended: AtomicU64,
}

async fn open_conn(addr: &str, k: usize, loopback: bool) -> Result<Channel, OpError> {
    let mut ep = herald_client::endpoint(addr, &ConnectOptions::default())?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if loopback {
        ep = ep.local_address(Some(source_ip(k)));
    }
    ep.connect().await.map_err(|e| OpError::new("connect", format!("{addr}: {e}")))
}

/// Opens one session on `ch` and spawns its heartbeat task.
async fn open_session(
    ch: Channel,
    uid: String,
    tok: String,
    every: Option<Duration>,
    counters: Arc<Counters>,
    offset_seed: u64,
) -> Result<tokio::task::JoinHandle<()>, OpError> {
    let (tx, rx) = mpsc::channel::<pb::ClientFrame>(4);
    let hello = pb::Hello { uid, token: tok, client: CLIENT_TYPE.into(), sid: 0 };
    tx.send(pb::ClientFrame { frame: Some(client_frame::Frame::Hello(hello)) })
        .await
        .map_err(|_| OpError::new("closed", "session closed"))?;
    let mut inbound = GatewayClient::new(ch).session(ReceiverStream::new(rx)).await?.into_inner();
    let welcome = loop {
        match inbound.message().await? {
            Some(pb::ServerFrame { frame: Some(server_frame::Frame::Welcome(w)) }) => break w,
            Some(pb::ServerFrame { frame: Some(server_frame::Frame::Error(e)) }) => {
                return Err(OpError::new(&e.code, e.message))
            }
            Some(_) => continue,
            None => return Err(OpError::new("closed", "the gateway closed the session")),
        }
    };
    // As the client library does: a little more often than asked.
    let period = every.unwrap_or(Duration::from_millis((welcome.heartbeat_ms * 2 / 3).max(50)));
    let offset = Duration::from_nanos(offset_seed % period.as_nanos().max(1) as u64);
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                f = inbound.message() => match f {
                    Ok(Some(pb::ServerFrame { frame: Some(server_frame::Frame::Heartbeat(_)) })) => {
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                },
                _ = tick.tick() => {
                    seq += 1;
                    let f = pb::ClientFrame { frame: Some(client_frame::Frame::Heartbeat(pb::Heartbeat { seq })) };
                    if tx.send(f).await.is_err() {
                        break;
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counters.ended.fetch_add(1, Ordering::Relaxed);
    }))
}

async fn last_log_index(addr: &str) -> Result<u64, OpError> {
    Ok(super::target::herald(addr).await?.status().await?.last_log_index)
}

pub async fn run(topo: &Topology, a: &RunArgs) -> Result<BenchResult, OpError> {
    if topo.system != System::Herald {
        return Err(OpError::new("unsupported", "heartbeat is Herald-only (etcd has no sessions)"));
    }
    let key = auth_key(a)?;
    let via = a.via.first().copied().unwrap_or(Via::Follower);
    let node = match via {
        Via::Leader => topo.leader(),
        _ => topo.followers().first().copied().or(topo.leader()),
    }
    .ok_or_else(|| OpError::new("no_node", "no node to open sessions on"))?
    .clone();
    let sessions = a.sessions.max(1);
    let per_conn = a.sessions_per_conn.max(1);
    let conns = sessions.div_ceil(per_conn);
    let loopback = super::target::host_port(&node.addr)
        .map(|(h, _)| super::procs::is_local_host(&h))
        .unwrap_or(false);
    if let Some(limit) = procstat::raise_own_nofile(conns as u64 + SPARE_FDS) {
        if limit < conns as u64 + SPARE_FDS {
            return Err(OpError::new(
                "fd_limit",
                format!("{conns} connections need {} open files; this process may have {limit} (ulimit -n, as root: prlimit)", conns as u64 + SPARE_FDS),
            ));
        }
    }
    let node_nofile = node.pid.and_then(procstat::nofile_limits).map(|l| l.0);
    let anon_before = node.pid.and_then(procstat::rss_anon);
    let log_before_open = last_log_index(&node.addr).await?;

    // Open: connections first (each carries `per_conn` sessions), then the
    // sessions, OPEN_CONCURRENCY at a time.
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let opened_at = Instant::now();
    let mut set = JoinSet::new();
    // Run-unique uids: a later run on the same cluster opens new users.
    let tag = {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}", ns % (1 << 40))
    };
    for c in 0..conns {
        let (gate, counters, key, addr) =
            (gate.clone(), counters.clone(), key.clone(), node.addr.clone());
        let every = a.heartbeat_every;
        let n = per_conn.min(sessions - c * per_conn);
        let tag = tag.clone();
        set.spawn(async move {
            let _permit =
                gate.acquire_owned().await.map_err(|_| OpError::new("internal", "gate"))?;
            let ch = tokio::time::timeout(OPEN_TIMEOUT, open_conn(&addr, c, loopback))
                .await
                .map_err(|_| OpError::new("timeout", "connect timed out"))??;
            let mut tasks = Vec::with_capacity(n);
            let mut first_err = None;
            for s in 0..n {
                let i = c * per_conn + s;
                let uid = format!("hb-{tag}-{i}");
                let tok = token(&key, &uid);
                let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                match tokio::time::timeout(
                    OPEN_TIMEOUT,
                    open_session(ch.clone(), uid, tok, every, counters.clone(), seed),
                )
                .await
                {
                    Ok(Ok(t)) => tasks.push(t),
                    Ok(Err(e)) => first_err = first_err.or(Some(e)),
                    Err(_) => first_err = first_err.or(Some(OpError::new("timeout", "no welcome"))),
                }
            }
            Ok::<_, OpError>((tasks, first_err, n))
        });
    }
    let mut tasks = Vec::with_capacity(sessions);
    let mut failed = 0u64;
    let mut first_error: Option<OpError> = None;
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| OpError::new("internal", e.to_string()))? {
            Ok((t, e, n)) => {
                failed += (n - t.len()) as u64;
                tasks.extend(t);
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                failed += per_conn as u64;
                first_error = first_error.or(Some(e));
            }
        }
    }
    let open_s = opened_at.elapsed().as_secs_f64();
    let open = tasks.len();
    if open == 0 {
        return Err(first_error.unwrap_or_else(|| OpError::new("no_session", "no session opened")));
    }
    tokio::time::sleep(SETTLE).await;
    let anon_open = node.pid.and_then(procstat::rss_anon);
    let log_before = last_log_index(&node.addr).await?;
    let acked0 = counters.acked.load(Ordering::Relaxed);
    let sent0 = counters.sent.load(Ordering::Relaxed);
    let node_cpu = CpuClock::start(&node.pid.into_iter().collect::<Vec<_>>());
    let own_cpu = CpuClock::start(&[std::process::id()]);
    let t0 = Instant::now();
    tokio::time::sleep(a.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let node_cores = node_cpu.cores();
    let own_cores = own_cpu.cores();
    let log_after = last_log_index(&node.addr).await?;
    let acked = counters.acked.load(Ordering::Relaxed) - acked0;
    let sent = counters.sent.load(Ordering::Relaxed) - sent0;
    let ended = counters.ended.load(Ordering::Relaxed);
    let anon_end = node.pid.and_then(procstat::rss_anon);
    for t in &tasks {
        t.abort();
    }

    let mut r = BenchResult::new(System::Herald, "heartbeat");
    r.via = via.name().into();
    r.clients = open;
    r.users = sessions as u64;
    r.elapsed_s = elapsed;
    r.ops = acked;
    r.errors = failed + ended;
    r.ops_per_s = acked as f64 / elapsed.max(1e-9);
    r.setting = format!("sessions={sessions} per-conn={per_conn}");
    if let Some(e) = first_error {
        r.error_codes
            .insert(e.code.clone(), super::report::ErrorInfo { count: failed, example: e.message });
    }
    r.measure("sessions open", open as f64);
    r.measure("sessions opened/s", open as f64 / open_s.max(1e-9));
    r.measure("heartbeats/s", r.ops_per_s);
    if let Some(c) = node_cores {
        r.measure("node CPU (cores)", c);
    }
    if let (Some(b), Some(o)) = (anon_before, anon_open) {
        r.measure("RssAnon per session (B)", o.saturating_sub(b) as f64 / open as f64);
    }
    if let Some(e) = anon_end {
        r.measure("node RssAnon (MB)", e as f64 / (1 << 20) as f64);
    }
    r.measure("log entries opening sessions", log_before.saturating_sub(log_before_open) as f64);
    r.measure("log entries while heartbeating", log_after.saturating_sub(log_before) as f64);
    r.measure("sessions ended while heartbeating", ended as f64);
    if let Some(c) = own_cores {
        r.measure("bench CPU (cores)", c);
    }
    r.measure("heartbeats sent/s", sent as f64 / elapsed.max(1e-9));
    if let Some(n) = node_nofile {
        r.measure("node open-file limit", n as f64);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source addresses stay on loopback, change every
    /// CONNS_PER_SOURCE_IP connections, and never end in .0 or .255.
    #[test]
    fn bench_heartbeat_source_ips() {
        assert_eq!(source_ip(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_ip(CONNS_PER_SOURCE_IP - 1), source_ip(0));
        assert_eq!(source_ip(CONNS_PER_SOURCE_IP), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let mut seen = std::collections::HashSet::new();
        for k in (0..1_000_000).step_by(CONNS_PER_SOURCE_IP) {
            let IpAddr::V4(v) = source_ip(k) else { panic!() };
            let o = v.octets();
            assert_eq!(o[0], 127);
            assert!(o[3] != 0 && o[3] != 255, "{v}");
            assert!(seen.insert(v), "{v} twice");
        }
    }
}

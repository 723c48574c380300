//! Load balancing (MISSION M5): each node measures its own load (open
//! sessions against its maximum, and the CPU the process used over the last
//! interval), asks every other member for theirs on the sync port (outside
//! the Raft log), and answers "which gateway?" with the least loaded node
//! that answered recently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_proto::raft::RaftBytes;
use herald_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::Gateway;
use crate::raft::{codec, RaftNode};

/// One node's load, as shared between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadInfo {
    pub node: u64,
    pub publish: String,
    pub sessions: u64,
    pub max_sessions: u64,
    /// Share of the machine's CPU the process used recently, 0..1.
    pub cpu: f64,
}

impl LoadInfo {
    /// 0..1: the larger of session fill and CPU use.
    pub fn load(&self) -> f64 {
        let fill = self.sessions as f64 / self.max_sessions.max(1) as f64;
        fill.max(self.cpu).clamp(0.0, 1.0)
    }
}

/// This node's load and what it last heard from the others.
pub struct LoadBoard {
    me: u64,
    publish: String,
    max_sessions: u64,
    sessions: AtomicU64,
    /// CPU share in millionths (an atomic f64).
    cpu_ppm: AtomicU64,
    peers: Mutex<HashMap<u64, (LoadInfo, Instant)>>,
    /// How often peers are asked (`load-poll-ms`); an answer counts as
    /// fresh for three periods.
    period: Duration,
}

impl LoadBoard {
    pub fn new(me: u64, publish: String, max_sessions: usize, period: Duration) -> Self {
        LoadBoard {
            me,
            publish,
            max_sessions: max_sessions as u64,
            sessions: AtomicU64::new(0),
            cpu_ppm: AtomicU64::new(0),
            peers: Mutex::new(HashMap::new()),
            period,
        }
    }

    pub fn set_sessions(&self, n: usize) {
        self.sessions.store(n as u64, Ordering::Relaxed);
    }

    /// This node's load now.
    pub fn mine(&self) -> LoadInfo {
        LoadInfo {
            node: self.me,
            publish: self.publish.clone(),
            sessions: self.sessions.load(Ordering::Relaxed),
            max_sessions: self.max_sessions,
            cpu: self.cpu_ppm.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    fn heard(&self, info: LoadInfo) {
        self.peers.lock().expect("peers").insert(info.node, (info, Instant::now()));
    }

    /// Every member with its load; members not heard from recently are
    /// unhealthy. This node is always healthy to itself.
    pub fn candidates(&self, node: &RaftNode) -> Vec<pb::GatewayInfo> {
        let fresh = self.period * 3;
        let peers = self.peers.lock().expect("peers");
        let mut out = Vec::new();
        for (id, addr) in node.members() {
            let (info, age, healthy) = if id == self.me {
                (self.mine(), Duration::ZERO, true)
            } else {
                match peers.get(&id) {
                    Some((i, at)) => (i.clone(), at.elapsed(), at.elapsed() <= fresh),
                    None => (
                        LoadInfo {
                            node: id,
                            publish: addr.publish.clone(),
                            sessions: 0,
                            max_sessions: 1,
                            cpu: 0.0,
                        },
                        Duration::MAX,
                        false,
                    ),
                }
            };
            out.push(pb::GatewayInfo {
                node: id,
                publish: if info.publish.is_empty() { addr.publish } else { info.publish.clone() },
                sessions: info.sessions,
                max_sessions: info.max_sessions,
                load: info.load(),
                healthy,
                age_ms: age.as_millis().min(u64::MAX as u128) as u64,
                zone: addr.zone.clone(),
            });
        }
        out.sort_by_key(|g| g.node);
        out
    }

    /// The least loaded healthy node of the client's zone (`zone`, else
    /// the zone of this node), or of all zones when that one has none; among
    /// nodes within 5 % of the least load, the uid's hash picks one, so that
    /// a burst of clients spreads. The answer says why.
    pub fn pick(&self, node: &RaftNode, uid: &str, zone: &str) -> pb::PickGatewayResponse {
        let candidates = self.candidates(node);
        let zone = if zone.is_empty() {
            candidates
                .iter()
                .find(|g| g.node == self.me)
                .map(|g| g.zone.clone())
                .unwrap_or_default()
        } else {
            zone.to_string()
        };
        let (healthy, reason) = zone_first(&candidates, &zone);
        let min = healthy.iter().map(|g| g.load).fold(f64::INFINITY, f64::min);
        let near: Vec<&&pb::GatewayInfo> =
            healthy.iter().filter(|g| g.load <= min + 0.05).collect();
        let best = if near.is_empty() {
            None
        } else {
            let h = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            Some((**near[(h % near.len() as u64) as usize]).clone())
        };
        let reason = if best.is_some() { reason } else { "no healthy gateway is known".into() };
        pb::PickGatewayResponse { best, candidates, reason }
    }
}

/// The healthy candidates to pick from: those in `zone` when there are
/// any, else every healthy one; and the reason to give.
fn zone_first<'a>(
    candidates: &'a [pb::GatewayInfo],
    zone: &str,
) -> (Vec<&'a pb::GatewayInfo>, String) {
    let healthy = candidates.iter().filter(|g| g.healthy);
    let local: Vec<&pb::GatewayInfo> = healthy.clone().filter(|g| g.zone == zone).collect();
    if !local.is_empty() {
        return (local, format!("least loaded healthy gateway in zone {zone}"));
    }
    let all: Vec<&pb::GatewayInfo> = healthy.collect();
    (all, format!("no healthy gateway in zone {zone}: least loaded healthy gateway of any zone"))
}

/// Measures this process's CPU share from /proc (Linux); 0 elsewhere.
struct CpuMeter {
    last: Option<(u64, Instant)>,
    cores: f64,
}

impl CpuMeter {
    fn new() -> Self {
        CpuMeter {
            last: None,
            cores: std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0),
        }
    }

    /// utime + stime of this process in clock ticks (USER_HZ = 100 on Linux).
    fn ticks() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    fn sample(&mut self) -> f64 {
        let now = Instant::now();
        let Some(t) = Self::ticks() else { return 0.0 };
        let share = match self.last {
            Some((t0, at)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                ((t.saturating_sub(t0)) as f64 / 100.0) / secs / self.cores
            }
            None => 0.0,
        };
        self.last = Some((t, now));
        share.clamp(0.0, 1.0)
    }
}

/// Every `load_poll_ms`: measure this node, ask every other member.
pub async fn share(gw: Arc<Gateway>) {
    let period = gw.load.period;
    let mut cpu = CpuMeter::new();
    loop {
        gw.load.cpu_ppm.store((cpu.sample() * 1e6) as u64, Ordering::Relaxed);
        let others: Vec<u64> = gw
            .node
            .members()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| *id != gw.node.id)
            .collect();
        let asks = others.into_iter().map(|id| {
            let gw = gw.clone();
            async move {
                let mut c = super::peer::client(&gw.node, id).ok()?;
                let r = tokio::time::timeout(period, c.load(RaftBytes { data: Vec::new() }))
                    .await
                    .ok()?
                    .ok()?;
                codec::decode::<LoadInfo>(&r.into_inner().data).ok()
            }
        });
        for info in futures::future::join_all(asks).await.into_iter().flatten() {
            gw.load.heard(info);
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pick prefers healthy gateways of the client's zone, even more
    /// loaded ones, and falls back to every zone only when its own has no
    /// healthy gateway; the reason says which.
    #[test]
    fn zone_first_prefers_the_clients_zone() {
        let g = |node: u64, zone: &str, load: f64, healthy: bool| pb::GatewayInfo {
            node,
            publish: format!("h:{node}"),
            sessions: 0,
            max_sessions: 10,
            load,
            healthy,
            age_ms: 0,
            zone: zone.into(),
        };
        let c = vec![g(1, "dc1", 0.1, true), g(2, "dc2", 0.9, true), g(3, "dc2", 0.2, false)];
        let (pick, why) = zone_first(&c, "dc2");
        assert_eq!(pick.iter().map(|g| g.node).collect::<Vec<_>>(), vec![2]);
        assert!(why.contains("in zone dc2"), "{why}");
        let (pick, why) = zone_first(&c, "dc3");
        assert_eq!(pick.iter().map(|g| g.node).collect::<Vec<_>>(), vec![1, 2]);
        assert!(why.contains("no healthy gateway in zone dc3"), "{why}");
    }

    /// Load is the larger of session fill and CPU, clamped to 0..1.
    #[test]
    fn gateway_load_measure() {
        let mut i =
            LoadInfo { node: 1, publish: String::new(), sessions: 50, max_sessions: 100, cpu: 0.2 };
        assert_eq!(i.load(), 0.5);
        i.cpu = 0.9;
        assert_eq!(i.load(), 0.9);
        i.sessions = 500;
        assert_eq!(i.load(), 1.0);
    }

    /// The CPU meter reads /proc/self/stat and reports a share in 0..1.
    #[test]
    fn gateway_cpu_meter_reads_proc() {
        let mut m = CpuMeter::new();
        assert!(CpuMeter::ticks().is_some(), "/proc/self/stat parses");
        m.sample();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let s = m.sample();
        assert!((0.0..=1.0).contains(&s));
    }
}

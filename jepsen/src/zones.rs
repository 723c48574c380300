//! Zones (issue 16): data centers on one machine. `--zones Z` puts node i in
//! zone `z{i mod Z + 1}` (round-robin), `--replica` makes the last node a
//! replica (a non-voting member), and every sync-port link between two
//! zones goes through a userspace delaying proxy ([`herald_delay_proxy`],
//! the proxy of tests/tests/zones.rs) at `--wan-ms` ± `--wan-jitter-ms` each
//! way (Linux `netem` is not available on this kernel).
//!
//! How a link is wired: node i's own XML names, for each server j in another
//! zone, `sync-via="127.0.0.1:<PROXY_PORT_BASE + j + 1>"`. The proxy for the
//! link i→j listens there *inside node i's namespace* and dials j's sync
//! port from that namespace, so the packets j sees still come from i's
//! address: partitions (iptables rules on source addresses) cut proxied
//! links exactly as direct ones. Each direction of a TCP connection is
//! delayed on its own, so a Raft round trip between zones costs 2 × wan-ms.
//! Only the sync port (Raft, membership, snapshots) is delayed; the time
//! port (followers' clock polls) and the publish port (forwarded writes)
//! stay direct.
//!
//! The `zone` nemesis cuts one zone off: iptables rules drop every packet
//! between its nodes and the others (all ports), and the proxies of every
//! link into or out of the zone are cut as well (open connections close,
//! new ones are held silent); the heal undoes both.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use herald_delay_proxy::{Delay, DelayProxy};

use crate::netns;

/// First port of the proxies' listeners (node i's namespace, 127.0.0.1):
/// the link to server j listens on `PROXY_PORT_BASE + j + 1`; far from the
/// nodes' own ports (7101–7103) and from the ephemeral range.
pub const PROXY_PORT_BASE: u16 = 17_100;

/// The zone layout of a run (`--zones`, `--replica`, `--wan-ms`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ZoneLayout {
    /// Number of zones (≥ 1); node i is in zone `i % zones`.
    pub zones: usize,
    /// The last node is a replica (`role="replica"`).
    pub replica: bool,
    /// One-way delay between zones and its jitter (±), ms.
    pub wan_ms: u64,
    pub wan_jitter_ms: u64,
    /// `<reads max-staleness-ms>`: the default bound of bounded reads.
    pub max_staleness_ms: u64,
    /// `<reads when-stale>`: `forward` or `fail`.
    pub when_stale: String,
}

impl ZoneLayout {
    pub fn zone_of(&self, i: usize) -> usize {
        i % self.zones.max(1)
    }

    pub fn zone_name(&self, i: usize) -> String {
        format!("z{}", self.zone_of(i) + 1)
    }

    pub fn is_replica(&self, i: usize, n: usize) -> bool {
        self.replica && i + 1 == n
    }

    /// The extra attributes of server j's `<server>` line in node `me`'s
    /// file: its zone, its role, and (another zone) the proxy to dial.
    pub fn server_attrs(&self, me: usize, j: usize, n: usize) -> String {
        let mut s = format!(" zone=\"{}\"", self.zone_name(j));
        if self.is_replica(j, n) {
            s.push_str(" role=\"replica\"");
        }
        if self.zone_of(me) != self.zone_of(j) {
            s.push_str(&format!(" sync-via=\"127.0.0.1:{}\"", proxy_port(j)));
        }
        s
    }

    /// The `<reads>` element every node's file carries.
    pub fn reads_xml(&self) -> String {
        format!(
            "  <reads max-staleness-ms=\"{}\" when-stale=\"{}\"/>\n",
            self.max_staleness_ms, self.when_stale
        )
    }

    /// The links that cross zones: (from, to) node indices, both directions.
    pub fn wan_links(&self, n: usize) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i != j && self.zone_of(i) != self.zone_of(j) {
                    v.push((i, j));
                }
            }
        }
        v
    }

    /// The nodes of zone `z`.
    pub fn members(&self, z: usize, n: usize) -> Vec<usize> {
        (0..n).filter(|&i| self.zone_of(i) == z).collect()
    }

    /// Per-node drop lists cutting zone `z` off from every other zone.
    pub fn cut_grudge(&self, z: usize, n: usize) -> Vec<Vec<usize>> {
        (0..n)
            .map(|i| {
                (0..n)
                    .filter(|&j| j != i && (self.zone_of(i) == z) != (self.zone_of(j) == z))
                    .collect()
            })
            .collect()
    }
}

/// The command line of zones (`herald-jepsen test`, flattened).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ZoneArgs {
    /// Zones: node i goes into zone z(i mod ZONES + 1); sync-port links
    /// between zones go through a delaying proxy. 0: no zones (one flat
    /// cluster, no proxies, no zone reads).
    #[arg(long, default_value_t = 0)]
    pub zones: usize,
    /// With --zones: the last node is a replica (a non-voting member).
    #[arg(long)]
    pub replica: bool,
    /// One-way delay of every link between zones, ms.
    #[arg(long, default_value_t = 40)]
    pub wan_ms: u64,
    /// Uniform jitter (±) of that delay, ms.
    #[arg(long, default_value_t = 10)]
    pub wan_jitter_ms: u64,
    /// `<reads max-staleness-ms>` of the nodes: the bound of bounded reads.
    #[arg(long, default_value_t = 500)]
    pub max_staleness_ms: u64,
    /// `<reads when-stale>`: forward (to the leader) or fail (too_stale).
    #[arg(long, default_value = "forward", value_parser = ["forward", "fail"])]
    pub when_stale: String,
    /// With --zones: share of the presence reads that are bounded or
    /// min_revision reads (half each), the rest linearizable.
    #[arg(long, default_value_t = 0.5)]
    pub zone_read_share: f64,
}

impl ZoneArgs {
    /// The zone options as a command line tail ("" without `--zones`).
    pub fn command_args(&self) -> String {
        if self.zones == 0 {
            return String::new();
        }
        format!(
            " --zones {}{} --wan-ms {} --wan-jitter-ms {} --max-staleness-ms {} --when-stale {} --zone-read-share {}",
            self.zones,
            if self.replica { " --replica" } else { "" },
            self.wan_ms,
            self.wan_jitter_ms,
            self.max_staleness_ms,
            self.when_stale,
            self.zone_read_share
        )
    }

    /// The layout, or None without `--zones`.
    pub fn layout(&self) -> Option<ZoneLayout> {
        (self.zones > 0).then(|| ZoneLayout {
            zones: self.zones,
            replica: self.replica,
            wan_ms: self.wan_ms,
            wan_jitter_ms: self.wan_jitter_ms,
            max_staleness_ms: self.max_staleness_ms,
            when_stale: self.when_stale.clone(),
        })
    }
}

pub fn proxy_port(j: usize) -> u16 {
    PROXY_PORT_BASE + j as u16 + 1
}

/// The running WAN: one delaying proxy per cross-zone link.
pub struct Wan {
    pub layout: ZoneLayout,
    links: Vec<(usize, usize, DelayProxy)>,
}

impl Wan {
    /// Starts every cross-zone link's proxy in its dialling node's
    /// namespace (the proxy's thread inherits it from the thread that
    /// starts it, see `netns::run_in`).
    pub fn start(layout: &ZoneLayout, n: usize) -> Result<Wan> {
        let mut links = Vec::new();
        let delay = Delay { ms: layout.wan_ms, jitter_ms: layout.wan_jitter_ms };
        for (i, j) in layout.wan_links(n) {
            let listen: SocketAddr = format!("127.0.0.1:{}", proxy_port(j)).parse()?;
            let target: SocketAddr =
                format!("{}:{}", netns::node_ip(j), crate::db::SYNC_PORT).parse()?;
            let p =
                netns::run_in(&netns::node_ns(i), || DelayProxy::start_on(listen, target, delay))?
                    .with_context(|| format!("WAN proxy n{}→n{}", i + 1, j + 1))?;
            links.push((i, j, p));
        }
        Ok(Wan { layout: layout.clone(), links })
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Cuts every link into or out of zone `z`; returns how many.
    pub fn cut_zone(&self, z: usize) -> usize {
        let mut k = 0;
        for (i, j, p) in &self.links {
            if self.layout.zone_of(*i) == z || self.layout.zone_of(*j) == z {
                p.cut();
                k += 1;
            }
        }
        k
    }

    /// Heals every link.
    pub fn heal(&self) {
        for (_, _, p) in &self.links {
            p.heal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(zones: usize, replica: bool) -> ZoneLayout {
        ZoneLayout {
            zones,
            replica,
            wan_ms: 30,
            wan_jitter_ms: 5,
            max_staleness_ms: 500,
            when_stale: "fail".into(),
        }
    }

    /// Proves nodes go round-robin into zones, the last is the replica, and
    /// a node's file sends only cross-zone servers through its proxies.
    #[test]
    fn zones_round_robin_replica_and_sync_via() {
        let l = layout(3, true);
        let zones: Vec<String> = (0..4).map(|i| l.zone_name(i)).collect();
        assert_eq!(zones, ["z1", "z2", "z3", "z1"]);
        assert!(l.is_replica(3, 4) && !l.is_replica(2, 4));
        assert_eq!(l.server_attrs(0, 3, 4), " zone=\"z1\" role=\"replica\"");
        assert_eq!(l.server_attrs(0, 1, 4), " zone=\"z2\" sync-via=\"127.0.0.1:17102\"");
        assert_eq!(l.wan_links(4).len(), 4 * 3 - 2, "all ordered pairs but n1↔n4");
        assert!(!l.wan_links(4).contains(&(0, 3)));
    }

    /// Proves a zone cut drops exactly the pairs that cross the zone's
    /// border, symmetrically, and nothing inside it or between the others.
    #[test]
    fn zones_cut_grudge_isolates_one_zone() {
        let l = layout(3, false);
        let g = l.cut_grudge(0, 5); // z1 = n1, n4
        assert_eq!(g[0], vec![1, 2, 4]);
        assert_eq!(g[3], vec![1, 2, 4]);
        assert_eq!(g[1], vec![0, 3]);
        assert_eq!(g[2], vec![0, 3]);
        for (i, d) in g.iter().enumerate() {
            for &j in d {
                assert!(g[j].contains(&i), "asymmetric {i} {j}");
            }
        }
        assert_eq!(l.members(1, 5), vec![1, 4]);
    }
}

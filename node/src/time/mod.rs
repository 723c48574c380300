//! Time synchronisation (MISSION P5): every node answers SNTP on its
//! time-port; every node but the time master (= the Raft leader, the
//! numbered master) polls the master with sntpc and corrects its cluster
//! clock when it is off by more than the tolerance.

pub mod ntp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::clock::{ClusterClock, Reading};
use crate::config::{Server, TimeSync};
use ntp::Packet;

/// Longest a single SNTP exchange may take before it counts as lost.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest datagram read; NTP packets are 48 bytes plus optional extensions.
const MAX_DATAGRAM: usize = 1024;
/// A follower keeps running at its time master's measured rate for this many
/// poll intervals without a newer sample (a few lost polls), then at real
/// rate: cut off from a master that was slewing, it drifts from it by at most
/// (1 − SLEW_RATE) × this many intervals (5 s at the default 1 s interval,
/// 1 s at 200 ms).
const RATE_HOLD_POLLS: u64 = 10;
/// ... but for at least this long, so that with very short intervals two
/// samples can still be far enough apart (100 ms) to measure a rate.
const RATE_HOLD_MIN: Duration = Duration::from_secs(1);
/// While there is no leader (start-up, an election), the sync loop looks
/// again this soon rather than after a whole poll interval: a lone node
/// becomes its own time master within this of winning its election, not up
/// to `interval-ms` later (issue 18: a fresh embedded node showed no time
/// master for its first second). An election takes at least
/// `election-min-ms` (≥ 50 ms), so a shorter wait would only spin.
const LEADER_WAIT: Duration = Duration::from_millis(25);

/// This node's clock as shown in status: the HTTP API's type
/// (`GET /v1/cluster`), defined once in [`herald_proto::wire::cluster`].
pub use herald_proto::wire::cluster::ClockStatus;

/// The time service of one node.
pub struct TimeService {
    pub node: u64,
    pub clock: Arc<ClusterClock>,
    pub config: TimeSync,
    servers: Vec<Server>,
    status: Mutex<ClockStatus>,
}

impl TimeService {
    pub fn new(
        node: u64,
        clock: Arc<ClusterClock>,
        config: TimeSync,
        servers: Vec<Server>,
    ) -> Arc<Self> {
        Arc::new(TimeService {
            node,
            clock,
            config,
            servers,
            status: Mutex::new(ClockStatus::default()),
        })
    }

    pub fn status(&self) -> ClockStatus {
        self.status.lock().expect("status lock").clone()
    }

    fn is_synced_or_master(&self, master: Option<u64>) -> bool {
        master == Some(self.node) || self.status.lock().expect("status lock").last_sync_ms > 0
    }

    /// Answers SNTP requests on `socket` until the task is dropped.
    /// `master` tells who the time master is right now.
    pub async fn serve(
        self: Arc<Self>,
        socket: UdpSocket,
        master: impl Fn() -> Option<u64> + Send + 'static,
    ) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "time-port recv");
                    continue;
                }
            };
            let recv_us = self.clock.now_us();
            let Ok(req) = Packet::decode(&buf[..n]) else { continue };
            if req.mode != ntp::MODE_CLIENT || !(1..=4).contains(&req.version) {
                continue;
            }
            let reply = self.reply(&req, recv_us, master());
            if let Err(e) = socket.send_to(&reply.encode(), peer).await {
                tracing::debug!(error = %e, %peer, "time-port send");
            }
        }
    }

    /// Builds the server reply to a client request received at `recv_us`.
    fn reply(&self, req: &Packet, recv_us: i64, master: Option<u64>) -> Packet {
        let st = self.status();
        let is_master = master == Some(self.node);
        let (leap, stratum, reference_id, reference_us, root_delay) = if is_master {
            // The master's clock is the cluster's reference: a primary server
            // with the local clock as its source.
            (0, 1, *b"LOCL", recv_us - (recv_us % 1_000_000), 0)
        } else if self.is_synced_or_master(master) {
            let refid = st
                .time_master
                .and_then(|m| self.servers.iter().find(|s| s.number == m))
                .and_then(|s| s.host.parse::<std::net::Ipv4Addr>().ok())
                .map(|ip| ip.octets())
                .unwrap_or(*b"HRLD");
            (0, 2, refid, st.last_sync_ms as i64 * 1000, ntp::to_short((st.rtt_ms * 1000.0) as u64))
        } else {
            (ntp::LI_UNSYNC, 16, *b"INIT", 0, 0)
        };
        Packet {
            leap,
            version: req.version,
            mode: ntp::MODE_SERVER,
            stratum,
            poll: req.poll.clamp(4, 17),
            precision: -20,
            root_delay,
            root_dispersion: ntp::to_short(self.config.tolerance_ms * 1000),
            reference_id,
            reference_ts: if reference_us > 0 { ntp::to_ntp(reference_us) } else { 0 },
            origin_ts: req.transmit_ts,
            receive_ts: ntp::to_ntp(recv_us),
            transmit_ts: ntp::to_ntp(self.clock.now_us()),
        }
    }

    /// Polls the time master every interval until the task is dropped.
    /// `roles` answers (current master, lowest-numbered voter).
    pub async fn sync_loop(
        self: Arc<Self>,
        roles: impl Fn() -> (Option<u64>, Option<u64>) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While master: whether this node is the designated standard-time node.
        let mut as_master: Option<bool> = None;
        // The standard-time master's wall − local time at its last tick.
        let mut wall_offset: Option<i64> = None;
        loop {
            tick.tick().await;
            let (m, lowest) = roles();
            if m.is_none() {
                tick.reset_at(tokio::time::Instant::now() + LEADER_WAIT);
            }
            match m {
                Some(id) if id == self.node => {
                    let standard = lowest == Some(self.node);
                    if as_master != Some(standard) {
                        if standard {
                            tracing::info!("time master: own wall clock is the standard time");
                        } else {
                            // An interim master keeps the cluster time it has
                            // (tracked from the previous master), at real rate,
                            // so cluster time stays continuous across the change.
                            self.clock.keep_time();
                            tracing::info!("time master: keeping cluster time");
                        }
                        as_master = Some(standard);
                        wall_offset = None;
                    }
                    if standard {
                        // The designated standard-time node (lowest number):
                        // its own wall clock is the standard, re-read every
                        // tick. Forward: a step; backward: a slew.
                        let steer = self.clock.follow_wall();
                        let stepped = wall_offset.is_some_and(|w| {
                            (steer.wall_offset_us - w).abs() > self.tolerance_us()
                        });
                        if stepped && steer.error_us.abs() > self.tolerance_us() {
                            tracing::info!(
                                error_ms = steer.error_us as f64 / 1000.0,
                                "time master: wall clock stepped; cluster clock moving to it"
                            );
                        }
                        wall_offset = Some(steer.wall_offset_us);
                    }
                    let mut st = self.status.lock().expect("status lock");
                    st.offset_ms = 0.0;
                    st.rtt_ms = 0.0;
                    st.in_tolerance = true;
                    st.time_master = Some(id);
                    st.error = None;
                    st.last_sync_ms = self.clock.now_ms();
                }
                Some(id) => {
                    as_master = None;
                    self.poll_master(id).await
                }
                None => {
                    as_master = None;
                    let mut st = self.status.lock().expect("status lock");
                    st.error = Some(if st.last_sync_ms == 0 {
                        "no time master yet: waiting for a leader".into()
                    } else {
                        "no time master: running on the last correction".into()
                    });
                    st.time_master = None;
                }
            }
        }
    }

    fn tolerance_us(&self) -> i64 {
        (self.config.tolerance_ms * 1000) as i64
    }

    /// How long a follower trusts the rate it measured of its time master
    /// without a newer sample: [`RATE_HOLD_POLLS`] intervals, at least
    /// [`RATE_HOLD_MIN`].
    fn rate_hold(&self) -> Duration {
        Duration::from_millis(self.config.interval_ms.saturating_mul(RATE_HOLD_POLLS))
            .max(RATE_HOLD_MIN)
    }

    async fn poll_master(&self, master: u64) {
        let Some(server) = self.servers.iter().find(|s| s.number == master) else {
            self.fail(master, format!("time master {master} is not in the XML server list"));
            return;
        };
        let addr: SocketAddr =
            match tokio::net::lookup_host(server.time_addr()).await.ok().and_then(|mut a| a.next())
            {
                Some(a) => a,
                None => {
                    self.fail(master, format!("cannot resolve {}", server.time_addr()));
                    return;
                }
            };
        let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = match UdpSocket::bind(bind).await {
            Ok(s) => sntpc_net_tokio::UdpSocketWrapper::new(s),
            Err(e) => {
                self.fail(master, format!("bind: {e}"));
                return;
            }
        };
        // (error µs, rtt µs, our clocks right after the exchange)
        let mut best: Option<(i64, u64, Reading)> = None;
        let mut last_err = None;
        for _ in 0..self.config.samples {
            let ctx = sntpc::NtpContext::new(ClusterStamps { clock: &self.clock, us: 0 });
            match tokio::time::timeout(SAMPLE_TIMEOUT, sntpc::get_time(addr, &socket, ctx)).await {
                Ok(Ok(r)) if r.stratum() < 16 => {
                    let at = self.clock.reading();
                    if best.is_none_or(|(_, rtt, _)| r.roundtrip() < rtt) {
                        best = Some((r.offset(), r.roundtrip(), at));
                    }
                }
                Ok(Ok(r)) => {
                    last_err = Some(format!(
                        "time master {master} is unsynchronized (stratum {})",
                        r.stratum()
                    ))
                }
                Ok(Err(e)) => last_err = Some(format!("sntp: {e:?}")),
                Err(_) => last_err = Some("sntp: timed out".into()),
            }
        }
        let Some((error_us, rtt_us, at)) = best else {
            self.fail(master, last_err.unwrap_or_else(|| "no sample".into()));
            return;
        };
        // The exchange's timestamps are our cluster time, so its offset is
        // our error: master's cluster time − ours. Every sample corrects the
        // clock (phase and rate); only errors beyond the tolerance count as
        // corrections.
        let rate = self.clock.track(master, at, error_us, self.rate_hold());
        let in_tolerance = error_us.abs() <= self.tolerance_us();
        let mut st = self.status.lock().expect("status lock");
        if !in_tolerance {
            st.corrections += 1;
            tracing::info!(
                master,
                error_ms = error_us as f64 / 1000.0,
                rtt_ms = rtt_us as f64 / 1000.0,
                rate,
                "cluster clock corrected"
            );
        }
        st.offset_ms = error_us as f64 / 1000.0;
        st.rtt_ms = rtt_us as f64 / 1000.0;
        st.in_tolerance = in_tolerance;
        st.time_master = Some(master);
        st.error = None;
        st.last_sync_ms = self.clock.now_ms();
    }

    fn fail(&self, master: u64, error: String) {
        tracing::debug!(master, %error, "time sync failed");
        let mut st = self.status.lock().expect("status lock");
        st.error = Some(error);
        st.time_master = Some(master);
    }
}

/// sntpc's client timestamps (T1, T4): this node's cluster time, so that the
/// offset sntpc computes is our clock's error against the master's. (Wall
/// clock timestamps, as before issue 19, measured the error against a clock
/// that cluster time no longer follows, and a wall-clock step between T1 and
/// T4 made a sample's round trip negative — which sntpc clamps to its 1 µs
/// minimum, so that sample won the best-of-`samples` choice.) While the clock
/// slews the round trip reads short by the slew rate; the offset, taken at
/// the middle of the exchange, does not.
#[derive(Clone, Copy)]
struct ClusterStamps<'a> {
    clock: &'a ClusterClock,
    us: i64,
}

impl sntpc::NtpTimestampGenerator for ClusterStamps<'_> {
    fn init(&mut self) {
        self.us = self.clock.now_us();
    }

    fn timestamp_sec(&self) -> u64 {
        (self.us / 1_000_000) as u64
    }

    fn timestamp_subsec_micros(&self) -> u32 {
        (self.us % 1_000_000) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::wall_us;

    fn svc(node: u64) -> Arc<TimeService> {
        let servers = vec![Server {
            number: 1,
            host: "10.0.0.1".into(),
            sync_port: 1,
            time_port: 2,
            publish_port: 3,
            zone: crate::config::DEFAULT_ZONE.into(),
            role: Default::default(),
            sync_via: None,
        }];
        TimeService::new(node, Arc::new(ClusterClock::new()), TimeSync::default(), servers)
    }

    /// The master answers stratum 1 "LOCL"; a never-synced follower answers
    /// "unsynchronized" (LI 3, stratum 16); both echo the client's transmit
    /// timestamp as origin and keep its version.
    #[test]
    fn time_reply_fields() {
        let req = Packet {
            version: 3,
            mode: ntp::MODE_CLIENT,
            transmit_ts: 42,
            poll: 6,
            ..Default::default()
        };
        // The receive time as the serve loop takes it: from the same
        // cluster clock as the transmit time (the wall clock may differ from
        // it, and then transmit < receive would be the test's own doing).
        let s1 = svc(1);
        let m = s1.reply(&req, s1.clock.now_us(), Some(1));
        assert_eq!(
            (m.leap, m.stratum, m.mode, m.version, m.origin_ts),
            (0, 1, ntp::MODE_SERVER, 3, 42)
        );
        assert_eq!(&m.reference_id, b"LOCL");
        assert!(m.transmit_ts >= m.receive_ts);
        let f = svc(2).reply(&req, wall_us(), Some(1));
        assert_eq!((f.leap, f.stratum), (ntp::LI_UNSYNC, 16));
    }

    /// A synced follower answers stratum 2 with the master's IPv4 address as
    /// reference id.
    #[test]
    fn time_reply_synced_follower() {
        let s = svc(2);
        {
            let mut st = s.status.lock().unwrap();
            st.last_sync_ms = 1;
            st.time_master = Some(1);
        }
        let req = Packet { version: 4, mode: ntp::MODE_CLIENT, ..Default::default() };
        let r = s.reply(&req, wall_us(), Some(1));
        assert_eq!((r.leap, r.stratum, r.reference_id), (0, 2, [10, 0, 0, 1]));
    }

    /// A lone node that wins its election becomes its own time master at
    /// the next short look (25 ms), not a whole poll interval (1 s) later;
    /// before that its status says it waits for a leader, not that it runs
    /// on a correction it never had.
    #[tokio::test]
    async fn time_lone_node_is_its_own_master_soon_after_election() {
        let s = svc(1);
        let leader = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let l = leader.clone();
        let looping = tokio::spawn(s.clone().sync_loop(move || {
            let id = l.load(std::sync::atomic::Ordering::SeqCst);
            (Some(id).filter(|&i| i > 0), Some(1))
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let st = s.status();
        assert_eq!(st.time_master, None);
        assert_eq!(st.error.as_deref(), Some("no time master yet: waiting for a leader"));
        leader.store(1, std::sync::atomic::Ordering::SeqCst);
        // Well under the 1 s interval (a loaded machine may run the loop
        // late; it may not wait for the next whole interval).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let st = s.status();
        assert_eq!((st.time_master, st.error.as_deref(), st.in_tolerance), (Some(1), None, true));
        assert!(TimeSync::default().interval_ms >= 1000);
        looping.abort();
    }

    /// A follower's poll over real SNTP on localhost: its clock, 5 s behind
    /// the master's, is stepped forward to it (one correction, error ≈ +5 s);
    /// the next poll measures it against its *cluster* time and finds it in
    /// tolerance (no second correction) — with wall-clock timestamps it would
    /// measure the same 5 s again.
    #[tokio::test]
    async fn time_poll_corrects_follower_over_sntp() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let servers = vec![Server {
            number: 1,
            host: "127.0.0.1".into(),
            sync_port: 1,
            time_port: socket.local_addr().unwrap().port(),
            publish_port: 3,
            zone: crate::config::DEFAULT_ZONE.into(),
            role: Default::default(),
            sync_via: None,
        }];
        let master_clock = Arc::new(ClusterClock::new());
        let at = master_clock.reading();
        master_clock.track(99, at, 5_000_000, Duration::from_secs(1));
        let master =
            TimeService::new(1, master_clock.clone(), TimeSync::default(), servers.clone());
        let serving = tokio::spawn(master.serve(socket, || Some(1)));
        let follower =
            TimeService::new(2, Arc::new(ClusterClock::new()), TimeSync::default(), servers);
        follower.poll_master(1).await;
        let st = follower.status();
        assert_eq!((st.error.as_deref(), st.corrections, st.in_tolerance), (None, 1, false));
        assert!((st.offset_ms - 5000.0).abs() < 50.0, "{st:?}");
        follower.poll_master(1).await;
        let st = follower.status();
        assert_eq!((st.error.as_deref(), st.corrections, st.in_tolerance), (None, 1, true));
        let skew_us = master_clock.now_us() - follower.clock.now_us();
        assert!(skew_us.abs() < 5_000, "skew {skew_us} µs");
        serving.abort();
    }
}

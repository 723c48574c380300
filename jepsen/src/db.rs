//! The database under test: real `heraldd` processes, one per node
//! namespace, each with its own XML config, data dir, log file and (when the
//! clock nemesis is on) libfaketime timestamp file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::netns;

pub const SYNC_PORT: u16 = 7101;
pub const TIME_PORT: u16 = 7102;
pub const PUBLISH_PORT: u16 = 7103;

/// The key of `<auth mode="hmac">` in every node's XML; the messages
/// workload signs its session tokens with it (`herald_proto::token::issue`).
pub const AUTH_KEY: &str = "herald-jepsen-hmac-key-0001";
/// The API key the harness's HTTP client sends (`crate::client::Api`):
/// every node's `<access>` lists its hash with every scope (the workloads
/// push and query presence, send messages, and the nemesis changes
/// membership and transfers the leader).
pub const API_KEY: &str = "hk_herald-jepsen-harness-key-00000000000000000";
/// The scopes of [`API_KEY`].
const API_KEY_SCOPES: &str =
    "presence:write presence:read messages:send groups settings gateway cluster:read admin metrics profile";

/// Where Debian's `faketime` package puts the multi-threaded library.
pub const FAKETIME_LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

pub fn find_faketime() -> Option<PathBuf> {
    FAKETIME_LIBS.iter().map(PathBuf::from).find(|p| p.exists())
}

#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub idx: usize,
    pub number: u32,
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub faketime_file: PathBuf,
}

#[derive(Clone, Debug)]
pub struct RaftParams {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_logs: u64,
    pub write_timeout_ms: u64,
    /// `<time interval-ms tolerance-ms samples>`: how often followers poll
    /// the time master, the error they correct, samples per poll.
    pub time_interval_ms: u64,
    pub time_tolerance_ms: u64,
    pub time_samples: u64,
    /// `<master prefer-lowest hold-down-ms>`.
    pub master_prefer_lowest: bool,
    pub master_hold_down_ms: u64,
    /// `<gateway heartbeat-ms grace-ms push-timeout-ms>` (heartbeat-misses
    /// stays 3): shorter than the defaults (30 s, 60 s, 2 s) so that dead
    /// sessions and gateways are noticed within a short run, and a
    /// submission to an online recipient answers well within the client
    /// timeout.
    pub gateway_heartbeat_ms: u64,
    pub gateway_grace_ms: u64,
    pub push_timeout_ms: u64,
    /// Zones (`--zones`): each `<server>`'s zone and role, the WAN proxies
    /// in `sync-via`, and `<reads>` (see `crate::zones`). None: one zone.
    pub zones: Option<crate::zones::ZoneLayout>,
    /// A `<profile-sync>` element for the nodes' XML ("" for none): the
    /// outbox workload's modules (`workload::outbox::profile_sync_xml`).
    pub profile_sync_xml: String,
}

impl Default for RaftParams {
    fn default() -> Self {
        RaftParams {
            heartbeat_ms: 100,
            election_min_ms: 400,
            election_max_ms: 800,
            snapshot_logs: 20000,
            write_timeout_ms: 5000,
            time_interval_ms: 200,
            time_tolerance_ms: 5,
            time_samples: 3,
            master_prefer_lowest: true,
            master_hold_down_ms: 1000,
            gateway_heartbeat_ms: 1000,
            gateway_grace_ms: 3000,
            push_timeout_ms: 1000,
            zones: None,
            profile_sync_xml: String::new(),
        }
    }
}

/// `<watch window-changes>` of the harness's nodes: about 8 s of the
/// presence workload's writes at its default rate.
pub const WATCH_WINDOW_CHANGES: usize = 200;

/// The cluster name of the harness's clusters (node certificates name it).
pub const CLUSTER_NAME: &str = "jepsen";

/// Makes the cluster CA and every node's certificate for `<peer-tls>` in
/// `certs` (the library behind `herald cert`), each valid for its node's
/// address too.
pub fn make_peer_certs(certs: &Path, nodes: &[NodeSpec]) -> Result<()> {
    for n in nodes {
        herald_client::cert::issue_node(
            certs,
            CLUSTER_NAME,
            n.number as u64,
            std::slice::from_ref(&n.ip),
        )?;
    }
    Ok(())
}

/// The per-node XML configuration (the SUT's documented format). With
/// `certs` (a directory [`make_peer_certs`] filled) the nodes talk mutual
/// TLS (`<peer-tls>`), as the harness always runs them.
pub fn config_xml(
    me: &NodeSpec,
    all: &[NodeSpec],
    raft: &RaftParams,
    certs: Option<&Path>,
) -> String {
    let mut s = String::new();
    s.push_str(&format!("<herald cluster=\"{CLUSTER_NAME}\">\n"));
    s.push_str(&format!(
        "  <node number=\"{}\" data-dir=\"{}\" join=\"false\"/>\n",
        me.number,
        xml_escape(&me.data_dir.display().to_string())
    ));
    s.push_str("  <servers>\n");
    for n in all {
        s.push_str(&format!(
            "    <server number=\"{}\" host=\"{}\" sync-port=\"{SYNC_PORT}\" time-port=\"{TIME_PORT}\" publish-port=\"{PUBLISH_PORT}\"{}/>\n",
            n.number,
            n.ip,
            raft.zones.as_ref().map(|z| z.server_attrs(me.idx, n.idx, all.len())).unwrap_or_default()
        ));
    }
    s.push_str("  </servers>\n");
    s.push_str(&format!(
        "  <raft heartbeat-ms=\"{}\" election-min-ms=\"{}\" election-max-ms=\"{}\" snapshot-logs=\"{}\" write-timeout-ms=\"{}\"/>\n",
        raft.heartbeat_ms, raft.election_min_ms, raft.election_max_ms, raft.snapshot_logs, raft.write_timeout_ms
    ));
    s.push_str("  <limits max-ids-per-query=\"10000\" max-request-bytes=\"4194304\" max-events-per-request=\"10000\" max-connections=\"1024\"/>\n");
    s.push_str(&format!(
        "  <time interval-ms=\"{}\" tolerance-ms=\"{}\" samples=\"{}\"/>\n",
        raft.time_interval_ms, raft.time_tolerance_ms, raft.time_samples
    ));
    s.push_str(&format!(
        "  <master prefer-lowest=\"{}\" hold-down-ms=\"{}\"/>\n",
        raft.master_prefer_lowest, raft.master_hold_down_ms
    ));
    s.push_str(&format!(
        "  <gateway heartbeat-ms=\"{}\" heartbeat-misses=\"3\" grace-ms=\"{}\" push-timeout-ms=\"{}\"/>\n",
        raft.gateway_heartbeat_ms, raft.gateway_grace_ms, raft.push_timeout_ms
    ));
    // Watches: frequent progress frames (an idle watch hears from its node
    // every second, so the watch workload tells a dead stream in 3 s) and a
    // small window (a few seconds of the workload's writes), so that a
    // watcher away through a fault resumes below the floor and gets the
    // reset path, not only exact resumes.
    s.push_str(&format!(
        "  <watch progress-ms=\"{}\" window-changes=\"{WATCH_WINDOW_CHANGES}\"/>\n",
        crate::workload::watch::PROGRESS_MS
    ));
    if let Some(z) = &raft.zones {
        s.push_str(&z.reads_xml());
    }
    s.push_str(&format!("  <auth mode=\"hmac\" key=\"{AUTH_KEY}\"/>\n"));
    if let Some(certs) = certs {
        let (cert, key) = herald_client::cert::node_file_names(me.number as u64);
        let path = |f: &str| xml_escape(&certs.join(f).display().to_string());
        s.push_str(&format!(
            "  <peer-tls ca=\"{}\" cert=\"{}\" key=\"{}\"/>\n",
            path(herald_client::cert::CA_FILE),
            path(&cert),
            path(&key)
        ));
    }
    s.push_str(&format!(
        "  <access>\n    <api-key name=\"jepsen\" hash=\"{}\" scopes=\"{API_KEY_SCOPES}\"/>\n  </access>\n",
        herald_proto::apikey::hash(API_KEY)
    ));
    s.push_str(&raft.profile_sync_xml);
    s.push_str("</herald>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Formats a clock offset for libfaketime's timestamp file ("+1.500", "-30.000").
pub fn faketime_offset(offset_ms: i64) -> String {
    let sign = if offset_ms < 0 { '-' } else { '+' };
    let a = offset_ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

/// A node that exited on its own (run.json `unexpected_exits`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Exit {
    pub node: String,
    pub status: String,
    pub at_ns: u64,
}

pub struct Db {
    pub heraldd: PathBuf,
    pub nodes: Vec<NodeSpec>,
    procs: Vec<Option<Child>>,
    paused: Vec<bool>,
    /// LD_PRELOAD library when the clock nemesis is enabled.
    pub faketime: Option<PathBuf>,
    /// Exits we did not cause (crashes), for the report.
    pub unexpected_exits: Vec<Exit>,
    /// Nodes whose exit is expected (e.g. removed from the cluster).
    pub exit_ok: Vec<bool>,
    /// The delaying proxies between zones (`--zones`), for the zone nemesis.
    pub wan: Option<crate::zones::Wan>,
    start: Instant,
}

impl Db {
    pub fn new(
        heraldd: &Path,
        dir: &Path,
        n: usize,
        raft: &RaftParams,
        faketime: Option<PathBuf>,
        start: Instant,
    ) -> Result<Db> {
        let dir = fs::canonicalize(dir)?;
        let nodes: Vec<NodeSpec> = (0..n)
            .map(|i| NodeSpec {
                idx: i,
                number: i as u32 + 1,
                name: netns::node_name(i),
                ip: netns::node_ip(i),
                data_dir: dir.join(format!("{}-data", netns::node_name(i))),
                config: dir.join(format!("{}.xml", netns::node_name(i))),
                log: dir.join(format!("{}.log", netns::node_name(i))),
                faketime_file: dir.join(format!("{}.faketime", netns::node_name(i))),
            })
            .collect();
        let certs = dir.join("certs");
        make_peer_certs(&certs, &nodes)?;
        for n in &nodes {
            fs::create_dir_all(&n.data_dir)?;
            fs::write(&n.config, config_xml(n, &nodes, raft, Some(&certs)))?;
            fs::write(&n.faketime_file, "+0\n")?;
        }
        Ok(Db {
            heraldd: heraldd.to_path_buf(),
            procs: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
            exit_ok: vec![false; n],
            nodes,
            faketime,
            unexpected_exits: Vec::new(),
            wan: None,
            start,
        })
    }

    /// Sets the instant that crash times are measured from (test start).
    pub fn set_start(&mut self, t: Instant) {
        self.start = t;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Starts node i inside its namespace. Must be called from the thread
    /// that lives for the whole test (the children die with it via
    /// PR_SET_PDEATHSIG, so a harness crash leaves no daemons behind).
    pub fn start(&mut self, i: usize) -> Result<()> {
        self.reap();
        if self.running(i) {
            return Ok(());
        }
        let spec = &self.nodes[i];
        let ns = netns::open_ns(&netns::node_ns(i))?;
        let ns_fd = ns.as_raw_fd();
        let log = OpenOptions::new().create(true).append(true).open(&spec.log)?;
        let mut marker = log.try_clone()?;
        writeln!(
            marker,
            "==== herald-jepsen: starting {} at +{:.3}s ====",
            spec.name,
            self.start.elapsed().as_secs_f64()
        )?;
        let mut cmd = Command::new(&self.heraldd);
        cmd.arg("--config")
            .arg(&spec.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.env("RUST_BACKTRACE", "1");
        if let Some(lib) = &self.faketime {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_TIMESTAMP_FILE", &spec.faketime_file);
        }
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawn {}", self.heraldd.display()))?;
        drop(ns);
        self.procs[i] = Some(child);
        self.paused[i] = false;
        Ok(())
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    pub fn pid(&self, i: usize) -> Option<i32> {
        self.procs[i].as_ref().map(|c| c.id() as i32)
    }

    /// Collects processes that exited on their own; records them as crashes
    /// unless expected. Returns the indices that died.
    pub fn reap(&mut self) -> Vec<usize> {
        let mut dead = Vec::new();
        for i in 0..self.procs.len() {
            if let Some(c) = self.procs[i].as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.procs[i] = None;
                    dead.push(i);
                    if !self.exit_ok[i] {
                        self.unexpected_exits.push(Exit {
                            node: self.nodes[i].name.clone(),
                            status: describe(status),
                            at_ns: self.start.elapsed().as_nanos() as u64,
                        });
                    }
                }
            }
        }
        dead
    }

    fn signal(&self, i: usize, sig: i32) -> bool {
        match self.pid(i) {
            // SAFETY: kill(2) on our own child's pid (not yet reaped).
            Some(pid) => unsafe { libc::kill(pid, sig) == 0 },
            None => false,
        }
    }

    /// SIGKILL and reap. Returns whether it was running.
    pub fn kill(&mut self, i: usize) -> bool {
        self.reap();
        let Some(mut c) = self.procs[i].take() else {
            return false;
        };
        let _ = c.kill();
        let _ = c.wait();
        self.paused[i] = false;
        true
    }

    pub fn pause(&mut self, i: usize) -> bool {
        if self.signal(i, libc::SIGSTOP) {
            self.paused[i] = true;
            true
        } else {
            false
        }
    }

    pub fn resume(&mut self, i: usize) -> bool {
        let was = self.paused[i];
        self.signal(i, libc::SIGCONT);
        self.paused[i] = false;
        was
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.paused[i]
    }

    /// Writes a libfaketime offset for node i (atomically, via rename).
    pub fn set_clock(&self, i: usize, offset_ms: i64) -> Result<()> {
        write_atomic(&self.nodes[i].faketime_file, &format!("{}\n", faketime_offset(offset_ms)))
    }

    /// SIGTERM everyone (after SIGCONT), wait up to `grace`, then SIGKILL.
    /// Returns the exit status of each node that was running.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<(String, String)> {
        self.reap();
        for i in 0..self.procs.len() {
            self.exit_ok[i] = true;
            self.signal(i, libc::SIGCONT);
            self.signal(i, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut out = Vec::new();
        for i in 0..self.procs.len() {
            let Some(mut c) = self.procs[i].take() else {
                continue;
            };
            let status = loop {
                match c.try_wait() {
                    Ok(Some(s)) => break describe(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        break format!(
                            "{} (SIGKILL after {grace:?})",
                            c.wait().map(describe).unwrap_or_default()
                        );
                    }
                }
            };
            out.push((self.nodes[i].name.clone(), status));
        }
        out
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn describe(s: std::process::ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(sig)) => format!("signal {sig}"),
        _ => "unknown".into(),
    }
}

pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data().ok();
    fs::rename(&tmp, path).map_err(|e| anyhow!("rename {}: {e}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(i: usize) -> NodeSpec {
        NodeSpec {
            idx: i,
            number: i as u32 + 1,
            name: netns::node_name(i),
            ip: netns::node_ip(i),
            data_dir: PathBuf::from(format!("/s/n{}-data", i + 1)),
            config: PathBuf::new(),
            log: PathBuf::new(),
            faketime_file: PathBuf::new(),
        }
    }

    /// Proves the XML config lists every server with its own address and the
    /// documented ports, and names this node's number and data dir.
    #[test]
    fn db_config_xml_lists_all_servers() {
        let all: Vec<NodeSpec> = (0..3).map(spec).collect();
        let x = config_xml(&all[1], &all, &RaftParams::default(), None);
        assert!(x.starts_with("<herald cluster=\"jepsen\">"));
        assert!(x.contains("<node number=\"2\" data-dir=\"/s/n2-data\" join=\"false\"/>"));
        for i in 0..3 {
            assert!(x.contains(&format!(
                "<server number=\"{}\" host=\"10.77.0.{}\" sync-port=\"7101\" time-port=\"7102\" publish-port=\"7103\"/>",
                i + 1,
                11 + i
            )));
        }
        assert!(x.contains("write-timeout-ms=\"5000\""));
        assert!(x.contains("<time interval-ms=\"200\" tolerance-ms=\"5\" samples=\"3\"/>"));
        assert!(x.contains("<master prefer-lowest=\"true\" hold-down-ms=\"1000\"/>"));
        assert!(x.contains("<gateway heartbeat-ms=\"1000\" heartbeat-misses=\"3\" grace-ms=\"3000\" push-timeout-ms=\"1000\"/>"));
        assert!(x.contains(&format!("<auth mode=\"hmac\" key=\"{AUTH_KEY}\"/>")));
        assert!(x.trim_end().ends_with("</herald>"));
    }

    /// Proves heraldd's own (strict) config reader accepts the XML the
    /// harness writes, with the gateway timings and the HMAC key the
    /// messages workload relies on, and mutual TLS between the nodes with
    /// each node's own certificate.
    #[test]
    fn db_config_xml_is_accepted_by_heraldd() {
        let all: Vec<NodeSpec> = (0..3).map(spec).collect();
        let certs = tempfile::tempdir().unwrap();
        make_peer_certs(certs.path(), &all).unwrap();
        let x = config_xml(&all[2], &all, &RaftParams::default(), Some(certs.path()));
        let c = herald_node::config::parse(&x, "n3.xml").unwrap_or_else(|e| panic!("{e}\n{x}"));
        let peer = c.peer_tls.as_ref().expect("<peer-tls> is on");
        assert_eq!(peer.cert, certs.path().join("node3.pem"));
        assert_eq!(peer.ca, certs.path().join("ca.pem"));
        assert_eq!(c.gateway.heartbeat_ms, 1000);
        assert_eq!(c.gateway.grace_ms, 3000);
        assert_eq!(c.gateway.push_timeout_ms, 1000);
        // The workload's tokens live two days: within the default lifetime.
        let now = 1_800_000_000;
        let t = herald_proto::token::issue(AUTH_KEY.as_bytes(), "mbox0", now + 2 * 86_400);
        let max = match &c.auth {
            herald_node::config::AuthConfig::Hmac { max_token_lifetime_s, .. } => {
                *max_token_lifetime_s
            }
            other => panic!("{other:?}"),
        };
        assert!(
            herald_proto::token::verify_bounded(AUTH_KEY.as_bytes(), &t, "mbox0", now, max).is_ok()
        );
        assert_eq!(c.access.keys.len(), 1);
        assert_eq!(c.access.keys[0].digest, herald_proto::apikey::digest(API_KEY));
        assert_eq!(c.access.keys[0].scopes.len(), herald_proto::apikey::Scope::ALL.len());
    }

    /// Proves heraldd's strict reader accepts the zone layout the harness
    /// writes: zones round-robin, the last node a replica, cross-zone
    /// servers dialled through the WAN proxies, `<reads>` as asked.
    #[test]
    fn db_config_xml_zones_are_accepted_by_heraldd() {
        let all: Vec<NodeSpec> = (0..4).map(spec).collect();
        let raft = RaftParams {
            zones: Some(crate::zones::ZoneLayout {
                zones: 3,
                replica: true,
                wan_ms: 40,
                wan_jitter_ms: 10,
                max_staleness_ms: 700,
                when_stale: "fail".into(),
            }),
            ..RaftParams::default()
        };
        let x = config_xml(&all[0], &all, &raft, None);
        let c = herald_node::config::parse(&x, "n1.xml").unwrap_or_else(|e| panic!("{e}\n{x}"));
        assert!(x.contains("zone=\"z2\" sync-via=\"127.0.0.1:17102\""), "{x}");
        assert!(x.contains("<server number=\"4\" host=\"10.77.0.14\" sync-port=\"7101\" time-port=\"7102\" publish-port=\"7103\" zone=\"z1\" role=\"replica\"/>"), "{x}");
        assert!(x.contains("<reads max-staleness-ms=\"700\" when-stale=\"fail\"/>"));
        assert_eq!(c.servers.len(), 4);
    }

    /// Proves clock offsets are written in libfaketime's relative format.
    #[test]
    fn db_faketime_offset_format() {
        assert_eq!(faketime_offset(0), "+0.000");
        assert_eq!(faketime_offset(1500), "+1.500");
        assert_eq!(faketime_offset(-30_007), "-30.007");
    }
}

//! Test harness: real `heraldd` processes with temp dirs and free ports.
//!
//! The binary is taken from `$HERALDD` or `<workspace>/target/<profile>/heraldd`;
//! `scripts/test` builds it before the tests run.

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

pub mod browser;
/// The delaying WAN proxy, shared with the jepsen harness (its own crate).
pub use herald_delay_proxy as delay_proxy;

/// Path of the `herald` CLI beside the heraldd under test.
pub fn herald_path() -> PathBuf {
    let p = heraldd_path().with_file_name("herald");
    assert!(p.exists(), "{} not found: run `cargo build --workspace --bins` first", p.display());
    p
}

/// Runs `herald --node addr ARGS` with the all-scopes test key (and no
/// user identity inherited from the environment).
pub fn herald_cli(addr: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new(herald_path())
        .arg("--node")
        .arg(addr)
        .args(args)
        .env("HERALD_API_KEY", TEST_API_KEY)
        .env_remove("HERALD_UID")
        .env_remove("HERALD_TOKEN")
        .output()
        .context("run herald")
}

/// Runs a `herald` command that must succeed with `--json`; its JSON.
pub fn herald_cli_json(addr: &str, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.push("--json");
    let out = herald_cli(addr, &a)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("herald {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))
}

/// Path of the heraldd binary under test.
pub fn heraldd_path() -> PathBuf {
    if let Ok(p) = std::env::var("HERALDD") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>/heraldd
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = profile_dir.join("heraldd");
    assert!(
        p.exists(),
        "{} not found: run `cargo build -p herald-node` first (scripts/test does)",
        p.display()
    );
    p
}

/// Prints a phase marker into the test log.
pub fn phase(name: &str) {
    eprintln!("=== phase: {name}");
}

/// The HMAC key of test clusters' `<auth>`.
/// The cluster name of every test cluster (node certificates name it).
pub const CLUSTER_NAME: &str = "test";
pub const TEST_AUTH_KEY: &str = "herald-test-key-0123456789abcdef";

/// The API key of test clusters with every scope (`<access>` lists its
/// hash as application "test-all"): the harness's HTTP helpers send it.
pub const TEST_API_KEY: &str = "hk_test-all-scopes-key-0000000000000000000000";
/// An API key of test clusters with `presence:read` only (application
/// "test-reader"), for wrong-scope checks.
pub const TEST_READ_KEY: &str = "hk_test-presence-read-key-000000000000000000";
/// Every scope name, as `<api-key scopes>` takes them.
pub const ALL_SCOPES: &str =
    "presence:write presence:read messages:send groups settings gateway cluster:read admin metrics profile";

/// The `<access>` element of test clusters: [`TEST_API_KEY`] and
/// [`TEST_READ_KEY`].
pub fn access_xml() -> String {
    format!(
        "<access>\n    <api-key name=\"test-all\" hash=\"{}\" scopes=\"{ALL_SCOPES}\"/>\n    <api-key name=\"test-reader\" hash=\"{}\" scopes=\"presence:read\"/>\n  </access>",
        herald_proto::apikey::hash(TEST_API_KEY),
        herald_proto::apikey::hash(TEST_READ_KEY)
    )
}

/// The credential of [`TEST_API_KEY`], for `herald_client` connections.
pub fn test_credential() -> herald_client::Credential {
    herald_client::Credential::api_key(TEST_API_KEY).expect("the test key is ASCII")
}

/// A session token for `uid` under [`TEST_AUTH_KEY`], valid for an hour.
pub fn token(uid: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    herald_proto::token::issue(TEST_AUTH_KEY.as_bytes(), uid, now + 3600)
}

/// A free port on 127.0.0.1 (TCP and UDP bindable right now), taken from
/// below the kernel's ephemeral range (32768+) so that outgoing connections
/// never sit on a port a stopped node will bind again on restart, and
/// handed out once per test process (a per-process start offset keeps
/// test binaries run side by side apart).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const HIGH: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        LOW + (std::process::id() * 211) % (HIGH - LOW),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (p - LOW) % (HIGH - LOW)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// Raft timing and limits for the XML of a test cluster.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_logs: u64,
    pub write_timeout_ms: u64,
    pub max_ids_per_query: usize,
    pub max_request_bytes: usize,
    pub time_interval_ms: u64,
    pub time_tolerance_ms: u64,
    pub prefer_lowest: bool,
    pub hold_down_ms: u64,
    /// `<gateway>`: session heartbeats, dead-gateway grace, push wait.
    pub session_heartbeat_ms: u64,
    pub heartbeat_misses: u32,
    pub grace_ms: u64,
    pub push_timeout_ms: u64,
    pub max_sessions: usize,
    pub load_poll_ms: u64,
    /// `<messages>`.
    pub quota_per_user: usize,
    pub max_body_bytes: usize,
    /// Raw XML put inside `<herald>` instead of the HMAC `<auth>` element
    /// (e.g. an external auth service).
    pub auth_xml: Option<String>,
    /// TLS on the publish ports: emits `<tls cert=".." key=".."/>`. The
    /// harness's own HTTP helpers (`get_json`, `wait_leader`, ...) speak
    /// plaintext and do not work then: use the gRPC client with
    /// [`TlsFiles::connect_options`].
    pub tls: Option<TlsFiles>,
    /// Raw `<media>` element (None: the defaults, with the key derived
    /// from the HMAC auth key).
    pub media_xml: Option<String>,
    /// Raw `<access>` element (None: [`access_xml`]).
    pub access_xml: Option<String>,
    /// Mutual TLS between the nodes (`<peer-tls>`), on by default: the
    /// cluster's CA and each node's certificate are made by `herald cert`'s
    /// library in the cluster's `certs/` ([`Cluster::certs_dir`]). Off
    /// only for tests of the plaintext path.
    pub peer_tls: bool,
    /// Raw XML added inside `<herald>` (e.g. `<security mode="production"/>`).
    pub extra_xml: String,
    /// Extra attributes of `<limits>` (e.g. `header-timeout-ms="500"`).
    pub limits_attrs: String,
    /// Extra attributes of one `<server>` in every node's file (e.g.
    /// `zone="dc2" role="replica"`), by server number.
    pub server_attrs: Vec<(u64, String)>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_logs: 5000,
            write_timeout_ms: 3000,
            max_ids_per_query: 10_000,
            max_request_bytes: 4 << 20,
            time_interval_ms: 200,
            time_tolerance_ms: 5,
            prefer_lowest: true,
            hold_down_ms: 1000,
            session_heartbeat_ms: 500,
            heartbeat_misses: 3,
            grace_ms: 3000,
            push_timeout_ms: 2000,
            max_sessions: 10_000,
            load_poll_ms: 200,
            quota_per_user: 1000,
            max_body_bytes: 64 * 1024,
            auth_xml: None,
            tls: None,
            media_xml: None,
            access_xml: None,
            peer_tls: true,
            extra_xml: String::new(),
            limits_attrs: String::new(),
            server_attrs: Vec::new(),
        }
    }
}

/// A certificate and its key (PEM files) for TLS tests.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's PEM text (self-signed: also the CA to trust).
    pub cert_pem: String,
}

impl TlsFiles {
    /// Client options trusting this certificate.
    pub fn connect_options(&self) -> herald_client::ConnectOptions {
        herald_client::ConnectOptions {
            ca_pem: Some(self.cert_pem.clone().into_bytes()),
            domain: None,
        }
    }

    /// The `<tls>` element for this pair.
    fn xml(&self) -> String {
        format!("  <tls cert=\"{}\" key=\"{}\"/>\n", self.cert.display(), self.key.display())
    }
}

/// Writes a fresh self-signed certificate for `localhost` and 127.0.0.1
/// (`cert.pem`) and its key (`key.pem`) into `dir`.
pub fn generate_tls(dir: &Path) -> Result<TlsFiles> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let cert_pem = ck.cert.pem();
    fs::write(&cert, &cert_pem)?;
    fs::write(&key, ck.key_pair.serialize_pem())?;
    Ok(TlsFiles { cert, key, cert_pem })
}

#[derive(Clone, Debug)]
pub struct Ports {
    pub sync: u16,
    pub time: u16,
    pub publish: u16,
}

/// One heraldd process (or its place when stopped).
pub struct Node {
    pub number: u64,
    pub ports: Ports,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the process (e.g. libfaketime).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    pub fn publish(&self) -> String {
        format!("127.0.0.1:{}", self.ports.publish)
    }

    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("node {} already running", self.number);
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(heraldd_path())
            .arg("--config")
            .arg(&self.config)
            .env("HERALD_LOG", "info,openraft=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn heraldd")?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&mut self, sig: &str) -> Result<()> {
        if let Some(c) = &self.child {
            let st =
                Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status()?;
            if !st.success() {
                bail!("kill -{sig} failed");
            }
        }
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush beyond what was already durable.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal("KILL")?;
        if let Some(mut c) = self.child.take() {
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        self.signal("TERM")?;
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(st) = c.try_wait()? {
                    if !st.success() {
                        bail!("node {} exited with {st}", self.number);
                    }
                    break;
                }
                if Instant::now() > deadline {
                    c.kill()?;
                    bail!("node {} did not stop on SIGTERM", self.number);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit
    /// status, or None if it is still running (then it keeps running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while let Some(c) = &mut self.child {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                return Ok(Some(st));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cluster of heraldd processes in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub tuning: Tuning,
    servers: Vec<(u64, Ports)>,
}

fn server_xml(servers: &[(u64, Ports)], attrs: &[(u64, String)]) -> String {
    servers
        .iter()
        .map(|(n, p)| {
            let extra: String =
                attrs.iter().filter(|(a, _)| a == n).map(|(_, s)| format!(" {s}")).collect();
            format!(
                "    <server number=\"{n}\" host=\"127.0.0.1\" sync-port=\"{}\" time-port=\"{}\" publish-port=\"{}\"{extra}/>\n",
                p.sync, p.time, p.publish
            )
        })
        .collect()
}

impl Cluster {
    /// Writes XML for `n` nodes (plus `spare` extra servers listed in no
    /// initial config, for membership tests) without starting anything.
    pub fn configure(n: usize, tuning: Tuning) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("herald-test-").tempdir()?;
        let servers: Vec<(u64, Ports)> = (1..=n as u64)
            .map(|i| (i, Ports { sync: free_port(), time: free_port(), publish: free_port() }))
            .collect();
        let mut c = Cluster { dir, nodes: Vec::new(), tuning, servers: servers.clone() };
        for (num, ports) in servers {
            let node = c.make_node(num, ports, &c.servers.clone(), false)?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    fn make_node(
        &self,
        number: u64,
        ports: Ports,
        servers: &[(u64, Ports)],
        join: bool,
    ) -> Result<Node> {
        let t = &self.tuning;
        let data_dir = self.dir.path().join(format!("node{number}"));
        let config = self.dir.path().join(format!("node{number}.xml"));
        let xml = format!(
            "<herald cluster=\"{CLUSTER_NAME}\">\n  <node number=\"{number}\" data-dir=\"{}\" join=\"{join}\"/>\n  <servers>\n{}  </servers>\n{}  <raft heartbeat-ms=\"{}\" election-min-ms=\"{}\" election-max-ms=\"{}\" snapshot-logs=\"{}\" write-timeout-ms=\"{}\"/>\n  <limits max-ids-per-query=\"{}\" max-request-bytes=\"{}\" {}/>\n  <time interval-ms=\"{}\" tolerance-ms=\"{}\" samples=\"3\"/>\n  <master prefer-lowest=\"{}\" hold-down-ms=\"{}\"/>\n  <gateway heartbeat-ms=\"{}\" heartbeat-misses=\"{}\" grace-ms=\"{}\" push-timeout-ms=\"{}\" max-sessions=\"{}\" load-poll-ms=\"{}\"/>\n  <messages quota-per-user=\"{}\" max-body-bytes=\"{}\"/>\n  {}\n  {}\n  {}\n</herald>\n",
            data_dir.display(),
            server_xml(servers, &t.server_attrs),
            t.tls.as_ref().map(TlsFiles::xml).unwrap_or_default(),
            t.heartbeat_ms,
            t.election_min_ms,
            t.election_max_ms,
            t.snapshot_logs,
            t.write_timeout_ms,
            t.max_ids_per_query,
            t.max_request_bytes,
            t.limits_attrs,
            t.time_interval_ms,
            t.time_tolerance_ms,
            t.prefer_lowest,
            t.hold_down_ms,
            t.session_heartbeat_ms,
            t.heartbeat_misses,
            t.grace_ms,
            t.push_timeout_ms,
            t.max_sessions,
            t.load_poll_ms,
            t.quota_per_user,
            // The body must fit in a request with room for the JSON around it.
            t.max_body_bytes.min(t.max_request_bytes / 2),
            t.auth_xml.clone().unwrap_or_else(|| format!("<auth mode=\"hmac\" key=\"{TEST_AUTH_KEY}\"/>")),
            t.media_xml.clone().unwrap_or_default(),
            t.access_xml.clone().unwrap_or_else(access_xml)
        );
        let mut xml = xml;
        let mut extra = t.extra_xml.clone();
        if t.peer_tls {
            let files = herald_client::cert::issue_node(
                &self.certs_dir(),
                CLUSTER_NAME,
                number,
                &["127.0.0.1".to_string()],
            )?;
            extra.push_str(&format!(
                "\n  <peer-tls ca=\"{}\" cert=\"{}\" key=\"{}\"/>",
                self.certs_dir().join(herald_client::cert::CA_FILE).display(),
                files.cert.display(),
                files.key.display()
            ));
        }
        if !extra.is_empty() {
            xml = xml.replace("</herald>\n", &format!("{extra}\n</herald>\n"));
        }
        fs::write(&config, xml)?;
        let log = self.dir.path().join(format!("node{number}.log"));
        Ok(Node { number, ports, config, data_dir, log, env: Vec::new(), child: None })
    }

    /// Where the cluster's CA and node certificates are (with
    /// [`Tuning::peer_tls`]): `ca.pem`, `ca-key.pem`, `node<N>.pem`,
    /// `node<N>-key.pem`. Tests use them to act as a peer on a sync port.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// A channel to node `target`'s sync port opened as member `as_node`
    /// would open it: mutual TLS with `as_node`'s certificate, checking
    /// `target`'s (or plaintext when the cluster runs without
    /// [`Tuning::peer_tls`]).
    pub async fn peer_channel(
        &self,
        target: u64,
        as_node: u64,
    ) -> Result<tonic::transport::Channel> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let port = self.nodes[(target - 1) as usize].ports.sync;
        let endpoint = if self.tuning.peer_tls {
            let dir = self.certs_dir();
            let ca = fs::read(dir.join(herald_client::cert::CA_FILE))?;
            let cert = fs::read(dir.join(format!("node{as_node}.pem")))?;
            let key = fs::read(dir.join(format!("node{as_node}-key.pem")))?;
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(herald_proto::peer::node_name(CLUSTER_NAME, target))
                .identity(Identity::from_pem(cert, key));
            Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?.tls_config(tls)?
        } else {
            Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        };
        Ok(endpoint.connect_timeout(Duration::from_secs(3)).connect().await?)
    }

    /// Starts `n` nodes that bootstrap from their shared XML server list.
    pub fn start(n: usize, tuning: Tuning) -> Result<Self> {
        let mut c = Self::configure(n, tuning)?;
        for node in &mut c.nodes {
            node.start()?;
        }
        Ok(c)
    }

    /// Configures and starts one more node with `join="true"`: it waits to be
    /// added as a learner. Its XML lists every server including itself.
    pub fn start_joining_node(&mut self) -> Result<u64> {
        let number = self.servers.iter().map(|s| s.0).max().unwrap_or(0) + 1;
        let ports = Ports { sync: free_port(), time: free_port(), publish: free_port() };
        self.servers.push((number, ports.clone()));
        let servers = self.servers.clone();
        let mut node = self.make_node(number, ports, &servers, true)?;
        node.start()?;
        self.nodes.push(node);
        Ok(number)
    }

    /// Makes node `from` dial node `to`'s sync port at `via` (`<server
    /// sync-via>` in `from`'s file only): a WAN proxy between them.
    /// Before `from` starts.
    pub fn set_sync_via(&self, from: u64, to: u64, via: &str) -> Result<()> {
        let node = self.nodes.iter().find(|n| n.number == from).context("no such node")?;
        let xml = fs::read_to_string(&node.config)?;
        let tag = format!("<server number=\"{to}\" ");
        if !xml.contains(&tag) {
            bail!("server {to} is not in node {from}'s file");
        }
        fs::write(&node.config, xml.replace(&tag, &format!("{tag}sync-via=\"{via}\" ")))?;
        Ok(())
    }

    pub fn node(&mut self, number: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.number == number).expect("no such node")
    }

    pub fn addr(&self, number: u64) -> String {
        self.nodes.iter().find(|n| n.number == number).expect("no such node").publish()
    }

    /// Waits until a running node reports a leader that all running nodes
    /// agree on; returns its number.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                match get_json(&n.publish(), "/v1/cluster") {
                    Ok((200, v)) => leaders.push(v["leader"].as_u64()),
                    _ => leaders.push(None),
                }
            }
            if let Some(Some(l)) = leaders.first() {
                let running_leader = self.nodes.iter().any(|n| n.number == *l && n.is_running());
                if running_leader && leaders.iter().all(|x| *x == Some(*l)) {
                    return Ok(*l);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}: {leaders:?}\n{}", self.logs_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = fs::read_to_string(&n.log).unwrap_or_default();
            // Backtraces are long: keep the panic lines, then the tail
            // without frames.
            let panics: Vec<&str> =
                text.lines().filter(|l| l.contains("panicked")).take(5).collect();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.trim_start().starts_with("at ")
                        && !l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- node{} log ---\n{}\n{}\n",
                n.number,
                panics.join("\n"),
                tail.join("\n")
            ));
        }
        out
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until node `number` (just restarted) is caught up, the check of
    /// the rolling upgrade in docs/deploy-zones.md: the leader reports it
    /// `healthy` in its own `/v1/cluster?local=true`, and the node's own
    /// `applied_index` has reached the leader's `commit_index` as read at
    /// that moment (under write load `lag_entries` is rarely 0, so the
    /// commit index is the fixed target). Returns that index.
    pub fn wait_caught_up(&self, number: u64, timeout: Duration) -> Result<u64> {
        let addr = self.addr(number);
        let deadline = Instant::now() + timeout;
        let target = eventually(timeout, || {
            let leader = local_view(&addr)?["leader"]
                .as_u64()
                .ok_or_else(|| anyhow!("node {number} knows no leader yet"))?;
            let lv = local_view(&self.addr(leader))?;
            if lv["leader"] != json!(leader) {
                bail!("node {leader} no longer leads: {lv}");
            }
            let me = lv["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["number"] == json!(number)))
                .ok_or_else(|| anyhow!("node {number} not in the leader's view: {lv}"))?;
            if me["healthy"] != json!(true) {
                bail!("leader {leader} does not see node {number} healthy: {me}");
            }
            lv["commit_index"].as_u64().ok_or_else(|| anyhow!("no commit_index in {lv}"))
        })
        .with_context(|| self.logs_tail())?;
        let left = deadline.saturating_duration_since(Instant::now());
        eventually(left, || {
            let applied = local_view(&addr)?["applied_index"].as_u64().unwrap_or(0);
            if applied < target {
                bail!("node {number} applied {applied} < leader commit {target}");
            }
            Ok(target)
        })
        .with_context(|| self.logs_tail())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Who a request of the harness comes from: the credential it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As<'a> {
    /// Nothing: no `Authorization` header.
    Anonymous,
    /// `Authorization: Bearer <key or token>`.
    Bearer(&'a str),
    /// A session token and the user it is for (`X-Herald-User` too).
    User { uid: &'a str, token: &'a str },
}

/// The credential of the plain helpers: [`TEST_API_KEY`] (every scope).
pub const ADMIN: As<'static> = As::Bearer(TEST_API_KEY);

/// Sends a request as `who`: (status, body as JSON or string).
pub fn request(
    who: As,
    method: &str,
    addr: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Result<(u16, Value)> {
    let url = format!("http://{addr}{path}");
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    match who {
        As::Anonymous => {}
        As::Bearer(b) => req = req.header("authorization", format!("Bearer {b}")),
        As::User { uid, token } => {
            req =
                req.header("authorization", format!("Bearer {token}")).header("x-herald-user", uid)
        }
    }
    let (ct, bytes) = body.unwrap_or(("", Vec::new()));
    if !ct.is_empty() {
        req = req.header("content-type", ct);
    }
    let req = req.body(bytes).map_err(|e| anyhow!("{method} {path}: {e}"))?;
    let mut r = agent().run(req).map_err(|e| anyhow!("{method} {path}: {e}"))?;
    let status = r.status().as_u16();
    let text = r.body_mut().with_config().limit(256 << 20).read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// GET a JSON document as `who`: (status, body).
pub fn get_json_as(who: As, addr: &str, path: &str) -> Result<(u16, Value)> {
    request(who, "GET", addr, path, None)
}

/// POST a JSON document as `who`: (status, body).
pub fn post_json_as(who: As, addr: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
    request(who, "POST", addr, path, Some(("application/json", serde_json::to_vec(body)?)))
}

/// GET a JSON document with the all-scopes test key: (status, body).
pub fn get_json(addr: &str, path: &str) -> Result<(u16, Value)> {
    get_json_as(ADMIN, addr, path)
}

/// The value of an unlabelled metric in `addr`'s `/metrics` (an error when
/// it is not exported).
pub fn metric(addr: &str, name: &str) -> Result<f64> {
    let (st, v) = get_json(addr, "/metrics")?;
    if st != 200 {
        bail!("/metrics {st}: {v}");
    }
    let text = v.as_str().context("metrics text")?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).map(|x| x.trim().parse::<f64>())
        })
        .context(format!("{name} missing"))?
        .map_err(|e| anyhow!("{name}: {e}"))
}

/// POST raw bytes with a content type (all-scopes key): (status, body as
/// JSON or string).
pub fn post_raw(addr: &str, path: &str, content_type: &str, body: Vec<u8>) -> Result<(u16, Value)> {
    request(ADMIN, "POST", addr, path, Some((content_type, body)))
}

/// PUT a JSON document (all-scopes key): (status, body).
pub fn put_json(addr: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
    request(ADMIN, "PUT", addr, path, Some(("application/json", serde_json::to_vec(body)?)))
}

/// POST a JSON document (all-scopes key): (status, body).
pub fn post_json(addr: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
    post_json_as(ADMIN, addr, path, body)
}

/// A login event carrying `ext.v = value`.
pub fn login_event(uid: &str, sid: u64, client: &str, value: &str) -> Value {
    json!({"type": "login", "uid": uid, "sid": sid, "client": client, "ext": {"v": value}})
}

/// Pushes events; Ok(revision) on 200, Err with the body otherwise.
pub fn push(addr: &str, events: Vec<Value>) -> Result<u64> {
    let (st, v) = post_json(addr, "/v1/presence/events", &json!({ "events": events }))?;
    if st != 200 {
        bail!("push → {st}: {v}");
    }
    v["revision"].as_u64().ok_or_else(|| anyhow!("no revision in {v}"))
}

/// Maps uid → user JSON from a query answer.
pub fn users_by_uid(v: &Value) -> HashMap<String, Value> {
    v["users"]
        .as_array()
        .map(|a| {
            a.iter().map(|u| (u["uid"].as_str().unwrap_or("").to_string(), u.clone())).collect()
        })
        .unwrap_or_default()
}

/// Asserts that a query through `addr` sees all `uids` online with ext.v =
/// uid (as [`login_event`] wrote them with the uid as value).
pub fn assert_all_online(addr: &str, uids: &[String], consistency: &str) -> Result<()> {
    let v = query(addr, uids, consistency)?;
    let users = users_by_uid(&v);
    let missing: Vec<&String> = uids.iter().filter(|u| !users.contains_key(*u)).collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} uids missing (first: {:?}); unknown={}",
            missing.len(),
            uids.len(),
            missing.first(),
            v["unknown"].as_array().map(|a| a.len()).unwrap_or(0)
        );
    }
    for u in uids {
        let r = &users[u];
        if r["online"] != json!(true) || r["ext"]["v"] != json!(u) {
            bail!("{u} not as written: {r}");
        }
    }
    Ok(())
}

/// Linearizable (or local) batch query by uids.
pub fn query(addr: &str, uids: &[String], consistency: &str) -> Result<Value> {
    let (st, v) =
        post_json(addr, "/v1/presence/query", &json!({"uids": uids, "consistency": consistency}))?;
    if st != 200 {
        bail!("query → {st}: {v}");
    }
    Ok(v)
}

/// This node's own view of the cluster (`GET /v1/cluster?local=true`).
pub fn local_view(addr: &str) -> Result<Value> {
    let (st, v) = get_json(addr, "/v1/cluster?local=true")?;
    if st != 200 {
        bail!("cluster → {st}: {v}");
    }
    Ok(v)
}

/// Path of libfaketime's multi-threaded library, if installed.
pub fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Retries `f` until it succeeds or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

//! What a benchmark drives: a Herald cluster (always) or an etcd cluster
//! (with the `etcd` cargo feature), behind one connection type, plus the
//! cluster's topology (which node leads, where each node's process is).
//!
//! The same workload maps onto both:
//! - a presence event is one Herald event, or one etcd put of
//!   `presence/<uid>` whose value is the protobuf encoding of that same
//!   Herald event ([`etcd_value`]: what a Herald login carries on the wire
//!   and into its log, so both systems write payloads of the same size);
//! - a batch of events is one Herald request, or one etcd txn of puts;
//! - a batch query is one Herald query, or etcd txns of at most
//!   `--etcd-txn-ops` gets each (etcd's limit, 128 by default), over
//!   `--etcd-conns` connections per client, one after the other or all at
//!   once (`--etcd-txns`): etcd's best multi-get of unrelated keys.
//!
//! Durability, stated in every report ([`durability`]): etcd fdatasyncs its
//! WAL before it acknowledges a write (its only mode); Herald fdatasyncs its
//! log (herald-wal, group commit: one sync covers every append queued
//! behind it) before an entry counts towards a majority.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use herald_client::proto as pb;
use herald_client::{normalize_addr, ClientError, HeraldClient, UserPresence};
use serde::Serialize;

use super::procs;

/// Which system a benchmark drives.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// A Herald cluster (`--node`, any member).
    Herald,
    /// An etcd cluster (`--endpoints`, every member); needs a build with `--features etcd`.
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Herald => "herald",
            System::Etcd => "etcd",
        }
    }

    /// The server program, for finding local processes by name.
    pub fn program(self) -> &'static str {
        match self {
            System::Herald => "heraldd",
            System::Etcd => "etcd",
        }
    }
}

/// How a system makes an acknowledged write durable, for the report.
pub fn durability(system: System) -> &'static str {
    match system {
        System::Herald => {
            "herald-wal: each log append is fdatasynced (group commit) before it counts towards \
             a majority; acknowledged = fsynced on a majority"
        }
        System::Etcd => {
            "etcd WAL: fdatasync before a write is acknowledged (etcd has no other mode); \
             acknowledged = fsynced on a majority"
        }
    }
}

/// How the etcd side calls etcd (see `etcd.rs`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdCodec {
    /// Hand-written prost messages of only the fields used, on a plain tonic channel.
    Lean,
    /// The etcd-client crate (balanced channel, interceptor, its own types).
    Crate,
}

/// How the txns of one etcd query are sent.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdTxns {
    /// One after the other: the next when the previous is answered.
    Sequential,
    /// All at once.
    Concurrent,
}

/// What an etcd put stores as the value.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdValue {
    /// The protobuf of the Herald event (~20 B): what a Herald login carries.
    Event,
    /// The JSON record Herald answers (~150 B): the benchmark's value before.
    Record,
}

/// The etcd client's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdOpts {
    /// Most operations in one txn (etcd's `--max-txn-ops`).
    pub txn_ops: usize,
    /// HTTP/2 connections per benchmark client.
    pub conns: usize,
    pub txns: EtcdTxns,
    pub codec: EtcdCodec,
    pub value: EtcdValue,
}

impl Default for EtcdOpts {
    fn default() -> Self {
        EtcdOpts {
            txn_ops: 128,
            conns: 1,
            txns: EtcdTxns::Concurrent,
            codec: EtcdCodec::Lean,
            value: EtcdValue::Event,
        }
    }
}

/// Read consistency of a query.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cons {
    /// Herald `linearizable` (read index); etcd's default linearizable range.
    Linearizable,
    /// Herald `local`; etcd `serializable`.
    Local,
    /// Herald `bounded` (`--max-staleness-ms`); etcd `serializable`, which
    /// has no bound.
    Bounded,
}

impl Cons {
    pub fn name(self) -> &'static str {
        match self {
            Cons::Linearizable => "linearizable",
            Cons::Local => "local",
            Cons::Bounded => "bounded",
        }
    }
}

/// The uid of benchmark user `i`.
pub fn uid(i: u64) -> String {
    format!("u{i}")
}

/// The sid of benchmark user `i`.
pub fn sid(i: u64) -> u64 {
    i + 1
}

/// The client type the benchmark logs users in on.
pub const CLIENT_TYPE: &str = "mobile";

/// The etcd key of user `i`.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub fn etcd_key(i: u64) -> String {
    format!("presence/{}", uid(i))
}

/// The Herald event that logs user `i` in or out.
pub fn event(i: u64, online: bool) -> pb::PresenceEvent {
    let kind =
        if online { pb::presence_event::Kind::Login } else { pb::presence_event::Kind::Logout };
    pb::PresenceEvent {
        kind: kind as i32,
        uid: uid(i),
        sid: sid(i),
        client: CLIENT_TYPE.into(),
        accepts_strangers: None,
        ext: Default::default(),
    }
}

/// The etcd value of user `i`: the protobuf encoding of the Herald event
/// ([`event`]) — the payload a Herald login carries (about 20 bytes; the
/// JSON record Herald answers, [`record_json`], is about 150).
#[cfg(feature = "etcd")]
pub fn etcd_value(i: u64, online: bool, v: EtcdValue) -> Vec<u8> {
    use prost::Message;
    match v {
        EtcdValue::Event => event(i, online).encode_to_vec(),
        EtcdValue::Record => record_json(i, online).into_bytes(),
    }
}

/// The JSON record of user `i`, as Herald answers it.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub fn record_json(i: u64, online: bool) -> String {
    let now =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let r = UserPresence {
        uid: uid(i),
        sid: sid(i),
        online,
        clients: if online { vec![CLIENT_TYPE.to_string()] } else { vec![] },
        accepts_strangers: true,
        ext: Default::default(),
        changed_at_ms: now,
        revision: 1_000_000 + i,
    };
    serde_json::to_string(&r).expect("record encodes")
}

/// A failed operation: a short stable code (for counting) and the message.
#[derive(Debug, Clone)]
pub struct OpError {
    pub code: String,
    pub message: String,
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> Self {
        OpError { code: e.code().to_string(), message: e.message() }
    }
}

impl From<tonic::Status> for OpError {
    fn from(s: tonic::Status) -> Self {
        ClientError::from(s).into()
    }
}

impl OpError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        OpError { code: code.into(), message: message.into() }
    }
}

/// One node of the cluster under test.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Herald node number, or etcd endpoint position (1-based).
    pub number: u64,
    /// host:port clients use.
    pub addr: String,
    pub leader: bool,
    /// A non-voting replica (Herald `role="replica"`).
    pub replica: bool,
    /// Local process serving it, when found.
    pub pid: Option<u32>,
}

/// The cluster as seen when the benchmark starts.
#[derive(Debug, Clone)]
pub struct Topology {
    pub system: System,
    pub nodes: Vec<NodeInfo>,
    /// etcd only: how the etcd client calls etcd.
    pub etcd: EtcdOpts,
}

impl Topology {
    pub fn leader(&self) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.leader)
    }

    pub fn followers(&self) -> Vec<&NodeInfo> {
        self.nodes.iter().filter(|n| !n.leader).collect()
    }
}

/// Splits `host:port` (or a URL) into host and port.
pub fn host_port(addr: &str) -> Option<(String, u16)> {
    let a = addr.trim_start_matches("http://").trim_start_matches("https://");
    let a = a.split('/').next()?;
    let (h, p) = a.rsplit_once(':')?;
    Some((h.to_string(), p.parse().ok()?))
}

/// The local process listening on `addr`'s port, when `addr` is local.
pub fn local_pid(addr: &str) -> Option<u32> {
    let (h, p) = host_port(addr)?;
    if procs::is_local_host(&h) {
        procs::pid_listening_on(p)
    } else {
        None
    }
}

/// Opens a Herald client connection to `addr`. Every Herald API
/// connection of the benchmark opens here, so that connection options
/// (TLS, credentials) are added in one place. (Gateway sessions prove who
/// they are with session tokens instead: heartbeat.rs, messages.rs.)
pub async fn herald(addr: &str) -> Result<HeraldClient, OpError> {
    let c = HeraldClient::connect(addr).await?;
    Ok(match CREDENTIAL.get() {
        Some(k) => c.with_credential(k.clone()),
        None => c,
    })
}

/// The API key every Herald connection of this benchmark sends: one per
/// process (one `herald bench` run), set by [`discover`] before any
/// connection opens, so every workload's connections carry it without
/// threading it through each.
static CREDENTIAL: std::sync::OnceLock<herald_client::Credential> = std::sync::OnceLock::new();

/// The run's API key (None before [`discover`]), for connections that are
/// not a [`HeraldClient`] (raw watch streams).
pub fn credential() -> Option<herald_client::Credential> {
    CREDENTIAL.get().cloned()
}

/// `--max-staleness-ms` of `bounded` queries: one per process, set by
/// [`set_max_staleness`] before any query.
static MAX_STALENESS_MS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// Sets [`MAX_STALENESS_MS`] (the first call wins: one run, one bound).
pub fn set_max_staleness(ms: Option<u64>) {
    let _ = MAX_STALENESS_MS.set(ms);
}

/// Sets [`CREDENTIAL`] (the first call wins: one run, one key).
pub fn set_credential(c: herald_client::Credential) {
    let _ = CREDENTIAL.set(c);
}

/// Finds the members and the leader. Herald: from `node`'s status. etcd:
/// the status of every endpoint.
pub async fn discover(
    system: System,
    node: &str,
    endpoints: &[String],
    etcd: EtcdOpts,
    credential: &herald_client::Credential,
) -> Result<Topology, OpError> {
    set_credential(credential.clone());
    let nodes = match system {
        System::Herald => {
            let c = herald(node).await?;
            let s = c.status().await?;
            let Some(leader) = s.leader else {
                return Err(OpError::new("no_leader", format!("{node} knows no leader")));
            };
            s.nodes
                .iter()
                .map(|n| NodeInfo {
                    number: n.number,
                    addr: n.publish.clone(),
                    leader: n.number == leader,
                    replica: n.replica,
                    pid: local_pid(&n.publish),
                })
                .collect()
        }
        System::Etcd => etcd::discover(endpoints).await?,
    };
    Ok(Topology { system, nodes, etcd })
}

/// One client connection to one node.
#[derive(Clone)]
pub enum Conn {
    /// Boxed: the authenticating channel makes it ~250 bytes, an etcd
    /// connection is ~30.
    Herald(Box<pb::presence_client::PresenceClient<herald_client::credential::AuthChannel>>),
    #[cfg(feature = "etcd")]
    Etcd(etcd::Kv),
}

impl Conn {
    /// Opens a new connection (its own TCP connection) to `addr`.
    pub async fn open(topo: &Topology, addr: &str) -> Result<Conn, OpError> {
        match topo.system {
            System::Herald => {
                // A fresh channel per client: clones of one channel would
                // share one HTTP/2 connection.
                let c = herald(addr).await?;
                Ok(Conn::Herald(Box::new(c.presence_client())))
            }
            System::Etcd => etcd::open(addr, &topo.etcd).await,
        }
    }

    /// Commits presence events `(user, online)` in one request (Herald) or
    /// one txn (etcd).
    pub async fn write(&mut self, events: &[(u64, bool)]) -> Result<(), OpError> {
        match self {
            Conn::Herald(c) => {
                let events = events.iter().map(|&(i, online)| event(i, online)).collect();
                c.push_events(pb::PushEventsRequest { events }).await?;
                Ok(())
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(kv) => kv.write(events).await,
        }
    }

    /// Looks up `users`; returns how many records were found.
    pub async fn query(&mut self, users: &[u64], cons: Cons) -> Result<usize, OpError> {
        match self {
            Conn::Herald(c) => {
                let consistency = match cons {
                    Cons::Linearizable => pb::Consistency::Linearizable,
                    Cons::Local => pb::Consistency::Local,
                    Cons::Bounded => pb::Consistency::Bounded,
                } as i32;
                let req = pb::QueryRequest {
                    uids: users.iter().map(|&i| uid(i)).collect(),
                    sids: vec![],
                    consistency,
                    max_staleness_ms: MAX_STALENESS_MS.get().copied().flatten(),
                    min_revision: None,
                };
                let r = c.query(req).await?.into_inner();
                if r.users.len() + r.unknown.len() != users.len() {
                    return Err(OpError::new(
                        "short_answer",
                        format!(
                            "{} ids asked, {} found + {} unknown",
                            users.len(),
                            r.users.len(),
                            r.unknown.len()
                        ),
                    ));
                }
                Ok(r.users.len())
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(kv) => kv.query(users, cons).await,
        }
    }
}

/// Counts errors by code, keeping one message per code.
#[derive(Debug, Default, Clone)]
pub struct ErrorCounts {
    pub by_code: BTreeMap<String, (u64, String)>,
}

impl ErrorCounts {
    pub fn add(&mut self, e: &OpError) {
        let entry = self.by_code.entry(e.code.clone()).or_insert_with(|| (0, e.message.clone()));
        entry.0 += 1;
    }

    pub fn merge(&mut self, other: ErrorCounts) {
        for (code, (n, msg)) in other.by_code {
            self.by_code.entry(code).or_insert((0, msg)).0 += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_code.values().map(|v| v.0).sum()
    }
}

/// Checks `addr` the way the Herald client will use it.
pub fn check_addr(addr: &str) -> Result<(), OpError> {
    normalize_addr(addr).map(|_| ()).map_err(OpError::from)
}

#[cfg(not(feature = "etcd"))]
mod etcd {
    //! Stand-in when the `etcd` feature is off: every entry point says how
    //! to get it.

    use super::{Conn, EtcdOpts, NodeInfo, OpError};

    fn off() -> OpError {
        OpError::new(
            "unsupported",
            "this herald was built without etcd support: cargo build -p herald-client --features etcd",
        )
    }

    pub async fn discover(_endpoints: &[String]) -> Result<Vec<NodeInfo>, OpError> {
        Err(off())
    }

    pub async fn open(_addr: &str, _opts: &EtcdOpts) -> Result<Conn, OpError> {
        Err(off())
    }
}

#[cfg(feature = "etcd")]
#[path = "etcd.rs"]
mod etcd;

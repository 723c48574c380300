//! What a benchmark drives: a Herald cluster (always) or an etcd cluster
//! (with the `etcd` cargo feature), behind one connection type, plus the
//! cluster's topology (which node leads, where each node's process is).
//!
//! The same workload maps onto both:
//! - a presence event is one Herald event, or one etcd put of
//!   `presence/<uid>` whose value is the JSON of the record Herald would
//!   return (so the bytes on the wire and on disk are of the same size);
//! - a batch of events is one Herald request, or one etcd txn of puts;
//! - a batch query is one Herald query, or etcd txns of at most
//!   `--etcd-txn-ops` gets each (etcd's limit, 128 by default), sent
//!   concurrently: etcd's best multi-get of unrelated keys.

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

/// Read consistency of a query.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cons {
    /// Herald `linearizable` (read index); etcd's default linearizable range.
    Linearizable,
    /// Herald `local`; etcd `serializable`.
    Local,
}

impl Cons {
    pub fn name(self) -> &'static str {
        match self {
            Cons::Linearizable => "linearizable",
            Cons::Local => "local",
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

/// The JSON record of user `i`, as Herald answers it; the etcd value.
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
    /// Local process serving it, when found.
    pub pid: Option<u32>,
}

/// The cluster as seen when the benchmark starts.
#[derive(Debug, Clone)]
pub struct Topology {
    pub system: System,
    pub nodes: Vec<NodeInfo>,
    /// etcd only: how many gets one txn may carry.
    pub etcd_txn_ops: usize,
    /// Herald only: the API key every connection sends.
    pub credential: herald_client::Credential,
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

/// Finds the members and the leader. Herald: from `node`'s status. etcd:
/// the status of every endpoint.
pub async fn discover(
    system: System,
    node: &str,
    endpoints: &[String],
    etcd_txn_ops: usize,
    credential: &herald_client::Credential,
) -> Result<Topology, OpError> {
    let nodes = match system {
        System::Herald => {
            let c = HeraldClient::connect(node).await?.with_credential(credential.clone());
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
                    pid: local_pid(&n.publish),
                })
                .collect()
        }
        System::Etcd => etcd::discover(endpoints).await?,
    };
    Ok(Topology {
        system,
        nodes,
        etcd_txn_ops: etcd_txn_ops.max(1),
        credential: credential.clone(),
    })
}

/// One client connection to one node.
#[derive(Clone)]
pub enum Conn {
    Herald(pb::presence_client::PresenceClient<herald_client::credential::AuthChannel>),
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
                let c = HeraldClient::connect(addr).await?.with_credential(topo.credential.clone());
                Ok(Conn::Herald(c.presence_client()))
            }
            System::Etcd => etcd::open(addr, topo.etcd_txn_ops).await,
        }
    }

    /// Commits presence events `(user, online)` in one request (Herald) or
    /// one txn (etcd).
    pub async fn write(&mut self, events: &[(u64, bool)]) -> Result<(), OpError> {
        match self {
            Conn::Herald(c) => {
                let events = events
                    .iter()
                    .map(|&(i, online)| {
                        let kind = if online {
                            pb::presence_event::Kind::Login
                        } else {
                            pb::presence_event::Kind::Logout
                        };
                        pb::PresenceEvent {
                            kind: kind as i32,
                            uid: uid(i),
                            sid: sid(i),
                            client: CLIENT_TYPE.into(),
                            accepts_strangers: None,
                            ext: Default::default(),
                        }
                    })
                    .collect();
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
                } as i32;
                let req = pb::QueryRequest {
                    uids: users.iter().map(|&i| uid(i)).collect(),
                    sids: vec![],
                    consistency,
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

    use super::{Conn, NodeInfo, OpError};

    fn off() -> OpError {
        OpError::new(
            "unsupported",
            "this herald was built without etcd support: cargo build -p herald-client --features etcd",
        )
    }

    pub async fn discover(_endpoints: &[String]) -> Result<Vec<NodeInfo>, OpError> {
        Err(off())
    }

    pub async fn open(_addr: &str, _txn_ops: usize) -> Result<Conn, OpError> {
        Err(off())
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    //! The etcd side, over the `etcd-client` crate (tonic 0.14, prost
    //! 0.14: the same stack as Herald's own client).

    use std::time::Duration;

    use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};
    use tokio::task::JoinSet;

    use super::{etcd_key, host_port, local_pid, record_json, Conn, Cons, NodeInfo, OpError};
    use herald_client::error::grpc_code_name;

    fn err(e: etcd_client::Error) -> OpError {
        match e {
            etcd_client::Error::GRpcStatus(s) => {
                OpError::new(grpc_code_name(s.code()), s.message().to_string())
            }
            etcd_client::Error::TransportError(t) => OpError::new("transport", format!("{t:?}")),
            other => OpError::new("etcd", other.to_string()),
        }
    }

    fn url(addr: &str) -> String {
        if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        }
    }

    async fn connect(addr: &str) -> Result<Client, OpError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(30));
        Client::connect([url(addr)], Some(opts)).await.map_err(err)
    }

    /// The members: each endpoint's status names its member id and the
    /// leader's.
    pub async fn discover(endpoints: &[String]) -> Result<Vec<NodeInfo>, OpError> {
        if endpoints.is_empty() {
            return Err(OpError::new(
                "invalid_argument",
                "--endpoints is required with --target etcd",
            ));
        }
        let mut out = Vec::new();
        let mut leader_id = 0;
        let mut ids = Vec::new();
        for ep in endpoints {
            let mut c = connect(ep).await?;
            let s = c.status().await.map_err(err)?;
            let member = s.header().map(|h| h.member_id()).unwrap_or_default();
            if s.leader() != 0 {
                leader_id = s.leader();
            }
            ids.push(member);
        }
        if leader_id == 0 {
            return Err(OpError::new("no_leader", "no etcd endpoint knows a leader"));
        }
        for (k, (ep, id)) in endpoints.iter().zip(ids).enumerate() {
            let addr = host_port(ep).map(|(h, p)| format!("{h}:{p}")).unwrap_or_else(|| ep.clone());
            out.push(NodeInfo {
                number: k as u64 + 1,
                pid: local_pid(&addr),
                addr,
                leader: id == leader_id,
            });
        }
        Ok(out)
    }

    /// A KV client on its own connection, and the txn op limit.
    #[derive(Clone)]
    pub struct Kv {
        kv: KvClient,
        txn_ops: usize,
    }

    pub async fn open(addr: &str, txn_ops: usize) -> Result<Conn, OpError> {
        Ok(Conn::Etcd(Kv { kv: connect(addr).await?.kv_client(), txn_ops }))
    }

    impl Kv {
        /// One put, or one txn of puts for a batch (within the txn limit;
        /// a larger batch is several txns, one after the other).
        pub async fn write(&mut self, events: &[(u64, bool)]) -> Result<(), OpError> {
            if let [(i, online)] = events {
                self.kv.put(etcd_key(*i), record_json(*i, *online), None).await.map_err(err)?;
                return Ok(());
            }
            for part in events.chunks(self.txn_ops) {
                let ops: Vec<TxnOp> = part
                    .iter()
                    .map(|&(i, on)| TxnOp::put(etcd_key(i), record_json(i, on), None))
                    .collect();
                self.kv.txn(Txn::new().and_then(ops)).await.map_err(err)?;
            }
            Ok(())
        }

        /// Txns of at most `txn_ops` gets, all in flight at once; the number
        /// of keys found.
        pub async fn query(&mut self, users: &[u64], cons: Cons) -> Result<usize, OpError> {
            let opts = || match cons {
                Cons::Linearizable => None,
                Cons::Local => Some(GetOptions::new().with_serializable()),
            };
            let mut set = JoinSet::new();
            for part in users.chunks(self.txn_ops) {
                let ops: Vec<TxnOp> =
                    part.iter().map(|&i| TxnOp::get(etcd_key(i), opts())).collect();
                let mut kv = self.kv.clone();
                set.spawn(async move { kv.txn(Txn::new().and_then(ops)).await });
            }
            let mut found = 0;
            while let Some(r) = set.join_next().await {
                let r = r.map_err(|e| OpError::new("internal", e.to_string()))?.map_err(err)?;
                for op in r.op_responses() {
                    if let TxnOpResponse::Get(g) = op {
                        found += g.kvs().len();
                    }
                }
            }
            Ok(found)
        }
    }
}

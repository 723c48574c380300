//! The etcd side of `herald bench --target etcd`.
//!
//! Two codecs over the same wire protocol (etcd's v3 gRPC API):
//! - `lean` (default): etcd's `KV/Put` and `KV/Txn` called directly with
//!   tonic on a plain channel per connection, and hand-written prost
//!   messages for only the fields the benchmark sends or reads (keys and
//!   values decoded as zero-copy `Bytes`; headers and revisions skipped).
//! - `crate`: the `etcd-client` crate, as the benchmark used before. It
//!   puts every call through a load-balanced channel (a `tower` buffer and
//!   balancer), an interceptor taking a lock per call, and converts every
//!   answer into its own types; kept to measure that cost.
//!
//! A client holds `--etcd-conns` HTTP/2 connections; the txns of one query
//! go out one after the other or all at once (`--etcd-txns`), spread over
//! them round-robin. Discovery (`Maintenance/Status`) uses the crate.
//!
//! The defaults (lean, one connection, concurrent txns) are measured:
//! batch-query, 16 clients × 1,000 ids (8 txns of ≤128 gets), linearizable
//! via a follower, 100,000 users, release build, 3 local etcd 3.4 members,
//! on 2 cores shared with other builds (load 4–7, so absolute ids/s swung
//! from 30k to 198k between runs; the contention-robust figure is ids per
//! CPU-second of etcd + bench together, median of 9–15 interleaved runs):
//!
//! | client | ids/CPU-s | bench µs/id | bench share of CPU |
//! |---|---:|---:|---:|
//! | crate, 1 conn, concurrent (before), JSON record values | 73k | – | – |
//! | crate, 1 conn, concurrent | 78k | 1.56 | 13% |
//! | crate, 1 conn, sequential | 71k | 1.88 | 13% |
//! | lean, 1 conn, concurrent | 94k | 1.07 | 10% |
//! | lean, 1 conn, concurrent, `--threads 1` | 87k | 0.97 | 9% |
//! | lean, 1 conn, sequential | 79k | 1.41 | 11% |
//! | lean, 4 conns, concurrent | 87k | 1.27 | 11% |
//! | lean, 8 conns, concurrent | 85k | 1.41 | 12% |
//!
//! etcd itself takes ~90% of the CPU in every setting: the benchmark is
//! not what limits it. The lean codec takes a third less client CPU per id
//! than the crate; concurrent txns beat sequential ones (etcd serves
//! concurrent linearizable reads with shared read-index rounds); more
//! connections per client add client work without helping etcd; the
//! ~150-byte JSON values the benchmark stored before cost etcd ~8% more
//! than the ~20-byte event. Before → after: 73k → 94k ids/CPU-s (+29%).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::task::JoinSet;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::{
    etcd_key, etcd_value, host_port, local_pid, Conn, Cons, EtcdCodec, EtcdOpts, EtcdTxns,
    EtcdValue, NodeInfo, OpError,
};
use herald_client::error::grpc_code_name;

/// Connect timeout to an etcd member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-call timeout of the crate codec (the lean one is bounded by the
/// benchmark's own `--op-timeout`).
const CRATE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// etcd's messages, only the fields the benchmark uses (field numbers from
/// etcd's `rpc.proto` and `kv.proto`; prost skips the others).
pub mod pb {
    use prost::bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bool, tag = "7")]
        pub serializable: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {}

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Request {
        #[prost(message, tag = "1")]
        Range(RangeRequest),
        #[prost(message, tag = "2")]
        Put(PutRequest),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestOp {
        #[prost(oneof = "Request", tags = "1, 2")]
        pub request: Option<Request>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnRequest {
        /// `success`: run when the (empty) compare list holds, i.e. always.
        #[prost(message, repeated, tag = "2")]
        pub success: Vec<RequestOp>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "bytes", tag = "1")]
        pub key: Bytes,
        #[prost(bytes = "bytes", tag = "5")]
        pub value: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Response {
        #[prost(message, tag = "1")]
        Range(RangeResponse),
        #[prost(message, tag = "2")]
        Put(PutResponse),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseOp {
        #[prost(oneof = "Response", tags = "1, 2")]
        pub response: Option<Response>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxnResponse {
        #[prost(bool, tag = "2")]
        pub succeeded: bool,
        #[prost(message, repeated, tag = "3")]
        pub responses: Vec<ResponseOp>,
    }

    /// Keys found in a txn's answer.
    pub fn found(r: &TxnResponse) -> usize {
        r.responses
            .iter()
            .map(|op| match &op.response {
                Some(Response::Range(g)) => g.kvs.len(),
                _ => 0,
            })
            .sum()
    }
}

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

async fn connect_crate(addr: &str) -> Result<Client, OpError> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(CRATE_CALL_TIMEOUT);
    Client::connect([url(addr)], Some(opts)).await.map_err(err)
}

/// A plain tonic channel: one HTTP/2 connection, TCP_NODELAY, the same
/// settings Herald's own client uses.
async fn connect_lean(addr: &str) -> Result<Channel, OpError> {
    let ep = Endpoint::from_shared(url(addr))
        .map_err(|e| OpError::new("invalid_argument", format!("{addr}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    ep.connect().await.map_err(|e| OpError::new("connect", format!("{addr}: {e}")))
}

/// The members: each endpoint's status names its member id and the
/// leader's.
pub async fn discover(endpoints: &[String]) -> Result<Vec<NodeInfo>, OpError> {
    if endpoints.is_empty() {
        return Err(OpError::new("invalid_argument", "--endpoints is required with --target etcd"));
    }
    let mut out = Vec::new();
    let mut leader_id = 0;
    let mut ids = Vec::new();
    for ep in endpoints {
        let mut c = connect_crate(ep).await?;
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
            replica: false,
        });
    }
    Ok(out)
}

/// One connection of a client.
#[derive(Clone)]
enum Link {
    Lean(Channel),
    Crate(Box<etcd_client::KvClient>),
}

/// A benchmark client: its connections and how it uses them.
#[derive(Clone)]
pub struct Kv {
    links: Arc<Vec<Link>>,
    next: Arc<AtomicUsize>,
    txn_ops: usize,
    txns: EtcdTxns,
    value: EtcdValue,
}

pub async fn open(addr: &str, o: &EtcdOpts) -> Result<Conn, OpError> {
    let mut links = Vec::with_capacity(o.conns.max(1));
    for _ in 0..o.conns.max(1) {
        links.push(match o.codec {
            EtcdCodec::Lean => Link::Lean(connect_lean(addr).await?),
            EtcdCodec::Crate => Link::Crate(Box::new(connect_crate(addr).await?.kv_client())),
        });
    }
    Ok(Conn::Etcd(Kv {
        links: Arc::new(links),
        next: Arc::new(AtomicUsize::new(0)),
        txn_ops: o.txn_ops.max(1),
        txns: o.txns,
        value: o.value,
    }))
}

fn status(s: tonic::Status) -> OpError {
    OpError::new(grpc_code_name(s.code()), s.message().to_string())
}

async fn unary<Req, Resp>(ch: Channel, path: &'static str, req: Req) -> Result<Resp, OpError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.map_err(|e| OpError::new("transport", e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let r = g
        .unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec)
        .await
        .map_err(status)?;
    Ok(r.into_inner())
}

/// One txn of gets on one link; the number of keys found.
async fn get_txn(link: Link, keys: Vec<String>, cons: Cons) -> Result<usize, OpError> {
    match link {
        Link::Lean(ch) => {
            let serializable = cons != Cons::Linearizable;
            let success = keys
                .into_iter()
                .map(|k| pb::RequestOp {
                    request: Some(pb::Request::Range(pb::RangeRequest {
                        key: k.into_bytes(),
                        serializable,
                    })),
                })
                .collect();
            let r: pb::TxnResponse =
                unary(ch, "/etcdserverpb.KV/Txn", pb::TxnRequest { success }).await?;
            Ok(pb::found(&r))
        }
        Link::Crate(mut kv) => {
            use etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
            let opts = || match cons {
                Cons::Linearizable => None,
                Cons::Local | Cons::Bounded => Some(GetOptions::new().with_serializable()),
            };
            let ops: Vec<TxnOp> = keys.into_iter().map(|k| TxnOp::get(k, opts())).collect();
            let r = kv.txn(Txn::new().and_then(ops)).await.map_err(err)?;
            Ok(r.op_responses()
                .iter()
                .map(|op| match op {
                    TxnOpResponse::Get(g) => g.kvs().len(),
                    _ => 0,
                })
                .sum())
        }
    }
}

impl Kv {
    fn link(&self) -> Link {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        self.links[k % self.links.len()].clone()
    }

    /// One put, or one txn of puts for a batch (within the txn limit;
    /// a larger batch is several txns, one after the other).
    pub async fn write(&mut self, events: &[(u64, bool)]) -> Result<(), OpError> {
        for part in events.chunks(self.txn_ops) {
            match self.link() {
                Link::Lean(ch) => {
                    if let [(i, on)] = part {
                        let req = pb::PutRequest {
                            key: etcd_key(*i).into_bytes(),
                            value: etcd_value(*i, *on, self.value),
                        };
                        let _: pb::PutResponse = unary(ch, "/etcdserverpb.KV/Put", req).await?;
                    } else {
                        let success = part
                            .iter()
                            .map(|&(i, on)| pb::RequestOp {
                                request: Some(pb::Request::Put(pb::PutRequest {
                                    key: etcd_key(i).into_bytes(),
                                    value: etcd_value(i, on, self.value),
                                })),
                            })
                            .collect();
                        let _: pb::TxnResponse =
                            unary(ch, "/etcdserverpb.KV/Txn", pb::TxnRequest { success }).await?;
                    }
                }
                Link::Crate(mut kv) => {
                    use etcd_client::{Txn, TxnOp};
                    if let [(i, on)] = part {
                        kv.put(etcd_key(*i), etcd_value(*i, *on, self.value), None)
                            .await
                            .map_err(err)?;
                    } else {
                        let ops: Vec<TxnOp> = part
                            .iter()
                            .map(|&(i, on)| {
                                TxnOp::put(etcd_key(i), etcd_value(i, on, self.value), None)
                            })
                            .collect();
                        kv.txn(Txn::new().and_then(ops)).await.map_err(err)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Txns of at most `txn_ops` gets, one after the other or all in
    /// flight at once; the number of keys found.
    pub async fn query(&mut self, users: &[u64], cons: Cons) -> Result<usize, OpError> {
        let parts = users.chunks(self.txn_ops).map(|p| p.iter().map(|&i| etcd_key(i)).collect());
        let mut found = 0;
        match self.txns {
            EtcdTxns::Sequential => {
                for keys in parts {
                    found += get_txn(self.link(), keys, cons).await?;
                }
            }
            EtcdTxns::Concurrent => {
                let mut set = JoinSet::new();
                for keys in parts {
                    set.spawn(get_txn(self.link(), keys, cons));
                }
                while let Some(r) = set.join_next().await {
                    found += r.map_err(|e| OpError::new("internal", e.to_string()))??;
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::pb;
    use prost::Message;

    /// The lean messages are etcd's wire format: a txn of one get encodes
    /// as field 2 (success) holding field 1 (request_range) holding the
    /// key (1) and serializable (7); an answer with a header and
    /// revisions, which the lean types skip, decodes to its keys and
    /// values, and every key returned counts as found.
    #[test]
    fn bench_etcd_lean_wire_format() {
        let req = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::Request::Range(pb::RangeRequest {
                    key: b"k".to_vec(),
                    serializable: true,
                })),
            }],
        };
        assert_eq!(req.encode_to_vec(), vec![0x12, 0x07, 0x0a, 0x05, 0x0a, 0x01, b'k', 0x38, 0x01]);
        // TxnResponse{header{cluster_id:1}, succeeded, responses:[range{
        // header, kvs:[{key "a", create_revision 5, value "v"}, {key "b"}], count 2}]}
        let kv_a = [0x0a, 0x01, b'a', 0x10, 0x05, 0x2a, 0x01, b'v'];
        let kv_b = [0x0a, 0x01, b'b'];
        let mut range = vec![0x0a, 0x02, 0x08, 0x01, 0x12, kv_a.len() as u8];
        range.extend(kv_a);
        range.extend([0x12, kv_b.len() as u8]);
        range.extend(kv_b);
        range.extend([0x20, 0x02]);
        let mut op = vec![0x0a, range.len() as u8];
        op.extend(&range);
        let mut resp = vec![0x0a, 0x02, 0x08, 0x01, 0x10, 0x01, 0x1a, op.len() as u8];
        resp.extend(&op);
        let r = pb::TxnResponse::decode(resp.as_slice()).unwrap();
        assert!(r.succeeded);
        let Some(pb::Response::Range(g)) = &r.responses[0].response else { panic!("{r:?}") };
        assert_eq!((&g.kvs[0].key[..], &g.kvs[0].value[..]), (&b"a"[..], &b"v"[..]));
        assert_eq!(pb::found(&r), 2);
    }
}

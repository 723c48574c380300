//! Client side of the Raft transport: openraft's network traits over tonic,
//! to the `herald.raft.RaftInternal` service on each peer's sync port.

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::time::Duration;

use herald_proto::raft::raft_internal_client::RaftInternalClient;
use herald_proto::raft::{RaftBytes, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::codec::{decode, encode};
use super::types::{NodeAddr, TypeConfig, Vote};
use crate::peer_tls::PeerClientTls;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, File>;

/// Size of one snapshot chunk on the wire: big enough to amortise per-message
/// cost, well under the 64 MiB message limit of the sync port.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks buffered between the file reader and the gRPC stream.
const SNAPSHOT_CHANNEL_CHUNKS: usize = 4;
/// Largest message accepted on the sync port (defined with the codec that
/// bounds decoding by it).
pub use super::codec::MAX_RAFT_MESSAGE_BYTES;

/// Opens a lazily connecting channel to a peer's sync port: plaintext
/// without `tls`, else mutual TLS with the settings for that peer
/// ([`PeerClientTls::for_node`](crate::peer_tls::PeerClientTls::for_node)).
pub fn channel(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        None => Endpoint::from_shared(format!("http://{addr}"))?,
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
    };
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

/// Makes one connection per peer; openraft keeps them per replication stream.
pub struct NetworkFactory {
    pub connect_timeout: Duration,
    /// `<peer-tls>`: None = plaintext peers.
    pub tls: Option<PeerClientTls>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> Conn {
        let tls = self.tls.as_ref().map(|t| t.for_node(target));
        let client = channel(&node.sync, self.connect_timeout, tls).ok().map(|ch| {
            RaftInternalClient::new(ch)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        });
        Conn { target, addr: node.sync.clone(), client }
    }
}

/// A connection to one peer.
pub struct Conn {
    target: u64,
    addr: String,
    client: Option<RaftInternalClient<Channel>>,
}

fn status_to_rpc(target: u64, s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::from_string(format!(
            "node {target}: {}",
            s.message()
        ))),
        _ => RPCError::Network(NetworkError::from_string(format!("node {target}: {s}"))),
    }
}

impl Conn {
    fn client(&self) -> Result<RaftInternalClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().ok_or_else(|| {
            RPCError::Unreachable(Unreachable::from_string(format!("bad address {}", self.addr)))
        })
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftInternalClient<Channel>, RaftBytes) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftBytes>, tonic::Status>>,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let fut = f(self.client()?, RaftBytes { data });
        let resp = tokio::time::timeout(option.hard_ttl(), fut)
            .await
            .map_err(|_| {
                RPCError::Unreachable(Unreachable::from_string(format!(
                    "node {}: timed out",
                    self.target
                )))
            })?
            .map_err(|s| status_to_rpc(self.target, s))?;
        decode(&resp.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for Conn {
    type SnapshotData = File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.append_entries(r).await }).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, &option, |mut c, r| async move { c.transfer_leader(r).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .client()
            .map_err(|_| StreamingError::Unreachable(Unreachable::from_string("bad address")))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHANNEL_CHUNKS);
        let first = SnapshotChunk {
            vote: encode(&vote).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?,
            meta: encode(&snapshot.meta)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?,
            data: Vec::new(),
            done: false,
        };
        let mut file = snapshot.snapshot;
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            use std::io::Seek;
            file.rewind()?;
            if tx.blocking_send(first).is_err() {
                return Ok(0);
            }
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = file.read(&mut buf)?;
                buf.truncate(n);
                let done = n == 0;
                sent += n as u64;
                if tx
                    .blocking_send(SnapshotChunk { vote: vec![], meta: vec![], data: buf, done })
                    .is_err()
                    || done
                {
                    return Ok(sent);
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let call = client.snapshot(stream);
        let resp = tokio::select! {
            r = call => r.map_err(|s| StreamingError::Network(NetworkError::from_string(format!("node {}: {s}", self.target))))?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let sent = reader
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        tracing::info!(target_node = self.target, bytes = sent, "snapshot sent");
        decode(&resp.into_inner().data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}

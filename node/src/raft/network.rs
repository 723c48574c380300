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
use super::entry_bytes::{encode_append, EntryBytes};
use super::types::{LogId, NodeAddr, TypeConfig, Vote};
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

/// Most bytes of entries one AppendEntries carries (at least one entry is
/// always sent). openraft bounds a batch in entries (`max_payload_entries`,
/// 300), not bytes, and one entry may be a 4 MiB request of 10,000 events:
/// 300 of them (~180 MB) would exceed the sync port's 64 MiB message limit
/// and be refused forever, and even a batch under it takes a follower longer
/// than the heartbeat-long RPC timeout to decode and fsync, so the same batch
/// was sent again and again (the livelock of issue 13 after a bulk load).
/// 4 MiB keeps one round short (tens of ms) and still amortises the RPC.
pub const MAX_APPEND_BYTES: usize = 4 << 20;

/// The slowest a follower is assumed to take in an AppendEntries, per byte
/// of entries (transfer, decode, write, fsync): 16 MiB/s, well below what
/// this machine's disk and loopback do, so a large batch gets the time it
/// needs on top of openraft's heartbeat-long timeout for an empty one.
const MIN_APPEND_BYTES_PER_SEC: u64 = 16 << 20;

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
    /// The least an AppendEntries is given (`election-min-ms`):
    /// openraft's own timeout is one heartbeat interval (50 ms by default),
    /// which a follower applying 10,000-event entries on a loaded machine
    /// misses, and a timed-out append is only sent again to the same busy
    /// follower. Liveness is judged by heartbeats and the lease, not by
    /// this; a follower silent for `election-min-ms` campaigns anyway.
    pub append_floor: Duration,
    /// `<peer-tls>`: None = plaintext peers.
    pub tls: Option<PeerClientTls>,
    /// `<server sync-via>` of this node's file: number → where to dial it.
    pub dial: std::sync::Arc<std::collections::HashMap<u64, String>>,
    /// Entries as the log encoded them: copied into requests, not encoded
    /// again per follower.
    pub kept: std::sync::Arc<EntryBytes>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> Conn {
        let tls = self.tls.as_ref().map(|t| t.for_node(target));
        let addr = self.dial.get(&target).unwrap_or(&node.sync);
        let client = channel(addr, self.connect_timeout, tls).ok().map(|ch| {
            RaftInternalClient::new(ch)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        });
        Conn {
            target,
            addr: addr.clone(),
            client,
            append_floor: self.append_floor,
            kept: self.kept.clone(),
        }
    }
}

/// A connection to one peer.
pub struct Conn {
    target: u64,
    addr: String,
    client: Option<RaftInternalClient<Channel>>,
    append_floor: Duration,
    kept: std::sync::Arc<EntryBytes>,
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
        self.call_within(req, option.hard_ttl(), f).await
    }

    /// [`call`](Self::call) with an explicit timeout.
    async fn call_within<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftInternalClient<Channel>, RaftBytes) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftBytes>, tonic::Status>>,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send_within(data, timeout, f).await
    }

    /// Sends an encoded request and decodes the answer, within `timeout`.
    async fn send_within<Resp, F, Fut>(
        &self,
        data: Vec<u8>,
        timeout: Duration,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftInternalClient<Channel>, RaftBytes) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftBytes>, tonic::Status>>,
    {
        let fut = f(self.client()?, RaftBytes { data });
        let resp = tokio::time::timeout(timeout, fut)
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

/// What [`bound_append`] did to a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bound {
    /// Encoded bytes of the entries sent.
    pub bytes: usize,
    /// The last log id sent, when entries after it were left out.
    pub cut_at: Option<LogId>,
}

/// Keeps the longest prefix of `rpc`'s entries whose encoded size is at most
/// `max_bytes` (always at least one entry). When entries are left out, the
/// leader's commit index sent is lowered to the last entry sent: that entry
/// is committed (the leader's log is one chain and its commit index is past
/// it), and the follower never hears of a commit beyond what it holds.
pub(crate) fn bound_append(
    mut rpc: AppendEntriesRequest<TypeConfig>,
    max_bytes: usize,
) -> Result<(AppendEntriesRequest<TypeConfig>, Bound), std::io::Error> {
    let mut bytes = 0usize;
    let mut keep = 0usize;
    for e in &rpc.entries {
        let n = super::codec::encoded_len(e)?;
        if keep > 0 && bytes + n > max_bytes {
            break;
        }
        bytes += n;
        keep += 1;
    }
    if keep == rpc.entries.len() {
        return Ok((rpc, Bound { bytes, cut_at: None }));
    }
    rpc.entries.truncate(keep);
    let last = rpc.entries.last().map(|e| e.log_id).expect("at least one entry is kept");
    rpc.leader_commit = commit_within(rpc.leader_commit, last);
    Ok((rpc, Bound { bytes, cut_at: Some(last) }))
}

/// The commit index to send with a request cut at `last`: the leader's, or
/// `last` when the leader's is past it (that entry is committed: the
/// leader's log is one chain and its commit index is beyond it), so the
/// follower never hears of a commit beyond what it holds.
fn commit_within(commit: Option<LogId>, last: LogId) -> Option<LogId> {
    match commit {
        Some(c) if c.index > last.index => Some(last),
        c => c,
    }
}

/// `rpc` as a chain of requests whose entries each encode to at most
/// `max_bytes` (always at least one entry each): part k+1's `prev_log_id` is
/// part k's last entry, and every part but the last carries a commit index
/// no later than its own last entry, so the follower never hears of a
/// commit beyond what it holds. The parts, answered in order, replicate
/// exactly what `rpc` would (pipelined replication sends them on one stream).
pub(crate) fn split_append(
    rpc: AppendEntriesRequest<TypeConfig>,
    max_bytes: usize,
) -> Result<Vec<AppendEntriesRequest<TypeConfig>>, std::io::Error> {
    let AppendEntriesRequest { vote, prev_log_id, entries, leader_commit } = rpc;
    let mut parts = Vec::new();
    let mut cur: Vec<super::types::Entry> = Vec::new();
    let (mut bytes, mut prev) = (0usize, prev_log_id);
    for e in entries {
        let n = super::codec::encoded_len(&e)?;
        if !cur.is_empty() && bytes + n > max_bytes {
            let last = cur.last().map(|e| e.log_id).expect("a part has an entry");
            parts.push(AppendEntriesRequest {
                vote,
                prev_log_id: prev,
                entries: std::mem::take(&mut cur),
                leader_commit: commit_within(leader_commit, last),
            });
            prev = Some(last);
            bytes = 0;
        }
        bytes += n;
        cur.push(e);
    }
    parts.push(AppendEntriesRequest { vote, prev_log_id: prev, entries: cur, leader_commit });
    Ok(parts)
}

/// AppendEntries parts queued on one replication stream before the feeder
/// waits: openraft's follower side pipelines at most 64 (its
/// `PIPELINE_BUFFER_SIZE`), so more would only wait in memory.
const STREAM_PARTS: usize = 64;

/// openraft's timeout (one heartbeat interval, enough for an empty or small
/// batch) plus the time `bytes` of entries may take at
/// [`MIN_APPEND_BYTES_PER_SEC`].
pub(crate) fn append_timeout(base: Duration, bytes: usize) -> Duration {
    base + Duration::from_micros(bytes as u64 * 1_000_000 / MIN_APPEND_BYTES_PER_SEC)
}

impl RaftNetworkV2<TypeConfig> for Conn {
    type SnapshotData = File;

    /// Pipelined replication: the requests openraft generates go out on one
    /// `AppendStream` without waiting for answers (bounded by
    /// [`STREAM_PARTS`] and HTTP/2 flow control), and the follower's
    /// answers come back in order. A request over [`MAX_APPEND_BYTES`] goes
    /// as a chain of parts ([`split_append`]) whose answers are merged into
    /// its one answer. Each answer is awaited at most the timeout a unary
    /// AppendEntries of its size gets ([`append_timeout`]).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> futures::future::BoxFuture<
        's,
        Result<
            futures::stream::BoxStream<
                's,
                Result<openraft::raft::StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>,
            >,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        use futures::StreamExt as _;
        let target = self.target;
        let floor = option.soft_ttl().max(self.append_floor);
        Box::pin(async move {
            let mut client = self.client()?;
            let (parts_tx, parts_rx) = tokio::sync::mpsc::channel::<RaftBytes>(STREAM_PARTS);
            // (parts, bytes) of each request, in order, for the merge.
            let (groups_tx, groups_rx) = tokio::sync::mpsc::channel::<(usize, usize)>(STREAM_PARTS);
            let open = client.append_stream(tokio_stream::wrappers::ReceiverStream::new(parts_rx));
            let opened =
                tokio::time::timeout(append_timeout(floor, 0), open).await.map_err(|_| {
                    RPCError::Unreachable(Unreachable::from_string(format!(
                        "node {target}: timed out"
                    )))
                })?;
            let answers = match opened {
                Ok(r) => r.into_inner(),
                // A follower of an older build (a rolling upgrade): one
                // request at a time over the unary AppendEntries.
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::debug!(
                        target_node = target,
                        "no AppendStream there: sequential appends"
                    );
                    return openraft::network::stream_append_sequential(self, input, option).await;
                }
                Err(s) => return Err(status_to_rpc(target, s)),
            };
            let kept = self.kept.clone();
            tokio::spawn(async move {
                let mut input = input;
                while let Some(rpc) = input.next().await {
                    let whole = match encode_append(&rpc, &kept) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(target_node = target, error = %e, "append not encoded");
                            return;
                        }
                    };
                    let parts = if whole.len() <= MAX_APPEND_BYTES {
                        vec![whole]
                    } else {
                        let split = split_append(rpc, MAX_APPEND_BYTES).and_then(|ps| {
                            ps.iter()
                                .map(|p| encode_append(p, &kept))
                                .collect::<Result<Vec<_>, _>>()
                        });
                        match split {
                            Ok(ps) => {
                                tracing::debug!(
                                    target_node = target,
                                    parts = ps.len(),
                                    "AppendEntries split to its byte bound"
                                );
                                ps
                            }
                            Err(e) => {
                                tracing::warn!(target_node = target, error = %e, "append not encoded");
                                return;
                            }
                        }
                    };
                    let bytes = parts.iter().map(Vec::len).sum();
                    if groups_tx.send((parts.len(), bytes)).await.is_err() {
                        return;
                    }
                    for data in parts {
                        if parts_tx.send(RaftBytes { data }).await.is_err() {
                            return;
                        }
                    }
                }
            });

            let merged =
                futures::stream::unfold(Some((answers, groups_rx)), move |state| async move {
                    let (mut answers, mut groups) = state?;
                    let (n, bytes) = groups.recv().await?;
                    let timeout = append_timeout(floor, bytes);
                    let mut last = None;
                    for _ in 0..n {
                        let next = tokio::time::timeout(timeout, answers.message()).await;
                        let r: Result<
                            openraft::raft::StreamAppendResult<TypeConfig>,
                            RPCError<TypeConfig>,
                        > = match next {
                            Err(_) => Err(RPCError::Unreachable(Unreachable::from_string(
                                format!("node {target}: timed out"),
                            ))),
                            Ok(Err(s)) => Err(status_to_rpc(target, s)),
                            Ok(Ok(None)) => Err(RPCError::Network(NetworkError::from_string(
                                format!("node {target}: append stream ended"),
                            ))),
                            Ok(Ok(Some(m))) => decode(&m.data)
                                .map_err(|e| RPCError::Network(NetworkError::new(&e))),
                        };
                        match r {
                            // The follower ends the stream after an error:
                            // it is this request's answer and the last.
                            Ok(Ok(l)) => last = Some(Ok(Ok(l))),
                            other => return Some((other, None)),
                        }
                    }
                    last.map(|r| (r, Some((answers, groups))))
                });
            Ok(merged.boxed())
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let net = |e: std::io::Error| RPCError::Network(NetworkError::new(&e));
        // Encoded once; only a batch over the bound is sized entry by entry,
        // cut and encoded again.
        let mut data = encode_append(&rpc, &self.kept).map_err(net)?;
        let mut bound = Bound { bytes: data.len(), cut_at: None };
        if data.len() > MAX_APPEND_BYTES {
            let (cut, b) = bound_append(rpc, MAX_APPEND_BYTES).map_err(net)?;
            if let Some(last) = &b.cut_at {
                tracing::debug!(
                    target_node = self.target,
                    sent = cut.entries.len(),
                    bytes = b.bytes,
                    last = %last,
                    "AppendEntries batch cut to its byte bound"
                );
            }
            data = encode_append(&cut, &self.kept).map_err(net)?;
            bound = b;
        }
        // Heartbeats come through here too, but openraft bounds them by its
        // own heartbeat-long timeout around this call.
        let timeout = append_timeout(option.hard_ttl().max(self.append_floor), bound.bytes);
        let resp: AppendEntriesResponse<TypeConfig> = self
            .send_within(data, timeout, |mut c, r| async move { c.append_entries(r).await })
            .await?;
        Ok(match (resp, bound.cut_at) {
            // The follower took all that was sent, which is a prefix of what
            // openraft asked for: say so, and openraft sends the rest next.
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (resp, _) => resp,
        })
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

#[cfg(test)]
mod tests {
    use herald_domain::presence::{Event, Ext};
    use herald_domain::state::{Command, Op};
    use openraft::entry::RaftEntry;
    use openraft::raft::AppendEntriesRequest;

    use super::*;
    use crate::raft::types::{Entry, LogId};

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    /// An entry of roughly `bytes` encoded bytes (one login whose ext value
    /// is that long).
    fn entry(index: u64, bytes: usize) -> Entry {
        let mut ext = Ext::new();
        ext.insert("k".into(), "x".repeat(bytes));
        let ev = Event::Login {
            uid: format!("u{index}"),
            sid: index,
            client: "web".into(),
            accepts_strangers: None,
            ext,
        };
        Entry::new_normal(log_id(1, index), Command { at_ms: index, ops: vec![Op::Presence(ev)] })
    }

    fn request(entries: Vec<Entry>, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: Some(log_id(1, commit)),
            entries,
        }
    }

    /// A batch over the byte bound is cut to the longest prefix under it;
    /// the commit index sent is lowered to the last entry sent (never a
    /// commit the follower does not hold), and a batch within the bound is
    /// sent whole with its commit index as it was.
    #[test]
    fn append_batches_are_bounded_in_bytes() {
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1000)).collect();
        let one = super::super::codec::encoded_len(&entries[0]).unwrap();
        assert!((1000..1100).contains(&one), "one entry is {one} bytes");

        let (rpc, b) = bound_append(request(entries.clone(), 9), one * 3 + 10).unwrap();
        assert_eq!(rpc.entries.len(), 3);
        assert_eq!(b.cut_at, Some(log_id(1, 3)));
        assert_eq!(
            b.bytes,
            rpc.entries.iter().map(|e| super::super::codec::encoded_len(e).unwrap()).sum::<usize>()
        );
        assert_eq!(rpc.leader_commit, Some(log_id(1, 3)));

        // Commit behind the cut: left as it is.
        let (rpc, b) = bound_append(request(entries.clone(), 2), one * 3 + 10).unwrap();
        assert_eq!((rpc.entries.len(), b.cut_at), (3, Some(log_id(1, 3))));
        assert_eq!(rpc.leader_commit, Some(log_id(1, 2)));

        // Within the bound: untouched.
        let (rpc, b) = bound_append(request(entries.clone(), 9), one * 10 + 10).unwrap();
        assert_eq!((rpc.entries.len(), b.cut_at), (10, None));
        assert_eq!(rpc.leader_commit, Some(log_id(1, 9)));

        // One entry larger than the bound is still sent, alone.
        let (rpc, b) = bound_append(request(entries, 9), 10).unwrap();
        assert_eq!((rpc.entries.len(), b.cut_at), (1, Some(log_id(1, 1))));
    }

    /// A request over the byte bound splits into a chain of parts each
    /// under it (at least one entry each): every part's prev is the one
    /// before's last entry, the parts together carry every entry in order,
    /// every part but the last carries a commit index no later than its
    /// own last entry, and the last keeps the request's; a request within
    /// the bound, or a heartbeat, is one part, unchanged.
    #[test]
    fn oversized_appends_split_into_a_chain() {
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1000)).collect();
        let one = super::super::codec::encoded_len(&entries[0]).unwrap();
        let parts = split_append(request(entries.clone(), 9), one * 3 + 10).unwrap();
        assert_eq!(parts.iter().map(|p| p.entries.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        let mut prev = None;
        for (k, p) in parts.iter().enumerate() {
            assert_eq!(p.prev_log_id, prev, "part {k} follows the one before");
            let last = p.entries.last().unwrap().log_id;
            let commit = p.leader_commit.unwrap();
            if k + 1 < parts.len() {
                assert!(commit.index <= last.index, "part {k}: commit {commit} past {last}");
            } else {
                assert_eq!(commit, log_id(1, 9), "the last part keeps the commit index");
            }
            prev = Some(last);
        }
        let all: Vec<LogId> =
            parts.iter().flat_map(|p| p.entries.iter().map(|e| e.log_id)).collect();
        assert_eq!(all, entries.iter().map(|e| e.log_id).collect::<Vec<_>>());
        // Commit behind the first cut: left as it is everywhere.
        let parts = split_append(request(entries.clone(), 2), one * 3 + 10).unwrap();
        assert!(parts.iter().all(|p| p.leader_commit == Some(log_id(1, 2))));
        // Within the bound, and a heartbeat: one part.
        assert_eq!(split_append(request(entries, 9), usize::MAX).unwrap().len(), 1);
        let hb = split_append(request(vec![], 9), 10).unwrap();
        assert_eq!((hb.len(), hb[0].entries.len()), (1, 0));
    }

    /// A follower that has no `AppendStream` (an older build during a
    /// rolling upgrade) still replicates: `stream_append` falls back to one
    /// unary AppendEntries per request, answered in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_append_falls_back_to_unary_for_an_older_follower() {
        use futures::StreamExt as _;
        // A follower of an older build: no AppendStream, every unary
        // AppendEntries counted and answered Success.
        let (follower, addr) = crate::raft::fake_peer::FakePeer::start().await;
        let mut factory = NetworkFactory {
            connect_timeout: Duration::from_secs(1),
            append_floor: Duration::from_secs(1),
            tls: None,
            dial: std::sync::Arc::new(Default::default()),
            kept: EntryBytes::new(crate::raft::entry_bytes::ENTRY_BYTES_KEPT),
        };
        let mut conn = factory.new_client(2, &NodeAddr { sync: addr, ..Default::default() }).await;
        let mut second = request(vec![entry(3, 10)], 3);
        second.prev_log_id = Some(log_id(1, 2));
        let reqs = vec![request(vec![entry(1, 10), entry(2, 10)], 2), second];
        let answers: Vec<_> = RaftNetworkV2::stream_append(
            &mut conn,
            futures::stream::iter(reqs),
            RPCOption::new(Duration::from_secs(2)),
        )
        .await
        .unwrap()
        .collect()
        .await;
        let lasts: Vec<_> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
        assert_eq!(lasts, vec![Some(log_id(1, 2)), Some(log_id(1, 3))]);
        assert_eq!(follower.appends.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// The timeout grows with the bytes sent: openraft's base for an empty
    /// batch, plus a quarter second for a full 4 MiB batch at 16 MiB/s.
    #[test]
    fn append_timeout_fits_the_batch() {
        let base = Duration::from_millis(100);
        assert_eq!(append_timeout(base, 0), base);
        assert_eq!(append_timeout(base, MAX_APPEND_BYTES), base + Duration::from_millis(250));
    }
}

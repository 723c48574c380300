//! Server side of the Raft transport: the `herald.raft.RaftInternal` gRPC
//! service on the sync port. Besides openraft's own RPCs it carries writes
//! forwarded by followers and read-index requests. Media blobs
//! (`media::peer`) and gateway traffic (`gateway::peer`) are separate
//! services registered beside it.

use std::sync::Arc;

use herald_proto::raft::raft_internal_server::RaftInternal;
use herald_proto::raft::{RaftBytes, ReadIndexReply, ReadIndexRequest, SnapshotChunk};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::codec::{decode, encode};
use super::state_machine::{verify_snapshot_file, RemoveOnDrop};
use super::types::{SnapshotMeta, TypeConfig, Vote};
use super::{ForwardReply, RaftNode};
use crate::peer_tls::PeerGuard;
use herald_domain::state::Op;

/// Largest snapshot accepted from a peer: a bound on disk use by a bad peer.
const MAX_SNAPSHOT_BYTES: u64 = 16 << 30;

pub struct RaftService {
    pub node: Arc<RaftNode>,
    /// Who may call (`<peer-tls>`): every RPC asks it before acting.
    pub peers: PeerGuard,
    /// True once the node is stopping: a leader's append stream, which
    /// never ends by itself, ends then, so the sync port's graceful
    /// shutdown does not wait out its bound for it.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<RaftBytes>, Status> {
    Ok(Response::new(RaftBytes { data: encode(v).map_err(|e| Status::internal(e.to_string()))? }))
}

#[tonic::async_trait]
impl RaftInternal for RaftService {
    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let caller = self.peers.caller(&req);
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        self.peers.claim(&caller, rpc.vote.leader_id.voted_for)?;
        let resp = self.node.raft.vote(rpc).await.map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn pre_vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let caller = self.peers.caller(&req);
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        self.peers.claim(&caller, rpc.vote.leader_id.voted_for)?;
        let resp =
            self.node.raft.pre_vote(rpc).await.map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let caller = self.peers.caller(&req);
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        let leader = rpc.vote.leader_id.voted_for;
        self.peers.claim(&caller, leader)?;
        let resp = self
            .node
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // Every answer but a higher vote means this node follows `leader`.
        if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.node.note_leader_contact(leader);
        }
        reply(&resp)
    }

    type AppendStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<RaftBytes, Status>> + Send + 'static>,
    >;

    /// Pipelined replication: the leader's AppendEntries in order on one
    /// stream, handed to openraft's `Raft::stream_append` (which keeps a
    /// bounded pipeline of them), each answered in order. A request that
    /// does not decode, or whose claimed leader the caller's certificate
    /// does not name, ends the stream with its refusal (`invalid_argument`,
    /// `peer_wrong_number`) after the answers before it; nothing of it
    /// reaches Raft.
    async fn append_stream(
        &self,
        req: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let caller = self.peers.caller(&req);
        let peers = self.peers.clone();
        let leader = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = leader.clone();
        // Why the requests stopped, when one was refused: the stream's last item.
        let refusal: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let refused_with = refusal.clone();
        // Both halves end when the node stops: openraft's pipeline holds
        // the request stream, and while it is open the HTTP/2 stream is
        // too, so the sync port's graceful shutdown would wait out its
        // bound (5 s) for it.
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let inbound =
            futures::StreamExt::take_until(req.into_inner(), until_stopped(self.stopping.clone()));
        let reqs = inbound.map_while(move |m| {
            let rpc: AppendEntriesRequest<TypeConfig> = match m
                .map_err(|s| s.to_string())
                .and_then(|m| decode(&m.data).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "append stream ended: a request did not decode");
                    *refused_with.lock().expect("refusal") = Some(bad(e));
                    return None;
                }
            };
            let claimed = rpc.vote.leader_id.voted_for;
            if let Err(s) = peers.claim(&caller, claimed) {
                tracing::warn!(claimed, error = %s.message(), "append stream refused");
                *refused_with.lock().expect("refusal") = Some(s);
                return None;
            }
            seen.store(claimed, std::sync::atomic::Ordering::Relaxed);
            Some(rpc)
        });
        let node = self.node.clone();
        let answers = futures::StreamExt::take_until(
            self.node.raft.stream_append(reqs),
            until_stopped(self.stopping.clone()),
        );
        let out = answers.map(move |r| match r {
            Ok(res) => {
                // Every answer but a higher vote means this node follows it.
                if !matches!(res, Err(openraft::raft::StreamAppendError::HigherVote(_))) {
                    node.note_leader_contact(leader.load(std::sync::atomic::Ordering::Relaxed));
                }
                encode(&res)
                    .map(|data| RaftBytes { data })
                    .map_err(|e| Status::internal(e.to_string()))
            }
            Err(fatal) => Err(Status::internal(fatal.to_string())),
        });
        // Once the answers end: the refusal, if that is why.
        let last = futures::stream::once(async move { refusal.lock().expect("refusal").take() })
            .filter_map(|s| s.map(Err));
        Ok(Response::new(Box::pin(out.chain(last))))
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let caller = self.peers.caller(&req);
        let rpc: TransferLeaderRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        self.peers.claim(&caller, rpc.from_leader().leader_id.voted_for)?;
        let resp = self
            .node
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftBytes>, Status> {
        // The sender must be the leader its vote names, checked before a
        // byte is written.
        let caller = self.peers.caller(&req);
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| bad("empty snapshot stream"))??;
        let vote: Vote = decode(&first.vote).map_err(bad)?;
        self.peers.claim(&caller, vote.leader_id.voted_for)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad)?;
        let (path, file) = self
            .node
            .sm
            .snapshot_store()
            .temp_file()
            .map_err(|e| Status::internal(e.to_string()))?;
        // Removed on every exit: a broken stream leaves no temp file behind.
        let _tmp = RemoveOnDrop(Some(path.clone()));
        let mut file = tokio::fs::File::from_std(file);
        let mut total = first.data.len() as u64;
        let mut done = first.done;
        use tokio::io::AsyncWriteExt;
        file.write_all(&first.data).await.map_err(|e| Status::internal(e.to_string()))?;
        while !done {
            let chunk = match stream.next().await {
                Some(c) => c?,
                None => return Err(bad("snapshot stream ended before done")),
            };
            total += chunk.data.len() as u64;
            if total > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            file.write_all(&chunk.data).await.map_err(|e| Status::internal(e.to_string()))?;
            done = chunk.done;
        }
        file.sync_all().await.map_err(|e| Status::internal(e.to_string()))?;
        let std_file = file.into_std().await;
        // Verify the whole file (magic, every item, checksum) before openraft
        // sees it: a bad snapshot is refused here, the node keeps its state
        // and keeps running (a storage error inside openraft would stop Raft).
        let check = path.clone();
        let file_meta = tokio::task::spawn_blocking(move || verify_snapshot_file(&check))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| bad(format!("snapshot refused: {e}")))?;
        if file_meta != meta {
            return Err(bad("snapshot refused: its file does not match its meta"));
        }
        tracing::info!(bytes = total, last_log_id = ?meta.last_log_id, "snapshot received");
        let snapshot =
            openraft::alias::SnapshotOf::<TypeConfig, std::fs::File> { meta, snapshot: std_file };
        let resp = self
            .node
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn forward(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.peers.member(&self.peers.caller(&req))?;
        let ops: Vec<Op> = decode(&req.into_inner().data).map_err(bad)?;
        let r: ForwardReply = self.node.write_as_leader(ops).await;
        reply(&r)
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        self.peers.member(&self.peers.caller(&req))?;
        match self.node.leader_read_index().await {
            Ok(index) => Ok(Response::new(ReadIndexReply { index })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}

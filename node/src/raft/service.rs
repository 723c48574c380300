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
use super::types::{SnapshotMeta, TypeConfig, Vote};
use super::{ForwardReply, RaftNode};
use herald_domain::state::Op;

/// Largest snapshot accepted from a peer: a bound on disk use by a bad peer.
const MAX_SNAPSHOT_BYTES: u64 = 16 << 30;

pub struct RaftService {
    pub node: Arc<RaftNode>,
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
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        let resp = self.node.raft.vote(rpc).await.map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn pre_vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        let resp =
            self.node.raft.pre_vote(rpc).await.map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
        let resp = self
            .node
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad)?;
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
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| bad("empty snapshot stream"))??;
        let vote: Vote = decode(&first.vote).map_err(bad)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad)?;
        let (path, file) = self
            .node
            .sm
            .snapshot_store()
            .temp_file()
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut file = tokio::fs::File::from_std(file);
        let mut total = 0u64;
        let mut done = first.done;
        use tokio::io::AsyncWriteExt;
        while !done {
            let chunk = match stream.next().await {
                Some(c) => c?,
                None => {
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(bad("snapshot stream ended before done"));
                }
            };
            total += chunk.data.len() as u64;
            if total > MAX_SNAPSHOT_BYTES {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            file.write_all(&chunk.data).await.map_err(|e| Status::internal(e.to_string()))?;
            done = chunk.done;
        }
        file.sync_all().await.map_err(|e| Status::internal(e.to_string()))?;
        let std_file = file.into_std().await;
        tracing::info!(bytes = total, last_log_id = ?meta.last_log_id, "snapshot received");
        let snapshot =
            openraft::alias::SnapshotOf::<TypeConfig, std::fs::File> { meta, snapshot: std_file };
        let res = self.node.raft.install_full_snapshot(vote, snapshot).await;
        let _ = tokio::fs::remove_file(&path).await;
        let resp = res.map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn forward(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let ops: Vec<Op> = decode(&req.into_inner().data).map_err(bad)?;
        let r: ForwardReply = self.node.write_as_leader(ops).await;
        reply(&r)
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        match self.node.leader_read_index().await {
            Ok(index) => Ok(Response::new(ReadIndexReply { index })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}

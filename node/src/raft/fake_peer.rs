//! A fake peer on a real gRPC port for the transport's unit tests: the
//! `RaftInternal` service of a node whose read index is the number of
//! ReadIndex calls begun so far (each taking 50 ms), and which answers
//! every unary AppendEntries `Success` but has no `AppendStream` (a node of
//! an older build). Every other RPC is unimplemented.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_proto::raft::raft_internal_server::{RaftInternal, RaftInternalServer};
use herald_proto::raft::{RaftBytes, ReadIndexReply, ReadIndexRequest, SnapshotChunk};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tonic::{Request, Response, Status, Streaming};

use super::codec::{decode, encode};
use super::types::TypeConfig;

#[derive(Default)]
pub struct FakePeer {
    /// ReadIndex calls begun.
    pub calls: AtomicU64,
    /// Unary AppendEntries answered.
    pub appends: AtomicUsize,
}

impl FakePeer {
    /// Serves a new fake peer on a free port of 127.0.0.1: (it, address).
    pub async fn start() -> (Arc<FakePeer>, String) {
        let peer = Arc::new(FakePeer::default());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftInternalServer::from_arc(peer.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        (peer, addr)
    }
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("fake peer"))
}

#[tonic::async_trait]
impl RaftInternal for FakePeer {
    type AppendStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<RaftBytes, Status>> + Send + 'static>,
    >;
    async fn append_stream(
        &self,
        _: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        unimplemented()
    }
    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let _: AppendEntriesRequest<TypeConfig> =
            decode(&req.into_inner().data).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.appends.fetch_add(1, Ordering::SeqCst);
        let ok = AppendEntriesResponse::<TypeConfig>::Success;
        Ok(Response::new(RaftBytes { data: encode(&ok).unwrap() }))
    }
    async fn read_index(
        &self,
        _: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let index = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Response::new(ReadIndexReply { index }))
    }
    async fn vote(&self, _: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        unimplemented()
    }
    async fn pre_vote(&self, _: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        unimplemented()
    }
    async fn transfer_leader(&self, _: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        unimplemented()
    }
    async fn snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftBytes>, Status> {
        unimplemented()
    }
    async fn forward(&self, _: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        unimplemented()
    }
}

//! Server side of `herald.raft.MediaBlobs` on the sync port: media replicas
//! pushed by the node that took an upload (`PutBlob`) and byte ranges read
//! by a node serving a download it holds no copy of (`GetBlob`). Registered
//! beside the Raft transport by `app::run`; the logic is in [`Media`].

use std::sync::Arc;

use herald_proto::raft::media_blobs_client::MediaBlobsClient;
use herald_proto::raft::media_blobs_server::MediaBlobs;
use herald_proto::raft::{BlobChunk, BlobRequest, BlobStored};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::Media;
use crate::peer_tls::PeerGuard;
use crate::raft::network::MAX_RAFT_MESSAGE_BYTES;

/// A client of another node's media peer service, on the connection kept
/// for media bytes.
pub fn client(
    node: &crate::raft::RaftNode,
    peer: u64,
) -> Result<MediaBlobsClient<Channel>, crate::raft::ClusterError> {
    Ok(MediaBlobsClient::new(node.blob_channel(peer)?)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
}

/// The media peer service of one node.
pub struct BlobService {
    pub media: Arc<Media>,
    /// Who may call (`<peer-tls>`): members only.
    pub peers: PeerGuard,
}

#[tonic::async_trait]
impl MediaBlobs for BlobService {
    type GetBlobStream = tokio_stream::wrappers::ReceiverStream<Result<BlobChunk, Status>>;

    async fn put_blob(
        &self,
        req: Request<Streaming<BlobChunk>>,
    ) -> Result<Response<BlobStored>, Status> {
        self.peers.member(&self.peers.caller(&req))?;
        let already = self.media.accept_replica(req.into_inner()).await?;
        Ok(Response::new(BlobStored { already }))
    }

    async fn get_blob(
        &self,
        req: Request<BlobRequest>,
    ) -> Result<Response<Self::GetBlobStream>, Status> {
        self.peers.member(&self.peers.caller(&req))?;
        Ok(Response::new(self.media.read_blob(req.into_inner()).await?))
    }
}

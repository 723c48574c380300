//! Server side of `herald.raft.GatewayPeers` on the sync port: gateway
//! traffic between nodes outside the Raft log — a node's load (for the
//! gateway pick) and delivery reports (so the submitting node can answer
//! "delivered"). Registered beside the Raft transport by `app::run`.

use std::sync::Arc;

use herald_proto::raft::gateway_peers_client::GatewayPeersClient;
use herald_proto::raft::gateway_peers_server::GatewayPeers;
use herald_proto::raft::RaftBytes;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{DeliveredReport, Gateway};
use crate::peer_tls::PeerGuard;
use crate::raft::codec::{decode, encode};
use crate::raft::network::MAX_RAFT_MESSAGE_BYTES;

/// A client of another node's gateway peer service.
pub fn client(
    node: &crate::raft::RaftNode,
    peer: u64,
) -> Result<GatewayPeersClient<Channel>, crate::raft::ClusterError> {
    Ok(GatewayPeersClient::new(node.peer_channel(peer)?)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
}

/// The gateway peer service of one node.
pub struct GatewayPeerService {
    pub gateway: Arc<Gateway>,
    /// Who may call (`<peer-tls>`): members only.
    pub peers: PeerGuard,
}

#[tonic::async_trait]
impl GatewayPeers for GatewayPeerService {
    async fn load(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.peers.member(&self.peers.caller(&req))?;
        let data =
            encode(&self.gateway.load.mine()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftBytes { data }))
    }

    async fn delivered(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.peers.member(&self.peers.caller(&req))?;
        let r: DeliveredReport =
            decode(&req.into_inner().data).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.gateway.delivered_here(&r.reports);
        let data = encode(&()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftBytes { data }))
    }
}

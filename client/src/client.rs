//! [`HeraldClient`]: the Presence and Cluster services of one node over one
//! gRPC channel.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_proto::v1::cluster_client::ClusterClient;
use herald_proto::v1::presence_client::PresenceClient;
use tonic::transport::{Channel, Endpoint};

use crate::addr::normalize_addr;
use crate::chunk::{self, Merger, DEFAULT_MAX_IDS_PER_QUERY};
use crate::error::ClientError;
use crate::types::{Consistency, Event, Ext, Membership, QueryResult, Status};

/// How long establishing the connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take before the client gives up (the server's
/// own write and read timeouts are shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message sent or accepted: a 10,000-user answer with full ext
/// can be large; the server encodes up to 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A client of one Herald node. Cheap to clone; clones share the channel and
/// may be used concurrently.
#[derive(Debug, Clone)]
pub struct HeraldClient {
    addr: String,
    presence: PresenceClient<Channel>,
    cluster: ClusterClient<Channel>,
    max_ids_per_query: usize,
    channel: Channel,
}

impl HeraldClient {
    /// Connects to a node's publish port. `addr` is `host:port`,
    /// `http://host:port` or a bare host (port 7103); gives up after
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let uri = normalize_addr(addr)?;
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::InvalidArgument(format!("node address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true);
        // connect_timeout bounds the TCP connect; this also bounds the
        // HTTP/2 handshake with a peer that accepts but never answers.
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(ClientError::connect(&uri, &e)),
            Err(_) => {
                return Err(ClientError::Connect { addr: uri, message: format!("timed out after {CONNECT_TIMEOUT:?}") })
            }
        };
        Ok(Self::from_channel(uri, channel))
    }

    /// A client over an existing channel (e.g. one with custom settings);
    /// `addr` is only used in messages.
    pub fn from_channel(addr: impl Into<String>, channel: Channel) -> Self {
        HeraldClient {
            addr: addr.into(),
            presence: PresenceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            cluster: ClusterClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            max_ids_per_query: DEFAULT_MAX_IDS_PER_QUERY,
            channel,
        }
    }

    /// Sets how many ids (uids plus sids) [`query`](Self::query) puts in one
    /// request; match the servers' `max-ids-per-query` if it was lowered.
    /// Default [`DEFAULT_MAX_IDS_PER_QUERY`].
    pub fn with_max_ids_per_query(mut self, max: usize) -> Result<Self, ClientError> {
        if max == 0 {
            return Err(ClientError::InvalidArgument("max ids per query must be at least 1".into()));
        }
        self.max_ids_per_query = max;
        Ok(self)
    }

    /// The node's URI, `http://host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generated Presence client, for calls this type does not wrap
    /// (e.g. the streaming methods).
    pub fn presence_client(&self) -> PresenceClient<Channel> {
        self.presence.clone()
    }

    /// The underlying gRPC channel (for the Messages and Gateway services).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated Cluster client.
    pub fn cluster_client(&self) -> ClusterClient<Channel> {
        self.cluster.clone()
    }

    /// Commits a batch of events in one request; returns the revision (log
    /// index) every later read sees. The server refuses empty batches
    /// (`no_events`) and more than its `max-events-per-request`
    /// (`too_many_events`, default 10,000).
    pub async fn push_events(&self, events: Vec<Event>) -> Result<u64, ClientError> {
        let req = pb::PushEventsRequest { events: events.into_iter().map(Event::into_pb).collect() };
        let r = self.presence.clone().push_events(req).await?;
        Ok(r.into_inner().revision)
    }

    /// The user came online on `client`; returns the revision.
    pub async fn login(
        &self,
        uid: impl Into<String>,
        sid: u64,
        client: impl Into<String>,
        accepts_strangers: Option<bool>,
        ext: Ext,
    ) -> Result<u64, ClientError> {
        let ev = Event::Login { uid: uid.into(), sid, client: client.into(), accepts_strangers, ext };
        self.push_events(vec![ev]).await
    }

    /// The user went offline on `client`; returns the revision.
    pub async fn logout(&self, uid: impl Into<String>, sid: u64, client: impl Into<String>) -> Result<u64, ClientError> {
        self.push_events(vec![Event::logout(uid, sid, client)]).await
    }

    /// The user changed whether strangers may open sessions; returns the
    /// revision.
    pub async fn permission(&self, uid: impl Into<String>, sid: u64, accepts_strangers: bool) -> Result<u64, ClientError> {
        self.push_events(vec![Event::permission(uid, sid, accepts_strangers)]).await
    }

    /// Presence of users by uid and by sid. Any number of ids: they are sent
    /// in requests of at most [`with_max_ids_per_query`](Self::with_max_ids_per_query)
    /// ids, one after the other, and the answers merged (see
    /// [`QueryResult::revision`]). Fails on the first failing request.
    pub async fn query(&self, uids: &[String], sids: &[u64], consistency: Consistency) -> Result<QueryResult, ClientError> {
        let mut merged = Merger::new();
        for c in chunk::plan(uids, sids, self.max_ids_per_query) {
            let req = pb::QueryRequest { uids: c.uids.to_vec(), sids: c.sids.to_vec(), consistency: consistency.to_pb() };
            let r = self.presence.clone().query(req).await?;
            merged.push(r.into_inner().into());
        }
        Ok(merged.finish())
    }

    /// The cluster as the connected node sees it.
    pub async fn status(&self) -> Result<Status, ClientError> {
        let r = self.cluster.clone().status(pb::StatusRequest { local: false }).await?;
        Ok(r.into_inner().into())
    }

    /// Adds node `number` as a learner. Without addresses the node must be in
    /// the answering node's XML server list (`missing_address` otherwise).
    pub async fn add_learner(&self, number: u64, sync: Option<String>, publish: Option<String>) -> Result<Membership, ClientError> {
        let req = pb::AddLearnerRequest { number, sync: sync.unwrap_or_default(), publish: publish.unwrap_or_default() };
        let r = self.cluster.clone().add_learner(req).await?;
        Ok(r.into_inner().into())
    }

    /// Makes learner `number` a voter.
    pub async fn promote(&self, number: u64) -> Result<Membership, ClientError> {
        let r = self.cluster.clone().promote(pb::PromoteRequest { number }).await?;
        Ok(r.into_inner().into())
    }

    /// Removes node `number` from the cluster.
    pub async fn remove(&self, number: u64) -> Result<Membership, ClientError> {
        let r = self.cluster.clone().remove(pb::RemoveRequest { number }).await?;
        Ok(r.into_inner().into())
    }
}

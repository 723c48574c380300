//! [`HeraldClient`]: the Presence and Cluster services of one node over one
//! gRPC channel.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_proto::v1::cluster_client::ClusterClient;
use herald_proto::v1::presence_client::PresenceClient;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::addr::normalize_addr;
use crate::chunk::{self, Merger, DEFAULT_MAX_IDS_PER_QUERY};
use crate::credential::{AuthChannel, Credential};
use crate::error::ClientError;
use crate::types::{Consistency, Event, Ext, Membership, QueryOptions, QueryResult, Status};

/// How long establishing the connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take before the client gives up (the server's
/// own write and read timeouts are shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message sent or accepted: a 10,000-user answer with full ext
/// can be large; the server encodes up to 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How to connect beyond the address: TLS settings for `https://`
/// addresses. The default is what [`HeraldClient::connect`] uses (no CA:
/// plaintext addresses only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// PEM certificate(s) to trust for `https://` addresses: the cluster's
    /// CA, or its self-signed certificate. Required for `https://`; unused
    /// for plaintext addresses.
    pub ca_pem: Option<Vec<u8>>,
    /// Name to check the server certificate against instead of the host of
    /// the address (e.g. when connecting by IP to a certificate issued for
    /// a DNS name).
    pub domain: Option<String>,
}

/// The endpoint of a node's publish port, for opening a channel: `addr` as
/// [`normalize_addr`] accepts it; `https://` uses TLS with `opts`, which
/// then needs [`ConnectOptions::ca_pem`]. Sets the connect timeout
/// ([`CONNECT_TIMEOUT`], also for the TLS handshake) and TCP_NODELAY; no
/// request timeout (long-lived streams open channels here too) —
/// [`HeraldClient`] adds [`REQUEST_TIMEOUT`].
pub fn endpoint(addr: &str, opts: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let uri = normalize_addr(addr)?;
    let bad = |e: &dyn std::fmt::Display| {
        ClientError::InvalidArgument(format!("node address {addr:?}: {e}"))
    };
    let ep = Endpoint::from_shared(uri.clone())
        .map_err(|e| bad(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if !uri.starts_with("https://") {
        return Ok(ep);
    }
    let Some(ca) = &opts.ca_pem else {
        return Err(bad(&"https:// needs the CA certificate to trust (ConnectOptions::ca_pem; herald --ca FILE)"));
    };
    match CertificateDer::pem_slice_iter(ca).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => {}
        Ok(_) => return Err(ClientError::InvalidArgument("CA: no PEM certificate found".into())),
        Err(e) => return Err(ClientError::InvalidArgument(format!("CA: bad PEM: {e}"))),
    }
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).timeout(CONNECT_TIMEOUT);
    if let Some(d) = &opts.domain {
        tls = tls.domain_name(d.clone());
    }
    ep.tls_config(tls).map_err(|e| {
        ClientError::InvalidArgument(format!(
            "TLS settings for {uri}: {}",
            crate::error::error_chain(&e)
        ))
    })
}

/// A client of one Herald node. Cheap to clone; clones share the channel and
/// may be used concurrently. Every call carries its [`Credential`] (set it
/// with [`with_credential`](Self::with_credential): nodes answer only
/// `/healthz` without one).
#[derive(Debug, Clone)]
pub struct HeraldClient {
    addr: String,
    presence: PresenceClient<AuthChannel>,
    cluster: ClusterClient<AuthChannel>,
    max_ids_per_query: usize,
    channel: Channel,
    credential: Credential,
}

impl HeraldClient {
    /// Connects to a node's publish port over plaintext. `addr` is
    /// `host:port`, `http://host:port` or a bare host (port 7103); gives up
    /// after [`CONNECT_TIMEOUT`]. For `https://` use
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects like [`connect`](Self::connect), also to `https://host:port`
    /// (TLS, trusting `opts.ca_pem`).
    pub async fn connect_with(addr: &str, opts: &ConnectOptions) -> Result<Self, ClientError> {
        let uri = normalize_addr(addr)?;
        let endpoint = endpoint(addr, opts)?.timeout(REQUEST_TIMEOUT);
        // connect_timeout bounds the TCP connect; this also bounds the
        // HTTP/2 handshake with a peer that accepts but never answers.
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(ClientError::connect(&uri, &e)),
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: uri,
                    message: format!("timed out after {CONNECT_TIMEOUT:?}"),
                })
            }
        };
        Ok(Self::from_channel(uri, channel))
    }

    /// A client over an existing channel (e.g. one with custom settings);
    /// `addr` is only used in messages.
    pub fn from_channel(addr: impl Into<String>, channel: Channel) -> Self {
        Self::build(addr.into(), channel, Credential::none(), DEFAULT_MAX_IDS_PER_QUERY)
    }

    fn build(addr: String, channel: Channel, credential: Credential, max_ids: usize) -> Self {
        HeraldClient {
            addr,
            presence: PresenceClient::with_interceptor(channel.clone(), credential.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            cluster: ClusterClient::with_interceptor(channel.clone(), credential.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            max_ids_per_query: max_ids,
            channel,
            credential,
        }
    }

    /// The same client sending `credential` (an application's API key, or
    /// a user's session token) with every call.
    pub fn with_credential(self, credential: Credential) -> Self {
        Self::build(self.addr, self.channel, credential, self.max_ids_per_query)
    }

    /// The credential every call carries.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Sets how many ids (uids plus sids) [`query`](Self::query) puts in one
    /// request; match the servers' `max-ids-per-query` if it was lowered.
    /// Default [`DEFAULT_MAX_IDS_PER_QUERY`].
    pub fn with_max_ids_per_query(mut self, max: usize) -> Result<Self, ClientError> {
        if max == 0 {
            return Err(ClientError::InvalidArgument(
                "max ids per query must be at least 1".into(),
            ));
        }
        self.max_ids_per_query = max;
        Ok(self)
    }

    /// The node's URI, `http://host:port` or `https://host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generated Presence client (with the credential), for calls
    /// this type does not wrap (e.g. the streaming methods).
    pub fn presence_client(&self) -> PresenceClient<AuthChannel> {
        self.presence.clone()
    }

    /// The underlying gRPC channel, without the credential.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The channel with the credential (for the Messages and Gateway
    /// services).
    pub fn auth_channel(&self) -> AuthChannel {
        InterceptedService::new(self.channel.clone(), self.credential.clone())
    }

    /// The generated Cluster client (with the credential).
    pub fn cluster_client(&self) -> ClusterClient<AuthChannel> {
        self.cluster.clone()
    }

    /// Commits a batch of events in one request; returns the revision (log
    /// index) every later read sees. The server refuses empty batches
    /// (`no_events`) and more than its `max-events-per-request`
    /// (`too_many_events`, default 10,000).
    pub async fn push_events(&self, events: Vec<Event>) -> Result<u64, ClientError> {
        let req =
            pb::PushEventsRequest { events: events.into_iter().map(Event::into_pb).collect() };
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
        let ev =
            Event::Login { uid: uid.into(), sid, client: client.into(), accepts_strangers, ext };
        self.push_events(vec![ev]).await
    }

    /// The user went offline on `client`; returns the revision.
    pub async fn logout(
        &self,
        uid: impl Into<String>,
        sid: u64,
        client: impl Into<String>,
    ) -> Result<u64, ClientError> {
        self.push_events(vec![Event::logout(uid, sid, client)]).await
    }

    /// The user changed whether strangers may open sessions; returns the
    /// revision.
    pub async fn permission(
        &self,
        uid: impl Into<String>,
        sid: u64,
        accepts_strangers: bool,
    ) -> Result<u64, ClientError> {
        self.push_events(vec![Event::permission(uid, sid, accepts_strangers)]).await
    }

    /// Presence of users by uid and by sid. Any number of ids: they are sent
    /// in requests of at most [`with_max_ids_per_query`](Self::with_max_ids_per_query)
    /// ids, one after the other, and the answers merged (see
    /// [`QueryResult::revision`]). Fails on the first failing request.
    pub async fn query(
        &self,
        uids: &[String],
        sids: &[u64],
        consistency: Consistency,
    ) -> Result<QueryResult, ClientError> {
        let opts = QueryOptions { consistency, ..QueryOptions::default() };
        self.query_with(uids, sids, opts).await
    }

    /// [`query`](Self::query) with a staleness bound (`bounded`) and/or a
    /// revision the answer must include (read-your-writes: the revision a
    /// write answered). The answer says the revision and staleness served.
    pub async fn query_with(
        &self,
        uids: &[String],
        sids: &[u64],
        opts: QueryOptions,
    ) -> Result<QueryResult, ClientError> {
        let mut merged = Merger::new();
        for c in chunk::plan(uids, sids, self.max_ids_per_query) {
            let req = pb::QueryRequest {
                uids: c.uids.to_vec(),
                sids: c.sids.to_vec(),
                consistency: opts.consistency.to_pb(),
                max_staleness_ms: opts.max_staleness_ms,
                min_revision: opts.min_revision,
            };
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
    pub async fn add_learner(
        &self,
        number: u64,
        sync: Option<String>,
        publish: Option<String>,
    ) -> Result<Membership, ClientError> {
        self.add_member(number, sync, publish, None, false).await
    }

    /// Adds node `number` as a replica in `zone`: a learner that stays one
    /// (no zone: the XML's, else "default").
    pub async fn add_replica(
        &self,
        number: u64,
        sync: Option<String>,
        publish: Option<String>,
        zone: Option<String>,
    ) -> Result<Membership, ClientError> {
        self.add_member(number, sync, publish, zone, true).await
    }

    async fn add_member(
        &self,
        number: u64,
        sync: Option<String>,
        publish: Option<String>,
        zone: Option<String>,
        replica: bool,
    ) -> Result<Membership, ClientError> {
        let req = pb::AddLearnerRequest {
            number,
            sync: sync.unwrap_or_default(),
            publish: publish.unwrap_or_default(),
            zone: zone.unwrap_or_default(),
            replica,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> Vec<u8> {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .unwrap()
            .cert
            .pem()
            .into_bytes()
    }

    /// Plaintext addresses give `http://` endpoints whatever the options say.
    #[test]
    fn client_endpoint_plain_ignores_tls_options() {
        let opts = ConnectOptions { ca_pem: Some(ca_pem()), domain: Some("node".into()) };
        assert_eq!(
            endpoint("127.0.0.1:7103", &opts).unwrap().uri().to_string(),
            "http://127.0.0.1:7103/"
        );
        assert_eq!(
            endpoint("http://h:1", &ConnectOptions::default()).unwrap().uri().to_string(),
            "http://h:1/"
        );
    }

    /// `https://` with a CA gives a TLS endpoint; with a domain override too.
    #[test]
    fn client_endpoint_https_with_ca() {
        let mut opts = ConnectOptions { ca_pem: Some(ca_pem()), domain: None };
        assert_eq!(
            endpoint("https://127.0.0.1:7443", &opts).unwrap().uri().to_string(),
            "https://127.0.0.1:7443/"
        );
        opts.domain = Some("localhost".into());
        assert!(endpoint("https://127.0.0.1:7443", &opts).is_ok());
    }

    /// `https://` without a CA, or with a CA that holds no certificate, is
    /// refused before connecting, saying what is missing.
    #[test]
    fn client_endpoint_https_needs_a_ca() {
        let e = endpoint("https://127.0.0.1:7443", &ConnectOptions::default()).unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.message().contains("CA") && e.message().contains("--ca"), "{e}");
        for bad in [&b""[..], b"not a pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            let opts = ConnectOptions { ca_pem: Some(bad.to_vec()), domain: None };
            let e = endpoint("https://127.0.0.1:7443", &opts).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{e}");
            assert!(e.message().starts_with("CA: "), "{e}");
        }
    }

    /// Plain `connect` refuses an `https://` address (it has no CA) without
    /// a connection attempt.
    #[tokio::test]
    async fn client_connect_plain_refuses_https() {
        let e = HeraldClient::connect("https://127.0.0.1:1").await.unwrap_err();
        assert_eq!(e.code(), "invalid_argument", "{e}");
    }
}

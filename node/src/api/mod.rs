//! The public API: HTTP/JSON ([`http`]) and gRPC ([`grpc`]) on one publish
//! port, both thin adapters over [`Api`], which holds the request logic,
//! the limits and the error codes. [`messages`] and [`media`] are split
//! the same way: their `mod.rs` holds the logic, `http.rs` the axum routes
//! (and `messages/grpc.rs` the tonic service). The JSON shapes are
//! [`herald_proto::wire`]'s. Who may call what is one table,
//! [`routes::ROUTES`], enforced by [`access::guard`] before any handler.

pub mod access;
pub mod answer;
pub mod console;
pub mod grpc;
pub mod http;
pub mod media;
pub mod messages;
pub mod openapi;
pub mod profile;
pub mod query_route;
pub mod routes;
pub mod size;
pub mod watch;
pub mod watch_http;

use std::sync::Arc;
use std::time::Instant;

use herald_proto::codes::{self, Code};

use crate::config::Limits;
use crate::metrics::{CodeLabel, ConsistencyLabel, Metrics};
use crate::raft::{ClusterError, RaftNode, Turn};
use std::collections::{BTreeSet, HashMap};

use herald_domain::presence::{
    Event, EventError, PresenceState, QueryView, MAX_CLIENTS_PER_USER, MAX_EXT_ENTRIES,
};

/// An error answered to a client: a stable code from the catalog
/// ([`herald_proto::codes`], which gives its HTTP and gRPC status) and a
/// message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A refusal decided on this node.
    #[error("{message}")]
    Refused { code: Code, message: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An error answered by another node (the leader) for a forwarded
    /// request, passed on with its own code.
    #[error("{message}")]
    Forwarded { code: String, status: u16, message: String },
}

impl From<crate::media::MediaError> for ApiError {
    fn from(e: crate::media::MediaError) -> Self {
        use crate::media::MediaError;
        match e {
            MediaError::Refused { code, message } => ApiError::Refused { code, message },
            MediaError::Cluster(c) => ApiError::Cluster(c),
            MediaError::Io(e) => ApiError::new(codes::STORAGE_ERROR, e.to_string()),
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::new(codes::INVALID_EVENT, e.to_string())
    }
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError::Refused { code, message: message.into() }
    }

    /// A refusal named by a lower layer (the domain's `SendError::code`):
    /// its catalog entry, or `internal` for a name the catalog lacks (a bug
    /// the catalog test of each error type prevents).
    pub fn named(name: &str, message: impl Into<String>) -> Self {
        ApiError::new(codes::named(name).unwrap_or(codes::INTERNAL), message)
    }

    /// The same error, its message led by `what` (which item of a batch).
    pub fn prefixed(self, what: &str) -> Self {
        match self {
            ApiError::Refused { code, message } => {
                ApiError::Refused { code, message: format!("{what}: {message}") }
            }
            ApiError::Forwarded { code, status, message } => {
                ApiError::Forwarded { code, status, message: format!("{what}: {message}") }
            }
            e @ ApiError::Cluster(_) => e,
        }
    }

    /// A body over the request limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            codes::PAYLOAD_TOO_LARGE,
            format!("request body larger than the {limit} byte limit"),
        )
    }

    /// Stable snake_case code.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Refused { code, .. } => code.name,
            ApiError::Forwarded { code, .. } => code,
            ApiError::Cluster(e) => e.code().name,
        }
    }

    /// HTTP status for the code.
    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::Refused { code, .. } => code.http,
            ApiError::Forwarded { status, .. } => *status,
            ApiError::Cluster(e) => e.code().http,
        }
    }

    /// gRPC status; the stable code travels in the `x-herald-code` metadata.
    pub fn to_grpc(&self) -> tonic::Status {
        let grpc = match self {
            ApiError::Refused { code, .. } => code.grpc,
            ApiError::Cluster(e) => e.code().grpc,
            ApiError::Forwarded { code, .. } => {
                codes::named(code).map(|c| c.grpc).unwrap_or(tonic::Code::Internal)
            }
        };
        grpc_status(grpc, self.code(), &self.to_string())
    }
}

/// How long `GET /v1/cluster` waits for a member's own view (its clock):
/// the status page must answer promptly even with a member down, so an
/// unanswered member shows "unknown" after this.
const REMOTE_VIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Logins per uid in a batch (counted before the state lock is taken).
fn logins_per_uid(events: &[Event]) -> HashMap<&str, usize> {
    let mut logins: HashMap<&str, usize> = HashMap::new();
    for e in events {
        if let Event::Login { uid, .. } = e {
            *logins.entry(uid.as_str()).or_default() += 1;
        }
    }
    logins
}

/// Refuses events that would put a user online on more than
/// [`MAX_CLIENTS_PER_USER`] client types, replaying the batch's logins and
/// logouts over the user's current client types in order. `logins` is
/// [`logins_per_uid`] of the same events.
fn check_client_caps(
    p: &PresenceState,
    events: &[Event],
    mut logins: HashMap<&str, usize>,
) -> Result<(), ApiError> {
    // Only users whose current client types plus this batch's logins could
    // pass the cap need replaying (the common case: none).
    logins.retain(|uid, n| p.get(uid).map_or(0, |r| r.clients.len()) + *n > MAX_CLIENTS_PER_USER);
    if logins.is_empty() {
        return Ok(());
    }
    let mut now: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let (uid, client, login) = match e {
            Event::Login { uid, client, .. } => (uid.as_str(), client.as_str(), true),
            Event::Logout { uid, client, .. } => (uid.as_str(), client.as_str(), false),
            Event::Permission { .. } => continue,
        };
        if !logins.contains_key(uid) {
            continue;
        }
        let set = now.entry(uid).or_insert_with(|| {
            p.get(uid).map(|r| r.clients.iter().map(String::as_str).collect()).unwrap_or_default()
        });
        if !login {
            set.remove(client);
        } else if !set.contains(client) {
            if set.len() >= MAX_CLIENTS_PER_USER {
                return Err(ApiError::new(
                    codes::TOO_MANY_CLIENTS,
                    format!(
                        "event {i}: {uid} is online on {MAX_CLIENTS_PER_USER} client types already"
                    ),
                ));
            }
            set.insert(client);
        }
    }
    Ok(())
}

/// Refuses events that would leave a user with more than
/// [`MAX_EXT_ENTRIES`] ext entries: apply keeps the entries of a user's
/// record and adds each event's new keys, dropping those beyond the cap
/// silently; this refuses the batch first, with `too_many_ext`, so nothing
/// a caller sent is lost without a word. (Each event's own entries and
/// sizes are checked by `Event::validate`.)
fn check_ext_caps(p: &PresenceState, events: &[Event]) -> Result<(), ApiError> {
    let mut keys: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for e in events {
        let ext = match e {
            Event::Login { ext, .. }
            | Event::Logout { ext, .. }
            | Event::Permission { ext, .. } => ext,
        };
        if !ext.is_empty() {
            keys.entry(e.uid()).or_default().extend(ext.keys().map(String::as_str));
        }
    }
    for (uid, new) in keys {
        let held = p.get(uid).map(|r| r.ext);
        let added = new.iter().filter(|k| held.is_none_or(|h| h.get(k).is_none())).count();
        let total = held.map_or(0, |h| h.len()) + added;
        if total > MAX_EXT_ENTRIES {
            return Err(ApiError::new(
                codes::TOO_MANY_EXT,
                format!("{uid} would hold {total} ext entries; at most {MAX_EXT_ENTRIES} per user"),
            ));
        }
    }
    Ok(())
}

/// Longest `host:port` address `add-learner` takes, bytes: a DNS name is
/// at most 253 bytes; the address is stored in the membership config of
/// every replica's log.
pub const MAX_ADDRESS_BYTES: usize = 255;

/// Refuses an `add-learner` address that is not `host:port` (a non-empty
/// host without whitespace, a port from 1), before it reaches the log.
fn check_address(field: &str, a: &str) -> Result<(), ApiError> {
    let ok = a.len() <= MAX_ADDRESS_BYTES
        && a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if !ok {
        return Err(ApiError::new(
            codes::INVALID_ADDRESS,
            format!(
                "{field}: an address is host:port, at most {MAX_ADDRESS_BYTES} bytes, not {:?}",
                media::trim_for_message(a)
            ),
        ));
    }
    Ok(())
}

/// Longest zone name a membership change may carry: a data-center name,
/// kept in every membership entry and shown in status.
pub const MAX_ZONE_BYTES: usize = 64;

fn check_zone(z: &str) -> Result<(), ApiError> {
    if z.is_empty()
        || z.len() > MAX_ZONE_BYTES
        || z.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::new(
            codes::INVALID_FIELD,
            format!(
                "zone: a word of 1 to {MAX_ZONE_BYTES} bytes without whitespace, not {:?}",
                media::trim_for_message(z)
            ),
        ));
    }
    Ok(())
}

/// A gRPC status whose stable code travels in the `x-herald-code` metadata
/// (and prefixes the message).
pub fn grpc_status(status: tonic::Code, code: &str, message: &str) -> tonic::Status {
    let mut s = tonic::Status::new(status, format!("{code}: {message}"));
    if let Ok(v) = code.parse() {
        s.metadata_mut().insert(codes::METADATA_KEY, v);
    }
    s
}

/// Read consistency of a query (defined with the read call it chooses).
pub use crate::raft::{Consistency, ReadInfo, ReadSpec};

impl Consistency {
    fn label(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
            Consistency::Bounded => "bounded",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "linearizable" | "" => Ok(Consistency::Linearizable),
            "local" => Ok(Consistency::Local),
            "bounded" => Ok(Consistency::Bounded),
            other => Err(ApiError::new(
                codes::INVALID_CONSISTENCY,
                format!("consistency must be linearizable, local or bounded, not {other:?}"),
            )),
        }
    }
}

impl From<herald_proto::wire::presence::Consistency> for Consistency {
    fn from(c: herald_proto::wire::presence::Consistency) -> Self {
        use herald_proto::wire::presence::Consistency as Wire;
        match c {
            Wire::Linearizable => Consistency::Linearizable,
            Wire::Local => Consistency::Local,
            Wire::Bounded => Consistency::Bounded,
        }
    }
}

/// The request logic shared by HTTP and gRPC.
pub struct Api {
    pub cluster: String,
    /// The XML server list, to resolve addresses of `add-learner` by number.
    pub servers: Vec<crate::config::Server>,
    pub node: Arc<RaftNode>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub time: Arc<crate::time::TimeService>,
    pub gateway: Arc<crate::gateway::Gateway>,
    pub media: Arc<crate::media::Media>,
    /// The application keys of `<access>` (issue 14).
    pub access: access::Access,
    /// `<profile-sync>`: the supported modules (issue 17).
    pub profile: Arc<crate::config::ProfileSyncConfig>,
}

impl Api {
    pub(crate) fn count_error(&self, e: &ApiError) {
        self.metrics.errors.get_or_create(&CodeLabel { code: e.code().to_string() }).inc();
    }

    /// Validates and commits a batch of events; returns the revision.
    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    pub async fn push_events(&self, events: Vec<Event>) -> Result<u64, ApiError> {
        self.push_events_in_turn(events, Turn::free()).await
    }

    /// [`push_events`](Self::push_events) as one of a sequence of batches
    /// (one stream's) that apply in the order sent (see
    /// [`RaftNode::write_in_turn`]).
    pub async fn push_events_in_turn(
        &self,
        events: Vec<Event>,
        turn: Turn,
    ) -> Result<u64, ApiError> {
        let start = Instant::now();
        let r = self.push_inner(events, turn).await;
        match &r {
            Ok(_) => {
                self.metrics.write_requests.inc();
                self.metrics.write_seconds.observe(start.elapsed().as_secs_f64());
            }
            Err(e) => self.count_error(e),
        }
        r
    }

    async fn push_inner(&self, events: Vec<Event>, turn: Turn) -> Result<u64, ApiError> {
        if events.is_empty() {
            return Err(ApiError::new(codes::NO_EVENTS, "events must not be empty"));
        }
        let max = self.limits.max_events_per_request;
        if events.len() > max {
            return Err(ApiError::new(
                codes::TOO_MANY_EVENTS,
                format!("{} events; at most {max} per request", events.len()),
            ));
        }
        for (i, e) in events.iter().enumerate() {
            e.validate(i)?;
        }
        // Refuse a login that would exceed the per-user cap on client types
        // (apply enforces it too; this gives the caller a code).
        let logins = logins_per_uid(&events);
        self.node.read_local(|st| {
            check_client_caps(&st.presence, &events, logins)?;
            check_ext_caps(&st.presence, &events)
        })?;
        let n = events.len() as u64;
        let (rev, _) = self
            .node
            .write_in_turn(
                events.into_iter().map(herald_domain::state::Op::Presence).collect(),
                turn,
            )
            .await?;
        self.metrics.write_events.inc_by(n);
        Ok(rev)
    }

    /// Answers a batch query as `spec` asks (consistency, max staleness,
    /// min revision), with how it was served.
    #[tracing::instrument(level = "debug", skip_all, fields(uids = uids.len(), sids = sids.len(), consistency = ?spec.consistency))]
    pub async fn query<T>(
        &self,
        uids: &[String],
        sids: &[u64],
        spec: ReadSpec,
        encode: impl FnOnce(&QueryView<'_>, &ReadInfo, usize) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let start = Instant::now();
        if spec.max_staleness_ms == Some(0) {
            return Err(ApiError::new(
                codes::INVALID_FIELD,
                "max_staleness_ms must be at least 1 (0 could never be met)",
            ));
        }
        let r = self.query_inner(uids, sids, spec, encode).await;
        match &r {
            Ok((_, info)) => {
                let consistency = spec.consistency;
                if info.forwarded {
                    self.metrics.bounded_forwarded.inc();
                }
                if let Some(ms) = info.staleness_ms {
                    self.metrics.read_staleness_seconds.observe(ms as f64 / 1000.0);
                }
                let l = ConsistencyLabel { consistency: consistency.label() };
                self.metrics.queries.get_or_create(&l).inc();
                self.metrics.query_ids.inc_by((uids.len() + sids.len()) as u64);
                self.metrics.query_seconds.get_or_create(&l).observe(start.elapsed().as_secs_f64());
            }
            Err(e) => self.count_error(e),
        }
        r.map(|(t, _)| t)
    }

    /// Reads the answer of a batch query and hands it to `encode` (with
    /// how the read is served and `<limits max-response-bytes>`) under the
    /// state lock: the answer is written from the records in place
    /// ([`answer`]), never copied into owned records first.
    async fn query_inner<T>(
        &self,
        uids: &[String],
        sids: &[u64],
        spec: ReadSpec,
        encode: impl FnOnce(&QueryView<'_>, &ReadInfo, usize) -> Result<T, ApiError>,
    ) -> Result<(T, ReadInfo), ApiError> {
        let n = uids.len() + sids.len();
        let max = self.limits.max_ids_per_query;
        if n > max {
            return Err(ApiError::new(
                codes::TOO_MANY_IDS,
                format!("{n} ids; at most {max} per query"),
            ));
        }
        let max_bytes = self.limits.max_response_bytes;
        let (r, info) = self
            .node
            .read_with_info(spec, |st, info| {
                encode(&st.presence.query_view(uids, sids), info, max_bytes)
            })
            .await?;
        Ok((r?, info))
    }

    /// The cluster as a person wants to see it: this node's view, with
    /// member health taken from the leader and each member's clock from the
    /// member itself (short timeouts; unknown stays unknown). With `local`,
    /// no other node is asked. The members are asked with the caller's
    /// API key (every node holds the same `<access>`).
    pub async fn cluster_view(&self, local: bool, caller: &access::Principal) -> ClusterView {
        let st = self.node.status();
        let media = self.media.status();
        let mut nodes: Vec<NodeView> = st
            .members
            .iter()
            .map(|m| NodeView {
                number: m.number,
                sync: m.sync.clone(),
                publish: m.publish.clone(),
                role: m.role.clone(),
                zone: m.zone.clone(),
                replica: m.replica,
                lag_entries: m.lag_entries,
                lag_ms: (m.number == self.node.id).then(|| self.node.staleness_ms()).flatten(),
                healthy: m.healthy.unwrap_or(false),
                matched_index: m.matched_index,
                clock: (m.number == self.node.id).then(|| self.time.status()),
                media: (m.number == self.node.id).then(|| NodeMedia::from(&media)),
                gateway: None,
            })
            .collect();
        for g in self.gateway.load.candidates(&self.node) {
            if let Some(n) = nodes.iter_mut().find(|n| n.number == g.node) {
                n.gateway = (g.healthy || g.node == self.node.id).then_some(GatewayView {
                    sessions: g.sessions,
                    load: g.load,
                    fresh: g.healthy,
                });
            }
        }
        if !local {
            let others: Vec<(u64, String)> = nodes
                .iter()
                .filter(|n| n.number != self.node.id)
                .map(|n| (n.number, n.publish.clone()))
                .collect();
            let views =
                futures::future::join_all(others.iter().map(|(_, a)| self.remote_view(a, caller)))
                    .await;
            let leader_view = st
                .leader
                .and_then(|l| others.iter().position(|(n, _)| *n == l))
                .and_then(|i| views[i].clone());
            for n in &mut nodes {
                if let Some(i) = others.iter().position(|(num, _)| *num == n.number) {
                    let own =
                        views[i].as_ref().and_then(|v| v.iter().find(|x| x.number == n.number));
                    n.clock = own.and_then(|x| x.clock.clone());
                    n.lag_ms = own.and_then(|x| x.lag_ms);
                    n.media = own.and_then(|x| x.media.clone());
                }
                if let (false, Some(lv)) = (self.node.is_leader(), &leader_view) {
                    if n.number != self.node.id {
                        if let Some(l) = lv.iter().find(|l| l.number == n.number) {
                            n.healthy = l.healthy;
                            n.matched_index = l.matched_index;
                            n.lag_entries = l.lag_entries;
                        }
                    }
                }
            }
        }
        let time_master = self.time.status().time_master;
        ClusterView {
            cluster: self.cluster.clone(),
            node: st.node,
            state: st.state,
            leader: st.leader,
            master: st.leader,
            time_master,
            term: st.term,
            last_log_index: st.last_log_index,
            commit_index: st.commit_index,
            applied_index: st.applied_index,
            snapshot_index: st.snapshot_index,
            nodes,
            peer_tls: self.node.peer_tls(),
            media: Some(media),
        }
    }

    /// Another node's own view of the members (short timeout; None if unknown).
    async fn remote_view(&self, addr: &str, caller: &access::Principal) -> Option<Vec<NodeView>> {
        let fut = async {
            let mut c = grpc::cluster_client(addr).await.ok()?;
            let req = grpc::with_key(herald_proto::v1::StatusRequest { local: true }, caller);
            let r = c.status(req).await.ok()?.into_inner();
            Some(r.nodes.into_iter().map(NodeView::from).collect::<Vec<_>>())
        };
        tokio::time::timeout(REMOTE_VIEW_TIMEOUT, fut).await.ok().flatten()
    }

    /// Hands the master role to `number` (through the leader, with the
    /// caller's key).
    pub async fn transfer_leader(
        &self,
        number: u64,
        caller: &access::Principal,
    ) -> Result<u64, ApiError> {
        if !self.node.is_leader() {
            let (_, addr) = self.node.leader_publish_addr().ok_or(ClusterError::NoLeader)?;
            return grpc::forward_transfer(&addr, number, caller).await;
        }
        self.node.transfer_leader(number).await?;
        Ok(number)
    }

    /// Runs a membership change on the leader: locally, or through the
    /// leader's public Cluster service (with the caller's key).
    pub async fn membership(
        &self,
        op: MembershipOp,
        caller: &access::Principal,
    ) -> Result<MembershipResult, ApiError> {
        let r = self.membership_inner(op, caller).await;
        if let Err(e) = &r {
            self.count_error(e);
        }
        r
    }

    async fn membership_inner(
        &self,
        mut op: MembershipOp,
        caller: &access::Principal,
    ) -> Result<MembershipResult, ApiError> {
        // Addresses left out of add-learner come from the XML server list.
        if let MembershipOp::AddLearner { number, sync, publish, zone, .. } = &mut op {
            if let Some(s) = self.servers.iter().find(|s| s.number == *number) {
                if sync.is_empty() {
                    *sync = s.sync_addr();
                }
                if publish.is_empty() {
                    *publish = s.publish_addr();
                }
                if zone.is_empty() {
                    *zone = s.zone.clone();
                }
            }
            if zone.is_empty() {
                *zone = crate::config::DEFAULT_ZONE.to_string();
            }
        }
        if !self.node.is_leader() {
            let (_, addr) = self.node.leader_publish_addr().ok_or(ClusterError::NoLeader)?;
            return grpc::forward_membership(&addr, op, caller).await;
        }
        let revision = match op {
            MembershipOp::AddLearner { number, sync, publish, zone, replica } => {
                if sync.is_empty() || publish.is_empty() {
                    return Err(ApiError::new(
                        codes::MISSING_ADDRESS,
                        "add-learner needs sync and publish addresses",
                    ));
                }
                check_address("sync", &sync)?;
                check_address("publish", &publish)?;
                check_zone(&zone)?;
                let addr = crate::raft::types::NodeAddr { sync, publish, zone, replica };
                self.node.add_learner(number, addr).await?
            }
            MembershipOp::Promote { number } => self.node.promote(number).await?,
            MembershipOp::Remove { number } => self.node.remove(number).await?,
        };
        Ok(MembershipResult { revision, nodes: self.cluster_view(true, caller).await.nodes })
    }
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipOp {
    AddLearner { number: u64, sync: String, publish: String, zone: String, replica: bool },
    Promote { number: u64 },
    Remove { number: u64 },
}

/// The answer to a membership change, one member, its gateway load and
/// the body of `GET /v1/cluster`: the HTTP API's types, defined once in
/// [`herald_proto::wire::cluster`] (the gRPC `Cluster` service converts
/// them to and from protobuf).
pub use herald_proto::wire::cluster::{
    ClusterView, GatewayView, MembershipResult, NodeMedia, NodeView,
};

#[cfg(test)]
mod catalog_tests {
    use herald_domain::library::refusal;
    use herald_domain::messages::SendError;
    use herald_proto::codes;

    /// Every code a lower layer names by string (the domain's send,
    /// library and profile refusals) is in the error catalog, so `ApiError::named`
    /// never falls back to `internal` for them.
    #[test]
    fn domain_codes_are_in_the_catalog() {
        let profile = herald_domain::profile::refusal::ANSWERED;
        for name in SendError::CODES.iter().chain(refusal::ANSWERED).chain(profile) {
            assert!(codes::named(name).is_some(), "{name} is missing from proto/src/codes.rs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::presence::Ext;

    fn ext(keys: std::ops::Range<usize>) -> Ext {
        keys.map(|i| (format!("k{i}"), "v".to_string())).collect()
    }

    fn perm(uid: &str, ext: Ext) -> Event {
        Event::Permission { uid: uid.into(), sid: 1, accepts_strangers: true, ext }
    }

    /// A batch that would leave a user with more than 32 ext entries is
    /// refused with `too_many_ext`, counting the keys the user holds and
    /// the batch's new keys once each; rewriting held keys, or other users'
    /// keys, do not count.
    #[test]
    fn ext_caps_count_held_and_new_keys() {
        let mut p = PresenceState::default();
        let mut t = Default::default();
        p.apply_event(&perm("u", ext(0..30)), 1, 1, &mut t);
        let code = |events: &[Event]| check_ext_caps(&p, events).err().map(|e| e.code().to_owned());
        assert_eq!(code(&[perm("u", ext(0..32))]), None, "2 new keys: 32");
        assert_eq!(code(&[perm("u", ext(30..32)), perm("u", ext(30..32))]), None);
        assert_eq!(code(&[perm("u", ext(0..30)), perm("v", ext(0..32))]), None);
        assert_eq!(code(&[perm("u", ext(30..33))]).as_deref(), Some("too_many_ext"));
        assert_eq!(
            code(&[perm("u", ext(31..32)), perm("u", ext(32..34))]).as_deref(),
            Some("too_many_ext")
        );
        assert_eq!(code(&[perm("new", ext(0..16)), perm("new", ext(16..32))]), None);
        assert_eq!(
            code(&[perm("new", ext(0..20)), perm("new", ext(20..40))]).as_deref(),
            Some("too_many_ext")
        );
    }

    /// add-learner addresses are `host:port` with a port from 1, a host
    /// without whitespace, control characters or '/', at most 255 bytes.
    #[test]
    fn addresses_are_host_and_port() {
        for ok in ["127.0.0.1:7000", "node-1.example:1", "[::1]:65535"] {
            assert!(check_address("sync", ok).is_ok(), "{ok}");
        }
        let long = format!("{}:7000", "h".repeat(MAX_ADDRESS_BYTES));
        for bad in ["", "host", ":7000", "h:0", "h:65536", "h:x", "a b:1", "h/x:1", "h\n:1", &long]
        {
            let e = check_address("sync", bad).unwrap_err();
            assert_eq!(e.code(), "invalid_address", "{bad:?}");
        }
    }

    /// The HTTP API's consistency names the same read as the node's own.
    #[test]
    fn consistency_from_wire() {
        use herald_proto::wire::presence::Consistency as Wire;
        assert_eq!(super::Consistency::from(Wire::Linearizable), super::Consistency::Linearizable);
        assert_eq!(super::Consistency::from(Wire::Local), super::Consistency::Local);
        assert_eq!(super::Consistency::from(Wire::default()), super::Consistency::default());
    }
}

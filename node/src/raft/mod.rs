//! Everything that knows openraft: storage, transport, and [`RaftNode`], the
//! one handle the rest of the node uses (writes, linearizable reads, status,
//! membership). No openraft type leaves this module.

pub mod codec;
pub mod entry_bytes;
#[cfg(test)]
mod fake_peer;
pub mod master;
pub mod network;
pub mod read_index;
pub mod service;
pub mod state_machine;
#[cfg(test)]
mod tests;
pub mod types;
pub mod wal_store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_proto::codes::{self, Code};
use herald_proto::raft::raft_internal_client::RaftInternalClient;
use herald_proto::raft::RaftBytes;
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, Instant as _, LinearizerOption, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::clock::ClusterClock;
use crate::config::Config;
use herald_domain::state::{Command, Op, OpResult, State};
pub use state_machine::SharedState;
use types::{NodeAddr, Raft};

/// Requests waiting for the group-commit batcher. Bounded so that a flood of
/// writers waits (back-pressure) instead of growing memory.
const WRITE_QUEUE: usize = 4096;
/// Most operations in one log entry: bounds entry size (~100 B/event → ~2 MiB).
const MAX_BATCH_EVENTS: usize = 20_000;
// A batch stops taking requests once it holds MAX_BATCH_EVENTS ops, and
// every request carrying a profile op carries only that one, so an entry
// holds at most MAX_BATCH_EVENTS profile ops: with a 2x margin below the
// slots of a revision, profile::revision stays distinct per update.
const _: () = assert!(
    2 * MAX_BATCH_EVENTS as u64 <= herald_domain::profile::REVISION_SLOTS,
    "an entry must not hold more profile ops than a revision has slots"
);
/// Most payload bytes (message bodies) in one log entry: an entry must fit
/// one AppendEntries message with room to spare.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Batches in flight to openraft at once while batches are small. Small on
/// purpose: while they commit, new requests queue up and go out together
/// as the next entry (group commit); two keep the disk busy while the next
/// batch forms. Measured (release, 3 nodes on 2 cores, single-event
/// writes, 64 / 256 clients): 2 in flight 10.5–15.3k / 13.4–20.9k ops/s,
/// 4 in flight 7.2–9.1k / 9.9–12.2k — more entries of fewer events each
/// cost more (per-entry replication, fsync and apply) than they save in
/// waiting.
const MAX_INFLIGHT_BATCHES: usize = 2;
/// Events from which a batch is big enough not to wait: a batch that has
/// gathered this many (or [`AMORTIZED_BATCH_BYTES`]) goes out even while
/// [`MAX_INFLIGHT_BATCHES`] are in flight, up to [`MAX_INFLIGHT_HARD`].
/// The in-flight limit only exists to let batches grow; one this big has
/// spread its per-entry cost (one wal record, one fsync round, one
/// AppendEntries per follower) over enough events that waiting would add
/// latency and save nothing. So the number in flight follows what is
/// queued: one client at a time keeps two, a flood keeps more.
const AMORTIZED_BATCH_EVENTS: usize = 4_096;
/// Payload bytes that make a batch big enough not to wait (as above).
const AMORTIZED_BATCH_BYTES: usize = 1 << 20;
/// Most batches in flight at once, whatever is queued: bounds the memory a
/// flood holds in openraft (at most this many entries of
/// [`MAX_BATCH_BYTES`]) and the work a leader change throws back.
const MAX_INFLIGHT_HARD: usize = 8;

/// How fresh a read of the replicated state must be (see [`RaftNode::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read-index confirmed by the leader, then served from the local state
    /// once applied: reflects every write acknowledged before the query.
    #[default]
    Linearizable,
    /// This node's current state, no round trip; may be stale.
    Local,
    /// This node's state if it has applied an entry the leader stamped no
    /// more than `max_staleness_ms` ago (measured, see [`ReadSpec`]); else
    /// wait briefly, then forward or fail as `<reads>` says.
    Bounded,
}

/// What a read asks for beyond its consistency (issue 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadSpec {
    pub consistency: Consistency,
    /// `bounded`: the most staleness accepted, ms (None: `<reads
    /// max-staleness-ms>`).
    pub max_staleness_ms: Option<u64>,
    /// Serve only once this node has applied this revision (a write's
    /// answer): read-your-writes on any node, with any consistency.
    pub min_revision: Option<u64>,
}

/// How a read was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadInfo {
    /// The applied index the state was read at.
    pub revision: u64,
    /// How stale the state read may be, ms: this node's cluster time minus
    /// the leader's time stamped into the newest entry applied, plus the
    /// clock tolerance. 0 for a read confirmed by the leader (read index);
    /// None when no stamped entry was applied yet.
    pub staleness_ms: Option<u64>,
    /// A bounded read that was too stale went through the leader.
    pub forwarded: bool,
}

/// Errors of cluster operations, each with a stable code for the wire.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClusterError {
    #[error("no leader is known; the cluster may be electing or has lost its majority")]
    NoLeader,
    #[error("the operation did not finish in time; it may or may not have taken effect")]
    Timeout,
    #[error("node {0} is not the leader")]
    NotLeader(u64),
    #[error("the leader could not be reached: {0}")]
    Unavailable(String),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("node {0} is not known to this cluster")]
    UnknownNode(u64),
    #[error("node {0} is a learner, not a voter: it cannot lead")]
    NotVoter(u64),
    #[error("this node applied nothing the leader stamped within {bound_ms} ms (staleness {staleness}); it may be cut off from the leader")]
    TooStale { bound_ms: u64, staleness: String },
    #[error("revision {wanted} not applied here within {waited_ms} ms (applied: {applied})")]
    RevisionNotReached { wanted: u64, applied: u64, waited_ms: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ClusterError {
    /// The stable code that crosses the wire (catalog entry).
    pub fn code(&self) -> Code {
        match self {
            ClusterError::NoLeader => codes::NO_LEADER,
            ClusterError::Timeout => codes::TIMEOUT,
            ClusterError::NotLeader(_) => codes::NOT_LEADER,
            ClusterError::Unavailable(_) => codes::LEADER_UNAVAILABLE,
            ClusterError::Membership(_) => codes::MEMBERSHIP_REFUSED,
            ClusterError::UnknownNode(_) => codes::UNKNOWN_NODE,
            ClusterError::NotVoter(_) => codes::NOT_A_VOTER,
            ClusterError::TooStale { .. } => codes::TOO_STALE,
            ClusterError::RevisionNotReached { .. } => codes::REVISION_NOT_REACHED,
            ClusterError::Internal(_) => codes::INTERNAL,
        }
    }
}

/// Reply to a write: the log index and one result per operation.
pub type ForwardReply = Result<(u64, Vec<OpResult>), ClusterError>;

struct WriteReq {
    ops: Vec<Op>,
    reply: oneshot::Sender<ForwardReply>,
}

/// A write's place in a sequence (see [`RaftNode::write_in_turn`]): what to
/// wait for before queueing, and what to fire once queued (dropping it,
/// whatever happened, lets the next write go).
#[derive(Debug, Default)]
pub struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// A write that waits for nothing and holds up nothing.
    pub fn free() -> Turn {
        Turn::default()
    }

    /// Turns for a sequence of writes, in order.
    pub fn sequence() -> impl FnMut() -> Turn {
        let mut prev: Option<oneshot::Receiver<()>> = None;
        move || {
            let (tx, rx) = oneshot::channel();
            Turn { after: prev.replace(rx), done: Some(tx) }
        }
    }
}

/// A member as seen in status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub number: u64,
    pub sync: String,
    pub publish: String,
    /// leader | follower | learner | replica
    pub role: String,
    /// The member's data center, from the membership.
    pub zone: String,
    /// A replica (a learner kept as one).
    pub replica: bool,
    /// Entries of the leader's log not yet replicated to it (leader's view).
    pub lag_entries: Option<u64>,
    /// Acked a heartbeat recently (leader's view), or is this node.
    pub healthy: Option<bool>,
    pub matched_index: Option<u64>,
}

/// What this node knows about the cluster right now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalStatus {
    pub node: u64,
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// The Raft group as the rest of the node sees it.
pub struct RaftNode {
    pub id: u64,
    raft: Raft,
    sm: state_machine::StateMachine,
    writer: mpsc::Sender<WriteReq>,
    clock: Arc<ClusterClock>,
    /// Bounds every write and read barrier.
    op_timeout: Duration,
    /// How long to wait for a leader to appear before answering `no_leader`.
    leader_wait: Duration,
    health_window: Duration,
    /// The leader whose AppendEntries (entries or heartbeat) this node last
    /// accepted, and when: a follower cut off from its leader keeps
    /// `current_leader` (pre-vote does not clear it), so "has a leader"
    /// alone would call an isolated node healthy.
    leader_contact: Mutex<Option<(u64, std::time::Instant)>>,
    peers: Mutex<HashMap<(u64, String), Channel>>,
    /// Separate connections for media bytes, so that a slow download
    /// never holds up Raft-adjacent calls (forwards, read index) that share
    /// an HTTP/2 connection's flow-control window.
    blob_peers: Mutex<HashMap<(u64, String), Channel>>,
    connect_timeout: Duration,
    /// `<peer-tls>` for calls to peers' sync ports; None = plaintext.
    peer_tls: Option<crate::peer_tls::PeerClientTls>,
    /// Leader changes seen by this node (metrics).
    pub master_changes: std::sync::atomic::AtomicU64,
    /// Follower reads' shared read-index round trips.
    pub read_rounds: Arc<read_index::ReadIndexRounds>,
    /// `<reads>`: bounded and min-revision reads, time ticks.
    reads: crate::config::ReadsConfig,
    /// `<time tolerance-ms>`: added to every measured staleness (the
    /// node's clock may be this far behind the stamping leader's).
    clock_tolerance_ms: u64,
    /// Dial overrides of this node's file (`<server sync-via>`): number →
    /// the address this node reaches that server's sync port at.
    dial: Arc<HashMap<u64, String>>,
    /// Cluster time of the last command the batcher proposed (ticks are
    /// sent only when nothing else was, see [`ticker`]).
    last_proposed_ms: Arc<std::sync::atomic::AtomicU64>,
}

fn internal(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Internal(e.to_string())
}

impl RaftNode {
    /// Opens storage under `config.data_dir`, starts Raft, and bootstraps the
    /// cluster from the XML server list when this node has no state yet.
    pub async fn start(config: &Config, clock: Arc<ClusterClock>) -> anyhow::Result<Arc<Self>> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)?;
        // The Raft log and vote: fsync-durable (herald-wal). A log that an
        // earlier version kept in sled is imported once.
        let log = wal_store::WalStore::open_or_import(&dir.join("raft-log"), &dir.join("sled"))?;
        let entry_bytes = log.entry_bytes();
        let sm = state_machine::StateMachine::open_with_feed(
            dir.join("snapshots"),
            config.watch.clone(),
        )?;
        let t = &config.raft;
        let rc = openraft::Config {
            cluster_name: config.cluster.clone(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            // AppendEntries RPC timeout is the heartbeat interval in 0.10;
            // snapshots get their own, longer one.
            install_snapshot_timeout: t.election_max_ms.max(2000),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_logs),
            // Keep some log behind a snapshot so a briefly lagging follower
            // catches up from the log rather than a full snapshot.
            max_in_snapshot_log_to_keep: t.snapshot_logs.min(1000),
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        let rc = Arc::new(rc.validate()?);
        let connect_timeout = Duration::from_millis(t.election_min_ms);
        let peer_tls = config
            .peer_tls
            .as_ref()
            .map(|c| crate::peer_tls::PeerClientTls::load(c, &config.cluster))
            .transpose()?;
        let dial: Arc<HashMap<u64, String>> = Arc::new(
            config
                .servers
                .iter()
                .filter_map(|s| s.sync_via.clone().map(|v| (s.number, v)))
                .collect(),
        );
        let net = network::NetworkFactory {
            connect_timeout,
            append_floor: Duration::from_millis(t.election_min_ms),
            tls: peer_tls.clone(),
            dial: dial.clone(),
            kept: entry_bytes,
        };
        let raft = Raft::new(config.node, rc, net, log, sm.clone()).await?;

        let me_voter = config.this_server().role == crate::config::ServerRole::Voter;
        let bootstrapped = !config.join && me_voter && !raft.is_initialized().await?;
        if bootstrapped {
            // Voters only: openraft's initial membership makes every node it
            // names a voter. The replicas are added as learners by the
            // first leader ([`add_xml_replicas`]).
            let members: BTreeMap<u64, NodeAddr> = config
                .servers
                .iter()
                .filter(|s| s.role == crate::config::ServerRole::Voter)
                .map(|s| (s.number, node_addr(s)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(
                    servers = config.servers.len(),
                    "bootstrapped a new cluster from the XML server list"
                ),
                // Another member reached us first: we are part of a cluster already.
                Err(e) => tracing::info!(error = %e, "not bootstrapping"),
            }
        }

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let node = Arc::new(RaftNode {
            id: config.node,
            raft,
            sm,
            writer: tx,
            clock,
            op_timeout: Duration::from_millis(t.write_timeout_ms),
            leader_wait: Duration::from_millis(t.election_max_ms * 3)
                .min(Duration::from_millis(t.write_timeout_ms)),
            health_window: Duration::from_millis(t.election_max_ms * 2),
            leader_contact: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            blob_peers: Mutex::new(HashMap::new()),
            connect_timeout,
            peer_tls,
            master_changes: std::sync::atomic::AtomicU64::new(0),
            read_rounds: Arc::default(),
            reads: config.reads.clone(),
            clock_tolerance_ms: config.time.tolerance_ms,
            dial,
            last_proposed_ms: Arc::default(),
        });
        tokio::spawn(batcher(
            node.raft.clone(),
            node.clock.clone(),
            rx,
            node.last_proposed_ms.clone(),
        ));
        tokio::spawn(ticker(node.clone()));
        if bootstrapped {
            let replicas: Vec<(u64, NodeAddr)> = config
                .servers
                .iter()
                .filter(|s| s.role == crate::config::ServerRole::Replica)
                .map(|s| (s.number, node_addr(s)))
                .collect();
            if !replicas.is_empty() {
                tokio::spawn(add_xml_replicas(node.clone(), replicas));
            }
        }
        let period = Duration::from_millis(t.heartbeat_ms * 2);
        tokio::spawn(master::run(node.clone(), config.master.clone(), period));
        Ok(node)
    }

    /// Reads the replicated state: the one way the rest of the node reads
    /// it. `Linearizable` passes a [read barrier](Self::read_barrier) first,
    /// so `f` sees every write acknowledged before the call; `Local` reads
    /// this node's state as it is (may be stale). `f` runs under the
    /// state's read lock, which blocks apply: keep it short (copy out what
    /// you need; it cannot await).
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&State) -> T,
    ) -> Result<T, ClusterError> {
        match consistency {
            Consistency::Linearizable => {
                self.read_barrier().await?;
                Ok(self.read_local(f))
            }
            Consistency::Local => Ok(self.read_local(f)),
            Consistency::Bounded => {
                let spec = ReadSpec { consistency, ..ReadSpec::default() };
                self.read_with(spec, f).await.map(|(v, _)| v)
            }
        }
    }

    /// [`read`](Self::read) with `min_revision` and `max_staleness_ms`, and
    /// what the read was served at (revision, measured staleness).
    ///
    /// 1. `min_revision`: wait until this node has applied it (at most
    ///    `<reads min-revision-wait-ms>`, then `revision_not_reached`).
    /// 2. `linearizable`: read barrier; `local`: nothing; `bounded`: serve
    ///    if the newest stamp applied here is within the bound by this
    ///    node's cluster clock, else wait for one up to `stale-wait-ms`,
    ///    then forward (read barrier) or fail (`too_stale`).
    /// 3. `f` under the read lock; the stamp is read under the same lock,
    ///    so the staleness reported is that of the state `f` saw.
    #[tracing::instrument(level = "debug", skip_all, fields(consistency = ?spec.consistency, max_staleness_ms = ?spec.max_staleness_ms, min_revision = ?spec.min_revision))]
    pub async fn read_with<T>(
        &self,
        spec: ReadSpec,
        f: impl FnOnce(&State) -> T,
    ) -> Result<(T, ReadInfo), ClusterError> {
        self.read_with_info(spec, |st, _| f(st)).await
    }

    /// [`Self::read_with`], with `f` also given how the read is served (an
    /// answer encoded under the lock carries its staleness).
    pub async fn read_with_info<T>(
        &self,
        spec: ReadSpec,
        f: impl FnOnce(&State, &ReadInfo) -> T,
    ) -> Result<(T, ReadInfo), ClusterError> {
        if let Some(wanted) = spec.min_revision {
            let wait = Duration::from_millis(self.reads.min_revision_wait_ms);
            let r = self
                .raft
                .wait(Some(wait))
                .applied_index_at_least(Some(wanted), "min revision")
                .await;
            if r.is_err() {
                return Err(ClusterError::RevisionNotReached {
                    wanted,
                    applied: self.status().applied_index,
                    waited_ms: self.reads.min_revision_wait_ms,
                });
            }
        }
        let mut forwarded = false;
        match spec.consistency {
            Consistency::Linearizable => {
                self.read_barrier().await?;
            }
            Consistency::Local => {}
            Consistency::Bounded => {
                let bound = spec.max_staleness_ms.unwrap_or(self.reads.max_staleness_ms);
                if !self.wait_fresh(bound).await {
                    match self.reads.when_stale {
                        crate::config::WhenStale::Forward => {
                            self.read_barrier().await?;
                            forwarded = true;
                        }
                        crate::config::WhenStale::Fail => {
                            let staleness = match self.staleness_ms() {
                                Some(ms) => format!("{ms} ms"),
                                None => "unknown: no stamped entry applied".into(),
                            };
                            return Err(ClusterError::TooStale { bound_ms: bound, staleness });
                        }
                    }
                }
            }
        }
        let linear = spec.consistency == Consistency::Linearizable || forwarded;
        let st = self.sm.shared_state();
        let guard = st.read().expect("state lock");
        let stamp = *self.sm.stamp().borrow();
        let info = ReadInfo {
            revision: guard.applied(),
            staleness_ms: if linear { Some(0) } else { self.staleness_of(stamp) },
            forwarded,
        };
        Ok((f(&guard, &info), info))
    }

    /// Staleness of a state whose newest stamp is `stamp`, by this node's
    /// cluster clock now, plus the clock tolerance (None: nothing stamped
    /// applied yet).
    fn staleness_of(&self, stamp: state_machine::Stamp) -> Option<u64> {
        (stamp.at_ms > 0)
            .then(|| self.clock.now_ms().saturating_sub(stamp.at_ms) + self.clock_tolerance_ms)
    }

    /// This node's staleness now (see [`ReadInfo::staleness_ms`]).
    pub fn staleness_ms(&self) -> Option<u64> {
        self.staleness_of(*self.sm.stamp().borrow())
    }

    /// Waits up to `<reads stale-wait-ms>` until this node's staleness is
    /// at most `bound_ms`; whether it is.
    async fn wait_fresh(&self, bound_ms: u64) -> bool {
        let fresh = |me: &Self| me.staleness_ms().is_some_and(|s| s <= bound_ms);
        if fresh(self) {
            return true;
        }
        let mut rx = self.sm.stamp();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.reads.stale_wait_ms);
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) if fresh(self) => return true,
                Ok(Ok(())) => {}
                _ => return fresh(self),
            }
        }
    }

    /// [`read`](Self::read) with `Local` consistency, for code that cannot
    /// wait (status, metrics, a fast pre-check that a later linearizable
    /// read or apply confirms).
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let st = self.sm.shared_state();
        let guard = st.read().expect("state lock");
        f(&guard)
    }

    /// The presence change feed of this node (issue 15).
    pub fn feed(&self) -> Arc<crate::feed::Feed> {
        self.sm.feed()
    }

    /// What applied entries mean for sessions, as they are applied here.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<herald_domain::messages::Notice> {
        self.sm.subscribe()
    }

    /// Stops Raft; storage is flushed as part of openraft's shutdown.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    fn leader(&self) -> Option<(u64, NodeAddr)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    async fn wait_for_leader(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(u64, NodeAddr), ClusterError> {
        let leader_deadline = deadline.min(tokio::time::Instant::now() + self.leader_wait);
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= leader_deadline {
                return Err(ClusterError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until this node has applied `index` (bounded by the op timeout).
    pub async fn wait_applied(&self, index: u64) -> Result<(), ClusterError> {
        self.raft
            .wait(Some(self.op_timeout))
            .applied_index_at_least(Some(index), "wait applied")
            .await
            .map(|_| ())
            .map_err(|_| ClusterError::Timeout)
    }

    /// Members (voters and learners) with their addresses.
    pub fn members(&self) -> Vec<(u64, NodeAddr)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().nodes().map(|(id, a)| (*id, a.clone())).collect()
    }

    /// Voter numbers of the current membership.
    pub fn voters(&self) -> Vec<u64> {
        self.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect()
    }

    /// This node's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The sync-port address of a member.
    fn sync_addr(&self, node: u64) -> Result<String, ClusterError> {
        self.members()
            .into_iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| a.sync)
            .ok_or(ClusterError::UnknownNode(node))
    }

    /// Where this node dials a member's sync port: its `<server sync-via>`
    /// in this node's file, else the membership's address.
    fn dial_addr(&self, node: u64) -> Result<String, ClusterError> {
        match self.dial.get(&node) {
            Some(via) => Ok(via.clone()),
            None => self.sync_addr(node),
        }
    }

    /// The connection to another member's sync port shared by Raft-adjacent
    /// calls (the gateway peer service uses it too: small, latency-bound).
    pub fn peer_channel(&self, node: u64) -> Result<Channel, ClusterError> {
        let addr = self.dial_addr(node)?;
        self.cached_channel(&self.peers, node, &addr)
    }

    /// A connection to another member's sync port used only for media
    /// bytes (`MediaBlobs`), so that large transfers never queue Raft
    /// traffic behind them.
    pub fn blob_channel(&self, node: u64) -> Result<Channel, ClusterError> {
        let addr = self.dial_addr(node)?;
        self.cached_channel(&self.blob_peers, node, &addr)
    }

    /// A channel to node `node` at `addr` from `cache`, opened (lazily
    /// connecting) on first use. Cached by number and address: with
    /// `<peer-tls>` the connection checks the peer's certificate for that
    /// number.
    fn cached_channel(
        &self,
        cache: &Mutex<HashMap<(u64, String), Channel>>,
        node: u64,
        addr: &str,
    ) -> Result<Channel, ClusterError> {
        let mut peers = cache.lock().expect("peers lock");
        let key = (node, addr.to_owned());
        if let Some(c) = peers.get(&key) {
            return Ok(c.clone());
        }
        let tls = self.peer_tls.as_ref().map(|t| t.for_node(node));
        let ch = network::channel(addr, self.connect_timeout, tls).map_err(internal)?;
        peers.insert(key, ch.clone());
        Ok(ch)
    }

    /// Whether calls to peers use mutual TLS (`<peer-tls>`).
    pub fn peer_tls(&self) -> bool {
        self.peer_tls.is_some()
    }

    /// The clock leaders stamp commands with.
    pub fn clock(&self) -> &Arc<ClusterClock> {
        &self.clock
    }

    fn peer(&self, node: u64, addr: &str) -> Result<RaftInternalClient<Channel>, ClusterError> {
        let addr = self.dial.get(&node).map_or(addr, String::as_str);
        let ch = self.cached_channel(&self.peers, node, addr)?;
        Ok(RaftInternalClient::new(ch)
            .max_decoding_message_size(network::MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(network::MAX_RAFT_MESSAGE_BYTES))
    }

    /// Commits a batch of operations through the leader (this node or
    /// another) and returns the log index it was committed at with one
    /// result per operation. Bounded by the write timeout; `no_leader` when
    /// no leader appears in time.
    pub async fn write(&self, ops: Vec<Op>) -> ForwardReply {
        self.write_in_turn(ops, Turn::free()).await
    }

    /// [`write`](Self::write), taking its place in a sequence of writes (one
    /// stream's batches): it waits until the write before it in the
    /// sequence is queued, and lets the next one go as soon as it is queued
    /// itself. On the leader "queued" means in the batcher's channel, whose
    /// order is the log's, so a stream keeps many batches in flight and they
    /// still apply in the order sent; through a follower (a forward RPC,
    /// whose arrival order is not guaranteed) it means answered, so a stream
    /// there goes one batch at a time. A write retried after a leader change
    /// may land behind writes queued after it: a caller that gets an error
    /// resends from that batch on, in order.
    pub async fn write_in_turn(&self, ops: Vec<Op>, turn: Turn) -> ForwardReply {
        let Turn { after, mut done } = turn;
        if let Some(prev) = after {
            // Err: the previous write ended without queueing; go on.
            let _ = prev.await;
        }
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        // What went wrong last, answered when the deadline passes while
        // retrying: a leader that metrics still name but that cannot be
        // reached (the majority is gone; pre-vote keeps the old term) is
        // answered as `no_leader`.
        let mut last;
        loop {
            let (leader, addr) = self.wait_for_leader(deadline).await?;
            let done = &mut done;
            let attempt = async {
                if leader == self.id {
                    let reply = self.queue_as_leader(ops.clone()).await?;
                    if let Some(d) = done.take() {
                        let _ = d.send(());
                    }
                    reply.await.map_err(|_| internal("batcher dropped the request"))?
                } else {
                    self.forward(leader, &addr, &ops).await
                }
            };
            let res = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(r) => r,
                Err(_) => return Err(ClusterError::Timeout),
            };
            match res {
                // Leadership moved between our look and the write: try the new one.
                Err(e @ ClusterError::NotLeader(_)) | Err(e @ ClusterError::NoLeader) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Nothing was sent: the leader may have died; look again.
                Err(ClusterError::Unavailable(e)) if e.starts_with("connect:") => {
                    tracing::debug!(leader, addr = %addr.sync, error = %e, "leader unreachable");
                    last = ClusterError::NoLeader;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
        }
    }

    async fn forward(&self, leader: u64, addr: &NodeAddr, ops: &[Op]) -> ForwardReply {
        let mut c = self.peer(leader, &addr.sync)?;
        let data = codec::encode(&ops).map_err(internal)?;
        match c.forward(RaftBytes { data }).await {
            Ok(r) => codec::decode::<ForwardReply>(&r.into_inner().data).map_err(internal)?,
            Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("connect") => {
                Err(ClusterError::Unavailable(format!("connect: {}", s.message())))
            }
            Err(s) => Err(ClusterError::Unavailable(s.to_string())),
        }
    }

    /// Queues operations for the local batcher; valid only on the leader.
    pub async fn write_as_leader(&self, ops: Vec<Op>) -> ForwardReply {
        let rx = self.queue_as_leader(ops).await?;
        rx.await.map_err(|_| internal("batcher dropped the request"))?
    }

    /// Puts operations in the batcher's channel (the log's order) and
    /// returns where the answer will come.
    async fn queue_as_leader(
        &self,
        ops: Vec<Op>,
    ) -> Result<oneshot::Receiver<ForwardReply>, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteReq { ops, reply: tx })
            .await
            .map_err(|_| internal("batcher stopped"))?;
        Ok(rx)
    }

    /// On the leader: confirms leadership and returns the read index (every
    /// write acknowledged before this call is at or below it).
    ///
    /// Leadership is confirmed by the leader lease when a quorum acknowledged
    /// an RPC sent less than one lease ago (openraft's lease is
    /// `election_timeout_max`; a follower that acknowledged it refuses to
    /// vote for another candidate for at least that long, measured from a
    /// later instant on its own monotonic clock), and otherwise by a
    /// heartbeat round sent at once (ReadIndex). A leadership transfer (the
    /// numbered master's) is the one election a lease does not hold back:
    /// openraft refuses reads on the leader from the moment it starts one, so
    /// no read is served on a lease the transfer has broken.
    pub async fn leader_read_index(&self) -> Result<u64, ClusterError> {
        let fut = self.raft.get_read_log_id(LinearizerOption::new(None, true));
        match tokio::time::timeout(self.op_timeout, fut).await {
            Err(_) => Err(ClusterError::Timeout),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.index()),
            Ok(Err(e)) => match e.forward_to_leader() {
                Some(f) => Err(ClusterError::NotLeader(f.leader_id.unwrap_or(0))),
                None => Err(internal(e)),
            },
        }
    }

    /// A linearizable read barrier: returns once this node's state machine
    /// has applied everything acknowledged before the call (read-index
    /// confirmed by the leader). Then the local state may be read.
    pub async fn read_barrier(&self) -> Result<u64, ClusterError> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        let fut = async {
            loop {
                let (leader, addr) = self.wait_for_leader(deadline).await?;
                let r = if leader == self.id {
                    self.leader_read_index().await
                } else {
                    let c = self.peer(leader, &addr.sync)?;
                    self.read_rounds.read_index(&addr.sync, c).await
                };
                match r {
                    Ok(index) => {
                        let remaining =
                            deadline.saturating_duration_since(tokio::time::Instant::now());
                        self.raft
                            .wait(Some(remaining))
                            .applied_index_at_least(Some(index), "read barrier")
                            .await
                            .map_err(|_| ClusterError::Timeout)?;
                        return Ok(index);
                    }
                    Err(ClusterError::NotLeader(_)) | Err(ClusterError::Unavailable(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout),
        }
    }

    /// A snapshot of this node's view of the cluster.
    pub fn status(&self) -> LocalStatus {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let is_leader = m.state == ServerState::Leader;
        let mut members = Vec::new();
        let last = m.last_log_index.unwrap_or(0);
        for (id, addr) in membership.nodes() {
            let role = if m.current_leader == Some(*id) {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else if addr.replica {
                "replica"
            } else {
                "learner"
            };
            let (healthy, matched) = if *id == self.id {
                (Some(true), m.last_applied.as_ref().map(|l| l.index()))
            } else if is_leader {
                let hb = m.heartbeat.as_ref().and_then(|h| h.get(id).cloned().flatten());
                let ok = hb.map(|t| t.elapsed() < self.health_window).unwrap_or(false);
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index());
                (Some(ok), matched)
            } else {
                (None, None)
            };
            members.push(MemberStatus {
                number: *id,
                sync: addr.sync.clone(),
                publish: addr.publish.clone(),
                role: role.to_string(),
                zone: addr.zone.clone(),
                replica: addr.replica,
                lag_entries: is_leader.then(|| last.saturating_sub(matched.unwrap_or(0))),
                healthy,
                matched_index: matched,
            });
        }
        LocalStatus {
            node: self.id,
            state: format!("{:?}", m.state).to_lowercase(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m
                .cluster_committed
                .as_ref()
                .or(m.local_committed.as_ref())
                .map(|l| l.index())
                .unwrap_or(0),
            applied_index: m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
            members,
        }
    }

    /// The lowest-numbered voter of the current membership: the designated
    /// standard-time node.
    pub fn lowest_voter(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().membership_config.membership().voter_ids().min()
    }

    /// Records an AppendEntries from `leader` that this node accepted.
    pub fn note_leader_contact(&self, leader: u64) {
        *self.leader_contact.lock().expect("leader contact lock") =
            Some((leader, std::time::Instant::now()));
    }

    /// Whether this node is in touch with a live leader (what `/healthz`
    /// and the gRPC health service report): as leader, a quorum
    /// acknowledged it within the health window (2 × `election-max-ms`;
    /// always, when it is the only voter); as follower or learner, its
    /// current leader's AppendEntries reached it within that window.
    pub fn leader_is_live(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state == ServerState::Leader {
            let voters = m.membership_config.membership().voter_ids().count();
            return voters <= 1
                || m.last_quorum_acked.as_ref().is_some_and(|t| t.elapsed() < self.health_window);
        }
        let Some(leader) = m.current_leader else { return false };
        let contact = *self.leader_contact.lock().expect("leader contact lock");
        contact.is_some_and(|(l, at)| l == leader && at.elapsed() < self.health_window)
    }

    /// The current leader (the numbered master), if known.
    pub fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Asks the leader to hand leadership to `number` (operator command;
    /// this node must be the leader).
    pub async fn transfer_leader(&self, number: u64) -> Result<(), ClusterError> {
        if !self.is_leader() {
            return Err(ClusterError::NotLeader(self.leader_id().unwrap_or(0)));
        }
        if number == self.id {
            // Already the leader: nothing to do. (Asking openraft to hand
            // leadership to itself left a lone node refusing every write.)
            return Ok(());
        }
        match self.status().members.iter().find(|m| m.number == number) {
            None => return Err(ClusterError::UnknownNode(number)),
            Some(m) if m.role == "learner" || m.role == "replica" => {
                return Err(ClusterError::NotVoter(number))
            }
            Some(_) => {}
        }
        self.raft.trigger().transfer_leader(number).await.map_err(internal)?;
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        while tokio::time::Instant::now() < deadline {
            if self.leader_id() == Some(number) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ClusterError::Timeout)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Address of the leader's publish port, for forwarding admin calls.
    pub fn leader_publish_addr(&self) -> Option<(u64, String)> {
        self.leader().map(|(id, a)| (id, a.publish))
    }

    fn map_write_err<E>(e: openraft::errors::RaftError<types::TypeConfig, E>) -> ClusterError
    where
        E: std::fmt::Display
            + std::error::Error
            + openraft::TryAsRef<openraft::errors::ForwardToLeader<types::TypeConfig>>,
    {
        match e.forward_to_leader() {
            Some(f) => ClusterError::NotLeader(f.leader_id.unwrap_or(0)),
            None => ClusterError::Membership(e.to_string()),
        }
    }

    /// Adds a learner (leader only) and waits until it has caught up. With
    /// `addr.replica` it is a replica: a learner that stays one.
    pub async fn add_learner(&self, number: u64, addr: NodeAddr) -> Result<u64, ClusterError> {
        let fut = self.raft.add_learner(number, addr, true);
        let r = tokio::time::timeout(self.op_timeout * 6, fut)
            .await
            .map_err(|_| ClusterError::Timeout)?;
        r.map(|resp| resp.log_id.index()).map_err(Self::map_write_err)
    }

    /// Promotes a learner to voter (leader only).
    pub async fn promote(&self, number: u64) -> Result<u64, ClusterError> {
        let known = self.status().members.iter().any(|m| m.number == number);
        if !known {
            return Err(ClusterError::UnknownNode(number));
        }
        let fut = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([number])), false);
        let r =
            tokio::time::timeout(self.op_timeout, fut).await.map_err(|_| ClusterError::Timeout)?;
        r.map(|resp| resp.log_id.index()).map_err(Self::map_write_err)
    }

    /// Removes a node (voter or learner) from the cluster (leader only).
    pub async fn remove(&self, number: u64) -> Result<u64, ClusterError> {
        let st = self.status();
        let Some(m) = st.members.iter().find(|m| m.number == number) else {
            return Err(ClusterError::UnknownNode(number));
        };
        let change = if m.role == "learner" || m.role == "replica" {
            ChangeMembers::RemoveNodes(BTreeSet::from([number]))
        } else {
            ChangeMembers::RemoveVoters(BTreeSet::from([number]))
        };
        let fut = self.raft.change_membership(change, false);
        let r =
            tokio::time::timeout(self.op_timeout, fut).await.map_err(|_| ClusterError::Timeout)?;
        r.map(|resp| resp.log_id.index()).map_err(Self::map_write_err)
    }
}

/// The membership entry of an XML server.
fn node_addr(s: &crate::config::Server) -> NodeAddr {
    NodeAddr {
        sync: s.sync_addr(),
        publish: s.publish_addr(),
        zone: s.zone.clone(),
        replica: s.role == crate::config::ServerRole::Replica,
    }
}

/// How often a bootstrapping voter looks whether it leads, to add the XML's
/// replicas (a few election timeouts pass before a first leader).
const REPLICA_ADD_POLL: Duration = Duration::from_millis(100);
/// How long a bootstrapping voter keeps trying to add the XML's replicas
/// before it leaves them to the operator (`herald cluster add-replica`).
const REPLICA_ADD_FOR: Duration = Duration::from_secs(600);

/// After bootstrap: the first leader adds the XML's replicas as learners
/// (openraft's initial membership can only name voters). Every
/// bootstrapping voter runs this; the one that leads does it, the others
/// stop once they see the replicas in the membership.
async fn add_xml_replicas(node: Arc<RaftNode>, replicas: Vec<(u64, NodeAddr)>) {
    let until = tokio::time::Instant::now() + REPLICA_ADD_FOR;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(REPLICA_ADD_POLL).await;
        let have: BTreeSet<u64> = node.members().into_iter().map(|(n, _)| n).collect();
        let missing: Vec<&(u64, NodeAddr)> =
            replicas.iter().filter(|(n, _)| !have.contains(n)).collect();
        if missing.is_empty() {
            return;
        }
        if !node.is_leader() {
            continue;
        }
        for (number, addr) in missing {
            // Not blocking: a replica that is down must not hold the others.
            let fut = node.raft.add_learner(*number, addr.clone(), false);
            match tokio::time::timeout(node.op_timeout, fut).await {
                Ok(Ok(_)) => tracing::info!(replica = number, zone = %addr.zone, "replica added"),
                Ok(Err(e)) => tracing::debug!(replica = number, error = %e, "adding replica"),
                Err(_) => tracing::debug!(replica = number, "adding replica timed out"),
            }
        }
    }
}

/// The leader's time ticks: while no command was proposed for `<reads
/// tick-ms>`, an empty command stamped with the leader's cluster time, so
/// every member can measure its staleness from the stamps it applied
/// (idle clusters included). Only while the membership spans two zones or
/// more or holds a replica: a one-zone cluster of voters keeps an idle log
/// still (its bounded reads forward, as configured, when idle).
async fn ticker(node: Arc<RaftNode>) {
    use std::sync::atomic::Ordering;
    let period = Duration::from_millis(node.reads.tick_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tick.tick().await;
        if !node.is_leader() || inflight.as_ref().is_some_and(|h| !h.is_finished()) {
            continue;
        }
        let members = node.members();
        let zones: BTreeSet<&str> = members.iter().map(|(_, a)| a.zone.as_str()).collect();
        if zones.len() < 2 && !members.iter().any(|(_, a)| a.replica) {
            continue;
        }
        let now = node.clock.now_ms();
        if now.saturating_sub(node.last_proposed_ms.load(Ordering::Relaxed)) < node.reads.tick_ms {
            continue;
        }
        let n = node.clone();
        inflight = Some(tokio::spawn(async move {
            if let Err(e) = n.write_as_leader(Vec::new()).await {
                tracing::debug!(error = %e, "time tick");
            }
        }));
    }
}

/// Requests gathered into one log entry.
struct Batch {
    reqs: Vec<WriteReq>,
    /// Operations in `reqs`.
    events: usize,
    /// Payload bytes of those operations.
    bytes: usize,
}

impl Batch {
    fn new(first: WriteReq) -> Self {
        let mut b = Batch { reqs: Vec::new(), events: 0, bytes: 0 };
        b.push(first);
        b
    }

    fn push(&mut self, r: WriteReq) {
        self.events += r.ops.len();
        self.bytes += r.ops.iter().map(Op::payload_bytes).sum::<usize>();
        self.reqs.push(r);
    }

    /// Takes no more requests: one entry's bounds are reached.
    fn full(&self) -> bool {
        self.events >= MAX_BATCH_EVENTS || self.bytes >= MAX_BATCH_BYTES
    }

    /// Big enough to go out without waiting for a batch to commit.
    fn amortized(&self) -> bool {
        self.events >= AMORTIZED_BATCH_EVENTS || self.bytes >= AMORTIZED_BATCH_BYTES
    }

    /// Takes what is queued now, until full.
    fn drain(&mut self, rx: &mut mpsc::Receiver<WriteReq>) {
        while !self.full() {
            match rx.try_recv() {
                Ok(r) => self.push(r),
                Err(_) => break,
            }
        }
    }
}

/// May a batch go out now, with `inflight` batches in flight? The group
/// commit rule: a small batch waits for one of [`MAX_INFLIGHT_BATCHES`] to
/// commit (meanwhile it grows); an amortized one only for the hard limit.
fn may_send(batch: &Batch, inflight: usize) -> bool {
    inflight < MAX_INFLIGHT_BATCHES || (batch.amortized() && inflight < MAX_INFLIGHT_HARD)
}

/// Group commit: drains whatever requests are queued (up to
/// [`MAX_BATCH_EVENTS`]) into one log entry stamped with cluster time.
/// While it waits for a batch in flight to commit ([`may_send`]) it keeps
/// taking requests, so the entry holds what queued meanwhile.
async fn batcher(
    raft: Raft,
    clock: Arc<ClusterClock>,
    mut rx: mpsc::Receiver<WriteReq>,
    last_proposed_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let inflight = Arc::new(AtomicUsize::new(0));
    // One waiter (this task): `notify_one` keeps a permit when nobody
    // waits, so a batch that commits between the check and the wait is not
    // missed; a spare permit only costs one more check.
    let committed = Arc::new(tokio::sync::Notify::new());
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::new(first);
        loop {
            batch.drain(&mut rx);
            if may_send(&batch, inflight.load(Ordering::Acquire)) {
                break;
            }
            tokio::select! {
                biased;
                _ = committed.notified() => {}
                r = rx.recv(), if !batch.full() => match r {
                    Some(r) => batch.push(r),
                    // Stopping: what was gathered still goes out.
                    None => break,
                },
            }
        }
        let guard = InFlight::enter(&inflight, &committed);
        let Batch { reqs, events: n, .. } = batch;
        let raft = raft.clone();
        let at_ms = clock.now_ms();
        last_proposed_ms.store(at_ms, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut ops = Vec::with_capacity(n);
            let mut replies = Vec::with_capacity(reqs.len());
            for r in reqs {
                replies.push((r.ops.len(), r.reply));
                ops.extend(r.ops);
            }
            match raft.client_write(Command { at_ms, ops }).await {
                Ok(resp) => {
                    let index = resp.log_id.index();
                    // One result per op, in order: hand each request its slice.
                    let mut results = resp.data.results.into_iter();
                    for (k, tx) in replies {
                        let mine: Vec<OpResult> = results.by_ref().take(k).collect();
                        let _ = tx.send(Ok((index, mine)));
                    }
                }
                Err(e) => {
                    let err = match e.forward_to_leader() {
                        Some(f) => ClusterError::NotLeader(f.leader_id.unwrap_or(0)),
                        None => internal(e),
                    };
                    for (_, tx) in replies {
                        let _ = tx.send(Err(err.clone()));
                    }
                }
            }
            drop(guard);
        });
    }
}

/// One batch in flight: counted from `enter` until dropped (also when its
/// task unwinds), then the batcher hears of it.
struct InFlight {
    count: Arc<std::sync::atomic::AtomicUsize>,
    committed: Arc<tokio::sync::Notify>,
}

impl InFlight {
    fn enter(
        count: &Arc<std::sync::atomic::AtomicUsize>,
        committed: &Arc<tokio::sync::Notify>,
    ) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight { count: count.clone(), committed: committed.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.committed.notify_one();
    }
}

#[cfg(test)]
mod group_commit_tests {
    use super::*;

    fn req(events: usize) -> WriteReq {
        let ops = (0..events).map(|g| Op::GatewayReset { gateway: g as u64 }).collect();
        WriteReq { ops, reply: oneshot::channel().0 }
    }

    /// The group-commit rule: a small batch waits while two batches are in
    /// flight; one that has gathered enough events to have spread its
    /// per-entry cost goes out up to the hard limit, and never beyond it.
    #[test]
    fn small_batches_wait_amortized_ones_go_up_to_the_hard_limit() {
        let small = Batch::new(req(30));
        assert!(may_send(&small, 0) && may_send(&small, MAX_INFLIGHT_BATCHES - 1));
        assert!(!may_send(&small, MAX_INFLIGHT_BATCHES));
        let big = Batch::new(req(AMORTIZED_BATCH_EVENTS));
        assert!(big.amortized());
        for k in 0..MAX_INFLIGHT_HARD {
            assert!(may_send(&big, k), "an amortized batch goes with {k} in flight");
        }
        assert!(!may_send(&big, MAX_INFLIGHT_HARD));
    }

    /// A batch takes what is queued until it is full, and leaves the rest
    /// queued for the next entry (in order).
    #[test]
    fn a_batch_drains_the_queue_until_full() {
        let (tx, mut rx) = mpsc::channel(16);
        for _ in 0..3 {
            tx.try_send(req(MAX_BATCH_EVENTS / 2)).unwrap();
        }
        tx.try_send(req(1)).unwrap();
        let mut b = Batch::new(req(1));
        b.drain(&mut rx);
        assert!(b.full());
        assert_eq!(b.reqs.len(), 3, "the first request and two halves fill it");
        assert_eq!(b.events, 1 + MAX_BATCH_EVENTS);
        let mut next = Batch::new(rx.try_recv().unwrap());
        next.drain(&mut rx);
        assert_eq!(
            (next.reqs.len(), next.events, next.full()),
            (2, MAX_BATCH_EVENTS / 2 + 1, false)
        );
    }
}

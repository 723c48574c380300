//! Every node is also a gateway (MISSION M5–M7): it holds client sessions,
//! turns them into presence, pushes messages to them as the log applies
//! them, reports acknowledgements to the node a message was submitted
//! through, shares its load with the other nodes, and — on the leader —
//! ends the sessions of gateways that have been gone for the grace period.
//!
//! Heartbeats never touch Raft: only session start and end (and the
//! gateway-wide reset) are log operations.
//!
//! - [`auth`] — session tokens (HMAC) or an external auth service.
//! - [`session`] — one client session (the gRPC bidirectional stream).
//! - [`session_route`] — `Gateway/Session` on the publish port with small
//!   codec buffers.
//! - [`queue`] — a session's push and frame queues, and the response
//!   stream that runs the session (no task of its own).
//! - [`load`] — load measurement, sharing and gateway choice.

pub mod auth;
pub mod load;
pub mod peer;
pub mod queue;
pub mod session;
pub mod session_route;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_proto::raft::RaftBytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::{GatewayConfig, MessagesConfig};
use crate::raft::{codec, ClusterError, Consistency, RaftNode};
use herald_domain::messages::{Notice, StoredMsg};
use herald_domain::state::Op;

/// What the dispatcher hands a session.
#[derive(Debug, Clone)]
pub enum Push {
    /// A message for this session's user; `stored` says whether it is in the
    /// user's inbox (else it is online-only).
    Msg { msg: Arc<StoredMsg>, stored: bool },
    /// Notices were lost (a slow node): re-read the inbox.
    Resync,
}

/// A session as the registry knows it.
struct SessionEntry {
    uid: String,
    client: String,
    tx: Arc<queue::PushQueue>,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<u64, SessionEntry>,
    by_uid: HashMap<String, HashSet<u64>>,
}

/// A submission waiting to hear which recipients acknowledged it.
#[derive(Default)]
pub struct Waiter {
    pub delivered: Mutex<HashSet<String>>,
    pub notify: Notify,
}

/// Acknowledgements for one node: (request number there, recipient uid).
type Reports = Vec<(u64, String)>;

/// One acknowledgement report: request `req` of the receiving node was
/// delivered to `uid`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveredReport {
    pub reports: Vec<(u64, String)>,
}

/// Pushes queued for one session before the dispatcher tells it to resync
/// instead: bounds memory per slow session.
const SESSION_QUEUE: usize = 256;
/// Delivery report batches (one per ack frame) queued towards one other
/// node: 65,536 frames is over 3 s of acks at 20,000 messages/s even with
/// one frame per message, longer than one [`REPORT_TIMEOUT`], so only a
/// node that has stopped answering fills it — then new reports are dropped
/// (best effort: those senders hear "stored") instead of growing memory
/// without bound (a few MiB at most: slots are allocated as they fill).
const REPORT_QUEUE: usize = 65_536;
/// A reporter stops draining its queue into one `Delivered` call at this
/// many reports: each is a request number and a uid (≤ 128 bytes), so a
/// call stays near 1 MiB, far below the sync port's message limit.
const MAX_REPORTS_PER_CALL: usize = 8192;
/// How long one `Delivered` call may take before its reports are given up
/// (the sender's push timeout answers "stored" for them).
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway side of a node.
pub struct Gateway {
    pub node: Arc<RaftNode>,
    pub cfg: GatewayConfig,
    pub msgs: MessagesConfig,
    pub auth: auth::Authenticator,
    pub load: load::LoadBoard,
    registry: Mutex<Registry>,
    next_session: AtomicU64,
    next_req: AtomicU64,
    waiters: Mutex<HashMap<u64, Arc<Waiter>>>,
    /// Delivery report queues, one per other node (its [`reporter`] task).
    reporters: Mutex<HashMap<u64, mpsc::Sender<Reports>>>,
    /// True once this gateway's sessions from before a restart are cleared.
    ready: watch::Sender<bool>,
    /// Session counters for metrics.
    pub sessions_opened: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub pushes: AtomicU64,
}

impl Gateway {
    pub fn new(
        node: Arc<RaftNode>,
        cfg: GatewayConfig,
        msgs: MessagesConfig,
        auth: auth::Authenticator,
        publish: String,
    ) -> Arc<Self> {
        let id = node.id;
        let (max, poll) = (cfg.max_sessions, Duration::from_millis(cfg.load_poll_ms));
        // Request numbers start from the clock so that a restarted node does
        // not reuse the numbers its previous run gave out.
        let seed = (crate::clock::wall_us().max(0) as u64) << 8;
        Arc::new(Gateway {
            node,
            cfg,
            msgs,
            auth,
            load: load::LoadBoard::new(id, publish, max, poll),
            registry: Mutex::new(Registry::default()),
            next_session: AtomicU64::new(1),
            next_req: AtomicU64::new(seed),
            waiters: Mutex::new(HashMap::new()),
            reporters: Mutex::new(HashMap::new()),
            ready: watch::channel(false).0,
            sessions_opened: AtomicU64::new(0),
            sessions_refused: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
        })
    }

    /// Starts the background tasks: notice dispatch, the restart reset,
    /// load sharing, the dead-gateway reaper and session reconciliation.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(self.clone().dispatch());
        tokio::spawn(self.clone().reset_on_start());
        tokio::spawn(load::share(self.clone()));
        tokio::spawn(self.clone().reaper());
        tokio::spawn(self.clone().reconcile());
    }

    /// Open sessions on this node.
    pub fn session_count(&self) -> usize {
        self.registry.lock().expect("registry").sessions.len()
    }

    /// Waits (bounded) until the restart reset is done.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        let ok = matches!(tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await, Ok(Ok(_)));
        ok
    }

    fn register(&self, uid: &str, client: &str, tx: Arc<queue::PushQueue>) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut r = self.registry.lock().expect("registry");
        r.sessions.insert(id, SessionEntry { uid: uid.to_owned(), client: client.to_owned(), tx });
        r.by_uid.entry(uid.to_owned()).or_default().insert(id);
        self.load.set_sessions(r.sessions.len());
        id
    }

    /// Removes a session; true when no other session of the same user and
    /// client type stays on this node (then the user goes offline on it).
    fn unregister(&self, id: u64) -> bool {
        let mut r = self.registry.lock().expect("registry");
        let Some(e) = r.sessions.remove(&id) else { return false };
        if let Some(set) = r.by_uid.get_mut(&e.uid) {
            set.remove(&id);
            if set.is_empty() {
                r.by_uid.remove(&e.uid);
            }
        }
        let others = r.by_uid.get(&e.uid).is_some_and(|set| {
            set.iter().any(|s| r.sessions.get(s).is_some_and(|x| x.client == e.client))
        });
        self.load.set_sessions(r.sessions.len());
        !others
    }

    /// Routes applied-entry notices to the sessions of this node.
    async fn dispatch(self: Arc<Self>) {
        let mut rx = self.node.subscribe();
        loop {
            match rx.recv().await {
                Ok(Notice::Message { msg, to }) => {
                    let r = self.registry.lock().expect("registry");
                    for (uid, stored) in to.iter() {
                        let Some(ids) = r.by_uid.get(uid) else { continue };
                        let stored = *stored == herald_domain::messages::Stored::Stored;
                        for id in ids {
                            if let Some(s) = r.sessions.get(id) {
                                let p = Push::Msg { msg: msg.clone(), stored };
                                if s.tx.try_push(p, SESSION_QUEUE).is_err() {
                                    s.tx.resync(SESSION_QUEUE);
                                }
                            }
                        }
                    }
                }
                Ok(Notice::Broadcast { msg }) => {
                    let r = self.registry.lock().expect("registry");
                    let stored = msg.expires_at_ms > 0;
                    for s in r.sessions.values() {
                        let p = Push::Msg { msg: msg.clone(), stored };
                        if s.tx.try_push(p, SESSION_QUEUE).is_err() {
                            s.tx.resync(SESSION_QUEUE);
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        lost = n,
                        "gateway fell behind the notices; sessions re-read their inboxes"
                    );
                    let r = self.registry.lock().expect("registry");
                    for s in r.sessions.values() {
                        s.tx.resync(SESSION_QUEUE);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// After a restart no session survives: end the ones the cluster still
    /// lists for this gateway before accepting new ones.
    async fn reset_on_start(self: Arc<Self>) {
        let me = self.node.id;
        loop {
            // A linearizable look first: only write the reset when the
            // cluster still lists sessions of this gateway (no log entry
            // per restart otherwise). Nobody else adds sessions for this
            // gateway, so the answer cannot go stale before we act.
            let listed = match self
                .node
                .read(Consistency::Linearizable, |s| s.presence.gateway_users(me))
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "gateway reset: no leader yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if listed == 0 {
                self.ready.send_replace(true);
                return;
            }
            match self.node.write(vec![Op::GatewayReset { gateway: me }]).await {
                Ok((index, _)) => {
                    let _ = self.node.wait_applied(index).await;
                    tracing::info!(
                        index,
                        users = listed,
                        "gateway reset: sessions of the previous run are offline"
                    );
                    // send_replace: updates even with no receiver yet.
                    self.ready.send_replace(true);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "gateway reset not written yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// On the leader: ends the sessions of gateways unreachable for longer
    /// than the grace period (a dead gateway's users must not stay online).
    async fn reaper(self: Arc<Self>) {
        let grace = Duration::from_millis(self.cfg.grace_ms);
        let tick = (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut unhealthy_since: HashMap<u64, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(tick).await;
            if !self.node.is_leader() {
                unhealthy_since.clear();
                continue;
            }
            let st = self.node.status();
            let gateways: Vec<u64> = self.node.read_local(|s| s.presence.gateways());
            let now = Instant::now();
            for g in gateways {
                if g == self.node.id {
                    continue;
                }
                let healthy = st
                    .members
                    .iter()
                    .find(|m| m.number == g)
                    .and_then(|m| m.healthy)
                    .unwrap_or(false);
                if healthy {
                    unhealthy_since.remove(&g);
                    continue;
                }
                let since = *unhealthy_since.entry(g).or_insert(now);
                if now.duration_since(since) >= grace {
                    tracing::warn!(
                        gateway = g,
                        grace_ms = self.cfg.grace_ms,
                        "gateway unreachable past the grace period; its sessions go offline"
                    );
                    match self.node.write(vec![Op::GatewayReset { gateway: g }]).await {
                        Ok(_) => {
                            unhealthy_since.remove(&g);
                        }
                        Err(e) => {
                            tracing::warn!(gateway = g, error = %e, "gateway reset failed; will retry")
                        }
                    }
                }
            }
        }
    }

    /// Makes the cluster's list of this gateway's sessions match the live
    /// ones: re-asserts sessions it lost (this node was cut off long enough
    /// to be reaped) and ends ones whose logout never got through.
    async fn reconcile(self: Arc<Self>) {
        let period = Duration::from_millis((self.cfg.grace_ms / 2).max(100));
        loop {
            tokio::time::sleep(period).await;
            if !*self.ready.borrow() {
                continue;
            }
            // One consistent view: the state lock, then the registry (no
            // code takes them in the other order). A session registers
            // before its login is applied and unregisters before its logout
            // is written, so "listed but not live" means it ended.
            let missing: Vec<Op> = self.node.read_local(|s| {
                let live: HashSet<(String, String)> = {
                    let r = self.registry.lock().expect("registry");
                    r.sessions.values().map(|x| (x.uid.clone(), x.client.clone())).collect()
                };
                let mut ops: Vec<Op> = live
                    .iter()
                    .filter(|(u, c)| {
                        s.presence.get(u).and_then(|r| r.gateways.get(c)) != Some(&self.node.id)
                    })
                    .map(|(uid, client)| Op::SessionLogin {
                        uid: uid.clone(),
                        sid: 0,
                        client: client.clone(),
                        gateway: self.node.id,
                    })
                    .collect();
                ops.extend(
                    s.presence
                        .gateway_sessions(self.node.id)
                        .into_iter()
                        .filter(|k| !live.contains(k))
                        .map(|(uid, client)| Op::SessionLogout {
                            uid,
                            client,
                            gateway: self.node.id,
                        }),
                );
                ops
            });
            if !missing.is_empty() {
                tracing::info!(
                    changes = missing.len(),
                    "reconciling the cluster's list of this gateway's sessions"
                );
                for chunk in missing.chunks(1000) {
                    if let Err(e) = self.node.write(chunk.to_vec()).await {
                        tracing::warn!(error = %e, "re-asserting sessions failed; will retry");
                        break;
                    }
                }
            }
        }
    }

    // ------------------------------------------------------- deliveries

    /// A fresh request number for a submission through this node, with its
    /// waiter registered (unregister with [`Gateway::forget`]).
    pub fn waiter(&self) -> (u64, Arc<Waiter>) {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let w = Arc::new(Waiter::default());
        self.waiters.lock().expect("waiters").insert(req, w.clone());
        (req, w)
    }

    pub fn forget(&self, req: u64) {
        self.waiters.lock().expect("waiters").remove(&req);
    }

    /// Records acknowledgements of submissions made through this node.
    pub fn delivered_here(&self, reports: &[(u64, String)]) {
        let w = self.waiters.lock().expect("waiters");
        for (req, uid) in reports {
            if let Some(w) = w.get(req) {
                w.delivered.lock().expect("delivered").insert(uid.clone());
                w.notify.notify_waiters();
            }
        }
    }

    /// Tells the submitting nodes that `uid` acknowledged these messages
    /// (best effort: a lost report only makes the answer "stored").
    /// Reports for another node queue for that node's reporter, which sends
    /// whatever has queued as one `Delivered` call (see [`reporter`]).
    pub fn report_delivered(&self, uid: &str, acked: &[herald_domain::messages::Origin]) {
        let mut by_node: HashMap<u64, Vec<(u64, String)>> = HashMap::new();
        for o in acked {
            by_node.entry(o.node).or_default().push((o.req, uid.to_owned()));
        }
        for (node, reports) in by_node {
            if node == self.node.id {
                self.delivered_here(&reports);
                continue;
            }
            let tx = {
                let mut r = self.reporters.lock().expect("reporters");
                r.entry(node)
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(REPORT_QUEUE);
                        tokio::spawn(reporter(self.node.clone(), node, rx));
                        tx
                    })
                    .clone()
            };
            if let Err(e) = tx.try_send(reports) {
                let n = match &e {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => {
                        r.len()
                    }
                };
                tracing::debug!(
                    node,
                    reports = n,
                    "delivery reports dropped: the queue to that node is full"
                );
            }
        }
    }

    /// Commits acknowledged ids of `uid` (deleting them from its inbox).
    pub async fn commit_acks(&self, uid: &str, ids: Vec<u64>) -> Result<(), ClusterError> {
        let op =
            Op::Msg(herald_domain::messages::MsgOp::Ack { uid: uid.to_owned(), ids, up_to: 0 });
        self.node.write(vec![op]).await.map(|_| ())
    }
}

/// Takes the first queued batch (waiting for it) and whatever else has
/// queued meanwhile, up to about `cap` items, in queue order; None once the
/// queue is closed and empty.
pub(crate) async fn drain_queued<T>(rx: &mut mpsc::Receiver<Vec<T>>, cap: usize) -> Option<Vec<T>> {
    let mut out = rx.recv().await?;
    while out.len() < cap {
        match rx.try_recv() {
            Ok(more) => out.extend(more),
            Err(_) => break,
        }
    }
    Some(out)
}

/// Sends delivery reports to node `peer`, one `Delivered` call at a time,
/// each carrying every report queued while the previous one was under way:
/// with many acks in flight, one call per round trip instead of one per
/// ack frame (docs/benchmarks.md, "after coalescing"). Reports go in the
/// order they were queued; a failed call is logged and its reports given
/// up, as a lost report only makes the sender's answer "stored".
async fn reporter(node: Arc<RaftNode>, peer: u64, mut rx: mpsc::Receiver<Reports>) {
    while let Some(reports) = drain_queued(&mut rx, MAX_REPORTS_PER_CALL).await {
        let n = reports.len();
        let sent = async {
            let mut c = peer::client(&node, peer).map_err(|e| e.to_string())?;
            let data = codec::encode(&DeliveredReport { reports }).map_err(|e| e.to_string())?;
            tokio::time::timeout(REPORT_TIMEOUT, c.delivered(RaftBytes { data }))
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|s| s.to_string())
        };
        if let Err(e) = sent.await {
            tracing::debug!(node = peer, reports = n, error = %e, "delivery report not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What queued while a call was under way goes out as one batch, in
    /// queue order, and the cap starts a new batch.
    #[tokio::test]
    async fn delivery_reports_coalesce_in_order_up_to_the_cap() {
        let (tx, mut rx) = mpsc::channel::<Vec<u64>>(16);
        for b in [vec![1, 2], vec![3], vec![4, 5, 6], vec![7]] {
            tx.try_send(b).unwrap();
        }
        assert_eq!(drain_queued(&mut rx, 100).await, Some(vec![1, 2, 3, 4, 5, 6, 7]));
        for b in [vec![1, 2], vec![3], vec![4, 5, 6], vec![7]] {
            tx.try_send(b).unwrap();
        }
        assert_eq!(drain_queued(&mut rx, 3).await, Some(vec![1, 2, 3]));
        assert_eq!(drain_queued(&mut rx, 3).await, Some(vec![4, 5, 6]));
        assert_eq!(drain_queued(&mut rx, 3).await, Some(vec![7]));
        drop(tx);
        assert_eq!(drain_queued(&mut rx, 3).await, None);
    }
}

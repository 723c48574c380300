//! One client session: the gRPC bidirectional stream `Gateway.Session`.
//!
//! Order of a session: Hello → token check (nothing else happens before it)
//! → registered for pushes → `SessionLogin` committed and applied here →
//! Welcome → stored messages in id order → new messages as the log applies
//! them. Acks delete (through Raft) and are reported to the submitting node;
//! anything unacknowledged when the session ends stays stored and comes
//! again next time. A session that is silent for the heartbeat timeout ends,
//! and its user goes offline on that client (unless another session of the
//! same user and client type is open on this node).

use herald_proto::codes::{self, Code};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use herald_proto::v1::{self as pb, client_frame, server_frame};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::queue::{OutQueue, PushQueue, SessionFrames};
use super::{Gateway, Push};
use herald_domain::messages::{Origin, StoredMsg};
use herald_domain::presence::{MAX_CLIENTS_PER_USER, MAX_CLIENT_BYTES, MAX_UID_BYTES};
use herald_domain::state::{Op, OpResult};

/// Messages sent to a session and not yet acknowledged: beyond this the
/// session waits for acks (flow control; bounds memory per session).
pub const WINDOW: usize = 256;
/// How long a new stream may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued towards one client (beyond it the session waits for the
/// client to read: its pushes queue in the dispatcher's bounded queue).
const OUT_QUEUE: usize = 64;
/// Ack batches queued for a session's committer (it coalesces them).
const ACK_QUEUE: usize = 16;
// Ids one Ack frame may name (shared with the client library).
use herald_proto::wire::messages::MAX_ACK_IDS;
/// Client type used when a Hello names none.
pub const DEFAULT_CLIENT: &str = "app";

/// Frames are boxed in the queue: a `ServerFrame` is ~150 bytes, a boxed
/// one 8, so a burst of queued frames grows the queue's buffer by little
/// (docs/benchmarks.md, "Where a session's memory goes").
pub type OutFrame = Result<Box<pb::ServerFrame>, Status>;
type Out = Arc<OutQueue<OutFrame>>;

fn frame(f: server_frame::Frame) -> OutFrame {
    Ok(Box::new(pb::ServerFrame { frame: Some(f) }))
}

/// Sends an error frame, then ends the stream with a gRPC status carrying
/// the same stable code.
async fn refuse(out: &Out, code: Code, message: String) {
    let s = crate::api::grpc_status(code.grpc, code.name, &message);
    out.send(frame(server_frame::Frame::Error(pb::SessionError {
        code: code.name.into(),
        message,
    })))
    .await;
    out.send(Err(s)).await;
}

pub fn delivery(m: &StoredMsg, stored: bool) -> pb::Delivery {
    pb::Delivery {
        id: m.id,
        from: m.from.clone(),
        kind: m.kind.as_str().into(),
        content_type: m.content_type.clone(),
        body: m.body.clone(),
        sent_at_ms: m.at_ms,
        stored,
        expires_at_ms: m.expires_at_ms,
        group: m.group.clone().unwrap_or_default(),
    }
}

/// The gRPC `herald.v1.Gateway` service.
pub struct GatewayGrpc {
    pub gw: Arc<Gateway>,
}

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayGrpc {
    type SessionStream =
        Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send + 'static>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let frames = open(self.gw.clone(), req.into_inner());
        Ok(Response::new(Box::pin(frames.map(|f| f.map(|b| *b)))))
    }

    async fn pick(
        &self,
        req: Request<pb::PickGatewayRequest>,
    ) -> Result<Response<pb::PickGatewayResponse>, Status> {
        let p = crate::api::messages::grpc::principal(&req)?;
        let mut r = req.into_inner();
        // A user asks for itself (the uid may be left out).
        p.bind(&mut r.uid).map_err(|e| e.to_grpc())?;
        Ok(Response::new(self.gw.load.pick(&self.gw.node, &r.uid, &r.zone)))
    }
}

/// A session over any stream of client frames (gRPC's, or a browser's
/// WebSocket frames converted: `api::watch_http`), as the stream of its
/// server frames, ending with an `Err` status when the session is refused
/// or cut. The session runs as that stream is polled (no task of its own);
/// dropping the stream ends it.
pub fn open<S>(gw: Arc<Gateway>, inbound: S) -> SessionFrames<OutFrame>
where
    S: Stream<Item = Result<pb::ClientFrame, Status>> + Unpin + Send + 'static,
{
    let out = OutQueue::new(OUT_QUEUE);
    SessionFrames::new(out.clone(), Box::pin(run(gw, inbound, out)))
}

/// A session in the gateway's registry, until it is dropped — however the
/// session ends: it returned, or the client went and its response stream
/// (with the session's future) was dropped. Then it unregisters the session
/// and, if the login was written and no other session of this user and
/// client type stays on this node, writes the logout, after the session's
/// acks in flight are committed. Unacknowledged messages stay stored.
struct Registered {
    gw: Arc<Gateway>,
    sid: u64,
    uid: String,
    client: String,
    /// The login may have been committed: a logout is owed. Set before the
    /// login's write, since a write queued or forwarded is not cancelled
    /// when the client goes and its future is dropped mid-await; a logout
    /// for a login that never committed changes nothing.
    online: bool,
    /// Why the session ended (for the log).
    end: &'static str,
    /// The ack committer, once the session has one.
    committer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let gw = self.gw.clone();
        let (sid, online, end) = (self.sid, self.online, self.end);
        let (uid, client) = (std::mem::take(&mut self.uid), std::mem::take(&mut self.client));
        let committer = self.committer.take();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // The runtime is going: the restart reset ends the session.
            gw.unregister(sid);
            return;
        };
        rt.spawn(async move {
            if let Some(c) = committer {
                let _ = c.await;
            }
            let last = gw.unregister(sid);
            tracing::info!(uid = %uid, client = %client, session = sid, reason = end, "session closed");
            if !(online && last) {
                return;
            }
            let op = Op::SessionLogout { uid, client, gateway: gw.node.id };
            for attempt in 0..5 {
                match gw.node.write(vec![op.clone()]).await {
                    Ok(_) => break,
                    Err(e) => {
                        // The reaper or the next restart reset covers a
                        // logout that never gets through.
                        tracing::warn!(attempt, error = %e, "session logout not written yet");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
}

struct Session {
    gw: Arc<Gateway>,
    uid: String,
    out: Out,
    /// Highest stored id sent (stored messages go out in id order).
    cursor: u64,
    /// Sent, not acknowledged: id → (origin, stored).
    inflight: BTreeMap<u64, (Origin, bool)>,
    /// The last [`fill`](Session::fill) was cut by the window, so stored
    /// messages may wait after the cursor: an ack (which makes room) must
    /// read the store again. When false, every stored message is either
    /// sent or not yet applied (and then its notice comes).
    behind: bool,
    /// The ack committer's queue, made with the first stored ack: an idle
    /// session keeps no task and no channel for it.
    acks: Option<mpsc::Sender<Vec<u64>>>,
    /// The registration (dropped last: it ends the session).
    reg: Registered,
}

impl Session {
    /// Sends stored messages after the cursor while the window has room.
    async fn fill(&mut self) {
        let room = WINDOW.saturating_sub(self.inflight.len());
        if room == 0 {
            self.behind = true;
            return;
        }
        let now = self.gw.node.clock().now_ms();
        let pending =
            self.gw.node.read_local(|s| s.msgs.pending(&self.uid, self.cursor, now, room));
        self.behind = pending.len() >= room;
        for m in pending {
            self.cursor = self.cursor.max(m.id);
            self.inflight.insert(m.id, (m.origin, true));
            self.send_msg(&m, true).await;
        }
    }

    async fn send_msg(&mut self, m: &StoredMsg, stored: bool) {
        self.gw.pushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.out.send(frame(server_frame::Frame::Message(delivery(m, stored)))).await
    }

    async fn on_push(&mut self, p: Push) {
        match p {
            // Stored ones are read back from the state in id order, so a
            // lost or reordered notice never leaves a gap. One at or below
            // the cursor went out with an earlier read (ids are given, and
            // inboxes filled, in apply order): a batch's 100 notices cost
            // one read, not 100.
            Push::Msg { msg, stored: true } if msg.id <= self.cursor => {}
            Push::Msg { stored: true, .. } | Push::Resync => self.fill().await,
            Push::Msg { msg, stored: false } => {
                if self.inflight.len() >= WINDOW || self.inflight.contains_key(&msg.id) {
                    // Online-only and the client is not keeping up: it is
                    // not delivered (the sender hears "dropped").
                    return;
                }
                self.inflight.insert(msg.id, (msg.origin, false));
                self.send_msg(&msg, false).await
            }
        }
    }

    async fn on_ack(&mut self, a: pb::Ack) -> Result<(), ()> {
        if a.ids.len() > MAX_ACK_IDS {
            refuse(
                &self.out,
                codes::TOO_MANY_IDS,
                format!("an ack names at most {MAX_ACK_IDS} ids"),
            )
            .await;
            return Err(());
        }
        // An id named twice (or also covered by `up_to`) is removed once:
        // the second `remove` finds nothing.
        let mut acked: Vec<u64> = self.inflight.range(..=a.up_to).map(|(id, _)| *id).collect();
        acked.extend_from_slice(&a.ids);
        let mut origins = Vec::with_capacity(acked.len());
        let mut stored = Vec::with_capacity(acked.len());
        for id in acked {
            if let Some((o, s)) = self.inflight.remove(&id) {
                origins.push(o);
                if s {
                    stored.push(id);
                }
            }
        }
        if !origins.is_empty() {
            self.gw.report_delivered(&self.uid, &origins);
        }
        if !stored.is_empty() {
            let reg = &mut self.reg;
            let tx = self.acks.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(ACK_QUEUE);
                reg.committer =
                    Some(tokio::spawn(ack_committer(self.gw.clone(), self.uid.clone(), rx)));
                tx
            });
            if tx.send(stored).await.is_err() {
                return Err(());
            }
        }
        // Room was made; the store is read again only when messages may
        // wait there (the window cut the last read).
        if self.behind {
            self.fill().await;
        }
        Ok(())
    }
}

/// Commits a session's acks one Raft write at a time, coalescing what
/// queued meanwhile. A failed commit leaves the messages stored: they come
/// again (at-least-once).
async fn ack_committer(gw: Arc<Gateway>, uid: String, mut rx: mpsc::Receiver<Vec<u64>>) {
    // No cap beyond the queue's: ACK_QUEUE frames of at most MAX_ACK_IDS
    // (+ WINDOW by `up_to`) ids each.
    while let Some(ids) = super::drain_queued(&mut rx, usize::MAX).await {
        if let Err(e) = gw.commit_acks(&uid, ids).await {
            tracing::warn!(uid = %uid, error = %e, "ack not committed; the messages stay stored and come again");
        }
    }
}

#[tracing::instrument(level = "info", skip_all, fields(uid = tracing::field::Empty, client = tracing::field::Empty, session = tracing::field::Empty))]
async fn run<S>(gw: Arc<Gateway>, mut inbound: S, out: Out)
where
    S: Stream<Item = Result<pb::ClientFrame, Status>> + Unpin,
{
    // 1.–2. The opening, boxed: its locals (the Hello, the token check, the
    // login's write) are freed once the session is open, so they are not
    // part of the session's future for its whole life (~1 KB of an idle
    // session, docs/benchmarks.md "Where a session's memory goes").
    let Some((mut s, push)) = Box::pin(opening(&gw, &mut inbound, &out)).await else {
        return;
    };

    // 3. Serve until the client goes, falls silent, or the node stops.
    let timeout = Duration::from_millis(gw.cfg.heartbeat_timeout_ms());
    let end: &'static str = 'serve: {
        let mut deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                // Frames first: hyper stops polling a session whose client
                // is not reading (no HTTP/2 send capacity), and when it
                // polls again, heartbeats that arrived meanwhile must
                // count before an expired deadline does.
                biased;
                f = inbound.next() => {
                    let f = match f {
                        Some(Ok(f)) => f,
                        Some(Err(_)) | None => break 'serve "client_gone",
                    };
                    deadline = tokio::time::Instant::now() + timeout;
                    let r = match f.frame {
                        Some(client_frame::Frame::Heartbeat(h)) => {
                            let now_ms = gw.node.clock().now_ms();
                            out.send(frame(server_frame::Frame::Heartbeat(pb::HeartbeatAck { seq: h.seq, now_ms }))).await;
                            Ok(())
                        }
                        // Boxed, as below: what an ack or a push awaits is
                        // not part of the session's future for its life.
                        Some(client_frame::Frame::Ack(a)) => Box::pin(s.on_ack(a)).await,
                        Some(client_frame::Frame::Hello(_)) | None => {
                            Box::pin(refuse(&out, codes::UNEXPECTED_FRAME, "Hello only once, first".into())).await;
                            Err(())
                        }
                    };
                    if r.is_err() {
                        break 'serve "client_gone";
                    }
                }
                p = push.recv() => Box::pin(s.on_push(p)).await,
                _ = tokio::time::sleep_until(deadline) => {
                    Box::pin(refuse(&out, codes::HEARTBEAT_TIMEOUT, format!("no heartbeat for {timeout:?}"))).await;
                    break 'serve "heartbeat_timeout";
                }
            }
        }
    };

    // 4. Offline (unless another session of this user and client is here),
    //    by the registration as it drops; unacknowledged messages stay
    //    stored.
    s.reg.end = end;
}

/// Steps 1 and 2 of a session: the Hello, its checks, registration and the
/// login through Raft, then the Welcome and the stored messages. The open
/// session and its push queue, or None once refused (the refusal is
/// queued).
async fn opening<S>(
    gw: &Arc<Gateway>,
    inbound: &mut S,
    out: &Out,
) -> Option<(Session, Arc<PushQueue>)>
where
    S: Stream<Item = Result<pb::ClientFrame, Status>> + Unpin,
{
    // 1. Hello, then the token check before anything else.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
        Ok(Some(Ok(pb::ClientFrame { frame: Some(client_frame::Frame::Hello(h)) }))) => h,
        Ok(Some(Ok(_))) => {
            return refused(out, codes::EXPECTED_HELLO, "the first frame must be Hello".into())
                .await
        }
        Ok(Some(Err(_))) | Ok(None) => return None,
        Err(_) => {
            return refused(out, codes::HELLO_TIMEOUT, format!("no Hello within {HELLO_TIMEOUT:?}"))
                .await
        }
    };
    let client =
        if hello.client.is_empty() { DEFAULT_CLIENT.to_string() } else { hello.client.clone() };
    let span = tracing::Span::current();
    span.record("uid", hello.uid.as_str());
    span.record("client", client.as_str());
    if hello.uid.is_empty() || hello.uid.len() > MAX_UID_BYTES || client.len() > MAX_CLIENT_BYTES {
        gw.sessions_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refused(
            out,
            codes::INVALID_HELLO,
            format!("uid must be 1..={MAX_UID_BYTES} bytes and client at most {MAX_CLIENT_BYTES}"),
        )
        .await;
    }
    let now_s = (crate::clock::wall_us().max(0) as u64) / 1_000_000;
    // Boxed (here and below, the awaits of the opening and the logout): a
    // future awaited inline is part of the session task's size for the
    // session's whole life; boxed, it is freed once answered.
    if let Err(e) = Box::pin(gw.auth.check(&hello.uid, &hello.token, &client, now_s)).await {
        gw.sessions_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(code = e.code().name, "session refused");
        return refused(out, e.code(), e.to_string()).await;
    }
    // After the token check: only the user itself learns it is at the cap.
    if !gw.node.read_local(|st| st.presence.admits_client(&hello.uid, &client)) {
        gw.sessions_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refused(
            out,
            codes::TOO_MANY_CLIENTS,
            format!("{} is online on {MAX_CLIENTS_PER_USER} client types already", hello.uid),
        )
        .await;
    }
    if gw.session_count() >= gw.cfg.max_sessions {
        gw.sessions_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refused(
            out,
            codes::OVERLOADED,
            format!(
                "this gateway holds its maximum of {} sessions; ask /v1/gateway for another",
                gw.cfg.max_sessions
            ),
        )
        .await;
    }
    if !gw.wait_ready(Duration::from_secs(10)).await {
        return refused(
            out,
            codes::NOT_READY,
            "this gateway has not joined the cluster yet".into(),
        )
        .await;
    }

    // 2. Registered first (pushes queue up), then online through Raft.
    let uid = hello.uid.clone();
    let push = Arc::new(PushQueue::default());
    let sid = gw.register(&uid, &client, push.clone());
    span.record("session", sid);
    let mut reg = Registered {
        gw: gw.clone(),
        sid,
        uid: uid.clone(),
        client: client.clone(),
        online: false,
        end: "client_gone",
        committer: None,
    };
    let login = Op::SessionLogin {
        uid: uid.clone(),
        sid: hello.sid,
        client: client.clone(),
        gateway: gw.node.id,
    };
    // The sid is the user's own: a Hello naming a sid another user holds
    // is refused (it would move that sid to this user). Checked in apply,
    // atomically with the login, so the opening reads nothing from the
    // leader: a gateway in a remote zone pays one write, not a read-index
    // round trip as well (issue 16).
    reg.online = true;
    let index = match Box::pin(gw.node.write(vec![login])).await {
        Ok((_, r)) if matches!(r.first(), Some(OpResult::SidTaken)) => {
            // Refused in apply: nothing to log out.
            reg.online = false;
            reg.end = "sid_taken";
            gw.sessions_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(sid = hello.sid, "session refused: the sid is another user's");
            return refused(
                out,
                codes::SID_TAKEN,
                format!("sid {} belongs to another user", hello.sid),
            )
            .await;
        }
        Ok((index, _)) => index,
        Err(e) => {
            reg.end = "login_failed";
            return refused(out, e.code(), e.to_string()).await;
        }
    };
    let _ = Box::pin(gw.node.wait_applied(index)).await;
    gw.sessions_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let queued = gw.node.read_local(|s| s.msgs.queued(&uid) as u64);
    let welcome = pb::Welcome {
        session: format!("{}-{sid}", gw.node.id),
        node: gw.node.id,
        heartbeat_ms: gw.cfg.heartbeat_ms,
        heartbeat_timeout_ms: gw.cfg.heartbeat_timeout_ms(),
        queued,
    };
    tracing::info!(queued, "session open");
    let mut s = Session {
        gw: gw.clone(),
        uid: uid.clone(),
        out: out.clone(),
        cursor: 0,
        inflight: BTreeMap::new(),
        behind: false,
        acks: None,
        reg,
    };
    out.send(frame(server_frame::Frame::Welcome(welcome))).await;
    s.fill().await;
    Some((s, push))
}

/// [`refuse`], for a step that answers nothing else.
async fn refused<T>(out: &Out, code: Code, message: String) -> Option<T> {
    refuse(out, code, message).await;
    None
}

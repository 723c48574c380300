//! A client session (MISSION M3, M5, M7): ask the cluster for a gateway,
//! open a session there with a token, heartbeat, receive messages, and
//! acknowledge them; when the gateway fails, ask again and reconnect —
//! stored messages not yet acknowledged come again (the application may see
//! such an id twice: delivery is at-least-once), and ones the application
//! already acknowledged are acknowledged again without being handed over.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::session::{Session, SessionConfig, SessionEvent};
//! let cfg = SessionConfig::new(vec!["127.0.0.1:7103".into()], "u1", "TOKEN");
//! let mut s = Session::connect(cfg).await?;
//! while let Some(ev) = s.recv().await {
//!     if let SessionEvent::Message(m) = ev {
//!         println!("{}: {:?}", m.id, String::from_utf8_lossy(&m.body));
//!         s.ack(vec![m.id]).await;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use herald_proto::codes::{self, Code};
use herald_proto::v1::gateway_client::GatewayClient;
use herald_proto::v1::{self as pb, client_frame, server_frame};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::addr::normalize_addr;
use crate::client::{endpoint, ConnectOptions};
use crate::error::ClientError;

/// Error codes after which reconnecting cannot help.
const FATAL_CODES: &[Code] = &[
    codes::BAD_TOKEN,
    codes::TOKEN_EXPIRED,
    codes::WRONG_USER,
    codes::AUTH_DENIED,
    codes::AUTH_NOT_CONFIGURED,
    codes::INVALID_HELLO,
    codes::EXPECTED_HELLO,
];
/// Acknowledged ids remembered to drop redeliveries: enough for a
/// reconnect's redelivery of the server's window (256) many times over.
const SEEN_IDS: usize = 16_384;
/// Events buffered for the application.
const EVENT_QUEUE: usize = 1024;
/// Connect timeout to a gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
// Ids one Ack frame names at most (the gateway refuses more).
use herald_proto::wire::messages::MAX_ACK_IDS;

/// How to open sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Nodes to ask for a gateway (any member works).
    pub seeds: Vec<String>,
    pub uid: String,
    pub token: String,
    /// Client type (presence is per client type); default "app".
    pub client: String,
    /// The user's public service number, 0 = none/keep.
    pub sid: u64,
    /// Give up reconnecting after this long without a session (None: never).
    pub give_up_after: Option<Duration>,
    /// TLS: with a CA, gateways the cluster names are reached over https.
    pub tls: ConnectOptions,
}

impl SessionConfig {
    pub fn new(seeds: Vec<String>, uid: impl Into<String>, token: impl Into<String>) -> Self {
        SessionConfig {
            seeds,
            uid: uid.into(),
            token: token.into(),
            client: "app".into(),
            sid: 0,
            give_up_after: None,
            tls: ConnectOptions::default(),
        }
    }
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub from: String,
    /// direct | group | broadcast
    pub kind: String,
    pub content_type: String,
    #[serde(with = "body_text")]
    pub body: Vec<u8>,
    pub sent_at_ms: u64,
    /// Stored for the user until acknowledged (else online-only).
    pub stored: bool,
    #[serde(default)]
    pub expires_at_ms: u64,
    #[serde(default)]
    pub group: String,
    /// The gateway node it came through.
    pub node: u64,
}

/// Bodies in JSON (`herald connect`) as text; bytes that are not UTF-8
/// show as U+FFFD.
mod body_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// What a session tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session is open on `node` (first time or after a reconnect);
    /// `queued` stored messages wait.
    Connected {
        node: u64,
        session: String,
        queued: u64,
    },
    Message(Message),
    /// The session broke; a reconnect follows unless the error is fatal
    /// (then this is the last event).
    Disconnected {
        code: String,
        message: String,
        fatal: bool,
    },
}

enum Ctl {
    Ack(Vec<u64>),
}

/// A session that reconnects by itself. Dropping it ends the session.
pub struct Session {
    /// Events that came while `connect` waited for the first session.
    early: VecDeque<SessionEvent>,
    events: mpsc::Receiver<SessionEvent>,
    ctl: mpsc::Sender<Ctl>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Opens a session; fails when the first attempt is refused for good
    /// (a bad token) or no gateway can be reached within `give_up_after`.
    /// After it returns, failures only show as events and reconnects.
    pub async fn connect(cfg: SessionConfig) -> Result<Session, ClientError> {
        if cfg.seeds.is_empty() {
            return Err(ClientError::InvalidArgument("no seed nodes".into()));
        }
        let (ev_tx, mut ev_rx) = mpsc::channel(EVENT_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(run(cfg, ev_tx, ctl_rx));
        // Wait for the first outcome: connected, or a fatal refusal.
        let mut early = VecDeque::new();
        loop {
            match ev_rx.recv().await {
                Some(e @ SessionEvent::Connected { .. }) => {
                    early.push_back(e);
                    break;
                }
                Some(SessionEvent::Disconnected { code, message, fatal: true }) => {
                    return Err(ClientError::Server { code, message });
                }
                Some(e) => early.push_back(e),
                None => {
                    return Err(ClientError::Server {
                        code: "unavailable".into(),
                        message: "no gateway could be reached".into(),
                    })
                }
            }
        }
        Ok(Session { early, events: ev_rx, ctl: ctl_tx, task })
    }

    /// The next event; None once the session has ended for good.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        if let Some(e) = self.early.pop_front() {
            return Some(e);
        }
        self.events.recv().await
    }

    /// Acknowledges messages (deleted from the store once committed).
    pub async fn ack(&self, ids: Vec<u64>) {
        let _ = self.ctl.send(Ctl::Ack(ids)).await;
    }
}

async fn open_channel(addr: &str, tls: &ConnectOptions) -> Result<Channel, ClientError> {
    // Gateways are named by host:port; with a CA they speak TLS.
    let addr = if tls.ca_pem.is_some() && !addr.contains("://") {
        format!("https://{addr}")
    } else {
        addr.to_string()
    };
    let uri = normalize_addr(&addr)?;
    let ep = endpoint(&addr, tls)?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    match tokio::time::timeout(CONNECT_TIMEOUT, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(ClientError::connect(&uri, &e)),
        Err(_) => Err(ClientError::Connect { addr: uri, message: "timed out".into() }),
    }
}

/// Asks the seeds (in turn, starting at `start`) for the best gateway;
/// returns the addresses to try, best first.
async fn gateways(cfg: &SessionConfig, start: usize, avoid: Option<&str>) -> Vec<String> {
    for i in 0..cfg.seeds.len() {
        let seed = &cfg.seeds[(start + i) % cfg.seeds.len()];
        let Ok(ch) = open_channel(seed, &cfg.tls).await else { continue };
        // The pick is the user's own: asked with its session token.
        let Ok(cred) = crate::credential::Credential::user_token(&cfg.uid, &cfg.token) else {
            return Vec::new();
        };
        let mut c = GatewayClient::with_interceptor(ch, cred);
        let pick = c.pick(pb::PickGatewayRequest {
            uid: cfg.uid.clone(),
            client: cfg.client.clone(),
            zone: String::new(),
        });
        let Ok(Ok(r)) = tokio::time::timeout(CONNECT_TIMEOUT, pick).await else { continue };
        let r = r.into_inner();
        let mut out: Vec<String> = Vec::new();
        if let Some(b) = r.best {
            out.push(b.publish);
        }
        let mut rest: Vec<pb::GatewayInfo> =
            r.candidates.into_iter().filter(|g| g.healthy).collect();
        rest.sort_by(|a, b| a.load.partial_cmp(&b.load).unwrap_or(std::cmp::Ordering::Equal));
        out.extend(rest.into_iter().map(|g| g.publish));
        out.dedup();
        if let Some(a) = avoid {
            // The one that just failed goes last, not away: it may be back.
            out.sort_by_key(|x| x == a);
        }
        out.push(seed.clone());
        return out;
    }
    cfg.seeds.clone()
}

/// Remembers recently acknowledged ids.
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

enum Ended {
    /// Try again (after a pause).
    Retry {
        code: String,
        message: String,
    },
    Fatal {
        code: String,
        message: String,
    },
    /// The application dropped the session.
    Closed,
}

async fn run(cfg: SessionConfig, ev: mpsc::Sender<SessionEvent>, mut ctl: mpsc::Receiver<Ctl>) {
    let mut seen = Seen { set: HashSet::new(), order: VecDeque::new() };
    let mut backoff = Duration::from_millis(100);
    let mut last_ok = tokio::time::Instant::now();
    let mut start = 0usize;
    let mut avoid: Option<String> = None;
    loop {
        let addrs = gateways(&cfg, start, avoid.as_deref()).await;
        start += 1;
        let mut ended =
            Ended::Retry { code: "unavailable".into(), message: "no gateway reachable".into() };
        for addr in addrs {
            match one_session(&cfg, &addr, &ev, &mut ctl, &mut seen).await {
                Ok(e) => {
                    ended = e;
                    avoid = Some(addr);
                    backoff = Duration::from_millis(100);
                    last_ok = tokio::time::Instant::now();
                    break;
                }
                Err(e) => {
                    // Could not open a session here: try the next one.
                    ended = e;
                    if matches!(ended, Ended::Fatal { .. }) {
                        break;
                    }
                }
            }
        }
        match ended {
            Ended::Closed => return,
            Ended::Fatal { code, message } => {
                let _ = ev.send(SessionEvent::Disconnected { code, message, fatal: true }).await;
                return;
            }
            Ended::Retry { code, message } => {
                if let Some(limit) = cfg.give_up_after {
                    if last_ok.elapsed() > limit {
                        let message = format!("no session for {limit:?}: {message}");
                        let _ = ev
                            .send(SessionEvent::Disconnected { code, message, fatal: true })
                            .await;
                        return;
                    }
                }
                if ev
                    .send(SessionEvent::Disconnected { code, message, fatal: false })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn status_end(s: tonic::Status) -> Ended {
    let e = ClientError::from(s);
    let code = e.code().to_string();
    if FATAL_CODES.iter().any(|c| *c == code.as_str()) {
        Ended::Fatal { code, message: e.message() }
    } else {
        Ended::Retry { code, message: e.message() }
    }
}

/// The acks to send now: `first` and every ack the application queued
/// meanwhile (until [`MAX_ACK_IDS`] are gathered), as few frames as the
/// gateway's per-frame limit allows. An application that acks message by
/// message then costs the gateway one frame (one report, one commit) per
/// burst instead of per message.
fn coalesce_acks(first: Vec<u64>, ctl: &mut mpsc::Receiver<Ctl>) -> Vec<Vec<u64>> {
    let mut ids = first;
    while ids.len() < MAX_ACK_IDS {
        match ctl.try_recv() {
            Ok(Ctl::Ack(more)) => ids.extend(more),
            Err(_) => break,
        }
    }
    if ids.len() <= MAX_ACK_IDS {
        return vec![ids];
    }
    ids.chunks(MAX_ACK_IDS).map(<[u64]>::to_vec).collect()
}

/// One session on one gateway. Err: it never opened (try another
/// gateway); Ok: it opened and later ended.
async fn one_session(
    cfg: &SessionConfig,
    addr: &str,
    ev: &mpsc::Sender<SessionEvent>,
    ctl: &mut mpsc::Receiver<Ctl>,
    seen: &mut Seen,
) -> Result<Ended, Ended> {
    let retry = |e: ClientError| Ended::Retry { code: e.code().to_string(), message: e.message() };
    let ch = open_channel(addr, &cfg.tls).await.map_err(retry)?;
    let mut client = GatewayClient::new(ch).max_decoding_message_size(4 << 20);
    let (out_tx, out_rx) = mpsc::channel::<pb::ClientFrame>(64);
    let hello = pb::Hello {
        uid: cfg.uid.clone(),
        token: cfg.token.clone(),
        client: cfg.client.clone(),
        sid: cfg.sid,
    };
    out_tx
        .send(pb::ClientFrame { frame: Some(client_frame::Frame::Hello(hello)) })
        .await
        .map_err(|_| Ended::Closed)?;
    let mut inbound = match tokio::time::timeout(
        Duration::from_secs(15),
        client.session(ReceiverStream::new(out_rx)),
    )
    .await
    {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Err(status_end(s)),
        Err(_) => {
            return Err(Ended::Retry {
                code: "timeout".into(),
                message: format!("{addr}: no answer"),
            })
        }
    };
    // Welcome or refusal.
    let welcome = loop {
        match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
            Ok(Ok(Some(pb::ServerFrame { frame: Some(server_frame::Frame::Welcome(w)) }))) => {
                break w
            }
            Ok(Ok(Some(pb::ServerFrame { frame: Some(server_frame::Frame::Error(e)) }))) => {
                let code = e.code.clone();
                return Err(if FATAL_CODES.iter().any(|c| *c == code.as_str()) {
                    Ended::Fatal { code, message: e.message }
                } else {
                    Ended::Retry { code, message: e.message }
                });
            }
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => {
                return Err(Ended::Retry {
                    code: "closed".into(),
                    message: format!("{addr} closed the session"),
                })
            }
            Ok(Err(s)) => return Err(status_end(s)),
            Err(_) => {
                return Err(Ended::Retry {
                    code: "timeout".into(),
                    message: format!("{addr}: no welcome"),
                })
            }
        }
    };
    let node = welcome.node;
    if ev
        .send(SessionEvent::Connected {
            node,
            session: welcome.session.clone(),
            queued: welcome.queued,
        })
        .await
        .is_err()
    {
        return Ok(Ended::Closed);
    }
    // Heartbeat a little more often than asked, so one late tick is fine.
    let hb_every = Duration::from_millis((welcome.heartbeat_ms * 2 / 3).max(50));
    let mut hb = tokio::time::interval(hb_every);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            f = inbound.message() => match f {
                Ok(Some(pb::ServerFrame { frame: Some(server_frame::Frame::Message(d)) })) => {
                    if !seen.set.contains(&d.id) {
                        let m = Message {
                            id: d.id, from: d.from, kind: d.kind, content_type: d.content_type, body: d.body,
                            sent_at_ms: d.sent_at_ms, stored: d.stored, expires_at_ms: d.expires_at_ms, group: d.group, node,
                        };
                        if ev.send(SessionEvent::Message(m)).await.is_err() {
                            return Ok(Ended::Closed);
                        }
                    } else {
                        // Acknowledged before (the ack was lost with the
                        // previous gateway): acknowledge again, quietly.
                        let f = pb::ClientFrame { frame: Some(client_frame::Frame::Ack(pb::Ack { ids: vec![d.id], up_to: 0 })) };
                        if out_tx.send(f).await.is_err() {
                            return Ok(Ended::Retry { code: "closed".into(), message: "session closed".into() });
                        }
                    }
                }
                Ok(Some(pb::ServerFrame { frame: Some(server_frame::Frame::Error(e)) })) => {
                    return Ok(Ended::Retry { code: e.code, message: e.message });
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Ended::Retry { code: "closed".into(), message: format!("gateway {node} closed the session") }),
                Err(s) => return Ok(status_end(s)),
            },
            c = ctl.recv() => match c {
                Some(Ctl::Ack(ids)) => {
                    for ids in coalesce_acks(ids, ctl) {
                        for id in &ids {
                            seen.insert(*id);
                        }
                        let f = pb::ClientFrame { frame: Some(client_frame::Frame::Ack(pb::Ack { ids, up_to: 0 })) };
                        if out_tx.send(f).await.is_err() {
                            return Ok(Ended::Retry { code: "closed".into(), message: "session closed".into() });
                        }
                    }
                }
                None => return Ok(Ended::Closed),
            },
            _ = hb.tick() => {
                seq += 1;
                let f = pb::ClientFrame { frame: Some(client_frame::Frame::Heartbeat(pb::Heartbeat { seq })) };
                if out_tx.send(f).await.is_err() {
                    return Ok(Ended::Retry { code: "closed".into(), message: "session closed".into() });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The duplicate filter remembers ids up to its bound and forgets the
    /// oldest beyond it.
    #[test]
    fn session_seen_ids_bounded() {
        let mut s = Seen { set: HashSet::new(), order: VecDeque::new() };
        assert!(s.insert(1));
        assert!(!s.insert(1));
        for i in 2..=(SEEN_IDS as u64 + 1) {
            assert!(s.insert(i));
        }
        assert_eq!(s.set.len(), SEEN_IDS);
        assert!(s.insert(1), "the oldest id was forgotten");
    }

    /// Acks queued while the session task was busy go out as one frame, in
    /// order; more than a frame may name are split at the gateway's limit.
    #[tokio::test]
    async fn session_acks_coalesce_within_the_frame_limit() {
        let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
        for id in 2..=5u64 {
            tx.send(Ctl::Ack(vec![id])).await.unwrap();
        }
        assert_eq!(coalesce_acks(vec![1], &mut rx), vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(coalesce_acks(vec![9], &mut rx), vec![vec![9]], "nothing queued");
        tx.send(Ctl::Ack((1..=MAX_ACK_IDS as u64).collect())).await.unwrap();
        tx.send(Ctl::Ack(vec![7])).await.unwrap();
        let frames = coalesce_acks(vec![0], &mut rx);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), MAX_ACK_IDS);
        assert_eq!(frames[1], vec![MAX_ACK_IDS as u64]);
        let all: Vec<u64> = frames.concat();
        assert_eq!(all, (0..=MAX_ACK_IDS as u64).collect::<Vec<_>>());
        assert_eq!(
            coalesce_acks(vec![8], &mut rx),
            vec![vec![8, 7]],
            "the rest waits for the next"
        );
    }
}

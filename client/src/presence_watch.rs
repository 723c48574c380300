//! Watching presence (issue 15): [`PresenceWatch`] follows a set of users
//! through the cluster's change feed (gRPC `Presence.Watch`) and resumes by
//! itself: when its node fails or the stream breaks, it reopens the watch
//! on the next seed with `since_revision` = the last revision it handed
//! over, so the application sees every change exactly once, in revision
//! order, across node failures — or an explicit [`WatchEvent::Reset`]
//! followed by a fresh snapshot when the nodes no longer hold the changes
//! since then.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::presence_watch::{PresenceWatch, WatchConfig, WatchEvent};
//! use herald_client::Credential;
//! let cfg = WatchConfig::new(vec!["127.0.0.1:7103".into()], Credential::api_key("hk_...")?);
//! let mut w = PresenceWatch::open(cfg, vec!["u1".into()], vec![], None).await?;
//! while let Some(ev) = w.recv().await {
//!     if let WatchEvent::Change { revision, users } = ev {
//!         println!("{revision}: {} changed", users.len());
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use herald_proto::codes::{self, Code};
use herald_proto::v1 as pb;
use herald_proto::v1::presence_client::PresenceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use crate::client::{endpoint, ConnectOptions, CONNECT_TIMEOUT, MAX_MESSAGE_BYTES};
use crate::credential::Credential;
use crate::error::ClientError;
use crate::types::UserPresence;

/// Events buffered for the application; the watch stops reading the node
/// while they wait (the node coalesces what piles up).
const EVENT_QUEUE: usize = 256;
/// Changes of the watched set not yet sent.
const CONTROL_QUEUE: usize = 16;
/// First wait before reopening a broken watch, doubled up to
/// [`MAX_BACKOFF`] while reopening fails.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reopen attempts: a restarted node is back in
/// seconds; more would only delay the catch-up.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Codes after which reopening cannot help.
const FATAL_CODES: &[Code] = &[
    codes::BAD_KEY,
    codes::FORBIDDEN,
    codes::MISSING_CREDENTIAL,
    codes::BAD_TOKEN,
    codes::TOKEN_EXPIRED,
    codes::TOO_MANY_WATCH_IDS,
    codes::INVALID_UID,
    codes::RESPONSE_TOO_LARGE,
];

/// Where and how to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Nodes to watch through, tried in turn (any member serves a watch).
    pub seeds: Vec<String>,
    pub credential: Credential,
    pub tls: ConnectOptions,
    /// Give up after this long without an open watch (None: never).
    pub give_up_after: Option<Duration>,
}

impl WatchConfig {
    pub fn new(seeds: Vec<String>, credential: Credential) -> Self {
        WatchConfig { seeds, credential, tls: ConnectOptions::default(), give_up_after: None }
    }
}

/// What a watch hands the application.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// The watched users at `revision` (with `added`: only the ids just
    /// added); `unknown` ids have no record yet. `more`: a page of the
    /// snapshot of every user ([`PresenceWatch::open_all`]), more pages at
    /// the same revision follow.
    Snapshot {
        revision: u64,
        users: Vec<UserPresence>,
        unknown: Vec<String>,
        unknown_sids: Vec<u64>,
        added: bool,
        more: bool,
    },
    /// Watched users changed at `revision` (after a slow read: their latest
    /// records as of `revision`).
    Change { revision: u64, users: Vec<UserPresence> },
    /// Nothing changed for the watched users up to `revision`.
    Progress { revision: u64 },
    /// The changes since the last revision are gone from the node's window:
    /// drop what you hold; a full snapshot follows.
    Reset { revision: u64 },
    /// A change of the watched set was refused (`code`).
    Refused { code: String, message: String },
    /// The watch broke on `node` and is reopened from `since` (no event is
    /// lost or repeated beyond it).
    Reconnecting { node: String, since: Option<u64>, error: String },
    /// The watch stopped for good (a fatal code, or `give_up_after`).
    Stopped { code: String, message: String },
}

impl WatchEvent {
    fn from_pb(f: pb::WatchFrame) -> Option<WatchEvent> {
        use pb::watch_frame::Kind;
        let users = || f.users.iter().cloned().map(UserPresence::from).collect::<Vec<_>>();
        Some(match Kind::try_from(f.kind).ok()? {
            Kind::Snapshot => WatchEvent::Snapshot {
                revision: f.revision,
                users: users(),
                unknown: f.unknown.clone(),
                unknown_sids: f.unknown_sids.clone(),
                added: f.added,
                more: f.more,
            },
            Kind::Change => WatchEvent::Change { revision: f.revision, users: users() },
            Kind::Progress => WatchEvent::Progress { revision: f.revision },
            Kind::Reset => WatchEvent::Reset { revision: f.revision },
            Kind::Error => WatchEvent::Refused { code: f.code, message: f.message },
            Kind::Unspecified => return None,
        })
    }

    /// The revision to resume after once this event is handed over.
    pub fn resume_point(&self) -> Option<u64> {
        match self {
            // A page of a snapshot is not a resume point: the rest of it is.
            WatchEvent::Snapshot { more: true, .. } => None,
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Change { revision, .. }
            | WatchEvent::Progress { revision } => Some(*revision),
            _ => None,
        }
    }
}

enum Control {
    Add(Vec<String>, Vec<u64>),
    Remove(Vec<String>, Vec<u64>),
}

/// An open watch; also a `Stream` of [`WatchEvent`]s.
pub struct PresenceWatch {
    events: mpsc::Receiver<WatchEvent>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl Drop for PresenceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PresenceWatch {
    /// Opens a watch of `uids` and `sids` (resuming after `since` if
    /// given). The first open is tried on every seed; its refusal for a
    /// reason reopening cannot fix (a bad key, too many ids) is returned.
    pub async fn open(
        cfg: WatchConfig,
        uids: Vec<String>,
        sids: Vec<u64>,
        since: Option<u64>,
    ) -> Result<PresenceWatch, ClientError> {
        Self::start(Watching {
            cfg,
            uids: uids.into_iter().collect(),
            sids: sids.into_iter().collect(),
            all: false,
            since,
            seed: 0,
        })
        .await
    }

    /// Opens a watch of every user (the key must hold the `admin` scope;
    /// `forbidden` otherwise), resuming after `since` if given. Its
    /// snapshot comes as pages (`Snapshot { more: true, .. }` but the
    /// last), then every change of any user.
    pub async fn open_all(
        cfg: WatchConfig,
        since: Option<u64>,
    ) -> Result<PresenceWatch, ClientError> {
        Self::start(Watching {
            cfg,
            uids: BTreeSet::new(),
            sids: BTreeSet::new(),
            all: true,
            since,
            seed: 0,
        })
        .await
    }

    async fn start(mut state: Watching) -> Result<PresenceWatch, ClientError> {
        if state.cfg.seeds.is_empty() {
            return Err(ClientError::InvalidArgument("a watch needs at least one node".into()));
        }
        let (mut last, mut opened) = (None, None);
        for _ in 0..state.cfg.seeds.len() {
            match state.open_once().await {
                Ok(s) => {
                    opened = Some(s);
                    break;
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    last = Some(e);
                    state.seed = (state.seed + 1) % state.cfg.seeds.len();
                }
            }
        }
        let Some(first) = opened else {
            return Err(last.expect("a seed was tried"));
        };
        let (etx, events) = mpsc::channel(EVENT_QUEUE);
        let (control, crx) = mpsc::channel(CONTROL_QUEUE);
        let task = tokio::spawn(state.run(first, etx, crx));
        Ok(PresenceWatch { events, control, task })
    }

    /// The next event; None once the watch stopped.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// Adds ids to the watch (a snapshot of them follows, `added`).
    pub async fn add(&self, uids: Vec<String>, sids: Vec<u64>) {
        let _ = self.control.send(Control::Add(uids, sids)).await;
    }

    /// Removes ids from the watch.
    pub async fn remove(&self, uids: Vec<String>, sids: Vec<u64>) {
        let _ = self.control.send(Control::Remove(uids, sids)).await;
    }
}

impl tokio_stream::Stream for PresenceWatch {
    type Item = WatchEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.events.poll_recv(cx)
    }
}

fn is_fatal(e: &ClientError) -> bool {
    FATAL_CODES.iter().any(|c| c.name == e.code())
}

/// An open stream: its frames and where its later requests go.
struct Open {
    frames: tonic::Streaming<pb::WatchFrame>,
    requests: mpsc::Sender<pb::WatchRequest>,
    node: String,
}

/// What the watch task keeps across reconnects.
struct Watching {
    cfg: WatchConfig,
    uids: BTreeSet<String>,
    sids: BTreeSet<u64>,
    /// Every user.
    all: bool,
    /// The last resume point handed to the application.
    since: Option<u64>,
    seed: usize,
}

impl Watching {
    async fn open_once(&self) -> Result<Open, ClientError> {
        let addr = &self.cfg.seeds[self.seed];
        let ep = endpoint(addr, &self.cfg.tls)?;
        let ch = match tokio::time::timeout(CONNECT_TIMEOUT, ep.connect()).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(ClientError::connect(addr, &e)),
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: addr.clone(),
                    message: format!("timed out after {CONNECT_TIMEOUT:?}"),
                })
            }
        };
        let mut c = PresenceClient::with_interceptor(ch, self.cfg.credential.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (requests, rx) = mpsc::channel(CONTROL_QUEUE);
        let first = pb::WatchRequest {
            uids: self.uids.iter().cloned().collect(),
            sids: self.sids.iter().copied().collect(),
            since_revision: self.since,
            all: self.all,
            ..Default::default()
        };
        requests.send(first).await.expect("the receiver is here");
        let frames = c
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(ClientError::from)?
            .into_inner();
        Ok(Open { frames, requests, node: addr.clone() })
    }

    async fn run(
        mut self,
        mut open: Open,
        events: mpsc::Sender<WatchEvent>,
        mut control: mpsc::Receiver<Control>,
    ) {
        loop {
            let error = self.follow(&mut open, &events, &mut control).await;
            let Some(error) = error else { return };
            let node = open.node.clone();
            let ev = WatchEvent::Reconnecting { node, since: self.since, error: error.to_string() };
            if events.send(ev).await.is_err() {
                return;
            }
            match self.reopen(&events).await {
                Some(o) => open = o,
                None => return,
            }
        }
    }

    /// Hands frames over until the stream breaks (Some: why) or the
    /// application went away (None).
    async fn follow(
        &mut self,
        open: &mut Open,
        events: &mpsc::Sender<WatchEvent>,
        control: &mut mpsc::Receiver<Control>,
    ) -> Option<ClientError> {
        loop {
            tokio::select! {
                f = open.frames.next() => {
                    let f = match f {
                        Some(Ok(f)) => f,
                        Some(Err(s)) => return Some(s.into()),
                        None => return Some(ClientError::Transport("the watch stream ended".into())),
                    };
                    let Some(ev) = WatchEvent::from_pb(f) else { continue };
                    let point = ev.resume_point();
                    if events.send(ev).await.is_err() {
                        return None;
                    }
                    // Moved only once the application holds the event.
                    if point.is_some() {
                        self.since = point;
                    }
                }
                c = control.recv() => {
                    let req = match c {
                        None => return None,
                        Some(Control::Add(u, s)) => {
                            self.uids.extend(u.iter().cloned());
                            self.sids.extend(s.iter().copied());
                            pb::WatchRequest { uids: u, sids: s, ..Default::default() }
                        }
                        Some(Control::Remove(u, s)) => {
                            for x in &u { self.uids.remove(x); }
                            for x in &s { self.sids.remove(x); }
                            pb::WatchRequest { remove_uids: u, remove_sids: s, ..Default::default() }
                        }
                    };
                    // A broken stream shows on the frames side.
                    let _ = open.requests.send(req).await;
                }
            }
        }
    }

    /// Reopens on the next seeds with backoff; None when it gave up (a
    /// `Stopped` event was sent) or the application went away.
    async fn reopen(&mut self, events: &mpsc::Sender<WatchEvent>) -> Option<Open> {
        let start = tokio::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.seed = (self.seed + 1) % self.cfg.seeds.len();
            match self.open_once().await {
                Ok(o) => return Some(o),
                Err(e) => {
                    let over = self.cfg.give_up_after.is_some_and(|g| start.elapsed() > g);
                    if is_fatal(&e) || over {
                        let code = e.code().to_string();
                        let _ =
                            events.send(WatchEvent::Stopped { code, message: e.to_string() }).await;
                        return None;
                    }
                    if events.is_closed() {
                        return None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

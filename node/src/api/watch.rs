//! Watchers of the presence change feed (issue 15), whatever the transport
//! (gRPC `Presence.Watch`, SSE, WebSocket: `api::watch_http`).
//!
//! A watcher is one task with an entry in the feed's index
//! ([`crate::feed::Subscription`]): apply pushes each change to a watched
//! user into its inbox and wakes it; no other change wakes it.
//!
//! 1. Start: a read barrier (a follower serves nothing older than what the
//!    cluster committed before the call), then either a snapshot of the
//!    watched users at revision R (the batch query's records, unknown ids
//!    listed; cursor = R), or, with `since_revision` S, the window's
//!    changes after S, or `reset` + snapshot when S is older than the
//!    window; the inbox is emptied under the same read lock, so it holds
//!    exactly the changes after that point.
//! 2. Then every change to a watched user after the cursor, in revision
//!    order, one frame per revision. A watcher more than
//!    [`COALESCE_AFTER`] changes behind (a slow reader: the frames wait
//!    while it does not read) gets them folded in its inbox into one
//!    frame, the latest record per user; one whose oldest pending change
//!    left the window gets `reset` + snapshot. A slow reader costs at
//!    most [`FRAME_QUEUE`] frames and its bounded inbox.
//! 3. A progress frame with the cursor when nothing was sent for
//!    `<watch progress-ms>`; the cursor then is the feed's published
//!    revision (every change up to it is in the inbox), so a resume from
//!    it is exact.
//! 4. A watch of every user (`all`, a key with the `admin` scope) wants
//!    every record; its snapshot is a view of the state taken under the
//!    read lock (shared chunks, no copy) and sent in pages of at most
//!    `<limits max-response-bytes>` each, all at the view's revision,
//!    `more` on every page but the last.
//! 5. The watched set grows ([`Control::Add`]: the pending changes of the
//!    old set, then a snapshot of the added ids, in one read of the state)
//!    and shrinks ([`Control::Remove`]) on an open stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use herald_domain::presence::{Record, MAX_UID_BYTES};
use herald_proto::apikey::Scope;
use herald_proto::codes::{self, Code};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::access::Principal;
use super::{size, Api, ApiError};
use crate::feed::{Feed, Inbox, Pull, Subscription, WatcherSlot};

/// Changes a watcher may be behind and still get one frame per revision;
/// further behind, the pending ones are coalesced to the latest per user.
/// 64 frames is a burst a live reader drains in milliseconds, while the
/// coalesced frame is at most one record per watched user.
pub const COALESCE_AFTER: usize = crate::feed::INBOX_ENTRIES;

/// Frames handed to the transport and not yet written: the rest wait in the
/// shared window, so a slow reader holds at most this many per watcher.
pub const FRAME_QUEUE: usize = 4;

/// Control frames of one stream not yet taken by its watcher.
pub const CONTROL_QUEUE: usize = 16;

/// Why a `reset` was sent.
pub const RESET_WINDOW: &str = "changes after the resume point are no longer in this node's window";

/// What a watch starts with.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub uids: Vec<String>,
    pub sids: Vec<u64>,
    /// Resume after this revision (exact changes, or reset + snapshot).
    pub since: Option<u64>,
    /// Every user (the caller's key must hold `admin`).
    pub all: bool,
}

/// A change of the watched set on an open stream.
#[derive(Debug, Clone)]
pub enum Control {
    Add { uids: Vec<String>, sids: Vec<u64> },
    Remove { uids: Vec<String>, sids: Vec<u64> },
}

/// One frame of a watch stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The watched users at `revision` (all of them, or with `added` only
    /// the ids just added); unknown ids listed. `more`: a page of a watch
    /// of every user, more pages of this snapshot follow.
    Snapshot {
        revision: u64,
        users: Vec<Record>,
        unknown: Vec<String>,
        unknown_sids: Vec<u64>,
        added: bool,
        more: bool,
    },
    /// Watched users changed at `revision` (coalesced: their latest records
    /// as of `revision`, which covers every change since the last frame).
    Change { revision: u64, users: Vec<Record> },
    /// Nothing changed for the watched users up to `revision`.
    Progress { revision: u64 },
    /// The stream cannot continue change by change (`revision` is the
    /// window's floor); a full snapshot follows.
    Reset { revision: u64, reason: &'static str },
    /// A control frame was refused (the stream goes on unchanged).
    Error { code: Code, message: String },
}

impl Frame {
    /// The revision a client resumes from after this frame (None: it does
    /// not move the resume point).
    pub fn resume_point(&self) -> Option<u64> {
        match self {
            Frame::Snapshot { more: true, .. } => None,
            Frame::Snapshot { revision, .. }
            | Frame::Change { revision, .. }
            | Frame::Progress { revision } => Some(*revision),
            Frame::Reset { .. } | Frame::Error { .. } => None,
        }
    }
}

/// An open watch: its frames, and where to send control frames.
pub struct Watch {
    pub frames: mpsc::Receiver<Frame>,
    pub control: mpsc::Sender<Control>,
}

/// The watched ids.
#[derive(Debug, Default)]
struct Watched {
    uids: HashSet<String>,
    sids: HashSet<u64>,
    /// Every user.
    all: bool,
}

impl Watched {
    fn wants(&self, r: &Record) -> bool {
        self.all || self.uids.contains(&r.uid) || (r.sid != 0 && self.sids.contains(&r.sid))
    }
    fn len(&self) -> usize {
        self.uids.len() + self.sids.len()
    }
}

fn check_uids(uids: &[String]) -> Result<(), ApiError> {
    if let Some(u) = uids.iter().find(|u| u.is_empty() || u.len() > MAX_UID_BYTES) {
        return Err(ApiError::new(
            codes::INVALID_UID,
            format!("uid of {} bytes: a uid is 1..={MAX_UID_BYTES} bytes", u.len()),
        ));
    }
    Ok(())
}

fn too_many(n: usize, max: usize) -> ApiError {
    ApiError::new(codes::TOO_MANY_WATCH_IDS, format!("{n} ids; at most {max} per watcher"))
}

impl Api {
    /// Opens a watch (see the module docs). Refused before anything is
    /// sent: no ids or too many, a bad uid, no watcher place on this node, no
    /// read barrier (no leader), a `since` ahead of the cluster, or a first
    /// snapshot over `<limits max-response-bytes>` (a watch of every user
    /// pages its snapshot instead, and needs `caller`'s key to hold
    /// `admin`: `forbidden` otherwise).
    pub async fn watch(
        self: &Arc<Self>,
        req: WatchRequest,
        caller: &Principal,
    ) -> Result<Watch, ApiError> {
        let r = self.watch_inner(req, caller).await;
        if let Err(e) = &r {
            self.count_error(e);
        }
        r
    }

    async fn watch_inner(
        self: &Arc<Self>,
        req: WatchRequest,
        caller: &Principal,
    ) -> Result<Watch, ApiError> {
        if req.all && !self.access.holds(caller, Scope::Admin) {
            return Err(ApiError::new(
                codes::FORBIDDEN,
                "watching every user takes an API key with the admin scope",
            ));
        }
        let feed = self.node.feed();
        let max = feed.config.max_ids_per_watcher;
        check_uids(&req.uids)?;
        let watched = Watched {
            uids: req.uids.iter().cloned().collect(),
            sids: req.sids.iter().copied().collect(),
            all: req.all,
        };
        if watched.len() > max {
            return Err(too_many(watched.len(), max));
        }
        if watched.len() == 0 && !watched.all {
            return Err(ApiError::new(codes::NO_WATCH_IDS, "a watch needs a uid or a sid"));
        }
        let slot = feed.join().ok_or_else(|| {
            ApiError::new(
                codes::TOO_MANY_WATCHERS,
                format!("this node has {} watchers open, its limit", feed.config.max_watchers),
            )
        })?;
        self.node.read_barrier().await?;
        let max_bytes = self.limits.max_response_bytes;
        let (head, bytes) = self.node.read_local(|st| {
            (st.applied(), size::query_answer_bytes(&st.presence, &req.uids, &req.sids))
        });
        // A watch of every user pages its snapshot (each page bounded).
        if bytes > max_bytes && !req.all {
            return Err(size::too_large(bytes, max_bytes));
        }
        if let Some(s) = req.since {
            if s > head {
                return Err(ApiError::new(
                    codes::INVALID_SINCE,
                    format!("since_revision {s} is ahead of the cluster's {head}"),
                ));
            }
        }
        let (tx, frames) = mpsc::channel(FRAME_QUEUE);
        let (control, ctl) = mpsc::channel(CONTROL_QUEUE);
        let sub = feed.subscribe(&req.uids, &req.sids, req.all);
        let w = Watcher {
            api: self.clone(),
            feed,
            watched,
            sub,
            tx,
            last_sent: Instant::now(),
            _slot: slot,
        };
        tokio::spawn(w.run(req, ctl));
        Ok(Watch { frames, control })
    }
}

/// The stream went away.
struct Closed;

struct Watcher {
    api: Arc<Api>,
    feed: Arc<Feed>,
    watched: Watched,
    /// This watcher's entry in the feed's index, and its inbox.
    sub: Subscription,
    tx: mpsc::Sender<Frame>,
    last_sent: Instant,
    _slot: WatcherSlot,
}

/// What the inbox holds for `watched` after `cursor`: its changes (those
/// of users still watched), or `Gone` when its oldest pending change left
/// the window (or the inbox was marked gone); the head is the published
/// revision read before the take, so every change up to it is in hand.
fn drain(feed: &Feed, inbox: &Inbox, watched: &Watched, cursor: u64) -> Pull {
    let head = feed.published();
    let t = inbox.take();
    let floor = feed.floor();
    if t.gone || t.oldest.is_some_and(|o| o <= floor) {
        return Pull::Gone { floor, head };
    }
    let mut changes = Vec::new();
    let mut last = cursor;
    for (revision, users) in t.changes.into_iter().chain(t.folded) {
        last = last.max(revision);
        let users: Vec<Record> = users.into_iter().filter(|r| watched.wants(r)).collect();
        if !users.is_empty() {
            changes.push((revision, users));
        }
    }
    Pull::Changes { changes, more: false, head: head.max(last) }
}

impl Watcher {
    async fn send(&mut self, f: Frame) -> Result<(), Closed> {
        self.tx.send(f).await.map_err(|_| Closed)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// A snapshot of ids at the state's applied index (= the feed's head).
    fn snapshot(&self, uids: &[String], sids: &[u64], added: bool) -> (u64, Frame) {
        self.api.node.read_local(|st| {
            // The snapshot covers what the inbox held.
            self.sub.inbox.clear();
            let q = st.presence.query(uids, sids);
            let rev = q.revision;
            let f = Frame::Snapshot {
                revision: rev,
                users: q.users,
                unknown: q.unknown,
                unknown_sids: q.unknown_sids,
                added,
                more: false,
            };
            (rev, f)
        })
    }

    /// Sends the snapshot of every user: a view of the state at its
    /// applied index (taken under the read lock without copying a record),
    /// then pages of it in uid order, each at most `<limits
    /// max-response-bytes>` (at least one record), `more` on all but the
    /// last. Answers the view's revision.
    async fn snapshot_all(&mut self) -> Result<u64, Closed> {
        let (rev, view) = self.api.node.read_local(|st| {
            self.sub.inbox.clear();
            (st.presence.applied(), st.presence.snapshot())
        });
        let max = self.api.limits.max_response_bytes.saturating_sub(size::ANSWER_OVERHEAD);
        let mut it = view.records_by_uid().peekable();
        let (mut page, mut bytes) = (Vec::new(), 0usize);
        while let Some(r) = it.next() {
            bytes += size::record_bytes(r);
            page.push(r.to_record());
            let full = it.peek().is_some_and(|n| bytes + size::record_bytes(*n) > max);
            if full {
                let users = std::mem::take(&mut page);
                bytes = 0;
                self.send(Frame::Snapshot {
                    revision: rev,
                    users,
                    unknown: vec![],
                    unknown_sids: vec![],
                    added: false,
                    more: true,
                })
                .await?;
            }
        }
        let last = Frame::Snapshot {
            revision: rev,
            users: page,
            unknown: vec![],
            unknown_sids: vec![],
            added: false,
            more: false,
        };
        self.send(last).await?;
        Ok(rev)
    }

    /// Sends the snapshot of the watched users (every user: in pages);
    /// answers its revision, the new cursor.
    async fn send_snapshot(&mut self) -> Result<u64, Closed> {
        if self.watched.all {
            return self.snapshot_all().await;
        }
        let uids: Vec<String> = self.watched.uids.iter().cloned().collect();
        let sids: Vec<u64> = self.watched.sids.iter().copied().collect();
        let (rev, f) = self.snapshot(&uids, &sids, false);
        self.send(f).await?;
        Ok(rev)
    }

    /// Sends `reset` and a full snapshot; answers the new cursor.
    async fn reset(&mut self, floor: u64) -> Result<u64, Closed> {
        self.api.metrics.watch_resets.inc();
        tracing::debug!(floor, ids = self.watched.len(), all = self.watched.all, "watch reset");
        self.send(Frame::Reset { revision: floor, reason: RESET_WINDOW }).await?;
        self.send_snapshot().await
    }

    /// The window's changes after `cursor` (a resume): one frame per
    /// revision, or coalesced when more than [`COALESCE_AFTER`] are pending.
    fn pending(&self, cursor: u64) -> Pull {
        let wants = |r: &Record| self.watched.wants(r);
        match self.feed.pull(cursor, COALESCE_AFTER, wants) {
            Pull::Changes { more: true, .. } => self.feed.pull_coalesced(cursor, wants),
            p => p,
        }
    }

    /// Sends what a pull found; answers the new cursor.
    async fn deliver(&mut self, cursor: u64, p: Pull) -> Result<u64, Closed> {
        match p {
            Pull::Gone { floor, .. } => self.reset(floor).await,
            Pull::Changes { changes, head, .. } => {
                for (revision, users) in changes {
                    self.send(Frame::Change { revision, users }).await?;
                }
                Ok(head.max(cursor))
            }
        }
    }

    async fn run(mut self, req: WatchRequest, mut ctl: mpsc::Receiver<Control>) {
        let _ = self.run_inner(req, &mut ctl).await;
    }

    async fn run_inner(
        &mut self,
        req: WatchRequest,
        ctl: &mut mpsc::Receiver<Control>,
    ) -> Result<(), Closed> {
        let progress = Duration::from_millis(self.feed.config.progress_ms);
        let mut cursor = match req.since {
            // The window after `s` up to the head, and from there the
            // inbox: one read of the state, so nothing falls between.
            Some(s) => {
                let p = self.api.node.read_local(|_| {
                    self.sub.inbox.clear();
                    self.pending(s)
                });
                self.deliver(s, p).await?
            }
            None => self.send_snapshot().await?,
        };
        let inbox = self.sub.inbox.clone();
        let mut control_open = true;
        loop {
            let p = drain(&self.feed, &inbox, &self.watched, cursor);
            cursor = self.deliver(cursor, p).await?;
            tokio::select! {
                _ = self.tx.closed() => return Err(Closed),
                c = ctl.recv(), if control_open => match c {
                    None => control_open = false,
                    Some(c) => cursor = self.control(cursor, c).await?,
                },
                // Only a change to a watched user wakes this watcher.
                _ = inbox.wake.notified() => {}
                _ = tokio::time::sleep_until(self.last_sent + progress) => {
                    let p = drain(&self.feed, &inbox, &self.watched, cursor);
                    let quiet = matches!(&p, Pull::Changes { changes, .. } if changes.is_empty());
                    cursor = self.deliver(cursor, p).await?;
                    if quiet {
                        self.send(Frame::Progress { revision: cursor }).await?;
                    }
                }
            }
        }
    }

    /// Applies a control frame; answers the new cursor.
    async fn control(&mut self, cursor: u64, c: Control) -> Result<u64, Closed> {
        match c {
            Control::Remove { uids, sids } => {
                self.sub.remove(&uids, &sids);
                for u in &uids {
                    self.watched.uids.remove(u);
                }
                for s in &sids {
                    self.watched.sids.remove(s);
                }
                Ok(cursor)
            }
            Control::Add { uids, sids } => {
                if let Err(e) = check_uids(&uids) {
                    let (code, message) = refusal(e);
                    self.send(Frame::Error { code, message }).await?;
                    return Ok(cursor);
                }
                let uids: Vec<String> =
                    uids.into_iter().filter(|u| !self.watched.uids.contains(u)).collect();
                let sids: Vec<u64> =
                    sids.into_iter().filter(|s| !self.watched.sids.contains(s)).collect();
                let max = self.feed.config.max_ids_per_watcher;
                let n = self.watched.len() + uids.len() + sids.len();
                if n > max {
                    let (code, message) = refusal(too_many(n, max));
                    self.send(Frame::Error { code, message }).await?;
                    return Ok(cursor);
                }
                // One read of the state: the old set's pending changes up
                // to R, the added ids at R, and the index following them
                // from R on (nothing is published while the lock is held).
                let (feed, watched, sub) = (&self.feed, &self.watched, &mut self.sub);
                let (p, (rev, f)) = self.api.node.read_local(|st| {
                    let p = drain(feed, &sub.inbox, watched, cursor);
                    sub.add(&uids, &sids);
                    let q = st.presence.query(&uids, &sids);
                    let f = Frame::Snapshot {
                        revision: q.revision,
                        users: q.users,
                        unknown: q.unknown,
                        unknown_sids: q.unknown_sids,
                        added: true,
                        more: false,
                    };
                    (p, (q.revision, f))
                });
                let gone = matches!(p, Pull::Gone { .. });
                self.watched.uids.extend(uids);
                self.watched.sids.extend(sids);
                if gone {
                    // The reset's snapshot covers the added ids too.
                    return self.deliver(cursor, p).await;
                }
                let cursor = self.deliver(cursor, p).await?;
                self.send(f).await?;
                Ok(rev.max(cursor))
            }
        }
    }
}

/// The code and message of a refusal sent as an error frame.
fn refusal(e: ApiError) -> (Code, String) {
    let code = codes::named(e.code()).unwrap_or(codes::INTERNAL);
    (code, e.to_string())
}

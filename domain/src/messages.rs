//! The message domain (MISSION M1–M4): submissions, the per-recipient
//! offline store, acknowledgements, recipient groups, offline-storage
//! subscriptions and broadcasts with a lifetime.
//!
//! Like [`crate::presence`], nothing here does I/O or reads a clock: every
//! operation carries the cluster time the leader stamped, and ids come from a
//! counter in the state, so every replica applying the same log ends equal.
//!
//! Storage model:
//! - a message body is stored once ([`StoredMsg`]), with a reference count of
//!   the inboxes that hold its id;
//! - an inbox is the ordered set of message ids waiting for one user;
//! - a broadcast with a lifetime is stored once and remembers which users
//!   acknowledged it (so each user gets it once); it is removed when it
//!   expires;
//! - idempotency keys remember the first answer for a window of cluster time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;
/// Most members of one recipient group: a group send writes one inbox entry
/// per member in one log entry, so this bounds the entry.
pub const MAX_GROUP_MEMBERS: usize = 100_000;
/// Most idempotency keys remembered at once, whatever the window: bounds the
/// memory an application that never reuses keys can take (the oldest go
/// first).
pub const MAX_IDEMPOTENCY_KEYS: usize = 1_000_000;

/// Where a submission entered the cluster: the node and its request number,
/// so that gateways can tell that node when a session acknowledged it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub node: u64,
    pub req: u64,
}

/// What kind of addressing a message had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Direct,
    Group,
    Broadcast,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Group => "group",
            Kind::Broadcast => "broadcast",
        }
    }
}

/// A message as stored (once) and as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMsg {
    pub id: u64,
    pub from: String,
    pub kind: Kind,
    pub group: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Cluster time of the submission.
    pub at_ms: u64,
    /// Broadcasts with a lifetime: when they expire; 0 otherwise.
    pub expires_at_ms: u64,
    pub origin: Origin,
    /// Inboxes holding this id (broadcasts: 0, they live in `bcasts`).
    pub refs: u32,
}

/// A submission as written to the log. Recipients are resolved at apply
/// (a group's members as of that point in the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOp {
    pub idempotency_key: String,
    pub from: String,
    pub to: Vec<String>,
    pub group: Option<String>,
    pub broadcast: bool,
    /// Lifetime; 0 = none.
    pub ttl_ms: u64,
    pub content_type: String,
    pub body: Vec<u8>,
    pub origin: Origin,
    /// The per-user quota, stamped by the submitting node so that every
    /// replica decides the same.
    pub quota: u32,
    /// How long idempotency keys are remembered, stamped likewise.
    pub idempotency_window_ms: u64,
}

/// Operations on the message state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgOp {
    Send(SendOp),
    /// A session acknowledged messages: by id, and every id <= `up_to`.
    Ack {
        uid: String,
        ids: Vec<u64>,
        up_to: u64,
    },
    /// Subscribes (true) or unsubscribes a user from offline storage.
    SetOffline {
        uid: String,
        enabled: bool,
    },
    /// Replaces a recipient group; no members deletes it.
    SetGroup {
        name: String,
        members: Vec<String>,
    },
}

/// What happened to one recipient at apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stored {
    /// In the user's inbox until acknowledged.
    Stored,
    /// Not stored: the user is not subscribed to offline storage.
    NotSubscribed,
    /// Not stored: the user's inbox is full (the quota).
    QuotaExceeded,
}

/// The answer to a [`SendOp`] (also what a retry with the same key gets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    pub id: u64,
    pub duplicate: bool,
    pub kind: Kind,
    /// Direct and group sends: per recipient, in request order, each once.
    pub outcomes: Vec<(String, Stored)>,
    /// Broadcast with a lifetime: stored until then; 0 otherwise.
    pub expires_at_ms: u64,
    /// Where the first submission came from (a retry may come elsewhere).
    pub origin: Origin,
    pub at_ms: u64,
}

/// Why a submission was refused at apply (nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SendError {
    #[error("no recipient group named {0:?}")]
    UnknownGroup(String),
    #[error("the message has no recipients")]
    NoRecipients,
}

impl SendError {
    /// Every code [`code`](Self::code) can answer (the node's error catalog
    /// lists each).
    pub const CODES: &'static [&'static str] = &["unknown_group", "no_recipients"];

    pub fn code(&self) -> &'static str {
        match self {
            SendError::UnknownGroup(_) => Self::CODES[0],
            SendError::NoRecipients => Self::CODES[1],
        }
    }
}

/// What applying one message operation answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgResult {
    Sent(Result<SendResult, SendError>),
    Acked { removed: u32 },
    Done,
}

/// Told to the node's gateways after apply, so sessions push at once.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A directed message: recipients and whether it was stored for each.
    Message { msg: Arc<StoredMsg>, to: Arc<Vec<(String, Stored)>> },
    /// A broadcast (stored when it has a lifetime): every session.
    Broadcast { msg: Arc<StoredMsg> },
}

/// A broadcast with a lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bcast {
    pub expires_at_ms: u64,
    /// Users that acknowledged it: they do not get it again.
    pub acked: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IdemEntry {
    /// Cluster time after which the key is forgotten.
    expires_at_ms: u64,
    result: SendResult,
}

/// A key of the persisted form: one sled key (and one snapshot item) each.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Meta,
    Msg(u64),
    Inbox(String),
    Idem(String, String),
    NoOffline(String),
    Group(String),
    Bcast(u64),
}

impl Key {
    /// The sled key: `M` + a tag + the key's bytes (ids big-endian so that
    /// scans come back in id order).
    pub fn bytes(&self) -> Vec<u8> {
        let mut k = vec![b'M'];
        match self {
            Key::Meta => k.push(b'0'),
            Key::Msg(id) => {
                k.push(b'm');
                k.extend_from_slice(&id.to_be_bytes());
            }
            Key::Inbox(uid) => {
                k.push(b'i');
                k.extend_from_slice(uid.as_bytes());
            }
            Key::Idem(from, key) => {
                k.push(b'k');
                k.extend_from_slice(&(from.len() as u32).to_be_bytes());
                k.extend_from_slice(from.as_bytes());
                k.extend_from_slice(key.as_bytes());
            }
            Key::NoOffline(uid) => {
                k.push(b'o');
                k.extend_from_slice(uid.as_bytes());
            }
            Key::Group(name) => {
                k.push(b'g');
                k.extend_from_slice(name.as_bytes());
            }
            Key::Bcast(id) => {
                k.push(b'b');
                k.extend_from_slice(&id.to_be_bytes());
            }
        }
        k
    }
}

/// One persisted item: the value of a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Meta { next_id: u64 },
    Msg(StoredMsg),
    Inbox(String, Vec<u64>),
    Idem { from: String, key: String, expires_at_ms: u64, result: SendResult },
    NoOffline(String),
    Group(String, Vec<String>),
    Bcast(u64, Bcast),
}

impl Item {
    pub fn key(&self) -> Key {
        match self {
            Item::Meta { .. } => Key::Meta,
            Item::Msg(m) => Key::Msg(m.id),
            Item::Inbox(u, _) => Key::Inbox(u.clone()),
            Item::Idem { from, key, .. } => Key::Idem(from.clone(), key.clone()),
            Item::NoOffline(u) => Key::NoOffline(u.clone()),
            Item::Group(n, _) => Key::Group(n.clone()),
            Item::Bcast(id, _) => Key::Bcast(*id),
        }
    }
}

/// All message data. Deterministic: see module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgState {
    next_id: u64,
    /// Shared with notices and sessions: a delivery never copies a body.
    msgs: HashMap<u64, Arc<StoredMsg>>,
    inbox: HashMap<String, BTreeSet<u64>>,
    idem: HashMap<(String, String), IdemEntry>,
    /// Idempotency keys by expiry time.
    idem_order: BTreeSet<(u64, String, String)>,
    no_offline: BTreeSet<String>,
    groups: BTreeMap<String, Vec<String>>,
    bcasts: BTreeMap<u64, Bcast>,
    /// (expires_at_ms, id) of every broadcast, for expiry (derived).
    bcast_expiry: BTreeSet<(u64, u64)>,
}

impl Default for MsgState {
    fn default() -> Self {
        MsgState {
            next_id: 1,
            msgs: HashMap::new(),
            inbox: HashMap::new(),
            idem: HashMap::new(),
            idem_order: BTreeSet::new(),
            no_offline: BTreeSet::new(),
            groups: BTreeMap::new(),
            bcasts: BTreeMap::new(),
            bcast_expiry: BTreeSet::new(),
        }
    }
}

impl MsgState {
    /// Rebuilds the state from persisted items (start-up, snapshot install).
    pub fn from_items(items: impl IntoIterator<Item = Item>) -> Self {
        let mut s = MsgState::default();
        for it in items {
            match it {
                Item::Meta { next_id } => s.next_id = next_id,
                Item::Msg(m) => {
                    s.msgs.insert(m.id, Arc::new(m));
                }
                Item::Inbox(u, ids) => {
                    s.inbox.insert(u, ids.into_iter().collect());
                }
                Item::Idem { from, key, expires_at_ms, result } => {
                    s.idem_order.insert((expires_at_ms, from.clone(), key.clone()));
                    s.idem.insert((from, key), IdemEntry { expires_at_ms, result });
                }
                Item::NoOffline(u) => {
                    s.no_offline.insert(u);
                }
                Item::Group(n, m) => {
                    s.groups.insert(n, m);
                }
                Item::Bcast(id, b) => {
                    s.bcast_expiry.insert((b.expires_at_ms, id));
                    s.bcasts.insert(id, b);
                }
            }
        }
        s
    }

    /// Every item (a copy), for snapshots, in no particular order: one pass
    /// over the maps under the state lock; the snapshot writer sorts by key
    /// after the lock is released.
    pub fn items(&self) -> Vec<Item> {
        let mut out = Vec::with_capacity(
            1 + self.msgs.len()
                + self.inbox.len()
                + self.idem.len()
                + self.no_offline.len()
                + self.groups.len()
                + self.bcasts.len(),
        );
        out.push(Item::Meta { next_id: self.next_id });
        out.extend(self.msgs.values().map(|m| Item::Msg(StoredMsg::clone(m))));
        out.extend(
            self.inbox.iter().map(|(u, ids)| Item::Inbox(u.clone(), ids.iter().copied().collect())),
        );
        out.extend(self.idem.iter().map(|((from, key), e)| Item::Idem {
            from: from.clone(),
            key: key.clone(),
            expires_at_ms: e.expires_at_ms,
            result: e.result.clone(),
        }));
        out.extend(self.no_offline.iter().map(|u| Item::NoOffline(u.clone())));
        out.extend(self.groups.iter().map(|(n, m)| Item::Group(n.clone(), m.clone())));
        out.extend(self.bcasts.iter().map(|(id, b)| Item::Bcast(*id, b.clone())));
        out
    }

    /// Applies one operation at cluster time `at_ms`; pushes what sessions
    /// should be told into `notices`.
    pub fn apply(&mut self, op: &MsgOp, at_ms: u64, notices: &mut Vec<Notice>) -> MsgResult {
        self.expire(at_ms);
        match op {
            MsgOp::Send(s) => MsgResult::Sent(self.send(s, at_ms, notices)),
            MsgOp::Ack { uid, ids, up_to } => {
                MsgResult::Acked { removed: self.ack(uid, ids, *up_to, at_ms) }
            }
            MsgOp::SetOffline { uid, enabled } => {
                if *enabled {
                    self.no_offline.remove(uid);
                } else {
                    self.no_offline.insert(uid.clone());
                }
                MsgResult::Done
            }
            MsgOp::SetGroup { name, members } => {
                if members.is_empty() {
                    self.groups.remove(name);
                } else {
                    let mut seen = BTreeSet::new();
                    let m: Vec<String> =
                        members.iter().filter(|u| seen.insert(u.as_str())).cloned().collect();
                    self.groups.insert(name.clone(), m);
                }
                MsgResult::Done
            }
        }
    }

    /// Drops idempotency keys past their window (and the oldest beyond
    /// [`MAX_IDEMPOTENCY_KEYS`]) and expired broadcasts.
    fn expire(&mut self, at_ms: u64) {
        while let Some((exp, _, _)) = self.idem_order.first() {
            if *exp > at_ms && self.idem.len() <= MAX_IDEMPOTENCY_KEYS {
                break;
            }
            let (_, from, key) = self.idem_order.pop_first().expect("non-empty");
            self.idem.remove(&(from.clone(), key.clone()));
        }
        while let Some(&(exp, id)) = self.bcast_expiry.first() {
            if exp > at_ms {
                break;
            }
            self.bcast_expiry.pop_first();
            self.bcasts.remove(&id);
            self.msgs.remove(&id);
        }
    }

    fn send(
        &mut self,
        s: &SendOp,
        at_ms: u64,
        notices: &mut Vec<Notice>,
    ) -> Result<SendResult, SendError> {
        let ikey = (s.from.clone(), s.idempotency_key.clone());
        if let Some(e) = self.idem.get(&ikey) {
            let mut r = e.result.clone();
            r.duplicate = true;
            return Ok(r);
        }
        let (kind, recipients): (Kind, Vec<String>) = if s.broadcast {
            (Kind::Broadcast, Vec::new())
        } else if let Some(g) = &s.group {
            let members = self.groups.get(g).ok_or_else(|| SendError::UnknownGroup(g.clone()))?;
            (Kind::Group, members.clone())
        } else {
            let mut seen = BTreeSet::new();
            let to: Vec<String> =
                s.to.iter().filter(|u| seen.insert(u.as_str())).cloned().collect();
            (if to.len() == 1 { Kind::Direct } else { Kind::Group }, to)
        };
        if kind != Kind::Broadcast && recipients.is_empty() {
            return Err(SendError::NoRecipients);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = StoredMsg {
            id,
            from: s.from.clone(),
            kind,
            group: s.group.clone(),
            content_type: s.content_type.clone(),
            body: s.body.clone(),
            at_ms,
            expires_at_ms: 0,
            origin: s.origin,
            refs: 0,
        };
        let mut outcomes = Vec::with_capacity(recipients.len());
        let mut expires = 0;
        if kind == Kind::Broadcast {
            if s.ttl_ms > 0 {
                msg.expires_at_ms = at_ms.saturating_add(s.ttl_ms);
                self.bcasts
                    .insert(id, Bcast { expires_at_ms: msg.expires_at_ms, acked: BTreeSet::new() });
                self.bcast_expiry.insert((msg.expires_at_ms, id));
            }
            let msg = Arc::new(msg);
            if msg.expires_at_ms > 0 {
                self.msgs.insert(id, msg.clone());
            }
            expires = msg.expires_at_ms;
            notices.push(Notice::Broadcast { msg });
        } else {
            for uid in recipients {
                let outcome = if self.no_offline.contains(&uid) {
                    Stored::NotSubscribed
                } else {
                    let inbox = self.inbox.entry(uid.clone()).or_default();
                    if inbox.len() >= s.quota as usize {
                        Stored::QuotaExceeded
                    } else {
                        inbox.insert(id);
                        msg.refs += 1;
                        Stored::Stored
                    }
                };
                outcomes.push((uid, outcome));
            }
            // An inbox entry created only to find the quota full is removed.
            for (uid, o) in &outcomes {
                if *o == Stored::QuotaExceeded && self.inbox.get(uid).is_some_and(|i| i.is_empty())
                {
                    self.inbox.remove(uid);
                }
            }
            let msg = Arc::new(msg);
            if msg.refs > 0 {
                self.msgs.insert(id, msg.clone());
            }
            notices.push(Notice::Message { msg, to: Arc::new(outcomes.clone()) });
        }
        let result = SendResult {
            id,
            duplicate: false,
            kind,
            outcomes,
            expires_at_ms: expires,
            origin: s.origin,
            at_ms,
        };
        let expires_at_ms = at_ms.saturating_add(s.idempotency_window_ms);
        self.idem_order.insert((expires_at_ms, ikey.0.clone(), ikey.1.clone()));
        self.idem.insert(ikey, IdemEntry { expires_at_ms, result: result.clone() });
        if self.idem.len() > MAX_IDEMPOTENCY_KEYS {
            self.expire(at_ms);
        }
        Ok(result)
    }

    /// Removes acknowledged ids from the user's inbox (deleting bodies no
    /// inbox holds any more) and marks acknowledged broadcasts.
    fn ack(&mut self, uid: &str, ids: &[u64], up_to: u64, at_ms: u64) -> u32 {
        let mut removed = 0;
        if let Some(inbox) = self.inbox.get_mut(uid) {
            let gone: BTreeSet<u64> = inbox
                .range(..=up_to)
                .copied()
                .chain(ids.iter().copied().filter(|id| inbox.contains(id)))
                .collect();
            for id in gone {
                inbox.remove(&id);
                removed += 1;
                if let Some(m) = self.msgs.get_mut(&id) {
                    // Copies the body only while a session still holds it.
                    let m = Arc::make_mut(m);
                    m.refs = m.refs.saturating_sub(1);
                    if m.refs == 0 && m.kind != Kind::Broadcast {
                        self.msgs.remove(&id);
                    }
                }
            }
            if inbox.is_empty() {
                self.inbox.remove(uid);
            }
            if removed > 0 {}
        }
        let named: BTreeSet<u64> = self
            .bcasts
            .range(..=up_to)
            .map(|(id, _)| *id)
            .chain(ids.iter().copied().filter(|id| self.bcasts.contains_key(id)))
            .collect();
        for id in named {
            let b = self.bcasts.get_mut(&id).expect("named from bcasts");
            if b.expires_at_ms > at_ms && b.acked.insert(uid.to_owned()) {
                removed += 1;
            }
        }
        removed
    }

    // ------------------------------------------------------------ reads

    /// What waits for `uid`: stored messages and live broadcasts it has not
    /// acknowledged, with ids greater than `after`, in id order, at most
    /// `limit`; broadcasts expired at `now_ms` are left out.
    pub fn pending(&self, uid: &str, after: u64, now_ms: u64, limit: usize) -> Vec<Arc<StoredMsg>> {
        let mut out: Vec<Arc<StoredMsg>> = Vec::new();
        if let Some(inbox) = self.inbox.get(uid) {
            for id in inbox.range(after + 1..).take(limit) {
                if let Some(m) = self.msgs.get(id) {
                    out.push(m.clone());
                }
            }
        }
        for (id, b) in self.bcasts.range(after + 1..) {
            if b.expires_at_ms > now_ms && !b.acked.contains(uid) {
                if let Some(m) = self.msgs.get(id) {
                    out.push(m.clone());
                }
            }
        }
        out.sort_by_key(|m| m.id);
        out.truncate(limit);
        out
    }

    /// Messages stored for `uid` and not acknowledged (inbox only).
    pub fn queued(&self, uid: &str) -> usize {
        self.inbox.get(uid).map_or(0, |i| i.len())
    }

    /// The origin of a stored message, if it is still stored.
    pub fn origin(&self, id: u64) -> Option<Origin> {
        self.msgs.get(&id).map(|m| m.origin)
    }

    pub fn offline_enabled(&self, uid: &str) -> bool {
        !self.no_offline.contains(uid)
    }

    pub fn group(&self, name: &str) -> Option<&[String]> {
        self.groups.get(name).map(|v| v.as_slice())
    }

    /// Stored message bodies (metrics).
    pub fn stored_messages(&self) -> usize {
        self.msgs.len()
    }

    /// Users with a non-empty inbox (metrics).
    pub fn inboxes(&self) -> usize {
        self.inbox.len()
    }

    /// What an operator sees of the queues (the console's Messages page):
    /// the `top` longest inboxes (longest first, ties by uid) with the age
    /// of their oldest message at `now_ms`, the number of groups, and the
    /// broadcasts still live at `now_ms` (at most `top`, soonest expiry
    /// first). One pass over the inboxes: O(inboxes · log top).
    pub fn queue_summary(&self, top: usize, now_ms: u64) -> QueueSummary {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap: BinaryHeap<Reverse<(usize, Reverse<&String>)>> = BinaryHeap::new();
        for (uid, ids) in &self.inbox {
            heap.push(Reverse((ids.len(), Reverse(uid))));
            if heap.len() > top {
                heap.pop();
            }
        }
        let mut longest: Vec<(usize, &String)> =
            heap.into_iter().map(|Reverse((n, Reverse(u)))| (n, u)).collect();
        longest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let queues = longest
            .into_iter()
            .map(|(n, uid)| {
                let oldest = self.inbox[uid]
                    .iter()
                    .next()
                    .and_then(|id| self.msgs.get(id))
                    .map_or(0, |m| now_ms.saturating_sub(m.at_ms));
                QueueLine { uid: uid.clone(), queued: n, oldest_age_ms: oldest }
            })
            .collect();
        let broadcasts = self
            .bcast_expiry
            .range((now_ms.saturating_add(1), 0)..)
            .take(top)
            .filter_map(|&(expires_at_ms, id)| {
                let m = self.msgs.get(&id)?;
                let acked = self.bcasts.get(&id).map_or(0, |b| b.acked.len());
                Some(BroadcastLine { id, from: m.from.clone(), expires_at_ms, acked })
            })
            .collect();
        QueueSummary {
            stored_messages: self.msgs.len(),
            inboxes: self.inbox.len(),
            groups: self.groups.len(),
            queues,
            broadcasts,
        }
    }
}

/// [`MsgState::queue_summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub stored_messages: usize,
    pub inboxes: usize,
    pub groups: usize,
    pub queues: Vec<QueueLine>,
    pub broadcasts: Vec<BroadcastLine>,
}

/// One inbox of [`QueueSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLine {
    pub uid: String,
    pub queued: usize,
    /// Cluster time since its oldest message was submitted.
    pub oldest_age_ms: u64,
}

/// One live broadcast of [`QueueSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastLine {
    pub id: u64,
    pub from: String,
    pub expires_at_ms: u64,
    /// Users that acknowledged it so far.
    pub acked: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(key: &str, to: &[&str]) -> MsgOp {
        MsgOp::Send(SendOp {
            idempotency_key: key.into(),
            from: "app".into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            group: None,
            broadcast: false,
            ttl_ms: 0,
            content_type: "text/plain".into(),
            body: key.as_bytes().to_vec(),
            origin: Origin { node: 1, req: 7 },
            quota: 3,
            idempotency_window_ms: 1_000,
        })
    }

    fn sent(r: MsgResult) -> SendResult {
        match r {
            MsgResult::Sent(Ok(s)) => s,
            other => panic!("not sent: {other:?}"),
        }
    }

    /// Messages queue per recipient in submission order, the body is stored
    /// once for several recipients, and an ack deletes only what it names.
    #[test]
    fn messages_store_in_order_and_ack_then_delete() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        let a = sent(s.apply(&send("k1", &["u1", "u2"]), 10, &mut n));
        let b = sent(s.apply(&send("k2", &["u1"]), 11, &mut n));
        assert!(a.id < b.id);
        assert_eq!(a.outcomes, vec![("u1".into(), Stored::Stored), ("u2".into(), Stored::Stored)]);
        assert_eq!(s.stored_messages(), 2);
        let p: Vec<u64> = s.pending("u1", 0, 11, 100).iter().map(|m| m.id).collect();
        assert_eq!(p, vec![a.id, b.id]);
        assert_eq!(
            s.apply(&MsgOp::Ack { uid: "u1".into(), ids: vec![a.id], up_to: 0 }, 12, &mut n),
            MsgResult::Acked { removed: 1 }
        );
        assert_eq!(
            s.pending("u1", 0, 12, 100).iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![b.id]
        );
        // u2 still holds message a: the body stays.
        assert_eq!(s.stored_messages(), 2);
        s.apply(&MsgOp::Ack { uid: "u2".into(), ids: vec![], up_to: b.id }, 13, &mut n);
        assert_eq!(s.stored_messages(), 1);
        assert_eq!(n.len(), 2, "one notice per send");
    }

    /// A retry with the same key answers the first result and stores
    /// nothing; after the window the key is forgotten.
    #[test]
    fn messages_idempotency_key_window() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        let a = sent(s.apply(&send("k", &["u1"]), 10, &mut n));
        let again = sent(s.apply(&send("k", &["u1"]), 500, &mut n));
        assert!(again.duplicate);
        assert_eq!(again.id, a.id);
        assert_eq!(s.queued("u1"), 1);
        let later = sent(s.apply(&send("k", &["u1"]), 2_000, &mut n));
        assert!(!later.duplicate);
        assert_eq!(s.queued("u1"), 2);
    }

    /// The quota rejects new messages for a full inbox and keeps the old
    /// ones; unsubscribed users get nothing stored.
    #[test]
    fn messages_quota_and_subscription() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        for i in 0..3 {
            sent(s.apply(&send(&format!("k{i}"), &["u"]), 1, &mut n));
        }
        let r = sent(s.apply(&send("k9", &["u", "v"]), 2, &mut n));
        assert_eq!(
            r.outcomes,
            vec![("u".into(), Stored::QuotaExceeded), ("v".into(), Stored::Stored)]
        );
        assert_eq!(s.queued("u"), 3);
        s.apply(&MsgOp::SetOffline { uid: "w".into(), enabled: false }, 3, &mut n);
        let r = sent(s.apply(&send("k10", &["w"]), 3, &mut n));
        assert_eq!(r.outcomes, vec![("w".into(), Stored::NotSubscribed)]);
        assert!(!s.offline_enabled("w"));
        assert_eq!(s.queued("w"), 0);
    }

    /// Groups resolve at apply; an unknown group is refused with nothing
    /// stored and no id used.
    #[test]
    fn messages_groups() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        let mut op = send("g", &[]);
        if let MsgOp::Send(x) = &mut op {
            x.group = Some("team".into());
        }
        assert_eq!(
            s.apply(&op, 1, &mut n),
            MsgResult::Sent(Err(SendError::UnknownGroup("team".into())))
        );
        assert_eq!(s.stored_messages(), 0);
        s.apply(
            &MsgOp::SetGroup {
                name: "team".into(),
                members: vec!["a".into(), "b".into(), "a".into()],
            },
            2,
            &mut n,
        );
        assert_eq!(s.group("team").unwrap(), ["a".to_string(), "b".to_string()]);
        let r = sent(s.apply(&op, 3, &mut n));
        assert_eq!(r.kind, Kind::Group);
        assert_eq!(r.outcomes.len(), 2);
    }

    /// A broadcast with a lifetime is stored once, delivered to each user
    /// until acknowledged, and gone after it expires; one without a
    /// lifetime is not stored.
    #[test]
    fn messages_broadcast_lifetime() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        let mut op = send("b", &[]);
        if let MsgOp::Send(x) = &mut op {
            x.broadcast = true;
            x.ttl_ms = 100;
        }
        let r = sent(s.apply(&op, 1_000, &mut n));
        assert_eq!(r.expires_at_ms, 1_100);
        assert_eq!(s.stored_messages(), 1);
        assert_eq!(s.pending("x", 0, 1_050, 10).len(), 1);
        s.apply(&MsgOp::Ack { uid: "x".into(), ids: vec![r.id], up_to: 0 }, 1_060, &mut n);
        assert!(s.pending("x", 0, 1_060, 10).is_empty(), "acked once: not again");
        assert_eq!(s.pending("y", 0, 1_060, 10).len(), 1);
        assert!(s.pending("y", 0, 1_100, 10).is_empty(), "expired for readers");
        s.apply(&MsgOp::SetOffline { uid: "z".into(), enabled: true }, 1_200, &mut n);
        assert_eq!(s.stored_messages(), 0, "expired broadcast removed at apply");
        let mut op = send("b2", &[]);
        if let MsgOp::Send(x) = &mut op {
            x.broadcast = true;
        }
        sent(s.apply(&op, 1_300, &mut n));
        assert_eq!(s.stored_messages(), 0);
        assert!(matches!(n.last(), Some(Notice::Broadcast { .. })));
    }

    /// The queue summary lists the longest inboxes first (ties by uid),
    /// at most `top`, with their oldest message's age; live broadcasts only
    /// (an expired one is left out), with their acknowledgement count.
    #[test]
    fn messages_queue_summary() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        s.apply(&send("k1", &["a", "b", "c"]), 100, &mut n);
        s.apply(&send("k2", &["b", "c"]), 200, &mut n);
        s.apply(&send("k3", &["c"]), 300, &mut n);
        let mut op = send("bc", &[]);
        if let MsgOp::Send(x) = &mut op {
            x.broadcast = true;
            x.ttl_ms = 1_000;
        }
        let bc = sent(s.apply(&op, 400, &mut n));
        s.apply(&MsgOp::Ack { uid: "z".into(), ids: vec![bc.id], up_to: 0 }, 450, &mut n);
        let q = s.queue_summary(2, 1_000);
        let lines: Vec<(&str, usize, u64)> =
            q.queues.iter().map(|l| (l.uid.as_str(), l.queued, l.oldest_age_ms)).collect();
        assert_eq!(lines, vec![("c", 3, 900), ("b", 2, 900)]);
        assert_eq!((q.inboxes, q.stored_messages, q.groups), (3, 4, 0));
        assert_eq!(q.broadcasts.len(), 1);
        assert_eq!((q.broadcasts[0].id, q.broadcasts[0].acked), (bc.id, 1));
        assert!(s.queue_summary(10, 1_400).broadcasts.is_empty(), "expired at 1,400");
        assert_eq!(s.queue_summary(10, 1_000).queues.len(), 3);
    }

    /// The persisted items (what a snapshot holds) rebuild an equal state
    /// after every kind of change: groups, sends, acks (deleting bodies),
    /// subscriptions.
    #[test]
    fn messages_items_roundtrip() {
        let mut s = MsgState::default();
        let mut n = Vec::new();
        s.apply(&MsgOp::SetGroup { name: "g".into(), members: vec!["a".into()] }, 1, &mut n);
        let r = sent(s.apply(&send("k1", &["a", "b"]), 2, &mut n));
        assert_eq!(MsgState::from_items(s.items()), s);
        s.apply(&MsgOp::Ack { uid: "a".into(), ids: vec![r.id], up_to: 0 }, 3, &mut n);
        s.apply(&MsgOp::SetOffline { uid: "c".into(), enabled: false }, 4, &mut n);
        assert_eq!(MsgState::from_items(s.items()), s);
    }
}

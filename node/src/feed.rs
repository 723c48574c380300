//! The presence change feed of one node (issue 15): a bounded window of
//! recent presence changes, fed by the state machine as it applies
//! entries, and read by watchers (`api::watch`).
//!
//! - [`Feed::publish`] is called by apply for every applied entry, under
//!   the state's write lock, with the records of the users the entry
//!   changed (read through the batch query after apply, [`changed_records`]). So a
//!   reader holding the state's read lock sees a feed whose head is
//!   exactly the state's applied index: a snapshot taken there, then the
//!   window's changes after it, miss nothing and repeat nothing.
//! - The window is bounded by records and by age ([`WatchConfig`]);
//!   trimming raises the floor. A cursor below the floor can no longer be
//!   served change by change: the watcher gets a `reset` and a snapshot.
//! - The window lives only in memory and only on this node; it is not part
//!   of the replicated state (apply's determinism is the domain's; the
//!   window's ages are this node's clock). A restart starts an empty
//!   window at the snapshot's index, and the log replayed after it fills
//!   it again.
//! - The index ([`Index`]) maps each uid and sid to the watchers following
//!   it (and holds the watchers of every user), so `publish` hands a change
//!   only to the watchers of its users: each gets it in its own bounded
//!   [`Inbox`] (one entry per revision, the records shared with the window;
//!   past [`INBOX_ENTRIES`] entries folded to the latest record per user)
//!   and a [`tokio::sync::Notify`] wake. Apply never waits for a watcher:
//!   an inbox push is a few pointer copies under that inbox's own mutex,
//!   which a watcher holds only to take what is pending. A watcher whose
//!   oldest pending change left the window, or whose folded records
//!   outnumber the window's bound, is `gone`: it gets a `reset`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_domain::presence::Record;
use herald_domain::state::{Command, Op, State};

use crate::config::WatchConfig;

/// The uids an entry's ops may change, read before it is applied
/// (`GatewayReset` names only a gateway: its users are the ones that
/// gateway holds sessions for now). Each uid once. Every presence op names
/// its uid (a login without a uid does not exist; `sid` 0 keeps the
/// user's sid), so a sid-only change cannot slip past this.
pub fn touched_uids(st: &State, cmd: &Command) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut add = |uid: &str| {
        if seen.insert(uid.to_owned()) {
            out.push(uid.to_owned());
        }
    };
    for op in &cmd.ops {
        match op {
            Op::Presence(ev) => add(ev.uid()),
            Op::SessionLogin { uid, .. } | Op::SessionLogout { uid, .. } => add(uid),
            Op::GatewayReset { gateway } => {
                for (uid, _) in st.presence.gateway_sessions(*gateway) {
                    add(&uid);
                }
            }
            Op::Msg(_) | Op::Lib(_) | Op::Profile(_) => {}
        }
    }
    out
}

/// The records of `after` (the batch query of the touched uids, after the
/// entry at `index` applied) that the entry changed: every change to a
/// record stamps it with the entry's index (`revision`, "the log index of
/// its last change"), so a user whose record the entry left as it was (a
/// logout of a gateway session another gateway holds by now) is skipped
/// without reading the records a second time before apply.
pub fn changed_records(after: herald_domain::presence::QueryResult, index: u64) -> Vec<Record> {
    after.users.into_iter().filter(|r| r.revision == index).collect()
}

/// One applied entry's changes.
#[derive(Debug, Clone)]
pub struct Change {
    /// The entry's log index.
    pub revision: u64,
    at: Instant,
    /// The changed users' records after the entry (each user once).
    pub users: Arc<[Record]>,
}

/// The window and its bounds.
#[derive(Debug)]
struct Window {
    changes: VecDeque<Change>,
    /// Records in `changes`.
    records: usize,
    /// Every change after this revision is in `changes`.
    floor: u64,
    /// The last applied index published.
    head: u64,
}

/// What a watcher reads from the window after its cursor.
#[derive(Debug)]
pub enum Pull {
    /// The cursor is below the floor: changes after it are gone.
    Gone { floor: u64, head: u64 },
    /// The changes after the cursor matching the watcher, in revision
    /// order (at most the asked number; `more` if some were left), and
    /// the head they were read at.
    Changes { changes: Vec<(u64, Vec<Record>)>, more: bool, head: u64 },
}

/// The feed of one node. Shared by the state machine (writer) and the
/// watchers (readers).
pub struct Feed {
    window: Mutex<Window>,
    pub config: WatchConfig,
    /// Open watchers, bounded by `max_watchers`.
    watchers: AtomicUsize,
    /// Who follows which uid and sid (apply reads it to route changes).
    index: Mutex<Index>,
    /// The last revision whose changes every inbox has (stored after the
    /// pushes, so a watcher that reads it, then takes its inbox, has every
    /// change up to it).
    published: AtomicU64,
}

/// Inbox entries one watcher may hold change by change (one frame per
/// revision); past them its pending changes are folded to the latest record
/// per user. The same burst a live reader drains in milliseconds as
/// `api::watch::COALESCE_AFTER`, which it is.
pub const INBOX_ENTRIES: usize = 64;

/// A watcher's id in the index.
pub type WatcherId = u64;

/// What one watcher has not taken yet.
#[derive(Debug, Default)]
struct Pending {
    /// One entry per revision: the change's records (shared with the
    /// window) and which of them the watcher follows.
    queue: VecDeque<(u64, Arc<[Record]>, Vec<u32>)>,
    /// Past [`INBOX_ENTRIES`]: the latest record per uid, and the last
    /// revision folded in.
    folded: BTreeMap<String, Record>,
    folded_rev: u64,
    /// The oldest revision pending (None: nothing pending).
    oldest: Option<u64>,
    /// The watcher cannot be served change by change any more (its pending
    /// outgrew the window, or a snapshot install replaced the state).
    gone: bool,
}

/// One watcher's inbox: filled by `publish`, emptied by the watcher.
#[derive(Debug, Default)]
pub struct Inbox {
    pending: Mutex<Pending>,
    /// Woken after each push.
    pub wake: tokio::sync::Notify,
}

/// What a watcher took from its inbox.
#[derive(Debug, Default)]
pub struct Taken {
    /// Change by change, in revision order (records the watcher follows).
    pub changes: Vec<(u64, Vec<Record>)>,
    /// Or (when it fell behind by more than [`INBOX_ENTRIES`]) folded: the
    /// latest record per user, as of the revision.
    pub folded: Option<(u64, Vec<Record>)>,
    /// The oldest revision taken.
    pub oldest: Option<u64>,
    pub gone: bool,
}

impl Inbox {
    /// Adds `picks` of the change at `revision`; folds when the queue is
    /// full; marks the inbox gone when the folded records pass `bound`.
    fn push(&self, revision: u64, users: &Arc<[Record]>, picks: Vec<u32>, bound: usize) {
        let mut p = self.pending.lock().expect("inbox lock");
        if p.gone {
            return;
        }
        p.oldest.get_or_insert(revision);
        if p.folded.is_empty() && p.queue.len() < INBOX_ENTRIES {
            p.queue.push_back((revision, users.clone(), picks));
        } else {
            let queued: Vec<_> = p.queue.drain(..).collect();
            for (rev, us, picks) in queued.iter().chain([&(revision, users.clone(), picks)]) {
                for &i in picks {
                    let r = &us[i as usize];
                    p.folded.insert(r.uid.clone(), r.clone());
                }
                p.folded_rev = *rev;
            }
            if p.folded.len() > bound {
                // More distinct users pending than the window holds
                // records: some of them are no longer in the window.
                *p = Pending { gone: true, ..Pending::default() };
            }
        }
        drop(p);
        self.wake.notify_one();
    }

    /// Takes everything pending.
    pub fn take(&self) -> Taken {
        let p = std::mem::take(&mut *self.pending.lock().expect("inbox lock"));
        let changes = p
            .queue
            .into_iter()
            .map(|(rev, us, picks)| (rev, picks.iter().map(|&i| us[i as usize].clone()).collect()))
            .collect();
        let folded =
            (!p.folded.is_empty()).then(|| (p.folded_rev, p.folded.into_values().collect()));
        Taken { changes, folded, oldest: p.oldest, gone: p.gone }
    }

    /// Drops everything pending (a snapshot covers it).
    pub fn clear(&self) {
        *self.pending.lock().expect("inbox lock") = Pending::default();
    }

    fn set_gone(&self) {
        *self.pending.lock().expect("inbox lock") = Pending { gone: true, ..Pending::default() };
        self.wake.notify_one();
    }

    /// Records pending (tests, the coalescing bound).
    pub fn pending_records(&self) -> usize {
        let p = self.pending.lock().expect("inbox lock");
        p.queue.iter().map(|e| e.2.len()).sum::<usize>() + p.folded.len()
    }
}

/// The index from ids to the watchers following them.
#[derive(Debug, Default)]
pub struct Index {
    next: WatcherId,
    inboxes: HashMap<WatcherId, Arc<Inbox>>,
    uids: HashMap<String, HashSet<WatcherId>>,
    sids: HashMap<u64, HashSet<WatcherId>>,
    /// Watchers of every user.
    all: HashSet<WatcherId>,
}

impl Index {
    fn add(&mut self, id: WatcherId, uids: &[String], sids: &[u64]) {
        for u in uids {
            self.uids.entry(u.clone()).or_default().insert(id);
        }
        for s in sids {
            self.sids.entry(*s).or_default().insert(id);
        }
    }

    fn remove(&mut self, id: WatcherId, uids: &[String], sids: &[u64]) {
        for u in uids {
            if let Some(set) = self.uids.get_mut(u) {
                set.remove(&id);
                if set.is_empty() {
                    self.uids.remove(u);
                }
            }
        }
        for s in sids {
            if let Some(set) = self.sids.get_mut(s) {
                set.remove(&id);
                if set.is_empty() {
                    self.sids.remove(s);
                }
            }
        }
    }

    /// For each watcher following one of `users`, which of them (by
    /// position, each once, in order).
    fn route(&self, users: &[Record]) -> HashMap<WatcherId, Vec<u32>> {
        let mut out: HashMap<WatcherId, Vec<u32>> = HashMap::new();
        for (i, r) in users.iter().enumerate() {
            let i = i as u32;
            let by_sid = (r.sid != 0).then(|| self.sids.get(&r.sid)).flatten();
            let ids = self.uids.get(&r.uid).into_iter().chain(by_sid).flatten().chain(&self.all);
            for id in ids {
                let picks = out.entry(*id).or_default();
                if picks.last() != Some(&i) {
                    picks.push(i);
                }
            }
        }
        out
    }

    /// Ids with at least one watcher (tests, metrics).
    pub fn followed(&self) -> (usize, usize, usize) {
        (self.uids.len(), self.sids.len(), self.all.len())
    }
}

/// A watcher's entry in the index; removed when dropped.
pub struct Subscription {
    feed: Arc<Feed>,
    id: WatcherId,
    pub inbox: Arc<Inbox>,
    uids: HashSet<String>,
    sids: HashSet<u64>,
}

impl Subscription {
    /// Follows more ids (those already followed are skipped).
    pub fn add(&mut self, uids: &[String], sids: &[u64]) {
        let uids: Vec<String> =
            uids.iter().filter(|u| self.uids.insert((*u).clone())).cloned().collect();
        let sids: Vec<u64> = sids.iter().copied().filter(|s| self.sids.insert(*s)).collect();
        self.feed.index.lock().expect("index lock").add(self.id, &uids, &sids);
    }

    /// Stops following ids.
    pub fn remove(&mut self, uids: &[String], sids: &[u64]) {
        let uids: Vec<String> = uids.iter().filter(|u| self.uids.remove(*u)).cloned().collect();
        let sids: Vec<u64> = sids.iter().copied().filter(|s| self.sids.remove(s)).collect();
        self.feed.index.lock().expect("index lock").remove(self.id, &uids, &sids);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let uids: Vec<String> = self.uids.drain().collect();
        let sids: Vec<u64> = self.sids.drain().collect();
        let mut ix = self.feed.index.lock().expect("index lock");
        ix.remove(self.id, &uids, &sids);
        ix.all.remove(&self.id);
        ix.inboxes.remove(&self.id);
    }
}

/// A place among the node's watchers; given back when dropped.
pub struct WatcherSlot(Arc<Feed>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    /// An empty feed whose window starts at `applied` (the state's index).
    pub fn new(config: WatchConfig, applied: u64) -> Arc<Self> {
        Arc::new(Feed {
            window: Mutex::new(Window {
                changes: VecDeque::new(),
                records: 0,
                floor: applied,
                head: applied,
            }),
            config,
            watchers: AtomicUsize::new(0),
            index: Mutex::new(Index::default()),
            published: AtomicU64::new(applied),
        })
    }

    /// Records an applied entry: its changed users (maybe none) at
    /// `revision`. Called by apply under the state's write lock, entries in
    /// order; the head moves even when nothing changed (progress frames
    /// carry it).
    pub fn publish(&self, revision: u64, users: Vec<Record>) {
        let mut w = self.window.lock().expect("feed lock");
        if revision <= w.head {
            return;
        }
        w.head = revision;
        let change: Option<Arc<[Record]>> = (!users.is_empty()).then(|| users.into());
        if let Some(users) = &change {
            w.records += users.len();
            w.changes.push_back(Change { revision, at: Instant::now(), users: users.clone() });
        }
        self.trim(&mut w);
        let bound = self.config.window_changes;
        drop(w);
        if let Some(users) = change {
            // Only the watchers of these users; the index lock is never
            // held while a watcher works (they take only their inbox's).
            let ix = self.index.lock().expect("index lock");
            for (id, picks) in ix.route(&users) {
                if let Some(inbox) = ix.inboxes.get(&id) {
                    inbox.push(revision, &users, picks, bound);
                }
            }
        }
        self.published.store(revision, Ordering::Release);
    }

    /// The last revision every inbox has been handed (see `published`).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Enters a watcher in the index, following `uids` and `sids` (or
    /// every user). Its inbox gets every change published from now on.
    pub fn subscribe(self: &Arc<Self>, uids: &[String], sids: &[u64], all: bool) -> Subscription {
        let inbox = Arc::new(Inbox::default());
        let mut ix = self.index.lock().expect("index lock");
        let id = ix.next;
        ix.next += 1;
        ix.inboxes.insert(id, inbox.clone());
        if all {
            ix.all.insert(id);
        }
        drop(ix);
        let mut sub = Subscription {
            feed: self.clone(),
            id,
            inbox,
            uids: HashSet::new(),
            sids: HashSet::new(),
        };
        sub.add(uids, sids);
        sub
    }

    /// Ids followed by at least one watcher: (uids, sids, watchers of all).
    pub fn followed(&self) -> (usize, usize, usize) {
        self.index.lock().expect("index lock").followed()
    }

    /// The state was replaced wholesale (a snapshot installed): nothing
    /// before `applied` can be served change by change any more.
    pub fn reset_to(&self, applied: u64) {
        let mut w = self.window.lock().expect("feed lock");
        w.changes.clear();
        w.records = 0;
        w.floor = applied.max(w.head);
        w.head = w.floor;
        let head = w.head;
        drop(w);
        // Every watcher, whatever it follows: what the snapshot replaced
        // was never published to any inbox.
        for inbox in self.index.lock().expect("index lock").inboxes.values() {
            inbox.set_gone();
        }
        self.published.store(head, Ordering::Release);
    }

    fn trim(&self, w: &mut Window) {
        let max_age = Duration::from_millis(self.config.window_ms);
        let now = Instant::now();
        while let Some(front) = w.changes.front() {
            let too_many = w.records > self.config.window_changes;
            let too_old = now.duration_since(front.at) > max_age;
            if !too_many && !too_old {
                break;
            }
            let c = w.changes.pop_front().expect("front exists");
            w.records -= c.users.len();
            w.floor = c.revision;
        }
    }

    /// The last published revision.
    pub fn head(&self) -> u64 {
        self.window.lock().expect("feed lock").head
    }

    /// Oldest cursor the window can serve change by change.
    pub fn floor(&self) -> u64 {
        let mut w = self.window.lock().expect("feed lock");
        self.trim(&mut w);
        w.floor
    }

    /// Changes after `cursor` whose records `wanted` matches, at most `max`
    /// of them (entries without a match are skipped).
    pub fn pull(&self, cursor: u64, max: usize, wanted: impl Fn(&Record) -> bool) -> Pull {
        let mut w = self.window.lock().expect("feed lock");
        self.trim(&mut w);
        if cursor < w.floor {
            return Pull::Gone { floor: w.floor, head: w.head };
        }
        let start = w.changes.partition_point(|c| c.revision <= cursor);
        let mut changes = Vec::new();
        let mut more = false;
        for c in w.changes.range(start..) {
            let users: Vec<Record> = c.users.iter().filter(|r| wanted(r)).cloned().collect();
            if users.is_empty() {
                continue;
            }
            if changes.len() == max {
                more = true;
                break;
            }
            changes.push((c.revision, users));
        }
        // When `more`, the caller has not seen everything up to the head:
        // it reads again from the last change it got.
        let head = if more { changes.last().map_or(cursor, |c| c.0) } else { w.head };
        Pull::Changes { changes, more, head }
    }

    /// Changes after `cursor` matching `wanted`, coalesced to the latest
    /// record per user, and the head they were read at: what a watcher that
    /// fell behind is sent (memory: at most one record per watched user).
    pub fn pull_coalesced(&self, cursor: u64, wanted: impl Fn(&Record) -> bool) -> Pull {
        let mut w = self.window.lock().expect("feed lock");
        self.trim(&mut w);
        if cursor < w.floor {
            return Pull::Gone { floor: w.floor, head: w.head };
        }
        let start = w.changes.partition_point(|c| c.revision <= cursor);
        let mut latest: std::collections::HashMap<&str, &Record> = Default::default();
        let mut order: Vec<&str> = Vec::new();
        for c in w.changes.range(start..) {
            for r in c.users.iter().filter(|r| wanted(r)) {
                if latest.insert(&r.uid, r).is_none() {
                    order.push(&r.uid);
                }
            }
        }
        let users: Vec<Record> = order.iter().map(|u| latest[u].clone()).collect();
        let head = w.head;
        let changes = if users.is_empty() { vec![] } else { vec![(head, users)] };
        Pull::Changes { changes, more: false, head }
    }

    /// Takes a watcher place, or None when `max_watchers` are open.
    pub fn join(self: &Arc<Self>) -> Option<WatcherSlot> {
        let max = self.config.max_watchers;
        self.watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| WatcherSlot(self.clone()))
    }

    /// Open watchers.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }

    /// Records in the window (tests, metrics).
    pub fn window_records(&self) -> usize {
        self.window.lock().expect("feed lock").records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::presence::Event;
    use herald_domain::state::Effects;

    fn rec(uid: &str, revision: u64) -> Record {
        Record {
            uid: uid.into(),
            sid: 0,
            clients: Default::default(),
            accepts_strangers: true,
            ext: Default::default(),
            changed_at_ms: 0,
            revision,
            gateways: Default::default(),
        }
    }

    fn cfg(window_changes: usize) -> WatchConfig {
        WatchConfig { window_changes, ..WatchConfig::default() }
    }

    fn revs(p: Pull) -> Vec<(u64, Vec<String>)> {
        match p {
            Pull::Changes { changes, .. } => changes
                .into_iter()
                .map(|(r, us)| (r, us.into_iter().map(|u| u.uid).collect()))
                .collect(),
            Pull::Gone { .. } => panic!("gone"),
        }
    }

    /// Pulls return the matching changes after the cursor in revision
    /// order, skip entries without a match, stop at `max` with `more`, and
    /// the head moves with entries that changed nobody.
    #[test]
    fn feed_pull_in_order_and_filtered() {
        let f = Feed::new(cfg(100), 10);
        f.publish(11, vec![rec("a", 11), rec("b", 11)]);
        f.publish(12, vec![]);
        f.publish(13, vec![rec("b", 13)]);
        f.publish(14, vec![rec("a", 14)]);
        assert_eq!(f.head(), 14);
        let a = |r: &Record| r.uid == "a";
        assert_eq!(revs(f.pull(10, 10, a)), vec![(11, vec!["a".into()]), (14, vec!["a".into()])]);
        assert_eq!(revs(f.pull(11, 10, a)), vec![(14, vec!["a".into()])]);
        assert!(revs(f.pull(14, 10, a)).is_empty());
        match f.pull(10, 1, |_| true) {
            Pull::Changes { changes, more, head } => {
                assert_eq!((changes.len(), more, head), (1, true, 11));
            }
            p => panic!("{p:?}"),
        }
        f.publish(13, vec![rec("z", 13)]); // an old revision is ignored
        assert_eq!(f.window_records(), 4);
    }

    /// The window keeps at most `window-changes` records: older changes
    /// are dropped, the floor rises to the last dropped revision, and a
    /// cursor below it is `Gone` (reset) while one at it still resumes.
    #[test]
    fn feed_window_bounded_by_count() {
        let f = Feed::new(cfg(3), 0);
        for r in 1..=5 {
            f.publish(r, vec![rec("a", r)]);
        }
        assert_eq!((f.window_records(), f.floor()), (3, 2));
        assert!(matches!(f.pull(1, 10, |_| true), Pull::Gone { floor: 2, head: 5 }));
        assert_eq!(revs(f.pull(2, 10, |_| true)).len(), 3);
    }

    /// Coalescing keeps one record per user, the latest, and reports the
    /// head: what a slow watcher is sent instead of every change.
    #[test]
    fn feed_coalesces_to_latest_per_user() {
        let f = Feed::new(cfg(100), 0);
        for r in 1..=50 {
            f.publish(r, vec![rec(if r % 2 == 0 { "a" } else { "b" }, r)]);
        }
        match f.pull_coalesced(0, |_| true) {
            Pull::Changes { changes, head, .. } => {
                assert_eq!(head, 50);
                assert_eq!(changes.len(), 1);
                let (rev, users) = &changes[0];
                assert_eq!(*rev, 50);
                let mut got: Vec<(String, u64)> =
                    users.iter().map(|u| (u.uid.clone(), u.revision)).collect();
                got.sort();
                assert_eq!(got, vec![("a".into(), 50), ("b".into(), 49)]);
            }
            p => panic!("{p:?}"),
        }
    }

    /// A snapshot install empties the window: every cursor before it is
    /// `Gone`, so a watcher resets rather than missing what it replaced.
    #[test]
    fn feed_reset_after_snapshot_install() {
        let f = Feed::new(cfg(100), 0);
        f.publish(1, vec![rec("a", 1)]);
        f.reset_to(40);
        assert_eq!((f.head(), f.floor()), (40, 40));
        assert!(matches!(f.pull(1, 10, |_| true), Pull::Gone { .. }));
    }

    /// The watcher limit holds: a place is refused at `max-watchers` and
    /// given back when a watcher ends.
    #[test]
    fn feed_watcher_limit() {
        let f = Feed::new(WatchConfig { max_watchers: 2, ..WatchConfig::default() }, 0);
        let a = f.join().unwrap();
        let _b = f.join().unwrap();
        assert!(f.join().is_none());
        drop(a);
        assert!(f.join().is_some());
    }

    fn rec_sid(uid: &str, sid: u64, revision: u64) -> Record {
        Record { sid, ..rec(uid, revision) }
    }

    fn taken(sub: &Subscription) -> Vec<(u64, Vec<String>)> {
        let t = sub.inbox.take();
        assert!(!t.gone);
        t.changes
            .into_iter()
            .chain(t.folded)
            .map(|(r, us)| (r, us.into_iter().map(|u| u.uid).collect()))
            .collect()
    }

    /// The index routes a change only to the watchers following one of
    /// its users, by uid, by sid or as a watcher of every user, each
    /// watcher once per revision with just the records it follows; an
    /// unwatched user's change reaches no inbox.
    #[test]
    fn index_routes_a_change_only_to_its_watchers() {
        let f = Feed::new(cfg(100), 0);
        let a = f.subscribe(&["a".into()], &[], false);
        let b = f.subscribe(&["b".into()], &[7], false);
        let all = f.subscribe(&[], &[], true);
        f.publish(1, vec![rec("a", 1)]);
        f.publish(2, vec![rec("z", 2)]);
        f.publish(3, vec![rec("a", 3), rec_sid("c", 7, 3), rec_sid("b", 7, 3)]);
        assert_eq!(f.published(), 3);
        assert_eq!(taken(&a), vec![(1, vec!["a".into()]), (3, vec!["a".into()])]);
        assert_eq!(taken(&b), vec![(3, vec!["c".into(), "b".into()])]);
        let got: Vec<u64> = taken(&all).into_iter().map(|c| c.0).collect();
        assert_eq!(got, vec![1, 2, 3]);
        // Taken once: nothing is left.
        assert!(taken(&a).is_empty());
        assert_eq!(f.followed(), (2, 1, 1));
    }

    /// Adding and removing watched ids changes what the index routes to a
    /// watcher from then on; a dropped watcher leaves the index (no id is
    /// followed any more, nothing is pushed to it).
    #[test]
    fn index_add_remove_and_drop() {
        let f = Feed::new(cfg(100), 0);
        let mut w = f.subscribe(&["a".into()], &[], false);
        f.publish(1, vec![rec("b", 1)]);
        assert!(taken(&w).is_empty());
        w.add(&["b".into(), "a".into()], &[9]);
        f.publish(2, vec![rec("b", 2)]);
        f.publish(3, vec![rec_sid("q", 9, 3)]);
        assert_eq!(taken(&w), vec![(2, vec!["b".into()]), (3, vec!["q".into()])]);
        w.remove(&["a".into()], &[9]);
        f.publish(4, vec![rec("a", 4)]);
        f.publish(5, vec![rec_sid("q", 9, 5)]);
        f.publish(6, vec![rec("b", 6)]);
        assert_eq!(taken(&w), vec![(6, vec!["b".into()])]);
        assert_eq!(f.followed(), (1, 0, 0));
        drop(w);
        assert_eq!(f.followed(), (0, 0, 0));
        assert!(f.index.lock().unwrap().inboxes.is_empty());
    }

    /// A watcher that takes nothing holds at most [`INBOX_ENTRIES`]
    /// entries, then one record per user, the latest, whatever the number
    /// of changes; once its folded users outnumber the window's records
    /// it is gone (reset), holding nothing.
    #[test]
    fn inbox_coalescing_is_bounded() {
        let f = Feed::new(cfg(1_000), 0);
        let w = f.subscribe(&["a".into(), "b".into()], &[], false);
        for r in 1..=INBOX_ENTRIES as u64 {
            f.publish(r, vec![rec("a", r)]);
        }
        assert_eq!(w.inbox.pending_records(), INBOX_ENTRIES);
        for r in INBOX_ENTRIES as u64 + 1..=10_000 {
            f.publish(r, vec![rec(if r % 2 == 0 { "a" } else { "b" }, r)]);
            assert!(w.inbox.pending_records() <= INBOX_ENTRIES);
        }
        assert_eq!(w.inbox.pending_records(), 2);
        let t = w.inbox.take();
        assert!(t.changes.is_empty() && !t.gone);
        assert_eq!(t.oldest, Some(1));
        let (rev, users) = t.folded.unwrap();
        assert_eq!(rev, 10_000);
        let got: Vec<(String, u64)> = users.into_iter().map(|u| (u.uid, u.revision)).collect();
        assert_eq!(got, vec![("a".into(), 10_000), ("b".into(), 9_999)]);

        // A watcher of every user past the window's bound (3 records).
        let f = Feed::new(cfg(3), 0);
        let all = f.subscribe(&[], &[], true);
        for r in 1..=INBOX_ENTRIES as u64 + 3 {
            f.publish(r, vec![rec(&format!("u{r}"), r)]);
        }
        let t = all.inbox.take();
        assert!(t.gone && t.changes.is_empty() && t.folded.is_none());
        assert_eq!(all.inbox.pending_records(), 0);
    }

    /// A snapshot install marks every inbox gone, even one whose users
    /// did not change: what the snapshot replaced never reached it.
    #[test]
    fn snapshot_install_marks_every_inbox_gone() {
        let f = Feed::new(cfg(100), 0);
        let w = f.subscribe(&["a".into()], &[], false);
        f.reset_to(50);
        assert_eq!(f.published(), 50);
        assert!(w.inbox.take().gone);
    }

    /// The touched uids come from the ops: presence events and sessions
    /// name theirs, a gateway reset names the users of that gateway's
    /// sessions, and message ops none; a user whose record the entry left
    /// unchanged (a session logout from a gateway that does not hold it)
    /// is not a change.
    #[test]
    fn feed_touched_uids_and_unchanged_skipped() {
        let mut st = State::default();
        let login = |uid: &str| Op::SessionLogin {
            uid: uid.into(),
            sid: 0,
            client: "web".into(),
            gateway: 7,
        };
        let cmd = Command { at_ms: 1, ops: vec![login("a"), login("b")] };
        st.apply(&cmd, 1, &mut Effects::default());
        let reset = Command { at_ms: 2, ops: vec![Op::GatewayReset { gateway: 7 }] };
        let mut got = touched_uids(&st, &reset);
        got.sort();
        assert_eq!(got, vec!["a".to_string(), "b".to_string()]);
        let ev = Op::Presence(Event::Permission {
            uid: "c".into(),
            sid: 5,
            accepts_strangers: false,
            ext: Default::default(),
        });
        let cmd = Command { at_ms: 3, ops: vec![ev.clone(), ev] };
        assert_eq!(touched_uids(&st, &cmd), vec!["c".to_string()]);

        // A logout by gateway 9 of a session gateway 7 holds changes nothing.
        let wrong = Command {
            at_ms: 4,
            ops: vec![Op::SessionLogout { uid: "a".into(), client: "web".into(), gateway: 9 }],
        };
        let uids = touched_uids(&st, &wrong);
        st.apply(&wrong, 4, &mut Effects::default());
        assert!(changed_records(st.presence.query(&uids, &[]), 4).is_empty());
        // The real logout does change the record.
        let right = Command {
            at_ms: 5,
            ops: vec![Op::SessionLogout { uid: "a".into(), client: "web".into(), gateway: 7 }],
        };
        st.apply(&right, 5, &mut Effects::default());
        let changed = changed_records(st.presence.query(&uids, &[]), 5);
        assert_eq!(changed.len(), 1);
        assert!(!changed[0].online());
    }
}

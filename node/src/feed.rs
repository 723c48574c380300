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

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Wakes watchers when the head moves (the value is the head).
    head_tx: tokio::sync::watch::Sender<u64>,
    pub config: WatchConfig,
    /// Open watchers, bounded by `max_watchers`.
    watchers: AtomicUsize,
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
            head_tx: tokio::sync::watch::channel(applied).0,
            config,
            watchers: AtomicUsize::new(0),
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
        if !users.is_empty() {
            w.records += users.len();
            w.changes.push_back(Change { revision, at: Instant::now(), users: users.into() });
        }
        self.trim(&mut w);
        drop(w);
        self.head_tx.send_replace(revision);
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
        self.head_tx.send_replace(head);
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

    /// Wakes when the head moves.
    pub fn head_rx(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head_tx.subscribe()
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

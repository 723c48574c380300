//! The replicated state as one deterministic value: presence, messages and
//! the media library,
//! and the log command that changes it.
//!
//! [`State::apply`] is the only way the replicated state changes. It uses
//! nothing but the command (cluster time stamped by the leader) and the log
//! index, so every replica ends equal (Architecture Invariant: no I/O, no
//! clock in apply).

use serde::{Deserialize, Serialize};

use crate::library::{self, LibOp, LibResult, Library};
use crate::messages::{self, MsgOp, MsgResult, MsgState, Notice};
use crate::presence::{Event, PresenceSnapshot, PresenceState, Record, Touched};
use crate::profile::{self, ProfileOp, ProfileResult, ProfileState};

/// One operation in a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A status-pool event (MISSION P1).
    Presence(Event),
    /// A gateway session started: the user is online on `client` through
    /// `gateway` (MISSION M7). `sid` 0 keeps the user's sid.
    SessionLogin { uid: String, sid: u64, client: String, gateway: u64 },
    /// A gateway session ended; ignored when the user's `client` is held by
    /// another gateway by now.
    SessionLogout { uid: String, client: String, gateway: u64 },
    /// Every session held by `gateway` is gone (it restarted, or it has been
    /// unreachable longer than the grace period).
    GatewayReset { gateway: u64 },
    /// Messages, inboxes, groups, subscriptions.
    Msg(MsgOp),
    /// Media metadata and contacts.
    Lib(LibOp),
    /// Profile bindings, updates and the outbox (issue 17). Last, so that
    /// entries written before it existed still decode.
    Profile(ProfileOp),
}

impl Op {
    /// Bytes of bulk payload (message bodies) the op carries, to bound
    /// log entries.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Msg(MsgOp::Send(s)) => s.body.len() + s.to.len() * 16,
            Op::Msg(MsgOp::SetGroup { members, .. }) => members.len() * 16,
            Op::Lib(LibOp::MediaGrant { uids, .. }) => uids.len() * 16,
            _ => 0,
        }
    }
}

/// A batch of operations as written to the Raft log: the leader stamps the
/// cluster time once for the whole batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Cluster time in ms since the Unix epoch, stamped by the leader.
    pub at_ms: u64,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command(at_ms={}, ops={})", self.at_ms, self.ops.len())
    }
}

/// What applying one [`Op`] answers its writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Presence operations answer only the revision (the entry's index).
    Ok,
    Msg(MsgResult),
    Lib(LibResult),
    Profile(ProfileResult),
    /// A `SessionLogin` naming a sid another user holds: nothing changed
    /// (the check is here, in apply, so it is atomic with the login and a
    /// gateway needs no read of the leader before it; issue 16). Last, so
    /// that answers of nodes without it still decode.
    SidTaken,
}

/// Everything the Raft group holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    pub presence: PresenceState,
    pub msgs: MsgState,
    pub lib: Library,
    pub profiles: ProfileState,
}

/// What one [`State::apply`] produced besides the results.
#[derive(Debug, Default)]
pub struct Effects {
    /// Presence uids and sids changed (what a change feed reports).
    pub touched: Touched,
    /// What gateways should push.
    pub notices: Vec<Notice>,
}

impl State {
    /// Applies a committed command at log index `index`.
    pub fn apply(&mut self, cmd: &Command, index: u64, fx: &mut Effects) -> Vec<OpResult> {
        let mut results = Vec::with_capacity(cmd.ops.len());
        // Position among this entry's profile ops: each gets its own
        // revision (profile::revision), in the order they apply.
        let mut profile_slot = 0u64;
        for op in &cmd.ops {
            let r = match op {
                Op::Presence(ev) => {
                    self.presence.apply_event(ev, cmd.at_ms, index, &mut fx.touched);
                    OpResult::Ok
                }
                Op::SessionLogin { uid, sid, client, gateway }
                    if *sid != 0
                        && self.presence.sid_owner(*sid).is_some_and(|o| o != uid.as_str()) =>
                {
                    OpResult::SidTaken
                }
                Op::SessionLogin { uid, sid, client, gateway } => {
                    self.presence.session_login(
                        uid,
                        *sid,
                        client,
                        *gateway,
                        cmd.at_ms,
                        index,
                        &mut fx.touched,
                    );
                    OpResult::Ok
                }
                Op::SessionLogout { uid, client, gateway } => {
                    self.presence.session_logout(
                        uid,
                        client,
                        *gateway,
                        cmd.at_ms,
                        index,
                        &mut fx.touched,
                    );
                    OpResult::Ok
                }
                Op::GatewayReset { gateway } => {
                    self.presence.gateway_reset(*gateway, cmd.at_ms, index, &mut fx.touched);
                    OpResult::Ok
                }
                Op::Msg(m) => OpResult::Msg(self.msgs.apply(m, cmd.at_ms, &mut fx.notices)),
                Op::Lib(l) => OpResult::Lib(self.lib.apply(l, cmd.at_ms)),
                Op::Profile(p) => {
                    let revision = profile::revision(index, profile_slot);
                    profile_slot += 1;
                    OpResult::Profile(self.profiles.apply(p, revision, cmd.at_ms))
                }
            };
            results.push(r);
        }
        self.presence.set_applied(index);
        results
    }

    /// Notes that an entry without commands (blank, membership) was applied.
    pub fn set_applied(&mut self, index: u64) {
        self.presence.set_applied(index);
    }

    pub fn applied(&self) -> u64 {
        self.presence.applied()
    }
}

/// One unit of the persisted form of the whole state: the value stored under
/// one storage key, and one item of a snapshot. Storage and snapshots deal in
/// these only, so they never name a domain (presence, messages, library).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A presence record.
    User(Record),
    /// One entry of the sid index: which uid `sid` resolves to. Stored, not
    /// derived, so that a reused sid points at the same user everywhere.
    Sid { sid: u64, uid: String },
    /// A message item (see [`messages::Key`]).
    Msg(messages::Item),
    /// A media-library item (see [`library::Key`]).
    Lib(library::Item),
    /// One entry of the presence intern table: client type `name` is `id`
    /// in records (ids are the order of first login in the log, so they are
    /// part of the replicated state). Last, so that files written before it
    /// existed still decode.
    ClientType { id: u32, name: String },
    /// A profile item (see [`profile::Key`]): after `ClientType` for the
    /// same reason.
    Profile(profile::Item),
}

/// First bytes of storage keys. Each domain owns one: `u` users, `s` sids,
/// `M` messages, `G` library, `P` profiles. `!` is left to the storage layer for its own
/// keys (applied log id, membership), so no item key ever starts with it.
const USER_KEY: u8 = b'u';
const SID_KEY: u8 = b's';
const CLIENT_TYPE_KEY: u8 = b'c';

fn user_key(uid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(uid.len() + 1);
    k.push(USER_KEY);
    k.extend_from_slice(uid.as_bytes());
    k
}

fn sid_key(sid: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(SID_KEY);
    k.extend_from_slice(&sid.to_be_bytes());
    k
}

impl Item {
    /// The storage key of this item: `u<uid>`, `s<sid BE>`, `M…`, `G…`.
    pub fn key(&self) -> Vec<u8> {
        match self {
            Item::User(r) => user_key(&r.uid),
            Item::Sid { sid, .. } => sid_key(*sid),
            Item::Msg(m) => m.key().bytes(),
            Item::Lib(l) => l.key().bytes(),
            Item::Profile(p) => p.key().bytes(),
            Item::ClientType { id, .. } => {
                let mut k = Vec::with_capacity(5);
                k.push(CLIENT_TYPE_KEY);
                k.extend_from_slice(&id.to_be_bytes());
                k
            }
        }
    }
}

impl State {
    /// Rebuilds a state from its persisted items (start-up, snapshot
    /// install); `applied` is the log index they stand for.
    pub fn from_items(items: impl IntoIterator<Item = Item>, applied: u64) -> State {
        let (mut records, mut sids, mut msgs, mut libs) = (vec![], vec![], vec![], vec![]);
        let mut types = vec![];
        let mut profiles = vec![];
        for it in items {
            match it {
                Item::User(r) => records.push(r),
                Item::Sid { sid, uid } => sids.push((sid, uid)),
                Item::Msg(m) => msgs.push(m),
                Item::Lib(l) => libs.push(l),
                Item::ClientType { id, name } => types.push((id, name)),
                Item::Profile(p) => profiles.push(p),
            }
        }
        State {
            presence: PresenceState::from_snapshot_parts(types, records, sids, applied),
            msgs: MsgState::from_items(msgs),
            lib: Library::from_items(libs),
            profiles: ProfileState::from_items(profiles),
        }
    }

    /// Every persisted item (a copy), for snapshots. Unordered: a writer
    /// that wants a stable file sorts by [`Item::key`] outside any lock.
    pub fn items(&self) -> Vec<Item> {
        let mut out: Vec<Item> =
            self.presence.records().map(|r| Item::User(r.to_record())).collect();
        out.extend(
            self.presence.sid_index().map(|(sid, uid)| Item::Sid { sid, uid: uid.to_owned() }),
        );
        out.extend(
            self.presence
                .client_types()
                .map(|(id, name)| Item::ClientType { id, name: name.to_owned() }),
        );
        out.extend(self.msgs.items().into_iter().map(Item::Msg));
        out.extend(self.lib.items().into_iter().map(Item::Lib));
        out.extend(self.profiles.items().into_iter().map(Item::Profile));
        out
    }

    /// A view of every persisted item for a snapshot, cheap to take under
    /// the state lock: presence records are shared copy-on-write (see
    /// [`PresenceState::snapshot`]); message and library items are copied.
    pub fn snapshot(&self) -> StateSnapshot {
        let mut others: Vec<Item> = self.msgs.items().into_iter().map(Item::Msg).collect();
        others.extend(self.lib.items().into_iter().map(Item::Lib));
        others.extend(self.profiles.items().into_iter().map(Item::Profile));
        StateSnapshot { presence: self.presence.snapshot(), others }
    }
}

/// What [`State::snapshot`] took: written out without the state lock.
pub struct StateSnapshot {
    presence: PresenceSnapshot,
    others: Vec<Item>,
}

impl StateSnapshot {
    /// Items the view holds (a snapshot file's count), counted without
    /// building them.
    pub fn len(&self) -> u64 {
        let p = &self.presence;
        (p.len() + p.sid_count() + p.client_types().count() + self.others.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands every item to `each` in ascending [`Item::key`] order (library
    /// `G`, messages `M`, profiles `P`, client types `c`, sids `s`, users `u`), building
    /// one presence item at a time; stops at the first error.
    pub fn try_for_each<E>(mut self, mut each: impl FnMut(Item) -> Result<(), E>) -> Result<(), E> {
        self.others.sort_by_cached_key(Item::key);
        for it in std::mem::take(&mut self.others) {
            each(it)?;
        }
        let p = &self.presence;
        for (id, name) in p.client_types() {
            each(Item::ClientType { id, name: name.to_owned() })?;
        }
        for (sid, uid) in p.sids_by_sid() {
            each(Item::Sid { sid, uid: uid.to_owned() })?;
        }
        for r in p.records_by_uid() {
            each(Item::User(r.to_record()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::Event;
    use std::collections::BTreeMap;

    fn login(uid: &str, sid: u64) -> Op {
        Op::Presence(Event::Login {
            uid: uid.into(),
            sid,
            client: "mobile".into(),
            accepts_strangers: Some(true),
            ext: BTreeMap::new(),
        })
    }

    fn pbind(uid: &str, module: &str) -> Op {
        Op::Profile(ProfileOp::Bind { uid: uid.into(), module: module.into(), account: "x".into() })
    }

    fn pset(uid: &str, source: &str, mood: &str) -> Op {
        Op::Profile(ProfileOp::SetProfile {
            uid: uid.into(),
            source: source.into(),
            profile: profile::Profile { mood: mood.into(), ..Default::default() },
        })
    }

    fn set_revision(r: &OpResult) -> u64 {
        match r {
            OpResult::Profile(ProfileResult::Set { revision, .. }) => *revision,
            other => panic!("not a profile update: {other:?}"),
        }
    }

    /// Two profile updates batched into one log entry (with other ops
    /// between them) get distinct revisions that grow in the order they
    /// applied, and below those of the next entry; coalescing keeps the
    /// newest: a third module's one pending item carries the second
    /// update, and the second update's source lost its item of the first.
    #[test]
    fn profile_updates_in_one_entry_get_increasing_revisions() {
        let mut st = State::default();
        let mut fx = Effects::default();
        let binds = vec![pbind("u", "qq"), pbind("u", "msn"), pbind("u", "icq")];
        st.apply(&Command { at_ms: 1, ops: binds }, 4, &mut fx);
        let ops = vec![pset("u", "qq", "first"), login("b", 2), pset("u", "msn", "second")];
        let rs = st.apply(&Command { at_ms: 2, ops }, 5, &mut fx);
        let (r1, r2) = (set_revision(&rs[0]), set_revision(&rs[2]));
        assert_eq!((r1, r2), (profile::revision(5, 0), profile::revision(5, 1)));
        assert!(r1 < r2);
        let u = st.profiles.user("u").unwrap();
        assert_eq!((u.revision, u.source.as_str()), (r2, "msn"));
        let mut pending: Vec<(String, u64, String)> = st
            .profiles
            .pending()
            .map(|i| (i.module.clone(), i.revision, i.profile.mood.clone()))
            .collect();
        pending.sort();
        assert_eq!(
            pending,
            vec![("icq".into(), r2, "second".into()), ("qq".into(), r2, "second".into())],
            "icq's item of the first coalesced into the second; msn's own item dropped"
        );
        let rs = st.apply(&Command { at_ms: 3, ops: vec![pset("u", "icq", "third")] }, 6, &mut fx);
        assert!(set_revision(&rs[0]) > r2);
        assert_eq!(State::from_items(st.items(), st.applied()), st);
    }

    /// A gateway login naming a sid another user holds is refused in apply
    /// (`SidTaken`) and changes nothing; the holder itself, and a login with
    /// sid 0, are applied as before (issue 16: the check is atomic with the
    /// login, so a gateway in a remote zone reads nothing from the leader).
    #[test]
    fn session_login_with_another_users_sid_is_refused_in_apply() {
        let mut st = State::default();
        let mut fx = Effects::default();
        let gw = |uid: &str, sid| Op::SessionLogin {
            uid: uid.into(),
            sid,
            client: "web".into(),
            gateway: 1,
        };
        let rs = st.apply(&Command { at_ms: 1, ops: vec![gw("a", 7)] }, 1, &mut fx);
        assert_eq!(rs, vec![OpResult::Ok]);
        let before = st.clone();
        let rs = st.apply(&Command { at_ms: 2, ops: vec![gw("b", 7)] }, 2, &mut fx);
        assert_eq!(rs, vec![OpResult::SidTaken]);
        assert_eq!(st.presence.sid_owner(7), Some("a"), "the sid stays a's");
        assert!(st.presence.get("b").is_none(), "b did not come online");
        assert_eq!(st.msgs, before.msgs);
        let rs = st.apply(&Command { at_ms: 3, ops: vec![gw("a", 7), gw("b", 0)] }, 3, &mut fx);
        assert_eq!(rs, vec![OpResult::Ok, OpResult::Ok]);
        assert!(st.presence.get("b").is_some());
    }

    /// The persisted items of a state (a snapshot's contents) rebuild an
    /// equal state after every command, including a sid moving to another
    /// user, a group deleted again and a profile update with its outbox
    /// item; no item key uses the storage's `!`.
    #[test]
    fn items_rebuild_the_state() {
        let mut st = State::default();
        let cmds = [
            vec![login("a", 1), login("b", 2)],
            vec![login("c", 1)], // sid 1 moves from a to c
            vec![Op::Msg(MsgOp::SetGroup { name: "g".into(), members: vec!["a".into()] })],
            vec![Op::Msg(MsgOp::SetGroup { name: "g".into(), members: vec![] })],
            vec![
                Op::Profile(ProfileOp::Bind {
                    uid: "a".into(),
                    module: "qq".into(),
                    account: "1".into(),
                }),
                Op::Profile(ProfileOp::Bind {
                    uid: "a".into(),
                    module: "msn".into(),
                    account: "m".into(),
                }),
                Op::Profile(ProfileOp::SetProfile {
                    uid: "a".into(),
                    source: "qq".into(),
                    profile: Default::default(),
                }),
            ],
        ];
        for (i, ops) in cmds.into_iter().enumerate() {
            let mut fx = Effects::default();
            st.apply(&Command { at_ms: 1000 + i as u64, ops }, i as u64 + 1, &mut fx);
            assert_eq!(State::from_items(st.items(), st.applied()), st, "after command {i}");
        }
        let items = st.items();
        assert!(items.iter().all(|i| i.key()[0] != b'!'), "no item key uses the storage's prefix");
        let rebuilt = State::from_items(items, st.applied());
        assert_eq!(rebuilt, st);
        assert_eq!(rebuilt.presence.sid_owner(1), Some("c"));
        assert_eq!(rebuilt.profiles.pending_count(), 1);
    }

    /// A snapshot view hands out exactly the items of the state at the time
    /// it was taken, in ascending key order, with the count its header
    /// gives, even after the state changed; rebuilding from them keeps the
    /// intern table (client type ids) as well as equality.
    #[test]
    fn snapshot_view_items_are_sorted_and_rebuild_the_state() {
        let mut st = State::default();
        let mut fx = Effects::default();
        let ops = vec![
            login("b", 2),
            Op::SessionLogin { uid: "a".into(), sid: 1, client: "web".into(), gateway: 4 },
            Op::Msg(MsgOp::SetGroup { name: "g".into(), members: vec!["a".into()] }),
            Op::Profile(ProfileOp::Bind {
                uid: "a".into(),
                module: "qq".into(),
                account: "1".into(),
            }),
            Op::Profile(ProfileOp::Bind {
                uid: "a".into(),
                module: "msn".into(),
                account: "m".into(),
            }),
            Op::Profile(ProfileOp::SetProfile {
                uid: "a".into(),
                source: "msn".into(),
                profile: Default::default(),
            }),
        ];
        st.apply(&Command { at_ms: 10, ops }, 1, &mut fx);
        let frozen = st.clone();
        let view = st.snapshot();
        st.apply(&Command { at_ms: 11, ops: vec![login("c", 3)] }, 2, &mut fx);
        let n = view.len();
        let mut items = Vec::new();
        view.try_for_each(|it| {
            items.push(it);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(items.len() as u64, n);
        let keys: Vec<Vec<u8>> = items.iter().map(Item::key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "ascending, no key twice");
        let rebuilt = State::from_items(items, frozen.applied());
        assert_eq!(rebuilt, frozen);
        let ids = |s: &State| {
            s.presence.client_types().map(|(i, n)| (i, n.to_owned())).collect::<Vec<_>>()
        };
        assert_eq!(ids(&rebuilt), ids(&frozen));
        assert_eq!(ids(&frozen), vec![(0, "mobile".into()), (1, "web".into())]);
    }
}

//! Profile settings sync across bound IM modules (MISSION Y1, Y2; issue 17).
//!
//! A user binds `(module, account)` pairs to one Herald identity (one
//! account of one module belongs to one identity at a time). When the
//! profile (avatar, signature, mood, bounded extra keys) changes in one
//! bound module, the update and one outbox item per *other* bound account
//! are committed by the same log entry (claims 1, 6). The leader's
//! dispatcher (`herald-node`'s `profile::dispatch`) delivers the items and
//! writes each attempt's outcome back through the log
//! ([`ProfileOp::OutboxAttempted`]), so a new leader resumes every pending
//! item with its attempt count and next-attempt time.
//!
//! Items for the same target `(module, account)` coalesce: a newer revision
//! replaces a pending (or dead) older one, so a receiver ends with the
//! latest and at most one item per target exists at a time. An update from
//! a module also drops that module's own pending (or dead) item of an older
//! update: the module's server holds the newer value already, and the older
//! one must not take it back.
//!
//! Every update gets its own revision, [`revision`]`(index, slot)`: the log
//! index of its entry times [`REVISION_SLOTS`] plus its position among the
//! entry's profile ops, so updates that the group commit batched into one
//! entry still get distinct revisions in the order they applied. Revisions
//! grow strictly with log order: receivers order updates by them.
//!
//! Deterministic and free of I/O like the rest of [`crate::state`]: which
//! modules are supported is configuration, checked by the node before it
//! writes; times come from the command's `at_ms` or are stamped into the op
//! by the leader.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Longest module id, bytes: ids are short names from the XML list
/// (`qq`, `msn`), and they appear in every outbox item and metric label.
pub const MAX_MODULE_BYTES: usize = 64;
/// Longest account, bytes: a login name (number, e-mail address) is far
/// shorter; it is part of every outbox item and its storage key.
pub const MAX_ACCOUNT_BYTES: usize = 256;
/// Bindings one user may hold: a person has a handful of IM accounts; each
/// binding becomes an outbox item on every update, so this bounds the
/// fan-out of one log entry.
pub const MAX_BINDINGS_PER_USER: usize = 16;
/// Longest `avatar` (a URL or media id), bytes: 2 KiB is the common
/// practical URL limit.
pub const MAX_AVATAR_BYTES: usize = 2048;
/// Longest `signature`, bytes: a status line of a few hundred characters in
/// any script.
pub const MAX_SIGNATURE_BYTES: usize = 1024;
/// Longest `mood`, bytes: one word or emoji sequence.
pub const MAX_MOOD_BYTES: usize = 256;
/// Extra settings keys one profile may carry.
pub const MAX_EXTRA_KEYS: usize = 16;
/// Longest extra key, bytes.
pub const MAX_EXTRA_KEY_BYTES: usize = 64;
/// Longest extra value, bytes.
pub const MAX_EXTRA_VALUE_BYTES: usize = 1024;
/// Largest profile in all (fields, keys and values), bytes: the profile is
/// copied into each outbox item (up to [`MAX_BINDINGS_PER_USER`] per
/// entry), so 8 KiB bounds one update's log entry to ~130 KiB.
pub const MAX_PROFILE_BYTES: usize = 8 * 1024;
/// Longest last-error text kept on an item: enough for a status line and
/// the start of a reason; it is replicated with every failed attempt.
pub const MAX_ERROR_BYTES: usize = 256;

/// Revisions one log entry can hand out: a profile revision is
/// `index * REVISION_SLOTS + slot`, `slot` the op's position among the
/// entry's profile ops. 2^16 leaves 48 bits for the log index (2.8 · 10^14
/// entries) and is more than the group commit ever batches (the node's
/// batch bound is asserted below this at compile time).
pub const REVISION_SLOTS: u64 = 1 << 16;

/// The revision of the profile op at position `slot` among the profile ops
/// of the entry at log index `index`.
///
/// Invariant: strictly increasing in log order — `(index, slot) <
/// (index', slot')` lexicographically implies `revision(index, slot) <
/// revision(index', slot')` — for `slot < REVISION_SLOTS` (a larger slot
/// cannot occur: see [`REVISION_SLOTS`]; it is clamped, so revisions still
/// never go down). Revisions written before this scheme were the bare log
/// index, which is below `index * REVISION_SLOTS` of every later entry, so
/// an old snapshot's revisions still order before every new one.
pub fn revision(index: u64, slot: u64) -> u64 {
    debug_assert!(slot < REVISION_SLOTS, "slot {slot} out of range");
    index.saturating_mul(REVISION_SLOTS).saturating_add(slot.min(REVISION_SLOTS - 1))
}

/// A profile document: what one module's settings say about the user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// A URL or a media id.
    #[serde(default)]
    pub avatar: String,
    #[serde(default)]
    pub signature: String,
    #[serde(default)]
    pub mood: String,
    /// Other settings, bounded by [`MAX_EXTRA_KEYS`].
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl Profile {
    /// Bytes of the document's text (fields, keys, values).
    pub fn bytes(&self) -> usize {
        self.avatar.len()
            + self.signature.len()
            + self.mood.len()
            + self.extra.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Why the document is out of bounds, if it is.
    pub fn check(&self) -> Result<(), String> {
        let field = |name: &str, v: &str, max: usize| {
            if v.len() > max {
                Err(format!("{name} is {} bytes; at most {max}", v.len()))
            } else if v.chars().any(char::is_control) {
                Err(format!("{name} holds control characters"))
            } else {
                Ok(())
            }
        };
        field("avatar", &self.avatar, MAX_AVATAR_BYTES)?;
        field("signature", &self.signature, MAX_SIGNATURE_BYTES)?;
        field("mood", &self.mood, MAX_MOOD_BYTES)?;
        if self.extra.len() > MAX_EXTRA_KEYS {
            return Err(format!("{} extra keys; at most {MAX_EXTRA_KEYS}", self.extra.len()));
        }
        for (k, v) in &self.extra {
            if k.is_empty() {
                return Err("an extra key is empty".into());
            }
            field("an extra key", k, MAX_EXTRA_KEY_BYTES)?;
            field(&format!("extra {k:?}"), v, MAX_EXTRA_VALUE_BYTES)?;
        }
        if self.bytes() > MAX_PROFILE_BYTES {
            return Err(format!(
                "the profile is {} bytes; at most {MAX_PROFILE_BYTES}",
                self.bytes()
            ));
        }
        Ok(())
    }
}

/// Why a module id or account is out of bounds, if it is.
pub fn check_target(module: &str, account: &str) -> Result<(), String> {
    if module.is_empty() || module.len() > MAX_MODULE_BYTES || module.chars().any(char::is_control)
    {
        return Err(format!("a module id is 1..={MAX_MODULE_BYTES} printable bytes"));
    }
    if account.is_empty()
        || account.len() > MAX_ACCOUNT_BYTES
        || account.chars().any(char::is_control)
    {
        return Err(format!("an account is 1..={MAX_ACCOUNT_BYTES} printable bytes"));
    }
    Ok(())
}

/// One bound account: `(module, account)`.
pub type Target = (String, String);

/// One user's bindings and current profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub uid: String,
    /// Sorted; at most [`MAX_BINDINGS_PER_USER`].
    pub bindings: BTreeSet<Target>,
    /// The last profile set (None: never set).
    pub profile: Option<Profile>,
    /// Revision of the last update ([`revision`]; 0: never set).
    pub revision: u64,
    /// The module the last update came from.
    pub source: String,
    pub updated_ms: u64,
}

/// An update waiting for (or given up on by) its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Unique and stable across attempts (the `webhook-id`).
    pub id: u64,
    pub uid: String,
    /// The target: the module whose server receives it, and the account.
    pub module: String,
    pub account: String,
    /// The module the update came from.
    pub source: String,
    /// The update's profile revision ([`revision`]).
    pub revision: u64,
    pub profile: Profile,
    pub created_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the dispatcher may try next (cluster time, ms).
    pub next_attempt_ms: u64,
    /// Why the last attempt failed (empty: none failed yet).
    pub last_error: String,
    /// When it went to the dead-letter list (None: pending).
    pub dead_ms: Option<u64>,
}

/// The outcome of one delivery attempt, as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attempt {
    /// The receiver answered 2xx: the item is done.
    Delivered,
    /// It failed; try again at `next_ms` (stamped by the leader).
    Retry { next_ms: u64, error: String },
    /// It failed for good (410, or past the horizon): dead-letter it.
    Dead { error: String },
}

/// Operations on profiles and the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileOp {
    /// Binds `(module, account)` to `uid`. The node checked the module is
    /// supported before writing.
    Bind { uid: String, module: String, account: String },
    /// Unbinds it; its pending and dead items go too.
    Unbind { uid: String, module: String, account: String },
    /// A profile update from `source`: one outbox item per other bound
    /// account, in this same entry.
    SetProfile { uid: String, source: String, profile: Profile },
    /// The result of a delivery attempt of item `id`.
    OutboxAttempted { id: u64, attempt: Attempt },
    /// Sends item `id` again now: a dead item goes back to pending with its
    /// attempts reset; a pending one is made due at once.
    OutboxResend { id: u64 },
}

/// What a [`ProfileOp`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileResult {
    /// The op changed something (`true`) or found nothing to change.
    Done(bool),
    /// SetProfile: the revision and the outbox items it created.
    Set { revision: u64, items: Vec<u64>, coalesced: u32 },
    /// Refused with a stable code (see [`refusal`]); nothing changed.
    Refused(String),
}

/// The codes a [`ProfileResult::Refused`] carries (the node's error catalog
/// lists every one).
pub mod refusal {
    /// The account is bound to another identity.
    pub const ACCOUNT_BOUND_ELSEWHERE: &str = "account_bound_elsewhere";
    /// The user holds [`super::MAX_BINDINGS_PER_USER`] bindings already.
    pub const TOO_MANY_BINDINGS: &str = "too_many_bindings";
    /// An unbind of a binding the user does not hold.
    pub const NOT_BOUND: &str = "not_bound";
    /// An update from a module the user has not bound.
    pub const MODULE_NOT_BOUND: &str = "module_not_bound";
    /// A profile over its bounds.
    pub const PROFILE_TOO_LARGE: &str = "profile_too_large";
    /// A module id or account out of bounds.
    pub const INVALID_BINDING: &str = "invalid_binding";
    /// A resend of an item that does not exist.
    pub const UNKNOWN_OUTBOX_ITEM: &str = "unknown_outbox_item";
    /// Every refusal (all are answered to clients).
    pub const ANSWERED: &[&str] = &[
        ACCOUNT_BOUND_ELSEWHERE,
        TOO_MANY_BINDINGS,
        NOT_BOUND,
        MODULE_NOT_BOUND,
        PROFILE_TOO_LARGE,
        INVALID_BINDING,
        UNKNOWN_OUTBOX_ITEM,
    ];
}

fn refused(code: &str) -> ProfileResult {
    ProfileResult::Refused(code.to_owned())
}

/// A persisted key: `P` + tag + bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    User(String),
    Pending(u64),
    Dead(u64),
    NextId,
}

impl Key {
    pub fn bytes(&self) -> Vec<u8> {
        let mut k = vec![b'P'];
        match self {
            Key::User(uid) => {
                k.push(b'u');
                k.extend_from_slice(uid.as_bytes());
            }
            Key::Pending(id) => {
                k.push(b'o');
                k.extend_from_slice(&id.to_be_bytes());
            }
            Key::Dead(id) => {
                k.push(b'd');
                k.extend_from_slice(&id.to_be_bytes());
            }
            Key::NextId => k.push(b'n'),
        }
        k
    }
}

/// A persisted item: the value of a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    User(UserProfile),
    Pending(OutboxItem),
    Dead(OutboxItem),
    /// The next outbox id to hand out.
    NextId(u64),
}

impl Item {
    pub fn key(&self) -> Key {
        match self {
            Item::User(u) => Key::User(u.uid.clone()),
            Item::Pending(i) => Key::Pending(i.id),
            Item::Dead(i) => Key::Dead(i.id),
            Item::NextId(_) => Key::NextId,
        }
    }
}

/// Every binding, profile and outbox item.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProfileState {
    users: BTreeMap<String, UserProfile>,
    pending: BTreeMap<u64, OutboxItem>,
    dead: BTreeMap<u64, OutboxItem>,
    next_id: u64,
    /// (module, account) → uid (derived from the users' bindings).
    owners: BTreeMap<Target, String>,
    /// (module, account) → its pending item (derived).
    pending_by_target: BTreeMap<Target, u64>,
    /// (module, account) → its dead item (derived).
    dead_by_target: BTreeMap<Target, u64>,
}

fn target_of(i: &OutboxItem) -> Target {
    (i.module.clone(), i.account.clone())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl ProfileState {
    pub fn from_items(items: impl IntoIterator<Item = Item>) -> Self {
        let mut s = ProfileState::default();
        for it in items {
            match it {
                Item::User(u) => {
                    for t in &u.bindings {
                        s.owners.insert(t.clone(), u.uid.clone());
                    }
                    s.users.insert(u.uid.clone(), u);
                }
                Item::Pending(i) => {
                    s.pending_by_target.insert(target_of(&i), i.id);
                    s.pending.insert(i.id, i);
                }
                Item::Dead(i) => {
                    s.dead_by_target.insert(target_of(&i), i.id);
                    s.dead.insert(i.id, i);
                }
                Item::NextId(n) => s.next_id = n,
            }
        }
        s
    }

    /// Every item (a copy), for snapshots, in no particular order.
    pub fn items(&self) -> Vec<Item> {
        let mut out: Vec<Item> = self.users.values().cloned().map(Item::User).collect();
        out.extend(self.pending.values().cloned().map(Item::Pending));
        out.extend(self.dead.values().cloned().map(Item::Dead));
        if self.next_id > 0 {
            out.push(Item::NextId(self.next_id));
        }
        out
    }

    /// The refusal `op` would get from [`apply`](Self::apply) on this
    /// state, without changing it: the node asks before it writes, so a
    /// refused request writes nothing to the log (apply decides for good
    /// when the state changed in between).
    pub fn refusal(&self, op: &ProfileOp) -> Option<&'static str> {
        match op {
            ProfileOp::Bind { uid, module, account } => {
                if check_target(module, account).is_err() || uid.is_empty() {
                    return Some(refusal::INVALID_BINDING);
                }
                let t = (module.clone(), account.clone());
                match self.owners.get(&t) {
                    Some(owner) if owner == uid => None,
                    Some(_) => Some(refusal::ACCOUNT_BOUND_ELSEWHERE),
                    None => self
                        .users
                        .get(uid)
                        .is_some_and(|u| u.bindings.len() >= MAX_BINDINGS_PER_USER)
                        .then_some(refusal::TOO_MANY_BINDINGS),
                }
            }
            ProfileOp::Unbind { uid, module, account } => {
                let t = (module.clone(), account.clone());
                (self.owners.get(&t) != Some(uid)).then_some(refusal::NOT_BOUND)
            }
            ProfileOp::SetProfile { uid, source, profile } => {
                if profile.check().is_err() {
                    return Some(refusal::PROFILE_TOO_LARGE);
                }
                let bound = self
                    .users
                    .get(uid)
                    .is_some_and(|u| u.bindings.iter().any(|(m, _)| m == source));
                (!bound).then_some(refusal::MODULE_NOT_BOUND)
            }
            ProfileOp::OutboxAttempted { .. } => None,
            ProfileOp::OutboxResend { id } => (!self.pending.contains_key(id)
                && !self.dead.contains_key(id))
            .then_some(refusal::UNKNOWN_OUTBOX_ITEM),
        }
    }

    /// Applies `op` at cluster time `at_ms`; `revision` is the op's
    /// [`revision`] (its entry's index and its position among the entry's
    /// profile ops), the revision a `SetProfile` stores.
    pub fn apply(&mut self, op: &ProfileOp, revision: u64, at_ms: u64) -> ProfileResult {
        if let Some(code) = self.refusal(op) {
            return refused(code);
        }
        match op {
            ProfileOp::Bind { uid, module, account } => {
                let t = (module.clone(), account.clone());
                if self.owners.contains_key(&t) {
                    return ProfileResult::Done(false);
                }
                let u = self
                    .users
                    .entry(uid.clone())
                    .or_insert_with(|| UserProfile { uid: uid.clone(), ..Default::default() });
                u.bindings.insert(t.clone());
                self.owners.insert(t, uid.clone());
                ProfileResult::Done(true)
            }
            ProfileOp::Unbind { uid, module, account } => {
                let t = (module.clone(), account.clone());
                self.owners.remove(&t);
                if let Some(u) = self.users.get_mut(uid) {
                    u.bindings.remove(&t);
                    if u.bindings.is_empty() && u.profile.is_none() {
                        self.users.remove(uid);
                    }
                }
                if let Some(id) = self.pending_by_target.remove(&t) {
                    self.pending.remove(&id);
                }
                if let Some(id) = self.dead_by_target.remove(&t) {
                    self.dead.remove(&id);
                }
                ProfileResult::Done(true)
            }
            ProfileOp::SetProfile { uid, source, profile } => {
                let Some(u) = self.users.get_mut(uid) else {
                    return refused(refusal::MODULE_NOT_BOUND);
                };
                u.profile = Some(profile.clone());
                u.revision = revision;
                u.source = source.clone();
                u.updated_ms = at_ms;
                let (own, targets): (Vec<Target>, Vec<Target>) =
                    u.bindings.iter().cloned().partition(|(m, _)| m == source);
                let mut items = Vec::with_capacity(targets.len());
                let mut coalesced = 0;
                // The source module's server holds this profile already: an
                // item of an older update still pending (or dead) for its
                // own account would take it back to the older value (found
                // by the jepsen outbox workload, seed 19). Every existing
                // item is older: revisions grow with log order.
                for t in own {
                    if let Some(old) = self.pending_by_target.remove(&t) {
                        self.pending.remove(&old);
                        coalesced += 1;
                    }
                    if let Some(old) = self.dead_by_target.remove(&t) {
                        self.dead.remove(&old);
                    }
                }
                for t in targets {
                    if let Some(old) = self.pending_by_target.remove(&t) {
                        self.pending.remove(&old);
                        coalesced += 1;
                    }
                    if let Some(old) = self.dead_by_target.remove(&t) {
                        self.dead.remove(&old);
                    }
                    self.next_id += 1;
                    let id = self.next_id;
                    self.pending.insert(
                        id,
                        OutboxItem {
                            id,
                            uid: uid.clone(),
                            module: t.0.clone(),
                            account: t.1.clone(),
                            source: source.clone(),
                            revision,
                            profile: profile.clone(),
                            created_ms: at_ms,
                            attempts: 0,
                            next_attempt_ms: at_ms,
                            last_error: String::new(),
                            dead_ms: None,
                        },
                    );
                    self.pending_by_target.insert(t, id);
                    items.push(id);
                }
                ProfileResult::Set { revision, items, coalesced }
            }
            ProfileOp::OutboxAttempted { id, attempt } => {
                let Some(item) = self.pending.get_mut(id) else {
                    // Superseded by a newer revision, unbound, or reported
                    // twice (a retried write): nothing to do.
                    return ProfileResult::Done(false);
                };
                match attempt {
                    Attempt::Delivered => {
                        let t = target_of(item);
                        self.pending.remove(id);
                        self.pending_by_target.remove(&t);
                    }
                    Attempt::Retry { next_ms, error } => {
                        item.attempts = item.attempts.saturating_add(1);
                        item.next_attempt_ms = *next_ms;
                        item.last_error = truncate(error, MAX_ERROR_BYTES);
                    }
                    Attempt::Dead { error } => {
                        let mut item = self.pending.remove(id).expect("found above");
                        let t = target_of(&item);
                        self.pending_by_target.remove(&t);
                        item.attempts = item.attempts.saturating_add(1);
                        item.last_error = truncate(error, MAX_ERROR_BYTES);
                        item.dead_ms = Some(at_ms);
                        if let Some(old) = self.dead_by_target.insert(t, item.id) {
                            self.dead.remove(&old);
                        }
                        self.dead.insert(item.id, item);
                    }
                }
                ProfileResult::Done(true)
            }
            ProfileOp::OutboxResend { id } => {
                if let Some(item) = self.pending.get_mut(id) {
                    item.next_attempt_ms = at_ms;
                    return ProfileResult::Done(true);
                }
                let Some(mut item) = self.dead.remove(id) else {
                    return refused(refusal::UNKNOWN_OUTBOX_ITEM);
                };
                let t = target_of(&item);
                self.dead_by_target.remove(&t);
                item.attempts = 0;
                item.next_attempt_ms = at_ms;
                item.dead_ms = None;
                // A dead item exists only while no pending one does for its
                // target (a newer update removes it), so nothing coalesces.
                self.pending_by_target.insert(t, item.id);
                self.pending.insert(item.id, item);
                ProfileResult::Done(true)
            }
        }
    }

    pub fn user(&self, uid: &str) -> Option<&UserProfile> {
        self.users.get(uid)
    }

    /// Who `(module, account)` is bound to.
    pub fn owner(&self, module: &str, account: &str) -> Option<&str> {
        self.owners.get(&(module.to_owned(), account.to_owned())).map(String::as_str)
    }

    /// Pending items, oldest id first.
    pub fn pending(&self) -> impl Iterator<Item = &OutboxItem> {
        self.pending.values()
    }

    /// Dead-letter items, oldest id first.
    pub fn dead(&self) -> impl Iterator<Item = &OutboxItem> {
        self.dead.values()
    }

    pub fn pending_item(&self, id: u64) -> Option<&OutboxItem> {
        self.pending.get(&id)
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn dead_count(&self) -> usize {
        self.dead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(uid: &str, m: &str, a: &str) -> ProfileOp {
        ProfileOp::Bind { uid: uid.into(), module: m.into(), account: a.into() }
    }
    fn unbind(uid: &str, m: &str, a: &str) -> ProfileOp {
        ProfileOp::Unbind { uid: uid.into(), module: m.into(), account: a.into() }
    }
    fn set(uid: &str, source: &str, mood: &str) -> ProfileOp {
        ProfileOp::SetProfile {
            uid: uid.into(),
            source: source.into(),
            profile: Profile { mood: mood.into(), ..Default::default() },
        }
    }
    fn refused_with(r: ProfileResult, code: &str) {
        assert_eq!(r, ProfileResult::Refused(code.into()));
    }

    /// Applies ops at indexes 1.. (on a fresh state) and checks after each that the persisted
    /// items rebuild an equal state.
    fn run(s: &mut ProfileState, ops: &[ProfileOp]) -> Vec<ProfileResult> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| {
                let idx = 1 + i as u64;
                let r = s.apply(op, idx, 1000 + idx);
                assert_eq!(ProfileState::from_items(s.items()), *s, "after op {i}");
                r
            })
            .collect()
    }

    /// One account of one module belongs to one identity: a second bind by
    /// another uid is refused and changes nothing; binding it again to the
    /// same uid is a no-op; after an unbind another uid may take it; the
    /// per-user cap and the bounds of module and account refuse too.
    #[test]
    fn profile_bindings_one_identity_per_account() {
        let mut s = ProfileState::default();
        let r = run(&mut s, &[bind("alice", "qq", "123"), bind("alice", "qq", "123")]);
        assert_eq!(r, vec![ProfileResult::Done(true), ProfileResult::Done(false)]);
        let before = s.clone();
        refused_with(s.apply(&bind("bob", "qq", "123"), 3, 3), refusal::ACCOUNT_BOUND_ELSEWHERE);
        assert_eq!(s, before, "a refusal stores nothing");
        assert_eq!(s.owner("qq", "123"), Some("alice"));
        refused_with(s.apply(&unbind("bob", "qq", "123"), 4, 4), refusal::NOT_BOUND);
        assert_eq!(s.apply(&unbind("alice", "qq", "123"), 5, 5), ProfileResult::Done(true));
        assert!(s.user("alice").is_none(), "a user with nothing left is forgotten");
        assert_eq!(s.apply(&bind("bob", "qq", "123"), 6, 6), ProfileResult::Done(true));
        for i in 0..MAX_BINDINGS_PER_USER - 1 {
            assert_eq!(
                s.apply(&bind("bob", "msn", &format!("b{i}")), 7, 7),
                ProfileResult::Done(true)
            );
        }
        let before = s.clone();
        refused_with(s.apply(&bind("bob", "msn", "one-more"), 8, 8), refusal::TOO_MANY_BINDINGS);
        refused_with(s.apply(&bind("carol", "", "x"), 8, 8), refusal::INVALID_BINDING);
        let long = "a".repeat(MAX_ACCOUNT_BYTES + 1);
        refused_with(s.apply(&bind("carol", "qq", &long), 8, 8), refusal::INVALID_BINDING);
        assert_eq!(s, before);
    }

    /// An update commits one item per other bound account (not the source
    /// module's accounts) in the same apply, with the entry's index as
    /// revision; an update from an unbound module, or an oversize profile,
    /// is refused and stores nothing.
    #[test]
    fn profile_update_fans_out_to_the_other_modules() {
        let mut s = ProfileState::default();
        run(
            &mut s,
            &[
                bind("u", "qq", "1"),
                bind("u", "msn", "u@x"),
                bind("u", "fetion", "9"),
                bind("v", "qq", "2"),
            ],
        );
        let r = s.apply(&set("u", "qq", "happy"), 10, 5000);
        let ProfileResult::Set { revision, items, coalesced } = r else { panic!("{r:?}") };
        assert_eq!((revision, items.len(), coalesced), (10, 2, 0));
        let targets: Vec<(&str, &str, u64, u64)> = s
            .pending()
            .map(|i| (i.module.as_str(), i.account.as_str(), i.revision, i.next_attempt_ms))
            .collect();
        assert_eq!(targets, vec![("fetion", "9", 10, 5000), ("msn", "u@x", 10, 5000)]);
        assert!(s.pending().all(|i| i.source == "qq" && i.profile.mood == "happy"));
        let u = s.user("u").unwrap();
        assert_eq!((u.revision, u.source.as_str()), (10, "qq"));
        let before = s.clone();
        refused_with(s.apply(&set("u", "icq", "x"), 11, 5001), refusal::MODULE_NOT_BOUND);
        refused_with(s.apply(&set("nobody", "qq", "x"), 11, 5001), refusal::MODULE_NOT_BOUND);
        let big = Profile { signature: "s".repeat(MAX_SIGNATURE_BYTES + 1), ..Default::default() };
        let op = ProfileOp::SetProfile { uid: "u".into(), source: "qq".into(), profile: big };
        refused_with(s.apply(&op, 11, 5001), refusal::PROFILE_TOO_LARGE);
        assert_eq!(s, before, "refusals store nothing");
        // Only one module bound: the update is stored, nothing to send.
        let r = s.apply(&set("v", "qq", "x"), 12, 5002);
        assert_eq!(r, ProfileResult::Set { revision: 12, items: vec![], coalesced: 0 });
    }

    /// A newer update replaces the pending (and the dead) item of the same
    /// target with a new id; a stale attempt report for the replaced id is
    /// ignored; the target never has two items.
    #[test]
    fn profile_items_coalesce_per_target() {
        let mut s = ProfileState::default();
        run(&mut s, &[bind("u", "qq", "1"), bind("u", "msn", "m")]);
        let ProfileResult::Set { items: first, .. } = s.apply(&set("u", "qq", "a"), 3, 10) else {
            panic!()
        };
        let ProfileResult::Set { items: second, coalesced, .. } =
            s.apply(&set("u", "qq", "b"), 4, 11)
        else {
            panic!()
        };
        assert_eq!(coalesced, 1);
        assert_ne!(first, second);
        assert_eq!(s.pending_count(), 1);
        let item = s.pending().next().unwrap();
        assert_eq!((item.revision, item.profile.mood.as_str()), (4, "b"));
        let stale = ProfileOp::OutboxAttempted { id: first[0], attempt: Attempt::Delivered };
        assert_eq!(s.apply(&stale, 5, 12), ProfileResult::Done(false));
        assert_eq!(s.pending_count(), 1);
        // Dead, then superseded by a newer update: the dead letter goes.
        let dead = ProfileOp::OutboxAttempted {
            id: second[0],
            attempt: Attempt::Dead { error: "410 Gone".into() },
        };
        assert_eq!(s.apply(&dead, 6, 13), ProfileResult::Done(true));
        assert_eq!((s.pending_count(), s.dead_count()), (0, 1));
        s.apply(&set("u", "msn", "c"), 7, 14);
        s.apply(&set("u", "qq", "d"), 8, 15);
        // qq's own newer "d" dropped its pending "c"; msn gets "d".
        assert_eq!((s.pending_count(), s.dead_count()), (1, 0));
        assert_eq!(ProfileState::from_items(s.items()), s);
    }

    /// An update from a module drops that module's own pending item and
    /// its own dead item of an older update (from another module): the
    /// source holds the newer value, and the older one must not take it
    /// back; the other targets get the newer update.
    #[test]
    fn profile_update_from_a_module_supersedes_its_own_older_items() {
        let mut s = ProfileState::default();
        run(&mut s, &[bind("u", "qq", "1"), bind("u", "msn", "m"), bind("u", "icq", "i")]);
        let ProfileResult::Set { items, .. } = s.apply(&set("u", "qq", "a"), 10, 10) else {
            panic!()
        };
        assert_eq!(s.pending_count(), 2, "msn and icq");
        let msn_item = s.pending().find(|i| i.module == "msn").unwrap().id;
        assert!(items.contains(&msn_item));
        let ProfileResult::Set { items, coalesced, .. } = s.apply(&set("u", "msn", "b"), 11, 11)
        else {
            panic!()
        };
        assert_eq!((items.len(), coalesced), (2, 2), "qq and icq new; icq's and msn's old gone");
        let mut left: Vec<(String, u64, String)> =
            s.pending().map(|i| (i.module.clone(), i.revision, i.profile.mood.clone())).collect();
        left.sort();
        assert_eq!(left, vec![("icq".into(), 11, "b".into()), ("qq".into(), 11, "b".into())]);
        // A dead item of icq goes too when icq itself sends a newer update.
        let icq_item = s.pending().find(|i| i.module == "icq").unwrap().id;
        let dead = ProfileOp::OutboxAttempted {
            id: icq_item,
            attempt: Attempt::Dead { error: "410 Gone".into() },
        };
        s.apply(&dead, 12, 12);
        assert_eq!((s.pending_count(), s.dead_count()), (1, 1));
        let ProfileResult::Set { coalesced, .. } = s.apply(&set("u", "icq", "c"), 13, 13) else {
            panic!()
        };
        assert_eq!(coalesced, 1, "qq's pending 'b' replaced");
        assert_eq!(s.dead_count(), 0, "icq's own dead 'b' dropped");
        let mut left: Vec<(String, u64, String)> =
            s.pending().map(|i| (i.module.clone(), i.revision, i.profile.mood.clone())).collect();
        left.sort();
        assert_eq!(left, vec![("msn".into(), 13, "c".into()), ("qq".into(), 13, "c".into())]);
        assert_eq!(ProfileState::from_items(s.items()), s);
    }

    /// Revisions grow strictly with log order, within an entry (slots) and
    /// across entries, and every one is above the bare log indexes that
    /// revisions were before the slot scheme (old snapshots order first).
    #[test]
    fn profile_revisions_grow_with_log_order() {
        let order = [(1, 0), (1, 1), (1, REVISION_SLOTS - 1), (2, 0), (2, 7), (1 << 40, 3)];
        for w in order.windows(2) {
            assert!(revision(w[0].0, w[0].1) < revision(w[1].0, w[1].1), "{w:?}");
        }
        for (index, slot) in order {
            assert!(revision(index, slot) > index, "above the old revision of its entry");
            assert!(revision(index + 1, slot) > index + 1);
        }
    }

    /// Attempts are recorded: a retry counts the attempt, stamps the next
    /// time and keeps the (truncated) error; delivered removes the item;
    /// dead moves it to the dead-letter list with the error; a resend puts
    /// a dead item back with its attempts reset and the same id, and makes
    /// a pending one due now; an unknown id is refused. Unbinding drops
    /// the target's items.
    #[test]
    fn profile_outbox_attempts_dead_letters_and_resend() {
        let mut s = ProfileState::default();
        run(&mut s, &[bind("u", "qq", "1"), bind("u", "msn", "m"), bind("u", "icq", "i")]);
        let ProfileResult::Set { items, .. } = s.apply(&set("u", "qq", "a"), 4, 100) else {
            panic!()
        };
        let (a, b) = (items[0], items[1]);
        let long = "é".repeat(MAX_ERROR_BYTES);
        let retry = |next_ms, error: &str| ProfileOp::OutboxAttempted {
            id: a,
            attempt: Attempt::Retry { next_ms, error: error.into() },
        };
        s.apply(&retry(200, "500"), 5, 150);
        s.apply(&retry(400, &long), 6, 250);
        let it = s.pending_item(a).unwrap();
        assert_eq!((it.attempts, it.next_attempt_ms), (2, 400));
        assert!(it.last_error.len() <= MAX_ERROR_BYTES && it.last_error.starts_with('é'));
        let dead = ProfileOp::OutboxAttempted {
            id: a,
            attempt: Attempt::Dead { error: "horizon".into() },
        };
        s.apply(&dead, 7, 500);
        let d = s.dead().next().unwrap().clone();
        assert_eq!(
            (d.id, d.attempts, d.dead_ms, d.last_error.as_str()),
            (a, 3, Some(500), "horizon")
        );
        assert_eq!(s.apply(&ProfileOp::OutboxResend { id: a }, 8, 600), ProfileResult::Done(true));
        let it = s.pending_item(a).unwrap();
        assert_eq!((it.attempts, it.next_attempt_ms, it.dead_ms), (0, 600, None));
        assert_eq!(it.last_error, "horizon", "the last error stays visible");
        assert_eq!(s.dead_count(), 0);
        s.apply(
            &ProfileOp::OutboxAttempted {
                id: b,
                attempt: Attempt::Retry { next_ms: 9999, error: "x".into() },
            },
            9,
            700,
        );
        s.apply(&ProfileOp::OutboxResend { id: b }, 10, 800);
        assert_eq!(s.pending_item(b).unwrap().next_attempt_ms, 800);
        refused_with(
            s.apply(&ProfileOp::OutboxResend { id: 999 }, 11, 900),
            refusal::UNKNOWN_OUTBOX_ITEM,
        );
        s.apply(&ProfileOp::OutboxAttempted { id: b, attempt: Attempt::Delivered }, 12, 1000);
        assert!(s.pending_item(b).is_none());
        let target = s.pending_item(a).map(|i| (i.module.clone(), i.account.clone())).unwrap();
        s.apply(&unbind("u", &target.0, &target.1), 13, 1100);
        assert_eq!(s.pending_count(), 0, "unbinding drops the target's item");
        assert_eq!(ProfileState::from_items(s.items()), s);
    }

    /// `refusal` (what the node asks before writing) names exactly the
    /// refusal `apply` answers, and None exactly when apply does not refuse.
    #[test]
    fn profile_refusal_predicts_apply() {
        let mut s = ProfileState::default();
        run(&mut s, &[bind("u", "qq", "1"), bind("u", "msn", "m")]);
        let big = Profile { mood: "m".repeat(MAX_MOOD_BYTES + 1), ..Default::default() };
        let ops = vec![
            bind("v", "qq", "1"),
            bind("u", "qq", "1"),
            bind("v", "", "1"),
            unbind("v", "qq", "1"),
            unbind("u", "icq", "1"),
            set("u", "icq", "x"),
            set("nobody", "qq", "x"),
            ProfileOp::SetProfile { uid: "u".into(), source: "qq".into(), profile: big },
            ProfileOp::OutboxResend { id: 42 },
            set("u", "qq", "fine"),
            unbind("u", "msn", "m"),
        ];
        for (i, op) in ops.iter().enumerate() {
            let predicted = s.refusal(op).map(|c| ProfileResult::Refused(c.into()));
            let r = s.apply(op, 10 + i as u64, 100);
            match predicted {
                Some(p) => assert_eq!(r, p, "op {i}"),
                None => assert!(!matches!(r, ProfileResult::Refused(_)), "op {i}: {r:?}"),
            }
        }
    }

    /// Profile bounds: each field, the extra keys' count and sizes, control
    /// characters and the total are checked.
    #[test]
    fn profile_document_bounds() {
        assert!(Profile::default().check().is_ok());
        let ok = Profile {
            avatar: "a".repeat(MAX_AVATAR_BYTES),
            signature: "s".repeat(MAX_SIGNATURE_BYTES),
            mood: "m".repeat(MAX_MOOD_BYTES),
            extra: (0..4).map(|i| (format!("k{i}"), "v".repeat(MAX_EXTRA_VALUE_BYTES))).collect(),
        };
        assert!(ok.check().is_ok(), "{:?}", ok.check());
        let mut p = ok.clone();
        p.mood.push('m');
        assert!(p.check().is_err());
        let extra = (0..=MAX_EXTRA_KEYS).map(|i| (format!("k{i}"), String::new())).collect();
        let p = Profile { extra, ..Default::default() };
        assert!(p.check().is_err());
        let mut p = Profile::default();
        p.extra.insert("k".repeat(MAX_EXTRA_KEY_BYTES + 1), String::new());
        assert!(p.check().is_err());
        let p = Profile { signature: "a\nb".into(), ..Default::default() };
        assert!(p.check().is_err());
        let mut p = ok;
        p.extra = (0..8).map(|i| (format!("k{i}"), "v".repeat(MAX_EXTRA_VALUE_BYTES))).collect();
        assert!(p.bytes() > MAX_PROFILE_BYTES && p.check().is_err());
    }
}

//! Replicated media metadata and contacts (MISSION G2, G3, S2, S3).
//!
//! The bytes of a media live in files on the nodes that hold a replica
//! (`herald-node`'s `media::store`); this state only says what exists: id (hex
//! SHA-256 of the stored bytes), size, content type, who shared it, which
//! nodes hold it, who was sent it. Contacts are per user, each in zero or
//! more named groups; two users are friends when each has the other as a
//! contact.
//!
//! Deterministic and free of I/O like the rest of [`crate::state`]: quotas
//! and grace periods arrive stamped into the op by the node that wrote it,
//! time is the command's `at_ms`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Contacts one user may have: bounds the per-user item and the work of
/// a group-send resolution.
pub const MAX_CONTACTS: usize = 10_000;
/// Groups one contact may be in.
pub const MAX_GROUPS_PER_CONTACT: usize = 32;
/// Longest file name recorded for a media.
pub const MAX_NAME_BYTES: usize = 255;

/// One user's share of a media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    /// File name as the owner uploaded it (may be empty).
    pub name: String,
    pub at_ms: u64,
}

/// What the cluster knows about one stored media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaMeta {
    /// Hex SHA-256 of the stored bytes: identical content, one media.
    pub id: String,
    pub size: u64,
    pub content_type: String,
    pub created_ms: u64,
    /// Users that shared it (uploaded it, or uploaded the same bytes).
    pub owners: BTreeMap<String, Owned>,
    /// Nodes holding a fsynced copy.
    pub replicas: BTreeSet<u64>,
    /// Users it was group-sent to: they may view it.
    pub grants: BTreeSet<String>,
    /// Cluster time at which the last owner let go (garbage after the grace).
    pub orphan_since_ms: Option<u64>,
}

/// A user's contacts: contact uid → the groups it is in.
pub type Contacts = BTreeMap<String, BTreeSet<String>>;

/// Operations on the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibOp {
    /// Bytes `id` are fsynced on `replicas`: record the media (or add
    /// `owner` to an existing one). Refused when the owner's stored bytes
    /// would exceed `quota_bytes` (0 = no quota).
    MediaCommit {
        id: String,
        size: u64,
        content_type: String,
        owner: String,
        name: String,
        replicas: Vec<u64>,
        quota_bytes: u64,
        /// Dedup: the bytes were found already stored; refuse
        /// (`media_gone`) if the media was collected meanwhile, so the
        /// writer stores the bytes again instead of pointing at deleted files.
        expect_existing: bool,
    },
    /// `owner` no longer shares `id`.
    MediaUnshare {
        id: String,
        owner: String,
    },
    /// `node` now holds a fsynced copy of `id`.
    MediaAddReplica {
        id: String,
        node: u64,
    },
    /// `node` no longer holds `id` (lost it, or left the cluster).
    MediaDropReplica {
        id: String,
        node: u64,
    },
    /// `uids` were sent `id`: they may view it.
    MediaGrant {
        id: String,
        uids: Vec<String>,
    },
    /// Forget `id` if nobody has owned it for `grace_ms`.
    MediaGc {
        id: String,
        grace_ms: u64,
    },
    /// Adds `contact` to `uid`'s contacts (or replaces its groups).
    ContactSet {
        uid: String,
        contact: String,
        groups: Vec<String>,
    },
    ContactRemove {
        uid: String,
        contact: String,
    },
}

/// What a [`LibOp`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibResult {
    /// MediaCommit: `duplicate` when the bytes were already recorded.
    Committed { duplicate: bool },
    /// The op changed something (`true`) or found nothing to change.
    Done(bool),
    /// Refused with a stable code.
    Refused(String),
}

/// The codes a [`LibResult::Refused`] carries (the node's error catalog
/// lists every one it answers; `MEDIA_GONE` is handled inside the node).
pub mod refusal {
    /// A dedup commit found the media collected meanwhile.
    pub const MEDIA_GONE: &str = "media_gone";
    pub const MEDIA_QUOTA_EXCEEDED: &str = "media_quota_exceeded";
    pub const UNKNOWN_MEDIA: &str = "unknown_media";
    pub const SELF_CONTACT: &str = "self_contact";
    pub const TOO_MANY_GROUPS: &str = "too_many_groups";
    pub const TOO_MANY_CONTACTS: &str = "too_many_contacts";
    /// Every refusal answered to a client (all but `MEDIA_GONE`).
    pub const ANSWERED: &[&str] =
        &[MEDIA_QUOTA_EXCEEDED, UNKNOWN_MEDIA, SELF_CONTACT, TOO_MANY_GROUPS, TOO_MANY_CONTACTS];
}

/// A persisted key: `G` + tag + bytes. One key per contact, so a change
/// rewrites one small value, not a user's whole list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Media(String),
    Contact(String, String),
}

impl Key {
    pub fn bytes(&self) -> Vec<u8> {
        let mut k = vec![b'G'];
        match self {
            Key::Media(id) => {
                k.push(b'm');
                k.extend_from_slice(id.as_bytes());
            }
            Key::Contact(uid, contact) => {
                k.push(b'c');
                k.extend_from_slice(&(uid.len() as u32).to_be_bytes());
                k.extend_from_slice(uid.as_bytes());
                k.extend_from_slice(contact.as_bytes());
            }
        }
        k
    }
}

/// A persisted item: the value of a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Media(MediaMeta),
    /// uid, contact, the contact's groups.
    Contact(String, String, BTreeSet<String>),
}

impl Item {
    pub fn key(&self) -> Key {
        match self {
            Item::Media(m) => Key::Media(m.id.clone()),
            Item::Contact(u, c, _) => Key::Contact(u.clone(), c.clone()),
        }
    }
}

/// All media metadata and contacts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Library {
    media: BTreeMap<String, MediaMeta>,
    contacts: HashMap<String, Contacts>,
    /// owner → media ids (derived).
    by_owner: HashMap<String, BTreeSet<String>>,
}

impl Library {
    pub fn from_items(items: impl IntoIterator<Item = Item>) -> Self {
        let mut lib = Library::default();
        for it in items {
            match it {
                Item::Media(m) => {
                    for o in m.owners.keys() {
                        lib.by_owner.entry(o.clone()).or_default().insert(m.id.clone());
                    }
                    lib.media.insert(m.id.clone(), m);
                }
                Item::Contact(u, c, groups) => {
                    lib.contacts.entry(u).or_default().insert(c, groups);
                }
            }
        }
        lib
    }

    /// Every item (a copy), for snapshots, in no particular order (the
    /// snapshot writer sorts by key outside the state lock).
    pub fn items(&self) -> Vec<Item> {
        let mut out: Vec<Item> = self.media.values().cloned().map(Item::Media).collect();
        for (u, contacts) in &self.contacts {
            out.extend(
                contacts.iter().map(|(c, g)| Item::Contact(u.clone(), c.clone(), g.clone())),
            );
        }
        out
    }

    pub fn apply(&mut self, op: &LibOp, at_ms: u64) -> LibResult {
        match op {
            LibOp::MediaCommit {
                id,
                size,
                content_type,
                owner,
                name,
                replicas,
                quota_bytes,
                expect_existing,
            } => {
                if *expect_existing
                    && self.media.get(id).is_none_or(|m| m.orphan_since_ms.is_some())
                {
                    return LibResult::Refused(refusal::MEDIA_GONE.into());
                }
                let already_owner =
                    self.media.get(id).is_some_and(|m| m.owners.contains_key(owner));
                if *quota_bytes > 0
                    && !already_owner
                    && self.usage(owner).saturating_add(*size) > *quota_bytes
                {
                    return LibResult::Refused(refusal::MEDIA_QUOTA_EXCEEDED.into());
                }
                let duplicate = self.media.contains_key(id);
                let m = self.media.entry(id.clone()).or_insert_with(|| MediaMeta {
                    id: id.clone(),
                    size: *size,
                    content_type: content_type.clone(),
                    created_ms: at_ms,
                    owners: BTreeMap::new(),
                    replicas: BTreeSet::new(),
                    grants: BTreeSet::new(),
                    orphan_since_ms: None,
                });
                m.owners.entry(owner.clone()).or_insert(Owned { name: name.clone(), at_ms });
                m.replicas.extend(replicas.iter().copied());
                m.orphan_since_ms = None;
                self.by_owner.entry(owner.clone()).or_default().insert(id.clone());
                LibResult::Committed { duplicate }
            }
            LibOp::MediaUnshare { id, owner } => {
                let Some(m) = self.media.get_mut(id) else { return LibResult::Done(false) };
                if m.owners.remove(owner).is_none() {
                    return LibResult::Done(false);
                }
                if m.owners.is_empty() {
                    m.orphan_since_ms = Some(at_ms);
                }
                if let Some(s) = self.by_owner.get_mut(owner) {
                    s.remove(id);
                    if s.is_empty() {
                        self.by_owner.remove(owner);
                    }
                }
                LibResult::Done(true)
            }
            LibOp::MediaAddReplica { id, node } => {
                let Some(m) = self.media.get_mut(id) else { return LibResult::Done(false) };
                let changed = m.replicas.insert(*node);
                LibResult::Done(changed)
            }
            LibOp::MediaDropReplica { id, node } => {
                let Some(m) = self.media.get_mut(id) else { return LibResult::Done(false) };
                let changed = m.replicas.remove(node);
                LibResult::Done(changed)
            }
            LibOp::MediaGrant { id, uids } => {
                let Some(m) = self.media.get_mut(id) else {
                    return LibResult::Refused(refusal::UNKNOWN_MEDIA.into());
                };
                let mut changed = false;
                for u in uids {
                    changed |= m.grants.insert(u.clone());
                }
                LibResult::Done(changed)
            }
            LibOp::MediaGc { id, grace_ms } => {
                let due = self
                    .media
                    .get(id)
                    .and_then(|m| m.orphan_since_ms)
                    .is_some_and(|t| t.saturating_add(*grace_ms) <= at_ms);
                if due {
                    self.media.remove(id);
                }
                LibResult::Done(due)
            }
            LibOp::ContactSet { uid, contact, groups } => {
                if uid == contact {
                    return LibResult::Refused(refusal::SELF_CONTACT.into());
                }
                if groups.len() > MAX_GROUPS_PER_CONTACT {
                    return LibResult::Refused(refusal::TOO_MANY_GROUPS.into());
                }
                let c = self.contacts.entry(uid.clone()).or_default();
                if !c.contains_key(contact) && c.len() >= MAX_CONTACTS {
                    if c.is_empty() {
                        self.contacts.remove(uid);
                    }
                    return LibResult::Refused(refusal::TOO_MANY_CONTACTS.into());
                }
                c.insert(contact.clone(), groups.iter().cloned().collect());
                LibResult::Done(true)
            }
            LibOp::ContactRemove { uid, contact } => {
                let Some(c) = self.contacts.get_mut(uid) else { return LibResult::Done(false) };
                let removed = c.remove(contact).is_some();
                if c.is_empty() {
                    self.contacts.remove(uid);
                }
                LibResult::Done(removed)
            }
        }
    }

    /// Bytes of media `owner` shares (each media counted in full).
    pub fn usage(&self, owner: &str) -> u64 {
        self.by_owner
            .get(owner)
            .map(|ids| ids.iter().filter_map(|id| self.media.get(id)).map(|m| m.size).sum())
            .unwrap_or(0)
    }

    pub fn media(&self, id: &str) -> Option<&MediaMeta> {
        self.media.get(id)
    }

    pub fn all_media(&self) -> impl Iterator<Item = &MediaMeta> {
        self.media.values()
    }

    /// Media `owner` shares, newest first.
    pub fn shared_by(&self, owner: &str) -> Vec<&MediaMeta> {
        let mut v: Vec<&MediaMeta> = self
            .by_owner
            .get(owner)
            .map(|ids| ids.iter().filter_map(|id| self.media.get(id)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| {
            let (ta, tb) =
                (a.owners.get(owner).map(|o| o.at_ms), b.owners.get(owner).map(|o| o.at_ms));
            tb.cmp(&ta).then_with(|| a.id.cmp(&b.id))
        });
        v
    }

    pub fn contacts(&self, uid: &str) -> Option<&Contacts> {
        self.contacts.get(uid)
    }

    /// Each has the other as a contact.
    pub fn are_friends(&self, a: &str, b: &str) -> bool {
        let has = |x: &str, y: &str| self.contacts.get(x).is_some_and(|c| c.contains_key(y));
        a != b && has(a, b) && has(b, a)
    }

    /// `uid`'s contacts in any of `groups` (all contacts when empty), sorted.
    pub fn recipients(&self, uid: &str, groups: &[String]) -> Vec<String> {
        let Some(c) = self.contacts.get(uid) else { return Vec::new() };
        c.iter()
            .filter(|(_, gs)| groups.is_empty() || groups.iter().any(|g| gs.contains(g)))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Whether `viewer` may see media `id`: an owner, a friend of an
    /// owner, or someone it was sent to.
    pub fn may_view(&self, id: &str, viewer: &str) -> bool {
        let Some(m) = self.media.get(id) else { return false };
        m.owners.contains_key(viewer)
            || m.grants.contains(viewer)
            || m.owners.keys().any(|o| self.are_friends(o, viewer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(id: &str, owner: &str, size: u64, quota: u64) -> LibOp {
        LibOp::MediaCommit {
            id: id.into(),
            size,
            content_type: "image/jpeg".into(),
            owner: owner.into(),
            name: format!("{id}.jpg"),
            replicas: vec![1, 2],
            quota_bytes: quota,
            expect_existing: false,
        }
    }

    fn set(uid: &str, contact: &str, groups: &[&str]) -> LibOp {
        LibOp::ContactSet {
            uid: uid.into(),
            contact: contact.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// Identical bytes are one media with several owners; quota counts what
    /// an owner shares and refuses before anything changes.
    #[test]
    fn library_media_dedup_and_quota() {
        let mut l = Library::default();
        assert_eq!(
            l.apply(&commit("a", "alice", 600, 1000), 10),
            LibResult::Committed { duplicate: false }
        );
        assert_eq!(
            l.apply(&commit("a", "bob", 600, 1000), 11),
            LibResult::Committed { duplicate: true }
        );
        assert_eq!(l.media("a").unwrap().owners.len(), 2);
        assert_eq!(l.usage("alice"), 600);
        assert_eq!(
            l.apply(&commit("b", "alice", 600, 1000), 12),
            LibResult::Refused(refusal::MEDIA_QUOTA_EXCEEDED.into())
        );
        assert!(l.media("b").is_none());
        // Re-committing what alice already owns is not counted twice.
        assert_eq!(
            l.apply(&commit("a", "alice", 600, 1000), 13),
            LibResult::Committed { duplicate: true }
        );
        assert_eq!(
            l.apply(&commit("b", "alice", 400, 1000), 14),
            LibResult::Committed { duplicate: false }
        );
        assert_eq!(
            l.shared_by("alice").iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            vec!["b", "a"]
        );
    }

    /// Media nobody owns is forgotten only after the grace period.
    #[test]
    fn library_gc_after_grace() {
        let mut l = Library::default();
        l.apply(&commit("a", "alice", 1, 0), 10);
        assert_eq!(
            l.apply(&LibOp::MediaGc { id: "a".into(), grace_ms: 100 }, 1000),
            LibResult::Done(false)
        );
        assert_eq!(
            l.apply(&LibOp::MediaUnshare { id: "a".into(), owner: "alice".into() }, 1000),
            LibResult::Done(true)
        );
        assert_eq!(
            l.apply(&LibOp::MediaGc { id: "a".into(), grace_ms: 100 }, 1050),
            LibResult::Done(false)
        );
        assert_eq!(
            l.apply(&LibOp::MediaGc { id: "a".into(), grace_ms: 100 }, 1100),
            LibResult::Done(true)
        );
        assert!(l.media("a").is_none());
        // A dedup commit of collected bytes is refused: they must be stored again.
        let LibOp::MediaCommit {
            id, size, content_type, owner, name, replicas, quota_bytes, ..
        } = commit("a", "bob", 1, 0)
        else {
            unreachable!()
        };
        let dedup = LibOp::MediaCommit {
            id,
            size,
            content_type,
            owner,
            name,
            replicas,
            quota_bytes,
            expect_existing: true,
        };
        assert_eq!(l.apply(&dedup, 1200), LibResult::Refused(refusal::MEDIA_GONE.into()));
        assert!(l.media("a").is_none());
        assert!(l.shared_by("alice").is_empty());
    }

    /// Friends are mutual contacts; groups select recipients; viewers are
    /// owners, friends of owners, or grantees.
    #[test]
    fn library_contacts_friends_and_viewers() {
        let mut l = Library::default();
        l.apply(&set("alice", "bob", &["friends"]), 1);
        l.apply(&set("alice", "carol", &["family"]), 1);
        l.apply(&set("alice", "dave", &["friends", "family"]), 1);
        l.apply(&set("bob", "alice", &[]), 1);
        assert_eq!(
            l.apply(&set("alice", "alice", &[]), 1),
            LibResult::Refused(refusal::SELF_CONTACT.into())
        );
        assert!(l.are_friends("alice", "bob") && l.are_friends("bob", "alice"));
        assert!(!l.are_friends("alice", "carol"));
        assert_eq!(l.recipients("alice", &["friends".into()]), vec!["bob", "dave"]);
        assert_eq!(l.recipients("alice", &["family".into()]), vec!["carol", "dave"]);
        assert_eq!(l.recipients("alice", &[]), vec!["bob", "carol", "dave"]);
        l.apply(&commit("m", "alice", 5, 0), 2);
        assert!(l.may_view("m", "alice") && l.may_view("m", "bob"));
        assert!(!l.may_view("m", "carol"));
        l.apply(&LibOp::MediaGrant { id: "m".into(), uids: vec!["carol".into()] }, 3);
        assert!(l.may_view("m", "carol"));
        assert!(!l.may_view("m", "eve"));
        assert_eq!(
            l.apply(&LibOp::ContactRemove { uid: "bob".into(), contact: "alice".into() }, 4),
            LibResult::Done(true)
        );
        assert!(!l.are_friends("alice", "bob"));
        assert!(!l.may_view("m", "bob"));
    }

    /// The persisted items (what a snapshot holds) rebuild an equal
    /// library after every operation, deletions included.
    #[test]
    fn library_items_roundtrip() {
        let mut l = Library::default();
        let ops = vec![
            commit("a", "alice", 3, 0),
            commit("b", "bob", 3, 0),
            LibOp::MediaAddReplica { id: "a".into(), node: 3 },
            LibOp::MediaDropReplica { id: "b".into(), node: 1 },
            LibOp::MediaGrant { id: "a".into(), uids: vec!["z".into()] },
            set("alice", "bob", &["x"]),
            set("bob", "alice", &[]),
            LibOp::ContactRemove { uid: "bob".into(), contact: "alice".into() },
            LibOp::MediaUnshare { id: "b".into(), owner: "bob".into() },
            LibOp::MediaGc { id: "b".into(), grace_ms: 0 },
        ];
        for (i, op) in ops.iter().enumerate() {
            l.apply(op, 100 + i as u64);
            assert_eq!(Library::from_items(l.items()), l, "after op {i}");
        }
        assert!(l.media("b").is_none() && l.contacts("bob").is_none());
    }
}

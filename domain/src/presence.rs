//! The presence domain: events from a status pool, the per-user record, and the
//! deterministic state they build (MISSION P1, P2).
//!
//! Nothing here does I/O or reads a clock: the leader stamps cluster time into
//! every [`crate::state::Command`], and [`PresenceState::apply_event`] only uses what the command
//! carries plus the log index it was committed at. Every replica that applies
//! the same commands in the same order ends in the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Longest uid accepted, in bytes: ids are keys in every replica's memory and
/// on disk, so they stay short.
pub const MAX_UID_BYTES: usize = 128;
/// Longest client type name, in bytes.
pub const MAX_CLIENT_BYTES: usize = 64;
/// Most ext entries one event may carry, and one user may hold.
pub const MAX_EXT_ENTRIES: usize = 32;
/// Longest ext key or value, in bytes.
pub const MAX_EXT_BYTES: usize = 1024;
/// Most client types one user may be online on at once. A person uses a
/// handful of devices; every client type costs memory in every replica and
/// bytes in every answer naming the user, so an unbounded set lets one uid
/// make each query of it arbitrarily large (50,000 client types made a
/// 24 KB query answer 132 MB). Logins beyond it are not applied; the API
/// refuses them first with `too_many_clients`.
pub const MAX_CLIENTS_PER_USER: usize = 16;

/// Free key/values carried by an event and kept on the user's record.
pub type Ext = BTreeMap<String, String>;

/// One event of the status pool's interface: `UserLogin`, `UserLogout`,
/// `PermissionChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The user came online on `client`.
    Login { uid: String, sid: u64, client: String, accepts_strangers: Option<bool>, ext: Ext },
    /// The user went offline on `client`.
    Logout { uid: String, sid: u64, client: String, ext: Ext },
    /// The user changed whether strangers may open sessions with it.
    Permission { uid: String, sid: u64, accepts_strangers: bool, ext: Ext },
}

/// Why an event was refused before it reached the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event {index}: uid must be 1..={MAX_UID_BYTES} bytes")]
    BadUid { index: usize },
    #[error("event {index}: client must be 1..={MAX_CLIENT_BYTES} bytes")]
    BadClient { index: usize },
    #[error("event {index}: at most {MAX_EXT_ENTRIES} ext entries of at most {MAX_EXT_BYTES} bytes each")]
    BadExt { index: usize },
}

impl Event {
    pub fn uid(&self) -> &str {
        match self {
            Event::Login { uid, .. }
            | Event::Logout { uid, .. }
            | Event::Permission { uid, .. } => uid,
        }
    }

    fn ext(&self) -> &Ext {
        match self {
            Event::Login { ext, .. }
            | Event::Logout { ext, .. }
            | Event::Permission { ext, .. } => ext,
        }
    }

    /// Checks the bounds of one event; `index` is its place in the request.
    pub fn validate(&self, index: usize) -> Result<(), EventError> {
        let uid = self.uid();
        if uid.is_empty() || uid.len() > MAX_UID_BYTES {
            return Err(EventError::BadUid { index });
        }
        if let Event::Login { client, .. } | Event::Logout { client, .. } = self {
            if client.is_empty() || client.len() > MAX_CLIENT_BYTES {
                return Err(EventError::BadClient { index });
            }
        }
        let ext = self.ext();
        if ext.len() > MAX_EXT_ENTRIES
            || ext
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > MAX_EXT_BYTES || v.len() > MAX_EXT_BYTES)
        {
            return Err(EventError::BadExt { index });
        }
        Ok(())
    }
}

/// The presence record of one user (MISSION P2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub uid: String,
    pub sid: u64,
    /// Client types the user is online on; online = not empty.
    pub clients: BTreeSet<String>,
    pub accepts_strangers: bool,
    pub ext: Ext,
    /// Cluster time of the last change.
    pub changed_at_ms: u64,
    /// Log index of the last change.
    pub revision: u64,
    /// Client types held by a gateway session, and which gateway (node
    /// number) holds each; status-pool logins are not listed.
    pub gateways: BTreeMap<String, u64>,
}

impl Record {
    pub fn online(&self) -> bool {
        !self.clients.is_empty()
    }

    fn new(uid: &str, sid: u64) -> Self {
        Record {
            uid: uid.to_owned(),
            sid,
            clients: BTreeSet::new(),
            accepts_strangers: true,
            ext: Ext::new(),
            changed_at_ms: 0,
            revision: 0,
            gateways: BTreeMap::new(),
        }
    }
}

/// All presence records plus the sid index. Deterministic: see module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PresenceState {
    users: HashMap<String, Record>,
    by_sid: HashMap<u64, String>,
    /// Users with a client held by each gateway (derived from records).
    by_gateway: HashMap<u64, BTreeSet<String>>,
    /// Log index of the last applied entry (any kind).
    applied: u64,
}

impl PresenceState {
    /// Builds a state from stored records and sid index (start-up, snapshot
    /// install). The sid index is stored, not derived, so that which user a
    /// reused sid points at is the same on every replica.
    pub fn from_parts(
        records: impl IntoIterator<Item = Record>,
        sids: impl IntoIterator<Item = (u64, String)>,
        applied: u64,
    ) -> Self {
        let mut s = PresenceState { applied, ..Default::default() };
        for r in records {
            for g in r.gateways.values() {
                s.by_gateway.entry(*g).or_default().insert(r.uid.clone());
            }
            s.users.insert(r.uid.clone(), r);
        }
        s.by_sid.extend(sids);
        s
    }

    /// Whether `uid` may come online on `client`: it already is, or it is
    /// online on fewer than [`MAX_CLIENTS_PER_USER`] client types.
    pub fn admits_client(&self, uid: &str, client: &str) -> bool {
        self.users
            .get(uid)
            .is_none_or(|r| r.clients.len() < MAX_CLIENTS_PER_USER || r.clients.contains(client))
    }

    /// The sid index: which uid each sid resolves to.
    pub fn sid_index(&self) -> impl Iterator<Item = (u64, &str)> {
        self.by_sid.iter().map(|(s, u)| (*s, u.as_str()))
    }

    /// The uid a sid resolves to.
    pub fn sid_owner(&self, sid: u64) -> Option<&str> {
        self.by_sid.get(&sid).map(|s| s.as_str())
    }

    /// Applies events at cluster time `at_ms` and log index `revision`
    /// (tests and tools; the log goes through [`crate::state::State`]).
    pub fn apply_events(&mut self, events: &[Event], at_ms: u64, revision: u64) -> Touched {
        let mut touched = Touched::default();
        for ev in events {
            self.apply_event(ev, at_ms, revision, &mut touched);
        }
        self.set_applied(revision);
        touched
    }

    /// The record of `uid` with `sid` made current (sid 0 keeps the
    /// record's sid); notes the sid index changes in `touched`.
    fn record_for(&mut self, uid: &str, sid: u64, touched: &mut Touched) -> &mut Record {
        let rec = self.users.entry(uid.to_owned()).or_insert_with(|| Record::new(uid, sid));
        if sid != 0 && rec.sid != sid {
            if self.by_sid.get(&rec.sid).map(String::as_str) == Some(uid) {
                self.by_sid.remove(&rec.sid);
                touched.sids.push(rec.sid);
            }
            rec.sid = sid;
        }
        if rec.sid != 0 && self.by_sid.get(&rec.sid).map(String::as_str) != Some(uid) {
            self.by_sid.insert(rec.sid, uid.to_owned());
            touched.sids.push(rec.sid);
        }
        rec
    }

    /// Applies one status-pool event.
    pub fn apply_event(&mut self, ev: &Event, at_ms: u64, revision: u64, touched: &mut Touched) {
        let (uid, sid) = match ev {
            Event::Login { uid, sid, .. }
            | Event::Logout { uid, sid, .. }
            | Event::Permission { uid, sid, .. } => (uid, *sid),
        };
        let mut left_gateway = None;
        let rec = self.record_for(uid, sid, touched);
        match ev {
            Event::Login { client, accepts_strangers, .. } => {
                if rec.clients.len() < MAX_CLIENTS_PER_USER || rec.clients.contains(client) {
                    rec.clients.insert(client.clone());
                }
                if let Some(a) = accepts_strangers {
                    rec.accepts_strangers = *a;
                }
            }
            Event::Logout { client, .. } => {
                rec.clients.remove(client);
                left_gateway = rec.gateways.remove(client);
            }
            Event::Permission { accepts_strangers, .. } => {
                rec.accepts_strangers = *accepts_strangers
            }
        }
        for (k, v) in ev.ext() {
            if rec.ext.len() < MAX_EXT_ENTRIES || rec.ext.contains_key(k) {
                rec.ext.insert(k.clone(), v.clone());
            }
        }
        rec.changed_at_ms = at_ms;
        rec.revision = revision;
        if let Some(g) = left_gateway {
            self.unindex_gateway(uid, g);
        }
        touched.uids.push(uid.clone());
    }

    fn unindex_gateway(&mut self, uid: &str, gateway: u64) {
        let still = self.users.get(uid).is_some_and(|r| r.gateways.values().any(|g| *g == gateway));
        if !still {
            if let Some(set) = self.by_gateway.get_mut(&gateway) {
                set.remove(uid);
                if set.is_empty() {
                    self.by_gateway.remove(&gateway);
                }
            }
        }
    }

    /// A gateway session started for `uid` on `client`.
    #[allow(clippy::too_many_arguments)]
    pub fn session_login(
        &mut self,
        uid: &str,
        sid: u64,
        client: &str,
        gateway: u64,
        at_ms: u64,
        revision: u64,
        touched: &mut Touched,
    ) {
        let rec = self.record_for(uid, sid, touched);
        if rec.clients.len() >= MAX_CLIENTS_PER_USER && !rec.clients.contains(client) {
            // Over the cap: not applied (the gateway refuses such a Hello
            // first; this keeps every replica bounded if one got through).
            return;
        }
        rec.clients.insert(client.to_owned());
        let previous = rec.gateways.insert(client.to_owned(), gateway);
        rec.changed_at_ms = at_ms;
        rec.revision = revision;
        self.by_gateway.entry(gateway).or_default().insert(uid.to_owned());
        if let Some(p) = previous.filter(|p| *p != gateway) {
            self.unindex_gateway(uid, p);
        }
        touched.uids.push(uid.to_owned());
    }

    /// A gateway session ended: the client goes offline unless another
    /// gateway holds it by now.
    pub fn session_logout(
        &mut self,
        uid: &str,
        client: &str,
        gateway: u64,
        at_ms: u64,
        revision: u64,
        touched: &mut Touched,
    ) {
        let Some(rec) = self.users.get_mut(uid) else { return };
        if rec.gateways.get(client) != Some(&gateway) {
            return;
        }
        rec.gateways.remove(client);
        rec.clients.remove(client);
        rec.changed_at_ms = at_ms;
        rec.revision = revision;
        self.unindex_gateway(uid, gateway);
        touched.uids.push(uid.to_owned());
    }

    /// Every session held by `gateway` ends.
    pub fn gateway_reset(
        &mut self,
        gateway: u64,
        at_ms: u64,
        revision: u64,
        touched: &mut Touched,
    ) {
        let Some(uids) = self.by_gateway.remove(&gateway) else { return };
        for uid in uids {
            if let Some(rec) = self.users.get_mut(&uid) {
                let clients: Vec<String> = rec
                    .gateways
                    .iter()
                    .filter(|(_, g)| **g == gateway)
                    .map(|(c, _)| c.clone())
                    .collect();
                for c in clients {
                    rec.gateways.remove(&c);
                    rec.clients.remove(&c);
                }
                rec.changed_at_ms = at_ms;
                rec.revision = revision;
                touched.uids.push(uid);
            }
        }
    }

    /// Gateways that hold at least one session.
    pub fn gateways(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.by_gateway.keys().copied().collect();
        v.sort();
        v
    }

    /// (uid, client) of every session `gateway` holds.
    pub fn gateway_sessions(&self, gateway: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for uid in self.by_gateway.get(&gateway).into_iter().flatten() {
            if let Some(r) = self.users.get(uid) {
                out.extend(
                    r.gateways
                        .iter()
                        .filter(|(_, g)| **g == gateway)
                        .map(|(c, _)| (uid.clone(), c.clone())),
                );
            }
        }
        out
    }

    /// Users with a session on `gateway` (reconciliation, tests).
    pub fn gateway_users(&self, gateway: u64) -> usize {
        self.by_gateway.get(&gateway).map_or(0, |s| s.len())
    }

    /// Notes that an entry without presence data (blank, membership) was applied.
    pub fn set_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn get(&self, uid: &str) -> Option<&Record> {
        self.users.get(uid)
    }

    pub fn get_by_sid(&self, sid: u64) -> Option<&Record> {
        self.by_sid.get(&sid).and_then(|uid| self.users.get(uid))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn online_count(&self) -> usize {
        self.users.values().filter(|r| r.online()).count()
    }

    /// Every record, in no particular order (snapshots sort them).
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.users.values()
    }

    /// Answers a batch query: records found by uid then by sid (each user at
    /// most once, in request order), and the ids that have no record.
    pub fn query(&self, uids: &[String], sids: &[u64]) -> QueryResult {
        let mut seen = std::collections::HashSet::new();
        let mut out = QueryResult { revision: self.applied, ..Default::default() };
        for uid in uids {
            match self.users.get(uid) {
                Some(r) => {
                    if seen.insert(r.uid.as_str()) {
                        out.users.push(r.clone());
                    }
                }
                None => out.unknown.push(uid.clone()),
            }
        }
        for sid in sids {
            match self.get_by_sid(*sid) {
                Some(r) => {
                    if seen.insert(r.uid.as_str()) {
                        out.users.push(r.clone());
                    }
                }
                None => out.unknown_sids.push(*sid),
            }
        }
        out
    }
}

/// What one [`PresenceState::apply`] changed (may name an id twice).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub uids: Vec<String>,
    pub sids: Vec<u64>,
}

/// The answer to a batch query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// Applied index the answer was served at.
    pub revision: u64,
    pub users: Vec<Record>,
    pub unknown: Vec<String>,
    pub unknown_sids: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(uid: &str, sid: u64, client: &str) -> Event {
        Event::Login {
            uid: uid.into(),
            sid,
            client: client.into(),
            accepts_strangers: None,
            ext: Ext::new(),
        }
    }

    /// A user is online while at least one client type is logged in, and the
    /// record carries the command's time and the log index.
    #[test]
    fn presence_apply_multi_client_online() {
        let mut s = PresenceState::default();
        s.apply_events(&[login("u1", 1, "mobile"), login("u1", 1, "web")], 10, 5);
        let logout =
            Event::Logout { uid: "u1".into(), sid: 1, client: "mobile".into(), ext: Ext::new() };
        s.apply_events(&[logout], 20, 6);
        let r = s.get("u1").unwrap();
        assert!(r.online());
        assert_eq!(r.clients.iter().cloned().collect::<Vec<_>>(), vec!["web".to_string()]);
        assert_eq!((r.changed_at_ms, r.revision), (20, 6));
        let logout =
            Event::Logout { uid: "u1".into(), sid: 1, client: "web".into(), ext: Ext::new() };
        s.apply_events(&[logout], 30, 7);
        assert!(!s.get("u1").unwrap().online());
        assert_eq!(s.applied(), 7);
    }

    /// Ext merges key by key, permission changes stick, and the sid index
    /// follows a user whose sid changes.
    #[test]
    fn presence_apply_ext_permission_and_sid_index() {
        let mut s = PresenceState::default();
        let mut ext = Ext::new();
        ext.insert("a".into(), "1".into());
        let ev = Event::Login {
            uid: "u".into(),
            sid: 7,
            client: "pc".into(),
            accepts_strangers: Some(false),
            ext,
        };
        s.apply_events(&[ev], 1, 1);
        let mut ext = Ext::new();
        ext.insert("b".into(), "2".into());
        s.apply_events(
            &[Event::Permission { uid: "u".into(), sid: 8, accepts_strangers: true, ext }],
            2,
            2,
        );
        let r = s.get("u").unwrap();
        assert!(r.accepts_strangers);
        assert_eq!(r.ext.len(), 2);
        assert!(s.get_by_sid(7).is_none());
        assert_eq!(s.get_by_sid(8).unwrap().uid, "u");
    }

    /// A query lists found users once each and reports unknown uids and sids.
    #[test]
    fn presence_query_found_and_unknown() {
        let mut s = PresenceState::default();
        s.apply_events(&[login("u1", 100, "m"), login("u2", 200, "m")], 1, 3);
        let q = s.query(&["u1".into(), "nope".into(), "u1".into()], &[200, 100, 999]);
        assert_eq!(q.users.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), vec!["u1", "u2"]);
        assert_eq!(q.unknown, vec!["nope".to_string()]);
        assert_eq!(q.unknown_sids, vec![999]);
        assert_eq!(q.revision, 3);
    }

    /// Validation refuses empty uids, empty clients and oversized ext.
    #[test]
    fn presence_validate_bounds() {
        assert_eq!(login("", 1, "m").validate(0), Err(EventError::BadUid { index: 0 }));
        assert_eq!(login("u", 1, "").validate(3), Err(EventError::BadClient { index: 3 }));
        let mut ext = Ext::new();
        for i in 0..=MAX_EXT_ENTRIES {
            ext.insert(i.to_string(), String::new());
        }
        let ev = Event::Permission { uid: "u".into(), sid: 1, accepts_strangers: true, ext };
        assert_eq!(ev.validate(1), Err(EventError::BadExt { index: 1 }));
        assert!(login("u", 1, "m").validate(0).is_ok());
    }

    /// Two replicas applying the same commands end equal, and a state rebuilt
    /// from its records equals the original.
    #[test]
    fn presence_apply_deterministic_and_rebuildable() {
        let cmds: Vec<(u64, Vec<Event>)> = (0..50)
            .map(|i| {
                (
                    i,
                    vec![login(
                        &format!("u{}", i % 7),
                        i % 5 + 1,
                        if i % 2 == 0 { "a" } else { "b" },
                    )],
                )
            })
            .collect();
        let (mut a, mut b) = (PresenceState::default(), PresenceState::default());
        for (i, c) in cmds.iter().enumerate() {
            a.apply_events(&c.1, c.0, i as u64 + 1);
            b.apply_events(&c.1, c.0, i as u64 + 1);
        }
        assert_eq!(a, b);
        let sids: Vec<(u64, String)> = a.sid_index().map(|(s, u)| (s, u.to_string())).collect();
        let rebuilt = PresenceState::from_parts(a.records().cloned(), sids, a.applied());
        assert_eq!(rebuilt, a);
        assert_eq!(rebuilt.len(), a.len());
        for r in a.records() {
            assert_eq!(rebuilt.get(&r.uid), Some(r));
            assert_eq!(rebuilt.get_by_sid(r.sid).map(|x| x.sid), Some(r.sid));
        }
    }

    /// Gateway sessions make a user online with the gateway recorded; a
    /// logout from another gateway is ignored; a gateway reset ends exactly
    /// that gateway's sessions; sid 0 keeps the known sid.
    #[test]
    fn presence_sessions_and_gateway_reset() {
        let mut s = PresenceState::default();
        let mut t = Touched::default();
        s.apply_events(&[login("u1", 11, "pc")], 1, 1);
        s.session_login("u1", 0, "mobile", 2, 2, 2, &mut t);
        s.session_login("u2", 0, "mobile", 2, 2, 2, &mut t);
        s.session_login("u3", 0, "mobile", 3, 2, 2, &mut t);
        assert_eq!(s.get("u1").unwrap().sid, 11);
        assert!(s.get_by_sid(0).is_none(), "sid 0 is never indexed");
        assert_eq!(s.gateway_users(2), 2);
        s.session_logout("u3", "mobile", 2, 3, 3, &mut t);
        assert!(s.get("u3").unwrap().online(), "a logout from another gateway is ignored");
        s.gateway_reset(2, 4, 4, &mut t);
        let u1 = s.get("u1").unwrap();
        assert_eq!(u1.clients.iter().cloned().collect::<Vec<_>>(), vec!["pc".to_string()]);
        assert!(u1.gateways.is_empty());
        assert!(!s.get("u2").unwrap().online());
        assert!(s.get("u3").unwrap().online());
        assert_eq!(s.gateway_users(2), 0);
        let sids: Vec<(u64, String)> = s.sid_index().map(|(a, b)| (a, b.to_string())).collect();
        let rebuilt = PresenceState::from_parts(s.records().cloned(), sids, s.applied());
        assert_eq!(rebuilt, s, "the gateway index is rebuilt from records");
    }

    /// A user is online on at most MAX_CLIENTS_PER_USER client types:
    /// further logins (status pool or gateway session) are not applied and
    /// `admits_client` says so beforehand; a client type already online is
    /// always admitted, and logging one out makes room again.
    #[test]
    fn presence_client_types_per_user_are_capped() {
        let mut s = PresenceState::default();
        let mut t = Touched::default();
        for i in 0..MAX_CLIENTS_PER_USER {
            assert!(s.admits_client("u", &format!("c{i}")));
            s.apply_event(&login("u", 1, &format!("c{i}")), 10, 1, &mut t);
        }
        assert!(!s.admits_client("u", "extra"));
        assert!(s.admits_client("u", "c0"), "an online client type is admitted again");
        s.apply_event(&login("u", 1, "extra"), 11, 2, &mut t);
        s.session_login("u", 0, "extra2", 7, 12, 3, &mut t);
        let r = s.get("u").unwrap();
        assert_eq!(r.clients.len(), MAX_CLIENTS_PER_USER);
        assert!(!r.clients.contains("extra") && !r.clients.contains("extra2"));
        assert!(r.gateways.is_empty() && s.gateway_users(7) == 0, "no gateway recorded");
        s.apply_event(
            &Event::Logout { uid: "u".into(), sid: 1, client: "c0".into(), ext: Ext::new() },
            13,
            4,
            &mut t,
        );
        assert!(s.admits_client("u", "extra"));
        assert!(s.admits_client("nobody", "any"));
    }
}

//! The presence domain: events from a status pool, the per-user record, and the
//! deterministic state they build (MISSION P1, P2).
//!
//! Nothing here does I/O or reads a clock: the leader stamps cluster time into
//! every [`crate::state::Command`], and [`PresenceState::apply_event`] only uses what the command
//! carries plus the log index it was committed at. Every replica that applies
//! the same commands in the same order ends in the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
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

/// The presence record of one user (MISSION P2), as persisted (a snapshot's
/// `Item::User`) and as answered (a query's users). The state does not keep
/// records in this form (see [`PresenceState`]): it builds one on demand, and
/// [`RecordRef`] reads the stored form in place.
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
}

/// Records per storage chunk. A snapshot view shares the chunks
/// (copy-on-write): the first write to a chunk after a view was taken
/// copies that chunk alone (128 slots of 56 bytes and their arena, ~9 KiB,
/// a few microseconds), so an apply of N events waits for at most N chunk
/// copies (a 1,000-event batch over 1,000 chunks: a few milliseconds), and
/// a view costs one `Arc` per chunk (7,813 for 1,000,000 users, well under
/// a millisecond under the lock). Larger chunks make views cheaper and
/// first writes dearer.
pub const CHUNK_RECORDS: usize = 128;

/// Client type ids below this are kept as bits of one word per user (the
/// common case: a deployment has a few client types); higher ids, in a list
/// on the side.
const CLIENT_BITS: u32 = u64::BITS;

/// The intern table of client type names: id = order of first appearance
/// in the applied log (so the same log gives the same ids on every replica;
/// snapshots carry the table as `Item::ClientType`). Append-only: a name
/// costs its bytes once however many users are online on it.
#[derive(Debug, Clone, Default)]
struct ClientTypes {
    names: Arc<Vec<String>>,
    ids: HashMap<String, u32>,
}

impl ClientTypes {
    fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 client types");
        Arc::make_mut(&mut self.names).push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }
}

/// What few users have: client type ids of [`CLIENT_BITS`] and above, and
/// gateway sessions. Absent (a null pointer) for everyone else.
#[derive(Debug, Clone, Default)]
struct Extra {
    /// Client type ids >= [`CLIENT_BITS`], ascending.
    clients: Vec<u32>,
    /// (client type id, gateway) of each client held by a gateway session.
    gateways: Vec<(u32, u64)>,
}

/// One user as stored: 56 bytes in its chunk, plus its blob in the
/// chunk's arena.
#[derive(Debug, Clone)]
struct Slot {
    /// Where the user's blob is in the chunk's arena, and its length.
    at: u32,
    len: u32,
    sid: u64,
    changed_at_ms: u64,
    revision: u64,
    /// Bit `i` set: online on client type id `i` (`i` < [`CLIENT_BITS`]).
    bits: u64,
    extra: Option<Box<Extra>>,
    accepts_strangers: bool,
    /// The sid index resolves `sid` to this user (the index is stored, not
    /// derived: a reused sid keeps pointing at the user that took it last).
    owns_sid: bool,
}

/// Arena bytes below which a chunk's replaced blobs are not compacted away
/// (a small arena is cheap to carry; compacting it often is not).
const ARENA_COMPACT_MIN: usize = 4096;
/// Least bytes an arena grows by: it grows by what is needed, not by
/// doubling (doubling left a quarter of every arena unused on average),
/// and at most this is unused at its end (4 bytes a user in a full chunk).
const ARENA_STEP: usize = 512;

/// [`CHUNK_RECORDS`] users and their blobs: the unit a snapshot view shares
/// and a write copies (two `memcpy`s, no allocation per user). A blob is
/// `[uid len][uid][ext entries]([key len][key][value len][value])*`,
/// lengths and the count as LEB128, keys ascending (the order of [`Ext`]):
/// the uid once, and the ext without a map node per user.
#[derive(Debug, Clone, Default)]
struct Chunk {
    slots: Vec<Slot>,
    /// The slots' blobs back to back; a replaced blob stays (as garbage)
    /// until garbage is half the arena.
    arena: Vec<u8>,
    garbage: usize,
}

impl Chunk {
    fn blob(&self, i: usize) -> &[u8] {
        let s = &self.slots[i];
        &self.arena[s.at as usize..s.at as usize + s.len as usize]
    }

    fn uid_bytes(&self, i: usize) -> &[u8] {
        blob_split(self.blob(i)).1
    }

    fn uid(&self, i: usize) -> &str {
        text(self.uid_bytes(i))
    }

    /// Appends `blob` to the arena; answers where it went.
    fn store(&mut self, blob: &[u8]) -> (u32, u32) {
        let at = u32::try_from(self.arena.len()).expect("a chunk's arena stays under 4 GiB");
        if self.arena.capacity() - self.arena.len() < blob.len() {
            self.arena.reserve_exact(blob.len().max(ARENA_STEP));
        }
        self.arena.extend_from_slice(blob);
        (at, blob.len() as u32)
    }

    fn push(&mut self, blob: &[u8], sid: u64) {
        let (at, len) = self.store(blob);
        self.slots.push(Slot {
            at,
            len,
            sid,
            changed_at_ms: 0,
            revision: 0,
            bits: 0,
            extra: None,
            accepts_strangers: true,
            owns_sid: false,
        });
    }

    fn set_blob(&mut self, i: usize, blob: &[u8]) {
        let (at, len) = (self.slots[i].at as usize, self.slots[i].len as usize);
        if at + len == self.arena.len() {
            // The last blob (a user just added, whose first event brings
            // its ext): overwrite it rather than leave it as garbage.
            self.arena.truncate(at);
        } else {
            self.garbage += len;
        }
        let (at, len) = self.store(blob);
        (self.slots[i].at, self.slots[i].len) = (at, len);
        if self.arena.len() > ARENA_COMPACT_MIN && self.garbage * 2 > self.arena.len() {
            let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
            for s in &mut self.slots {
                let from = s.at as usize;
                s.at = arena.len() as u32;
                arena.extend_from_slice(&self.arena[from..from + s.len as usize]);
            }
            self.arena = arena;
            self.garbage = 0;
        }
    }

    /// Merges ext entries key by key, at most [`MAX_EXT_ENTRIES`] in all
    /// (a key already there is always updated). The blob is rebuilt only
    /// when something changes.
    fn merge_ext(&mut self, i: usize, ext: &Ext) {
        let b = self.blob(i);
        let cur = blob_ext(b);
        if ext.iter().all(|(k, v)| cur.get(k) == Some(v.as_str())) {
            return;
        }
        let mut m: BTreeMap<&str, &str> = cur.iter().collect();
        for (k, v) in ext {
            if m.len() < MAX_EXT_ENTRIES || m.contains_key(k.as_str()) {
                m.insert(k, v);
            }
        }
        let blob = encode_blob(blob_split(b).1, m.into_iter());
        self.set_blob(i, &blob);
    }

    fn view<'a>(&'a self, i: usize, names: &'a [String]) -> RecordRef<'a> {
        let (s, b) = (&self.slots[i], self.blob(i));
        RecordRef {
            uid: text(blob_split(b).1),
            sid: s.sid,
            clients: Clients { bits: s.bits, hi: s.hi_clients(), names },
            accepts_strangers: s.accepts_strangers,
            ext: blob_ext(b),
            changed_at_ms: s.changed_at_ms,
            revision: s.revision,
            gateways: Gateways { list: s.gateway_list(), names },
        }
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads a LEB128 length at `*at`, moving past it.
fn get_len(b: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let x = b[*at];
        *at += 1;
        n |= ((x & 0x7f) as usize) << shift;
        if x & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len());
    out.extend_from_slice(s);
}

fn encode_blob<'e>(
    uid: &[u8],
    ext: impl ExactSizeIterator<Item = (&'e str, &'e str)>,
) -> Box<[u8]> {
    let mut out = Vec::with_capacity(uid.len() + 2);
    put_bytes(&mut out, uid);
    put_len(&mut out, ext.len());
    for (k, v) in ext {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    out.into_boxed_slice()
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("a blob holds text copied from a String")
}

/// Where the ext starts in a blob, and the uid's bytes.
fn blob_split(b: &[u8]) -> (usize, &[u8]) {
    let mut at = 0;
    let n = get_len(b, &mut at);
    (at + n, &b[at..at + n])
}

fn blob_ext(b: &[u8]) -> ExtRef<'_> {
    let mut pos = blob_split(b).0;
    let len = get_len(b, &mut pos);
    ExtRef { bytes: &b[pos..], len }
}

impl Slot {
    fn hi_clients(&self) -> &[u32] {
        self.extra.as_ref().map_or(&[], |e| &e.clients)
    }

    fn gateway_list(&self) -> &[(u32, u64)] {
        self.extra.as_ref().map_or(&[], |e| &e.gateways)
    }

    fn client_count(&self) -> usize {
        self.bits.count_ones() as usize + self.hi_clients().len()
    }

    fn has_client(&self, id: u32) -> bool {
        if id < CLIENT_BITS {
            self.bits & (1 << id) != 0
        } else {
            self.hi_clients().binary_search(&id).is_ok()
        }
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Drops the side allocation once nothing is in it.
    fn tidy(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.clients.is_empty() && e.gateways.is_empty()) {
            self.extra = None;
        }
    }

    fn add_client(&mut self, id: u32) {
        if id < CLIENT_BITS {
            self.bits |= 1 << id;
        } else {
            let list = &mut self.extra_mut().clients;
            if let Err(at) = list.binary_search(&id) {
                list.insert(at, id);
            }
        }
    }

    fn remove_client(&mut self, id: u32) {
        if id < CLIENT_BITS {
            self.bits &= !(1 << id);
        } else if let Some(e) = self.extra.as_mut() {
            if let Ok(at) = e.clients.binary_search(&id) {
                e.clients.remove(at);
            }
            self.tidy();
        }
    }

    fn gateway(&self, id: u32) -> Option<u64> {
        self.gateway_list().iter().find(|(c, _)| *c == id).map(|(_, g)| *g)
    }

    /// Records that `gateway` holds client `id`; answers the previous holder.
    fn set_gateway(&mut self, id: u32, gateway: u64) -> Option<u64> {
        let list = &mut self.extra_mut().gateways;
        match list.iter_mut().find(|(c, _)| *c == id) {
            Some((_, g)) => Some(std::mem::replace(g, gateway)),
            None => {
                list.push((id, gateway));
                None
            }
        }
    }

    fn remove_gateway(&mut self, id: u32) -> Option<u64> {
        let e = self.extra.as_mut()?;
        let at = e.gateways.iter().position(|(c, _)| *c == id)?;
        let (_, g) = e.gateways.remove(at);
        self.tidy();
        Some(g)
    }
}

/// A user's presence record read in place from the state (no copy): the
/// same fields as [`Record`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub uid: &'a str,
    pub sid: u64,
    /// Client types the user is online on; online = not empty.
    pub clients: Clients<'a>,
    pub accepts_strangers: bool,
    pub ext: ExtRef<'a>,
    /// Cluster time of the last change.
    pub changed_at_ms: u64,
    /// Log index of the last change.
    pub revision: u64,
    /// Client types held by a gateway session and the gateway holding each.
    pub gateways: Gateways<'a>,
}

impl<'a> RecordRef<'a> {
    pub fn online(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The owned record (a query's answer, a snapshot item).
    pub fn to_record(&self) -> Record {
        Record {
            uid: self.uid.to_owned(),
            sid: self.sid,
            clients: self.clients.iter().cloned().collect(),
            accepts_strangers: self.accepts_strangers,
            ext: self.ext.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            changed_at_ms: self.changed_at_ms,
            revision: self.revision,
            gateways: self.gateways.iter().map(|(c, g)| (c.clone(), *g)).collect(),
        }
    }
}

/// The client types of one record: a set of interned names.
#[derive(Clone, Copy)]
pub struct Clients<'a> {
    bits: u64,
    hi: &'a [u32],
    names: &'a [String],
}

impl<'a> Clients<'a> {
    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize + self.hi.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ids().any(|i| self.names[i as usize] == name)
    }

    fn ids(&self) -> impl Iterator<Item = u32> + 'a {
        let bits = self.bits;
        (0..CLIENT_BITS).filter(move |i| bits & (1 << i) != 0).chain(self.hi.iter().copied())
    }

    /// The names in ascending order (as a `BTreeSet<String>` lists them).
    pub fn iter(&self) -> std::vec::IntoIter<&'a String> {
        let names = self.names;
        let mut v: Vec<&'a String> = self.ids().map(|i| &names[i as usize]).collect();
        v.sort();
        v.into_iter()
    }
}

impl PartialEq for Clients<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Clients<'_> {}

impl std::fmt::Debug for Clients<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The ext of one record, read from its stored bytes.
#[derive(Clone, Copy)]
pub struct ExtRef<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> ExtRef<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// (key, value) in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (b, mut at) = (self.bytes, 0);
        (0..self.len).map(move |_| {
            let n = get_len(b, &mut at);
            let k = text(&b[at..at + n]);
            at += n;
            let n = get_len(b, &mut at);
            let v = text(&b[at..at + n]);
            at += n;
            (k, v)
        })
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl PartialEq for ExtRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for ExtRef<'_> {}

impl std::fmt::Debug for ExtRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ExtRef<'_> {
    /// As a map, like [`Ext`]: the same bytes in every format.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Which gateway holds each gateway-session client of one record.
#[derive(Clone, Copy)]
pub struct Gateways<'a> {
    list: &'a [(u32, u64)],
    names: &'a [String],
}

impl<'a> Gateways<'a> {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The gateway holding `client`.
    pub fn get(&self, client: &str) -> Option<&'a u64> {
        let names = self.names;
        self.list.iter().find(|(c, _)| names[*c as usize] == client).map(|(_, g)| g)
    }

    /// (client, gateway) in ascending client order.
    pub fn iter(&self) -> std::vec::IntoIter<(&'a String, &'a u64)> {
        let names = self.names;
        let mut v: Vec<(&'a String, &'a u64)> =
            self.list.iter().map(|(c, g)| (&names[*c as usize], g)).collect();
        v.sort();
        v.into_iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &'a u64> + 'a {
        self.list.iter().map(|(_, g)| g)
    }
}

impl PartialEq for Gateways<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Gateways<'_> {}

impl std::fmt::Debug for Gateways<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

type Chunks = Vec<Arc<Chunk>>;

/// The chunk of handle `h`, and the place in it.
fn loc(h: u32) -> (usize, usize) {
    (h as usize / CHUNK_RECORDS, h as usize % CHUNK_RECORDS)
}

fn slot_in(chunks: &[Arc<Chunk>], h: u32) -> &Slot {
    let (c, i) = loc(h);
    &chunks[c].slots[i]
}

fn uid_in(chunks: &[Arc<Chunk>], h: u32) -> &[u8] {
    let (c, i) = loc(h);
    chunks[c].uid_bytes(i)
}

/// The chunk of handle `h` (copied first if a snapshot view shares it)
/// and the place in it.
fn chunk_mut(chunks: &mut [Arc<Chunk>], h: u32) -> (&mut Chunk, usize) {
    let (c, i) = loc(h);
    (Arc::make_mut(&mut chunks[c]), i)
}

/// The slot of handle `h`, copying its chunk first if a snapshot view
/// shares it.
fn slot_mut_in(chunks: &mut [Arc<Chunk>], h: u32) -> &mut Slot {
    let (c, i) = chunk_mut(chunks, h);
    &mut c.slots[i]
}

fn records_in<'a>(
    chunks: &'a [Arc<Chunk>],
    names: &'a [String],
) -> impl Iterator<Item = RecordRef<'a>> {
    chunks.iter().flat_map(move |c| (0..c.slots.len()).map(move |i| c.view(i, names)))
}

/// (sid, uid) of every record that owns its sid.
fn sid_entries(chunks: &[Arc<Chunk>]) -> impl Iterator<Item = (u64, &str)> {
    chunks.iter().flat_map(|c| {
        c.slots.iter().enumerate().filter(|(_, s)| s.owns_sid).map(move |(i, s)| (s.sid, c.uid(i)))
    })
}

/// All presence records plus the sid index. Deterministic: see module docs.
///
/// Layout (issue 13, "compact records"): records live in chunks of
/// [`CHUNK_RECORDS`] shared copy-on-write with snapshot views, each user
/// at a handle (its place, a `u32`; users are never removed). The uid and
/// sid indexes are hash tables of handles (4 bytes a slot; a key is read
/// from the record it points at), hashed with foldhash seeded at random per
/// process (no SipHash, still no chosen-collision attack). Equality is
/// logical: the same records, sid index and applied index, whatever the
/// handles and intern ids.
#[derive(Clone, Default)]
pub struct PresenceState {
    chunks: Chunks,
    /// Users stored (the next handle).
    len: usize,
    /// Handles, by the hash of the record's uid.
    by_uid: HashTable<u32>,
    /// Handles of records that own their sid, by the hash of the sid.
    by_sid: HashTable<u32>,
    /// Users with a client held by each gateway (derived from records).
    by_gateway: HashMap<u64, HashSet<u32>>,
    clients: ClientTypes,
    hasher: DefaultHashBuilder,
    /// Log index of the last applied entry (any kind).
    applied: u64,
}

impl std::fmt::Debug for PresenceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceState")
            .field("users", &self.len)
            .field("sids", &self.by_sid.len())
            .field("gateways", &self.by_gateway.len())
            .field("client_types", &self.clients.names)
            .field("applied", &self.applied)
            .finish()
    }
}

impl PartialEq for PresenceState {
    fn eq(&self, o: &Self) -> bool {
        self.applied == o.applied
            && self.len == o.len
            && self.by_sid.len() == o.by_sid.len()
            && self.records().all(|r| o.get(r.uid) == Some(r))
            && self.sid_index().all(|(s, u)| o.sid_owner(s) == Some(u))
            && self.gateways() == o.gateways()
            && self.gateways().iter().all(|g| self.gateway_users(*g) == o.gateway_users(*g))
    }
}

impl Eq for PresenceState {}

impl PresenceState {
    /// Builds a state from stored records and sid index (start-up, snapshot
    /// install). The sid index is stored, not derived, so that which user a
    /// reused sid points at is the same on every replica. Client type ids
    /// are given in the order names are met; see [`Self::from_snapshot_parts`].
    pub fn from_parts(
        records: impl IntoIterator<Item = Record>,
        sids: impl IntoIterator<Item = (u64, String)>,
        applied: u64,
    ) -> Self {
        Self::from_snapshot_parts(std::iter::empty(), records, sids, applied)
    }

    /// [`Self::from_parts`] with the intern table first, `(id, name)`: ids
    /// are restored as they were (a table with gaps keeps the ids' order).
    /// A sid entry naming no user, or a user whose sid is another, is not
    /// kept (the state never builds one).
    pub fn from_snapshot_parts(
        client_types: impl IntoIterator<Item = (u32, String)>,
        records: impl IntoIterator<Item = Record>,
        sids: impl IntoIterator<Item = (u64, String)>,
        applied: u64,
    ) -> Self {
        let mut s = PresenceState { applied, ..Default::default() };
        let records = records.into_iter();
        // Sized once: growing a table rehashes every uid in it.
        let (chunks, hasher) = (&s.chunks, &s.hasher);
        s.by_uid.reserve(records.size_hint().0, |x| hasher.hash_one(uid_in(chunks, *x)));
        s.by_sid.reserve(records.size_hint().0, |x| hasher.hash_one(slot_in(chunks, *x).sid));
        let mut types: Vec<(u32, String)> = client_types.into_iter().collect();
        types.sort();
        for (_, name) in types {
            s.clients.intern(&name);
        }
        for r in records {
            s.put_record(r);
        }
        for (sid, uid) in sids {
            if let Some(h) = s.find_uid(&uid) {
                if sid != 0 && s.slot(h).sid == sid && !s.slot(h).owns_sid {
                    s.sid_set(sid, h);
                }
            }
        }
        s
    }

    /// Stores an owned record (start-up); replaces one with the same uid.
    fn put_record(&mut self, r: Record) {
        let blob =
            encode_blob(r.uid.as_bytes(), r.ext.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let h = match self.find_uid(&r.uid) {
            Some(h) => {
                let (c, i) = chunk_mut(&mut self.chunks, h);
                c.set_blob(i, &blob);
                h
            }
            None => self.push_new(&blob, r.sid),
        };
        let ids: Vec<u32> = r.clients.iter().map(|c| self.clients.intern(c)).collect();
        let gws: Vec<(u32, u64)> =
            r.gateways.iter().map(|(c, g)| (self.clients.intern(c), *g)).collect();
        for (_, g) in &gws {
            self.by_gateway.entry(*g).or_default().insert(h);
        }
        let s = slot_mut_in(&mut self.chunks, h);
        s.owns_sid = s.owns_sid && s.sid == r.sid;
        (s.sid, s.changed_at_ms, s.revision) = (r.sid, r.changed_at_ms, r.revision);
        (s.bits, s.extra, s.accepts_strangers) = (0, None, r.accepts_strangers);
        for id in ids {
            s.add_client(id);
        }
        for (id, g) in gws {
            s.set_gateway(id, g);
        }
    }

    fn slot(&self, h: u32) -> &Slot {
        slot_in(&self.chunks, h)
    }

    fn uid_of(&self, h: u32) -> &str {
        text(uid_in(&self.chunks, h))
    }

    fn view(&self, h: u32) -> RecordRef<'_> {
        let (c, i) = loc(h);
        self.chunks[c].view(i, &self.clients.names)
    }

    fn uid_hash(&self, uid: &[u8]) -> u64 {
        self.hasher.hash_one(uid)
    }

    fn find_uid(&self, uid: &str) -> Option<u32> {
        let chunks = &self.chunks;
        self.by_uid
            .find(self.uid_hash(uid.as_bytes()), |h| uid_in(chunks, *h) == uid.as_bytes())
            .copied()
    }

    /// Stores a new user from its blob; answers its handle.
    fn push_new(&mut self, blob: &[u8], sid: u64) -> u32 {
        let h = u32::try_from(self.len).expect("fewer than 2^32 users");
        if self.len.is_multiple_of(CHUNK_RECORDS) {
            let chunk = Chunk { slots: Vec::with_capacity(CHUNK_RECORDS), ..Default::default() };
            self.chunks.push(Arc::new(chunk));
        }
        let last = Arc::make_mut(self.chunks.last_mut().expect("a chunk was just made"));
        // A chunk copied for a snapshot view has no room left: give it all
        // at once rather than doubling past the chunk size.
        last.slots.reserve_exact(CHUNK_RECORDS - last.slots.len());
        last.push(blob, sid);
        self.len += 1;
        let hash = self.uid_hash(blob_split(blob).1);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.by_uid.insert_unique(hash, h, |x| hasher.hash_one(uid_in(chunks, *x)));
        h
    }

    fn sid_find(&self, sid: u64) -> Option<u32> {
        let chunks = &self.chunks;
        self.by_sid.find(self.hasher.hash_one(sid), |h| slot_in(chunks, *h).sid == sid).copied()
    }

    /// Removes `h` (which owns `sid`) from the sid index.
    fn sid_remove(&mut self, sid: u64, h: u32) {
        if let Ok(e) = self.by_sid.find_entry(self.hasher.hash_one(sid), |x| *x == h) {
            e.remove();
        }
        slot_mut_in(&mut self.chunks, h).owns_sid = false;
    }

    /// Makes `sid` resolve to `h` (whose sid it is), taking it from the
    /// user that owned it.
    fn sid_set(&mut self, sid: u64, h: u32) {
        let hash = self.hasher.hash_one(sid);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let prev = match self.by_sid.find_mut(hash, |x| slot_in(chunks, *x).sid == sid) {
            Some(x) => Some(std::mem::replace(x, h)),
            None => {
                self.by_sid.insert_unique(hash, h, |x| hasher.hash_one(slot_in(chunks, *x).sid));
                None
            }
        };
        if let Some(p) = prev {
            slot_mut_in(&mut self.chunks, p).owns_sid = false;
        }
        slot_mut_in(&mut self.chunks, h).owns_sid = true;
    }

    /// Whether `uid` may come online on `client`: it already is, or it is
    /// online on fewer than [`MAX_CLIENTS_PER_USER`] client types.
    pub fn admits_client(&self, uid: &str, client: &str) -> bool {
        self.find_uid(uid).is_none_or(|h| self.admits(h, client))
    }

    fn admits(&self, h: u32, client: &str) -> bool {
        let s = self.slot(h);
        s.client_count() < MAX_CLIENTS_PER_USER
            || self.clients.id(client).is_some_and(|id| s.has_client(id))
    }

    /// The sid index: which uid each sid resolves to.
    pub fn sid_index(&self) -> impl Iterator<Item = (u64, &str)> {
        sid_entries(&self.chunks)
    }

    /// The uid a sid resolves to.
    pub fn sid_owner(&self, sid: u64) -> Option<&str> {
        self.sid_find(sid).map(|h| self.uid_of(h))
    }

    /// The intern table: `(id, name)` of every client type met, by id.
    pub fn client_types(&self) -> impl Iterator<Item = (u32, &str)> {
        self.clients.names.iter().enumerate().map(|(i, n)| (i as u32, n.as_str()))
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

    /// The handle of `uid` (a new record if none) with `sid` made current
    /// (sid 0 keeps the record's sid); notes sid index changes in `touched`.
    fn handle_for(&mut self, uid: &str, sid: u64, touched: &mut Touched) -> u32 {
        let h = match self.find_uid(uid) {
            Some(h) => h,
            None => self.push_new(&encode_blob(uid.as_bytes(), std::iter::empty()), sid),
        };
        let cur = self.slot(h);
        if sid != 0 && cur.sid != sid {
            let (old, owned) = (cur.sid, cur.owns_sid);
            if owned {
                self.sid_remove(old, h);
                touched.sids.push(old);
            }
            slot_mut_in(&mut self.chunks, h).sid = sid;
        }
        let cur = self.slot(h);
        if cur.sid != 0 && !cur.owns_sid {
            let s = cur.sid;
            self.sid_set(s, h);
            touched.sids.push(s);
        }
        h
    }

    /// Applies one status-pool event.
    pub fn apply_event(&mut self, ev: &Event, at_ms: u64, revision: u64, touched: &mut Touched) {
        let (uid, sid) = match ev {
            Event::Login { uid, sid, .. }
            | Event::Logout { uid, sid, .. }
            | Event::Permission { uid, sid, .. } => (uid, *sid),
        };
        let h = self.handle_for(uid, sid, touched);
        let mut left_gateway = None;
        match ev {
            Event::Login { client, accepts_strangers, .. } => {
                let id = self.admits(h, client).then(|| self.clients.intern(client));
                let s = slot_mut_in(&mut self.chunks, h);
                if let Some(id) = id {
                    s.add_client(id);
                }
                if let Some(a) = accepts_strangers {
                    s.accepts_strangers = *a;
                }
            }
            Event::Logout { client, .. } => {
                if let Some(id) = self.clients.id(client) {
                    let s = slot_mut_in(&mut self.chunks, h);
                    s.remove_client(id);
                    left_gateway = s.remove_gateway(id);
                }
            }
            Event::Permission { accepts_strangers, .. } => {
                slot_mut_in(&mut self.chunks, h).accepts_strangers = *accepts_strangers
            }
        }
        let (c, i) = chunk_mut(&mut self.chunks, h);
        c.merge_ext(i, ev.ext());
        let s = &mut c.slots[i];
        s.changed_at_ms = at_ms;
        s.revision = revision;
        if let Some(g) = left_gateway {
            self.unindex_gateway(h, g);
        }
        touched.uids.push(uid.clone());
    }

    fn unindex_gateway(&mut self, h: u32, gateway: u64) {
        let still = self.slot(h).gateway_list().iter().any(|(_, g)| *g == gateway);
        if !still {
            if let Some(set) = self.by_gateway.get_mut(&gateway) {
                set.remove(&h);
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
        let h = self.handle_for(uid, sid, touched);
        if !self.admits(h, client) {
            // Over the cap: not applied (the gateway refuses such a Hello
            // first; this keeps every replica bounded if one got through).
            return;
        }
        let id = self.clients.intern(client);
        let s = slot_mut_in(&mut self.chunks, h);
        s.add_client(id);
        let previous = s.set_gateway(id, gateway);
        s.changed_at_ms = at_ms;
        s.revision = revision;
        self.by_gateway.entry(gateway).or_default().insert(h);
        if let Some(p) = previous.filter(|p| *p != gateway) {
            self.unindex_gateway(h, p);
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
        let Some(h) = self.find_uid(uid) else { return };
        let Some(id) = self.clients.id(client) else { return };
        if self.slot(h).gateway(id) != Some(gateway) {
            return;
        }
        let s = slot_mut_in(&mut self.chunks, h);
        s.remove_gateway(id);
        s.remove_client(id);
        s.changed_at_ms = at_ms;
        s.revision = revision;
        self.unindex_gateway(h, gateway);
        touched.uids.push(uid.to_owned());
    }

    /// Handles in ascending uid order (the order a `BTreeSet<String>` of
    /// the uids has).
    fn by_uid_order(&self, mut hs: Vec<u32>) -> Vec<u32> {
        let chunks = &self.chunks;
        hs.sort_unstable_by(|a, b| uid_in(chunks, *a).cmp(uid_in(chunks, *b)));
        hs
    }

    /// Every session held by `gateway` ends.
    pub fn gateway_reset(
        &mut self,
        gateway: u64,
        at_ms: u64,
        revision: u64,
        touched: &mut Touched,
    ) {
        let Some(set) = self.by_gateway.remove(&gateway) else { return };
        for h in self.by_uid_order(set.into_iter().collect()) {
            let (c, i) = chunk_mut(&mut self.chunks, h);
            let s = &mut c.slots[i];
            let held: Vec<u32> =
                s.gateway_list().iter().filter(|(_, g)| *g == gateway).map(|(c, _)| *c).collect();
            for c in held {
                s.remove_gateway(c);
                s.remove_client(c);
            }
            s.changed_at_ms = at_ms;
            s.revision = revision;
            touched.uids.push(c.uid(i).to_owned());
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
        let hs = self.by_gateway.get(&gateway).map(|s| s.iter().copied().collect());
        for h in self.by_uid_order(hs.unwrap_or_default()) {
            let r = self.view(h);
            out.extend(
                r.gateways
                    .iter()
                    .filter(|(_, g)| **g == gateway)
                    .map(|(c, _)| (r.uid.to_owned(), c.clone())),
            );
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

    pub fn get(&self, uid: &str) -> Option<RecordRef<'_>> {
        self.find_uid(uid).map(|h| self.view(h))
    }

    pub fn get_by_sid(&self, sid: u64) -> Option<RecordRef<'_>> {
        self.sid_find(sid).map(|h| self.view(h))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn online_count(&self) -> usize {
        self.chunks.iter().flat_map(|c| &c.slots).filter(|s| s.client_count() > 0).count()
    }

    /// Every record, in no particular order (snapshots sort them).
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        records_in(&self.chunks, &self.clients.names)
    }

    /// A read view of every record as it is now, for a snapshot: it shares
    /// the record chunks (one `Arc` each), so taking it costs microseconds
    /// under the state lock, and later writes copy a chunk before changing
    /// it rather than waiting for the view to be written out.
    pub fn snapshot(&self) -> PresenceSnapshot {
        PresenceSnapshot {
            chunks: self.chunks.clone(),
            len: self.len,
            names: self.clients.names.clone(),
        }
    }

    /// Answers a batch query: records found by uid then by sid (each user at
    /// most once, in request order), and the ids that have no record.
    pub fn query(&self, uids: &[String], sids: &[u64]) -> QueryResult {
        self.query_view(uids, sids).to_result()
    }

    /// A batch query's answer read in place: which records it holds (as
    /// handles, not copies) and which ids have none. The API encodes its
    /// answer from this while it holds the state lock, so that no record is
    /// copied on the way to the wire.
    pub fn query_view<'a>(&'a self, uids: &'a [String], sids: &[u64]) -> QueryView<'a> {
        let mut seen = HashSet::with_capacity(uids.len() + sids.len());
        let mut q = QueryView {
            state: self,
            uids,
            users: Vec::with_capacity(uids.len() + sids.len()),
            unknown: Vec::new(),
            unknown_sids: Vec::new(),
        };
        for (i, uid) in uids.iter().enumerate() {
            match self.find_uid(uid) {
                Some(h) => {
                    if seen.insert(h) {
                        q.users.push(h);
                    }
                }
                None => q.unknown.push(i),
            }
        }
        for sid in sids {
            match self.sid_find(*sid) {
                Some(h) => {
                    if seen.insert(h) {
                        q.users.push(h);
                    }
                }
                None => q.unknown_sids.push(*sid),
            }
        }
        q
    }
}

/// The answer to a batch query as [`PresenceState::query_view`] finds it:
/// borrowed from the state (the records) and from the request (the unknown
/// uids). [`QueryView::to_result`] is the owned copy.
pub struct QueryView<'a> {
    state: &'a PresenceState,
    uids: &'a [String],
    /// Handles of the records found, in answer order.
    users: Vec<u32>,
    /// Indexes into `uids` of the uids that have no record.
    unknown: Vec<usize>,
    unknown_sids: Vec<u64>,
}

impl<'a> QueryView<'a> {
    /// Applied index the answer is served at.
    pub fn revision(&self) -> u64 {
        self.state.applied
    }

    /// Records found, by uid then by sid, each user once, in request order.
    pub fn users(&self) -> impl ExactSizeIterator<Item = RecordRef<'a>> + '_ {
        let state = self.state;
        self.users.iter().map(move |h| state.view(*h))
    }

    /// Uids that have no record, in request order.
    pub fn unknown(&self) -> impl ExactSizeIterator<Item = &'a str> + '_ {
        let uids = self.uids;
        self.unknown.iter().map(move |i| uids[*i].as_str())
    }

    /// Sids that resolve to no user, in request order.
    pub fn unknown_sids(&self) -> &[u64] {
        &self.unknown_sids
    }

    /// The owned answer (every record copied).
    pub fn to_result(&self) -> QueryResult {
        QueryResult {
            revision: self.revision(),
            users: self.users().map(|r| r.to_record()).collect(),
            unknown: self.unknown().map(str::to_owned).collect(),
            unknown_sids: self.unknown_sids.clone(),
        }
    }
}

/// The presence records as they were when [`PresenceState::snapshot`] was
/// called, readable from any thread while the state goes on changing.
#[derive(Clone)]
pub struct PresenceSnapshot {
    chunks: Chunks,
    len: usize,
    names: Arc<Vec<String>>,
}

impl PresenceSnapshot {
    /// Users in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The intern table, by id.
    pub fn client_types(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().enumerate().map(|(i, n)| (i as u32, n.as_str()))
    }

    /// Every record, in ascending uid order.
    pub fn records_by_uid(&self) -> impl Iterator<Item = RecordRef<'_>> {
        let mut hs: Vec<u32> = (0..self.len as u32).collect();
        let chunks = &self.chunks;
        hs.sort_unstable_by(|a, b| uid_in(chunks, *a).cmp(uid_in(chunks, *b)));
        let names = &self.names;
        hs.into_iter().map(move |h| {
            let (c, i) = loc(h);
            chunks[c].view(i, names)
        })
    }

    /// Entries of the sid index (without sorting them).
    pub fn sid_count(&self) -> usize {
        sid_entries(&self.chunks).count()
    }

    /// The sid index, in ascending sid order.
    pub fn sids_by_sid(&self) -> Vec<(u64, &str)> {
        let mut v: Vec<(u64, &str)> = sid_entries(&self.chunks).collect();
        v.sort_unstable();
        v
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
        let rebuilt =
            PresenceState::from_parts(a.records().map(|r| r.to_record()), sids, a.applied());
        assert_eq!(rebuilt, a);
        assert_eq!(rebuilt.len(), a.len());
        for r in a.records() {
            assert_eq!(rebuilt.get(r.uid), Some(r));
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
        let rebuilt =
            PresenceState::from_parts(s.records().map(|r| r.to_record()), sids, s.applied());
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

    fn session(uid: &str, client: &str, gateway: u64, s: &mut PresenceState, rev: u64) {
        s.session_login(uid, 0, client, gateway, rev, rev, &mut Touched::default());
    }

    /// The intern table is a function of the log: two replicas applying the
    /// same commands give every client type the same id (the order of its
    /// first applied login), a refused login (over the cap) or a logout of
    /// an unknown type interns nothing, and rebuilding from the table and
    /// the records keeps every id.
    #[test]
    fn presence_client_type_ids_are_deterministic_and_rebuilt() {
        let run = || {
            let mut s = PresenceState::default();
            let mut t = Touched::default();
            s.apply_event(&login("a", 1, "web"), 1, 1, &mut t);
            s.apply_event(&login("b", 2, "ios"), 1, 2, &mut t);
            s.apply_event(
                &Event::Logout { uid: "a".into(), sid: 1, client: "ghost".into(), ext: Ext::new() },
                1,
                3,
                &mut t,
            );
            for i in 0..MAX_CLIENTS_PER_USER {
                s.apply_event(&login("c", 3, &format!("c{i}")), 2, 4, &mut t);
            }
            s.apply_event(&login("c", 3, "refused"), 2, 5, &mut t);
            session("d", "android", 9, &mut s, 6);
            s
        };
        let (a, b) = (run(), run());
        let ids = |s: &PresenceState| {
            s.client_types().map(|(i, n)| (i, n.to_owned())).collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        let names: Vec<String> = ids(&a).into_iter().map(|(_, n)| n).collect();
        let mut want = vec!["web".to_string(), "ios".to_string()];
        want.extend((0..MAX_CLIENTS_PER_USER).map(|i| format!("c{i}")));
        want.push("android".into());
        assert_eq!(names, want, "first-login order; nothing for a refused login or a logout");
        let sids: Vec<(u64, String)> = a.sid_index().map(|(s, u)| (s, u.to_string())).collect();
        let rebuilt = PresenceState::from_snapshot_parts(
            ids(&a),
            a.records().map(|r| r.to_record()),
            sids,
            a.applied(),
        );
        assert_eq!(ids(&rebuilt), ids(&a));
        assert_eq!(rebuilt, a);
    }

    /// Client type ids past the bit word (here 70 types over five users)
    /// answer the same sets as a few do: sorted names, the cap, logouts,
    /// gateway sessions on a high id, and a rebuild.
    #[test]
    fn presence_many_client_types_beyond_the_bit_word() {
        let mut s = PresenceState::default();
        let mut t = Touched::default();
        for i in 0..70u64 {
            s.apply_event(
                &login(&format!("u{}", i / 14), i + 1, &format!("t{i:02}")),
                1,
                i + 1,
                &mut t,
            );
        }
        session("u4", "t69", 3, &mut s, 100);
        session("u4", "t01", 3, &mut s, 101);
        let r = s.get("u4").unwrap();
        let want: Vec<String> =
            (56..70).map(|i| format!("t{i:02}")).chain(["t01".into()]).collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(r.clients.iter().cloned().collect::<Vec<_>>(), want_sorted);
        assert!(
            r.clients.contains("t69") && r.clients.contains("t01") && !r.clients.contains("t02")
        );
        assert_eq!(r.gateways.get("t69"), Some(&3));
        assert_eq!(
            s.gateway_sessions(3),
            vec![("u4".into(), "t01".into()), ("u4".into(), "t69".into())]
        );
        s.session_logout("u4", "t69", 3, 102, 102, &mut t);
        assert!(!s.get("u4").unwrap().clients.contains("t69"));
        assert_eq!(s.gateway_users(3), 1, "t01 is still held by gateway 3");
        s.gateway_reset(3, 103, 103, &mut t);
        assert_eq!(s.gateway_users(3), 0);
        assert_eq!(s.get("u4").unwrap().clients.len(), 13);
        let sids: Vec<(u64, String)> = s.sid_index().map(|(a, b)| (a, b.to_string())).collect();
        let rebuilt =
            PresenceState::from_parts(s.records().map(|r| r.to_record()), sids, s.applied());
        assert_eq!(rebuilt, s);
    }

    /// Ext keys and values of every allowed length (multi-byte length
    /// prefixes) survive storage; a merge with the same values changes
    /// nothing, and the entry cap still admits updates of a held key.
    #[test]
    fn presence_ext_is_stored_and_merged_exactly() {
        let mut s = PresenceState::default();
        let big = "x".repeat(MAX_EXT_BYTES);
        let mut ext = Ext::new();
        ext.insert(big.clone(), big.clone());
        ext.insert("k".into(), String::new());
        let uid = "é".repeat(MAX_UID_BYTES / 2);
        let ev = |ext: Ext| Event::Permission {
            uid: uid.clone(),
            sid: 5,
            accepts_strangers: false,
            ext,
        };
        s.apply_events(&[ev(ext.clone())], 1, 1);
        let r = s.get(&uid).unwrap();
        assert_eq!(r.uid, uid);
        assert_eq!(r.to_record().ext, ext);
        assert_eq!(r.ext.get("k"), Some(""));
        let mut more = Ext::new();
        for i in 0..MAX_EXT_ENTRIES {
            more.insert(format!("m{i:02}"), i.to_string());
        }
        s.apply_events(&[ev(more)], 2, 2);
        assert_eq!(s.get(&uid).unwrap().ext.len(), MAX_EXT_ENTRIES);
        let mut update = Ext::new();
        update.insert("k".into(), "v".into());
        update.insert("zz".into(), "over the cap".into());
        s.apply_events(&[ev(update)], 3, 3);
        let r = s.get(&uid).unwrap();
        assert_eq!((r.ext.get("k"), r.ext.get("zz")), (Some("v"), None));
        assert_eq!(r.ext.get(&big), Some(big.as_str()));
    }

    /// A snapshot view keeps the records as they were while the state goes
    /// on changing (copy-on-write chunks): a thread reads the view while
    /// writes touch every chunk, the view answers exactly the records of a
    /// deep copy made when it was taken, and the state ends equal to a
    /// replica that applied the same writes without any view.
    #[test]
    fn presence_snapshot_view_is_stable_under_concurrent_writes() {
        let users = CHUNK_RECORDS * 3 + 17;
        let mut live = PresenceState::default();
        let mut t = Touched::default();
        for i in 0..users {
            live.apply_event(&login(&format!("u{i}"), i as u64 + 1, "web"), 1, 1, &mut t);
        }
        let mut twin = live.clone();
        let before: Vec<Record> = {
            let mut v: Vec<Record> = live.records().map(|r| r.to_record()).collect();
            v.sort_by(|a, b| a.uid.cmp(&b.uid));
            v
        };
        let view = live.snapshot();
        let reader = std::thread::spawn(move || {
            let sids: Vec<(u64, String)> =
                view.sids_by_sid().into_iter().map(|(s, u)| (s, u.to_owned())).collect();
            let recs: Vec<Record> = view.records_by_uid().map(|r| r.to_record()).collect();
            (recs, sids)
        });
        let writes: Vec<Event> = (0..users)
            .step_by(7)
            .map(|i| Event::Logout {
                uid: format!("u{i}"),
                sid: (users + i) as u64,
                client: "web".into(),
                ext: Ext::new(),
            })
            .chain((0..50).map(|i| login(&format!("new{i}"), 1, "ios")))
            .collect();
        live.apply_events(&writes, 2, 2);
        let (recs, sids) = reader.join().unwrap();
        assert_eq!(recs, before, "the view is the state as it was");
        assert_eq!(sids.len(), users);
        assert!(sids.windows(2).all(|w| w[0].0 < w[1].0));
        twin.apply_events(&writes, 2, 2);
        assert_eq!(live, twin);
        assert_eq!(live.len(), users + 50);
        assert_eq!(live.sid_owner(1), Some("new49"), "sid 1 moved to the last login naming it");
        assert!(!live.get("u0").unwrap().online());
    }

    /// Changing a user's ext over and over leaves its chunk's arena
    /// bounded (replaced blobs are compacted away once they are half of
    /// it), and every record of the chunk reads back what was last written.
    #[test]
    fn presence_arena_garbage_is_compacted() {
        let mut s = PresenceState::default();
        let ev = |u: usize, v: String| {
            let mut ext = Ext::new();
            ext.insert("k".into(), v);
            Event::Permission {
                uid: format!("u{u}"),
                sid: u as u64 + 1,
                accepts_strangers: true,
                ext,
            }
        };
        for round in 0..500 {
            let evs: Vec<Event> = (0..10).map(|u| ev(u, format!("{round:0>100}"))).collect();
            s.apply_events(&evs, round, round + 1);
        }
        let c = &s.chunks[0];
        let live: usize = c.slots.iter().map(|x| x.len as usize).sum();
        assert!(c.arena.len() <= 2 * live + ARENA_COMPACT_MIN, "{} of {live}", c.arena.len());
        for u in 0..10 {
            let r = s.get(&format!("u{u}")).unwrap();
            assert_eq!(r.ext.get("k"), Some(format!("{:0>100}", 499).as_str()));
            assert_eq!(r.sid, u as u64 + 1);
        }
    }

    /// The stored record stays 56 bytes on 64-bit targets (the figure the
    /// memory budget in docs/benchmarks.md "Compact records" is built on).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn presence_slot_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
    }
}

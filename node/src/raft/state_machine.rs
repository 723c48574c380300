//! The replicated state machine: presence records in memory for queries,
//! persisted in sled, with snapshots as files we write and fsync ourselves.
//!
//! Layout of the `sm` sled tree: `u<uid>` → record, `s<sid BE>` → uid,
//! `M…` → message items (see [`herald_domain::messages::Key::bytes`]),
//! `G…` → media metadata and contacts (see [`herald_domain::library::Key::bytes`]),
//! `!applied` → last applied log id, `!membership` → last membership.
//! Snapshot files live in `<data>/snapshots/` (see [`SnapshotStore`]).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use super::codec::{decode, decode_from, encode, encode_into};
use super::types::{Applied, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use herald_domain::library::{Item as LibItem, Library};
use herald_domain::messages::{Item, MsgState, Notice};
use herald_domain::presence::{PresenceState, Record};
use herald_domain::state::{Effects, State};

/// Notices buffered for slow gateway listeners; one that falls further
/// behind re-reads the inboxes it serves (see gateway sessions).
const NOTICE_BUFFER: usize = 8192;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, File>;

const KEY_APPLIED: &[u8] = b"!applied";
const KEY_MEMBERSHIP: &[u8] = b"!membership";

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

fn user_key(uid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(uid.len() + 1);
    k.push(b'u');
    k.extend_from_slice(uid.as_bytes());
    k
}

fn sid_key(sid: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b's';
    k[1..].copy_from_slice(&sid.to_be_bytes());
    k
}

/// Shared, read-mostly view of the presence state, for the query path.
pub type SharedState = Arc<RwLock<State>>;

/// Header of a snapshot file, then `records` records and `sids` sid pairs.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
    records: u64,
    sids: u64,
    items: u64,
    lib_items: u64,
}

/// Snapshot files in one directory: `snap-<index>-<term>-<n>.snap`, written to
/// a `.tmp` name, fsynced, renamed, directory fsynced. Only the newest is kept.
pub struct SnapshotStore {
    dir: PathBuf,
    seq: std::sync::atomic::AtomicU64,
}

impl SnapshotStore {
    fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                fs::remove_file(&p)?;
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(SnapshotStore { dir, seq: std::sync::atomic::AtomicU64::new(nanos as u64) })
    }

    /// A fresh temporary file in the snapshot directory.
    pub fn temp_file(&self) -> io::Result<(PathBuf, File)> {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.dir.join(format!("incoming-{n}.tmp"));
        let f = File::options().read(true).write(true).create_new(true).open(&p)?;
        Ok((p, f))
    }

    /// Makes a fully written temp file the current snapshot.
    fn commit(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<PathBuf> {
        File::open(tmp)?.sync_all()?;
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dst = self.dir.join(format!("snap-{index:020}-{n}.snap"));
        fs::rename(tmp, &dst)?;
        File::open(&self.dir)?.sync_all()?;
        for e in fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p != dst && p.extension().is_some_and(|x| x == "snap") {
                fs::remove_file(&p)?;
            }
        }
        Ok(dst)
    }

    /// The newest snapshot file and its header, if any.
    fn current(&self) -> io::Result<Option<(PathBuf, SnapshotMeta)>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        files.sort();
        match files.pop() {
            Some(p) => {
                let mut r = BufReader::new(File::open(&p)?);
                let h: SnapshotHeader = decode_from(&mut r)?;
                Ok(Some((p, h.meta)))
            }
            None => Ok(None),
        }
    }
}

/// Writes a snapshot body: header, records sorted by uid, sid pairs sorted.
fn write_snapshot(
    w: &mut impl Write,
    meta: &SnapshotMeta,
    records: &[Record],
    sids: &[(u64, String)],
    items: &[Item],
    lib_items: &[LibItem],
) -> io::Result<()> {
    let h = SnapshotHeader {
        meta: meta.clone(),
        records: records.len() as u64,
        sids: sids.len() as u64,
        items: items.len() as u64,
        lib_items: lib_items.len() as u64,
    };
    encode_into(&h, w)?;
    for r in records {
        encode_into(r, w)?;
    }
    for s in sids {
        encode_into(s, w)?;
    }
    for it in items {
        encode_into(it, w)?;
    }
    for it in lib_items {
        encode_into(it, w)?;
    }
    Ok(())
}

/// Reads a snapshot file into a state.
fn read_snapshot(r: &mut impl Read) -> io::Result<(SnapshotMeta, State)> {
    let h: SnapshotHeader = decode_from(r)?;
    // The counts come from a file a peer sent: bound what we reserve.
    let mut records = Vec::with_capacity(h.records.min(1 << 20) as usize);
    for _ in 0..h.records {
        records.push(decode_from::<Record, _>(r)?);
    }
    let mut sids = Vec::with_capacity(h.sids.min(1 << 20) as usize);
    for _ in 0..h.sids {
        sids.push(decode_from::<(u64, String), _>(r)?);
    }
    let mut items = Vec::with_capacity(h.items.min(1 << 20) as usize);
    for _ in 0..h.items {
        items.push(decode_from::<Item, _>(r)?);
    }
    let mut lib_items = Vec::with_capacity(h.lib_items.min(1 << 20) as usize);
    for _ in 0..h.lib_items {
        lib_items.push(decode_from::<LibItem, _>(r)?);
    }
    let applied = h.meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
    Ok((
        h.meta,
        State {
            presence: PresenceState::from_parts(records, sids, applied),
            msgs: MsgState::from_items(items),
            lib: Library::from_items(lib_items),
        },
    ))
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    state: SharedState,
    /// Last applied log id and membership: what `applied_state` answers.
    applied: Mutex<(Option<LogId>, StoredMembership)>,
    snapshots: SnapshotStore,
    notices: tokio::sync::broadcast::Sender<Notice>,
}

/// The openraft state machine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

impl StateMachine {
    /// Opens the state machine from sled, or from the snapshot file when that
    /// is newer (a crash during a snapshot install).
    pub fn open(db: &sled::Db, snapshot_dir: PathBuf) -> io::Result<Self> {
        let tree = db.open_tree("sm").map_err(io_err)?;
        let snapshots = SnapshotStore::open(snapshot_dir)?;
        let applied: Option<LogId> = match tree.get(KEY_APPLIED).map_err(io_err)? {
            Some(v) => decode(&v)?,
            None => None,
        };
        let membership: StoredMembership = match tree.get(KEY_MEMBERSHIP).map_err(io_err)? {
            Some(v) => decode(&v)?,
            None => StoredMembership::default(),
        };
        let mut records = Vec::new();
        for kv in tree.scan_prefix(b"u") {
            let (_, v) = kv.map_err(io_err)?;
            records.push(decode::<Record>(&v)?);
        }
        let mut sids = Vec::new();
        for kv in tree.scan_prefix(b"s") {
            let (k, v) = kv.map_err(io_err)?;
            let sid = u64::from_be_bytes(
                k[1..9].try_into().map_err(|_| io::Error::other("bad sid key"))?,
            );
            sids.push((sid, String::from_utf8(v.to_vec()).map_err(io::Error::other)?));
        }
        let mut items = Vec::new();
        for kv in tree.scan_prefix(b"M") {
            let (_, v) = kv.map_err(io_err)?;
            items.push(decode::<Item>(&v)?);
        }
        let mut lib_items = Vec::new();
        for kv in tree.scan_prefix(b"G") {
            let (_, v) = kv.map_err(io_err)?;
            lib_items.push(decode::<LibItem>(&v)?);
        }
        let idx = applied.as_ref().map(|l| l.index()).unwrap_or(0);
        let state = State {
            presence: PresenceState::from_parts(records, sids, idx),
            msgs: MsgState::from_items(items),
            lib: Library::from_items(lib_items),
        };
        let sm = StateMachine {
            inner: Arc::new(Inner {
                db: db.clone(),
                tree,
                state: Arc::new(RwLock::new(state)),
                applied: Mutex::new((applied.clone(), membership)),
                snapshots,
                notices: tokio::sync::broadcast::channel(NOTICE_BUFFER).0,
            }),
        };
        if let Some((path, meta)) = sm.inner.snapshots.current()? {
            if meta.last_log_id > applied {
                tracing::warn!(snapshot = %path.display(), "state machine is behind its snapshot; loading the snapshot");
                let (meta, state) = read_snapshot(&mut BufReader::new(File::open(&path)?))?;
                sm.replace_state(&meta, state)?;
            }
        }
        Ok(sm)
    }

    /// The live state, for queries.
    pub fn shared_state(&self) -> SharedState {
        self.inner.state.clone()
    }

    /// Notices of what each applied entry means for sessions (messages to
    /// push). Subscribe before reading the state to miss nothing.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// The snapshot directory, for receiving snapshots from the network.
    pub fn snapshot_store(&self) -> &SnapshotStore {
        &self.inner.snapshots
    }

    /// Replaces the whole state (snapshot install), in memory and in sled.
    fn replace_state(&self, meta: &SnapshotMeta, state: State) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for k in self.inner.tree.iter().keys() {
            batch.remove(k.map_err(io_err)?);
        }
        for r in state.presence.records() {
            batch.insert(user_key(&r.uid), encode(r)?);
        }
        for (sid, uid) in state.presence.sid_index() {
            batch.insert(&sid_key(sid)[..], uid.as_bytes());
        }
        for it in state.msgs.items() {
            batch.insert(it.key().bytes(), encode(&it)?);
        }
        for it in state.lib.items() {
            batch.insert(it.key().bytes(), encode(&it)?);
        }
        batch.insert(KEY_APPLIED, encode(&meta.last_log_id)?);
        batch.insert(KEY_MEMBERSHIP, encode(&meta.last_membership)?);
        self.inner.tree.apply_batch(batch).map_err(io_err)?;
        *self.inner.state.write().expect("state lock") = state;
        *self.inner.applied.lock().expect("applied lock") =
            (meta.last_log_id.clone(), meta.last_membership.clone());
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Copy under the locks (a memory copy), write without them, so that
        // applying is not blocked by the disk.
        let (meta, mut records, mut sids, items, lib_items) = {
            let st = self.inner.state.read().expect("state lock");
            let (last, membership) = self.inner.applied.lock().expect("applied lock").clone();
            let records: Vec<Record> = st.presence.records().cloned().collect();
            let sids: Vec<(u64, String)> =
                st.presence.sid_index().map(|(s, u)| (s, u.to_owned())).collect();
            (
                SnapshotMeta { last_log_id: last, last_membership: membership },
                records,
                sids,
                st.msgs.items(),
                st.lib.items(),
            )
        };
        // The snapshot stands for the state up to `meta.last_log_id`; make
        // sure sled holds at least that much before logs are purged.
        self.inner.db.flush_async().await.map_err(io_err)?;
        let this = self.clone();
        let m = meta.clone();
        let path = tokio::task::spawn_blocking(move || -> io::Result<PathBuf> {
            records.sort_by(|a, b| a.uid.cmp(&b.uid));
            sids.sort();
            let (tmp, f) = this.inner.snapshots.temp_file()?;
            let mut w = BufWriter::new(f);
            write_snapshot(&mut w, &m, &records, &sids, &items, &lib_items)?;
            w.flush()?;
            this.inner.snapshots.commit(&tmp, &m)
        })
        .await
        .map_err(io::Error::other)??;
        tracing::info!(snapshot = %path.display(), last_log_id = ?meta.last_log_id, "snapshot built");
        Ok(Snapshot { meta, snapshot: File::open(path)? })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = File;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.inner.applied.lock().expect("applied lock").clone())
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let items: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(items.len());
        let mut fx = Effects::default();
        {
            let mut st = self.inner.state.write().expect("state lock");
            let mut applied = self.inner.applied.lock().expect("applied lock");
            for (entry, responder) in items {
                let log_id = entry.log_id();
                let index = log_id.index();
                let mut results = Vec::new();
                match &entry.payload {
                    EntryPayload::Normal(cmd) => {
                        results = st.apply(cmd, index, &mut fx);
                    }
                    EntryPayload::Membership(m) => {
                        st.set_applied(index);
                        applied.1 = StoredMembership::new(Some(log_id.clone()), m.clone());
                        batch.insert(KEY_MEMBERSHIP, encode(&applied.1)?);
                    }
                    EntryPayload::Blank => st.set_applied(index),
                }
                applied.0 = Some(log_id);
                if let Some(r) = responder {
                    replies.push((r, Applied { revision: index, results }));
                }
            }
            let uids: std::collections::HashSet<&String> = fx.touched.uids.iter().collect();
            for uid in uids {
                if let Some(r) = st.presence.get(uid) {
                    batch.insert(user_key(uid), encode(r)?);
                }
            }
            let sids: std::collections::HashSet<u64> = fx.touched.sids.iter().copied().collect();
            for sid in sids {
                match st.presence.sid_owner(sid) {
                    Some(uid) => batch.insert(&sid_key(sid)[..], uid.as_bytes()),
                    None => batch.remove(&sid_key(sid)[..]),
                }
            }
            let keys: std::collections::BTreeSet<herald_domain::messages::Key> =
                st.msgs.take_dirty().into_iter().collect();
            for k in keys {
                match st.msgs.item(&k) {
                    Some(it) => batch.insert(k.bytes(), encode(&it)?),
                    None => batch.remove(k.bytes()),
                }
            }
            let keys: std::collections::BTreeSet<herald_domain::library::Key> =
                st.lib.take_dirty().into_iter().collect();
            for k in keys {
                match st.lib.item(&k) {
                    Some(it) => batch.insert(k.bytes(), encode(&it)?),
                    None => batch.remove(k.bytes()),
                }
            }
            batch.insert(KEY_APPLIED, encode(&applied.0)?);
        }
        self.inner.tree.apply_batch(batch).map_err(io_err)?;
        for n in fx.notices {
            // No receiver (no gateway listening) is fine.
            let _ = self.inner.notices.send(n);
        }
        for (r, a) in replies {
            r.send(a);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: File,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Keep our own fsynced copy: the snapshot we serve from now on.
            snapshot.rewind()?;
            let (tmp, f) = this.inner.snapshots.temp_file()?;
            let mut w = BufWriter::new(f);
            io::copy(&mut snapshot, &mut w)?;
            w.flush()?;
            drop(w);
            let path = this.inner.snapshots.commit(&tmp, &meta)?;
            let (file_meta, state) = read_snapshot(&mut BufReader::new(File::open(&path)?))?;
            if file_meta.last_log_id != meta.last_log_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot file does not match its meta",
                ));
            }
            this.replace_state(&meta, state)?;
            tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        self.inner.db.flush_async().await.map_err(io_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match self.inner.snapshots.current()? {
            Some((path, meta)) => Ok(Some(Snapshot { meta, snapshot: File::open(path)? })),
            None => Ok(None),
        }
    }
}

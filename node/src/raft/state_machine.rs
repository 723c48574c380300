//! The replicated state machine: the whole `State` in memory (shared with
//! the query path behind an `RwLock`), persisted only by snapshots — files
//! we write, fsync, rename and fsync the directory of ourselves. `apply`
//! changes memory only (no write per entry on the hot path). After a
//! restart the newest snapshot is loaded and openraft replays the log
//! since it (the log keeps every entry after the snapshot; it is purged
//! only up to a snapshot that is on disk).
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

use sha2::{Digest, Sha256};

use super::codec::{decode_from, encode_into};
use super::types::{Applied, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use herald_domain::messages::Notice;
use herald_domain::state::{Effects, Item, State, StateSnapshot};

/// Notices buffered for slow gateway listeners; one that falls further
/// behind re-reads the inboxes it serves (see gateway sessions).
const NOTICE_BUFFER: usize = 8192;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, File>;

/// Shared, read-mostly view of the presence state, for the query path.
pub type SharedState = Arc<RwLock<State>>;

/// First bytes of a snapshot file (format 2: items, then a SHA-256 trailer).
const SNAPSHOT_MAGIC: &[u8; 8] = b"HSNAP\x002\n";
/// Items reserved before reading a snapshot's items (the count in its
/// header is a peer's claim; 4096 items are ~600 KiB).
const SNAPSHOT_RESERVE_ITEMS: u64 = 4096;
/// Bytes of the trailer: SHA-256 of everything before it.
const SNAPSHOT_TRAILER: usize = 32;

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Header of a snapshot file, then `items` persisted items of the state.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
    items: u64,
}

/// Deletes a temporary file when dropped (unless forgotten once committed).
pub struct RemoveOnDrop(pub Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
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
                let mut magic = [0u8; 8];
                r.read_exact(&mut magic)?;
                if &magic != SNAPSHOT_MAGIC {
                    return Err(invalid(format!("{}: not a Herald snapshot", p.display())));
                }
                let h: SnapshotHeader = decode_from(&mut r)?;
                Ok(Some((p, h.meta)))
            }
            None => Ok(None),
        }
    }
}

/// Writes a snapshot file: magic, header, the view's items in key order,
/// and the SHA-256 of all of that as a trailer.
fn write_snapshot(w: &mut impl Write, meta: &SnapshotMeta, view: StateSnapshot) -> io::Result<()> {
    let mut hw = HashingWriter { inner: w, hash: Sha256::new() };
    hw.write_all(SNAPSHOT_MAGIC)?;
    encode_into(&SnapshotHeader { meta: meta.clone(), items: view.len() }, &mut hw)?;
    view.try_for_each(|it| encode_into(&it, &mut hw))?;
    let digest = hw.hash.finalize();
    hw.inner.write_all(&digest)?;
    Ok(())
}

/// Reads a whole snapshot file, verifying it completely: the magic, every
/// item's decoding, the trailer's SHA-256 over everything before it, and
/// that nothing follows; hands each item to `each` as it decodes. Any
/// failure is `InvalidData`. The caller must not trust what `each` saw
/// until this returns `Ok` (the checksum comes last).
fn read_snapshot_items(
    r: &mut impl Read,
    mut each: impl FnMut(Item),
) -> io::Result<(SnapshotMeta, u64)> {
    let mut hr = HashingReader { inner: r, hash: Sha256::new() };
    let mut magic = [0u8; 8];
    hr.read_exact(&mut magic).map_err(|_| invalid("snapshot shorter than its magic"))?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(invalid("not a Herald snapshot (bad magic)"));
    }
    let h: SnapshotHeader = decode_from(&mut hr)?;
    for i in 0..h.items {
        each(
            decode_from::<Item, _>(&mut hr)
                .map_err(|e| invalid(format!("snapshot item {i} of {}: {e}", h.items)))?,
        );
    }
    let digest = hr.hash.finalize();
    let mut trailer = [0u8; SNAPSHOT_TRAILER];
    hr.inner.read_exact(&mut trailer).map_err(|_| invalid("snapshot truncated: no checksum"))?;
    if trailer[..] != digest[..] {
        return Err(invalid("snapshot checksum mismatch"));
    }
    let mut extra = [0u8; 1];
    if hr.inner.read(&mut extra)? != 0 {
        return Err(invalid("bytes after the snapshot's checksum"));
    }
    Ok((h.meta, h.items))
}

/// Reads a whole snapshot file into a state, verifying it completely (see
/// [`read_snapshot_items`]); nothing is changed when it fails (a peer's bad
/// snapshot is refused, not installed).
fn read_snapshot(r: &mut impl Read) -> io::Result<(SnapshotMeta, State)> {
    // The count comes from a file a peer sent: reserve only a little up
    // front (the vector grows as items actually decode), so a header that
    // claims a million items costs nothing until they are there.
    let mut items = Vec::with_capacity(SNAPSHOT_RESERVE_ITEMS as usize);
    let (meta, _) = read_snapshot_items(r, |it| items.push(it))?;
    let applied = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
    Ok((meta, State::from_items(items, applied)))
}

/// Verifies a snapshot file completely (see [`read_snapshot_items`]) and
/// answers its meta, keeping no item: the sync port calls this on a
/// received snapshot before handing it to openraft, so a bad one is refused
/// there and never reaches the state machine (where a storage error would
/// stop Raft), without building a second copy of the state to do so.
pub fn verify_snapshot_file(path: &Path) -> io::Result<SnapshotMeta> {
    read_snapshot_items(&mut BufReader::new(File::open(path)?), drop).map(|(meta, _)| meta)
}

struct Inner {
    state: SharedState,
    /// Last applied log id and membership: what `applied_state` answers.
    applied: Mutex<(Option<LogId>, StoredMembership)>,
    snapshots: SnapshotStore,
    notices: tokio::sync::broadcast::Sender<Notice>,
    /// The presence change feed (issue 15), published under the state lock.
    feed: Arc<crate::feed::Feed>,
    /// The newest leader time stamp applied here (issue 16): set under the
    /// state's write lock, so a read under the read lock that sees it sees
    /// every entry up to the stamped one.
    stamp: tokio::sync::watch::Sender<Stamp>,
}

/// The leader's cluster time stamped into the newest command applied on
/// this node, and that command's index. Every write acknowledged before the
/// stamping leader's clock read `at_ms` has an index at or below `index`
/// (see "Data flow of a bounded read" in ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub index: u64,
    pub at_ms: u64,
}

/// The openraft state machine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

impl StateMachine {
    /// Opens the state machine from the newest snapshot in `snapshot_dir`
    /// (verified completely; a damaged one stops start-up with the file's
    /// name), or empty when there is none.
    pub fn open(snapshot_dir: PathBuf) -> io::Result<Self> {
        Self::open_with_feed(snapshot_dir, crate::config::WatchConfig::default())
    }

    /// [`open`](Self::open) with the feed's window and limits (`<watch>`).
    pub fn open_with_feed(
        snapshot_dir: PathBuf,
        watch: crate::config::WatchConfig,
    ) -> io::Result<Self> {
        let snapshots = SnapshotStore::open(snapshot_dir)?;
        let (applied, membership, state) = match snapshots.current()? {
            Some((path, _)) => {
                let (meta, state) = read_snapshot(&mut BufReader::new(File::open(&path)?))
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                tracing::info!(
                    snapshot = %path.display(),
                    last_log_id = ?meta.last_log_id,
                    "state loaded from the snapshot; the log since it is replayed"
                );
                (meta.last_log_id, meta.last_membership, state)
            }
            None => (None, StoredMembership::default(), State::default()),
        };
        let feed = crate::feed::Feed::new(watch, state.applied());
        Ok(StateMachine {
            inner: Arc::new(Inner {
                feed,
                state: Arc::new(RwLock::new(state)),
                applied: Mutex::new((applied, membership)),
                snapshots,
                notices: tokio::sync::broadcast::channel(NOTICE_BUFFER).0,
                stamp: tokio::sync::watch::channel(Stamp::default()).0,
            }),
        })
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

    /// The newest leader time stamp applied here, to watch.
    pub fn stamp(&self) -> tokio::sync::watch::Receiver<Stamp> {
        self.inner.stamp.subscribe()
    }

    /// The presence change feed.
    pub fn feed(&self) -> Arc<crate::feed::Feed> {
        self.inner.feed.clone()
    }

    /// The snapshot directory, for receiving snapshots from the network.
    pub fn snapshot_store(&self) -> &SnapshotStore {
        &self.inner.snapshots
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Under the locks take only a view (presence records are shared
        // copy-on-write: one `Arc` per chunk of records), then sort, build
        // and write the items without them, so that applying and queries
        // are not held up by the copy, the encoding or the disk.
        let (meta, view) = {
            let st = self.inner.state.read().expect("state lock");
            let (last, membership) = self.inner.applied.lock().expect("applied lock").clone();
            (SnapshotMeta { last_log_id: last, last_membership: membership }, st.snapshot())
        };
        let this = self.clone();
        let m = meta.clone();
        let path = tokio::task::spawn_blocking(move || -> io::Result<PathBuf> {
            let (tmp, f) = this.inner.snapshots.temp_file()?;
            let guard = RemoveOnDrop(Some(tmp.clone()));
            let mut w = BufWriter::new(f);
            write_snapshot(&mut w, &m, view)?;
            w.flush()?;
            drop(w);
            let path = this.inner.snapshots.commit(&tmp, &m)?;
            drop(guard); // renamed away: nothing left to remove
            Ok(path)
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
        let mut replies = Vec::with_capacity(items.len());
        let mut fx = Effects::default();
        {
            let mut st = self.inner.state.write().expect("state lock");
            let mut applied = self.inner.applied.lock().expect("applied lock");
            for (entry, responder) in items {
                let log_id = entry.log_id();
                let index = log_id.index();
                let mut results = Vec::new();
                let mut changed = Vec::new();
                match &entry.payload {
                    EntryPayload::Normal(cmd) => {
                        // The feed: the touched users' answers after
                        // apply, through the batch query; only those the
                        // entry changed are published (heartbeats never
                        // reach the log, so they never get here).
                        let uids = crate::feed::touched_uids(&st, cmd);
                        results = st.apply(cmd, index, &mut fx);
                        let at_ms = cmd.at_ms;
                        self.inner.stamp.send_if_modified(|s| {
                            // Never backwards: a new leader's clock may
                            // read a little behind the old one's.
                            let newer = at_ms > s.at_ms;
                            if newer {
                                *s = Stamp { index, at_ms };
                            }
                            newer
                        });
                        if !uids.is_empty() {
                            let after = st.presence.query(&uids, &[]);
                            changed = crate::feed::changed_records(after, index);
                        }
                    }
                    EntryPayload::Membership(m) => {
                        st.set_applied(index);
                        applied.1 = StoredMembership::new(Some(log_id), m.clone());
                    }
                    EntryPayload::Blank => st.set_applied(index),
                }
                self.inner.feed.publish(index, changed);
                applied.0 = Some(log_id);
                if let Some(r) = responder {
                    replies.push((r, Applied { revision: index, results }));
                }
            }
        }
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
            // Verified completely before it replaces the current one.
            snapshot.rewind()?;
            let (tmp, f) = this.inner.snapshots.temp_file()?;
            let guard = RemoveOnDrop(Some(tmp.clone()));
            let mut w = BufWriter::new(f);
            io::copy(&mut snapshot, &mut w)?;
            w.flush()?;
            drop(w);
            let (file_meta, state) = read_snapshot(&mut BufReader::new(File::open(&tmp)?))?;
            if file_meta.last_log_id != meta.last_log_id {
                return Err(invalid("snapshot file does not match its meta"));
            }
            this.inner.snapshots.commit(&tmp, &meta)?;
            drop(guard); // renamed away: nothing left to remove
            let applied = state.applied();
            let mut st = this.inner.state.write().expect("state lock");
            *st = state;
            // What the snapshot replaced cannot be told change by change:
            // watchers behind it get a reset and a fresh snapshot.
            this.inner.feed.reset_to(applied);
            drop(st);
            *this.inner.applied.lock().expect("applied lock") =
                (meta.last_log_id, meta.last_membership.clone());
            tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match self.inner.snapshots.current()? {
            Some((path, meta)) => Ok(Some(Snapshot { meta, snapshot: File::open(path)? })),
            None => Ok(None),
        }
    }
}

//! The Raft log and vote in herald-wal (`<data>/raft-log/`): an append is
//! reported flushed, and a vote saved, only after fdatasync (group commit:
//! one sync covers every append queued behind it). See the herald-wal crate
//! docs for the format, recovery rules and the measurements behind the choice.
//!
//! Entries are encoded once with the node's codec (bincode) and stored as
//! one record each; the vote and the committed log id are wal meta values;
//! the purge point carries the purged log id as its tag.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use herald_wal::{Durability, Options, Wal, WalError};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;

use super::codec::{decode, encode};
use super::entry_bytes::{EntryBytes, ENTRY_BYTES_KEPT};
use super::network::MAX_RAFT_MESSAGE_BYTES;
use super::types::{Entry, LogId, TypeConfig, Vote};

const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";

// An entry that fits one Raft message must fit one wal record.
const _: () = assert!(herald_wal::MAX_RECORD_BYTES >= MAX_RAFT_MESSAGE_BYTES);

fn to_io(e: WalError) -> io::Error {
    let kind = match &e {
        WalError::Io { source, .. } => source.kind(),
        WalError::Corrupt { .. }
        | WalError::BadHeader { .. }
        | WalError::Gap { .. }
        | WalError::BadMeta { .. } => io::ErrorKind::InvalidData,
        WalError::TooLarge { .. }
        | WalError::NotContiguous { .. }
        | WalError::BelowPurge { .. }
        | WalError::BadMetaName(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// Runs blocking wal work (it fsyncs) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WalError> + Send + 'static,
) -> Result<T, io::Error> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?.map_err(to_io)
}

/// Log store over one [`Wal`]. Cheap to clone; clones share the log.
#[derive(Clone, Debug)]
pub struct WalStore {
    wal: Wal,
    /// Entries' encodings shared with replication (`entry_bytes`).
    kept: Arc<EntryBytes>,
}

impl WalStore {
    /// The entries' encodings this log keeps, for replication to share.
    pub fn entry_bytes(&self) -> Arc<EntryBytes> {
        self.kept.clone()
    }

    /// Opens the log in `dir`, logging what recovery repaired. A log that
    /// fails its checks (see herald-wal) is an error: the node must not start.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let wal = Wal::open(dir, Options::default()).map_err(to_io)?;
        for r in wal.recovered() {
            tracing::warn!(repair = %r, "raft log recovery");
        }
        Ok(WalStore { wal, kept: EntryBytes::new(ENTRY_BYTES_KEPT) })
    }

    /// Opens the log in `dir`. When there is none yet but `sled_dir` holds a
    /// log of the former sled store (trees `log` and `raft_meta`), imports it
    /// first — into a side directory renamed into place once durable, so a
    /// crash mid-import imports again — and then renames `sled_dir` to
    /// `<sled_dir>.imported` (a backup the operator may delete), so that
    /// removing `dir` later can never bring back that stale log and vote.
    /// Losing the saved vote in an upgrade could let this node vote twice in
    /// a term.
    pub fn open_or_import(dir: &Path, sled_dir: &Path) -> io::Result<Self> {
        if !dir.exists() && sled_dir.exists() {
            // Read only, once: no flusher thread, nothing to write back.
            let db = sled::Config::new()
                .path(sled_dir)
                .flush_every_ms(None)
                .open()
                .map_err(io::Error::other)?;
            if has_sled_log(&db) {
                let side = with_suffix(dir, ".import");
                if side.exists() {
                    std::fs::remove_dir_all(&side)?;
                }
                let n = import_sled_log(&side, &db)?;
                drop(db);
                std::fs::rename(&side, dir)?;
                let backup = with_suffix(sled_dir, ".imported");
                std::fs::rename(sled_dir, &backup)?;
                for parent in [dir.parent(), sled_dir.parent()].into_iter().flatten() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                tracing::info!(
                    entries = n,
                    dir = %dir.display(),
                    backup = %backup.display(),
                    "imported the raft log and vote from sled"
                );
            }
        }
        Self::open(dir)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn has_sled_log(db: &sled::Db) -> bool {
    db.tree_names().iter().any(|n| &n[..] == b"log" || &n[..] == b"raft_meta")
}

/// Copies the former sled log (entries, vote, committed, purged) into a new
/// wal in `dir`, durably. Returns the number of entries.
fn import_sled_log(dir: &Path, db: &sled::Db) -> io::Result<usize> {
    let log = db.open_tree("log").map_err(io::Error::other)?;
    let meta = db.open_tree("raft_meta").map_err(io::Error::other)?;
    let wal = Wal::open(dir, Options::default()).map_err(to_io)?;
    let get =
        |k: &[u8]| -> io::Result<Option<sled::IVec>> { meta.get(k).map_err(io::Error::other) };
    if let Some(v) = get(b"purged")? {
        let purged: LogId = decode(&v)?;
        wal.purge_upto(purged.index(), &encode(&purged)?).map_err(to_io)?;
    }
    let purged = wal.purged().map(|(p, _)| p);
    let mut n = 0;
    let mut batch = Vec::new();
    for kv in log.iter() {
        let (_, v) = kv.map_err(io::Error::other)?;
        let e: Entry = decode(&v)?;
        if purged.is_some_and(|p| e.index() <= p) {
            continue;
        }
        batch.push((e.index(), v.to_vec()));
        n += 1;
        if batch.len() >= 1024 {
            wal.append(std::mem::take(&mut batch), |_| {}).map_err(to_io)?;
        }
    }
    wal.append(batch, |_| {}).map_err(to_io)?;
    if let Some(v) = get(b"committed")? {
        wal.put_meta(META_COMMITTED, &v, Durability::Durable).map_err(to_io)?;
    }
    if let Some(v) = get(b"vote")? {
        // Durable: also waits for every entry appended above.
        wal.put_meta(META_VOTE, &v, Durability::Durable).map_err(to_io)?;
    }
    wal.sync().map_err(to_io)?;
    Ok(n)
}

impl RaftLogReader<TypeConfig> for WalStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let recs = self.wal.read_range(start..end).map_err(to_io)?;
        recs.into_iter()
            .map(|(_, b)| {
                let e = decode::<Entry>(&b)?;
                // Replication reads entries here: their bytes go into each
                // follower's request as they are (`entry_bytes`).
                self.kept.put(e.log_id, Bytes::from(b));
                Ok(e)
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.wal.get_meta(META_VOTE).map_err(to_io)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for WalStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = match self.wal.purged() {
            Some((_, tag)) => Some(decode(&tag)?),
            None => None,
        };
        let last = match self.wal.last_index() {
            Some(i) => match self.wal.get(i).map_err(to_io)? {
                Some(b) => Some(decode::<Entry>(&b)?.log_id()),
                None => return Err(io::Error::other(format!("raft log entry {i} vanished"))),
            },
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let b = encode(vote)?;
        let wal = self.wal.clone();
        blocking(move || wal.put_meta(META_VOTE, &b, Durability::Durable)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced on purpose: losing it (or finding it damaged) only means
        // re-applying from the state machine's own applied point.
        self.wal.put_meta(META_COMMITTED, &encode(&committed)?, Durability::Lazy).map_err(to_io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self.wal.get_meta(META_COMMITTED) {
            Ok(Some(b)) => Ok(decode::<Option<LogId>>(&b)?),
            Ok(None) => Ok(None),
            Err(e @ WalError::BadMeta { .. }) => {
                tracing::warn!(error = %e, "ignoring a damaged committed log id (it is not synced)");
                Ok(None)
            }
            Err(e) => Err(to_io(e)),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Not kept here: replication reads each entry back through
        // `try_get_log_entries` (openraft's `limited_get_log_entries`),
        // which keeps the bytes it read for the AppendEntries.
        let recs = entries
            .into_iter()
            .map(|e| Ok((e.index(), encode(&e)?)))
            .collect::<Result<Vec<_>, io::Error>>()?;
        // Written (and readable) on return; the callback runs on the wal's
        // sync thread once fdatasync has returned.
        self.wal.append(recs, move |r| callback.io_completed(r.map_err(to_io))).map_err(to_io)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let wal = self.wal.clone();
        blocking(move || wal.truncate_after(last_log_id.map(|l| l.index()))).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let tag = encode(&log_id)?;
        let wal = self.wal.clone();
        blocking(move || wal.purge_upto(log_id.index(), &tag)).await
    }
}

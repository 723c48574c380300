//! The Raft log and vote, in sled.
//!
//! Durability: sled's `flush` is `sync_file_range`-based, not `fsync`; we
//! await `flush_async()` before reporting an append flushed or a vote saved,
//! which is the strongest guarantee sled offers (see ARCHITECTURE.md).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;

use super::codec::{decode, encode};
use super::types::{Entry, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// Log store over two sled trees of one database: `log` (index → entry) and
/// `raft_meta` (vote, committed, last purged). Cheap to clone; clones share
/// the trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    pub fn open(db: &sled::Db) -> io::Result<Self> {
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("log").map_err(io_err)?,
            meta: db.open_tree("raft_meta").map_err(io_err)?,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(k).map_err(io_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, k: &[u8], v: &T) -> io::Result<()> {
        self.meta.insert(k, encode(v)?).map_err(io_err)?;
        Ok(())
    }

    /// Waits until everything written so far is on disk.
    async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(io_err)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
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
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.log.range((Bound::Included(key(start)), end)) {
            let (_, v) = kv.map_err(io_err)?;
            out.push(decode::<Entry>(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = match self.log.last().map_err(io_err)? {
            Some((_, v)) => Some(decode::<Entry>(&v)?.log_id()),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on purpose: losing it only means re-applying from the
        // last flushed value, which openraft handles.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
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
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&key(e.index())[..], encode(&e)?);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        let res = self.flush().await;
        let ret = res.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(res);
        ret
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(l) => l.index() + 1,
            None => 0,
        };
        let mut batch = sled::Batch::default();
        for k in self.log.range(key(from)..).keys() {
            batch.remove(k.map_err(io_err)?);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: a crash in between leaves entries that
        // are below it, which readers never ask for.
        self.put_meta(KEY_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for k in self.log.range(..=key(log_id.index())).keys() {
            batch.remove(k.map_err(io_err)?);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        self.flush().await
    }
}

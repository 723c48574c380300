//! Each log entry encoded once on the leader (issue 13: "entries encoded
//! once").
//!
//! Replication reads each entry back from the node's own log (openraft's
//! `limited_get_log_entries`, one read per follower); the bincode bytes it
//! read are kept here for a while, keyed by the entry's log id, and the
//! leader's AppendEntries to each follower copy them into the request
//! ([`encode_append`]) instead of encoding the entry again.
//!
//! Only this node's own log fills the cache, never bytes from the network:
//! a request's bytes are not trusted before openraft has checked its vote,
//! and bytes cached from a refused request could otherwise be written for
//! a later entry under the same log id (a follower still encodes what it
//! decoded; see docs/benchmarks.md, "Entries encoded once"). A log id names
//! one entry for good (Raft's log matching: the same index and leader term
//! hold the same entry on every node), so bytes found by an entry's full
//! log id are that entry's bytes, whatever was truncated or purged since.
//! The cache is bounded in bytes and forgets the oldest index first; an
//! entry not in it is encoded as before, so a miss costs time, never
//! correctness. The bytes are exactly `codec::encode` of the entry and of
//! the request (unit tests compare them).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::raft::AppendEntriesRequest;

use super::codec;
use super::types::{LogId, TypeConfig};

/// Bytes of encoded entries kept (with [`ENTRY_OVERHEAD`] each): a few
/// rounds of replication at the largest batches (an entry is at most
/// ~8 MiB of payload), so the leader's requests to both followers find
/// them; small beside the state at 1,000,000 users (~165 MB).
pub const ENTRY_BYTES_KEPT: usize = 32 << 20;
/// What one kept entry costs beyond its bytes (its map node, log id and
/// `Bytes` handle), counted against the bound so that many tiny entries
/// (a blank entry encodes to a few bytes) cannot hold much more memory
/// than the bound says.
const ENTRY_OVERHEAD: usize = 96;

/// Recently encoded entries by log id (see the module doc).
pub struct EntryBytes {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    by_index: BTreeMap<u64, (LogId, Bytes)>,
    bytes: usize,
}

impl std::fmt::Debug for EntryBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock().expect("entry bytes");
        f.debug_struct("EntryBytes")
            .field("entries", &g.by_index.len())
            .field("bytes", &g.bytes)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl EntryBytes {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(EntryBytes { inner: Mutex::new(Inner::default()), max_bytes })
    }

    /// Keeps `b` as the encoding of the entry `id`, forgetting the oldest
    /// entries while over the bound (an entry bigger than the bound is not
    /// kept). An entry kept already stays as it is: the second follower's
    /// read of it (and the state machine's) costs a lookup, not an insert.
    pub fn put(&self, id: LogId, b: Bytes) {
        let n = b.len() + ENTRY_OVERHEAD;
        if n > self.max_bytes {
            return;
        }
        let mut g = self.inner.lock().expect("entry bytes");
        if g.by_index.get(&id.index).is_some_and(|(have, _)| *have == id) {
            return;
        }
        if let Some((_, old)) = g.by_index.insert(id.index, (id, b)) {
            g.bytes -= old.len() + ENTRY_OVERHEAD;
        }
        g.bytes += n;
        while g.bytes > self.max_bytes {
            let Some((_, (_, old))) = g.by_index.pop_first() else { break };
            g.bytes -= old.len() + ENTRY_OVERHEAD;
        }
    }

    /// The encoding of the entry `id`, if kept.
    pub fn get(&self, id: &LogId) -> Option<Bytes> {
        let g = self.inner.lock().expect("entry bytes");
        g.by_index.get(&id.index).filter(|(have, _)| have == id).map(|(_, b)| b.clone())
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let g = self.inner.lock().expect("entry bytes");
        (g.by_index.len(), g.bytes)
    }
}

/// `codec::encode(rpc)`, byte for byte, with each kept entry copied rather
/// than encoded. bincode writes a struct as its fields in order and a
/// vector as its length then its elements, so the request is its vote,
/// previous log id, entry count, entries and commit index, one after the
/// other.
pub fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    kept: &EntryBytes,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = codec::encode(&rpc.vote)?;
    out.extend_from_slice(&codec::encode(&rpc.prev_log_id)?);
    out.extend_from_slice(&codec::encode(&(rpc.entries.len() as u64))?);
    for e in &rpc.entries {
        match kept.get(&e.log_id) {
            Some(b) => out.extend_from_slice(&b),
            None => out.extend_from_slice(&codec::encode(e)?),
        }
    }
    out.extend_from_slice(&codec::encode(&rpc.leader_commit)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Entry;
    use herald_domain::presence::{Event, Ext};
    use herald_domain::state::{Command, Op};
    use openraft::entry::RaftEntry;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    fn entry(index: u64, term: u64, n: usize) -> Entry {
        let ops = (0..n)
            .map(|i| {
                Op::Presence(Event::Login {
                    uid: format!("u{index}-{i}"),
                    sid: i as u64,
                    client: "web".into(),
                    accepts_strangers: None,
                    ext: Ext::new(),
                })
            })
            .collect();
        Entry::new_normal(log_id(term, index), Command { at_ms: 1_700_000_000_000 + index, ops })
    }

    fn rpc(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(3, 9)),
            entries,
            leader_commit: Some(log_id(3, 10)),
        }
    }

    /// The request assembled from kept entry bytes is byte for byte the
    /// request encoded whole, with every entry kept, some, or none (and
    /// with none at all: a heartbeat).
    #[test]
    fn assembled_requests_are_the_whole_encoding() {
        let entries: Vec<Entry> = (10..16).map(|i| entry(i, 3, (i % 4) as usize)).collect();
        let whole = codec::encode(&rpc(entries.clone())).unwrap();
        let kept = EntryBytes::new(ENTRY_BYTES_KEPT);
        assert_eq!(encode_append(&rpc(entries.clone()), &kept).unwrap(), whole, "none kept");
        for e in entries.iter().step_by(2) {
            kept.put(e.log_id, Bytes::from(codec::encode(e).unwrap()));
        }
        assert_eq!(encode_append(&rpc(entries.clone()), &kept).unwrap(), whole, "some kept");
        for e in &entries {
            kept.put(e.log_id, Bytes::from(codec::encode(e).unwrap()));
        }
        assert_eq!(encode_append(&rpc(entries), &kept).unwrap(), whole, "all kept");
        let beat = rpc(Vec::new());
        assert_eq!(encode_append(&beat, &kept).unwrap(), codec::encode(&beat).unwrap());
    }

    /// A log id names one entry: bytes kept for index 12 in term 3 are not
    /// handed out for index 12 in term 4 (an entry that replaced it).
    #[test]
    fn bytes_are_found_by_the_whole_log_id() {
        let kept = EntryBytes::new(ENTRY_BYTES_KEPT);
        let old = entry(12, 3, 1);
        kept.put(old.log_id, Bytes::from(codec::encode(&old).unwrap()));
        let new = entry(12, 4, 1);
        assert!(kept.get(&new.log_id).is_none());
        assert!(kept.get(&old.log_id).is_some());
        // Kept once: a second read of the same entry leaves it as it is.
        let first = kept.get(&old.log_id).unwrap();
        kept.put(old.log_id, Bytes::from_static(b"other"));
        assert_eq!(kept.get(&old.log_id).unwrap(), first);
    }

    /// The cache stays within its bound, forgetting the oldest index first,
    /// and does not keep an entry bigger than the bound.
    #[test]
    fn the_cache_is_bounded_oldest_first() {
        let each = 300 + ENTRY_OVERHEAD;
        let kept = EntryBytes::new(3 * each + 10);
        for i in 0..10u64 {
            kept.put(entry(i, 1, 0).log_id, Bytes::from(vec![0u8; 300]));
        }
        let (n, bytes) = kept.kept();
        assert_eq!((n, bytes), (3, 3 * each));
        assert!(kept.get(&entry(9, 1, 0).log_id).is_some());
        assert!(kept.get(&entry(6, 1, 0).log_id).is_none());
        kept.put(entry(20, 1, 0).log_id, Bytes::from(vec![0u8; 3 * each]));
        assert!(kept.get(&entry(20, 1, 0).log_id).is_none());
        assert_eq!(kept.kept(), (3, 3 * each));
        // Tiny entries are counted with their overhead: no more of them
        // are kept than the bound holds.
        for i in 30..100u64 {
            kept.put(entry(i, 1, 0).log_id, Bytes::from(vec![0u8; 3]));
        }
        assert_eq!(kept.kept().0, (3 * each + 10) / (3 + ENTRY_OVERHEAD));
        assert_eq!(entry(1, 1, 0).log_id().index, 1);
    }
}

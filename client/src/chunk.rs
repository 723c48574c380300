//! Splitting a large query into requests the server accepts, and merging the
//! answers back into what one request would have answered.

use std::collections::HashSet;

use crate::types::QueryResult;

/// Ids (uids plus sids) a node accepts in one query by default
/// (`<limits max-ids-per-query>`).
pub const DEFAULT_MAX_IDS_PER_QUERY: usize = 10_000;

/// The ids of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub uids: &'a [String],
    pub sids: &'a [u64],
}

/// Splits `uids` then `sids` into requests of at most `max` ids in all,
/// keeping their order: the last uid request is topped up with the first
/// sids. No ids at all gives one empty request (it still answers the
/// revision). `max` must be at least 1.
pub fn plan<'a>(uids: &'a [String], sids: &'a [u64], max: usize) -> Vec<Chunk<'a>> {
    assert!(max > 0, "chunk size must be at least 1");
    let mut out = Vec::with_capacity((uids.len() + sids.len()).div_ceil(max).max(1));
    let (mut u, mut s) = (0, 0);
    loop {
        let take_u = (uids.len() - u).min(max);
        let take_s = (sids.len() - s).min(max - take_u);
        if take_u == 0 && take_s == 0 && !out.is_empty() {
            break;
        }
        out.push(Chunk { uids: &uids[u..u + take_u], sids: &sids[s..s + take_s] });
        u += take_u;
        s += take_s;
        if u == uids.len() && s == sids.len() {
            break;
        }
    }
    out
}

/// Merges the answers of the requests of [`plan`], in order.
#[derive(Debug, Default)]
pub struct Merger {
    seen: HashSet<String>,
    out: Option<QueryResult>,
}

impl Merger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the answer of the next request. A user already found by an
    /// earlier request (by uid, or through its sid) is not repeated; the
    /// revision is the lowest seen.
    pub fn push(&mut self, part: QueryResult) {
        let out = self
            .out
            .get_or_insert_with(|| QueryResult { revision: part.revision, ..Default::default() });
        out.revision = out.revision.min(part.revision);
        // The stalest part says how stale the whole may be.
        out.staleness_ms = match (out.staleness_ms, part.staleness_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for u in part.users {
            if self.seen.insert(u.uid.clone()) {
                out.users.push(u);
            }
        }
        out.unknown.extend(part.unknown);
        out.unknown_sids.extend(part.unknown_sids);
    }

    /// The merged answer (empty, revision 0, if nothing was pushed).
    pub fn finish(self) -> QueryResult {
        self.out.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::UserPresence;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("u{i}")).collect()
    }

    fn user(uid: &str, sid: u64) -> UserPresence {
        UserPresence {
            uid: uid.into(),
            sid,
            online: true,
            clients: vec!["web".into()],
            accepts_strangers: true,
            ext: Default::default(),
            changed_at_ms: 1,
            revision: 1,
        }
    }

    /// 25,000 uids at 10,000 per request make three requests of 10,000,
    /// 10,000 and 5,000 that cover every id once, in order.
    #[test]
    fn client_chunk_splits_uids_in_order() {
        let u = ids(25_000);
        let c = plan(&u, &[], 10_000);
        assert_eq!(c.iter().map(|c| c.uids.len()).collect::<Vec<_>>(), vec![10_000, 10_000, 5_000]);
        let joined: Vec<String> = c.iter().flat_map(|c| c.uids.iter().cloned()).collect();
        assert_eq!(joined, u);
        assert!(c.iter().all(|c| c.sids.is_empty()));
    }

    /// Uids and sids share the per-request cap: the last uid request is
    /// filled up with sids, and no request exceeds the cap.
    #[test]
    fn client_chunk_mixes_uids_and_sids_under_cap() {
        let u = ids(7);
        let s: Vec<u64> = (0..8).collect();
        let c = plan(&u, &s, 5);
        let shape: Vec<(usize, usize)> = c.iter().map(|c| (c.uids.len(), c.sids.len())).collect();
        assert_eq!(shape, vec![(5, 0), (2, 3), (0, 5)]);
        assert_eq!(c[1].sids, &[0, 1, 2]);
        assert_eq!(c[2].sids, &[3, 4, 5, 6, 7]);
    }

    /// Exactly the cap is one request; no ids at all is still one (empty)
    /// request, so the caller gets a revision.
    #[test]
    fn client_chunk_edges() {
        let u = ids(10);
        assert_eq!(plan(&u, &[], 10).len(), 1);
        assert_eq!(plan(&u, &[], 9).len(), 2);
        let c = plan(&[], &[], 10);
        assert_eq!(c, vec![Chunk { uids: &[], sids: &[] }]);
        let s = [1u64, 2];
        assert_eq!(plan(&[], &s, 1).len(), 2);
    }

    /// Merging keeps request order, drops a user found again in a later
    /// request (e.g. through its sid), concatenates unknowns, and reports the
    /// lowest revision and the highest staleness.
    #[test]
    fn client_chunk_merge_dedups_and_keeps_lowest_revision() {
        let mut m = Merger::new();
        m.push(QueryResult {
            revision: 12,
            staleness_ms: Some(40),
            users: vec![user("a", 1), user("b", 2)],
            unknown: vec!["x".into()],
            unknown_sids: vec![],
        });
        m.push(QueryResult {
            revision: 10,
            staleness_ms: Some(90),
            users: vec![user("c", 3)],
            unknown: vec!["y".into()],
            unknown_sids: vec![9],
        });
        m.push(QueryResult {
            revision: 15,
            staleness_ms: None,
            users: vec![user("a", 1)],
            unknown: vec![],
            unknown_sids: vec![8],
        });
        let r = m.finish();
        assert_eq!(r.revision, 10);
        assert_eq!(r.staleness_ms, Some(90), "the stalest part");
        assert_eq!(r.users.iter().map(|u| u.uid.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert_eq!(r.unknown, vec!["x".to_string(), "y".to_string()]);
        assert_eq!(r.unknown_sids, vec![9, 8]);
    }

    /// A single answer passes through the merger unchanged.
    #[test]
    fn client_chunk_merge_single_is_identity() {
        let part = QueryResult {
            revision: 4,
            staleness_ms: Some(3),
            users: vec![user("a", 1)],
            unknown: vec!["z".into()],
            unknown_sids: vec![5],
        };
        let mut m = Merger::new();
        m.push(part.clone());
        assert_eq!(m.finish(), part);
        assert_eq!(Merger::new().finish(), QueryResult::default());
    }
}

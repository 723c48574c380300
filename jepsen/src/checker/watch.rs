//! The watch checker (issue 15): every watcher saw every committed change
//! to its users exactly once, in revision order, with no gap (or an
//! explicit `reset` and a fresh snapshot), and the state it rebuilt from
//! the feed equals a final linearizable batch query of the same users.
//!
//! **Committed changes.** Every presence write sets `ext.reg` to a value
//! unique in the run and stamps the record with the revision (log index)
//! of the entry it applied in, so a record names the write it shows. The
//! committed changes of a uid are the revisions of its acknowledged writes
//! (the ok completion carries the revision: `[uid, value, revision]`),
//! plus every revision some frame or final query showed a record of it at
//! (an indeterminate write is committed once anything shows it; one that
//! nothing shows may or may not have been, and is only counted as a
//! possible change). Several writes in one entry share a revision; the
//! record shows one of them.
//!
//! **Per watch** (one logical watch: a fixed uid set, its frames across
//! every reopen, in history order), with cursor `c` (the last snapshot,
//! change or progress revision) and the state rebuilt so far:
//! - a `snapshot` comes first, or right after a `reset`, never at a lower
//!   revision than `c`; it lists every watched uid (record or unknown),
//!   and each record is the latest committed change at or below its
//!   revision (`stale-snapshot` otherwise);
//! - a `change` at `r` needs `r > c`: `r <= c` is a `duplicate` when a
//!   change at `r` was delivered before, else a `reorder`; a record in it
//!   at or below `c` is a `duplicate`; every record is of a watched uid
//!   (`foreign-user`) and at or below `r`;
//! - **no gap**: the committed changes of a watched uid in `(c, r]` (for a
//!   `progress` at `p`: in `(c, p]`) must show in the frame, the record at
//!   the latest of them. While the changes pending for the watch (known,
//!   plus every indeterminate write of its uids) are at most the server's
//!   `COALESCE_AFTER`, frames are one per revision, so a committed change
//!   in `(c, r)` at all is a gap;
//! - every record shown is consistent with the writes: its `reg` names a
//!   write of that uid (`phantom` otherwise), not a failed one
//!   (`failed-write-visible`), acknowledged at the record's revision if
//!   acknowledged (`wrong-record`), and every observation of a uid at one
//!   revision is the same record (`divergent-record`);
//! - **final**: after the final query (revision `Q`), the state rebuilt
//!   when `c` first reaches `Q` equals the query's records field by field
//!   (online, clients, accepts_strangers, sid, reg, revision:
//!   `final-mismatch`); a watch that never reached `Q` is `final-unreached`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CheckerResult, Verdict};
use crate::history::{pair_ops, Op, OpType};
use crate::report::{esc, json_text};

/// The server's `api::watch::COALESCE_AFTER`: up to this many pending
/// changes a watcher gets one frame per revision.
pub const COALESCE_AFTER: usize = 64;

/// Anomalies the summary prints.
const SUMMARY_ANOMALIES: usize = 5;

/// Anomalies kept in results.json (the count is exact).
const MAX_ANOMALIES: usize = 200;

/// One user record as the workload records it (`workload::watch::user_json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rec {
    pub uid: String,
    #[serde(default)]
    pub sid: u64,
    #[serde(default)]
    pub online: bool,
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default)]
    pub accepts_strangers: bool,
    #[serde(default)]
    pub reg: Option<u64>,
    #[serde(default)]
    pub revision: u64,
}

fn recs(v: &Value) -> Vec<Rec> {
    v.as_array()
        .map(|a| a.iter().filter_map(|u| serde_json::from_value(u.clone()).ok()).collect())
        .unwrap_or_default()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: String,
    pub watch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The revision the anomaly is about (a missed change's, a frame's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// History index of the frame (or final op) that shows it.
    pub index: u64,
    pub detail: String,
}

/// (`serde(default)`: results.json of older runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchResult {
    pub valid: Verdict,
    pub watches: usize,
    pub opens: usize,
    /// Opens with `since_revision` (resumes).
    pub resumes: usize,
    pub frames: usize,
    /// User records delivered in change frames.
    pub changes: usize,
    pub resets: usize,
    pub progress: usize,
    /// Acknowledged writes to a uid some watch followed over the write's
    /// revision (what the gap check had to find).
    pub acked_watched: usize,
    pub final_compared: usize,
    pub final_matched: usize,
    pub anomaly_count: usize,
    pub anomaly_kinds: BTreeMap<String, usize>,
    pub anomalies: Vec<Anomaly>,
}

/// What the history says about one uid's writes.
#[derive(Default)]
struct Writes {
    /// reg → revision acknowledged at.
    acked: HashMap<u64, u64>,
    /// reg → history index of the invoke (an indeterminate write).
    info: HashMap<u64, u64>,
    failed: HashSet<u64>,
}

struct Facts {
    writes: HashMap<String, Writes>,
    /// uid → committed revisions (acknowledged or shown).
    committed: HashMap<String, BTreeSet<u64>>,
    /// (uid, revision) → the first record shown there, and where.
    shown: HashMap<(String, u64), (Rec, u64)>,
}

fn u64_at(v: &Value, i: usize) -> Option<u64> {
    v.get(i).and_then(|x| x.as_u64())
}

impl Facts {
    fn committed_in(&self, uid: &str, lo: u64, hi: u64) -> Vec<u64> {
        if hi <= lo {
            return vec![];
        }
        self.committed.get(uid).map(|s| s.range(lo + 1..=hi).copied().collect()).unwrap_or_default()
    }
    fn latest_at(&self, uid: &str, at: u64) -> Option<u64> {
        self.committed.get(uid).and_then(|s| s.range(..=at).next_back().copied())
    }
    /// Indeterminate writes of `uid` invoked before history index `before`
    /// (each may be a committed change nothing showed).
    fn info_writes(&self, uid: &str, before: u64) -> usize {
        self.writes.get(uid).map_or(0, |w| w.info.values().filter(|i| **i < before).count())
    }
}

/// One watch's ops in history order.
#[derive(Default)]
struct WatchOps<'a> {
    uids: Vec<String>,
    ops: Vec<(&'a Op, &'a Op)>,
}

struct Checker {
    anomalies: Vec<Anomaly>,
    count: usize,
    kinds: BTreeMap<String, usize>,
}

impl Checker {
    fn report(
        &mut self,
        kind: &str,
        watch: &str,
        uid: Option<&str>,
        rev: Option<u64>,
        index: u64,
        detail: String,
    ) {
        self.count += 1;
        *self.kinds.entry(kind.to_string()).or_default() += 1;
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(Anomaly {
                kind: kind.into(),
                watch: watch.into(),
                uid: uid.map(str::to_string),
                revision: rev,
                index,
                detail,
            });
        }
    }

    /// A record against the writes and the other observations.
    fn record_consistent(&mut self, f: &Facts, watch: &str, r: &Rec, index: u64) {
        let w = f.writes.get(&r.uid);
        match r.reg {
            None => self.report(
                "phantom",
                watch,
                Some(&r.uid),
                Some(r.revision),
                index,
                "a record without a register value (no write made it)".into(),
            ),
            Some(v) => {
                let acked = w.and_then(|w| w.acked.get(&v));
                if let Some(&at) = acked {
                    if at != r.revision {
                        self.report(
                            "wrong-record",
                            watch,
                            Some(&r.uid),
                            Some(r.revision),
                            index,
                            format!(
                                "write of value {v} was acknowledged at revision {at}, shown at {}",
                                r.revision
                            ),
                        );
                    }
                } else if w.is_some_and(|w| w.failed.contains(&v)) {
                    self.report(
                        "failed-write-visible",
                        watch,
                        Some(&r.uid),
                        Some(r.revision),
                        index,
                        format!("write of value {v} failed, yet it is shown"),
                    );
                } else if !w.is_some_and(|w| w.info.contains_key(&v)) {
                    self.report(
                        "phantom",
                        watch,
                        Some(&r.uid),
                        Some(r.revision),
                        index,
                        format!("value {v} was never written to {}", r.uid),
                    );
                }
            }
        }
        if let Some((first, at)) = f.shown.get(&(r.uid.clone(), r.revision)) {
            if first != r {
                self.report(
                    "divergent-record",
                    watch,
                    Some(&r.uid),
                    Some(r.revision),
                    index,
                    format!(
                        "{} at revision {}: {} here, {} at op {at}",
                        r.uid,
                        r.revision,
                        json_text(&serde_json::to_value(r).unwrap_or_default()),
                        json_text(&serde_json::to_value(first).unwrap_or_default())
                    ),
                );
            }
        }
    }
}

fn frame_value(op: &Op) -> (&str, u64) {
    (op.value["kind"].as_str().unwrap_or(""), op.value["revision"].as_u64().unwrap_or(0))
}

/// Checks every watch of the history.
pub fn check(history: &[Op]) -> WatchResult {
    let pairs = pair_ops(history);
    // Writes and their fates.
    let mut facts =
        Facts { writes: HashMap::new(), committed: HashMap::new(), shown: HashMap::new() };
    for p in &pairs {
        if p.invoke.f != "write" {
            continue;
        }
        let (Some(uid), Some(v)) =
            (p.invoke.value.get(0).and_then(|u| u.as_str()), u64_at(&p.invoke.value, 1))
        else {
            continue;
        };
        let w = facts.writes.entry(uid.to_string()).or_default();
        match p.complete.map(|c| c.typ) {
            Some(OpType::Ok) => match p.complete.and_then(|c| u64_at(&c.value, 2)) {
                Some(rev) => {
                    w.acked.insert(v, rev);
                    facts.committed.entry(uid.to_string()).or_default().insert(rev);
                }
                // A completion without its revision (an older harness):
                // committed somewhere, as good as indeterminate here.
                None => {
                    w.info.insert(v, p.invoke.index);
                }
            },
            Some(OpType::Fail) => {
                w.failed.insert(v);
            }
            _ => {
                w.info.insert(v, p.invoke.index);
            }
        }
    }
    // Watches, their frames and what they showed.
    let mut watches: BTreeMap<String, WatchOps> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for p in &pairs {
        let inv = p.invoke;
        if !matches!(inv.f.as_str(), "watch-open" | "frame" | "watch-final-query" | "watch-final") {
            continue;
        }
        let Some(id) = inv.value["watch"].as_str() else { continue };
        let w = watches.entry(id.to_string()).or_insert_with(|| {
            order.push(id.to_string());
            WatchOps::default()
        });
        if inv.f == "watch-open" && w.uids.is_empty() {
            w.uids = inv.value["uids"]
                .as_array()
                .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
        }
        let Some(c) = p.complete else { continue };
        w.ops.push((inv, c));
        if c.typ != OpType::Ok {
            continue;
        }
        if c.f == "frame" || c.f == "watch-final-query" {
            for r in recs(&c.value["users"]) {
                facts.committed.entry(r.uid.clone()).or_default().insert(r.revision);
                facts.shown.entry((r.uid.clone(), r.revision)).or_insert((r, c.index));
            }
        }
    }
    let mut ck = Checker { anomalies: Vec::new(), count: 0, kinds: BTreeMap::new() };
    let mut res = WatchResult { watches: watches.len(), ..Default::default() };
    let mut acked_watched: HashSet<(String, u64)> = HashSet::new();
    for id in &order {
        check_watch(&facts, id, &watches[id], &mut ck, &mut res, &mut acked_watched);
    }
    res.acked_watched = acked_watched.len();
    res.anomaly_count = ck.count;
    res.anomaly_kinds = ck.kinds;
    res.anomalies = ck.anomalies;
    res.valid = if res.anomaly_count > 0 { Verdict::Invalid } else { Verdict::Valid };
    res
}

fn check_watch(
    f: &Facts,
    id: &str,
    w: &WatchOps,
    ck: &mut Checker,
    res: &mut WatchResult,
    acked_watched: &mut HashSet<(String, u64)>,
) {
    let set: BTreeSet<&str> = w.uids.iter().map(String::as_str).collect();
    let mut cursor: Option<u64> = None;
    let mut view: BTreeMap<String, Option<Rec>> = BTreeMap::new();
    let mut after_reset = false;
    let mut change_revs: HashSet<u64> = HashSet::new();
    let mut delivered: HashSet<(String, u64)> = HashSet::new();
    // The final query: (revision, records, unknown) and whether compared.
    let mut target: Option<(u64, BTreeMap<String, Option<Rec>>, u64)> = None;
    let mut compared = false;
    // The acknowledged revisions a covered interval (c, r] holds.
    let cover = |lo: u64, hi: u64, acked_watched: &mut HashSet<(String, u64)>| {
        for u in &set {
            if let Some(wr) = f.writes.get(*u) {
                for rev in wr.acked.values().filter(|r| **r > lo && **r <= hi) {
                    acked_watched.insert((u.to_string(), *rev));
                }
            }
        }
    };
    for (inv, c) in &w.ops {
        'op: {
            match (inv.f.as_str(), c.typ) {
                ("watch-open", OpType::Ok) => {
                    res.opens += 1;
                    if !inv.value["since"].is_null() {
                        res.resumes += 1;
                    }
                }
                ("frame", OpType::Ok) => {
                    res.frames += 1;
                    let (kind, rev) = frame_value(c);
                    let users = recs(&c.value["users"]);
                    match kind {
                        "reset" => {
                            res.resets += 1;
                            after_reset = true;
                        }
                        "snapshot" => {
                            if let Some(cur) = cursor {
                                if !after_reset {
                                    ck.report("unexpected-snapshot", id, None, Some(rev), c.index, format!("a snapshot at {rev} without a reset on a watch resumed from {cur}"));
                                }
                                if rev < cur {
                                    ck.report(
                                        "backwards",
                                        id,
                                        None,
                                        Some(rev),
                                        c.index,
                                        format!("snapshot at {rev} below the cursor {cur}"),
                                    );
                                }
                            }
                            let unknown: HashSet<&str> = c.value["unknown"]
                                .as_array()
                                .map(|a| a.iter().filter_map(|u| u.as_str()).collect())
                                .unwrap_or_default();
                            let by_uid: HashMap<&str, &Rec> =
                                users.iter().map(|r| (r.uid.as_str(), r)).collect();
                            view.clear();
                            for u in &set {
                                let r = by_uid.get(u).copied();
                                if r.is_none() && !unknown.contains(u) {
                                    ck.report("missing-user", id, Some(u), Some(rev), c.index, format!("snapshot at {rev} neither shows nor lists {u} as unknown"));
                                }
                                let latest = f.latest_at(u, rev);
                                match (r, latest) {
                                (None, Some(l)) => ck.report("stale-snapshot", id, Some(u), Some(l), c.index, format!("snapshot at {rev} says {u} is unknown; a change at {l} is committed")),
                                (Some(r), Some(l)) if r.revision < l => ck.report("stale-snapshot", id, Some(u), Some(l), c.index, format!("snapshot at {rev} shows {u} at {}; a change at {l} is committed", r.revision)),
                                _ => {}
                            }
                                if let Some(r) = r {
                                    if r.revision > rev {
                                        ck.report("wrong-record", id, Some(u), Some(r.revision), c.index, format!("snapshot at {rev} shows {u} at a later revision {}", r.revision));
                                    }
                                }
                                view.insert(u.to_string(), r.cloned());
                            }
                            for r in &users {
                                if !set.contains(r.uid.as_str()) {
                                    ck.report(
                                        "foreign-user",
                                        id,
                                        Some(&r.uid),
                                        Some(rev),
                                        c.index,
                                        format!(
                                            "snapshot shows {} that the watch does not follow",
                                            r.uid
                                        ),
                                    );
                                }
                                ck.record_consistent(f, id, r, c.index);
                            }
                            cursor = Some(rev);
                            after_reset = false;
                        }
                        "change" | "progress" => {
                            let Some(cur) = cursor else {
                                ck.report(
                                    "before-snapshot",
                                    id,
                                    None,
                                    Some(rev),
                                    c.index,
                                    format!("a {kind} at {rev} before any snapshot"),
                                );
                                break 'op;
                            };
                            if after_reset {
                                ck.report(
                                    "reset-without-snapshot",
                                    id,
                                    None,
                                    Some(rev),
                                    c.index,
                                    format!("a {kind} at {rev} after a reset, before its snapshot"),
                                );
                            }
                            if kind == "progress" {
                                res.progress += 1;
                                if rev < cur {
                                    ck.report(
                                        "backwards",
                                        id,
                                        None,
                                        Some(rev),
                                        c.index,
                                        format!("progress at {rev} below the cursor {cur}"),
                                    );
                                    break 'op;
                                }
                                for u in &set {
                                    if let Some(l) = f.committed_in(u, cur, rev).last() {
                                        ck.report("gap", id, Some(u), Some(*l), c.index, format!("progress at {rev} (from {cur}) but the change of {u} at {l} was never delivered"));
                                    }
                                }
                                cover(cur, rev, acked_watched);
                                cursor = Some(rev);
                                break 'op;
                            }
                            if rev <= cur {
                                let k = if change_revs.contains(&rev) {
                                    "duplicate"
                                } else {
                                    "reorder"
                                };
                                ck.report(
                                    k,
                                    id,
                                    None,
                                    Some(rev),
                                    c.index,
                                    format!("change at {rev} after the cursor reached {cur}"),
                                );
                                break 'op;
                            }
                            change_revs.insert(rev);
                            let by_uid: HashMap<&str, &Rec> =
                                users.iter().map(|r| (r.uid.as_str(), r)).collect();
                            for r in &users {
                                res.changes += 1;
                                if !set.contains(r.uid.as_str()) {
                                    ck.report("foreign-user", id, Some(&r.uid), Some(rev), c.index, format!("change at {rev} shows {} that the watch does not follow", r.uid));
                                }
                                if r.revision > rev {
                                    ck.report(
                                        "wrong-record",
                                        id,
                                        Some(&r.uid),
                                        Some(r.revision),
                                        c.index,
                                        format!(
                                            "change at {rev} shows {} at a later revision {}",
                                            r.uid, r.revision
                                        ),
                                    );
                                }
                                if r.revision <= cur {
                                    let k = if delivered.contains(&(r.uid.clone(), r.revision)) {
                                        "duplicate"
                                    } else {
                                        "reorder"
                                    };
                                    ck.report(
                                        k,
                                        id,
                                        Some(&r.uid),
                                        Some(r.revision),
                                        c.index,
                                        format!(
                                            "change at {rev} (cursor {cur}) shows {} at {} again",
                                            r.uid, r.revision
                                        ),
                                    );
                                }
                                delivered.insert((r.uid.clone(), r.revision));
                                ck.record_consistent(f, id, r, c.index);
                            }
                            // Could the server have coalesced? Only with more
                            // than COALESCE_AFTER changes pending.
                            let pending: BTreeSet<u64> =
                                set.iter().flat_map(|u| f.committed_in(u, cur, rev)).collect();
                            let possible: usize =
                                set.iter().map(|u| f.info_writes(u, c.index)).sum();
                            let strict = pending.len() + possible <= COALESCE_AFTER;
                            for u in &set {
                                let missed = f.committed_in(u, cur, rev);
                                let shown = by_uid.get(u).map(|r| r.revision);
                                if let Some(&l) = missed.last() {
                                    match shown {
                                    None => ck.report("gap", id, Some(u), Some(l), c.index, format!("change at {rev} (from {cur}) leaves out the change of {u} at {l}")),
                                    Some(s) if s < l => ck.report("gap", id, Some(u), Some(l), c.index, format!("change at {rev} shows {u} at {s}; its change at {l} was never delivered")),
                                    _ => {}
                                }
                                }
                                if strict {
                                    for m in
                                        missed.iter().filter(|m| **m < rev && Some(**m) != shown)
                                    {
                                        ck.report("gap", id, Some(u), Some(*m), c.index, format!("change of {u} at {m} never delivered (next frame at {rev}, from {cur}; not coalesced: {} changes pending)", pending.len()));
                                    }
                                }
                                if let Some(r) = by_uid.get(u) {
                                    view.insert(u.to_string(), Some((*r).clone()));
                                }
                            }
                            cover(cur, rev, acked_watched);
                            cursor = Some(rev);
                        }
                        _ => {}
                    }
                }
                ("watch-final-query", OpType::Ok) => {
                    let q = c.value["revision"].as_u64().unwrap_or(0);
                    let users = recs(&c.value["users"]);
                    let m: BTreeMap<String, Option<Rec>> = set
                        .iter()
                        .map(|u| (u.to_string(), users.iter().find(|r| r.uid == *u).cloned()))
                        .collect();
                    target = Some((q, m, c.index));
                }
                ("watch-final", _) => {}
                _ => {}
            }
        }
        if let (Some((q, want, qi)), Some(cur), false) = (&target, cursor, compared) {
            if cur >= *q && !after_reset {
                compared = true;
                res.final_compared += 1;
                let mut ok = true;
                for (u, want) in want {
                    let got = view.get(u).cloned().flatten();
                    if got.as_ref().is_some_and(|g| g.revision > *q) {
                        continue; // changed after the query: not comparable
                    }
                    if got != *want {
                        ok = false;
                        let show = |r: &Option<Rec>| {
                            json_text(&serde_json::to_value(r).unwrap_or_default())
                        };
                        ck.report(
                            "final-mismatch",
                            id,
                            Some(u),
                            Some(*q),
                            c.index.max(*qi),
                            format!(
                                "rebuilt from the feed at {cur}: {}; final query at {q}: {}",
                                show(&got),
                                show(want)
                            ),
                        );
                    }
                }
                if ok {
                    res.final_matched += 1;
                }
            }
        }
    }
    if let (Some((q, _, qi)), false) = (&target, compared) {
        ck.report(
            "final-unreached",
            id,
            None,
            Some(*q),
            *qi,
            format!(
                "the watch never reached the final query's revision {q} (cursor {})",
                json_text(&serde_json::to_value(cursor).unwrap_or_default())
            ),
        );
    }
}

impl CheckerResult for WatchResult {
    fn name(&self) -> &'static str {
        "watch"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        format!(
            "{} watches, {} opens ({} resumes), {} frames: {} changed records, {} progress, {} resets; {} acknowledged writes inside a followed interval; final state rebuilt = final query for {}/{}; anomalies {} {}",
            self.watches,
            self.opens,
            self.resumes,
            self.frames,
            self.changes,
            self.progress,
            self.resets,
            self.acked_watched,
            self.final_matched,
            self.final_compared,
            self.anomaly_count,
            json_text(&serde_json::to_value(&self.anomaly_kinds).unwrap_or_default())
        )
    }

    fn anomaly_lines(&self) -> Vec<String> {
        self.anomalies
            .iter()
            .take(SUMMARY_ANOMALIES)
            .map(|a| format!("{}: watch {} (op #{}): {}", a.kind, a.watch, a.index, a.detail))
            .collect()
    }

    fn html_section(&self) -> String {
        if self.anomalies.is_empty() {
            return String::new();
        }
        let mut s = String::from("<h2>Watch anomalies</h2><table><tr><th>kind</th><th>watch</th><th>uid</th><th>revision</th><th>op</th><th>detail</th></tr>");
        for a in &self.anomalies {
            s.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.kind),
                esc(&a.watch),
                esc(a.uid.as_deref().unwrap_or("")),
                a.revision.map(|r| r.to_string()).unwrap_or_default(),
                a.index,
                esc(&a.detail)
            ));
        }
        s.push_str("</table>");
        s
    }

    fn table_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("anomalies");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use serde_json::json;

    fn u(uid: &str, reg: u64, rev: u64) -> Value {
        json!({"uid": uid, "sid": 1, "online": true, "clients": ["web"], "accepts_strangers": false, "reg": reg, "revision": rev})
    }

    /// A history: writes of k1 acknowledged at 10, 12, 14; watch w0.1 of
    /// k1 opens, snapshot at 9 (unknown), then the given frames, then a
    /// final query at 20 showing the last write.
    fn history(frames: &[Value]) -> Vec<Op> {
        let mut rows: Vec<(i64, OpType, &str, Value)> = vec![
            (0, OpType::Invoke, "write", json!(["k1", 1])),
            (0, OpType::Ok, "write", json!(["k1", 1, 10])),
            (0, OpType::Invoke, "write", json!(["k1", 2])),
            (0, OpType::Ok, "write", json!(["k1", 2, 12])),
            (0, OpType::Invoke, "write", json!(["k1", 3])),
            (0, OpType::Ok, "write", json!(["k1", 3, 14])),
            (
                7,
                OpType::Invoke,
                "watch-open",
                json!({"watch": "w0.1", "uids": ["k1"], "since": null}),
            ),
            (7, OpType::Ok, "watch-open", json!({"watch": "w0.1"})),
            (7, OpType::Invoke, "frame", json!({"watch": "w0.1"})),
            (
                7,
                OpType::Ok,
                "frame",
                json!({"watch": "w0.1", "kind": "snapshot", "revision": 9, "users": [], "unknown": ["k1"]}),
            ),
        ];
        for f in frames {
            rows.push((7, OpType::Invoke, "frame", json!({"watch": "w0.1"})));
            rows.push((7, OpType::Ok, "frame", f.clone()));
        }
        rows.push((
            7,
            OpType::Invoke,
            "watch-final-query",
            json!({"watch": "w0.1", "uids": ["k1"]}),
        ));
        rows.push((
            7,
            OpType::Ok,
            "watch-final-query",
            json!({"watch": "w0.1", "revision": 20, "users": [u("k1", 3, 14)], "unknown": []}),
        ));
        rows.push((7, OpType::Invoke, "frame", json!({"watch": "w0.1"})));
        rows.push((
            7,
            OpType::Ok,
            "frame",
            json!({"watch": "w0.1", "kind": "progress", "revision": 20, "users": []}),
        ));
        hist(&rows)
    }

    fn change(rev: u64, users: Vec<Value>) -> Value {
        json!({"watch": "w0.1", "kind": "change", "revision": rev, "users": users})
    }

    fn kinds(r: &WatchResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    /// Proves the checker accepts a watch that saw every change in order and
    /// rebuilt the final query's state, and that it counted what it checked.
    #[test]
    fn checker_watch_accepts_exact_feed() {
        let h = history(&[
            change(10, vec![u("k1", 1, 10)]),
            change(12, vec![u("k1", 2, 12)]),
            change(14, vec![u("k1", 3, 14)]),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!((r.watches, r.frames, r.changes, r.acked_watched), (1, 5, 3, 3));
        assert_eq!((r.final_compared, r.final_matched), (1, 1));
    }

    /// Proves a missed change (12 never delivered, 14 delivered) is a gap.
    #[test]
    fn checker_watch_reports_a_gap() {
        let h = history(&[change(10, vec![u("k1", 1, 10)]), change(14, vec![u("k1", 3, 14)])]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(kinds(&r), vec!["gap"]);
        assert_eq!(r.anomalies[0].revision, Some(12));
    }

    /// Proves a progress frame past an undelivered change is a gap, and
    /// that the rebuilt state then differs from the final query.
    #[test]
    fn checker_watch_reports_a_gap_behind_progress() {
        let prog = json!({"watch": "w0.1", "kind": "progress", "revision": 15, "users": []});
        let h =
            history(&[change(10, vec![u("k1", 1, 10)]), change(12, vec![u("k1", 2, 12)]), prog]);
        let r = check(&h);
        assert_eq!(kinds(&r), vec!["gap", "final-mismatch"]);
    }

    /// Proves a change delivered before an earlier one is a reorder.
    #[test]
    fn checker_watch_reports_a_reorder() {
        let h = history(&[
            change(10, vec![u("k1", 1, 10)]),
            change(14, vec![u("k1", 3, 14)]),
            change(12, vec![u("k1", 2, 12)]),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        // 14 arrived with 12 missing (a gap), then 12 behind the cursor.
        assert!(kinds(&r).contains(&"reorder"), "{:?}", r.anomalies);
        assert!(kinds(&r).contains(&"gap"), "{:?}", r.anomalies);
    }

    /// Proves a change delivered twice (a resume that repeats the frame at
    /// the resume point) is a duplicate.
    #[test]
    fn checker_watch_reports_a_duplicate() {
        let h = history(&[
            change(10, vec![u("k1", 1, 10)]),
            change(12, vec![u("k1", 2, 12)]),
            change(12, vec![u("k1", 2, 12)]),
            change(14, vec![u("k1", 3, 14)]),
        ]);
        let r = check(&h);
        assert_eq!(kinds(&r), vec!["duplicate"]);
    }

    /// Proves a record that no write made, or at another revision than its
    /// write was acknowledged at, is reported, and a stale snapshot too.
    #[test]
    fn checker_watch_reports_wrong_records_and_stale_snapshots() {
        let h = history(&[change(10, vec![u("k1", 99, 10)]), change(13, vec![u("k1", 2, 13)])]);
        let k = kinds(&check(&h)).join(",");
        assert!(k.contains("phantom") && k.contains("wrong-record"), "{k}");
        let mut h = history(&[]);
        // The snapshot at 9 becomes one at 11: k1's change at 10 is missing.
        h[9].value["revision"] = json!(11);
        let k = kinds(&check(&h)).join(",");
        assert!(k.starts_with("stale-snapshot"), "{k}");
    }

    /// Proves a reset followed by a snapshot may skip changes, and that a
    /// watch that never reaches the final query's revision is reported.
    #[test]
    fn checker_watch_allows_reset_and_reports_unreached_final() {
        let reset = json!({"watch": "w0.1", "kind": "reset", "revision": 11, "users": []});
        let snap = json!({"watch": "w0.1", "kind": "snapshot", "revision": 13, "users": [u("k1", 2, 12)], "unknown": []});
        let h = history(&[reset, snap, change(14, vec![u("k1", 3, 14)])]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!(r.resets, 1);
        let mut h = history(&[
            change(10, vec![u("k1", 1, 10)]),
            change(12, vec![u("k1", 2, 12)]),
            change(14, vec![u("k1", 3, 14)]),
        ]);
        h.truncate(h.len() - 2);
        assert_eq!(kinds(&check(&h)), vec!["final-unreached"]);
    }
}

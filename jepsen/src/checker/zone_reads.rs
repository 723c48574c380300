//! The zone-reads checker (issue 16): `read-bounded` and `read-min-rev` ops
//! of the presence workload (`workload::zone_reads`) against the history's
//! own writes. Linearizable reads stay with `checker::linear`.
//!
//! Every acknowledged write's completion carries its revision (the log
//! index it committed at, the same on every node), every zone read's the
//! `revision` R of the state it read. Per key:
//!
//! - **value**: the read's value is the newest write at or below R: nil only
//!   if no acknowledged write has a revision ≤ R (`lost-write`); a value that
//!   was written (`phantom` otherwise), not after R (`future-value`), and not
//!   overwritten by an acknowledged write with a revision in (its own, R]
//!   (`overwritten`).
//! - **bounded** (bound B): a read that completed at t reflects (R ≥ its
//!   revision) every write acknowledged before t − B − T, where T is the
//!   nodes' `<time tolerance-ms>` plus [`ANSWER_SLACK_MS`] (`stale`
//!   otherwise). The harness's figure: the oldest acknowledged write a
//!   bounded read did not reflect, in ms before the read completed.
//! - **min_revision** M: R ≥ M and the value is a write at revision ≥ M —
//!   the write M names, or a newer one (`misses-write`).
//!
//! Writes whose outcome is unknown (`info`) have no revision: a read may
//! show them (no verdict on their place), they never make a read stale.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CheckerResult, Verdict};
use crate::history::{pair_ops, Op, OpType};
use crate::report::esc;
use crate::workload::zone_reads::{F_BOUNDED, F_MIN_REV};

/// Added to the clock tolerance for a bounded read's cut-off: the server
/// measures staleness when it serves, the harness when the answer arrives
/// (and a write's acknowledgement after the leader acknowledged it). On the
/// 2-core machine an HTTP answer takes a few ms to arrive, rarely more than
/// ~20; a violation smaller than this margin goes unseen.
pub const ANSWER_SLACK_MS: u64 = 25;

/// At most this many anomalies are kept in results.json (the count is exact).
const MAX_ANOMALIES: usize = 50;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Anomaly {
    pub kind: String,
    /// Index of the read's completion.
    pub index: u64,
    pub key: String,
    pub detail: String,
}

/// Answer times of one kind of read through one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ZoneReadsResult {
    pub valid: Verdict,
    pub bounded_ok: usize,
    pub bounded_fail: usize,
    pub min_rev_ok: usize,
    pub min_rev_fail: usize,
    /// Failed zone reads by error code (`too_stale`, `revision_not_reached`, ...).
    pub fail_codes: BTreeMap<String, usize>,
    /// Largest bound of the run's bounded reads, ms.
    pub bound_ms: u64,
    /// The oldest acknowledged write a bounded read did not reflect: ms
    /// between its acknowledgement and the read's completion (max over reads).
    pub max_unreflected_ms: f64,
    /// Largest `staleness_ms` a node reported on a bounded read.
    pub max_reported_staleness_ms: f64,
    /// Ok reads' answer times by kind (`read`, `read-bounded`,
    /// `read-min-rev`) and node.
    pub latency: BTreeMap<String, BTreeMap<String, Latency>>,
    pub anomaly_count: usize,
    pub anomalies: Vec<Anomaly>,
}

struct Write {
    rev: Option<u64>,
    invoked_at: u64,
}

fn key_of(v: &Value) -> Option<String> {
    v.get(0)?.as_str().map(str::to_string)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn check(history: &[Op]) -> ZoneReadsResult {
    let pairs = pair_ops(history);
    // key → value → write; key → acknowledged (revision, ack time ns, value).
    let mut writes: HashMap<String, HashMap<String, Write>> = HashMap::new();
    let mut acked: HashMap<String, Vec<(u64, u64, Value)>> = HashMap::new();
    for p in pairs.iter().filter(|p| p.invoke.f == "write") {
        let Some(key) = key_of(&p.invoke.value) else { continue };
        let v = p.invoke.value[1].clone();
        let rev = match p.complete {
            Some(c) if c.typ == OpType::Fail => continue,
            Some(c) if c.typ == OpType::Ok => c.value.get(2).and_then(Value::as_u64),
            _ => None,
        };
        if let (Some(r), Some(c)) = (rev, p.complete) {
            acked.entry(key.clone()).or_default().push((r, c.time, v.clone()));
        }
        writes
            .entry(key)
            .or_default()
            .insert(v.to_string(), Write { rev, invoked_at: p.invoke.time });
    }
    let mut out = ZoneReadsResult::default();
    let mut lat: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let empty = Vec::new();
    for p in &pairs {
        let f = p.invoke.f.as_str();
        if f != F_BOUNDED && f != F_MIN_REV && f != "read" {
            continue;
        }
        let Some(c) = p.complete else { continue };
        if c.typ == OpType::Ok {
            let node = c.node.clone().unwrap_or_default();
            lat.entry((f.to_string(), node))
                .or_default()
                .push((c.time.saturating_sub(p.invoke.time)) as f64 / 1e6);
        }
        if f == "read" {
            continue;
        }
        let bounded = f == F_BOUNDED;
        if c.typ != OpType::Ok {
            if bounded {
                out.bounded_fail += 1;
            } else {
                out.min_rev_fail += 1;
            }
            let code = c.value.pointer("/2/code").and_then(Value::as_str).unwrap_or("other");
            *out.fail_codes.entry(code.to_string()).or_default() += 1;
            continue;
        }
        if bounded {
            out.bounded_ok += 1;
        } else {
            out.min_rev_ok += 1;
        }
        let Some(key) = key_of(&c.value) else { continue };
        let v = &c.value[1];
        let meta = &c.value[2];
        let params = &p.invoke.value[2];
        let Some(r) = meta["revision"].as_u64() else {
            flag(
                &mut out,
                c.index,
                &key,
                "no-revision",
                format!("answer without a revision: {meta}"),
            );
            continue;
        };
        let acks = acked.get(&key).unwrap_or(&empty);
        // The value is the newest write at or below r.
        let own_rev = if v.is_null() {
            if let Some((wr, _, wv)) = acks.iter().filter(|a| a.0 <= r).max_by_key(|a| a.0) {
                flag(
                    &mut out,
                    c.index,
                    &key,
                    "lost-write",
                    format!("nil at revision {r}, but write {wv} was acknowledged at {wr}"),
                );
            }
            Some(0)
        } else {
            match writes.get(&key).and_then(|m| m.get(&v.to_string())) {
                None => {
                    flag(
                        &mut out,
                        c.index,
                        &key,
                        "phantom",
                        format!("value {v} was never written to {key}"),
                    );
                    continue;
                }
                Some(w) if w.invoked_at > c.time => {
                    flag(
                        &mut out,
                        c.index,
                        &key,
                        "phantom",
                        format!("value {v} written after the read returned"),
                    );
                    continue;
                }
                Some(w) => {
                    if let Some(wr) = w.rev {
                        if wr > r {
                            flag(
                                &mut out,
                                c.index,
                                &key,
                                "future-value",
                                format!("value {v} of revision {wr} in a state at revision {r}"),
                            );
                        } else if let Some((or, _, ov)) =
                            acks.iter().filter(|a| a.0 > wr && a.0 <= r).max_by_key(|a| a.0)
                        {
                            flag(
&mut out, c.index, &key,
                                "overwritten",
                                format!("value {v} (revision {wr}) at revision {r}, but write {ov} was acknowledged at {or}"),
                            );
                        }
                    }
                    w.rev
                }
            }
        };
        if bounded {
            let bound = params["bound_ms"].as_u64().unwrap_or(0);
            let tol = params["tolerance_ms"].as_u64().unwrap_or(0);
            out.bound_ms = out.bound_ms.max(bound);
            if let Some(s) = meta["staleness_ms"].as_f64() {
                out.max_reported_staleness_ms = out.max_reported_staleness_ms.max(s);
            }
            // The oldest acknowledged write this read does not reflect.
            if let Some((wr, at, wv)) = acks.iter().filter(|a| a.0 > r).min_by_key(|a| a.1) {
                let lag_ms = c.time.saturating_sub(*at) as f64 / 1e6;
                out.max_unreflected_ms = out.max_unreflected_ms.max(lag_ms);
                if lag_ms > (bound + tol + ANSWER_SLACK_MS) as f64 {
                    flag(
&mut out, c.index, &key,
                        "stale",
                        format!("state at revision {r} misses write {wv} (revision {wr}) acknowledged {lag_ms:.1} ms before the read returned; bound {bound} ms + tolerance {tol} + slack {ANSWER_SLACK_MS}"),
                    );
                }
            }
        } else {
            let m = params["min_revision"].as_u64().unwrap_or(0);
            if r < m {
                flag(
                    &mut out,
                    c.index,
                    &key,
                    "below-min-revision",
                    format!("state at revision {r} < min_revision {m}"),
                );
            } else if own_rev.is_some_and(|wr| wr < m) {
                flag(
                    &mut out,
                    c.index,
                    &key,
                    "misses-write",
                    format!("value {v} is older than the write at min_revision {m}"),
                );
            }
        }
    }
    for ((f, node), mut v) in lat {
        v.sort_by(f64::total_cmp);
        let l = Latency { n: v.len(), p50_ms: percentile(&v, 0.5), p99_ms: percentile(&v, 0.99) };
        out.latency.entry(f).or_default().insert(node, l);
    }
    out.valid = if out.anomaly_count == 0 { Verdict::Valid } else { Verdict::Invalid };
    out
}

fn flag(out: &mut ZoneReadsResult, index: u64, key: &str, kind: &str, detail: String) {
    out.anomaly_count += 1;
    if out.anomalies.len() < MAX_ANOMALIES {
        out.anomalies.push(Anomaly { kind: kind.into(), index, key: key.into(), detail });
    }
}

fn latency_text(m: &BTreeMap<String, Latency>) -> String {
    m.iter()
        .map(|(n, l)| format!("{n} {:.1}/{:.1}", l.p50_ms, l.p99_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CheckerResult for ZoneReadsResult {
    fn name(&self) -> &'static str {
        "zone-reads"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        let mut s = format!(
            "bounded {} ok / {} fail, oldest unreflected write {:.0} ms (bound {} ms), reported staleness max {:.0} ms; min_revision {} ok / {} fail; fails {:?}; {} anomalies",
            self.bounded_ok,
            self.bounded_fail,
            self.max_unreflected_ms,
            self.bound_ms,
            self.max_reported_staleness_ms,
            self.min_rev_ok,
            self.min_rev_fail,
            self.fail_codes,
            self.anomaly_count
        );
        for (f, m) in &self.latency {
            s.push_str(&format!("; {f} p50/p99 ms {}", latency_text(m)));
        }
        s
    }

    fn anomaly_lines(&self) -> Vec<String> {
        self.anomalies
            .iter()
            .take(5)
            .map(|a| format!("zone-reads {} #{} {}: {}", a.kind, a.index, a.key, a.detail))
            .collect()
    }

    fn html_section(&self) -> String {
        if self.anomalies.is_empty() {
            return String::new();
        }
        let rows: String = self
            .anomalies
            .iter()
            .map(|a| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&a.kind),
                    a.index,
                    esc(&a.key),
                    esc(&a.detail)
                )
            })
            .collect();
        format!("<h2>Zone reads: anomalies</h2><table><tr><th>kind</th><th>op</th><th>key</th><th>detail</th></tr>{rows}</table>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Process;
    use serde_json::json;

    /// (process, type, f, value, time in ms).
    fn h(rows: &[(u64, OpType, &str, Value, u64)]) -> Vec<Op> {
        rows.iter()
            .enumerate()
            .map(|(i, (p, t, f, v, ms))| Op {
                index: i as u64,
                time: ms * 1_000_000,
                typ: *t,
                process: Process::Worker(*p),
                f: f.to_string(),
                value: v.clone(),
                node: Some("n4".into()),
                error: None,
            })
            .collect()
    }

    use OpType::{Invoke, Ok as Okt};

    fn bounded(b: u64) -> Value {
        json!({"bound_ms": b, "tolerance_ms": 5})
    }

    /// Write 1 acknowledged at 100 ms with revision 10, write 2 at 1000 ms
    /// with revision 20, then one bounded read (bound 500) returning at
    /// `at` ms the given value at the given revision.
    fn one_bounded(at: u64, v: Value, rev: u64) -> ZoneReadsResult {
        check(&h(&[
            (0, Invoke, "write", json!(["k", 1]), 90),
            (0, Okt, "write", json!(["k", 1, 10]), 100),
            (0, Invoke, "write", json!(["k", 2]), 990),
            (0, Okt, "write", json!(["k", 2, 20]), 1000),
            (1, Invoke, F_BOUNDED, json!(["k", null, bounded(500)]), at - 1),
            (1, Okt, F_BOUNDED, json!(["k", v, {"revision": rev, "staleness_ms": 3}]), at),
        ]))
    }

    /// Proves a bounded read may miss a write acknowledged within its
    /// bound, but must fail the checker once the write is older than
    /// bound + tolerance + slack (here 530 ms).
    #[test]
    fn zone_reads_bounded_staleness_is_checked_against_write_acks() {
        let r = one_bounded(1400, json!(1), 15);
        assert_eq!(r.valid, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!(r.bounded_ok, 1);
        assert!((r.max_unreflected_ms - 400.0).abs() < 1e-6);
        let r = one_bounded(1600, json!(1), 15);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.anomalies[0].kind, "stale");
        assert_eq!(r.anomalies[0].index, 5);
        // Reflecting the write (revision ≥ 20, its value) is fine any time.
        assert_eq!(one_bounded(5000, json!(2), 21).valid, Verdict::Valid);
    }

    /// Proves the value must match the revision read: nil after an
    /// acknowledged write, an overwritten value, a value from after the
    /// state, and a value never written all fail.
    #[test]
    fn zone_reads_value_must_match_its_revision() {
        let kind = |r: ZoneReadsResult| {
            assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
            r.anomalies[0].kind.clone()
        };
        assert_eq!(kind(one_bounded(1100, Value::Null, 15)), "lost-write");
        assert_eq!(kind(one_bounded(1100, json!(1), 25)), "overwritten");
        assert_eq!(kind(one_bounded(1100, json!(2), 15)), "future-value");
        assert_eq!(kind(one_bounded(1100, json!(7), 25)), "phantom");
        assert_eq!(one_bounded(300, Value::Null, 5).valid, Verdict::Valid);
    }

    fn one_min_rev(v: Value, rev: u64) -> ZoneReadsResult {
        check(&h(&[
            (0, Invoke, "write", json!(["k", 1]), 90),
            (0, Okt, "write", json!(["k", 1, 10]), 100),
            (0, Invoke, "write", json!(["k", 2]), 190),
            (0, Okt, "write", json!(["k", 2, 20]), 200),
            (1, Invoke, F_MIN_REV, json!(["k", null, {"min_revision": 20}]), 300),
            (1, Okt, F_MIN_REV, json!(["k", v, {"revision": rev}]), 301),
            (2, Invoke, F_MIN_REV, json!(["k", null, {"min_revision": 20}]), 302),
            (
                2,
                OpType::Fail,
                F_MIN_REV,
                json!(["k", null, {"min_revision": 20, "code": "revision_not_reached"}]),
                303,
            ),
        ]))
    }

    /// Proves a min_revision read must include the write its revision
    /// names: a state below it, or an older value, fails; a failed read
    /// (revision_not_reached) is counted, not judged.
    #[test]
    fn zone_reads_min_revision_includes_its_write() {
        let r = one_min_rev(json!(2), 20);
        assert_eq!(r.valid, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!((r.min_rev_ok, r.min_rev_fail), (1, 1));
        assert_eq!(r.fail_codes.get("revision_not_reached"), Some(&1));
        let r = one_min_rev(json!(1), 15);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.anomalies[0].kind, "below-min-revision");
        // Claims revision 20 but shows the older value: overwritten.
        let r = one_min_rev(json!(1), 20);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.anomalies[0].kind, "overwritten");
    }

    /// Proves a min_revision read showing a write older than its
    /// min_revision fails as `misses-write` even when no acknowledged write
    /// sits between them (the named write's own revision is the bound).
    #[test]
    fn zone_reads_min_revision_misses_write() {
        let r = check(&h(&[
            (0, Invoke, "write", json!(["k", 1]), 90),
            (0, Okt, "write", json!(["k", 1, 10]), 100),
            (1, Invoke, F_MIN_REV, json!(["k", null, {"min_revision": 30}]), 300),
            (1, Okt, F_MIN_REV, json!(["k", 1, {"revision": 30}]), 301),
        ]));
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.anomalies[0].kind, "misses-write");
    }
}

//! Jepsen's total-queue checker, extended with per-mailbox order, for the
//! messages workload (offline mailboxes with ack).
//!
//! Ops (values may be plain ids, or `[mailbox, id]` tuples):
//! - `enqueue` invoke `[m, id]`: ok = acknowledged, fail = definitely not
//!   enqueued, info = unknown.
//! - `dequeue` ok `[m, id]` (or `[m, null]` when empty).
//! - `drain` ok `[m, [id, ...]]`: everything left, in delivery order.
//!
//! As in Jepsen: `lost` = acknowledged but never delivered; `unexpected` =
//! delivered but never attempted; `duplicated` = delivered more than once;
//! `recovered` = delivered although the enqueue was info/unfinished.
//! Valid iff nothing is lost or unexpected, (optionally) nothing duplicated,
//! and (optionally) per-mailbox order holds: if enqueue `a` was acknowledged
//! before enqueue `b` was invoked, `b` is not first-delivered before `a`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::Verdict;
use crate::history::{pair_ops, Op, OpType};

#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    pub allow_duplicates: bool,
    pub ordered: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            allow_duplicates: true,
            ordered: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OrderViolation {
    pub mailbox: String,
    /// Acknowledged first...
    pub earlier: Value,
    /// ...but delivered after this one.
    pub later: Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueResult {
    pub valid: Verdict,
    pub attempt_count: usize,
    pub acknowledged_count: usize,
    pub delivered_count: usize,
    pub lost_count: usize,
    pub unexpected_count: usize,
    pub duplicated_count: usize,
    pub recovered_count: usize,
    pub lost: Vec<Value>,
    pub unexpected: Vec<Value>,
    /// id -> times delivered (only ids delivered more than once).
    pub duplicated: BTreeMap<String, usize>,
    pub recovered: Vec<Value>,
    pub order_violations: Vec<OrderViolation>,
}

fn split(v: &Value) -> (String, Value) {
    match v.as_array() {
        Some(a) if a.len() == 2 => {
            let m = match &a[0] {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            (m, a[1].clone())
        }
        _ => ("default".into(), v.clone()),
    }
}

struct Enq {
    mailbox: String,
    id: Value,
    invoke: u64,
    ok_at: Option<u64>,
    typ: OpType,
}

pub fn check(history: &[Op], opts: QueueOptions) -> QueueResult {
    let mut enqs: HashMap<String, Enq> = HashMap::new();
    // Deliveries in history order: (mailbox, id)
    let mut deliveries: Vec<(String, Value)> = Vec::new();
    for p in pair_ops(history) {
        let inv = p.invoke;
        let ctype = p.complete.map(|c| c.typ).unwrap_or(OpType::Info);
        match inv.f.as_str() {
            "enqueue" => {
                let (m, id) = split(&inv.value);
                let key = id.to_string();
                let ok_at = (ctype == OpType::Ok).then(|| p.complete.unwrap().index);
                if ctype == OpType::Fail && enqs.contains_key(&key) {
                    continue;
                }
                enqs.insert(
                    key,
                    Enq {
                        mailbox: m,
                        id,
                        invoke: inv.index,
                        ok_at,
                        typ: ctype,
                    },
                );
            }
            "dequeue" if ctype == OpType::Ok => {
                let (m, id) = split(&p.complete.unwrap().value);
                if !id.is_null() {
                    deliveries.push((m, id));
                }
            }
            "drain" if ctype == OpType::Ok => {
                let (m, ids) = split(&p.complete.unwrap().value);
                for id in ids.as_array().cloned().unwrap_or_default() {
                    deliveries.push((m.clone(), id));
                }
            }
            _ => {}
        }
    }
    let attempted = |k: &str| enqs.get(k).is_some_and(|e| e.typ != OpType::Fail);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut first_pos: HashMap<String, usize> = HashMap::new();
    let mut unexpected = Vec::new();
    let mut recovered = Vec::new();
    for (pos, (_, id)) in deliveries.iter().enumerate() {
        let k = id.to_string();
        let c = counts.entry(k.clone()).or_insert(0);
        *c += 1;
        if *c > 1 {
            continue;
        }
        first_pos.insert(k.clone(), pos);
        if !attempted(&k) {
            unexpected.push(id.clone());
        } else if enqs[&k].ok_at.is_none() {
            recovered.push(id.clone());
        }
    }
    let mut acked: Vec<&Enq> = enqs.values().filter(|e| e.ok_at.is_some()).collect();
    acked.sort_by_key(|e| e.invoke);
    let lost: Vec<Value> = acked
        .iter()
        .filter(|e| !counts.contains_key(&e.id.to_string()))
        .map(|e| e.id.clone())
        .collect();
    let duplicated: BTreeMap<String, usize> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, c)| (k.clone(), *c))
        .collect();

    let mut order_violations = Vec::new();
    if opts.ordered {
        let mut by_mailbox: HashMap<&str, Vec<&Enq>> = HashMap::new();
        for e in &acked {
            by_mailbox.entry(e.mailbox.as_str()).or_default().push(e);
        }
        for (m, list) in by_mailbox {
            for a in &list {
                let Some(pa) = first_pos.get(&a.id.to_string()) else {
                    continue;
                };
                for b in &list {
                    if a.ok_at.unwrap() >= b.invoke {
                        continue;
                    }
                    if let Some(pb) = first_pos.get(&b.id.to_string()) {
                        if pb < pa && order_violations.len() < 100 {
                            order_violations.push(OrderViolation {
                                mailbox: m.to_string(),
                                earlier: a.id.clone(),
                                later: b.id.clone(),
                            });
                        }
                    }
                }
            }
        }
        order_violations.sort_by_key(|v| {
            (
                v.mailbox.clone(),
                v.earlier.to_string(),
                v.later.to_string(),
            )
        });
    }
    let ok = lost.is_empty()
        && unexpected.is_empty()
        && (opts.allow_duplicates || duplicated.is_empty())
        && order_violations.is_empty();
    QueueResult {
        valid: if ok { Verdict::Valid } else { Verdict::Invalid },
        attempt_count: enqs.values().filter(|e| e.typ != OpType::Fail).count(),
        acknowledged_count: acked.len(),
        delivered_count: counts.len(),
        lost_count: lost.len(),
        unexpected_count: unexpected.len(),
        duplicated_count: duplicated.len(),
        recovered_count: recovered.len(),
        lost,
        unexpected,
        duplicated,
        recovered,
        order_violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use serde_json::json;
    use OpType::*;

    fn enq(p: i64, t: OpType, id: i64) -> (i64, OpType, &'static str, Value) {
        (p, t, "enqueue", json!(["m1", id]))
    }
    fn deq(p: i64, t: OpType, id: Option<i64>) -> (i64, OpType, &'static str, Value) {
        (p, t, "dequeue", json!(["m1", id]))
    }

    /// Proves a history where every acknowledged message is delivered once,
    /// in order, is valid.
    #[test]
    fn checker_queue_all_delivered_is_valid() {
        let h = hist(&[
            enq(0, Invoke, 1),
            enq(0, Ok, 1),
            enq(0, Invoke, 2),
            enq(0, Ok, 2),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
            (1, Invoke, "drain", json!(["m1", null])),
            (1, Ok, "drain", json!(["m1", [2]])),
        ]);
        let r = check(&h, QueueOptions::default());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.acknowledged_count, 2);
        assert_eq!(r.delivered_count, 2);
    }

    /// Proves an acknowledged message that is never delivered is reported lost.
    #[test]
    fn checker_queue_lost_message_is_invalid() {
        let h = hist(&[
            enq(0, Invoke, 1),
            enq(0, Ok, 1),
            enq(0, Invoke, 2),
            enq(0, Ok, 2),
            deq(1, Invoke, None),
            deq(1, Ok, Some(2)),
        ]);
        let r = check(
            &h,
            QueueOptions {
                ordered: false,
                ..Default::default()
            },
        );
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.lost, vec![json!(1)]);
    }

    /// Proves a delivered message that was never sent, or whose send failed,
    /// is unexpected.
    #[test]
    fn checker_queue_unexpected_message_is_invalid() {
        let h = hist(&[
            enq(0, Invoke, 1),
            enq(0, Fail, 1),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
            deq(1, Invoke, None),
            deq(1, Ok, Some(7)),
        ]);
        let r = check(&h, QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.unexpected, vec![json!(1), json!(7)]);
    }

    /// Proves an info enqueue may be lost (not counted) or delivered
    /// (counted as recovered) without making the history invalid.
    #[test]
    fn checker_queue_info_enqueue_is_recovered_or_absent() {
        let h = hist(&[
            enq(0, Invoke, 1),
            enq(0, Info, 1),
            enq(2, Invoke, 2),
            enq(2, Info, 2),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
        ]);
        let r = check(&h, QueueOptions::default());
        assert_eq!(r.valid, Verdict::Valid);
        assert_eq!(r.recovered, vec![json!(1)]);
        assert!(r.lost.is_empty());
    }

    /// Proves duplicates are reported, and fail the check only when
    /// duplicates are disallowed.
    #[test]
    fn checker_queue_duplicates_reported() {
        let h = hist(&[
            enq(0, Invoke, 1),
            enq(0, Ok, 1),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
        ]);
        let lenient = check(&h, QueueOptions::default());
        assert_eq!(lenient.valid, Verdict::Valid);
        assert_eq!(lenient.duplicated.get("1"), Some(&2));
        let strict = check(
            &h,
            QueueOptions {
                allow_duplicates: false,
                ordered: true,
            },
        );
        assert_eq!(strict.valid, Verdict::Invalid);
    }

    /// Proves per-mailbox order: a message acknowledged before another was
    /// sent must not be delivered after it; concurrent sends may reorder;
    /// different mailboxes are independent.
    #[test]
    fn checker_queue_mailbox_order() {
        let bad = hist(&[
            enq(0, Invoke, 1),
            enq(0, Ok, 1),
            enq(0, Invoke, 2),
            enq(0, Ok, 2),
            deq(1, Invoke, None),
            deq(1, Ok, Some(2)),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
        ]);
        let r = check(&bad, QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(
            r.order_violations,
            vec![OrderViolation {
                mailbox: "m1".into(),
                earlier: json!(1),
                later: json!(2)
            }]
        );
        let concurrent = hist(&[
            enq(0, Invoke, 1),
            enq(2, Invoke, 2),
            enq(0, Ok, 1),
            enq(2, Ok, 2),
            deq(1, Invoke, None),
            deq(1, Ok, Some(2)),
            deq(1, Invoke, None),
            deq(1, Ok, Some(1)),
        ]);
        assert_eq!(
            check(&concurrent, QueueOptions::default()).valid,
            Verdict::Valid
        );
        let two_boxes = hist(&[
            (0, Invoke, "enqueue", json!(["a", 1])),
            (0, Ok, "enqueue", json!(["a", 1])),
            (0, Invoke, "enqueue", json!(["b", 2])),
            (0, Ok, "enqueue", json!(["b", 2])),
            (1, Invoke, "drain", json!(["b", null])),
            (1, Ok, "drain", json!(["b", [2]])),
            (1, Invoke, "drain", json!(["a", null])),
            (1, Ok, "drain", json!(["a", [1]])),
        ]);
        assert_eq!(
            check(&two_boxes, QueueOptions::default()).valid,
            Verdict::Valid
        );
    }
}

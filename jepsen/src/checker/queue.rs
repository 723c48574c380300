//! Jepsen's total-queue checker, extended with per-mailbox order, for the
//! messages workload (offline mailboxes with ack).
//!
//! Ops (values may be plain ids, `[mailbox, id]` tuples, or
//! `[mailbox, id, meta]` where `meta` is an object of facts about the op):
//! - `enqueue` invoke `[m, id]`: ok = acknowledged, fail = definitely not
//!   enqueued, info = unknown. An ok may carry `{"message_id": N}`: the id
//!   the system gave the submission.
//! - `resubmit` ok `[m, id, {"message_id": N, "duplicate": bool}]`: the same
//!   submission sent again (same idempotency key) after it was acknowledged.
//! - `dequeue` ok `[m, id]` (or `[m, null]` when empty), optionally with
//!   `{"message_id": N, "session": S}`: which stored message it was and the
//!   session it came through.
//! - `drain` ok `[m, [id, ...]]`: everything left, in delivery order.
//!
//! As in Jepsen: `lost` = acknowledged but never delivered; `unexpected` =
//! delivered but never attempted; `duplicated` = delivered more than once;
//! `recovered` = delivered although the enqueue was info/unfinished.
//! Valid iff nothing is lost or unexpected, (optionally) nothing duplicated,
//! and (optionally) per-mailbox order holds: if enqueue `a` was acknowledged
//! before enqueue `b` was invoked, `b` is not first-delivered before `a`.
//!
//! With the metadata, three more things are checked (each makes the history
//! invalid): `misdelivered` = delivered to another mailbox than the one it
//! was sent to; `id_conflicts` = one submission (one element, i.e. one
//! idempotency key) seen under two different message ids — in its
//! answers, its resubmissions' answers or its deliveries (it was stored
//! twice, or a retry was answered with another message's id);
//! `session_order_violations` = within one session of one mailbox, a
//! delivery whose message id is not above the previous one's (the system
//! promises stored messages in id order within a session). Redeliveries
//! across sessions are the at-least-once duplicates above, not violations.
//! And `delivered_unseen` = an acknowledgement that says `outcome:
//! "delivered"` (a session acknowledged it in time) although no delivery of
//! that element was recorded before it (the harness records every delivery
//! before acknowledging it).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CheckerResult, Verdict};
use crate::history::{pair_ops, Op, OpType};
use crate::report::json_text;

#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    pub allow_duplicates: bool,
    pub ordered: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions { allow_duplicates: true, ordered: true }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OrderViolation {
    pub mailbox: String,
    /// Acknowledged first...
    pub earlier: Value,
    /// ...but delivered after this one.
    pub later: Value,
}

/// Within one session, a delivery whose message id is not above the
/// previous delivery's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SessionOrderViolation {
    pub mailbox: String,
    pub session: String,
    /// The previous delivery in that session: (element, message id, op index).
    pub previous: (Value, u64, u64),
    /// The delivery that went back: (element, message id, op index).
    pub this: (Value, u64, u64),
}

/// One submission seen under several message ids.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IdConflict {
    pub mailbox: String,
    pub element: Value,
    /// message id -> where it was seen ("enqueue #12", "resubmit #40",
    /// "dequeue #77").
    pub ids: BTreeMap<u64, Vec<String>>,
}

/// A lost element with its enqueue ops.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LostOp {
    pub mailbox: String,
    pub element: Value,
    /// The id the system gave it, when an answer named one.
    pub message_id: Option<u64>,
    pub invoke_index: u64,
    pub ok_index: Option<u64>,
}

/// An element delivered to another mailbox than the one it was sent to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Misdelivery {
    pub element: Value,
    pub sent_to: String,
    pub delivered_to: String,
    /// The dequeue op.
    pub index: u64,
}

/// An acknowledgement that said `delivered` before any delivery of the
/// element was recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DeliveredUnseen {
    pub mailbox: String,
    pub element: Value,
    pub ok_index: Option<u64>,
}

/// results.json `queue`. (`serde(default)`: results.json of older runs may
/// lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueResult {
    pub valid: Verdict,
    pub attempt_count: usize,
    pub acknowledged_count: usize,
    /// Distinct elements delivered.
    pub delivered_count: usize,
    /// Deliveries, duplicates included.
    pub delivery_count: usize,
    pub lost_count: usize,
    pub unexpected_count: usize,
    pub duplicated_count: usize,
    pub recovered_count: usize,
    pub misdelivered_count: usize,
    pub id_conflict_count: usize,
    pub delivered_unseen_count: usize,
    pub order_violation_count: usize,
    pub session_order_violation_count: usize,
    /// Sessions named by dequeue metadata.
    pub sessions: usize,
    /// Resubmissions of acknowledged submissions, and how many of them were
    /// answered `duplicate: true` (all should be).
    pub resubmits: usize,
    pub resubmits_duplicate: usize,
    pub lost: Vec<Value>,
    /// The first lost ones with their enqueue ops: mailbox, element,
    /// message id, invoke and ok indices.
    pub lost_ops: Vec<LostOp>,
    pub unexpected: Vec<Value>,
    /// id -> times delivered (only ids delivered more than once).
    pub duplicated: BTreeMap<String, usize>,
    pub recovered: Vec<Value>,
    /// Delivered to another mailbox: element, enqueued to, delivered to,
    /// dequeue op index.
    pub misdelivered: Vec<Misdelivery>,
    pub id_conflicts: Vec<IdConflict>,
    /// Answered `delivered` although no delivery of it had been recorded
    /// before the answer: mailbox, element, ok index.
    pub delivered_unseen: Vec<DeliveredUnseen>,
    pub order_violations: Vec<OrderViolation>,
    pub session_order_violations: Vec<SessionOrderViolation>,
}

/// Splits an op value into (mailbox, element, metadata).
fn split(v: &Value) -> (String, Value, Value) {
    match v.as_array() {
        Some(a) if a.len() == 2 || a.len() == 3 => {
            let m = match &a[0] {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            (m, a[1].clone(), a.get(2).cloned().unwrap_or(Value::Null))
        }
        _ => ("default".into(), v.clone(), Value::Null),
    }
}

struct Enq {
    mailbox: String,
    id: Value,
    invoke: u64,
    ok_at: Option<u64>,
    typ: OpType,
    /// The acknowledgement said `outcome: "delivered"`.
    said_delivered: bool,
}

struct Delivery {
    mailbox: String,
    id: Value,
    index: u64,
    meta: Value,
}

/// An acknowledged enqueue for the order check: ok index, invoke index,
/// first delivery position, element.
type Acked<'a> = (u64, u64, Option<usize>, &'a Value);

/// At most this many entries in each list of the result (counts are exact).
const SHOW: usize = 100;

pub fn check(history: &[Op], opts: QueueOptions) -> QueueResult {
    let mut enqs: HashMap<String, Enq> = HashMap::new();
    // element -> message id -> where seen
    let mut msg_ids: HashMap<String, BTreeMap<u64, Vec<String>>> = HashMap::new();
    let mut note_id = |k: &str, meta: &Value, what: String| {
        if let Some(mid) = meta.get("message_id").and_then(Value::as_u64) {
            msg_ids.entry(k.to_string()).or_default().entry(mid).or_default().push(what);
        }
    };
    let (mut resubmits, mut resubmits_duplicate) = (0, 0);
    // Deliveries in history order.
    let mut deliveries: Vec<Delivery> = Vec::new();
    for p in pair_ops(history) {
        let inv = p.invoke;
        let ctype = p.complete.map(|c| c.typ).unwrap_or(OpType::Info);
        match inv.f.as_str() {
            "enqueue" => {
                let (m, id, _) = split(&inv.value);
                let key = id.to_string();
                let ok_at = (ctype == OpType::Ok).then(|| p.complete.unwrap().index);
                if let Some(c) = p.complete.filter(|_| ctype == OpType::Ok) {
                    note_id(&key, &split(&c.value).2, format!("enqueue #{}", c.index));
                }
                if ctype == OpType::Fail && enqs.contains_key(&key) {
                    continue;
                }
                let said_delivered = ok_at.is_some()
                    && p.complete.map(|c| split(&c.value).2["outcome"] == "delivered")
                        == Some(true);
                enqs.insert(
                    key,
                    Enq { mailbox: m, id, invoke: inv.index, ok_at, typ: ctype, said_delivered },
                );
            }
            "resubmit" if ctype == OpType::Ok => {
                let c = p.complete.unwrap();
                let (_, id, meta) = split(&c.value);
                resubmits += 1;
                if meta.get("duplicate") == Some(&Value::Bool(true)) {
                    resubmits_duplicate += 1;
                }
                note_id(&id.to_string(), &meta, format!("resubmit #{}", c.index));
            }
            "dequeue" if ctype == OpType::Ok => {
                let c = p.complete.unwrap();
                let (m, id, meta) = split(&c.value);
                if !id.is_null() {
                    note_id(&id.to_string(), &meta, format!("dequeue #{}", c.index));
                    deliveries.push(Delivery { mailbox: m, id, index: c.index, meta });
                }
            }
            "drain" if ctype == OpType::Ok => {
                let c = p.complete.unwrap();
                let (m, ids, _) = split(&c.value);
                for id in ids.as_array().cloned().unwrap_or_default() {
                    deliveries.push(Delivery {
                        mailbox: m.clone(),
                        id,
                        index: c.index,
                        meta: Value::Null,
                    });
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
    let mut misdelivered = Vec::new();
    for (pos, d) in deliveries.iter().enumerate() {
        let k = d.id.to_string();
        if let Some(e) = enqs.get(&k).filter(|e| e.mailbox != d.mailbox) {
            misdelivered.push(Misdelivery {
                element: d.id.clone(),
                sent_to: e.mailbox.clone(),
                delivered_to: d.mailbox.clone(),
                index: d.index,
            });
        }
        let c = counts.entry(k.clone()).or_insert(0);
        *c += 1;
        if *c > 1 {
            continue;
        }
        first_pos.insert(k.clone(), pos);
        if !attempted(&k) {
            unexpected.push(d.id.clone());
        } else if enqs[&k].ok_at.is_none() {
            recovered.push(d.id.clone());
        }
    }
    let mut acked: Vec<&Enq> = enqs.values().filter(|e| e.ok_at.is_some()).collect();
    acked.sort_by_key(|e| e.invoke);
    // "delivered" means a session acknowledged it before the answer; the
    // harness records a delivery before acknowledging it.
    let first_index: HashMap<String, u64> =
        first_pos.iter().map(|(k, &pos)| (k.clone(), deliveries[pos].index)).collect();
    let delivered_unseen: Vec<DeliveredUnseen> = acked
        .iter()
        .filter(|e| e.said_delivered)
        .filter(|e| first_index.get(&e.id.to_string()).is_none_or(|&i| i > e.ok_at.unwrap()))
        .map(|e| DeliveredUnseen {
            mailbox: e.mailbox.clone(),
            element: e.id.clone(),
            ok_index: e.ok_at,
        })
        .collect();
    let lost_enqs: Vec<&&Enq> =
        acked.iter().filter(|e| !counts.contains_key(&e.id.to_string())).collect();
    let lost: Vec<Value> = lost_enqs.iter().map(|e| e.id.clone()).collect();
    let lost_ops: Vec<LostOp> = lost_enqs
        .iter()
        .take(SHOW)
        .map(|e| LostOp {
            mailbox: e.mailbox.clone(),
            element: e.id.clone(),
            message_id: msg_ids.get(&e.id.to_string()).and_then(|m| m.keys().next().copied()),
            invoke_index: e.invoke,
            ok_index: e.ok_at,
        })
        .collect();
    let duplicated: BTreeMap<String, usize> =
        counts.iter().filter(|(_, c)| **c > 1).map(|(k, c)| (k.clone(), *c)).collect();

    let mut id_conflicts: Vec<IdConflict> = msg_ids
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(k, ids)| {
            let (mailbox, element) = enqs
                .get(k)
                .map(|e| (e.mailbox.clone(), e.id.clone()))
                .unwrap_or_else(|| ("?".into(), serde_json::from_str(k).unwrap_or(Value::Null)));
            IdConflict { mailbox, element, ids: ids.clone() }
        })
        .collect();
    id_conflicts.sort_by_key(|c| (c.mailbox.clone(), c.element.to_string()));

    // Within a session, message ids only go up.
    let mut session_order_violations = Vec::new();
    let mut session_order_violation_count = 0;
    let mut last_in_session: HashMap<(String, String), (Value, u64, u64)> = HashMap::new();
    for d in &deliveries {
        let (Some(s), Some(mid)) = (
            d.meta.get("session").and_then(Value::as_str),
            d.meta.get("message_id").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let this = (d.id.clone(), mid, d.index);
        if let Some(prev) = last_in_session.insert((d.mailbox.clone(), s.to_string()), this.clone())
        {
            if mid <= prev.1 {
                session_order_violation_count += 1;
                if session_order_violations.len() < SHOW {
                    session_order_violations.push(SessionOrderViolation {
                        mailbox: d.mailbox.clone(),
                        session: s.to_string(),
                        previous: prev,
                        this,
                    });
                }
            }
        }
    }
    let sessions = last_in_session.len();

    let mut order_violations = Vec::new();
    let mut order_violation_count = 0;
    if opts.ordered {
        // Per mailbox: (ok index, invoke index, first delivery position).
        let mut by_mailbox: BTreeMap<&str, Vec<Acked>> = BTreeMap::new();
        for e in &acked {
            by_mailbox.entry(e.mailbox.as_str()).or_default().push((
                e.ok_at.unwrap(),
                e.invoke,
                first_pos.get(&e.id.to_string()).copied(),
                &e.id,
            ));
        }
        for (m, list) in by_mailbox {
            for &(a_ok, _, pa, a_id) in &list {
                let Some(pa) = pa else { continue };
                for &(_, b_inv, pb, b_id) in &list {
                    if a_ok >= b_inv {
                        continue;
                    }
                    if pb.is_some_and(|pb| pb < pa) {
                        order_violation_count += 1;
                        if order_violations.len() < SHOW {
                            order_violations.push(OrderViolation {
                                mailbox: m.to_string(),
                                earlier: a_id.clone(),
                                later: b_id.clone(),
                            });
                        }
                    }
                }
            }
        }
        order_violations
            .sort_by_key(|v| (v.mailbox.clone(), v.earlier.to_string(), v.later.to_string()));
    }
    let ok = lost.is_empty()
        && unexpected.is_empty()
        && misdelivered.is_empty()
        && id_conflicts.is_empty()
        && delivered_unseen.is_empty()
        && session_order_violation_count == 0
        && (opts.allow_duplicates || duplicated.is_empty())
        && order_violation_count == 0;
    QueueResult {
        valid: if ok { Verdict::Valid } else { Verdict::Invalid },
        attempt_count: enqs.values().filter(|e| e.typ != OpType::Fail).count(),
        acknowledged_count: acked.len(),
        delivered_count: counts.len(),
        delivery_count: deliveries.len(),
        lost_count: lost.len(),
        unexpected_count: unexpected.len(),
        duplicated_count: duplicated.len(),
        recovered_count: recovered.len(),
        misdelivered_count: misdelivered.len(),
        id_conflict_count: id_conflicts.len(),
        delivered_unseen_count: delivered_unseen.len(),
        order_violation_count,
        session_order_violation_count,
        sessions,
        resubmits,
        resubmits_duplicate,
        lost: lost.into_iter().take(SHOW * 10).collect(),
        lost_ops,
        unexpected: unexpected.into_iter().take(SHOW * 10).collect(),
        duplicated,
        recovered: recovered.into_iter().take(SHOW * 10).collect(),
        misdelivered: misdelivered.into_iter().take(SHOW).collect(),
        id_conflicts: id_conflicts.into_iter().take(SHOW).collect(),
        delivered_unseen: delivered_unseen.into_iter().take(SHOW).collect(),
        order_violations,
        session_order_violations,
    }
}

/// At most this many entries of each kind of anomaly are listed in the
/// summary (results.json has up to `SHOW`).
const SUMMARY_ANOMALIES: usize = 5;

impl CheckerResult for QueueResult {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        format!(
            "{} acknowledged, {} delivered ({} deliveries, {} sessions); lost {} unexpected {} misdelivered {} duplicated {} recovered {}; id conflicts {}, \"delivered\" unseen {}, order violations {} (real time) / {} (within a session); resubmits {} ({} answered duplicate)",
            self.acknowledged_count,
            self.delivered_count,
            self.delivery_count,
            self.sessions,
            self.lost_count,
            self.unexpected_count,
            self.misdelivered_count,
            self.duplicated_count,
            self.recovered_count,
            self.id_conflict_count,
            self.delivered_unseen_count,
            self.order_violation_count,
            self.session_order_violation_count,
            self.resubmits,
            self.resubmits_duplicate
        )
    }

    fn anomaly_lines(&self) -> Vec<String> {
        const N: usize = SUMMARY_ANOMALIES;
        let mut out = Vec::new();
        out.extend(self.lost_ops.iter().take(N).map(|l| {
            format!(
                "lost: {} element {} (message id {}), enqueue #{} acknowledged at #{}, never delivered",
                l.mailbox,
                l.element,
                json_text(&l.message_id),
                l.invoke_index,
                json_text(&l.ok_index)
            )
        }));
        out.extend(
            self.unexpected
                .iter()
                .take(N)
                .map(|u| format!("unexpected: element {u} delivered but never sent")),
        );
        out.extend(
            self.misdelivered.iter().take(N).map(|m| format!("misdelivered: {}", json_text(m))),
        );
        out.extend(self.id_conflicts.iter().take(N).map(|c| {
            format!(
                "id conflict: {} element {} seen as message ids {}",
                c.mailbox,
                c.element,
                json_text(&c.ids)
            )
        }));
        out.extend(
            self.delivered_unseen
                .iter()
                .take(N)
                .map(|d| format!("answered delivered before any delivery: {}", json_text(d))),
        );
        out.extend(self.session_order_violations.iter().take(N).map(|v| {
            format!(
                "session order: {} session {}: message id {} (op #{}) after {} (op #{})",
                v.mailbox, v.session, v.this.1, v.this.2, v.previous.1, v.previous.2
            )
        }));
        out.extend(self.order_violations.iter().take(N).map(|v| {
            format!(
                "order: {} element {} was acknowledged before {} was sent, but first delivered after it",
                v.mailbox, v.earlier, v.later
            )
        }));
        out
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
        let r = check(&h, QueueOptions { ordered: false, ..Default::default() });
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
        let strict = check(&h, QueueOptions { allow_duplicates: false, ordered: true });
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
            vec![OrderViolation { mailbox: "m1".into(), earlier: json!(1), later: json!(2) }]
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
        assert_eq!(check(&concurrent, QueueOptions::default()).valid, Verdict::Valid);
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
        assert_eq!(check(&two_boxes, QueueOptions::default()).valid, Verdict::Valid);
    }

    fn deq_meta(
        p: i64,
        m: &str,
        e: i64,
        mid: u64,
        session: &str,
    ) -> [(i64, OpType, &'static str, Value); 2] {
        [
            (p, Invoke, "dequeue", json!([m, null])),
            (p, Ok, "dequeue", json!([m, e, {"message_id": mid, "session": session}])),
        ]
    }

    /// Proves `[mailbox, element, meta]` values are read like pairs, and a
    /// message delivered to another mailbox than the one it was sent to is
    /// reported misdelivered (invalid) although it was delivered.
    #[test]
    fn checker_queue_meta_values_and_misdelivery() {
        let mut rows = vec![
            (0, Invoke, "enqueue", json!(["a", 1])),
            (0, Ok, "enqueue", json!(["a", 1, {"message_id": 10}])),
            (0, Invoke, "enqueue", json!(["b", 2])),
            (0, Ok, "enqueue", json!(["b", 2, {"message_id": 11}])),
        ];
        rows.extend(deq_meta(1, "a", 1, 10, "s1"));
        rows.extend(deq_meta(2, "b", 2, 11, "s2"));
        let r = check(&hist(&rows), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!((r.delivered_count, r.sessions), (2, 2));
        rows.extend(deq_meta(1, "a", 2, 11, "s1"));
        let r = check(&hist(&rows), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.misdelivered_count, 1);
        assert_eq!(r.misdelivered[0].sent_to, "b");
        assert_eq!(r.misdelivered[0].delivered_to, "a");
        assert!(r.lost.is_empty() && r.unexpected.is_empty());
    }

    /// Proves one submission seen under two message ids is an id conflict:
    /// delivered under another id than its answer named (stored twice), or
    /// a resubmission with the same key answered with a new id; a
    /// resubmission answered `duplicate` with the same id is fine, and is
    /// counted.
    #[test]
    fn checker_queue_id_conflicts() {
        let base = vec![
            (0, Invoke, "enqueue", json!(["a", 1])),
            (0, Ok, "enqueue", json!(["a", 1, {"message_id": 10}])),
            (0, Invoke, "resubmit", json!(["a", 1])),
            (0, Ok, "resubmit", json!(["a", 1, {"message_id": 10, "duplicate": true}])),
        ];
        let mut good = base.clone();
        good.extend(deq_meta(1, "a", 1, 10, "s1"));
        good.extend(deq_meta(1, "a", 1, 10, "s2"));
        let r = check(&hist(&good), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!((r.resubmits, r.resubmits_duplicate), (1, 1));
        assert_eq!(r.duplicated.get("1"), Some(&2));
        let mut twice = base.clone();
        twice.extend(deq_meta(1, "a", 1, 10, "s1"));
        twice.extend(deq_meta(1, "a", 1, 12, "s1"));
        let r = check(&hist(&twice), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.id_conflicts.len(), 1);
        let ids: Vec<u64> = r.id_conflicts[0].ids.keys().copied().collect();
        assert_eq!(ids, vec![10, 12]);
        assert_eq!(r.id_conflicts[0].ids[&12], vec!["dequeue #7".to_string()]);
        let mut new_id = base;
        new_id.push((0, Invoke, "resubmit", json!(["a", 1])));
        new_id.push((0, Ok, "resubmit", json!(["a", 1, {"message_id": 13, "duplicate": false}])));
        new_id.extend(deq_meta(1, "a", 1, 10, "s1"));
        let r = check(&hist(&new_id), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!((r.resubmits, r.resubmits_duplicate), (2, 1));
    }

    /// Proves the within-session order: message ids must rise within one
    /// session (a lower id after a higher one in the same session is a
    /// violation), while a later session may redeliver a lower id (an
    /// at-least-once duplicate, not an order violation).
    #[test]
    fn checker_queue_session_order() {
        // Concurrent sends (no real-time order between them).
        let mut rows = vec![
            (0, Invoke, "enqueue", json!(["a", 1])),
            (2, Invoke, "enqueue", json!(["a", 2])),
            (0, Ok, "enqueue", json!(["a", 1, {"message_id": 10}])),
            (2, Ok, "enqueue", json!(["a", 2, {"message_id": 11}])),
        ];
        rows.extend(deq_meta(1, "a", 1, 10, "s1"));
        rows.extend(deq_meta(1, "a", 2, 11, "s1"));
        rows.extend(deq_meta(1, "a", 1, 10, "s2"));
        let r = check(&hist(&rows), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.session_order_violation_count, 0);
        rows.extend(deq_meta(1, "a", 1, 10, "s1"));
        let r = check(&hist(&rows), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.session_order_violation_count, 1);
        let v = &r.session_order_violations[0];
        assert_eq!((v.session.as_str(), v.previous.1, v.this.1), ("s1", 11, 10));
        assert!(r.order_violations.is_empty(), "first deliveries kept their order");
    }

    /// Proves an answer saying "delivered" must follow a recorded delivery
    /// of that element: valid when the dequeue came before the enqueue's
    /// ok, invalid when it came only after it (or never).
    #[test]
    fn checker_queue_delivered_outcome_needs_a_prior_delivery() {
        let mut good = vec![(0, Invoke, "enqueue", json!(["a", 1]))];
        good.extend(deq_meta(1, "a", 1, 10, "s1"));
        good.push((0, Ok, "enqueue", json!(["a", 1, {"message_id": 10, "outcome": "delivered"}])));
        let r = check(&hist(&good), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        let mut bad = vec![
            (0, Invoke, "enqueue", json!(["a", 1])),
            (0, Ok, "enqueue", json!(["a", 1, {"message_id": 10, "outcome": "delivered"}])),
        ];
        bad.extend(deq_meta(1, "a", 1, 10, "s1"));
        let r = check(&hist(&bad), QueueOptions::default());
        assert_eq!(r.valid, Verdict::Invalid);
        let unseen = DeliveredUnseen { mailbox: "a".into(), element: json!(1), ok_index: Some(1) };
        assert_eq!(r.delivered_unseen, vec![unseen]);
        assert!(r.lost.is_empty());
    }
}

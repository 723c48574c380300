//! The profile-sync outbox checker (issue 17, `workload::outbox`).
//!
//! The history holds the clients' `profile-bind` and `profile-set` ops
//! (a set's value is a counter, unique in the run; its `ok` carries the
//! revision Herald answered), the receivers' `profile-deliver` ops (one per
//! request a receiver got: module, uid, account, revision, value, webhook
//! id, whether the signature verified, the status it answered) and one
//! `outbox-final` op (the outbox after the quiet period).
//!
//! Only deliveries a receiver answered with a 2xx count as applied. Rules:
//!
//! Every update has its own revision (Herald's `profile::revision`: log
//! index × 2^16 + position in the entry), so revisions order updates,
//! batched ones included. A receiver's *own* updates — those sourced at its
//! module, committed, with a known revision (acknowledged, or seen in a
//! delivery elsewhere) — are part of what it holds: the module's server
//! made that change itself and keeps the revision Herald answered.
//!
//! - **lost**: an update that is committed (acknowledged, or proven by a
//!   delivery of it anywhere) must reach every *required* target (a module
//!   other than its source, bound with an acknowledged bind before the
//!   update was invoked) with its revision or a newer one (coalescing),
//!   unless that target was itself the source of a committed update of the
//!   same user with the same or a newer revision (it holds a newer value,
//!   and Herald drops its item of the older one: counted as
//!   `excused_by_source`).
//! - **stale**: a receiver's final value per account — the value of the
//!   highest revision among what it applied and its own updates, as a
//!   receiver applying "only if newer" ends — is that of the last committed
//!   update targeting it, or of a later one (an indeterminate update that
//!   did commit, or its own).
//! - **unexpected**: an applied delivery of a value no client wrote for that
//!   uid, of a failed update, to its own source module or an unbound one,
//!   to another account, or with another revision than the one acknowledged;
//!   and two committed updates of one user with the same revision.
//! - **bad signature**: a delivery whose Standard Webhooks signature does
//!   not verify with the module's secret.
//! - **dead**: the outbox's dead-letter list is not empty at the end (the
//!   harness's horizon is far longer than a run).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CheckerResult, Verdict};
use crate::history::{Op, OpType, Process};

/// At most this many anomalies of each kind are listed (all are counted).
const MAX_LISTED: usize = 50;

/// One anomaly: what, for which account, the values involved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Anomaly {
    pub uid: String,
    pub module: String,
    /// The update's value (lost), the expected final value (stale), the
    /// delivered value (unexpected, bad signature).
    pub value: Option<u64>,
    pub revision: Option<u64>,
    /// Stale: the value and revision the receiver ended with (None: it
    /// applied nothing for the account).
    pub got_value: Option<u64>,
    pub got_revision: Option<u64>,
    pub why: String,
}

/// results.json `outbox`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxResult {
    pub valid: Verdict,
    pub acknowledged: usize,
    pub indeterminate: usize,
    pub failed: usize,
    /// Indeterminate updates proven committed by a delivery.
    pub indeterminate_delivered: usize,
    /// Requests the receivers got, applied (2xx) or refused (they answer a
    /// share with 503 on purpose).
    pub deliveries: usize,
    pub applied: usize,
    pub refused: usize,
    /// Connections that closed before a whole request arrived (a node
    /// killed or paused mid-send, a sender's timeout): nothing to judge.
    pub incomplete: usize,
    /// Applied deliveries of a webhook id applied before.
    pub duplicates: usize,
    /// Applied deliveries with a lower revision than one applied before for
    /// the same account (a receiver ignores them).
    pub out_of_order: usize,
    /// (update, required target) pairs never delivered with the update's
    /// own revision because a newer one superseded it.
    pub coalesced: usize,
    /// (update, required target) pairs that needed no delivery: the target
    /// was itself the source of a same-or-newer committed update.
    pub excused_by_source: usize,
    /// Accounts (uid, module) checked for their final value.
    pub accounts: usize,
    /// Milliseconds from an acknowledgement to the first applied delivery
    /// carrying it or a newer revision, per required target: median, max.
    pub latency_p50_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// The final outbox poll (None: it never answered).
    pub final_pending: Option<u64>,
    pub final_dead: Option<u64>,
    pub lost_count: usize,
    pub stale_count: usize,
    pub unexpected_count: usize,
    pub bad_signature_count: usize,
    pub lost: Vec<Anomaly>,
    pub stale: Vec<Anomaly>,
    pub unexpected: Vec<Anomaly>,
    pub bad_signature: Vec<Anomaly>,
}

#[derive(Clone, Debug)]
struct Update {
    uid: String,
    source: String,
    invoke_index: u64,
    /// Completion: Ok, Info or Fail (Info also when it never completed).
    outcome: OpType,
    revision: Option<u64>,
    ok_time: Option<u64>,
}

#[derive(Clone, Debug)]
struct Delivery {
    time: u64,
    module: String,
    uid: String,
    account: String,
    revision: u64,
    value: Option<u64>,
    webhook_id: String,
    /// None: no whole request to check.
    sig_ok: Option<bool>,
    applied: bool,
}

/// One applied delivery of an account: revision, value, time.
type Applied = (u64, Option<u64>, u64);

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string()
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(|x| x.as_u64())
}

fn push(list: &mut Vec<Anomaly>, count: &mut usize, a: Anomaly) {
    *count += 1;
    if list.len() < MAX_LISTED {
        list.push(a);
    }
}

pub fn check(hist: &[Op]) -> OutboxResult {
    // Bindings: (uid, module) -> (account, index of the ok completion);
    // `allowed`: every bind not known to have failed.
    let mut bound_ok: HashMap<(String, String), (String, u64)> = HashMap::new();
    let mut allowed: HashMap<(String, String), String> = HashMap::new();
    // Updates by value; the open invocation of each process.
    let mut updates: BTreeMap<u64, Update> = BTreeMap::new();
    let mut open: HashMap<Process, (String, Value)> = HashMap::new();
    let mut deliveries = Vec::new();
    let mut r = OutboxResult::default();
    for op in hist {
        match (op.f.as_str(), op.typ) {
            ("profile-bind" | "profile-set", OpType::Invoke) => {
                open.insert(op.process, (op.f.clone(), op.value.clone()));
                if op.f == "profile-set" {
                    if let Some(val) = u(&op.value, "value") {
                        updates.insert(
                            val,
                            Update {
                                uid: s(&op.value, "uid"),
                                source: s(&op.value, "source"),
                                invoke_index: op.index,
                                outcome: OpType::Info,
                                revision: None,
                                ok_time: None,
                            },
                        );
                    }
                } else {
                    allowed.insert(
                        (s(&op.value, "uid"), s(&op.value, "module")),
                        s(&op.value, "account"),
                    );
                }
            }
            ("profile-bind", t) => {
                open.remove(&op.process);
                let key = (s(&op.value, "uid"), s(&op.value, "module"));
                if t == OpType::Ok {
                    bound_ok.entry(key).or_insert((s(&op.value, "account"), op.index));
                }
            }
            ("profile-set", t) => {
                open.remove(&op.process);
                if let Some(up) = u(&op.value, "value").and_then(|v| updates.get_mut(&v)) {
                    up.outcome = t;
                    if t == OpType::Ok {
                        up.revision = u(&op.value, "revision");
                        up.ok_time = Some(op.time);
                    }
                }
            }
            ("profile-deliver", OpType::Ok) => {
                let status = u(&op.value, "status").unwrap_or(0);
                deliveries.push(Delivery {
                    time: op.time,
                    module: s(&op.value, "module"),
                    uid: s(&op.value, "uid"),
                    account: s(&op.value, "account"),
                    revision: u(&op.value, "revision").unwrap_or(0),
                    value: u(&op.value, "value"),
                    webhook_id: s(&op.value, "webhook_id"),
                    sig_ok: op
                        .value
                        .get("webhook_id")
                        .map(|_| op.value.get("sig_ok").and_then(|x| x.as_bool()).unwrap_or(false)),
                    applied: (200..300).contains(&status),
                });
            }
            ("outbox-final", OpType::Ok) => {
                r.final_pending = u(&op.value, "pending");
                r.final_dead = u(&op.value, "dead");
            }
            _ => {}
        }
    }
    for up in updates.values() {
        match up.outcome {
            OpType::Ok => r.acknowledged += 1,
            OpType::Fail => r.failed += 1,
            _ => r.indeterminate += 1,
        }
    }

    // Deliveries: signatures, plausibility, the applied state per account.
    r.deliveries = deliveries.len();
    let mut seen_ids = BTreeSet::new();
    // (uid, module) -> applied deliveries (revision, value, time) in order.
    let mut applied: HashMap<(String, String), Vec<Applied>> = HashMap::new();
    // Revision an indeterminate update was delivered with.
    let mut delivered_rev: HashMap<u64, u64> = HashMap::new();
    for d in &deliveries {
        let a = |why: &str| Anomaly {
            uid: d.uid.clone(),
            module: d.module.clone(),
            value: d.value,
            revision: Some(d.revision),
            why: why.to_string(),
            ..Default::default()
        };
        if d.sig_ok.is_none() {
            r.incomplete += 1;
            continue;
        }
        if d.sig_ok == Some(false) {
            push(&mut r.bad_signature, &mut r.bad_signature_count, a("signature did not verify"));
        }
        if !d.applied {
            r.refused += 1;
            continue;
        }
        r.applied += 1;
        if !seen_ids.insert(d.webhook_id.clone()) {
            r.duplicates += 1;
        }
        let key = (d.uid.clone(), d.module.clone());
        let why = match d.value.and_then(|v| updates.get(&v)) {
            None => Some("no client wrote this value".to_string()),
            Some(up) if up.uid != d.uid => Some(format!("the value was written for {}", up.uid)),
            Some(up) if up.outcome == OpType::Fail => Some("the update had failed".into()),
            Some(up) if up.source == d.module => Some("delivered to its own source".into()),
            Some(_) if !allowed.contains_key(&key) => Some("module not bound".into()),
            Some(_) if allowed.get(&key) != Some(&d.account) => {
                Some(format!("account {} is not the bound one", d.account))
            }
            Some(up) if up.revision.is_some_and(|rv| rv != d.revision) => {
                Some(format!("acknowledged with revision {}", up.revision.unwrap_or(0)))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            push(&mut r.unexpected, &mut r.unexpected_count, a(&why));
            continue;
        }
        let v = d.value.unwrap_or(0);
        if updates[&v].outcome != OpType::Ok {
            delivered_rev.entry(v).or_insert(d.revision);
        }
        let list = applied.entry(key).or_default();
        if list.iter().any(|(rv, _, _)| *rv > d.revision) {
            r.out_of_order += 1;
        }
        list.push((d.revision, d.value, d.time));
    }
    r.indeterminate_delivered = delivered_rev.len();

    // The revision of every committed update whose revision is known.
    let committed_rev = |v: u64, up: &Update| {
        if up.outcome == OpType::Fail {
            return None;
        }
        up.revision.or_else(|| delivered_rev.get(&v).copied())
    };
    // Each receiver's own updates: (uid, source module) -> (revision, value).
    let mut own: HashMap<(String, String), Vec<(u64, u64)>> = HashMap::new();
    // Revisions are distinct per update: two committed updates of one user
    // with one revision mean Herald could not order them.
    let mut by_rev: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for (&v, up) in &updates {
        let Some(rev) = committed_rev(v, up) else { continue };
        own.entry((up.uid.clone(), up.source.clone())).or_default().push((rev, v));
        if let Some(other) = by_rev.insert((up.uid.clone(), rev), v) {
            push(
                &mut r.unexpected,
                &mut r.unexpected_count,
                Anomaly {
                    uid: up.uid.clone(),
                    module: up.source.clone(),
                    value: Some(v),
                    revision: Some(rev),
                    got_value: Some(other),
                    got_revision: Some(rev),
                    why: format!("updates {other} and {v} share revision {rev}"),
                },
            );
        }
    }

    // Committed updates and their required targets.
    let mut latencies = Vec::new();
    // (uid, module) -> revision and value of the last committed update
    // requiring it.
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (&v, up) in &updates {
        let Some(rev) = committed_rev(v, up) else { continue };
        let targets: Vec<String> = bound_ok
            .iter()
            .filter(|((uid, m), (_, at))| {
                *uid == up.uid && *m != up.source && *at < up.invoke_index
            })
            .map(|((_, m), _)| m.clone())
            .collect();
        for m in targets {
            let key = (up.uid.clone(), m.clone());
            let got = applied.get(&key).map(Vec::as_slice).unwrap_or_default();
            let sourced_newer = own.get(&key).is_some_and(|l| l.iter().any(|(rv, _)| *rv >= rev));
            match got.iter().filter(|(rv, _, _)| *rv >= rev).map(|(_, _, t)| *t).min() {
                None if sourced_newer => r.excused_by_source += 1,
                None => push(
                    &mut r.lost,
                    &mut r.lost_count,
                    Anomaly {
                        uid: up.uid.clone(),
                        module: m.clone(),
                        value: Some(v),
                        revision: Some(rev),
                        why: format!(
                            "{} update never reached {m} (nor a newer revision)",
                            if up.outcome == OpType::Ok { "acknowledged" } else { "delivered" }
                        ),
                        ..Default::default()
                    },
                ),
                Some(t) => {
                    if let Some(ok) = up.ok_time {
                        latencies.push(t.saturating_sub(ok) as f64 / 1e6);
                    }
                    if !got.iter().any(|(rv, _, _)| *rv == rev) {
                        r.coalesced += 1;
                    }
                }
            }
            let e = expected.entry(key).or_insert((rev, v));
            if rev > e.0 {
                *e = (rev, v);
            }
        }
    }
    r.accounts = expected.len();
    for ((uid, m), (rev, val)) in &expected {
        let key = (uid.clone(), m.clone());
        // What the receiver holds: the highest revision it applied or made.
        let applied_last = applied
            .get(&key)
            .and_then(|l| l.iter().max_by_key(|(rv, _, _)| *rv))
            .map(|(rv, val, _)| (*rv, *val));
        let own_last =
            own.get(&key).and_then(|l| l.iter().max()).map(|(rv, val)| (*rv, Some(*val)));
        let last = applied_last.max(own_last);
        let fine = matches!(last, Some((lr, lv)) if lr > *rev || (lr == *rev && lv == Some(*val)));
        if !fine {
            push(
                &mut r.stale,
                &mut r.stale_count,
                Anomaly {
                    uid: uid.clone(),
                    module: m.clone(),
                    value: Some(*val),
                    revision: Some(*rev),
                    got_revision: last.map(|l| l.0),
                    got_value: last.and_then(|l| l.1),
                    why: "the receiver ended on an older value than the last committed update"
                        .into(),
                },
            );
        }
    }
    latencies.sort_by(f64::total_cmp);
    r.latency_p50_ms = latencies.get(latencies.len() / 2).copied();
    r.latency_max_ms = latencies.last().copied();
    let dead = r.final_dead.unwrap_or(0) > 0;
    r.valid =
        if r.lost_count + r.stale_count + r.unexpected_count + r.bad_signature_count > 0 || dead {
            Verdict::Invalid
        } else {
            Verdict::Valid
        };
    r
}

impl CheckerResult for OutboxResult {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
        let ms = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
        format!(
            "{} acknowledged, {} indeterminate ({} delivered), {} failed; {} requests ({} applied, {} refused, {} incomplete, {} duplicates, {} out of order), {} coalesced, {} excused by source; {} accounts; latency p50 {} ms max {} ms; final pending {} dead {}; lost {} stale {} unexpected {} bad signatures {}",
            self.acknowledged,
            self.indeterminate,
            self.indeterminate_delivered,
            self.failed,
            self.deliveries,
            self.applied,
            self.refused,
            self.incomplete,
            self.duplicates,
            self.out_of_order,
            self.coalesced,
            self.excused_by_source,
            self.accounts,
            ms(self.latency_p50_ms),
            ms(self.latency_max_ms),
            opt(self.final_pending),
            opt(self.final_dead),
            self.lost_count,
            self.stale_count,
            self.unexpected_count,
            self.bad_signature_count
        )
    }

    fn anomaly_lines(&self) -> Vec<String> {
        let line = |kind: &str, a: &Anomaly| {
            format!(
                "outbox {kind}: {} at {}: value {:?} revision {:?} (receiver has {:?} at {:?}): {}",
                a.uid, a.module, a.value, a.revision, a.got_value, a.got_revision, a.why
            )
        };
        let mut out = Vec::new();
        for (kind, list) in [
            ("lost", &self.lost),
            ("stale", &self.stale),
            ("unexpected", &self.unexpected),
            ("bad signature", &self.bad_signature),
        ] {
            out.extend(list.iter().take(5).map(|a| line(kind, a)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use crate::history::OpType::*;
    use serde_json::json;

    fn bind(p: i64, uid: &str, m: &str) -> Vec<(i64, OpType, &'static str, Value)> {
        let v = json!({"uid": uid, "module": m, "account": format!("{uid}@{m}")});
        vec![(p, Invoke, "profile-bind", v.clone()), (p, Ok, "profile-bind", v)]
    }

    fn set(p: i64, uid: &str, src: &str, val: u64, done: OpType, rev: Option<u64>) -> Vec<Row> {
        let v = json!({"uid": uid, "source": src, "value": val});
        let mut c = v.clone();
        if let Some(r) = rev {
            c["revision"] = json!(r);
        }
        vec![(p, Invoke, "profile-set", v), (p, done, "profile-set", c)]
    }

    type Row = (i64, OpType, &'static str, Value);

    fn deliver(m: &str, uid: &str, rev: u64, val: u64, id: &str) -> Vec<Row> {
        deliver_with(m, uid, rev, val, id, true, 200)
    }

    fn deliver_with(
        m: &str,
        uid: &str,
        rev: u64,
        val: u64,
        id: &str,
        sig_ok: bool,
        status: u64,
    ) -> Vec<Row> {
        let v = json!({"module": m, "uid": uid, "account": format!("{uid}@{m}"),
                       "revision": rev, "value": val, "webhook_id": id,
                       "sig_ok": sig_ok, "status": status});
        vec![(900, Invoke, "profile-deliver", v.clone()), (900, Ok, "profile-deliver", v)]
    }

    fn fin(pending: u64, dead: u64) -> Vec<Row> {
        let v = json!({"pending": pending, "dead": dead});
        vec![(901, Invoke, "outbox-final", json!(null)), (901, Ok, "outbox-final", v)]
    }

    /// uid u bound to a, b and c; update 1 (rev 10) from a, update 2 (rev
    /// 20) from b, both acknowledged.
    fn base() -> Vec<Row> {
        [bind(0, "u", "a"), bind(0, "u", "b"), bind(0, "u", "c")]
            .concat()
            .into_iter()
            .chain(set(0, "u", "a", 1, Ok, Some(10)))
            .chain(set(1, "u", "b", 2, Ok, Some(20)))
            .collect()
    }

    fn run(rows: Vec<Vec<Row>>) -> OutboxResult {
        check(&hist(&rows.concat()))
    }

    /// Proves a complete history is valid: every target got the last
    /// update (b got update 1, a got update 2, c got both, one twice and
    /// one refusal first), and coalescing counts: c skipping rev 10 is fine.
    #[test]
    fn checker_outbox_valid_history_and_coalescing() {
        let r = run(vec![
            base(),
            deliver_with("b", "u", 10, 1, "msg_1", true, 503),
            vec![
                (902, Invoke, "profile-deliver", json!({"module": "b"})),
                (902, Ok, "profile-deliver", json!({"module": "b", "status": 0})),
            ],
            deliver("b", "u", 10, 1, "msg_1"),
            deliver("c", "u", 10, 1, "msg_2"),
            deliver("c", "u", 10, 1, "msg_2"),
            deliver("a", "u", 20, 2, "msg_3"),
            deliver("c", "u", 20, 2, "msg_4"),
            fin(0, 0),
        ]);
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!((r.acknowledged, r.applied, r.refused, r.duplicates), (2, 5, 1, 1));
        assert_eq!((r.deliveries, r.incomplete), (7, 1));
        assert_eq!(r.accounts, 3);
        // Coalesced: update 1 reaches c only as update 2 ...
        let r = run(vec![
            base(),
            deliver("b", "u", 10, 1, "msg_1"),
            deliver("a", "u", 20, 2, "msg_3"),
            deliver("c", "u", 20, 2, "msg_4"),
            fin(0, 0),
        ]);
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.coalesced, 1);
    }

    /// Proves two committed updates of one user with one revision fail
    /// (Herald gives every update its own revision, batched ones too): an
    /// acknowledged one and an indeterminate one delivered with the same
    /// revision are reported, whichever value the receivers end on.
    #[test]
    fn checker_outbox_updates_sharing_a_revision_fail() {
        let two = || {
            [bind(0, "u", "a"), bind(0, "u", "b"), bind(0, "u", "c")]
                .concat()
                .into_iter()
                .chain(set(0, "u", "a", 1, Info, None))
                .chain(set(1, "u", "b", 2, Ok, Some(20)))
                .collect::<Vec<Row>>()
        };
        for last in [1, 2] {
            let r = run(vec![
                two(),
                deliver("b", "u", 20, 1, "m1"),
                deliver("a", "u", 20, 2, "m2"),
                deliver("c", "u", 20, last, "m3"),
            ]);
            assert_eq!((r.valid, r.unexpected_count), (Verdict::Invalid, 1), "{last}: {r:?}");
            assert!(r.unexpected[0].why.contains("share revision 20"), "{:?}", r.unexpected);
        }
    }

    /// u bound to a, b and c: update 1 from b (rev 10), then update 2 from
    /// a itself (rev 20), both acknowledged; b and c got update 2.
    fn sourced_at_target() -> Vec<Vec<Row>> {
        vec![
            [bind(0, "u", "a"), bind(0, "u", "b"), bind(0, "u", "c")].concat(),
            set(0, "u", "b", 1, Ok, Some(10)),
            set(1, "u", "a", 2, Ok, Some(20)),
            deliver("b", "u", 20, 2, "m2"),
            deliver("c", "u", 20, 2, "m3"),
            fin(0, 0),
        ]
    }

    /// Proves the source rule excuses exactly what it should: a target that
    /// was itself the source of a newer update needs no delivery of the
    /// older one (update 1 never reached a: excused, and a ends on its own
    /// update 2); an older delivery arriving after its own newer update
    /// (an item in flight) does not make it stale.
    #[test]
    fn checker_outbox_target_that_sourced_a_newer_update_is_excused() {
        let r = run(sourced_at_target());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!((r.excused_by_source, r.lost_count, r.stale_count), (1, 0, 0));
        assert_eq!(r.coalesced, 1, "c got update 1 only as update 2");
        let r = run([sourced_at_target(), vec![deliver("a", "u", 10, 1, "m1")]].concat());
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.excused_by_source, 0, "a got update 1 after all");
    }

    /// Proves the source rule does not hide a loss: when a was the source
    /// only of an *older* update (rev 5), or of a newer one whose outcome
    /// is unknown and that no delivery proves (no revision to order by),
    /// update 1 not reaching a is lost and a ends stale.
    #[test]
    fn checker_outbox_source_rule_still_finds_a_lost_update() {
        let older = vec![
            [bind(0, "u", "a"), bind(0, "u", "b"), bind(0, "u", "c")].concat(),
            set(0, "u", "a", 7, Ok, Some(5)),
            set(1, "u", "b", 1, Ok, Some(10)),
            deliver("b", "u", 5, 7, "m0"),
            deliver("c", "u", 10, 1, "m1"),
            fin(0, 0),
        ];
        let r = run(older);
        assert_eq!((r.valid, r.lost_count, r.stale_count), (Verdict::Invalid, 1, 1), "{r:?}");
        assert_eq!((r.lost[0].module.as_str(), r.lost[0].value), ("a", Some(1)));
        assert_eq!((r.stale[0].got_value, r.stale[0].got_revision), (Some(7), Some(5)));
        assert_eq!(r.excused_by_source, 0);
        let unknown = vec![
            [bind(0, "u", "a"), bind(0, "u", "b"), bind(0, "u", "c")].concat(),
            set(0, "u", "b", 1, Ok, Some(10)),
            set(1, "u", "a", 2, Info, None),
            deliver("c", "u", 10, 1, "m1"),
            fin(0, 0),
        ];
        let r = run(unknown);
        assert_eq!((r.valid, r.lost_count, r.excused_by_source), (Verdict::Invalid, 1, 0));
        assert_eq!(r.lost[0].module, "a");
    }

    /// Proves a lost update fails the check: update 2 was acknowledged but
    /// never reached c (c ends on update 1: stale too).
    #[test]
    fn checker_outbox_finds_a_lost_update() {
        let r = run(vec![
            base(),
            deliver("b", "u", 10, 1, "msg_1"),
            deliver("c", "u", 10, 1, "msg_2"),
            deliver("a", "u", 20, 2, "msg_3"),
            fin(0, 0),
        ]);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.lost_count, 1);
        assert_eq!((r.lost[0].module.as_str(), r.lost[0].value), ("c", Some(2)));
        assert_eq!(r.stale_count, 1);
        assert_eq!((r.stale[0].got_value, r.stale[0].got_revision), (Some(1), Some(10)));
    }

    /// Proves a receiver left on an older value fails: an indeterminate
    /// update 3 (rev 30, from c) reached a but not b; a's later delivery
    /// proves it committed, so b must have it too.
    #[test]
    fn checker_outbox_finds_a_receiver_left_on_an_older_value() {
        let r = run(vec![
            base(),
            set(2, "u", "c", 3, Info, None),
            deliver("b", "u", 10, 1, "msg_1"),
            deliver("a", "u", 20, 2, "msg_3"),
            deliver("c", "u", 20, 2, "msg_4"),
            deliver("a", "u", 30, 3, "msg_5"),
            fin(0, 0),
        ]);
        assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
        assert_eq!(r.indeterminate_delivered, 1);
        assert_eq!(r.stale_count, 1);
        assert_eq!(r.stale[0].module, "b");
        // b holds its own update 2 (rev 20), newer than update 1 it applied.
        assert_eq!((r.stale[0].value, r.stale[0].got_value), (Some(3), Some(2)));
    }

    /// Proves deliveries that no update explains fail: a failed update's
    /// value, one sent back to its source, one with another revision than
    /// acknowledged; and a bad signature and a dead item fail too.
    #[test]
    fn checker_outbox_finds_unexpected_deliveries_bad_signatures_and_dead_items() {
        let ok = vec![
            base(),
            deliver("b", "u", 10, 1, "msg_1"),
            deliver("c", "u", 20, 2, "msg_4"),
            deliver("a", "u", 20, 2, "msg_3"),
        ];
        let with = |extra: Vec<Vec<Row>>| run([ok.clone(), extra].concat());
        assert_eq!(with(vec![fin(0, 0)]).valid, Verdict::Valid);
        let r = with(vec![set(3, "u", "a", 4, Fail, None), deliver("b", "u", 40, 4, "m9")]);
        assert_eq!((r.valid, r.unexpected_count), (Verdict::Invalid, 1));
        let r = with(vec![deliver("a", "u", 10, 1, "m9")]);
        assert_eq!(r.unexpected[0].why, "delivered to its own source");
        let r = with(vec![deliver("c", "u", 11, 1, "m9")]);
        assert_eq!(r.unexpected[0].why, "acknowledged with revision 10");
        let r = with(vec![deliver_with("c", "u", 20, 2, "m9", false, 200)]);
        assert_eq!((r.valid, r.bad_signature_count), (Verdict::Invalid, 1));
        assert_eq!(with(vec![fin(0, 1)]).valid, Verdict::Invalid);
    }
}

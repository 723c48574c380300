//! After the final heal, the master settles on the lowest-numbered running
//! voter and every running member agrees on it.
//!
//! The harness polls every running node after healing (status ops from
//! `from_ns` on, see `FinalParams`). After each completion the latest answer
//! of every node is judged ("settled"):
//! - exactly one node says `state: leader` (L); its membership gives the
//!   voters and learners;
//! - every running member of that membership answered its latest poll and
//!   names L as leader;
//! - L is the lowest-numbered voter that is running.
//!
//! Valid when the final stretch of settled points starts no later than
//! `master_deadline_ns` and lasts at least `stable_ns`; invalid when the
//! observations run past the deadline without that; unknown when they stop
//! too early to say (an interrupted run).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::status::{observations, Status};
use super::{CheckerResult, Verdict};
use crate::history::Op;
use crate::report::{esc, json_table, ms};
use crate::sntp::Sample;

/// The final phase as the run set it up (stored in run.json as
/// `master_final`). Times are ns since test start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalParams {
    /// When healing was done; only observations invoked after it count.
    pub from_ns: u64,
    /// The master must have settled by then…
    pub master_deadline_ns: u64,
    /// …and every clock by then.
    pub clock_deadline_ns: u64,
    /// …and stayed so for this long.
    pub stable_ns: u64,
    /// Node numbers running after the heal.
    pub running: Vec<u64>,
    /// The SUT's `<time tolerance-ms>`.
    pub tolerance_ms: f64,
    /// Extra slack on the harness' own SNTP skew measurement.
    pub sntp_slack_ms: f64,
    /// How the deadlines were derived (for the report).
    #[serde(default)]
    pub note: String,
}

/// The judged state at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub leader: u64,
    /// Running members: the nodes that must agree.
    pub judged: Vec<u64>,
    /// Running nodes outside the leader's membership (not judged).
    pub outside: Vec<u64>,
}

/// Judges the latest answer of every running node (None: its latest poll
/// failed). Err says why it is not settled.
pub fn master_state(
    latest: &BTreeMap<u64, Option<Status>>,
    running: &[u64],
) -> Result<Settled, String> {
    let leaders: Vec<&Status> = latest.values().flatten().filter(|s| s.is_leader()).collect();
    let l = match leaders.as_slice() {
        [] => return Err("no node says it is leader".into()),
        [one] => *one,
        many => {
            return Err(format!(
                "{} all say they are leader",
                many.iter()
                    .map(|s| format!("n{} (term {})", s.node, s.term))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let member = |n: &u64| l.voters.contains(n) || l.learners.contains(n);
    let judged: Vec<u64> = running.iter().copied().filter(member).collect();
    let outside: Vec<u64> = running.iter().copied().filter(|n| !member(n)).collect();
    for n in &judged {
        match latest.get(n) {
            None => return Err(format!("n{n} not polled yet")),
            Some(None) => return Err(format!("n{n} did not answer")),
            Some(Some(s)) if s.leader != Some(l.node) => {
                return Err(format!(
                    "n{n} names leader {} (n{} leads term {})",
                    s.leader.map(|x| format!("n{x}")).unwrap_or("none".into()),
                    l.node,
                    l.term
                ))
            }
            _ => {}
        }
    }
    let expected = l.voters.iter().copied().filter(|v| running.contains(v)).min();
    if expected != Some(l.node) {
        return Err(format!(
            "leader is n{}, lowest running voter is {}",
            l.node,
            expected.map(|x| format!("n{x}")).unwrap_or("none".into())
        ));
    }
    Ok(Settled { leader: l.node, judged, outside })
}

/// A node's latest answer at the end of the final phase. (Read back:
/// `Silent` first, as it alone has `answer`; an answer's fields other than
/// `node` default, as results.json of older runs had fewer.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FinalView {
    /// Its latest poll failed (`"answer": null`).
    Silent { node: u64, answer: () },
    Answered {
        node: u64,
        #[serde(default)]
        term: u64,
        leader: Option<u64>,
        #[serde(default)]
        state: String,
        #[serde(default)]
        voters: Vec<u64>,
        in_tolerance: Option<bool>,
        offset_ms: Option<f64>,
        time_master: Option<u64>,
        clock_error: Option<String>,
        sntp: Option<Sample>,
    },
}

/// results.json `master-final` (and run.json `master_final.master`).
/// (`serde(default)`: results.json of older runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterFinal {
    pub valid: Verdict,
    /// The lowest running voter that leads at the end (when settled).
    pub leader: Option<u64>,
    /// ms from healing to the start of the final settled stretch.
    pub settled_after_ms: Option<f64>,
    pub deadline_after_ms: f64,
    /// ms the final settled stretch was observed.
    pub stable_ms: f64,
    /// Why not settled, at the last point that was not.
    pub last_unsettled: Option<String>,
    pub outside_membership: Vec<u64>,
    /// Every node's latest answer.
    pub final_views: Vec<FinalView>,
    pub points: usize,
    pub reason: String,
    /// How the deadline was derived (`FinalParams::note`); set in
    /// results.json, not in run.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_rule: Option<String>,
}

/// The latest answer of each node (None: its latest poll failed).
pub type Latest = BTreeMap<u64, Option<Status>>;

/// Walks the final-phase observations, calling `judge` on the latest answer
/// of every running node after each completion. Returns, per point,
/// (time, judged result), and the latest map at the end.
pub fn walk<T>(
    hist: &[Op],
    p: &FinalParams,
    mut judge: impl FnMut(&Latest) -> T,
) -> (Vec<(u64, T)>, Latest) {
    let mut latest: Latest = BTreeMap::new();
    let mut points = Vec::new();
    for o in observations(hist) {
        if o.invoke.time < p.from_ns || !p.running.contains(&o.node) {
            continue;
        }
        let Some(c) = o.complete else { continue };
        latest.insert(o.node, o.status.clone());
        points.push((c.time, judge(&latest)));
    }
    (points, latest)
}

/// Start of the final stretch of points where `ok` holds (None if the last
/// point does not hold), and the last failing point's reason.
pub fn final_stretch<T>(points: &[(u64, Result<T, String>)]) -> (Option<u64>, Option<String>) {
    let mut start = None;
    let mut last_err = None;
    for (t, r) in points {
        match r {
            Ok(_) => {
                if start.is_none() {
                    start = Some(*t);
                }
            }
            Err(e) => {
                start = None;
                last_err = Some(e.clone());
            }
        }
    }
    (start, last_err)
}

/// The verdict for a stretch starting at `start` judged against `deadline`.
pub fn judge_stretch(
    start: Option<u64>,
    end: u64,
    deadline: u64,
    stable: u64,
) -> (Verdict, String) {
    match start {
        Some(s) if s <= deadline && end - s >= stable => {
            (Verdict::Valid, "settled in time and stayed so".into())
        }
        Some(s) if s > deadline => (Verdict::Invalid, "settled only after the deadline".into()),
        Some(_) if end >= deadline + stable => {
            (Verdict::Invalid, "not stable for the required time".into())
        }
        Some(_) => (Verdict::Unknown, "settled, but observed too briefly (run cut short?)".into()),
        None if end >= deadline => (Verdict::Invalid, "not settled at the deadline".into()),
        None => (Verdict::Unknown, "observations stop before the deadline".into()),
    }
}

pub fn final_views(latest: &BTreeMap<u64, Option<Status>>) -> Vec<FinalView> {
    latest
        .iter()
        .map(|(&node, s)| match s {
            Some(s) => FinalView::Answered {
                node,
                term: s.term,
                leader: s.leader,
                state: s.state.clone(),
                voters: s.voters.clone(),
                in_tolerance: s.in_tolerance,
                offset_ms: s.offset_ms,
                time_master: s.time_master,
                clock_error: s.clock_error.clone(),
                sntp: s.sntp,
            },
            None => FinalView::Silent { node, answer: () },
        })
        .collect()
}

pub fn check(hist: &[Op], p: &FinalParams) -> MasterFinal {
    let (points, latest) = walk(hist, p, |l| master_state(l, &p.running));
    let end = points.last().map(|(t, _)| *t).unwrap_or(p.from_ns);
    let (start, last_err) = final_stretch(&points);
    let (valid, reason) = judge_stretch(start, end, p.master_deadline_ns, p.stable_ns);
    let settled = points.last().and_then(|(_, r)| r.as_ref().ok());
    let ms = |ns: u64| ns as f64 / 1e6;
    MasterFinal {
        valid,
        leader: settled.map(|s| s.leader),
        settled_after_ms: start.map(|s| ms(s.saturating_sub(p.from_ns))),
        deadline_after_ms: ms(p.master_deadline_ns - p.from_ns),
        stable_ms: start.map(|s| ms(end - s)).unwrap_or(0.0),
        last_unsettled: last_err,
        outside_membership: settled.map(|s| s.outside.clone()).unwrap_or_default(),
        final_views: final_views(&latest),
        points: points.len(),
        reason,
        deadline_rule: None,
    }
}

impl CheckerResult for MasterFinal {
    fn name(&self) -> &'static str {
        "master-final"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        match self.leader {
            Some(l) if self.valid == Verdict::Valid => format!(
                "n{l} (lowest running voter) leads, all agree: settled {} after heal (deadline {})",
                ms(self.settled_after_ms),
                ms(Some(self.deadline_after_ms))
            ),
            _ => format!(
                "{}; last: {} (deadline {} after heal)",
                self.reason,
                self.last_unsettled.as_deref().unwrap_or("-"),
                ms(Some(self.deadline_after_ms))
            ),
        }
    }

    fn html_section(&self) -> String {
        format!(
            "<h3>After healing: master</h3><p>valid: {} — {} (deadline rule: {}). Latest answer of every node:</p>{}",
            self.valid.as_str(),
            esc(&self.reason),
            esc(self.deadline_rule.as_deref().unwrap_or("")),
            json_table(&self.final_views)
        )
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::checker::status::tests::{status_hist, sv};
    use serde_json::{json, Value};

    pub fn params(running: &[u64]) -> FinalParams {
        FinalParams {
            from_ns: 1_000_000_000,
            master_deadline_ns: 5_000_000_000,
            clock_deadline_ns: 8_000_000_000,
            stable_ns: 1_000_000_000,
            running: running.to_vec(),
            tolerance_ms: 5.0,
            sntp_slack_ms: 5.0,
            note: String::new(),
        }
    }

    fn round(t: u64, leader: u64, nodes: &[u64]) -> Vec<(u64, u64, Option<Value>)> {
        nodes
            .iter()
            .map(|&n| {
                let state = if n == leader { "leader" } else { "follower" };
                (t + n, n, Some(sv(n, 8, Some(leader), state)))
            })
            .collect()
    }

    fn rounds(
        from_ms: u64,
        to_ms: u64,
        leader: u64,
        nodes: &[u64],
    ) -> Vec<(u64, u64, Option<Value>)> {
        (from_ms..to_ms).step_by(200).flat_map(|t| round(t, leader, nodes)).collect()
    }

    /// Proves the normal case is valid: after the heal n2 leads for a while,
    /// then leadership moves to n1 (the lowest voter) before the deadline and
    /// stays; observations before the heal are ignored.
    #[test]
    fn checker_master_final_moves_to_lowest_is_valid() {
        let mut rows = round(0, 3, &[1, 2, 3]); // before from_ns: ignored
        rows.extend(rounds(1000, 3000, 2, &[1, 2, 3]));
        rows.extend(rounds(3000, 6000, 1, &[1, 2, 3]));
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.leader, Some(1));
        let after = r.settled_after_ms.unwrap();
        assert!((2000.0..2100.0).contains(&after), "{after}");
    }

    /// Proves a cluster that agrees on a leader that is not the lowest
    /// running voter (n2 while n1 runs) is invalid at the deadline.
    #[test]
    fn checker_master_final_not_lowest_is_invalid() {
        let rows = rounds(1000, 7000, 2, &[1, 2, 3]);
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
        assert!(r.last_unsettled.unwrap().contains("lowest running voter is n1"));
    }

    /// Proves that when n1 is not running, n2 is the right master; and that
    /// a running node outside the membership (n1 removed) is not required
    /// to agree and does not count as the lowest voter.
    #[test]
    fn checker_master_final_lowest_running_voter() {
        let rows = rounds(1000, 4000, 2, &[2, 3]);
        assert_eq!(check(&status_hist(&rows), &params(&[2, 3])).valid, Verdict::Valid);
        // n1 runs but was removed: voters are [2,3] in the leader's view.
        let mut rows: Vec<(u64, u64, Option<Value>)> = Vec::new();
        for t in (1000..4000).step_by(200) {
            for n in [2u64, 3] {
                let mut v = sv(n, 8, Some(2), if n == 2 { "leader" } else { "follower" });
                v["voters"] = json!([2, 3]);
                rows.push((t + n, n, Some(v)));
            }
            rows.push((t + 1, 1, Some(sv(1, 6, None, "candidate"))));
        }
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.outside_membership, vec![1]);
    }

    /// Proves disagreement is not settled: n3 keeps naming n2 while n1
    /// leads; and a node that stops answering is not settled either.
    #[test]
    fn checker_master_final_disagreement_or_silence_is_invalid() {
        let mut rows = Vec::new();
        for t in (1000..7000).step_by(200) {
            rows.push((t + 1, 1, Some(sv(1, 8, Some(1), "leader"))));
            rows.push((t + 2, 2, Some(sv(2, 8, Some(1), "follower"))));
            rows.push((t + 3, 3, Some(sv(3, 7, Some(2), "follower"))));
        }
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid);
        assert!(r.last_unsettled.unwrap().contains("n3 names leader n2"));
        let mut rows = rounds(1000, 7000, 1, &[1, 2]);
        rows.extend((1000..7000).step_by(200).map(|t| (t + 3, 3u64, None)));
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid);
        assert!(r.last_unsettled.unwrap().contains("n3 did not answer"));
    }

    /// Proves settling after the deadline, or flapping away from the lowest
    /// voter after settling, is invalid; and a run cut short before the
    /// deadline is unknown, not valid.
    #[test]
    fn checker_master_final_late_flapping_or_short() {
        let mut rows = rounds(1000, 5200, 2, &[1, 2, 3]);
        rows.extend(rounds(5200, 8000, 1, &[1, 2, 3]));
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
        let mut rows = rounds(1000, 2000, 1, &[1, 2, 3]);
        rows.extend(rounds(2000, 4000, 2, &[1, 2, 3]));
        rows.extend(rounds(4000, 7000, 1, &[1, 2, 3]));
        rows.extend(rounds(7000, 8000, 3, &[1, 2, 3]));
        let r = check(&status_hist(&rows), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Invalid, "{r:?}");
        let r = check(&status_hist(&rounds(1000, 2000, 2, &[1, 2, 3])), &params(&[1, 2, 3]));
        assert_eq!(r.valid, Verdict::Unknown, "{r:?}");
    }
}

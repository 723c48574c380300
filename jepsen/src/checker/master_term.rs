//! At most one master per term (election safety), judged over every status
//! observation of the run.
//!
//! Evidence that node L was master (Raft leader) in term T:
//! - L itself reported `state: "leader"` with `term: T`, or
//! - any node reported `term: T, leader: L` (a node only names a leader for
//!   a term once that leader's vote is committed, i.e. L won T).
//!
//! The history is invalid when one term has evidence for two different
//! leaders: two nodes that each said they lead T, one node naming two
//! leaders for T, or two nodes naming different leaders for T. Every
//! observation is a state that really existed, so time plays no part.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::status::observations;
use super::{CheckerResult, Verdict};
use crate::history::Op;
use crate::report::{esc, json_table, json_text};

/// The first op in which a node gave evidence of a leader for the term.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Witness {
    /// History index of the status completion.
    pub index: u64,
    pub time_ns: u64,
    /// The node that answered.
    pub node: u64,
    /// "I am leader" or "leader is nN".
    pub says: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Violation {
    pub term: u64,
    /// All leaders with evidence in this term.
    pub leaders: Vec<u64>,
    /// What makes it a violation, in words.
    pub why: Vec<String>,
    /// First witness op (completion) for each (reporting node, leader, self-claim).
    pub witnesses: Vec<Witness>,
}

/// results.json `master-term`. (`serde(default)`: results.json of older
/// runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TermResult {
    pub valid: Verdict,
    /// Status ops that completed ok.
    pub observations: usize,
    /// Terms in which some node was seen leading.
    pub terms_with_leader: usize,
    pub max_term: u64,
    /// term → leader, for the last few terms (all of them when short).
    pub leaders: BTreeMap<u64, Vec<u64>>,
    pub violations: Vec<Violation>,
}

#[derive(Default)]
struct Evidence {
    /// leader → first op index where it said it leads.
    self_claims: BTreeMap<u64, (u64, u64)>,
    /// (reporting node, leader) → first op index, time.
    reports: BTreeMap<(u64, u64), (u64, u64)>,
}

pub fn check(hist: &[Op]) -> TermResult {
    let obs = observations(hist);
    let mut by_term: BTreeMap<u64, Evidence> = BTreeMap::new();
    let mut n = 0;
    for o in &obs {
        let Some(s) = &o.status else { continue };
        n += 1;
        let at = o.complete.map(|c| (c.index, c.time)).unwrap_or((0, 0));
        let e = by_term.entry(s.term).or_default();
        if s.is_leader() {
            e.self_claims.entry(s.node).or_insert(at);
        }
        if let Some(l) = s.leader {
            e.reports.entry((s.node, l)).or_insert(at);
        }
    }
    let mut violations = Vec::new();
    let mut leaders_by_term = BTreeMap::new();
    for (&term, e) in &by_term {
        let leaders: BTreeSet<u64> =
            e.self_claims.keys().copied().chain(e.reports.keys().map(|(_, l)| *l)).collect();
        if leaders.is_empty() {
            continue;
        }
        leaders_by_term.insert(term, leaders.iter().copied().collect::<Vec<_>>());
        if leaders.len() < 2 {
            continue;
        }
        let mut why = Vec::new();
        if e.self_claims.len() > 1 {
            why.push(format!(
                "{} each reported state=leader in term {term}",
                names(e.self_claims.keys())
            ));
        }
        let mut per_node: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (node, l) in e.reports.keys() {
            per_node.entry(*node).or_default().push(*l);
        }
        for (node, ls) in &per_node {
            if ls.len() > 1 {
                why.push(format!("n{node} reported leaders {} for term {term}", names(ls.iter())));
            }
        }
        if why.is_empty() {
            why.push(format!(
                "nodes name different leaders for term {term}: {}",
                names(leaders.iter())
            ));
        }
        let witness = |node: u64, (index, time_ns): (u64, u64), says: String| Witness {
            index,
            time_ns,
            node,
            says,
        };
        let mut witnesses: Vec<Witness> = e
            .self_claims
            .iter()
            .map(|(node, at)| witness(*node, *at, "I am leader".into()))
            .collect();
        witnesses.extend(
            e.reports.iter().map(|((node, l), at)| witness(*node, *at, format!("leader is n{l}"))),
        );
        witnesses.sort_by_key(|w| w.index);
        violations.push(Violation { term, leaders: leaders.into_iter().collect(), why, witnesses });
    }
    let terms_with_leader = leaders_by_term.len();
    // Keep the table short in results.json: the last 40 terms, and every
    // violating term.
    let keep: BTreeSet<u64> = leaders_by_term
        .keys()
        .rev()
        .take(40)
        .copied()
        .chain(violations.iter().map(|v| v.term))
        .collect();
    leaders_by_term.retain(|t, _| keep.contains(t));
    TermResult {
        valid: if violations.is_empty() { Verdict::Valid } else { Verdict::Invalid },
        observations: n,
        terms_with_leader,
        max_term: by_term.keys().next_back().copied().unwrap_or(0),
        leaders: leaders_by_term,
        violations,
    }
}

fn names<'a>(it: impl Iterator<Item = &'a u64>) -> String {
    it.map(|n| format!("n{n}")).collect::<Vec<_>>().join(", ")
}

/// At most this many violating terms are listed in the summary…
const SUMMARY_TERMS: usize = 5;
/// …and this many in report.html (results.json has them all).
const HTML_TERMS: usize = 20;

impl CheckerResult for TermResult {
    fn name(&self) -> &'static str {
        "master-term"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        format!(
            "{} status answers, {} terms with a leader (max term {}), {} terms with two leaders",
            self.observations,
            self.terms_with_leader,
            self.max_term,
            self.violations.len()
        )
    }

    fn anomaly_lines(&self) -> Vec<String> {
        let line = |v: &Violation| {
            let witnesses: Vec<String> = v
                .witnesses
                .iter()
                .map(|w| format!("#{} n{} \"{}\"", w.index, w.node, w.says))
                .collect();
            format!("term {}: {} (witness ops {})", v.term, v.why.join("; "), witnesses.join(", "))
        };
        self.violations.iter().take(SUMMARY_TERMS).map(line).collect()
    }

    fn html_section(&self) -> String {
        let mut s = String::new();
        if self.violations.is_empty() {
            return s;
        }
        s.push_str("<h3>Terms with more than one leader</h3>");
        for v in self.violations.iter().take(HTML_TERMS) {
            let _ = write!(
                s,
                "<p>term {}: leaders {} — {}</p>{}",
                v.term,
                esc(&json_text(&v.leaders)),
                esc(&json_text(&v.why)),
                json_table(&v.witnesses)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::status::tests::{status_hist, sv};

    /// Proves a normal history — one leader per term, followers naming it,
    /// leadership moving to n1 in a later term, candidates without a leader,
    /// failed requests — is valid.
    #[test]
    fn checker_master_term_one_leader_per_term_is_valid() {
        let h = status_hist(&[
            (0, 2, Some(sv(2, 3, Some(2), "leader"))),
            (1, 1, Some(sv(1, 3, Some(2), "follower"))),
            (2, 3, Some(sv(3, 3, Some(2), "follower"))),
            (3, 1, Some(sv(1, 4, None, "candidate"))),
            (4, 3, None),
            (5, 1, Some(sv(1, 4, Some(1), "leader"))),
            (6, 2, Some(sv(2, 4, Some(1), "follower"))),
            (7, 2, Some(sv(2, 4, Some(1), "follower"))),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Valid, "{:?}", r.violations);
        assert_eq!(r.observations, 7);
        assert_eq!(r.terms_with_leader, 2);
        assert_eq!(r.leaders[&3], vec![2]);
        assert_eq!(r.leaders[&4], vec![1]);
    }

    /// Proves two nodes that each say they lead the same term are caught,
    /// even seconds apart, with both self-claims as witnesses.
    #[test]
    fn checker_master_term_two_self_declared_leaders_is_invalid() {
        let h = status_hist(&[
            (0, 2, Some(sv(2, 5, Some(2), "leader"))),
            (4000, 3, Some(sv(3, 5, Some(3), "leader"))),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        assert_eq!(r.violations.len(), 1);
        let v = &r.violations[0];
        assert_eq!((v.term, v.leaders.clone()), (5, vec![2, 3]));
        assert!(v.why[0].contains("n2, n3 each reported state=leader"), "{:?}", v.why);
        assert_eq!(v.witnesses.len(), 4);
    }

    /// Proves one node naming two different leaders for one term is caught,
    /// although no node ever said it was leader.
    #[test]
    fn checker_master_term_node_names_two_leaders_is_invalid() {
        let h = status_hist(&[
            (0, 1, Some(sv(1, 9, Some(2), "follower"))),
            (10, 1, Some(sv(1, 9, Some(3), "follower"))),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        assert!(r.violations[0].why.iter().any(|w| w.contains("n1 reported leaders n2, n3")));
    }

    /// Proves two followers naming different leaders for the same term are
    /// caught (the leaders themselves were never observed).
    #[test]
    fn checker_master_term_followers_disagree_is_invalid() {
        let h = status_hist(&[
            (0, 1, Some(sv(1, 2, Some(2), "follower"))),
            (1, 4, Some(sv(4, 2, Some(3), "follower"))),
        ]);
        let r = check(&h);
        assert_eq!(r.valid, Verdict::Invalid);
        assert!(r.violations[0].why[0].contains("different leaders"));
    }
}

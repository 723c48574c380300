//! The typed results of one run's checkers, as results.json stores them,
//! and the trait through which the report has each result render itself:
//! its line in the summary, the anomalies it lists under the summary, its
//! row in the checker table and its section of report.html.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::linear::LinearResult;
use super::master_clock::ClockFinal;
use super::master_final::MasterFinal;
use super::master_monotonic::MonotonicResult;
use super::master_report::ReportResult;
use super::master_term::TermResult;
use super::outbox::OutboxResult;
use super::queue::QueueResult;
use super::run_facts::{CrashesResult, FinalReadsResult, HistoryResult, MessagesFinalResult};
use super::watch::WatchResult;
use super::zone_reads::ZoneReadsResult;
use super::Verdict;

/// A value as JSON, the way results.json has it. Implemented for every
/// serializable type; a supertrait of `CheckerResult`, so that a
/// `&dyn CheckerResult` can still be written out.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

impl<T: Serialize> ToJson for T {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// One checker's result, rendering itself for the report.
pub trait CheckerResult: ToJson {
    /// The checker's key in results.json `checkers`, and its name in the
    /// summary and the checker table.
    fn name(&self) -> &'static str;

    fn verdict(&self) -> Verdict;

    /// The summary's line for this checker, after name and verdict.
    fn summary_line(&self) -> String;

    /// Summary lines about the first anomalies (printed indented, after
    /// every checker's line).
    fn anomaly_lines(&self) -> Vec<String> {
        Vec::new()
    }

    /// The checker's own section of report.html ("" when there is nothing
    /// to show beyond its row in the checker table).
    fn html_section(&self) -> String {
        String::new()
    }

    /// The checker table's compact JSON of the result: all of it but the
    /// lists that have their own section.
    fn table_json(&self) -> Value {
        self.to_json()
    }
}

/// results.json: every checker's result and the merged verdict.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    /// All checkers merged as Jepsen does; unknown when interrupted.
    pub valid: Verdict,
    /// The run was stopped early (Ctrl-C/SIGTERM): the history is partial.
    pub interrupted: bool,
    pub checkers: Checkers,
}

impl Results {
    pub fn new(checkers: Checkers, interrupted: bool) -> Results {
        let mut valid = checkers.all().iter().fold(Verdict::Valid, |v, r| v.merge(r.verdict()));
        if interrupted {
            valid = valid.merge(Verdict::Unknown);
        }
        Results { valid, interrupted, checkers }
    }
}

/// results.json `checkers`: one entry per checker that ran (a checker runs
/// when the history has its kind of ops, or run.json its facts).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkers {
    #[serde(rename = "clock-final", skip_serializing_if = "Option::is_none")]
    pub clock_final: Option<ClockFinal>,
    #[serde(rename = "clock-monotonic", skip_serializing_if = "Option::is_none")]
    pub clock_monotonic: Option<MonotonicResult>,
    #[serde(rename = "clock-report", skip_serializing_if = "Option::is_none")]
    pub clock_report: Option<ReportResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crashes: Option<CrashesResult>,
    #[serde(rename = "final-reads", skip_serializing_if = "Option::is_none")]
    pub final_reads: Option<FinalReadsResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearResult>,
    #[serde(rename = "master-final", skip_serializing_if = "Option::is_none")]
    pub master_final: Option<MasterFinal>,
    #[serde(rename = "master-term", skip_serializing_if = "Option::is_none")]
    pub master_term: Option<TermResult>,
    #[serde(rename = "messages-final", skip_serializing_if = "Option::is_none")]
    pub messages_final: Option<MessagesFinalResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchResult>,
    #[serde(rename = "zone-reads", skip_serializing_if = "Option::is_none")]
    pub zone_reads: Option<ZoneReadsResult>,
}

fn present<'a>(list: &[Option<&'a dyn CheckerResult>]) -> Vec<&'a dyn CheckerResult> {
    list.iter().flatten().copied().collect()
}

fn dyn_ref<T: CheckerResult>(r: &Option<T>) -> Option<&dyn CheckerResult> {
    r.as_ref().map(|r| r as &dyn CheckerResult)
}

impl Checkers {
    /// Every result present, by name: the order of results.json, of the
    /// summary's checker lines and of the checker table.
    pub fn all(&self) -> Vec<&dyn CheckerResult> {
        present(&[
            dyn_ref(&self.clock_final),
            dyn_ref(&self.clock_monotonic),
            dyn_ref(&self.clock_report),
            dyn_ref(&self.crashes),
            dyn_ref(&self.final_reads),
            dyn_ref(&self.history),
            dyn_ref(&self.linear),
            dyn_ref(&self.master_final),
            dyn_ref(&self.master_term),
            dyn_ref(&self.messages_final),
            dyn_ref(&self.outbox),
            dyn_ref(&self.queue),
            dyn_ref(&self.watch),
            dyn_ref(&self.zone_reads),
        ])
    }

    /// The checkers of client ops, in report order (their anomalies first
    /// under the summary, their sections right after the checker table).
    pub fn client(&self) -> Vec<&dyn CheckerResult> {
        present(&[
            dyn_ref(&self.linear),
            dyn_ref(&self.outbox),
            dyn_ref(&self.queue),
            dyn_ref(&self.watch),
            dyn_ref(&self.zone_reads),
        ])
    }

    /// The master and time checkers, in report order (their sections go
    /// under "Master and clocks", after its plots).
    pub fn master(&self) -> Vec<&dyn CheckerResult> {
        present(&[
            dyn_ref(&self.master_term),
            dyn_ref(&self.clock_report),
            dyn_ref(&self.clock_monotonic),
            dyn_ref(&self.master_final),
            dyn_ref(&self.clock_final),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every checker's result, each at its default.
    fn every() -> Checkers {
        Checkers {
            clock_final: Some(Default::default()),
            clock_monotonic: Some(Default::default()),
            clock_report: Some(Default::default()),
            crashes: Some(Default::default()),
            final_reads: Some(Default::default()),
            history: Some(Default::default()),
            linear: Some(Default::default()),
            master_final: Some(Default::default()),
            master_term: Some(Default::default()),
            messages_final: Some(Default::default()),
            outbox: Some(Default::default()),
            queue: Some(Default::default()),
            watch: Some(Default::default()),
            zone_reads: Some(Default::default()),
        }
    }

    /// Proves each result's `name()` is the key results.json stores it
    /// under, and that `all()` lists every checker in results.json's order.
    #[test]
    fn checker_results_names_are_results_json_keys() {
        let c = every();
        let keys: Vec<String> = match c.to_json() {
            Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        };
        let names: Vec<&str> = c.all().iter().map(|r| r.name()).collect();
        assert_eq!(keys, names);
        assert_eq!(names.len(), 14);
        let grouped = c.client().len() + c.master().len();
        assert_eq!(
            grouped, 10,
            "linear, outbox, queue, watch, zone-reads and the five master checkers"
        );
    }

    /// Proves the merged verdict: every checker counts (any invalid is
    /// invalid, else any unknown is unknown), and an interrupted run is at
    /// best unknown.
    #[test]
    fn checker_results_merge_verdicts() {
        let mut c = Checkers::default();
        assert_eq!(Results::new(c.clone(), false).valid, Verdict::Valid);
        assert_eq!(Results::new(c.clone(), true).valid, Verdict::Unknown);
        c.history = Some(HistoryResult { valid: Verdict::Valid, problems: vec![] });
        c.queue = Some(QueueResult { valid: Verdict::Unknown, ..Default::default() });
        assert_eq!(Results::new(c.clone(), false).valid, Verdict::Unknown);
        c.crashes = Some(CrashesResult { valid: Verdict::Invalid, ..Default::default() });
        assert_eq!(Results::new(c, true).valid, Verdict::Invalid);
    }
}

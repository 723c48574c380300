//! The checkers over facts of the run besides the ops themselves: the
//! history's own well-formedness, nodes that exited on their own, the
//! presence workload's final reads and the messages workload's final drain
//! (the last three as run.json recorded them).

use serde::{Deserialize, Serialize};

use super::{CheckerResult, Verdict};
use crate::db::Exit;
use crate::history::{self, Op};
use crate::report::{json_text, ms};
use crate::workload::messages::DrainSummary;
use crate::workload::presence::FinalReads;

/// At most this many well-formedness problems are kept.
const MAX_PROBLEMS: usize = 50;

/// results.json `history`: the history is well-formed (`history::validate`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryResult {
    pub valid: Verdict,
    /// The first problems found.
    pub problems: Vec<String>,
}

pub fn history(hist: &[Op]) -> HistoryResult {
    let problems = history::validate(hist);
    HistoryResult {
        valid: if problems.is_empty() { Verdict::Valid } else { Verdict::Invalid },
        problems: problems.into_iter().take(MAX_PROBLEMS).collect(),
    }
}

impl CheckerResult for HistoryResult {
    fn name(&self) -> &'static str {
        "history"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        format!("{} well-formedness problems", self.problems.len())
    }
}

/// How a node ended on the final SIGTERM (run.json `shutdown`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    pub node: String,
    /// "exit 0", or how else it ended.
    pub status: String,
}

/// results.json `crashes`: no node exited on its own during the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CrashesResult {
    pub valid: Verdict,
    pub exits: Vec<Exit>,
    /// Informational: nodes that did not exit 0 on the final SIGTERM.
    pub unclean_shutdown: Vec<Shutdown>,
}

pub fn crashes(exits: &[Exit], shutdown: &[Shutdown]) -> CrashesResult {
    CrashesResult {
        valid: if exits.is_empty() { Verdict::Valid } else { Verdict::Invalid },
        exits: exits.to_vec(),
        unclean_shutdown: shutdown.iter().filter(|s| s.status != "exit 0").cloned().collect(),
    }
}

impl CheckerResult for CrashesResult {
    fn name(&self) -> &'static str {
        "crashes"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        let mut d = match self.exits.len() {
            0 => "no node exited on its own".to_string(),
            n => format!("{n} unexpected exit(s): {}", json_text(&self.exits)),
        };
        if !self.unclean_shutdown.is_empty() {
            d.push_str(&format!("; not exit 0 on SIGTERM: {}", json_text(&self.unclean_shutdown)));
        }
        d
    }
}

/// results.json `final-reads`: after healing, every key could be read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FinalReadsResult {
    #[serde(default)]
    pub valid: Verdict,
    #[serde(flatten)]
    pub reads: FinalReads,
}

pub fn final_reads(reads: FinalReads) -> FinalReadsResult {
    let valid = if reads.unread.is_empty() { Verdict::Valid } else { Verdict::Invalid };
    FinalReadsResult { valid, reads }
}

impl CheckerResult for FinalReadsResult {
    fn name(&self) -> &'static str {
        "final-reads"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        format!("{}/{} keys read after heal", self.reads.read_ok, self.reads.keys)
    }
}

/// results.json `messages-final`: the final drain. Valid iff every
/// mailbox's `queued` reached 0 (else stored messages could not be
/// delivered after healing).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MessagesFinalResult {
    #[serde(default)]
    pub valid: Verdict,
    #[serde(flatten)]
    pub drain: DrainSummary,
}

pub fn messages_final(drain: DrainSummary) -> MessagesFinalResult {
    let all = drain.mailboxes.iter().all(|m| m.drained);
    MessagesFinalResult { valid: if all { Verdict::Valid } else { Verdict::Invalid }, drain }
}

impl CheckerResult for MessagesFinalResult {
    fn name(&self) -> &'static str {
        "messages-final"
    }

    fn verdict(&self) -> Verdict {
        self.valid
    }

    fn summary_line(&self) -> String {
        let mbs = &self.drain.mailboxes;
        let done = mbs.iter().filter(|m| m.drained).count();
        let left: Vec<String> = mbs
            .iter()
            .filter(|m| !m.drained)
            .map(|m| format!("{} queued {}", m.mailbox, json_text(&m.queued_last)))
            .collect();
        format!(
            "{done}/{} mailboxes drained to queued=0 after heal in {} ({} deliveries){}",
            mbs.len(),
            ms(Some(self.drain.elapsed_ms)),
            mbs.iter().map(|m| m.delivered).sum::<u64>(),
            if left.is_empty() {
                String::new()
            } else {
                format!("; not drained: {}", left.join(", "))
            }
        )
    }
}

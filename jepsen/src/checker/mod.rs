//! Checkers: linearizability (WGL over a register model, per key), the
//! total-queue / mailbox checker, and the master/time invariants (one
//! master per term; after healing, the lowest running voter is master and
//! every clock is back in tolerance; cluster time never goes backwards;
//! a node does not keep claiming a clock it does not have), the watch
//! checker (change feeds against the presence writes), the zone-reads
//! checker (bounded and min_revision reads against the writes' revisions
//! and acknowledgement times), and the profile-sync outbox checker (no
//! acknowledged update lost, receivers converge).

pub mod linear;
pub mod master_clock;
pub mod master_final;
pub mod master_monotonic;
pub mod master_report;
pub mod master_term;
pub mod outbox;
pub mod queue;
pub mod results;
pub mod run_facts;
pub mod status;
pub mod watch;
pub mod zone_reads;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use results::{CheckerResult, Checkers, Results, ToJson};

/// A checker verdict: `true`, `false` or `"unknown"` in JSON, as Jepsen.
/// The default, for a result that does not say, is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    #[default]
    Unknown,
}

impl Verdict {
    /// Jepsen's merge: any false is false, else any unknown is unknown.
    pub fn merge(self, other: Verdict) -> Verdict {
        use Verdict::*;
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Unknown, _) | (_, Unknown) => Unknown,
            _ => Valid,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Valid => "true",
            Verdict::Invalid => "false",
            Verdict::Unknown => "unknown",
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Verdict {
        match v {
            serde_json::Value::Bool(true) => Verdict::Valid,
            serde_json::Value::Bool(false) => Verdict::Invalid,
            _ => Verdict::Unknown,
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Verdict::Valid => s.serialize_bool(true),
            Verdict::Invalid => s.serialize_bool(false),
            Verdict::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Verdict {
    /// `true`, `false`; anything else is unknown (as `from_json`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Verdict::from_json(&serde_json::Value::deserialize(d)?))
    }
}

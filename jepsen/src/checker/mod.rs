//! Checkers: linearizability (WGL over a register model, per key) and the
//! total-queue / mailbox checker.

pub mod linear;
pub mod queue;

use serde::{Serialize, Serializer};

/// A checker verdict: `true`, `false` or `"unknown"` in JSON, as Jepsen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
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

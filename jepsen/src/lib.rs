//! herald-jepsen: a Jepsen-style fault-injection harness for Herald.
//! See jepsen/README.md.

pub mod checker;
pub mod edn;
pub mod history;
pub mod rng;
pub mod schedule;

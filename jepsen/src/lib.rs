//! herald-jepsen: a Jepsen-style fault-injection harness for Herald.
//! See jepsen/README.md. One concern per module.

pub mod checker;
pub mod cli;
pub mod client;
pub mod db;
pub mod edn;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod report;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod sntp;
pub mod workload;
pub mod zones;

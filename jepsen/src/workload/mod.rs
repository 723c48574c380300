//! Workloads. Each one spawns client workers that record ops into the
//! shared history, and names the checkers that judge it. `presence` (a
//! register per uid) exists now; `messages` (a queue per mailbox, checked by
//! `checker::queue`) and master/time invariants are to be added here.

pub mod presence;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Presence,
    All,
}

impl Workload {
    /// The concrete workloads to run, in order.
    pub fn expand(self) -> Vec<Workload> {
        match self {
            Workload::All => vec![Workload::Presence],
            w => vec![w],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Presence => "presence",
            Workload::All => "all",
        }
    }
}

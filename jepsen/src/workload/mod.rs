//! Workloads. Each one spawns client workers that record ops into the
//! shared history, and names the checkers that judge it: `presence` (a
//! register per uid, `checker::linear`) and `master` (status polls of every
//! node, `checker::master_*`). `all` runs both against one cluster at once.
//! `messages` (a queue per mailbox, checked by `checker::queue`) is still
//! to be added here.

pub mod master;
pub mod presence;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Presence,
    Master,
    All,
}

impl Workload {
    /// The concrete workloads that run together (one cluster, one history).
    pub fn parts(self) -> Vec<Workload> {
        match self {
            Workload::All => vec![Workload::Presence, Workload::Master],
            w => vec![w],
        }
    }

    pub fn includes(self, w: Workload) -> bool {
        self.parts().contains(&w)
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Presence => "presence",
            Workload::Master => "master",
            Workload::All => "all",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `all` runs presence and master together, and each single
    /// workload only itself.
    #[test]
    fn workload_all_includes_presence_and_master() {
        assert!(Workload::All.includes(Workload::Presence));
        assert!(Workload::All.includes(Workload::Master));
        assert!(!Workload::Master.includes(Workload::Presence));
        assert_eq!(Workload::Presence.parts(), vec![Workload::Presence]);
    }
}

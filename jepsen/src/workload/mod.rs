//! Workloads. Each one spawns client workers that record ops into the
//! shared history, and names the checkers that judge it: `presence` (a
//! register per uid, `checker::linear`), `master` (status polls of every
//! node, `checker::master_*`) and `messages` (a queue per mailbox:
//! submissions, sessions that receive and acknowledge, a final drain;
//! `checker::queue`), `watch` (the presence workload plus watchers of
//! its uids' change feeds; `checker::watch`) and `outbox` (profile updates
//! delivered to receivers run by the harness; `checker::outbox`). `all`
//! runs presence, master, messages and watch against one cluster at once.

pub mod master;
pub mod messages;
pub mod outbox;
pub mod presence;
pub mod watch;
pub mod zone_reads;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Presence,
    Master,
    Messages,
    /// The presence workload and watchers of its uids.
    Watch,
    Outbox,
    All,
}

impl Workload {
    /// The concrete workloads that run together (one cluster, one history).
    pub fn parts(self) -> Vec<Workload> {
        match self {
            Workload::All => {
                vec![Workload::Presence, Workload::Master, Workload::Messages, Workload::Watch]
            }
            Workload::Watch => vec![Workload::Presence, Workload::Watch],
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
            Workload::Messages => "messages",
            Workload::Watch => "watch",
            Workload::Outbox => "outbox",
            Workload::All => "all",
        }
    }
}

/// Sleeps `d`, or less once `stop` is set (looked at every 50 ms): the
/// workers' paces between operations.
pub(crate) fn sleep_unless(stop: &std::sync::atomic::AtomicBool, d: std::time::Duration) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until && !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(
            (until - std::time::Instant::now()).min(std::time::Duration::from_millis(50)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `all` runs presence, master, messages and watch together, and
    /// each single workload only itself.
    #[test]
    fn workload_all_includes_presence_master_and_messages() {
        assert!(Workload::All.includes(Workload::Presence));
        assert!(Workload::All.includes(Workload::Master));
        assert!(Workload::All.includes(Workload::Messages));
        assert!(Workload::All.includes(Workload::Watch));
        assert!(!Workload::Master.includes(Workload::Presence));
        assert!(!Workload::Presence.includes(Workload::Messages));
        assert_eq!(Workload::Messages.parts(), vec![Workload::Messages]);
        assert_eq!(Workload::Presence.parts(), vec![Workload::Presence]);
    }

    /// Proves `watch` runs the presence writers its watchers follow.
    #[test]
    fn workload_watch_includes_presence() {
        assert_eq!(Workload::Watch.parts(), vec![Workload::Presence, Workload::Watch]);
        assert!(!Workload::Presence.includes(Workload::Watch));
    }
}

//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "herald-jepsen",
    version,
    about = "Jepsen-style fault-injection tests for Herald (heraldd)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

// `Test`'s options are large, but the enum is parsed once at start: boxing
// them would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a test: cluster in network namespaces, workers, nemesis, checkers.
    Test(TestArgs),
    /// Re-check a stored run directory (rewrites results.json and the report).
    Check {
        /// e.g. jepsen/store/presence/latest
        dir: PathBuf,
        /// Seconds per key before the linearizability checker says unknown.
        #[arg(long, default_value_t = 30)]
        checker_time_limit: u64,
    },
    /// Remove leftovers of earlier runs (hj-* namespaces, links, processes).
    Cleanup,
    /// Print the nemesis schedule a seed produces (JSON), without running.
    Schedule {
        #[arg(long, default_value = "partition,kill")]
        nemesis: String,
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        #[arg(long, default_value_t = 10)]
        interval: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    #[arg(long, value_enum, default_value_t = Workload::Presence)]
    pub workload: Workload,
    /// Comma list of partition, kill, pause, clock, member, part-kill,
    /// pause-kill, zone (with --zones); or all (zone excepted) / none. partition+kill adds part-kill, pause+kill
    /// adds pause-kill.
    #[arg(long, default_value = "partition,kill")]
    pub nemesis: String,
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Seconds of the main phase (workers + nemesis).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Client worker threads.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Seed of the nemesis schedule and op mix (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Mean seconds between nemesis flips (start, stop, start, ...).
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Invocations per uid before a worker group moves to a fresh uid.
    #[arg(long, default_value_t = 100)]
    pub ops_per_key: u64,
    /// Target client ops per second, over all workers.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Client request timeout in ms (above the server's 5 s write timeout).
    #[arg(long, default_value_t = 6000)]
    pub timeout_ms: u64,
    /// Seconds to wait for the cluster to agree on a leader after healing.
    #[arg(long, default_value_t = 10)]
    pub recovery: u64,
    /// Seconds per key before the linearizability checker says unknown.
    #[arg(long, default_value_t = 30)]
    pub checker_time_limit: u64,
    /// `<master hold-down-ms>` in the nodes' XML: how long a lower-numbered
    /// voter must be healthy and caught up before leadership moves to it.
    #[arg(long, default_value_t = 1000)]
    pub hold_down_ms: u64,
    /// `<time tolerance-ms>` in the nodes' XML: the clock error a follower
    /// corrects (and the master checkers' tolerance).
    #[arg(long, default_value_t = 5)]
    pub tolerance_ms: u64,
    /// Master workload: ms between two status polls of one node.
    #[arg(long, default_value_t = 150)]
    pub status_ms: u64,
    /// `<raft snapshot-logs>` in the nodes' XML: log entries between
    /// snapshots. Small values make restarted or lagging nodes catch up by
    /// snapshot install (the message state included).
    #[arg(long, default_value_t = 20000)]
    pub snapshot_logs: u64,
    /// Messages workload: mailboxes (uids mbox0, mbox1, ...).
    #[arg(long, default_value_t = 5)]
    pub mailboxes: usize,
    /// Messages workload: writer threads submitting messages.
    #[arg(long, default_value_t = 4)]
    pub msg_writers: usize,
    /// Messages workload: target submissions per second over all writers.
    #[arg(long, default_value_t = 20.0)]
    pub msg_rate: f64,
    /// Messages workload: attempts per submission (the first and retries
    /// with the same idempotency key after indeterminate answers).
    #[arg(long, default_value_t = 3)]
    pub msg_attempts: usize,
    /// Messages workload: seconds the final drain may take after healing.
    #[arg(long, default_value_t = 30)]
    pub drain_s: u64,
    /// Watch workload: watcher threads, each following 2-4 uids at a time.
    #[arg(long, default_value_t = 4)]
    pub watchers: usize,
    /// Zones, the WAN between them and zone reads.
    #[command(flatten)]
    pub zone: crate::zones::ZoneArgs,
    /// Outbox workload: `<profile-sync>` modules (receivers), each account
    /// bound in all of them.
    #[arg(long, default_value_t = 3)]
    pub modules: usize,
    /// Outbox workload: uids (pa0, pa1, ...), shared by the writers.
    #[arg(long, default_value_t = 4)]
    pub accounts: usize,
    /// Outbox workload: writer threads binding and setting profiles.
    #[arg(long, default_value_t = 8)]
    pub outbox_writers: usize,
    /// Outbox workload: target profile updates per second over all writers.
    #[arg(long, default_value_t = 20.0)]
    pub outbox_rate: f64,
    /// Outbox workload: share of requests the receivers answer with 503.
    #[arg(long, default_value_t = 0.1)]
    pub refuse: f64,
    /// heraldd binary (default: heraldd next to this binary, else
    /// <workspace>/target/debug/heraldd).
    #[arg(long)]
    pub heraldd: Option<PathBuf>,
    /// Where runs are stored (default: <workspace>/jepsen/store).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Do not run jepsen/setup.sh when tools are missing.
    #[arg(long)]
    pub no_setup: bool,
}

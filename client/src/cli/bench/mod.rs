//! `herald bench ...`: drives a running cluster (Herald, or etcd for
//! comparison) with a workload and prints throughput, latency percentiles,
//! errors and the memory of every local node process. In the spirit of
//! `nats bench` and `etcdctl check perf`.
//!
//! - [`stats`]: exact percentiles and throughput.
//! - [`procs`]: local processes and their memory, from `/proc`.
//! - [`target`]: Herald or etcd behind one connection type; topology.
//! - [`run`]: the closed-loop client tasks, preload, failover timing.
//! - [`report`]: results, the human table, `bench compare`.
//! - [`procstat`]: CPU time, RssAnon and open-file limits from `/proc`.
//! - [`stream`], [`heartbeat`], [`messages`], [`restart`], [`watch`]: the
//!   workloads of the same names.

pub mod heartbeat;
pub mod messages;
pub mod procs;
pub mod procstat;
pub mod report;
pub mod restart;
pub mod run;
pub mod stats;
pub mod stream;
pub mod target;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use herald_client::ClientError;
use serde::Serialize;

use super::Ctx;
use target::{Cons, EtcdCodec, EtcdTxns, EtcdValue, System};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Login/logout events, each acknowledged once committed; C concurrent clients, B events per request.
    PresenceWrite(Box<RunArgs>),
    /// Queries of --ids random ids (linearizable and local; from a follower and from the leader).
    BatchQuery(Box<RunArgs>),
    /// --read-percent queries, the rest single-event writes.
    Mixed(Box<RunArgs>),
    /// Loads --users users (half online) into a fresh cluster; RSS per node and bytes per user.
    Memory(Box<RunArgs>),
    /// SIGKILLs the leader under write load; time from the kill to the first successful write.
    Failover(Box<RunArgs>),
    /// A status pool pushing batches through --streams PushEventsStream connections, --window batches in flight on each.
    Stream(Box<RunArgs>),
    /// --sessions gateway sessions heartbeating on one node: its CPU, RssAnon per session, and no Raft log growth.
    Heartbeat(Box<RunArgs>),
    /// Messages end to end: send → online delivery → ack, and send → offline store → login → ack.
    Messages(Box<RunArgs>),
    /// Loads --users users, stops a node (SIGTERM), starts it again: time until it serves a linearizable query seeing them.
    Restart(Box<RunArgs>),
    /// --watchers change-feed watchers of --watch-ids uids each, spread over every node, under --clients presence writers: changes delivered/s, commit-to-delivery latency, node CPU per applied entry.
    Watch(Box<RunArgs>),
    /// Side-by-side markdown table of two `--json` outputs (e.g. Herald and etcd) with ratios.
    Compare(CompareArgs),
}

/// Where clients connect.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The leader.
    Leader,
    /// One follower.
    Follower,
    /// Every node, clients spread round-robin.
    All,
    /// One replica (a non-voting member, e.g. in a remote zone).
    Replica,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Leader => "leader",
            Via::Follower => "follower",
            Via::All => "all",
            Via::Replica => "replica",
        }
    }
}

/// Options shared by every workload. Lists are comma-separated; each
/// combination is one run and one row.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// System under test.
    #[arg(long, value_enum, default_value_t = System::Herald)]
    pub target: System,
    /// etcd client endpoints (host:port, comma-separated), with --target etcd. Herald uses --node.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Users the workload spreads over [default: 100000; memory: 1000000].
    #[arg(long, value_name = "N")]
    pub users: Option<u64>,
    /// Concurrent clients, each with its own connection (list) [default: presence-write 1,16,64,256; others 16].
    #[arg(long, value_delimiter = ',', value_name = "C")]
    pub clients: Vec<usize>,
    /// Measured time of each run: 500ms, 10s, 1m. Failover: time after the kill.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Unmeasured time before each run (failover: time before the kill, at least 1s).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Events per write request (presence-write, mixed, failover); messages
    /// per request (messages: >1 uses SendBatch, at most 1,000).
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub batch: usize,
    /// Ids per query (batch-query, mixed).
    #[arg(long, default_value_t = 1000)]
    pub ids: usize,
    /// Read consistency of queries (list) [default: batch-query linearizable,local; mixed linearizable].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub consistency: Vec<Cons>,
    /// With --consistency bounded: the most staleness accepted, ms [default: the node's <reads max-staleness-ms>].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_staleness_ms: Option<u64>,
    /// Node(s) the clients talk to (list) [default: presence-write leader; batch-query follower,leader; mixed all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub via: Vec<Via>,
    /// Share of queries in the mixed workload, in percent.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Do not load the users before batch-query or mixed (they exist already).
    #[arg(long)]
    pub no_preload: bool,
    /// Concurrent clients of the preload and the memory load.
    #[arg(long, default_value_t = 8)]
    pub load_clients: usize,
    /// Events per request of the preload and the memory load [default: Herald 1000; etcd --etcd-txn-ops].
    #[arg(long)]
    pub load_batch: Option<usize>,
    /// Report memory of exactly these local server processes (comma-separated) instead of finding them by port.
    #[arg(long, value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Failover: the leader's pid, when it cannot be found by its port.
    #[arg(long, value_name = "PID")]
    pub leader_pid: Option<u32>,
    /// Give up on one operation after this long (an error; the client then sends its next one) [default: 5s; failover 1s].
    #[arg(long, value_parser = parse_duration)]
    pub op_timeout: Option<Duration>,
    /// Most operations in one etcd txn (etcd's --max-txn-ops, default 128).
    #[arg(long, default_value_t = 128)]
    pub etcd_txn_ops: usize,
    /// HTTP/2 connections each etcd client opens (its txns are spread over them).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub etcd_conns: usize,
    /// How the txns of one etcd query are sent.
    #[arg(long, value_enum, default_value_t = EtcdTxns::Concurrent)]
    pub etcd_txns: EtcdTxns,
    /// How the etcd client encodes and decodes (lean: only the fields used; crate: etcd-client).
    #[arg(long, value_enum, default_value_t = EtcdCodec::Lean)]
    pub etcd_codec: EtcdCodec,
    /// What an etcd put stores (event: the Herald event's protobuf, the size of a Herald login).
    #[arg(long, value_enum, default_value_t = EtcdValue::Event)]
    pub etcd_value: EtcdValue,
    /// stream: PushEventsStream connections (list) [default: 1,2,4].
    #[arg(long, value_delimiter = ',', value_name = "S")]
    pub streams: Vec<usize>,
    /// stream: batches each stream keeps in flight (list) [default: 8].
    #[arg(long, value_delimiter = ',', value_name = "W")]
    pub window: Vec<usize>,
    /// heartbeat: gateway sessions to open on the node.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub sessions: usize,
    /// heartbeat: sessions sharing one HTTP/2 connection (1: one connection each, as real clients).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub sessions_per_conn: usize,
    /// heartbeat: how often each session heartbeats [default: 2/3 of what the gateway's Welcome asks].
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat_every: Option<Duration>,
    /// heartbeat, messages: the cluster's `<auth mode="hmac" key=..>` key, to issue session tokens.
    #[arg(long, env = "HERALD_AUTH_KEY", hide_env_values = true, value_name = "KEY")]
    pub auth_key: Option<String>,
    /// heartbeat, messages: a file holding that key (instead of --auth-key).
    #[arg(long, value_name = "FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// messages: which paths to run (list) [default: online,offline].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub path: Vec<MsgPath>,
    /// messages: bytes of each message body.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub body_bytes: usize,
    /// restart: node number to restart [default: a follower].
    #[arg(long, value_name = "N")]
    pub restart_node: Option<u64>,
    /// restart: shell command that starts the node again [default: its own command line, cwd and environment from /proc].
    #[arg(long, value_name = "CMD")]
    pub restart_cmd: Option<String>,
    /// restart: file the restarted node's output goes to [default: /dev/null].
    #[arg(long, value_name = "FILE")]
    pub restart_log: Option<PathBuf>,
    /// watch: watchers to open, spread over every node (list: one run each, e.g. 0,1000,10000).
    #[arg(long, value_delimiter = ',', value_name = "N")]
    pub watchers: Vec<usize>,
    /// watch: uids each watcher follows (random among --users).
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub watch_ids: usize,
    /// watch: watch streams sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub watches_per_conn: usize,
    /// Worker threads of the benchmark's runtime [default: number of cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The two paths of the messages workload.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MsgPath {
    /// The recipient has a session: send → delivery → ack → the send is answered "delivered".
    Online,
    /// The recipient is offline: send ("stored") → login → delivery → ack.
    Offline,
}

/// `bench compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// `--json` output(s) of the first system (several documents may be concatenated).
    #[arg(long, required = true)]
    pub left: Vec<PathBuf>,
    /// `--json` output(s) of the second system.
    #[arg(long, required = true)]
    pub right: Vec<PathBuf>,
}

/// `500ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let v: f64 =
        num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 1m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn run(ctx: &Ctx, cmd: BenchCommand) -> Result<(), ClientError> {
    // RunArgs is large: the variants box it, so that the CLI's command
    // enum stays small.
    let (workload, args) = match cmd {
        BenchCommand::Compare(a) => return report::compare(ctx, &a),
        BenchCommand::PresenceWrite(a) => (run::Workload::PresenceWrite, a),
        BenchCommand::BatchQuery(a) => (run::Workload::BatchQuery, a),
        BenchCommand::Mixed(a) => (run::Workload::Mixed, a),
        BenchCommand::Memory(a) => (run::Workload::Memory, a),
        BenchCommand::Failover(a) => (run::Workload::Failover, a),
        BenchCommand::Stream(a) => (run::Workload::Stream, a),
        BenchCommand::Heartbeat(a) => (run::Workload::Heartbeat, a),
        BenchCommand::Messages(a) => (run::Workload::Messages, a),
        BenchCommand::Restart(a) => (run::Workload::Restart, a),
        BenchCommand::Watch(a) => (run::Workload::Watch, a),
    };
    let args = *args;
    // The CLI's runtime has one thread; a benchmark wants every core for
    // its clients, so it gets a runtime of its own on its own thread.
    let (node, credential) = (ctx.node.clone(), ctx.credential.clone());
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .map_err(|e| {
                ClientError::InvalidArgument(format!("cannot start the benchmark runtime: {e}"))
            })?;
        rt.block_on(run::bench(workload, &node, &args, &credential))
    });
    let report = handle
        .join()
        .map_err(|_| ClientError::InvalidArgument("benchmark thread panicked".into()))??;
    ctx.out.print(&report, report::human)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    /// Durations take ms, s, m or bare seconds, fractions too; junk and
    /// unknown units are refused.
    #[test]
    fn bench_args_parse_duration() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        for bad in ["", "s", "2h", "-1s", "fast"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    /// The smoke test's command line parses: lists are comma-separated,
    /// `--json` may come after the subcommand.
    #[test]
    fn bench_args_parse_command_line() {
        let c = Cli::try_parse_from([
            "herald",
            "bench",
            "presence-write",
            "--users",
            "200",
            "--clients",
            "1,4",
            "--duration",
            "2s",
            "--json",
        ])
        .unwrap();
        assert!(c.json);
        let Command::Bench(BenchCommand::PresenceWrite(a)) = c.command else {
            panic!("wrong command")
        };
        assert_eq!(
            (a.users, a.clients, a.duration),
            (Some(200), vec![1, 4], Duration::from_secs(2))
        );
        assert_eq!(a.target, System::Herald);
        let c = Cli::try_parse_from([
            "herald",
            "bench",
            "batch-query",
            "--target",
            "etcd",
            "--endpoints",
            "127.0.0.1:1,127.0.0.1:2",
            "--consistency",
            "local",
            "--via",
            "follower,leader",
        ])
        .unwrap();
        let Command::Bench(BenchCommand::BatchQuery(a)) = c.command else {
            panic!("wrong command")
        };
        assert_eq!(a.endpoints.len(), 2);
        assert_eq!(a.consistency, vec![Cons::Local]);
        assert_eq!(a.via, vec![Via::Follower, Via::Leader]);
        assert!(Cli::try_parse_from(["herald", "bench", "mixed", "--read-percent", "101"]).is_err());
    }
}

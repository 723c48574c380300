//! herald-jepsen: see jepsen/README.md. Exit codes: 0 valid, 1 invalid,
//! 2 unknown (or interrupted), 3 the harness could not run.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use herald_jepsen::checker::Verdict;
use herald_jepsen::cli::{Cli, Cmd};
use herald_jepsen::run::{self, TestOpts};
use herald_jepsen::schedule::{self, Family};

fn code(v: Verdict) -> i32 {
    match v {
        Verdict::Valid => 0,
        Verdict::Invalid => 1,
        Verdict::Unknown => 2,
    }
}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<i32> = match cli.cmd {
        Cmd::Test(a) => {
            let seed = a.seed.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() % 1_000_000)
                    .unwrap_or(1)
            });
            let mut command = format!(
                "herald-jepsen test --workload {} --nemesis {} --nodes {} --time-limit {} --concurrency {} --seed {} --interval {} --ops-per-key {} --rate {} --timeout-ms {} --recovery {} --checker-time-limit {} --hold-down-ms {} --tolerance-ms {} --status-ms {} --mailboxes {} --msg-writers {} --msg-rate {} --msg-attempts {} --drain-s {} --snapshot-logs {} --watchers {} --modules {} --accounts {} --outbox-writers {} --outbox-rate {} --refuse {}",
                a.workload.name(), a.nemesis, a.nodes, a.time_limit, a.concurrency, seed, a.interval, a.ops_per_key, a.rate, a.timeout_ms, a.recovery, a.checker_time_limit, a.hold_down_ms, a.tolerance_ms, a.status_ms,
                a.mailboxes, a.msg_writers, a.msg_rate, a.msg_attempts, a.drain_s, a.snapshot_logs, a.watchers,
                a.modules, a.accounts, a.outbox_writers, a.outbox_rate, a.refuse
            );
            command.push_str(&a.zone.command_args());
            let opts = TestOpts {
                workload: a.workload,
                nemesis: a.nemesis,
                nodes: a.nodes,
                time_limit: a.time_limit,
                concurrency: a.concurrency.max(1),
                seed,
                interval: a.interval,
                ops_per_key: a.ops_per_key.max(1),
                rate: a.rate,
                timeout_ms: a.timeout_ms,
                recovery: a.recovery.max(1),
                checker_time_limit: a.checker_time_limit,
                hold_down_ms: a.hold_down_ms,
                tolerance_ms: a.tolerance_ms,
                status_ms: a.status_ms,
                mailboxes: a.mailboxes.max(1),
                msg_writers: a.msg_writers.max(1),
                msg_rate: a.msg_rate,
                msg_attempts: a.msg_attempts.max(1),
                drain_s: a.drain_s.max(1),
                snapshot_logs: a.snapshot_logs.max(1),
                watchers: a.watchers.max(1),
                zone: a.zone.clone(),
                modules: a.modules.clamp(2, 26),
                accounts: a.accounts.max(1),
                outbox_writers: a.outbox_writers.max(1),
                outbox_rate: a.outbox_rate,
                refuse: a.refuse.clamp(0.0, 0.9),
                heraldd: a.heraldd.unwrap_or_else(run::default_heraldd),
                store: a.store.unwrap_or_else(run::default_store),
                no_setup: a.no_setup,
                command,
            };
            run::test(&opts).map(code)
        }
        Cmd::Check { dir, checker_time_limit } => {
            run::check_dir(&dir, checker_time_limit).map(code)
        }
        Cmd::Cleanup => run::cleanup().map(|_| 0),
        Cmd::Schedule { nemesis, nodes, time_limit, interval, seed } => {
            Family::parse_list(&nemesis).map(|f| {
                let s = schedule::generate(seed, &f, nodes, time_limit * 1000, interval * 1000);
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                0
            })
        }
    };
    match result {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(3);
        }
    }
}

//! `bench restart`: time to serve after a restart at `--users` users
//! (default 1,000,000). Loads the users, stops one node with SIGTERM,
//! starts it again, and clocks until it answers a linearizable query that
//! sees the loaded data (the last user loaded and a sample of the others).
//!
//! The node is started again with `--restart-cmd` (a shell command), or by
//! default with its own command line, working directory and environment as
//! `/proc/PID/{cmdline,cwd,environ}` showed them before the stop. The
//! restarted process is left running (its pid is in the result, for
//! whoever started the cluster to stop it).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::report::BenchResult;
use super::run::Rng;
use super::target::{Conn, Cons, NodeInfo, OpError, Topology};
use super::{RunArgs, Via};

/// How long a node may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted node may take to serve before the run fails: a
/// million users replay in seconds; minutes mean it is not coming back.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the restarted node is asked.
const POLL: Duration = Duration::from_millis(20);
/// Loaded users the probe query names beside the last one.
const PROBE_USERS: usize = 100;

/// How to start the node again.
#[derive(Debug, Clone, PartialEq)]
pub enum Relaunch {
    Shell(String),
    Exec { argv: Vec<String>, cwd: PathBuf, env: Vec<(String, String)> },
}

/// Splits a NUL-separated `/proc` file (cmdline, environ).
pub fn nul_fields(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// The command line, working directory and environment of `pid`.
pub fn relaunch_of(pid: u32) -> Result<Relaunch, OpError> {
    let read = |what: &str| {
        fs::read(format!("/proc/{pid}/{what}")).map_err(|e| {
            OpError::new(
                "no_cmdline",
                format!("cannot read /proc/{pid}/{what}: {e} (pass --restart-cmd)"),
            )
        })
    };
    let argv = nul_fields(&read("cmdline")?);
    if argv.is_empty() {
        return Err(OpError::new("no_cmdline", format!("process {pid} has no command line")));
    }
    let env = nul_fields(&read("environ")?)
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let cwd = fs::read_link(format!("/proc/{pid}/cwd"))
        .map_err(|e| OpError::new("no_cmdline", format!("cannot read /proc/{pid}/cwd: {e}")))?;
    Ok(Relaunch::Exec { argv, cwd, env })
}

fn signal(pid: u32, sig: &str) -> Result<(), OpError> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| OpError::new("kill_failed", e.to_string()))?;
    if st.success() {
        Ok(())
    } else {
        Err(OpError::new("kill_failed", format!("kill -{sig} {pid}: {st}")))
    }
}

fn spawn(r: &Relaunch, log: Option<&PathBuf>) -> Result<u32, OpError> {
    use std::os::unix::process::CommandExt;
    let mut cmd = match r {
        Relaunch::Shell(s) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("exec {s}"));
            c
        }
        Relaunch::Exec { argv, cwd, env } => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]).current_dir(cwd).env_clear().envs(env.iter().cloned());
            c
        }
    };
    let out =
        match log {
            Some(p) => {
                Stdio::from(fs::OpenOptions::new().create(true).append(true).open(p).map_err(
                    |e| OpError::new("invalid_argument", format!("{}: {e}", p.display())),
                )?)
            }
            None => Stdio::null(),
        };
    let err = match log {
        Some(p) => Stdio::from(
            fs::OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(|e| OpError::new("invalid_argument", format!("{}: {e}", p.display())))?,
        ),
        None => Stdio::null(),
    };
    // Its own process group: a Ctrl-C of the benchmark does not stop it.
    let child =
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0).spawn().map_err(|e| {
            OpError::new("restart_failed", format!("cannot start the node again: {e}"))
        })?;
    Ok(child.id())
}

/// Loads, restarts the chosen node and clocks it; `load` has run already.
pub async fn run(topo: &Topology, a: &RunArgs, users: u64) -> Result<BenchResult, OpError> {
    let node: NodeInfo = match a.restart_node {
        Some(n) => topo.nodes.iter().find(|x| x.number == n).cloned(),
        None if a.via.first() == Some(&Via::Leader) => topo.leader().cloned(),
        None => topo.followers().first().map(|n| (*n).clone()),
    }
    .ok_or_else(|| OpError::new("no_node", "no such node to restart"))?;
    let pid = node.pid.ok_or_else(|| {
        OpError::new(
            "no_pid",
            format!("cannot find the local process of node {} ({})", node.number, node.addr),
        )
    })?;
    let relaunch = match &a.restart_cmd {
        Some(c) => Relaunch::Shell(c.clone()),
        None => relaunch_of(pid)?,
    };
    // The probe: the last user loaded (the sentinel, written after all the
    // others) and a sample of the rest.
    let mut probe = Rng::new(users).distinct(PROBE_USERS.min(users as usize), users);
    probe.push(users);

    let t_term = Instant::now();
    signal(pid, "TERM")?;
    while !super::procstat::exited(pid) {
        if t_term.elapsed() > STOP_TIMEOUT {
            signal(pid, "KILL")?;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stop_ms = t_term.elapsed().as_secs_f64() * 1000.0;
    let t_start = Instant::now();
    let new_pid = spawn(&relaunch, a.restart_log.as_ref())?;
    let mut attempts = 0u64;
    let mut last_err = String::new();
    let serve_ms = loop {
        if t_start.elapsed() > SERVE_TIMEOUT {
            return Err(OpError::new(
                "restart_timeout",
                format!(
                    "node {} (pid {new_pid}) did not serve within {SERVE_TIMEOUT:?}: {last_err}",
                    node.number
                ),
            ));
        }
        attempts += 1;
        let once = async {
            let mut c = Conn::open(topo, &node.addr).await?;
            c.query(&probe, Cons::Linearizable).await
        };
        match tokio::time::timeout(Duration::from_secs(2), once).await {
            Ok(Ok(found)) if found == probe.len() => {
                break t_start.elapsed().as_secs_f64() * 1000.0
            }
            Ok(Ok(found)) => last_err = format!("{found} of {} probe users found", probe.len()),
            Ok(Err(e)) => last_err = format!("{}: {}", e.code, e.message),
            Err(_) => last_err = "no answer within 2 s".into(),
        }
        tokio::time::sleep(POLL).await;
    };
    let mut r = BenchResult::new(topo.system, "restart");
    r.via = if node.leader { "leader" } else { "follower" }.into();
    r.users = users;
    r.clients = 1;
    r.ops = 1;
    r.restarted_pid = Some(new_pid);
    r.measure("SIGTERM → exit ms", stop_ms);
    r.measure("start → serving ms", serve_ms);
    r.measure("probe attempts", attempts as f64);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc's NUL-separated files split into their fields, the trailing
    /// NUL giving no empty field.
    #[test]
    fn bench_restart_nul_fields() {
        assert_eq!(
            nul_fields(b"/bin/heraldd\0-c\0n 1.xml\0"),
            vec!["/bin/heraldd", "-c", "n 1.xml"]
        );
        assert!(nul_fields(b"").is_empty());
    }

    /// Our own process relaunches as itself: same program, same directory,
    /// its environment.
    #[test]
    fn bench_restart_relaunch_of_self() {
        let Relaunch::Exec { argv, cwd, env } = relaunch_of(std::process::id()).unwrap() else {
            panic!("not exec")
        };
        assert_eq!(
            PathBuf::from(&argv[0]).file_name(),
            std::env::current_exe().unwrap().file_name()
        );
        assert_eq!(cwd, std::env::current_dir().unwrap());
        assert!(env.iter().any(|(k, _)| k == "PATH" || k == "HOME"), "{env:?}");
    }
}

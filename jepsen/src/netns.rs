//! Hosts on one machine: one network namespace per node (`hj-n1`, ...), one
//! for the clients (`hj-cl`) and one holding the bridge (`hj-br`) that joins
//! them, all via veth pairs. Node i (0-based) is 10.77.0.(11+i); the client
//! namespace is 10.77.0.100. Partitions are iptables INPUT DROP rules inside
//! the node namespaces (node-to-node only: the client address is never cut).
//!
//! Command builders are pure functions (unit-tested); `run` executes them.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

pub const PREFIX: &str = "hj-";
pub const BRIDGE_NS: &str = "hj-br";
pub const BRIDGE_IF: &str = "hj-br0";
pub const CLIENT_NS: &str = "hj-cl";
pub const CLIENT_IP: &str = "10.77.0.100";
pub const SUBNET_BITS: u8 = 24;

pub fn node_ns(i: usize) -> String {
    format!("hj-n{}", i + 1)
}

pub fn node_ip(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}

pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn cmd(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Commands creating the bridge namespace and one veth-attached namespace
/// per endpoint (nodes, then the client).
pub fn setup_commands(n: usize) -> Vec<Vec<String>> {
    let mut c = vec![
        cmd(&["ip", "netns", "add", BRIDGE_NS]),
        cmd(&["ip", "-n", BRIDGE_NS, "link", "set", "lo", "up"]),
        cmd(&["ip", "-n", BRIDGE_NS, "link", "add", BRIDGE_IF, "type", "bridge"]),
        cmd(&["ip", "-n", BRIDGE_NS, "link", "set", BRIDGE_IF, "up"]),
    ];
    let mut endpoints: Vec<(String, String, String)> =
        (0..n).map(|i| (node_ns(i), node_ip(i), format!("hj-v{}", i + 1))).collect();
    endpoints.push((CLIENT_NS.to_string(), CLIENT_IP.to_string(), "hj-vcl".to_string()));
    for (ns, ip, veth) in endpoints {
        let peer = format!("{veth}-br");
        let addr = format!("{ip}/{SUBNET_BITS}");
        c.push(cmd(&["ip", "netns", "add", &ns]));
        c.push(cmd(&["ip", "-n", &ns, "link", "set", "lo", "up"]));
        c.push(cmd(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer]));
        c.push(cmd(&["ip", "link", "set", &veth, "netns", &ns]));
        c.push(cmd(&["ip", "link", "set", &peer, "netns", BRIDGE_NS]));
        c.push(cmd(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &veth]));
        c.push(cmd(&["ip", "-n", &ns, "link", "set", &veth, "up"]));
        c.push(cmd(&["ip", "-n", BRIDGE_NS, "link", "set", &peer, "master", BRIDGE_IF]));
        c.push(cmd(&["ip", "-n", BRIDGE_NS, "link", "set", &peer, "up"]));
    }
    c
}

/// An iptables-restore ruleset for one node: DROP input from each listed
/// peer address. Restoring it replaces the whole filter table, so applying a
/// new grudge or healing (empty list) is atomic and idempotent.
pub fn ruleset(drop_from: &[String]) -> String {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for ip in drop_from {
        s.push_str(&format!("-A INPUT -s {ip}/32 -j DROP\n"));
    }
    s.push_str("COMMIT\n");
    s
}

/// The iptables-restore invocation for a node namespace (ruleset on stdin).
pub fn restore_command(i: usize) -> Vec<String> {
    cmd(&["ip", "netns", "exec", &node_ns(i), "iptables-restore", "-w"])
}

pub fn run(c: &[String]) -> Result<String> {
    run_stdin(c, None)
}

pub fn run_stdin(c: &[String], input: Option<&str>) -> Result<String> {
    let mut child = Command::new(&c[0])
        .args(&c[1..])
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {:?} (is it installed? see jepsen/setup.sh)", c[0]))?;
    if let Some(text) = input {
        child.stdin.take().unwrap().write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            c.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies per-node drop lists (`drops[i]` = node indices node i ignores).
pub fn apply_grudge(drops: &[Vec<usize>]) -> Result<()> {
    for (i, d) in drops.iter().enumerate() {
        let ips: Vec<String> = d.iter().map(|&j| node_ip(j)).collect();
        run_stdin(&restore_command(i), Some(&ruleset(&ips)))?;
    }
    Ok(())
}

pub fn heal(n: usize) -> Result<()> {
    apply_grudge(&vec![Vec::new(); n])
}

/// Parses `ip netns list` output into names with our prefix.
pub fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Parses `ip -o link show` output into interface names with our prefix.
pub fn parse_link_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with(PREFIX))
        .collect()
}

/// Leftovers from earlier runs: (namespaces, root-namespace links).
pub fn leftovers() -> Result<(Vec<String>, Vec<String>)> {
    let ns = parse_netns_list(&run(&cmd(&["ip", "netns", "list"]))?);
    let links = parse_link_list(&run(&cmd(&["ip", "-o", "link", "show"]))?);
    Ok((ns, links))
}

/// Kills every process inside our namespaces and deletes the namespaces and
/// stray links. Returns what was removed.
pub fn cleanup() -> Result<Vec<String>> {
    let (ns, links) = leftovers()?;
    let mut removed = Vec::new();
    for name in &ns {
        if let Ok(pids) = run(&cmd(&["ip", "netns", "pids", name])) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain kill(2) on a pid found in our namespace.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
                removed.push(format!("process {pid} in {name}"));
            }
        }
    }
    if !ns.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for name in &ns {
        match run(&cmd(&["ip", "netns", "del", name])) {
            Ok(_) => removed.push(format!("netns {name}")),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    // Links vanish with their namespaces; whatever is left was created in the
    // root namespace before being moved.
    let (_, links_now) = leftovers().unwrap_or_default();
    for l in links.into_iter().filter(|l| links_now.contains(l)) {
        if run(&cmd(&["ip", "link", "del", &l])).is_ok() {
            removed.push(format!("link {l}"));
        }
    }
    Ok(removed)
}

pub fn ns_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

pub fn open_ns(ns: &str) -> Result<File> {
    File::open(ns_path(ns)).with_context(|| format!("open network namespace {ns}"))
}

/// Moves the calling thread into the namespace. Threads it spawns afterwards
/// inherit it; other threads are unaffected.
pub fn enter(ns: &str) -> Result<()> {
    let f = open_ns(ns)?;
    // SAFETY: setns(2) on an fd we own; affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(anyhow!("setns({ns}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a short-lived thread inside namespace `ns`.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread in {ns} panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the address plan and that setup wires every endpoint (nodes and
    /// clients) to the bridge with its own address and no name over 15 chars.
    #[test]
    fn netns_setup_commands_wire_every_endpoint() {
        let c = setup_commands(5);
        let joined: Vec<String> = c.iter().map(|v| v.join(" ")).collect();
        for i in 0..5 {
            assert!(joined.contains(&format!(
                "ip -n hj-n{} addr add 10.77.0.{}/24 dev hj-v{}",
                i + 1,
                11 + i,
                i + 1
            )));
            assert!(
                joined.contains(&format!("ip -n hj-br link set hj-v{}-br master hj-br0", i + 1))
            );
        }
        assert!(joined.contains(&"ip -n hj-cl addr add 10.77.0.100/24 dev hj-vcl".to_string()));
        for v in &c {
            for w in v.iter().filter(|w| w.starts_with("hj-")) {
                assert!(w.len() <= 15, "{w}");
            }
        }
    }

    /// Proves a grudge ruleset drops only the listed peers (never the client)
    /// and an empty one heals.
    #[test]
    fn netns_ruleset_drops_listed_peers_only() {
        let r = ruleset(&[node_ip(1), node_ip(2)]);
        assert!(r.contains("-A INPUT -s 10.77.0.12/32 -j DROP"));
        assert!(r.contains("-A INPUT -s 10.77.0.13/32 -j DROP"));
        assert!(!r.contains(CLIENT_IP));
        assert!(r.ends_with("COMMIT\n"));
        assert!(!ruleset(&[]).contains("DROP"));
        assert_eq!(restore_command(0).join(" "), "ip netns exec hj-n1 iptables-restore -w");
    }

    /// Proves leftover detection picks only hj- names from ip's output.
    #[test]
    fn netns_parses_leftovers() {
        let ns = parse_netns_list("hj-n1 (id: 3)\nother\nhj-br (id: 1)\n");
        assert_eq!(ns, vec!["hj-n1", "hj-br"]);
        let links = parse_link_list(
            "1: lo: <LOOPBACK,UP> mtu 65536\n5: hj-v1-br@if6: <BROADCAST> mtu 1500\n7: eth0@if8: <UP> mtu 1500\n",
        );
        assert_eq!(links, vec!["hj-v1-br"]);
    }
}

//! Local server processes, read from Linux `/proc`: which process listens on
//! a TCP port, which processes run a given program, and their memory
//! (`VmRSS`, and `VmHWM`, the peak resident set; `RssAnon` and `RssFile`,
//! its anonymous part — the heap, what a state's size shows in — and its
//! file-backed part).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Memory of one process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mem {
    /// Resident set now (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set since the process started (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Anonymous resident memory (`RssAnon`; kernels before 4.5 have none).
    pub anon_rss_bytes: Option<u64>,
    /// File-backed resident memory (`RssFile`: the binary, mapped files).
    pub file_rss_bytes: Option<u64>,
}

/// `VmRSS` and `VmHWM` of `pid`, or `None` when the process is gone or
/// `/proc` is not readable.
pub fn mem(pid: u32) -> Option<Mem> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

/// Parses the `VmRSS:`, `VmHWM:`, `RssAnon:` and `RssFile:` lines (in kB)
/// of `/proc/<pid>/status`; the first two must be there.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(Mem {
        rss_bytes: field("VmRSS:")?,
        peak_rss_bytes: field("VmHWM:")?,
        anon_rss_bytes: field("RssAnon:"),
        file_rss_bytes: field("RssFile:"),
    })
}

/// Is `host` this machine (loopback or unspecified), so that its processes
/// can be found in our `/proc`?
pub fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.starts_with("127.") || h == "::1" || h == "0.0.0.0" || h == "::"
}

/// The socket inodes listening on TCP `port` (IPv4 and IPv6), from the text
/// of `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn listening_inodes(tables: &[String], port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for t in tables {
        for line in t.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let Some((_, p)) = f[1].rsplit_once(':') else { continue };
            if u16::from_str_radix(p, 16) == Ok(port) {
                if let Ok(inode) = f[9].parse::<u64>() {
                    if inode != 0 {
                        out.push(inode);
                    }
                }
            }
        }
    }
    out
}

/// The process that listens on local TCP `port`, if one of ours (or any,
/// as root) does.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .collect();
    let inodes = listening_inodes(&tables, port);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for pid in pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if wanted.iter().any(|w| Path::new(w) == target) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Every process id in `/proc`.
fn pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else { return Vec::new() };
    let mut v: Vec<u32> =
        rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    v.sort_unstable();
    v
}

/// Processes whose program (first word of the command line, without its
/// directory) is `name`, e.g. `heraldd`.
pub fn pids_named(name: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).map(|c| program_is(&c, name)).unwrap_or(false)
        })
        .collect()
}

/// Whether a NUL-separated `/proc/<pid>/cmdline` runs program `name`.
pub fn program_is(cmdline: &[u8], name: &str) -> bool {
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    argv0.rsplit('/').next() == Some(name)
}

/// Sends SIGKILL to `pid`.
pub fn kill9(pid: u32) -> std::io::Result<()> {
    let st = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -KILL {pid} failed: {st}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VmRSS, VmHWM, RssAnon and RssFile are read in kB and reported in
    /// bytes; a status without RssAnon/RssFile (an old kernel) still has
    /// its VmRSS; one without VmRSS (a kernel thread) gives nothing.
    #[test]
    fn bench_procs_parse_status() {
        let s = "Name:\theraldd\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nRssAnon:\t   30720 kB\nRssFile:\t   10240 kB\nThreads:\t9\n";
        assert_eq!(
            parse_status(s),
            Some(Mem {
                rss_bytes: 40960 * 1024,
                peak_rss_bytes: 51200 * 1024,
                anon_rss_bytes: Some(30720 * 1024),
                file_rss_bytes: Some(10240 * 1024),
            })
        );
        let old = "VmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            parse_status(old),
            Some(Mem {
                rss_bytes: 40960 * 1024,
                peak_rss_bytes: 51200 * 1024,
                anon_rss_bytes: None,
                file_rss_bytes: None,
            })
        );
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    /// Only LISTEN rows (state 0A) on the port count, in tcp and tcp6.
    #[test]
    fn bench_procs_listening_inodes() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1BC7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:1BC7 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n\
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0 100 0 0 10 0\n"
            .to_string();
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:1BC7 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6262 1 0 100 0 0 10 0\n"
            .to_string();
        assert_eq!(listening_inodes(&[tcp.clone(), tcp6], 7111), vec![4242, 6262]);
        assert_eq!(listening_inodes(&[tcp], 8080), vec![5151]);
    }

    /// The program name is argv[0] without its directory, not a substring
    /// of the arguments.
    #[test]
    fn bench_procs_program_name() {
        assert!(program_is(b"/work/target/release/heraldd\0-c\0n1.xml\0", "heraldd"));
        assert!(program_is(b"heraldd\0", "heraldd"));
        assert!(!program_is(b"/usr/bin/herald\0bench\0", "heraldd"));
        assert!(!program_is(b"bash\0-c\0heraldd\0", "heraldd"));
    }

    /// Loopback and unspecified hosts are local, others are not.
    #[test]
    fn bench_procs_local_hosts() {
        for h in ["127.0.0.1", "localhost", "[::1]", "::1", "127.1.2.3"] {
            assert!(is_local_host(h), "{h}");
        }
        for h in ["10.0.0.2", "example.com", "[2001:db8::1]"] {
            assert!(!is_local_host(h), "{h}");
        }
    }

    /// Our own process has a readable status with a non-zero peak.
    #[test]
    fn bench_procs_mem_of_self() {
        let m = mem(std::process::id()).expect("own /proc status");
        assert!(m.peak_rss_bytes >= m.rss_bytes && m.rss_bytes > 0, "{m:?}");
    }
}

//! CPU time and anonymous memory of local processes, from Linux `/proc`,
//! for the workloads that report a server's cost per core or per session
//! (heartbeat) and the benchmark's own CPU beside the servers' (so a
//! client-bound run shows as one), and the open-file limit the benchmark
//! raises for itself.

use std::fs;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/PID/stat`'s times (`USER_HZ`): 100 on
/// every Linux architecture the benchmark runs on (the kernel exports
/// USER_HZ, not its internal HZ, to user space).
pub const CLK_TCK: u64 = 100;

/// User + system CPU time of `pid` (all its threads), or None when gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text).map(|t| Duration::from_millis(t * 1000 / CLK_TCK))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the
/// command name in parentheses may hold spaces, so fields count from the
/// last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The process state letter (R, S, D, Z, ...) of `pid`; None when gone.
pub fn state(pid: u32) -> Option<char> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

/// Whether `pid` has exited (gone, or a zombie its parent has not reaped).
pub fn exited(pid: u32) -> bool {
    matches!(state(pid), None | Some('Z') | Some('X'))
}

/// `RssAnon` of `pid` in bytes (the heap: what sessions or users cost).
pub fn rss_anon(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kb(&text, "RssAnon:").map(|kb| kb * 1024)
}

/// A `Name:  N kB` field of `/proc/PID/status`, in kB.
pub fn status_kb(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU used by a set of processes over an interval, in cores.
pub struct CpuClock {
    pids: Vec<u32>,
    start: Instant,
    used: Vec<Option<Duration>>,
}

impl CpuClock {
    pub fn start(pids: &[u32]) -> Self {
        CpuClock {
            pids: pids.to_vec(),
            start: Instant::now(),
            used: pids.iter().map(|&p| cpu_time(p)).collect(),
        }
    }

    /// Cores used since `start` by all the processes together (None when
    /// none could be read).
    pub fn cores(&self) -> Option<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        let mut sum = 0.0;
        let mut any = false;
        for (p, before) in self.pids.iter().zip(&self.used) {
            if let (Some(b), Some(now)) = (before, cpu_time(*p)) {
                sum += now.saturating_sub(*b).as_secs_f64();
                any = true;
            }
        }
        (any && wall > 0.0).then(|| sum / wall)
    }
}

/// The soft and hard open-file limits of `pid`, from `/proc/PID/limits`.
pub fn nofile_limits(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_nofile(&text)
}

/// The `Max open files` line of `/proc/PID/limits` ("unlimited" = u64::MAX).
pub fn parse_nofile(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let f: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    let v = |s: &str| if s == "unlimited" { Some(u64::MAX) } else { s.parse().ok() };
    Some((v(f.first()?)?, v(f.get(1)?)?))
}

/// Raises this process's open-file limit to at least `want` when it can
/// (soft up to hard; hard too when allowed, e.g. as root, up to the
/// kernel's `fs.nr_open`), with util-linux `prlimit`; returns the soft
/// limit in force afterwards.
pub fn raise_own_nofile(want: u64) -> Option<u64> {
    let me = std::process::id();
    let (soft, hard) = nofile_limits(me)?;
    if soft >= want {
        return Some(soft);
    }
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(hard);
    let target = want.min(nr_open.max(hard));
    for (s, h) in [(target, target.max(hard)), (target.min(hard), hard)] {
        let ok = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(me.to_string())
            .arg(format!("--nofile={s}:{h}"))
            .stderr(std::process::Stdio::null())
            .status()
            .map(|st| st.success())
            .unwrap_or(false);
        if ok {
            break;
        }
    }
    nofile_limits(me).map(|l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are fields 14 and 15, counted after the command
    /// name even when it holds spaces and parentheses.
    #[test]
    fn bench_procstat_parse_stat() {
        let s =
            "4242 (herald d (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 0 0";
        assert_eq!(parse_stat_ticks(s), Some(325));
        assert_eq!(parse_stat_ticks("4242 (short) S 1"), None);
    }

    /// The open-file limit line is read for soft and hard; unlimited is
    /// the largest value.
    #[test]
    fn bench_procstat_parse_nofile() {
        let t = "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max open files            1024                 524288               files\n\
                 Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_nofile(t), Some((1024, 524_288)));
        let u = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(u), Some((u64::MAX, u64::MAX)));
        assert_eq!(parse_nofile("Max processes 1 1\n"), None);
    }

    /// Our own process: its CPU time is readable and grows with work, its
    /// RssAnon is above zero and it is not reported as exited.
    #[test]
    fn bench_procstat_self() {
        let me = std::process::id();
        let clock = CpuClock::start(&[me]);
        let t0 = cpu_time(me).unwrap();
        let mut x = 0u64;
        let spin = Instant::now();
        while cpu_time(me).unwrap() < t0 + Duration::from_millis(30) && spin.elapsed().as_secs() < 5
        {
            x = x.wrapping_add(std::hint::black_box(x) ^ 1);
        }
        assert!(cpu_time(me).unwrap() > t0, "{x}");
        assert!(clock.cores().unwrap() > 0.0);
        assert!(rss_anon(me).unwrap() > 0);
        assert!(!exited(me));
        assert!(exited(u32::MAX));
    }
}

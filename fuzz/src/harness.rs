//! Workers and their supervisor.
//!
//! A worker is this binary run as `herald-fuzz worker`: it fuzzes one target
//! (or replays files through it) on a thread of [`FUZZ_STACK_BYTES`], writing
//! each input to the shared page before running it. The supervisor (the
//! parent: `run`, `repro`) watches the page's run counter and the worker's
//! exit, and turns how the worker ended into an [`Outcome`]: a panic is
//! caught and reported by the worker; an allocation bomb, a stack overflow
//! or any other abort kills the worker, and the page still holds the input;
//! a run that makes no progress for the run timeout is killed.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::alloc::{self, MAX_RUN_ALLOC_BYTES};
use crate::mutate::{Mutator, MAX_INPUT_BYTES};
use crate::rng::Rng;
use crate::shm::{self, Shared, STATUS_OVER_CAP, STATUS_PANIC};
use crate::targets::Target;

/// Stack of the thread that runs targets: a tokio worker thread's default
/// (2 MiB), where the node parses requests and decodes peer messages, so a
/// recursion that would overflow in the node overflows here too.
pub const FUZZ_STACK_BYTES: usize = 2 << 20;

/// A run that makes no progress this long is a hang. The slowest seed (a
/// 20 KiB configuration in a debug build) takes milliseconds; 10 s leaves
/// room for a loaded 2-core CI machine without letting a hang pass.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the supervisor looks at its worker.
const POLL: Duration = Duration::from_millis(20);

/// Exit code of a worker whose target panicked.
pub const EXIT_PANIC: i32 = 70;

/// Crashes kept per target and run: the fuzzer restarts after each, and a
/// shallow bug would otherwise fill the disk with copies of itself.
pub const MAX_CRASHES_PER_TARGET: usize = 8;

/// Why the fuzzer could not do its job (not a crash of a target).
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("unknown target {0:?} (`herald-fuzz list` names them)")]
    UnknownTarget(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("worker of {target} failed: {why}")]
    Worker { target: String, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FuzzError + '_ {
    move |source| FuzzError::Io { path: path.to_path_buf(), source }
}

/// What a worker is to do.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Mutate the corpus for `seconds`; `stream` numbers restarts after a
    /// crash (stream 0 also runs every corpus entry unchanged first).
    Fuzz { seconds: f64, seed: u64, stream: u64, corpus: Vec<Vec<u8>> },
    /// Run each input once, in order.
    Replay { inputs: Vec<Vec<u8>> },
}

/// Runs one input: records it, arms the allocation cap, catches a panic.
/// False: the target panicked (recorded in the page).
pub fn run_one(target: &Target, shared: &Shared, input: &[u8]) -> bool {
    shared.set_input(input);
    alloc::arm(MAX_RUN_ALLOC_BYTES);
    let r = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    shared.note_peak(alloc::disarm() as u64);
    match r {
        // A refused allocation fails the run even when the code coped with
        // the refusal (`try_reserve`, `read_to_end`): without the cap the
        // allocation would have succeeded, or the process run out of memory.
        Ok(()) if shared.status() == STATUS_OVER_CAP => false,
        Ok(()) => {
            shared.add_run();
            true
        }
        Err(_) => {
            if shared.status() != STATUS_OVER_CAP {
                shared.set_status(STATUS_PANIC, 0);
            }
            false
        }
    }
}

/// Per-target salt of the input stream, so targets fuzzed with one seed
/// do not walk in step.
fn stream_rng(seed: u64, target: &Target, stream: u64) -> Rng {
    Rng::new(seed).fork(crate::fnv1a(target.name.as_bytes())).fork(stream)
}

fn work(target: &'static Target, shared: &'static Shared, plan: Plan) -> bool {
    match plan {
        Plan::Replay { inputs } => inputs.iter().all(|i| run_one(target, shared, i)),
        Plan::Fuzz { seconds, seed, stream, corpus } => {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mutator = Mutator::new(corpus, (target.dict)());
            if stream == 0 && !mutator.corpus().iter().all(|c| run_one(target, shared, c)) {
                return false;
            }
            let mut rng = stream_rng(seed, target, stream);
            while Instant::now() < deadline {
                if !run_one(target, shared, &mutator.mutate(&mut rng)) {
                    return false;
                }
            }
            true
        }
    }
}

/// The worker process's body; answers its exit code.
pub fn worker(target: &'static Target, shm_path: &Path, plan: Plan) -> Result<i32, FuzzError> {
    let shared = shm::attach(shm_path).map_err(io_err(shm_path))?;
    // Reporting a panic (message, backtrace symbols) is not the run's own
    // allocation: uncap it, so a panic is never mistaken for a bomb.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        alloc::disarm();
        report(info);
    }));
    let t = std::thread::Builder::new()
        .name(format!("fuzz {}", target.name))
        .stack_size(FUZZ_STACK_BYTES)
        .spawn(move || work(target, shared, plan))
        .map_err(io_err(shm_path))?;
    Ok(match t.join() {
        Ok(true) => 0,
        _ => EXIT_PANIC,
    })
}

/// The files of `dir` (sorted; none if it does not exist).
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, FuzzError> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let p = e.map_err(io_err(dir))?.path();
                if p.is_file() {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    out.sort();
    Ok(out)
}

/// A worker's corpus: the files of `dirs` and the target's built-in seeds,
/// without duplicates, each cut to [`MAX_INPUT_BYTES`].
pub fn load_corpus(target: &Target, dirs: &[PathBuf]) -> Result<Vec<Vec<u8>>, FuzzError> {
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for d in dirs {
        for f in files(d)? {
            corpus.push(std::fs::read(&f).map_err(io_err(&f))?);
        }
    }
    corpus.extend((target.seeds)().into_iter().map(|s| s.bytes));
    for c in &mut corpus {
        c.truncate(MAX_INPUT_BYTES);
    }
    let mut seen = std::collections::HashSet::new();
    corpus.retain(|c| seen.insert(c.clone()));
    Ok(corpus)
}

/// How a failing input failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashKind {
    Panic,
    /// The run tried to hold `bytes` (past the cap) and could not go on.
    AllocationBomb {
        bytes: u64,
    },
    /// The run made no progress for this long.
    Timeout(Duration),
    /// The worker died otherwise (abort, stack overflow).
    Died(String),
}

impl fmt::Display for CrashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashKind::Panic => write!(f, "panic"),
            CrashKind::AllocationBomb { bytes } => write!(
                f,
                "allocation bomb: one run asked to hold {} (cap {})",
                human_bytes(*bytes),
                human_bytes(MAX_RUN_ALLOC_BYTES as u64)
            ),
            CrashKind::Timeout(d) => {
                write!(f, "timeout: one run took over {:.1} s", d.as_secs_f64())
            }
            CrashKind::Died(why) => write!(f, "abort: worker {why}"),
        }
    }
}

/// `n` bytes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A failing input.
#[derive(Debug, Clone)]
pub struct Crash {
    pub kind: CrashKind,
    pub input: Vec<u8>,
    /// Runs the worker completed before this one (in a replay: the index
    /// of the failing input).
    pub index: u64,
}

/// How one worker ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Finished { runs: u64, peak: u64 },
    Crashed { crash: Crash, peak: u64 },
}

/// Starts workers (this same executable) and judges how they end.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub exe: PathBuf,
    pub run_timeout: Duration,
}

/// Removes a file when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Supervisor {
    /// Runs a worker for `target` with `plan`.
    pub fn supervise(&self, target: &Target, plan: &WorkerArgs) -> Result<Outcome, FuzzError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "herald-fuzz-{}-{n}-{}.shm",
            std::process::id(),
            target.name
        ));
        let file: File = shm::create(&path).map_err(io_err(&path))?;
        let _remove = Remove(path.clone());
        let mut child = Command::new(&self.exe)
            .arg("worker")
            .arg("--shm")
            .arg(&path)
            .arg("--target")
            .arg(target.name)
            .args(plan.args())
            .stdin(Stdio::null())
            .spawn()
            .map_err(io_err(&self.exe))?;
        let mut runs = 0;
        let mut progress = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().map_err(io_err(&self.exe))? {
                break Some(s);
            }
            std::thread::sleep(POLL);
            let now_runs = shm::runs(&file).map_err(io_err(&path))?;
            if now_runs != runs {
                runs = now_runs;
                progress = Instant::now();
            } else if progress.elapsed() > self.run_timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        };
        let page = shm::read(&file).map_err(io_err(&path))?;
        let crash = |kind| Outcome::Crashed {
            crash: Crash { kind, input: page.input.clone(), index: page.runs },
            peak: page.peak,
        };
        Ok(match status {
            None => crash(CrashKind::Timeout(self.run_timeout)),
            Some(_) if page.status == STATUS_OVER_CAP => {
                crash(CrashKind::AllocationBomb { bytes: page.detail })
            }
            Some(s) if s.success() => Outcome::Finished { runs: page.runs, peak: page.peak },
            Some(s) if s.code() == Some(EXIT_PANIC) && page.status == STATUS_PANIC => {
                crash(CrashKind::Panic)
            }
            Some(s) if s.signal().is_some() => {
                let sig = s.signal().unwrap_or(0);
                crash(CrashKind::Died(format!("killed by signal {sig} ({})", signal_name(sig))))
            }
            Some(s) => {
                return Err(FuzzError::Worker { target: target.name.into(), why: s.to_string() })
            }
        })
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT: abort, e.g. a stack overflow or a failed allocation",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL: killed from outside, e.g. the OOM killer",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "other",
    }
}

/// A worker's command-line plan (what `herald-fuzz worker` parses back).
#[derive(Debug, Clone)]
pub enum WorkerArgs {
    Fuzz { seconds: f64, seed: u64, stream: u64, corpus_dirs: Vec<PathBuf> },
    Replay { files: Vec<PathBuf> },
}

impl WorkerArgs {
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match self {
            WorkerArgs::Fuzz { seconds, seed, stream, corpus_dirs } => {
                a.extend(["--seconds".into(), seconds.to_string().into()]);
                a.extend(["--seed".into(), seed.to_string().into()]);
                a.extend(["--stream".into(), stream.to_string().into()]);
                for d in corpus_dirs {
                    a.extend(["--corpus".into(), d.clone().into_os_string()]);
                }
            }
            WorkerArgs::Replay { files } => {
                for f in files {
                    a.extend(["--replay".into(), f.clone().into_os_string()]);
                }
            }
        }
        a
    }
}

/// What fuzzing one target found.
#[derive(Debug, Clone, Default)]
pub struct TargetReport {
    pub runs: u64,
    pub elapsed: Duration,
    /// Most bytes one run held at once.
    pub peak: u64,
    /// Saved crash files, with how they failed and whether the file is new.
    pub crashes: Vec<(PathBuf, CrashKind, bool)>,
}

/// Saves a crash as `dir/<fnv1a hex>`; true if the file is new.
pub fn save_crash(dir: &Path, input: &[u8]) -> Result<(PathBuf, bool), FuzzError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(format!("{:016x}", crate::fnv1a(input)));
    let new = !path.exists();
    std::fs::write(&path, input).map_err(io_err(&path))?;
    Ok((path, new))
}

/// Fuzzes `target` for `seconds`, restarting after each crash (saved under
/// `crashes/<target>/`) until time is up or [`MAX_CRASHES_PER_TARGET`].
/// `on_crash` hears of each crash as it is saved.
pub fn fuzz_target(
    sup: &Supervisor,
    target: &Target,
    seconds: f64,
    seed: u64,
    corpus_dirs: Vec<PathBuf>,
    crashes: &Path,
    mut on_crash: impl FnMut(&Path, &CrashKind, bool),
) -> Result<TargetReport, FuzzError> {
    let start = Instant::now();
    let mut report = TargetReport::default();
    for stream in 0.. {
        let left = seconds - start.elapsed().as_secs_f64();
        if (stream > 0 && left <= 0.0) || report.crashes.len() >= MAX_CRASHES_PER_TARGET {
            break;
        }
        let args = WorkerArgs::Fuzz {
            seconds: left.max(0.0),
            seed,
            stream,
            corpus_dirs: corpus_dirs.clone(),
        };
        match sup.supervise(target, &args)? {
            Outcome::Finished { runs, peak } => {
                report.runs += runs;
                report.peak = report.peak.max(peak);
                break;
            }
            Outcome::Crashed { crash, peak } => {
                report.runs += crash.index + 1;
                report.peak = report.peak.max(peak);
                let (path, new) = save_crash(&crashes.join(target.name), &crash.input)?;
                on_crash(&path, &crash.kind, new);
                report.crashes.push((path, crash.kind, new));
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes read as people write them.
    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
        assert_eq!(human_bytes(1 << 40), "1.0 TiB");
    }

    /// A crash file is named by the input's hash: the same input twice is
    /// one file, and only the first save is new.
    #[test]
    fn crash_files_are_named_by_content() {
        let dir =
            std::env::temp_dir().join(format!("herald-fuzz-crash-test-{}", std::process::id()));
        let (a, new_a) = save_crash(&dir, b"boom").unwrap();
        let (b, new_b) = save_crash(&dir, b"boom").unwrap();
        assert_eq!(a, b);
        assert!(new_a && !new_b);
        assert_eq!(std::fs::read(&a).unwrap(), b"boom");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

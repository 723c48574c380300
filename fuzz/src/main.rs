//! `herald-fuzz`: fuzz Herald's parsers and decoders on stable Rust.
//!
//! ```text
//! herald-fuzz run [--seconds N] [--seed S] [TARGET...]   fuzz (all targets by default)
//! herald-fuzz repro TARGET FILE...                        replay inputs through a target
//! herald-fuzz seed                                        write the built-in seeds to the corpus
//! herald-fuzz list                                        name the targets
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use herald_fuzz::harness::{self, FuzzError, Outcome, Plan, Supervisor, WorkerArgs};
use herald_fuzz::targets::{self, Target};

/// Where the fuzz crate lives: its corpus, regressions and crashes.
const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Parser)]
#[command(
    name = "herald-fuzz",
    about = "Fuzz Herald's parsers and decoders (stable Rust, no coverage)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Dirs {
    /// Committed seed inputs, one directory per target.
    #[arg(long, default_value_os_t = Path::new(CRATE_DIR).join("corpus"))]
    corpus: PathBuf,
    /// Committed inputs that once crashed, one directory per target.
    #[arg(long, default_value_os_t = Path::new(CRATE_DIR).join("regressions"))]
    regressions: PathBuf,
    /// Where crashing inputs are written (`<dir>/<target>/<hash>`).
    #[arg(long, default_value_os_t = Path::new(CRATE_DIR).join("crashes"))]
    crashes: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz each target for a bounded time; exits 1 if anything crashed.
    Run {
        /// Seconds per target.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seed of the input streams (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds one run may take before it counts as a hang.
        #[arg(long, default_value_t = harness::DEFAULT_RUN_TIMEOUT.as_secs_f64())]
        run_timeout: f64,
        #[command(flatten)]
        dirs: Dirs,
        /// Targets to fuzz (default: every real target).
        targets: Vec<String>,
    },
    /// Runs each file through TARGET once; exits 1 on the first that crashes.
    Repro {
        target: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, default_value_t = harness::DEFAULT_RUN_TIMEOUT.as_secs_f64())]
        run_timeout: f64,
    },
    /// Writes every target's built-in seeds to the corpus directory.
    Seed {
        #[arg(long, default_value_os_t = Path::new(CRATE_DIR).join("corpus"))]
        corpus: PathBuf,
    },
    /// Names the targets.
    List,
    /// Internal: the worker process a supervisor starts.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        shm: PathBuf,
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0.0)]
        seconds: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        stream: u64,
        #[arg(long)]
        corpus: Vec<PathBuf>,
        #[arg(long)]
        replay: Vec<PathBuf>,
    },
}

fn target(name: &str) -> Result<&'static Target, FuzzError> {
    targets::find(name).ok_or_else(|| FuzzError::UnknownTarget(name.into()))
}

fn supervisor(run_timeout: f64) -> Result<Supervisor, FuzzError> {
    let exe = std::env::current_exe()
        .map_err(|source| FuzzError::Io { path: "current_exe".into(), source })?;
    Ok(Supervisor { exe, run_timeout: Duration::from_secs_f64(run_timeout) })
}

/// `p` relative to the current directory when it is below it.
fn shown(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    p.strip_prefix(&cwd).unwrap_or(p).display().to_string()
}

fn run(
    seconds: f64,
    seed: Option<u64>,
    run_timeout: f64,
    dirs: Dirs,
    names: Vec<String>,
) -> Result<bool, FuzzError> {
    let chosen: Vec<&'static Target> = if names.is_empty() {
        targets::real().collect()
    } else {
        names.iter().map(|n| target(n)).collect::<Result<_, _>>()?
    };
    let seed = seed.unwrap_or_else(|| {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        herald_fuzz::fnv1a(&t.as_nanos().to_le_bytes()) >> 16
    });
    println!(
        "herald-fuzz: seed {seed}, {seconds} s per target, {} target(s); cap {} per run",
        chosen.len(),
        harness::human_bytes(herald_fuzz::alloc::MAX_RUN_ALLOC_BYTES as u64)
    );
    let sup = supervisor(run_timeout)?;
    let mut crashed = false;
    for t in chosen {
        let corpus_dirs = vec![dirs.corpus.join(t.name), dirs.regressions.join(t.name)];
        let report = harness::fuzz_target(
            &sup,
            t,
            seconds,
            seed,
            corpus_dirs,
            &dirs.crashes,
            |path, kind, new| {
                println!("  CRASH {}: {kind}", t.name);
                println!(
                    "    input:     {}{}",
                    shown(path),
                    if new { "" } else { " (seen before)" }
                );
                println!(
                    "    reproduce: cargo run -p herald-fuzz -- repro {} {}",
                    t.name,
                    shown(path)
                );
            },
        )?;
        let secs = report.elapsed.as_secs_f64().max(1e-9);
        let new = report.crashes.iter().filter(|c| c.2).count();
        println!(
            "  {:<10} {:>10} runs {:>9.0}/s   peak {:>9}/run   crashes {} (new {new})",
            t.name,
            report.runs,
            report.runs as f64 / secs,
            harness::human_bytes(report.peak),
            report.crashes.len(),
        );
        crashed |= !report.crashes.is_empty();
    }
    if crashed {
        println!("herald-fuzz: crashes found; rerun this stream with --seed {seed}. A fixed crash's input goes to fuzz/regressions/<target>/.");
    }
    Ok(crashed)
}

fn repro(name: &str, files: Vec<PathBuf>, run_timeout: f64) -> Result<bool, FuzzError> {
    let t = target(name)?;
    let sup = supervisor(run_timeout)?;
    match sup.supervise(t, &WorkerArgs::Replay { files: files.clone() })? {
        Outcome::Finished { runs, peak } => {
            println!("{name}: {runs} input(s) pass (peak {}/run)", harness::human_bytes(peak));
            Ok(false)
        }
        Outcome::Crashed { crash, .. } => {
            let file = files.get(crash.index as usize).map(|f| shown(f)).unwrap_or_default();
            println!("{name}: CRASH on {file}: {}", crash.kind);
            Ok(true)
        }
    }
}

fn seed(corpus: &Path) -> Result<(), FuzzError> {
    let mut n = 0;
    for t in targets::real() {
        let dir = corpus.join(t.name);
        std::fs::create_dir_all(&dir)
            .map_err(|source| FuzzError::Io { path: dir.clone(), source })?;
        for s in (t.seeds)() {
            let p = dir.join(&s.name);
            std::fs::write(&p, &s.bytes).map_err(|source| FuzzError::Io { path: p, source })?;
            n += 1;
        }
    }
    println!("wrote {n} seeds under {}", shown(corpus));
    Ok(())
}

fn worker(
    shm: &Path,
    name: &str,
    seconds: f64,
    seed: u64,
    stream: u64,
    corpus: Vec<PathBuf>,
    replay: Vec<PathBuf>,
) -> Result<i32, FuzzError> {
    let t = target(name)?;
    let plan = if replay.is_empty() {
        Plan::Fuzz { seconds, seed, stream, corpus: harness::load_corpus(t, &corpus)? }
    } else {
        let mut inputs = Vec::new();
        for f in &replay {
            inputs.push(
                std::fs::read(f).map_err(|source| FuzzError::Io { path: f.clone(), source })?,
            );
        }
        Plan::Replay { inputs }
    };
    harness::worker(t, shm, plan)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { seconds, seed, run_timeout, dirs, targets } => {
            run(seconds, seed, run_timeout, dirs, targets).map(u8::from)
        }
        Cmd::Repro { target, files, run_timeout } => {
            repro(&target, files, run_timeout).map(u8::from)
        }
        Cmd::Seed { corpus } => seed(&corpus).map(|()| 0),
        Cmd::List => {
            for t in targets::all() {
                println!(
                    "{:<26} {}{}",
                    t.name,
                    if t.selftest { "(selftest) " } else { "" },
                    t.about
                );
            }
            Ok(0)
        }
        Cmd::Worker { shm, target, seconds, seed, stream, corpus, replay } => {
            match worker(&shm, &target, seconds, seed, stream, corpus, replay) {
                Ok(code) => std::process::exit(code),
                Err(e) => Err(e),
            }
        }
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("herald-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

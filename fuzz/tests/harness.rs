//! The harness reports every failure class as a crash — a panic, an
//! allocation bomb, a hang, a stack overflow — saves the input where it
//! says, and `repro` reproduces it; a clean target passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_herald-fuzz");

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("herald-fuzz-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `herald-fuzz run` of one target for `seconds` with empty corpus
/// directories and crashes written under `dir`.
fn fuzz(dir: &Path, target: &str, seconds: &str, extra: &[&str]) -> Output {
    let empty = dir.join("empty");
    Command::new(EXE)
        .args(["run", "--seconds", seconds, "--seed", "1"])
        .arg("--corpus")
        .arg(&empty)
        .arg("--regressions")
        .arg(&empty)
        .arg("--crashes")
        .arg(dir.join("crashes"))
        .args(extra)
        .arg(target)
        .output()
        .unwrap()
}

fn repro(target: &str, file: &Path) -> Output {
    Command::new(EXE).args(["repro", target]).arg(file).output().unwrap()
}

/// Fuzzes a selftest target, expects a crash report naming `kind`, a
/// saved input, and a `repro` of that input that fails the same way.
fn assert_caught(target: &str, kind: &str, extra: &[&str]) {
    let dir = scratch(target);
    let out = fuzz(&dir, target, "1", extra);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{target} must fail the run:\n{log}");
    assert!(
        log.contains(&format!("CRASH {target}: {kind}")),
        "{target} reported as {kind}:\n{log}"
    );
    assert!(log.contains(&format!("cargo run -p herald-fuzz -- repro {target} ")), "{log}");
    let saved: Vec<PathBuf> = std::fs::read_dir(dir.join("crashes").join(target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!saved.is_empty(), "the crashing input is saved");
    let again = repro(target, &saved[0]);
    let rlog = text(&again);
    assert_eq!(again.status.code(), Some(1), "repro fails too:\n{rlog}");
    assert!(
        rlog.contains(&format!("CRASH on {}", saved[0].display())) && rlog.contains(kind),
        "{rlog}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A target that panics is a crash.
#[test]
fn harness_catches_a_panic() {
    assert_caught("selftest-panic", "panic", &[]);
}

/// A target that allocates 1 GiB (4x the cap) is a crash, reported with
/// the size it asked for — not an OOM kill.
#[test]
fn harness_catches_an_allocation_bomb() {
    assert_caught("selftest-alloc", "allocation bomb: one run asked to hold 1.0 GiB", &[]);
}

/// A run that never returns is a crash after the run timeout.
#[test]
fn harness_catches_a_hang() {
    assert_caught("selftest-hang", "timeout", &["--run-timeout", "0.5"]);
}

/// A stack overflow (which aborts the process) is a crash.
#[test]
fn harness_catches_a_stack_overflow() {
    assert_caught("selftest-stack-overflow", "abort", &[]);
}

/// The committed regression of issue 14 — a 21-byte Forward whose uid
/// claims 1 TiB — is an allocation bomb for the codec as it was (bincode
/// without a limit), and passes the node's codec as it is.
#[test]
fn one_tib_forward_is_caught_on_the_old_codec_and_refused_by_the_new() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/codec/forward-1tib-string");
    assert_eq!(std::fs::read(&file).unwrap().len(), 1 + 21, "selector byte + 21-byte Forward");
    let old = repro("selftest-unbounded-codec", &file);
    let log = text(&old);
    assert_eq!(old.status.code(), Some(1), "{log}");
    assert!(log.contains("allocation bomb: one run asked to hold 1.0 TiB"), "{log}");
    let new = repro("codec", &file);
    assert!(new.status.success(), "{}", text(&new));
}

/// A target that never fails runs clean: exit 0, no crash, runs counted.
#[test]
fn clean_target_passes() {
    let dir = scratch("clean");
    let out = fuzz(&dir, "ntp", "0.5", &[]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("crashes 0 (new 0)") && !log.contains("CRASH"), "{log}");
    assert!(!dir.join("crashes").exists(), "nothing saved");
    std::fs::remove_dir_all(&dir).unwrap();
}

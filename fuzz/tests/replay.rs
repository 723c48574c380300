//! Every committed input — the seed corpus (`fuzz/corpus/<target>/`) and
//! the inputs that once crashed (`fuzz/regressions/<target>/`) — passes its
//! target, each replayed in a worker under the allocation cap.

use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_herald-fuzz");

/// `(target, files)` of each directory under `root`; every directory must
/// name a real target (a typo would silently replay nothing).
fn committed(root: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root) else { return out };
    for d in dirs {
        let d = d.unwrap().path();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let t = herald_fuzz::targets::find(&name);
        assert!(t.is_some_and(|t| !t.selftest), "{}: not a fuzz target", d.display());
        let files = herald_fuzz::harness::files(&d).unwrap();
        out.push((name, files));
    }
    out.sort();
    out
}

/// Each corpus and regression file passes its target; every real target
/// has a committed corpus.
#[test]
fn committed_inputs_pass_their_targets() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = committed(&here.join("corpus"));
    for t in herald_fuzz::targets::real() {
        assert!(
            corpus.iter().any(|(n, f)| n == t.name && !f.is_empty()),
            "no committed corpus for {} (cargo run -p herald-fuzz -- seed)",
            t.name
        );
    }
    let mut replayed = 0;
    for (target, files) in corpus.into_iter().chain(committed(&here.join("regressions"))) {
        if files.is_empty() {
            continue;
        }
        let out = Command::new(EXE).args(["repro", &target]).args(&files).output().unwrap();
        assert!(
            out.status.success(),
            "{target}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        replayed += files.len();
    }
    assert!(replayed > 50, "only {replayed} committed inputs");
}

//! The fuzz targets: each a `fn(&[u8])` that must never panic, abort,
//! hang or allocate past the cap, whatever the bytes. Errors are fine.
//! Where a parser has an exact inverse, the target also checks the round
//! trip (a failed check panics, so it is a crash like any other).

mod codec;
mod config;
mod json;
mod ntp;
mod range;
mod selftest;
mod snapshot;
mod token;
pub mod values;

/// One seed of a target's corpus: a file name and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Seed {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Seed { name: name.into(), bytes: bytes.into() }
    }
}

/// A fuzz target.
pub struct Target {
    pub name: &'static str,
    /// One line: what it feeds where.
    pub about: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// Built-in seeds (`herald-fuzz seed` writes them to the corpus).
    pub seeds: fn() -> Vec<Seed>,
    /// Tokens the mutator inserts, besides the corpus's own identifiers.
    pub dict: fn() -> Vec<Vec<u8>>,
    /// A fake target that proves the harness catches a failure class; not
    /// run by default and has no corpus.
    pub selftest: bool,
}

/// Every target, real ones first.
pub fn all() -> &'static [Target] {
    &ALL
}

/// The real targets: what `run` fuzzes when given no names.
pub fn real() -> impl Iterator<Item = &'static Target> {
    ALL.iter().filter(|t| !t.selftest)
}

pub fn find(name: &str) -> Option<&'static Target> {
    ALL.iter().find(|t| t.name == name)
}

static ALL: [Target; 12] = [
    config::TARGET,
    json::TARGET,
    token::TARGET,
    ntp::TARGET,
    range::TARGET,
    codec::TARGET,
    snapshot::TARGET,
    selftest::PANIC,
    selftest::ALLOC,
    selftest::UNBOUNDED_CODEC,
    selftest::HANG,
    selftest::STACK_OVERFLOW,
];

/// Byte strings of `tokens`.
fn words(tokens: &[&str]) -> Vec<Vec<u8>> {
    tokens.iter().map(|t| t.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every real target accepts each of its own seeds without crashing,
    /// and names are unique (they are corpus directory names).
    #[test]
    fn every_target_runs_its_seeds() {
        let mut names: Vec<&str> = all().iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all().len());
        for t in real() {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{} has no seeds", t.name);
            for s in seeds {
                (t.run)(&s.bytes);
            }
        }
    }
}

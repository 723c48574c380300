//! A snapshot file as a peer streams it (`verify_snapshot_file`, which the
//! sync port runs on every received snapshot before openraft sees it):
//! magic, header, items and the SHA-256 trailer.

use std::path::PathBuf;
use std::sync::OnceLock;

use herald_node::raft::codec;
use herald_node::raft::state_machine::verify_snapshot_file;
use sha2::{Digest, Sha256};

use super::values;
use super::{words, Seed, Target};

pub const TARGET: Target = Target {
    name: "snapshot",
    about:
        "snapshot file: raft::state_machine::verify_snapshot_file (magic, header, items, SHA-256)",
    run,
    seeds,
    dict,
    selftest: false,
};

/// The file format's magic (`SNAPSHOT_MAGIC` in node/src/raft/state_machine.rs).
const MAGIC: &[u8; 8] = b"HSNAP\x002\n";

/// Where this process writes the input for the verifier to read.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("herald-fuzz-snapshot-{}.snap", std::process::id()))
    })
}

fn run(input: &[u8]) {
    let p = path();
    std::fs::write(p, input).expect("write the snapshot input");
    let _ = verify_snapshot_file(p);
    let _ = std::fs::remove_file(p);
}

/// A snapshot file as the state machine writes one: the magic, the header
/// (meta and item count), the items, and the SHA-256 of all of that.
pub fn file(items: &[herald_domain::state::Item]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    // The header is a struct {meta, items: u64}: bincode writes it as the tuple.
    b.extend(codec::encode(&(values::snapshot_meta(), items.len() as u64)).expect("encodes"));
    for it in items {
        b.extend(codec::encode(it).expect("encodes"));
    }
    let digest = Sha256::digest(&b);
    b.extend_from_slice(&digest);
    b
}

fn seeds() -> Vec<Seed> {
    let items = values::items();
    vec![
        Seed::new("empty.snap", file(&[])),
        Seed::new("one-item.snap", file(&items[..1])),
        Seed::new("state.snap", file(&items)),
    ]
}

fn dict() -> Vec<Vec<u8>> {
    words(&["HSNAP\x002\n"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are snapshots the node accepts (the format above matches
    /// the state machine's), and a changed byte is refused.
    #[test]
    fn snapshot_seeds_are_accepted_by_the_node() {
        let p =
            std::env::temp_dir().join(format!("herald-fuzz-seed-test-{}.snap", std::process::id()));
        for s in seeds() {
            std::fs::write(&p, &s.bytes).unwrap();
            let meta = verify_snapshot_file(&p).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(meta, values::snapshot_meta());
            let mut bad = s.bytes.clone();
            let i = bad.len() / 2;
            bad[i] ^= 1;
            std::fs::write(&p, &bad).unwrap();
            assert!(verify_snapshot_file(&p).is_err(), "{} with a flipped bit", s.name);
        }
        std::fs::remove_file(&p).unwrap();
    }
}

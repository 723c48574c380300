//! The `Range` header of media downloads (`herald_node::media::range`).

use herald_node::media::range::{self, RangeAnswer};

use super::{words, Seed, Target};

pub const TARGET: Target = Target {
    name: "range",
    about: "Range header: herald_node::media::range::parse for sizes 0, 1, 1000 and u64::MAX",
    run,
    seeds,
    dict,
    selftest: false,
};

/// Body sizes: empty, one byte, small, and the largest.
const SIZES: [u64; 4] = [0, 1, 1000, u64::MAX];

fn run(input: &[u8]) {
    let header = String::from_utf8_lossy(input);
    for size in SIZES {
        match range::parse(Some(&header), size) {
            RangeAnswer::Partial { start, end } => {
                // A 206 names bytes that exist.
                assert!(start <= end && end < size, "{header:?} on {size}: {start}-{end}");
                let _ = range::content_range(start, end, size);
            }
            RangeAnswer::Full | RangeAnswer::Unsatisfiable => {}
        }
    }
    assert_eq!(range::parse(None, 1), RangeAnswer::Full);
}

fn seeds() -> Vec<Seed> {
    [
        "bytes=0-99",
        "bytes=100-",
        "bytes=-500",
        "bytes=-0",
        "bytes=0-0",
        "Bytes = 5 - 10 ",
        "bytes=0-1,5-6",
        "items=0-1",
        "bytes=18446744073709551615-",
        "bytes=-18446744073709551616",
        "bytes=10-5",
        "bytes=",
    ]
    .iter()
    .enumerate()
    .map(|(i, h)| Seed::new(format!("range-{i}"), *h))
    .collect()
}

fn dict() -> Vec<Vec<u8>> {
    words(&["bytes", "=", "-", ",", " ", "\t", "\u{a0}", "+", "0", "00000000000000000000001"])
}

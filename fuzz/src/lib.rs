//! Fuzzing Herald on stable Rust (issue 14): targets for the XML
//! configuration, every JSON request body, session tokens and media
//! credentials, the NTP packet, the `Range` header, the internal codec and
//! snapshot files, and a small coverage-less mutation fuzzer to run them.
//!
//! Each target runs in a worker process ([`harness`]) on a thread with the
//! stack of a tokio worker, under a counting allocator that refuses what one
//! run holds past [`alloc::MAX_RUN_ALLOC_BYTES`]. A panic, an allocation
//! bomb, an abort (stack overflow) or a run that does not end is a crash:
//! the input is saved (the worker keeps it in a page shared with its parent,
//! [`shm`]) with the command that reproduces it.

pub mod alloc;
pub mod harness;
pub mod mutate;
pub mod rng;
pub mod shm;
pub mod targets;

/// Every allocation of every binary linking this crate (the fuzzer and its
/// tests) is counted; only armed runs are capped.
#[global_allocator]
static ALLOCATOR: alloc::CountingAlloc = alloc::CountingAlloc;

/// FNV-1a (64-bit): names of crash files and per-target seed salts; stable
/// across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

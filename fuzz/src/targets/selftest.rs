//! Fake targets that fail on purpose, one per failure class, so tests can
//! prove the harness reports each as a crash. Not run by default.

use herald_domain::state::Op;

use super::{Seed, Target};

const fn fake(name: &'static str, about: &'static str, run: fn(&[u8])) -> Target {
    Target { name, about, run, seeds: one_seed, dict: Vec::new, selftest: true }
}

fn one_seed() -> Vec<Seed> {
    vec![Seed::new("seed", b"seed".to_vec())]
}

pub const PANIC: Target =
    fake("selftest-panic", "panics on every input", |_| panic!("selftest-panic"));

/// Size of the selftest allocation: 4x the cap.
const ONE_GIB: usize = 1 << 30;

pub const ALLOC: Target = fake("selftest-alloc", "allocates 1 GiB on every input", |_| {
    let v: Vec<u8> = Vec::with_capacity(ONE_GIB);
    std::hint::black_box(&v);
});

/// The codec as it was before it had a byte budget (issue 14): bincode's
/// standard configuration, no limit. Same layout as the `codec` target (a
/// selector byte, ignored here: always a Forward), so the committed
/// regression input of the 1 TiB string is caught here and passes there.
pub const UNBOUNDED_CODEC: Target = fake(
    "selftest-unbounded-codec",
    "decodes a Forward (Vec<Op>) with bincode and no length limit, as the node once did",
    |input| {
        if let Some((_, b)) = input.split_first() {
            let _ = bincode::serde::decode_from_slice::<Vec<Op>, _>(b, bincode::config::standard());
        }
    },
);

pub const HANG: Target = fake("selftest-hang", "never returns", |_| loop {
    std::thread::sleep(std::time::Duration::from_millis(50));
});

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    pad[0] + recurse(depth + 1)
}

pub const STACK_OVERFLOW: Target = fake("selftest-stack-overflow", "recurses without end", |_| {
    std::hint::black_box(recurse(0));
});

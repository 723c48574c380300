//! A counting global allocator that refuses what one fuzz run holds beyond
//! [`MAX_RUN_ALLOC_BYTES`], so an allocation bomb (a few bytes that claim a
//! 1 TiB string, a key file that never ends) is found as a crash instead of
//! OOM-killing CI.
//!
//! While a run is [armed](arm), every allocation of its thread that would
//! take what the run holds past the cap is refused (null) and noted in the
//! shared page ([`crate::shm`]) with the size it asked for. An infallible
//! allocation then ends in `handle_alloc_error`, which aborts the worker;
//! code that copes with the refusal (`try_reserve`, `read_to_end`) goes on,
//! and the harness fails the run when it returns. Either way the input is
//! reported as an allocation bomb.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Most bytes one run may hold at once. Every target's legitimate peak is
/// bounded by its input (at most [`crate::mutate::MAX_INPUT_BYTES`]) times
/// a small factor, or by the node's own decode budget (64 MiB,
/// `herald_node::raft::codec::MAX_DECODE_BYTES`), both far below; a claimed
/// length past the budget goes far over it. 256 MiB on each of CI's two
/// cores stays clear of the OOM killer.
pub const MAX_RUN_ALLOC_BYTES: usize = 256 << 20;

/// What the current thread's run has allocated; thread-local, so that only
/// the fuzzing thread's allocations count and parallel tests do not disturb
/// each other. `const`-initialised and without destructors: safe to touch
/// from inside the allocator.
struct Run {
    armed: Cell<bool>,
    /// Bytes held now above the run's start (allocated minus freed).
    used: Cell<usize>,
    /// Most of `used` the run has held.
    peak: Cell<usize>,
    cap: Cell<usize>,
}

thread_local! {
    static RUN: Run = const {
        Run {
            armed: Cell::new(false),
            used: Cell::new(0),
            peak: Cell::new(0),
            cap: Cell::new(MAX_RUN_ALLOC_BYTES),
        }
    };
}

/// The process's allocator: the system allocator, counted.
pub struct CountingAlloc;

/// Counts `n` more bytes; false (and nothing counted) when an armed run
/// would go past its cap.
fn grow(n: usize) -> bool {
    RUN.try_with(|r| {
        if !r.armed.get() {
            return true;
        }
        let used = r.used.get().saturating_add(n);
        if used > r.cap.get() {
            crate::shm::note_over_cap(used as u64);
            return false;
        }
        r.used.set(used);
        r.peak.set(r.peak.get().max(used));
        true
    })
    .unwrap_or(true)
}

fn shrink(n: usize) {
    let _ = RUN.try_with(|r| {
        if r.armed.get() {
            r.used.set(r.used.get().saturating_sub(n));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments;
// the counters never change what is returned except by refusing (null),
// which the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            shrink(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            shrink(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !grow(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                shrink(new_size - old);
            }
        } else if new_size < old {
            shrink(old - new_size);
        }
        p
    }
}

/// Starts counting a run of the current thread against `cap` bytes.
pub fn arm(cap: usize) {
    RUN.with(|r| {
        r.used.set(0);
        r.peak.set(0);
        r.cap.set(cap);
        r.armed.set(true);
    });
}

/// Ends the current thread's run; answers the most bytes it held at once.
pub fn disarm() -> usize {
    RUN.with(|r| {
        r.armed.set(false);
        r.peak.get()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An armed run is refused an allocation past its cap (a fallible
    /// reservation fails instead of succeeding), counts its peak, and
    /// allocations pass again once disarmed. The cap is lowered to 1 MiB so
    /// the test allocates nothing large.
    #[test]
    fn armed_run_is_refused_past_the_cap() {
        arm(1 << 20);
        let small: Vec<u8> = Vec::with_capacity(1000);
        let mut big: Vec<u8> = Vec::new();
        let refused = big.try_reserve_exact(2 << 20).is_err();
        let peak = disarm();
        assert!(refused, "a reservation past the cap must fail while armed");
        assert!(peak >= 1000, "peak {peak} counts the small vector");
        drop(small);
        assert!(big.try_reserve_exact(2 << 20).is_ok(), "disarmed: no cap");
    }
}

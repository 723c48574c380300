//! Cluster time as the leader stamps it into commands.
//!
//! Today this is the host's wall clock made non-decreasing; the time-sync
//! issue replaces the source with the SNTP-corrected cluster clock. Callers
//! only ever see [`ClusterClock::now_ms`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A clock that never goes backwards, in ms since the Unix epoch.
#[derive(Debug, Default)]
pub struct ClusterClock {
    last: AtomicU64,
}

impl ClusterClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Current cluster time; never less than any value returned before.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let prev = self.last.fetch_max(wall, Ordering::AcqRel);
        prev.max(wall)
    }
}

#[cfg(test)]
mod tests {
    /// The cluster clock is non-decreasing across calls.
    #[test]
    fn clock_never_goes_backwards() {
        let c = super::ClusterClock::new();
        let mut prev = 0;
        for _ in 0..1000 {
            let t = c.now_ms();
            assert!(t >= prev);
            prev = t;
        }
        assert!(prev > 1_600_000_000_000, "wall clock based");
    }
}

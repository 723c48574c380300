//! Cluster time: the clock the leader stamps into commands (MISSION P5).
//!
//! `cluster time = wall clock + offset`. The time-sync loop sets a *target*
//! offset when this node's error against the time master is outside the
//! tolerance. Forward corrections apply at once; backward corrections slew
//! (cluster time runs at half speed until the target is reached), and the
//! value returned never goes backwards, even if the wall clock is stepped
//! back. The OS clock is never touched.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// While slewing backwards, cluster time advances at this fraction of real
/// time (so a 1 s backward correction takes 2 s).
const SLEW_RATE: f64 = 0.5;

#[derive(Debug)]
struct State {
    current_us: i64,
    target_us: i64,
    last_update: Instant,
    last_returned_us: i64,
}

/// A clock that never goes backwards, in µs/ms since the Unix epoch.
#[derive(Debug)]
pub struct ClusterClock {
    state: Mutex<State>,
}

impl Default for ClusterClock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

impl ClusterClock {
    pub fn new() -> Self {
        ClusterClock {
            state: Mutex::new(State {
                current_us: 0,
                target_us: 0,
                last_update: Instant::now(),
                last_returned_us: 0,
            }),
        }
    }

    /// Current cluster time in µs; never less than any value returned before.
    pub fn now_us(&self) -> i64 {
        self.now_at(wall_us(), Instant::now())
    }

    /// Current cluster time in ms.
    pub fn now_ms(&self) -> u64 {
        (self.now_us() / 1000).max(0) as u64
    }

    fn now_at(&self, wall: i64, mono: Instant) -> i64 {
        let mut s = self.state.lock().expect("clock lock");
        let dt = mono.saturating_duration_since(s.last_update).as_micros() as i64;
        s.last_update = mono;
        if s.current_us < s.target_us {
            s.current_us = s.target_us;
        } else if s.current_us > s.target_us {
            let step = ((dt as f64) * SLEW_RATE) as i64;
            s.current_us = (s.current_us - step).max(s.target_us);
        }
        let raw = wall + s.current_us;
        if raw < s.last_returned_us {
            // The wall clock stepped back: absorb the step into the offset so
            // that `offset_us` stays the truth (cluster − wall), then slew
            // back towards the target from there.
            s.current_us += s.last_returned_us - raw;
        }
        let t = wall + s.current_us;
        s.last_returned_us = t;
        t
    }

    /// Sets the offset (cluster − wall, µs) the clock moves to.
    pub fn set_target_offset_us(&self, target: i64) {
        let mut s = self.state.lock().expect("clock lock");
        s.target_us = target;
    }

    /// The offset in force now (cluster − wall, µs), after accounting for
    /// any wall-clock step since the last reading.
    pub fn offset_us(&self) -> i64 {
        self.now_at(wall_us(), Instant::now());
        self.state.lock().expect("clock lock").current_us
    }

    /// The offset the clock is moving to.
    pub fn target_offset_us(&self) -> i64 {
        self.state.lock().expect("clock lock").target_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The cluster clock is non-decreasing across calls.
    #[test]
    fn clock_never_goes_backwards() {
        let c = ClusterClock::new();
        let mut prev = 0;
        for _ in 0..1000 {
            let t = c.now_ms();
            assert!(t >= prev);
            prev = t;
        }
        assert!(prev > 1_600_000_000_000, "wall clock based");
    }

    /// A forward correction applies at once; a backward one slews at half
    /// speed and never makes the clock go back; a wall clock stepped back
    /// freezes cluster time instead of reversing it.
    #[test]
    fn clock_forward_step_backward_slew() {
        let c = ClusterClock::new();
        let m0 = Instant::now();
        let w0 = 1_000_000_000_000i64;
        assert_eq!(c.now_at(w0, m0), w0);
        c.set_target_offset_us(5_000_000);
        assert_eq!(c.now_at(w0, m0), w0 + 5_000_000, "forward applies at once");
        c.set_target_offset_us(0);
        // 2 s of real time later: offset shrank by 1 s (half speed).
        let t = c.now_at(w0 + 2_000_000, m0 + Duration::from_secs(2));
        assert_eq!(t, w0 + 2_000_000 + 4_000_000);
        // 10 s later the target is reached and holds.
        let t2 = c.now_at(w0 + 12_000_000, m0 + Duration::from_secs(12));
        assert_eq!(t2, w0 + 12_000_000);
        // Wall clock stepped back by 3 s: cluster time holds still, and the
        // offset absorbs the step (it stays cluster − wall).
        let t3 = c.now_at(w0 + 9_000_000, m0 + Duration::from_secs(13));
        assert_eq!(t3, t2);
        assert_eq!(c.state.lock().unwrap().current_us, 3_000_000);
        // ... and then slews back to the target at half speed.
        let t4 = c.now_at(w0 + 11_000_000, m0 + Duration::from_secs(15));
        assert_eq!(t4, t3 + 1_000_000);
        assert_eq!(c.state.lock().unwrap().current_us, 2_000_000);
    }
}

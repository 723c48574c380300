//! Statistics of a benchmark run: latency percentiles over exact sorted
//! samples, and throughput.
//!
//! Samples are kept whole (8 bytes each: 10 million operations are 80 MB)
//! so that percentiles are exact, not bucketed: p99.9 of a few thousand
//! operations is then a real observation, not a bucket edge.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latencies of successful operations, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ns: Vec<u64>,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one operation's latency.
    pub fn record(&mut self, d: Duration) {
        self.ns.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other` (e.g. of another client task).
    pub fn merge(&mut self, other: Samples) {
        if self.ns.is_empty() {
            self.ns = other.ns;
        } else {
            self.ns.extend(other.ns);
        }
    }

    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// Sorts the samples and summarises them.
    pub fn summary(mut self) -> Latency {
        self.ns.sort_unstable();
        Latency::of_sorted(&self.ns)
    }
}

/// The value at quantile `q` (0..=1) of ascending `sorted` samples, by the
/// nearest-rank method: the smallest sample such that at least `q` of all
/// samples are at or below it. 0 for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    // ceil(q * n) computed in integers of parts per million, so that
    // 0.999 * 1000 is exactly 999 and not 999.0000000000001.
    let ppm = (q.clamp(0.0, 1.0) * 1_000_000.0).round() as u128;
    let rank = (ppm * n as u128).div_ceil(1_000_000) as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Operations per second: `count` operations over `elapsed`. 0 for a zero
/// elapsed time.
pub fn throughput(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 {
        0.0
    } else {
        count as f64 / s
    }
}

/// Latency summary in milliseconds (fractional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises ascending nanosecond samples.
    pub fn of_sorted(sorted: &[u64]) -> Self {
        if sorted.is_empty() {
            return Latency::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        let sum: u128 = sorted.iter().map(|&x| x as u128).sum();
        Latency {
            count: sorted.len() as u64,
            min_ms: ms(sorted[0]),
            mean_ms: sum as f64 / sorted.len() as f64 / 1e6,
            p50_ms: ms(percentile(sorted, 0.50)),
            p99_ms: ms(percentile(sorted, 0.99)),
            p999_ms: ms(percentile(sorted, 0.999)),
            max_ms: ms(sorted[sorted.len() - 1]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// 1..=1000 ms recorded in a scrambled order: p50 is 500 ms, p99 990 ms,
    /// p99.9 999 ms (nearest rank), min 1, max 1000, mean 500.5.
    #[test]
    fn bench_stats_percentiles_of_uniform_samples() {
        let mut s = Samples::new();
        // 1..=1000 in a fixed scrambled order (7 is coprime with 1000).
        for i in 0..1000u64 {
            s.record(ms((i * 7) % 1000 + 1));
        }
        let l = s.summary();
        assert_eq!(l.count, 1000);
        assert_eq!((l.p50_ms, l.p99_ms, l.p999_ms), (500.0, 990.0, 999.0));
        assert_eq!((l.min_ms, l.max_ms), (1.0, 1000.0));
        assert!((l.mean_ms - 500.5).abs() < 1e-9, "{}", l.mean_ms);
    }

    /// Nearest rank on small sets: with 10 samples p99 and p99.9 are the
    /// largest; with one sample every percentile is that sample; the empty
    /// set gives 0.
    #[test]
    fn bench_stats_percentile_nearest_rank_edges() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), 5);
        assert_eq!(percentile(&v, 0.51), 6);
        assert_eq!(percentile(&v, 0.99), 10);
        assert_eq!(percentile(&v, 0.999), 10);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&v, 1.0), 10);
        assert_eq!(percentile(&[42], 0.999), 42);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(Samples::new().summary(), Latency::default());
    }

    /// A long tail shows in p99.9 but not in p99: 9,990 fast operations and
    /// 10 slow ones.
    #[test]
    fn bench_stats_tail_visible_only_at_p999() {
        let mut s = Samples::new();
        for _ in 0..9_990 {
            s.record(Duration::from_micros(200));
        }
        for _ in 0..10 {
            s.record(ms(50));
        }
        let l = s.summary();
        assert_eq!(l.p50_ms, 0.2);
        assert_eq!(l.p99_ms, 0.2);
        assert_eq!(l.p999_ms, 0.2);
        let mut s2 = Samples::new();
        for _ in 0..9_989 {
            s2.record(Duration::from_micros(200));
        }
        for _ in 0..11 {
            s2.record(ms(50));
        }
        assert_eq!(s2.summary().p999_ms, 50.0);
    }

    /// Samples of several client tasks merge into one distribution.
    #[test]
    fn bench_stats_merge_combines_tasks() {
        let mut a = Samples::new();
        let mut b = Samples::new();
        for i in 1..=50 {
            a.record(ms(i));
        }
        for i in 51..=100 {
            b.record(ms(i));
        }
        let mut all = Samples::new();
        all.merge(b);
        all.merge(a);
        assert_eq!(all.len(), 100);
        let l = all.summary();
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
    }

    /// Throughput is operations over elapsed seconds: 1,000 ops in 2 s is
    /// 500/s, 3 ops in 1.5 ms is 2,000/s, and nothing over zero time is 0.
    #[test]
    fn bench_stats_throughput() {
        assert_eq!(throughput(1000, Duration::from_secs(2)), 500.0);
        assert!((throughput(3, Duration::from_micros(1500)) - 2000.0).abs() < 1e-9);
        assert_eq!(throughput(5, Duration::ZERO), 0.0);
        assert_eq!(throughput(0, Duration::from_secs(1)), 0.0);
    }
}

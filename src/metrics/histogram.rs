//! Latency histograms cheap enough to stay on: fixed log2 buckets of
//! nanoseconds, one set of counters per shard (a thread writes the shard
//! it was given), summed when read.

use std::fmt;
use std::time::Duration;

use super::shard_index;
use super::SHARDS;
use crate::sync::{AtomicU64, Ordering};

/// Buckets of a histogram: bucket 0 holds 0 ns, bucket `i` (1 to 64)
/// holds the values from `2^(i-1)` to `2^i - 1` ns.
pub const BUCKETS: usize = 65;

/// The bucket of a value in nanoseconds.
fn bucket_of(ns: u64) -> usize {
    (u64::BITS - ns.leading_zeros()) as usize
}

/// The largest value a bucket holds, in nanoseconds.
fn upper_bound(bucket: usize) -> u64 {
    match bucket {
        0 => 0,
        64.. => u64::MAX,
        b => (1u64 << b) - 1,
    }
}

#[repr(align(64))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

/// A histogram the crate records into.
pub(crate) struct Histogram {
    shards: Box<[Shard; SHARDS]>,
}

impl Histogram {
    pub(crate) fn new() -> Histogram {
        let shards = Box::new(std::array::from_fn(|_| Shard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }));
        Histogram { shards }
    }

    /// Records one value, in nanoseconds: two uncontended atomic adds.
    pub(crate) fn record(&self, ns: u64) {
        let s = &self.shards[shard_index()];
        s.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        s.sum.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram { buckets: [0; BUCKETS], sum_ns: 0 };
        for s in self.shards.iter() {
            for (total, b) in h.buckets.iter_mut().zip(&s.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            h.sum_ns = h.sum_ns.wrapping_add(s.sum.load(Ordering::Relaxed));
        }
        h
    }
}

/// A snapshot of a latency histogram: how many values fell in each log2
/// bucket of nanoseconds (bucket 0 holds 0 ns, bucket `i` the values from
/// `2^(i-1)` to `2^i - 1` ns), and their sum. Percentiles are read as the
/// upper bound of the bucket they fall in, so they are at most twice the
/// true value, never below it.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; BUCKETS],
    sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: [0; BUCKETS], sum_ns: 0 }
    }
}

impl LatencyHistogram {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the values recorded.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// The mean value, if any was recorded.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_nanos(self.sum_ns / n))
    }

    /// The value below or at which a fraction `q` (0.0 to 1.0) of the
    /// values fall, as the upper bound of its bucket; `None` when nothing
    /// was recorded.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(upper_bound(i)));
            }
        }
        Some(Duration::from_nanos(u64::MAX))
    }

    /// The non-empty buckets: the largest value each holds, and how many
    /// values fell in it, smallest first.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (Duration::from_nanos(upper_bound(i)), c))
    }

    /// The values recorded since `earlier`, an earlier snapshot of the
    /// same histogram: the latencies of the last interval, for a view
    /// refreshed every second.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut h = self.clone();
        for (a, b) in h.buckets.iter_mut().zip(&earlier.buckets) {
            *a = a.saturating_sub(*b);
        }
        h.sum_ns = h.sum_ns.wrapping_sub(earlier.sum_ns);
        h
    }

    /// The values of `other` added to this one (two ports' histograms as
    /// one).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("mean", &self.mean())
            .field("p50", &self.percentile(0.5))
            .field("p99", &self.percentile(0.99))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_histogram_buckets_and_percentiles() {
        let h = Histogram::new();
        assert_eq!(h.snapshot().percentile(0.5), None);
        for ns in [0, 1, 2, 3, 1000, 1000, 1000, 1_000_000] {
            h.record(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum(), Duration::from_nanos(1_003_006));
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(1000), 10);
        assert_eq!(s.percentile(0.0), Some(Duration::ZERO));
        // Ranks 5-7 are the 1000s, in the bucket up to 1023.
        assert_eq!(s.percentile(0.75), Some(Duration::from_nanos(1023)));
        assert_eq!(s.percentile(1.0), Some(Duration::from_nanos((1 << 20) - 1)));
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.count(), 16);
        assert_eq!(m.since(&s), s);
        assert_eq!(m.buckets().map(|(_, c)| c).sum::<u64>(), 16);
    }
}

//! Counting what arrived: latency histograms and per-receiver loss and duplicate checks.
//!
//! Each simulated user owns one [`Receipts`] and updates it without any locking; the
//! workload merges them at the end. Nothing here measures time or does I/O: callers pass
//! the latencies in.

use serde::Serialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Sub-buckets per power of two: values are kept to within 1/128 (under 0.8 %).
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

/// A log-linear histogram of `u64` values (nanoseconds here), like an HDR histogram
/// with two significant decimal digits. Values below 256 are exact; above, each bucket
/// spans under 0.8 % of its value. The exact maximum is kept separately.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, value: u64) {
        let index = bucket_index(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below or at which a fraction `quantile` (0 to 1) of the values lie, to
    /// within the bucket precision; never above the true maximum. 0 if empty.
    #[must_use]
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The rank of the wanted value, from 1; the float product is exact enough for
        // any count a benchmark reaches.
        let wanted = (quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64;
        let wanted = wanted.clamp(1, self.total);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return bucket_upper(index).min(self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99, p99.9 and max.
    #[must_use]
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.total,
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            p999_ns: self.quantile(0.999),
            max_ns: self.max,
        }
    }
}

fn bucket_index(value: u64) -> usize {
    if value < (2 * SUB) as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let sub = (value >> shift) as usize;
    (shift as usize + 1) * SUB + (sub - SUB)
}

/// The highest value that falls into bucket `index`.
fn bucket_upper(index: usize) -> u64 {
    if index < 2 * SUB {
        return index as u64;
    }
    let shift = (index / SUB - 1) as u32;
    let sub = (index % SUB + SUB) as u128;
    // In u128: the top bucket's bound is 2^64 - 1, and its successor overflows u64.
    let upper = ((sub + 1) << shift) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// How many samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile (the shape of the tail; JSON only).
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile (JSON only).
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// A growable set of small integers (message counters of one sender).
#[derive(Debug, Clone, Default)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Adds `value`; returns false if it was already there.
    pub fn insert(&mut self, value: u32) -> bool {
        let word = (value / 64) as usize;
        let bit = 1u64 << (value % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        fresh
    }
}

/// What happened to one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Expected and seen for the first time.
    New,
    /// Seen before.
    Duplicate,
    /// Not meant for this receiver at all.
    Misrouted,
}

/// Everything one receiver got: which messages of which sender, and how late.
///
/// It is touched once per received message, on the load generator's hot path and for
/// a thousand receivers in turn, so what it touches is kept small: latencies go to the
/// end of a short list and join the histogram (whose thousands of buckets would be a
/// cache miss per message) a thousand at a time, and senders are found with a hash of
/// one multiplication.
#[derive(Debug, Clone, Default)]
pub struct Receipts {
    seen: HashMap<u32, BitSet, BuildHasherDefault<SenderHasher>>,
    /// Distinct expected messages received.
    pub distinct: u64,
    /// Messages received more than once (each extra copy counts).
    pub duplicates: u64,
    /// Messages received that were meant for someone else.
    pub misrouted: u64,
    /// Send-to-receive latency of each distinct message: `latency` and `recent`.
    latency: Histogram,
    recent: Vec<u64>,
}

/// Latencies kept in [`Receipts::recent`] before they join the histogram.
const RECENT: usize = 1024;

/// Hashes a sender's index (a `u32`) with one multiplication: the keys are small
/// integers chosen by the bench, not input to defend against.
#[derive(Debug, Clone, Copy, Default)]
pub struct SenderHasher(u64);

impl Hasher for SenderHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = (self.0 ^ u64::from(value)).wrapping_mul(FIBONACCI);
    }
}

/// 2^64 divided by the golden ratio: spreads consecutive integers over the high bits,
/// which the hash table looks at first.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

impl Receipts {
    /// Records message `counter` of `sender`, received `latency_ns` after it was sent;
    /// `expected` says whether this receiver should get it at all.
    pub fn record(
        &mut self,
        sender: u32,
        counter: u32,
        latency_ns: u64,
        expected: bool,
    ) -> Outcome {
        if !expected {
            self.misrouted += 1;
            return Outcome::Misrouted;
        }
        if self.seen.entry(sender).or_default().insert(counter) {
            self.distinct += 1;
            if self.recent.len() >= RECENT {
                for value in self.recent.drain(..) {
                    self.latency.record(value);
                }
            }
            self.recent.push(latency_ns);
            Outcome::New
        } else {
            self.duplicates += 1;
            Outcome::Duplicate
        }
    }

    /// Adds the latency of every distinct message to `into`.
    pub fn add_latency(&self, into: &mut Histogram) {
        into.merge(&self.latency);
        for &value in &self.recent {
            into.record(value);
        }
    }
}

/// Totals over many receivers.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Distinct expected messages received, over all receivers.
    pub delivered: u64,
    /// Messages that should have arrived and did not.
    pub lost: u64,
    /// Extra copies.
    pub duplicates: u64,
    /// Messages delivered to the wrong receiver.
    pub misrouted: u64,
    /// Latency over all receivers.
    pub latency: Histogram,
}

impl Totals {
    /// Adds one receiver that should have received `expected` messages.
    pub fn add(&mut self, receipts: &Receipts, expected: u64) {
        self.delivered += receipts.distinct;
        self.lost += expected.saturating_sub(receipts.distinct);
        self.duplicates += receipts.duplicates;
        self.misrouted += receipts.misrouted;
        receipts.add_latency(&mut self.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut previous_upper = None;
        for index in 0..(40 * SUB) {
            let upper = bucket_upper(index);
            if let Some(previous) = previous_upper {
                assert_eq!(bucket_index(previous + 1), index, "gap before {index}");
            }
            assert_eq!(bucket_index(upper), index);
            previous_upper = Some(upper);
        }
        for value in [
            0,
            1,
            255,
            256,
            257,
            1000,
            123_456_789,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let upper = bucket_upper(bucket_index(value));
            assert!(upper >= value);
            assert!((upper - value) as f64 <= value as f64 / 128.0 + 1.0);
        }
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut histogram = Histogram::default();
        for value in 1..=100_000u64 {
            histogram.record(value * 1000);
        }
        let close = |got: u64, want: u64| {
            let error = (got as f64 - want as f64).abs() / want as f64;
            assert!(error < 0.01, "got {got}, want {want}");
        };
        close(histogram.quantile(0.5), 50_000_000);
        close(histogram.quantile(0.99), 99_000_000);
        assert_eq!(histogram.summary().max_ns, 100_000_000);
        assert_eq!(histogram.quantile(1.0), 100_000_000);
        assert_eq!(histogram.count(), 100_000);
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.summary(), LatencySummary::default());
        for value in [3, 1, 2] {
            histogram.record(value);
        }
        assert_eq!(histogram.quantile(0.0), 1);
        assert_eq!(histogram.quantile(0.5), 2);
        assert_eq!(histogram.quantile(0.99), 3);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let mut first = Histogram::default();
        let mut second = Histogram::default();
        first.record(10);
        second.record(1_000_000);
        second.record(20);
        first.merge(&second);
        assert_eq!(first.count(), 3);
        assert_eq!(first.summary().max_ns, 1_000_000);
        assert_eq!(first.quantile(0.5), 20);
    }

    #[test]
    fn duplicates_and_misroutes_are_counted() {
        let mut receipts = Receipts::default();
        assert_eq!(receipts.record(1, 0, 5, true), Outcome::New);
        assert_eq!(receipts.record(1, 1, 5, true), Outcome::New);
        assert_eq!(receipts.record(2, 0, 5, true), Outcome::New);
        assert_eq!(receipts.record(1, 0, 5, true), Outcome::Duplicate);
        assert_eq!(receipts.record(3, 0, 5, false), Outcome::Misrouted);
        assert_eq!(receipts.distinct, 3);
        assert_eq!(receipts.duplicates, 1);
        assert_eq!(receipts.misrouted, 1);
        assert_eq!(receipts.record(1, 2, 5, true), Outcome::New);
        assert_eq!(receipts.record(1, 2, 5, true), Outcome::Duplicate);
        let mut latency = Histogram::default();
        receipts.add_latency(&mut latency);
        assert_eq!(latency.count(), 4);
    }

    #[test]
    fn every_latency_counts_however_many_there_are() {
        let mut receipts = Receipts::default();
        for counter in 0..3000u32 {
            let sender = counter % 1000;
            assert_eq!(
                receipts.record(sender, counter, u64::from(counter) + 1, true),
                Outcome::New
            );
        }
        assert_eq!(receipts.record(999, 2999, 1, true), Outcome::Duplicate);
        let mut latency = Histogram::default();
        receipts.add_latency(&mut latency);
        assert_eq!(latency.count(), 3000);
        assert_eq!(latency.quantile(0.0), 1);
        assert_eq!(latency.summary().max_ns, 3000);
        assert_eq!(receipts.distinct, 3000);
    }

    #[test]
    fn totals_count_what_is_missing() {
        let mut full = Receipts::default();
        let mut partial = Receipts::default();
        for counter in 0..10 {
            full.record(0, counter, 1, true);
            if counter % 2 == 0 {
                partial.record(0, counter, 1, true);
            }
        }
        partial.record(0, 0, 1, true);
        let mut totals = Totals::default();
        totals.add(&full, 10);
        totals.add(&partial, 10);
        assert_eq!(totals.delivered, 15);
        assert_eq!(totals.lost, 5);
        assert_eq!(totals.duplicates, 1);
        assert_eq!(totals.latency.count(), 15);
    }

    #[test]
    fn bitset_grows() {
        let mut set = BitSet::default();
        assert!(set.insert(1000));
        assert!(!set.insert(1000));
        assert!(set.insert(999));
        assert!(set.insert(100_000));
        assert!(!set.insert(100_000));
    }
}

//! Counters the caller can read at any time through [`crate::Producer::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a producer's counters, in records (not batches or requests).
///
/// `sent = acknowledged + failed + in flight`: every accepted record is eventually counted in
/// exactly one of `acknowledged` and `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerMetrics {
    /// Records accepted by `send`, `send_async` or `send_oneway`.
    pub sent: u64,
    /// Records the broker acknowledged.
    pub acknowledged: u64,
    /// Records sent again after a failed attempt (a record retried twice counts twice).
    pub retried: u64,
    /// Records that failed (returned to the caller with their payload, or logged for oneway).
    pub failed: u64,
    /// Records sent again after an attempt that may have appended them without the broker
    /// being able to de-duplicate (no idempotence, or a producer-id reset): an upper bound on
    /// the duplicates this producer may have written.
    pub possible_duplicates: u64,
}

impl ProducerMetrics {
    /// Records accepted and not yet acknowledged or failed.
    pub fn pending(&self) -> u64 {
        self.sent
            .saturating_sub(self.acknowledged)
            .saturating_sub(self.failed)
    }
}

/// The live counters, shared by the handle and the sender task.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) sent: AtomicU64,
    pub(crate) acknowledged: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) possible_duplicates: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn snapshot(&self) -> ProducerMetrics {
        // Read the outcomes before `sent`, so a snapshot never shows more outcomes than sends.
        let acknowledged = self.acknowledged.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        ProducerMetrics {
            acknowledged,
            failed,
            retried: self.retried.load(Ordering::Relaxed),
            possible_duplicates: self.possible_duplicates.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Acquire),
        }
    }
}

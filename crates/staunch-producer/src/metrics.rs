//! Counters the caller can read at any time through [`crate::Producer::metrics`], also
//! recorded through the [`metrics`] facade ([`RECORDS_SENT_TOTAL`] and the others;
//! [`describe`] gives them help texts) so an application that installs a recorder before it
//! creates its producers exports them.

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

/// Counter: records accepted by `send`, `send_async` or `send_oneway`, all producers of the
/// process together.
pub const RECORDS_SENT_TOTAL: &str = "staunch_producer_records_sent_total";
/// Counter: records the broker acknowledged.
pub const RECORDS_ACKNOWLEDGED_TOTAL: &str = "staunch_producer_records_acknowledged_total";
/// Counter: records sent again after a failed attempt.
pub const RECORDS_RETRIED_TOTAL: &str = "staunch_producer_records_retried_total";
/// Counter: records that failed (returned to the caller, or logged for oneway sends).
pub const RECORDS_FAILED_TOTAL: &str = "staunch_producer_records_failed_total";
/// Counter: records sent again after an attempt the broker may not de-duplicate.
pub const RECORDS_POSSIBLE_DUPLICATES_TOTAL: &str =
    "staunch_producer_records_possible_duplicates_total";

/// Registers the help texts of the counters above with the installed `metrics` recorder.
/// Producers record through the [`metrics`] facade as well as in [`ProducerMetrics`]: an
/// application that installs a recorder (e.g. `metrics-exporter-prometheus`) before it creates
/// its producers exports these counters; without one they cost nothing.
pub fn describe() {
    use metrics::{Unit, describe_counter};
    describe_counter!(RECORDS_SENT_TOTAL, Unit::Count, "Records accepted by send");
    describe_counter!(
        RECORDS_ACKNOWLEDGED_TOTAL,
        Unit::Count,
        "Records the broker acknowledged"
    );
    describe_counter!(
        RECORDS_RETRIED_TOTAL,
        Unit::Count,
        "Records sent again after a failed attempt"
    );
    describe_counter!(RECORDS_FAILED_TOTAL, Unit::Count, "Records that failed");
    describe_counter!(
        RECORDS_POSSIBLE_DUPLICATES_TOTAL,
        Unit::Count,
        "Records resent after an attempt the broker may not de-duplicate"
    );
}

/// One count: read by [`Metrics::snapshot`], and mirrored to a `metrics` counter.
#[derive(Debug)]
pub(crate) struct Count {
    local: AtomicU64,
    exported: metrics::Counter,
}

impl Count {
    fn new(name: &'static str) -> Self {
        Count {
            local: AtomicU64::new(0),
            exported: metrics::counter!(name),
        }
    }

    /// Adds `n` to the local count only; [`Count::export`] follows unless
    /// [`Count::sub_local`] undoes it.
    pub(crate) fn add_local(&self, n: u64) {
        self.local.fetch_add(n, Ordering::AcqRel);
    }

    /// Undoes [`Count::add_local`].
    pub(crate) fn sub_local(&self, n: u64) {
        self.local.fetch_sub(n, Ordering::AcqRel);
    }

    /// Adds `n` to the exported counter only (after [`Count::add_local`]).
    pub(crate) fn export(&self, n: u64) {
        self.exported.increment(n);
    }

    fn load(&self, order: Ordering) -> u64 {
        self.local.load(order)
    }
}

/// The live counters, shared by the handle and the sender task.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) sent: Count,
    pub(crate) acknowledged: Count,
    pub(crate) retried: Count,
    pub(crate) failed: Count,
    pub(crate) possible_duplicates: Count,
}

impl Default for Metrics {
    /// Zero counts, exported through the recorder installed now (if any).
    fn default() -> Self {
        Metrics {
            sent: Count::new(RECORDS_SENT_TOTAL),
            acknowledged: Count::new(RECORDS_ACKNOWLEDGED_TOTAL),
            retried: Count::new(RECORDS_RETRIED_TOTAL),
            failed: Count::new(RECORDS_FAILED_TOTAL),
            possible_duplicates: Count::new(RECORDS_POSSIBLE_DUPLICATES_TOTAL),
        }
    }
}

impl Metrics {
    pub(crate) fn add(counter: &Count, n: u64) {
        counter.local.fetch_add(n, Ordering::AcqRel);
        counter.exported.increment(n);
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

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn counts_are_mirrored_to_the_metrics_facade() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let metrics = metrics::with_local_recorder(&recorder, Metrics::default);
        Metrics::add(&metrics.sent, 3);
        Metrics::add(&metrics.acknowledged, 2);
        Metrics::add(&metrics.failed, 1);
        let exported = snapshotter.snapshot().into_vec();
        let count = |name: &str| {
            exported
                .iter()
                .find(|(k, ..)| k.key().name() == name)
                .map(|(.., v)| match v {
                    DebugValue::Counter(n) => *n,
                    other => panic!("{name}: {other:?}"),
                })
        };
        assert_eq!(count(RECORDS_SENT_TOTAL), Some(3));
        assert_eq!(count(RECORDS_ACKNOWLEDGED_TOTAL), Some(2));
        assert_eq!(count(RECORDS_FAILED_TOTAL), Some(1));
        assert_eq!(count(RECORDS_RETRIED_TOTAL), Some(0));
        let local = metrics.snapshot();
        assert_eq!((local.sent, local.acknowledged, local.failed), (3, 2, 1));
    }
}

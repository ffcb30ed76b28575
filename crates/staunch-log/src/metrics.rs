//! The metrics this crate records, through the [`metrics`] facade: names in one place, and
//! [`describe`] to give them help texts. Nothing is exported here; an application installs a
//! recorder (the `staunch serve` binary installs a Prometheus one) before it opens logs, and
//! without one every handle is a no-op.

use metrics::{Histogram, Unit};

/// Histogram: how long each fsync of a log file or directory took, in seconds (group-commit
/// rounds, rolls, sealing, zero-filling, truncation and close alike).
pub const FSYNC_DURATION_SECONDS: &str = "staunch_log_fsync_duration_seconds";
/// Histogram: records made durable by one group-commit round (one shared fsync).
pub const GROUP_COMMIT_RECORDS: &str = "staunch_log_group_commit_records";
/// Histogram: bytes made durable by one group-commit round (one shared fsync).
pub const GROUP_COMMIT_BYTES: &str = "staunch_log_group_commit_bytes";

/// Registers the help text and unit of every metric above with the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        FSYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each fsync of a log file or directory"
    );
    metrics::describe_histogram!(
        GROUP_COMMIT_RECORDS,
        Unit::Count,
        "Records made durable by one group-commit fsync round"
    );
    metrics::describe_histogram!(
        GROUP_COMMIT_BYTES,
        Unit::Bytes,
        "Bytes made durable by one group-commit fsync round"
    );
}

/// The handles one log records through, taken from the recorder once when it opens.
#[derive(Debug, Clone)]
pub(crate) struct LogMetrics {
    pub(crate) fsync_seconds: Histogram,
    pub(crate) group_commit_records: Histogram,
    pub(crate) group_commit_bytes: Histogram,
}

impl LogMetrics {
    /// Takes the handles from the recorder installed now (no-ops without one).
    pub(crate) fn new() -> Self {
        LogMetrics {
            fsync_seconds: metrics::histogram!(FSYNC_DURATION_SECONDS),
            group_commit_records: metrics::histogram!(GROUP_COMMIT_RECORDS),
            group_commit_bytes: metrics::histogram!(GROUP_COMMIT_BYTES),
        }
    }
}

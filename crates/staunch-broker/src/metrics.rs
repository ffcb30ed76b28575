//! The metrics this crate records, through the [`metrics`] facade: names in one place, and
//! [`describe`] to give them help texts. An application installs a recorder (the `staunch
//! serve` binary installs a Prometheus one) before it opens the broker; without one every
//! handle is a no-op.
//!
//! The per-topic counters are taken once per partition when it opens,
//! so the produce and fetch paths only add to them. The gauges (offline partitions, consumer
//! lag) are set by [`Broker::refresh_metrics`](crate::Broker::refresh_metrics), which an
//! exporter calls when it is scraped.

use metrics::{Counter, Unit};

/// Counter, label `topic`: records appended to the topic's partitions by produce requests.
pub const RECORDS_IN_TOTAL: &str = "staunch_broker_records_in_total";
/// Counter, label `topic`: bytes of record batches appended by produce requests.
pub const BYTES_IN_TOTAL: &str = "staunch_broker_bytes_in_total";
/// Counter, label `topic`: records returned to fetch requests (whole batches; a fetch from the
/// middle of a batch counts the whole batch, as it is sent).
pub const RECORDS_OUT_TOTAL: &str = "staunch_broker_records_out_total";
/// Counter, label `topic`: bytes of record batches returned to fetch requests.
pub const BYTES_OUT_TOTAL: &str = "staunch_broker_bytes_out_total";
/// Gauge: partitions that are not serving (their log could not be opened, or their topic's
/// metadata could not be read: such a topic counts one).
pub const PARTITIONS_OFFLINE: &str = "staunch_broker_partitions_offline";
/// Gauge: partitions serving.
pub const PARTITIONS_ONLINE: &str = "staunch_broker_partitions_online";
/// Gauge, labels `group` and `topic`: records of the topic not yet consumed by the group —
/// the sum over the partitions the group committed an offset for of high watermark minus
/// committed offset.
pub const CONSUMER_GROUP_LAG: &str = "staunch_broker_consumer_group_lag";

/// Registers the help text and unit of every metric above with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        RECORDS_IN_TOTAL,
        Unit::Count,
        "Records appended by produce requests, by topic"
    );
    metrics::describe_counter!(
        BYTES_IN_TOTAL,
        Unit::Bytes,
        "Bytes of record batches appended by produce requests, by topic"
    );
    metrics::describe_counter!(
        RECORDS_OUT_TOTAL,
        Unit::Count,
        "Records returned to fetch requests, by topic"
    );
    metrics::describe_counter!(
        BYTES_OUT_TOTAL,
        Unit::Bytes,
        "Bytes of record batches returned to fetch requests, by topic"
    );
    metrics::describe_gauge!(
        PARTITIONS_OFFLINE,
        Unit::Count,
        "Partitions not serving because their storage could not be opened"
    );
    metrics::describe_gauge!(PARTITIONS_ONLINE, Unit::Count, "Partitions serving");
    metrics::describe_gauge!(
        CONSUMER_GROUP_LAG,
        Unit::Count,
        "High watermark minus committed offset, summed over a topic's partitions, by group and topic"
    );
}

/// The counters one partition adds to, labelled with its topic; taken from the recorder once
/// when the partition opens.
#[derive(Debug, Clone)]
pub(crate) struct PartitionMetrics {
    pub(crate) records_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) records_out: Counter,
    pub(crate) bytes_out: Counter,
}

impl PartitionMetrics {
    /// Handles that record nothing (a partition opened outside a topic, in tests).
    pub(crate) fn none() -> Self {
        PartitionMetrics {
            records_in: Counter::noop(),
            bytes_in: Counter::noop(),
            records_out: Counter::noop(),
            bytes_out: Counter::noop(),
        }
    }

    /// The handles of `topic`, from the recorder installed now.
    pub(crate) fn for_topic(topic: &str) -> Self {
        let label = || [("topic", topic.to_owned())];
        PartitionMetrics {
            records_in: metrics::counter!(RECORDS_IN_TOTAL, &label()),
            bytes_in: metrics::counter!(BYTES_IN_TOTAL, &label()),
            records_out: metrics::counter!(RECORDS_OUT_TOTAL, &label()),
            bytes_out: metrics::counter!(BYTES_OUT_TOTAL, &label()),
        }
    }
}

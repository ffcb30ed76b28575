//! The consumer's settings, with Kafka's and spring-kafka's defaults.

use std::time::Duration;

use staunch_core::{ApiError, BackOff, Offset, TopicPartition};

use crate::assignor::Assignor;
use crate::handler::{ConsumerRecord, ErrorClassifier};
use crate::policy::{FailurePolicy, TopicNaming};

/// Where a partition without a committed offset starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OffsetReset {
    /// From the first record.
    #[default]
    Earliest,
    /// From the next record produced.
    Latest,
}

/// How a [`crate::Consumer`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// The consumer group; offsets are committed under it, also for manually assigned partitions.
    pub group_id: String,
    /// Blocking retry or retry topics, and the back-off (default: spring's ten deliveries).
    pub failure: FailurePolicy,
    /// Names of retry and dead-letter topics (default: spring's `-retry-<ms>` and `.DLT`).
    pub naming: TopicNaming,
    /// Classifies errors the handler left unclassified (default: all retriable).
    pub classifier: ErrorClassifier,
    /// The assignor this member proposes (default: range).
    pub assignor: Assignor,
    /// Where partitions without a committed offset start.
    pub reset: OffsetReset,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`: how long a rebalance waits for members to rejoin.
    pub rebalance_timeout: Duration,
    /// How often the background task heartbeats.
    pub heartbeat_interval: Duration,
    /// `fetch.max.wait.ms`; also the longest a poll sleeps when nothing is fetchable.
    pub fetch_max_wait: Duration,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub partition_max_bytes: i32,
    /// The pipelined commit at the end of a poll goes out at most this often (spring's
    /// `AckMode.TIME`, Kafka's `auto.commit.interval.ms`, but only ever for records that
    /// were handled or durably forwarded). A poll in between leaves its progress to a later
    /// poll: a consumer that crashes meanwhile gets the records handled since the last commit
    /// sent again (about this long's worth more), nothing is skipped; one that stops polling
    /// commits its progress only on [`crate::Consumer::commit`] or close. A poll that changed
    /// an attempt count commits regardless, and so do `commit`, close and a rebalance.
    /// Default 5 ms: about one commit per 15 polls of 1 MiB each on the development machine
    /// instead of one per poll (each an fsync on the broker).
    pub commit_interval: Duration,
    /// At most this many records per batch-handler call.
    pub max_batch_records: usize,
    /// `max.poll.records`: at most this many fetched records are taken in by one poll (handed
    /// to the handler, or parked behind a failing key in ordered mode); the rest are not read
    /// and are fetched again by the next poll. `None` (the default): no limit. Can be changed
    /// between polls with [`crate::Consumer::set_max_poll_records`], e.g. to stop after
    /// exactly N records.
    pub max_poll_records: Option<usize>,
    /// How long a forward (retry / dead-letter write) may wait for acks=all.
    pub forward_timeout: Duration,
    /// Pause between tries of a forward that failed; it is retried for ever (the partition
    /// stays where it is meanwhile), so only the delays matter.
    pub forward_backoff: BackOff,
    /// Topic configs (Kafka names) of the retry and dead-letter topics this consumer
    /// creates; a topic that already exists keeps its own. Default `retention.ms=-1` and
    /// `retention.bytes=-1`: a record waiting for a retry or an operator never expires. Set
    /// an empty list to take the cluster's defaults.
    pub forward_topic_configs: Vec<(String, String)>,
    /// Ordered mode: `Some(capacity)` parks failing keys (at most `capacity` records per
    /// partition) instead of blocking the partition. Needs a [`FailurePolicy::Blocking`]
    /// policy and a record handler. At most 64 failed records of a partition are retried at
    /// a time (their attempt counts must fit the committed offset's metadata); with that many,
    /// the partition waits as it does for a full lot.
    pub ordered: Option<usize>,
    /// How many failed deliveries of a record retried in place (blocking retry, ordered
    /// mode) may be missing from the committed attempt count when it is delivered again; at
    /// most 16.
    ///
    /// `1` (the default): delivery `n + 1` waits only until the broker has the count `n - 1`;
    /// the count `n` goes out with the round's pipelined commit. A record that fails once is
    /// therefore retried at once, without waiting for a durable commit, and a record that
    /// keeps failing waits for one commit every second delivery. A consumer killed at any
    /// moment resumes the count at most one failure behind the last delivery it started
    /// (that one, if it was running or its failure was not committed, is delivered again
    /// too): per crash, a record may get up to two deliveries more than the policy allows.
    ///
    /// `0`: every failure is committed before the record is delivered again (one durable
    /// commit, an fsync on Staunch, per failed delivery); per crash, only the delivery that
    /// was running or whose failure was not committed yet is repeated.
    ///
    /// Either way a graceful hand-over (commit, close, rebalance) commits the exact count.
    pub max_uncommitted_failures: u32,
}

impl ConsumerConfig {
    /// Defaults for `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerConfig {
            group_id: group_id.into(),
            failure: FailurePolicy::default(),
            naming: TopicNaming::default(),
            classifier: ErrorClassifier::default(),
            assignor: Assignor::default(),
            reset: OffsetReset::default(),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            commit_interval: Duration::from_millis(5),
            max_batch_records: 500,
            max_poll_records: None,
            forward_timeout: Duration::from_secs(30),
            forward_backoff: BackOff::exponential(
                Duration::from_millis(100),
                2.0,
                Duration::from_secs(5),
            ),
            forward_topic_configs: vec![
                ("retention.ms".to_owned(), "-1".to_owned()),
                ("retention.bytes".to_owned(), "-1".to_owned()),
            ],
            ordered: None,
            max_uncommitted_failures: 1,
        }
    }
}

/// Notifications from the consumer; every method defaults to doing nothing. Called on the
/// task that polls.
pub trait ConsumerEvents: Send {
    /// Partitions were assigned (after a rebalance or [`crate::Consumer::assign`]). With
    /// [`crate::Assignor::CooperativeSticky`] only the partitions added by this rebalance (the
    /// kept ones stay as they were); possibly none.
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions are about to be taken away; their processed offsets were just committed.
    /// Eager assignors revoke every partition before each rebalance; with
    /// [`crate::Assignor::CooperativeSticky`] only the partitions that move are revoked.
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// A record was forwarded (acknowledged) to a retry topic or, if `dead_letter`, to the
    /// dead-letter topic; its source offset may now be committed.
    fn on_forwarded(
        &mut self,
        _record: &ConsumerRecord,
        _destination: &TopicPartition,
        _dead_letter: bool,
    ) {
    }
    /// A forward failed: the partition `source` is stopped at `offset` until a later try
    /// succeeds (back-pressure, never a drop).
    fn on_forward_failed(
        &mut self,
        _source: &TopicPartition,
        _offset: Offset,
        _destination: &str,
        _error: &ApiError,
    ) {
    }
}

/// [`ConsumerEvents`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl ConsumerEvents for NoEvents {}

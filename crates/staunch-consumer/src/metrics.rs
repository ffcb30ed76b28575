//! What a [`Consumer`](crate::Consumer) counted: per topic and in total, for its group.
//!
//! No registry and no exporter here: [`Consumer::metrics`](crate::Consumer::metrics) returns a
//! [`Metrics`] snapshot, which an application hands to whatever it reports with. Counters
//! start at zero when the consumer is created and only grow; [`Counters::in_retry`] is a
//! gauge, computed when the snapshot is taken. Records a redrive replayed are counted by the
//! redrive itself ([`RedriveReport::redriven`](crate::RedriveReport::redriven) and
//! [`RedriveReport::redriven_to`](crate::RedriveReport::redriven_to)), since it runs apart
//! from any consumer.
//!
//! The counters (not the gauge) are also recorded through the [`metrics`] facade, labelled
//! by group and topic ([`RECORDS_PROCESSED_TOTAL`] and the others; [`describe`] gives them
//! help texts), so an application that installs a recorder — `metrics-exporter-prometheus`,
//! say — before it creates the consumer exports them with no code of its own.
//!
//! # Which topic a record counts under
//! The topic of the partition it was **read from**: the source topic, or a retry topic for a
//! record being retried there. Under retry topics a record that fails twice therefore counts
//! as retried under `orders` (forwarded to `orders-retry-3000`) and as dead-lettered under
//! `orders-retry-3000`; [`Metrics::total`] adds every topic up.

use std::collections::BTreeMap;

/// The counters of one topic, or of all of them ([`Metrics::total`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records the handler finished (`Ok`), whatever delivery it was.
    pub processed: u64,
    /// Failed deliveries after which the record is delivered again: a blocking retry was
    /// scheduled (the record is redelivered in place after its back-off), or the record was
    /// forwarded to a retry topic and the write acknowledged. A record that fails its first
    /// nine deliveries under spring's default policy and then goes to the dead-letter topic
    /// counts 9 here and 1 in [`dead_lettered`](Self::dead_lettered).
    pub retried: u64,
    /// The part of [`retried`](Self::retried) that went through a retry topic: forwards to a
    /// retry topic that were acknowledged.
    pub forwarded_to_retry: u64,
    /// Records forwarded to a dead-letter topic, counted when the write was acknowledged
    /// (after which the source offset may be committed). Forwards are not waited for, so the
    /// acknowledgement is counted by a later poll, or by `commit`, which waits for them.
    pub dead_lettered: u64,
    /// Forward writes (to a retry or dead-letter topic) that failed; each is tried again,
    /// with the partition stopped meanwhile ([`Consumer::stalled`](crate::Consumer::stalled)).
    pub forward_failures: u64,
    /// Gauge: records of this consumer's partitions that failed at least once and are not
    /// finished, at the time of the snapshot. Per partition: the records in its retry ledger
    /// (blocking retry, including counts read back from the committed metadata after a
    /// restart or rebalance, and ordered mode's blocked keys); a record whose forward is not
    /// yet acknowledged, unless counted already; and for a partition of a retry topic, the
    /// records in it at or after this consumer's position, up to its end as last seen (the
    /// high watermark of its last fetch, or a later forward of this consumer to it). Records
    /// another consumer forwarded to it since its last fetch show up after the next fetch.
    pub in_retry: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.processed += other.processed;
        self.retried += other.retried;
        self.forwarded_to_retry += other.forwarded_to_retry;
        self.dead_lettered += other.dead_lettered;
        self.forward_failures += other.forward_failures;
        self.in_retry += other.in_retry;
    }
}

/// A snapshot of a consumer's counters, taken by
/// [`Consumer::metrics`](crate::Consumer::metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// The consumer group.
    pub group: String,
    /// Every topic added up.
    pub total: Counters,
    /// By topic read from (see the [module docs](self)): every topic the consumer counted
    /// something for or has partitions of now.
    pub topics: BTreeMap<String, Counters>,
}

impl Metrics {
    /// The counters of `topic`; all zero for a topic the consumer never read.
    pub fn topic(&self, topic: &str) -> Counters {
        self.topics.get(topic).copied().unwrap_or_default()
    }

    /// Builds a snapshot from the running counters and the gauge per topic.
    pub(crate) fn snapshot(
        group: &str,
        counted: &BTreeMap<String, Counters>,
        in_retry: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        let mut topics = counted.clone();
        for (topic, n) in in_retry {
            topics.entry(topic).or_default().in_retry += n;
        }
        let mut total = Counters::default();
        for c in topics.values() {
            total.add(c);
        }
        Metrics {
            group: group.to_owned(),
            total,
            topics,
        }
    }
}

/// Counter, labels `group` and `topic`: records the handler finished ([`Counters::processed`]).
pub const RECORDS_PROCESSED_TOTAL: &str = "staunch_consumer_records_processed_total";
/// Counter, labels `group` and `topic`: failed deliveries retried ([`Counters::retried`]).
pub const RECORDS_RETRIED_TOTAL: &str = "staunch_consumer_records_retried_total";
/// Counter, labels `group` and `topic`: records forwarded to a retry topic
/// ([`Counters::forwarded_to_retry`]).
pub const RECORDS_FORWARDED_TO_RETRY_TOTAL: &str =
    "staunch_consumer_records_forwarded_to_retry_total";
/// Counter, labels `group` and `topic`: records dead-lettered ([`Counters::dead_lettered`]).
pub const RECORDS_DEAD_LETTERED_TOTAL: &str = "staunch_consumer_records_dead_lettered_total";
/// Counter, labels `group` and `topic`: forward writes that failed
/// ([`Counters::forward_failures`]).
pub const FORWARD_FAILURES_TOTAL: &str = "staunch_consumer_forward_failures_total";

/// Registers the help texts of the counters above with the installed `metrics` recorder.
/// A consumer counts through the [`metrics`] facade as well as in its [`Metrics`] snapshot
/// (the `in_retry` gauge only there): an application that installs a recorder exports them;
/// without one they cost nothing.
pub fn describe() {
    use metrics::{Unit, describe_counter};
    describe_counter!(
        RECORDS_PROCESSED_TOTAL,
        Unit::Count,
        "Records the handler finished"
    );
    describe_counter!(
        RECORDS_RETRIED_TOTAL,
        Unit::Count,
        "Failed deliveries retried"
    );
    describe_counter!(
        RECORDS_FORWARDED_TO_RETRY_TOTAL,
        Unit::Count,
        "Records forwarded to a retry topic"
    );
    describe_counter!(
        RECORDS_DEAD_LETTERED_TOTAL,
        Unit::Count,
        "Records forwarded to a dead-letter topic"
    );
    describe_counter!(
        FORWARD_FAILURES_TOTAL,
        Unit::Count,
        "Forward writes to a retry or dead-letter topic that failed"
    );
}

/// One topic's counters as `metrics` handles, taken once when the topic is first counted.
#[derive(Debug)]
pub(crate) struct ExportedCounters {
    processed: metrics::Counter,
    retried: metrics::Counter,
    forwarded_to_retry: metrics::Counter,
    dead_lettered: metrics::Counter,
    forward_failures: metrics::Counter,
}

impl ExportedCounters {
    /// The handles of `group` and `topic`, from the recorder installed now.
    pub(crate) fn new(group: &str, topic: &str) -> Self {
        let labels = [("group", group.to_owned()), ("topic", topic.to_owned())];
        ExportedCounters {
            processed: metrics::counter!(RECORDS_PROCESSED_TOTAL, &labels),
            retried: metrics::counter!(RECORDS_RETRIED_TOTAL, &labels),
            forwarded_to_retry: metrics::counter!(RECORDS_FORWARDED_TO_RETRY_TOTAL, &labels),
            dead_lettered: metrics::counter!(RECORDS_DEAD_LETTERED_TOTAL, &labels),
            forward_failures: metrics::counter!(FORWARD_FAILURES_TOTAL, &labels),
        }
    }

    /// Exports what one update changed, `before` to `after` (counters only grow).
    pub(crate) fn add(&self, before: &Counters, after: &Counters) {
        let grew = |b: u64, a: u64| a.saturating_sub(b);
        for (counter, n) in [
            (&self.processed, grew(before.processed, after.processed)),
            (&self.retried, grew(before.retried, after.retried)),
            (
                &self.forwarded_to_retry,
                grew(before.forwarded_to_retry, after.forwarded_to_retry),
            ),
            (
                &self.dead_lettered,
                grew(before.dead_lettered, after.dead_lettered),
            ),
            (
                &self.forward_failures,
                grew(before.forward_failures, after.forward_failures),
            ),
        ] {
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_exported_as_counters_by_group_and_topic() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let exported = metrics::with_local_recorder(&recorder, || ExportedCounters::new("g", "t"));
        let before = Counters::default();
        let after = Counters {
            processed: 4,
            dead_lettered: 1,
            ..before
        };
        exported.add(&before, &after);
        let snapshot = snapshotter.snapshot().into_vec();
        let count = |name: &str| {
            snapshot
                .iter()
                .find(|(k, ..)| {
                    k.key().name() == name
                        && k.key()
                            .labels()
                            .any(|l| l.key() == "group" && l.value() == "g")
                        && k.key()
                            .labels()
                            .any(|l| l.key() == "topic" && l.value() == "t")
                })
                .map(|(.., v)| match v {
                    DebugValue::Counter(n) => *n,
                    other => panic!("{name}: {other:?}"),
                })
        };
        assert_eq!(count(RECORDS_PROCESSED_TOTAL), Some(4));
        assert_eq!(count(RECORDS_DEAD_LETTERED_TOTAL), Some(1));
        assert_eq!(count(RECORDS_RETRIED_TOTAL), Some(0));
    }

    #[test]
    fn snapshot_adds_topics_up_and_lists_assigned_topics() {
        let mut counted = BTreeMap::new();
        counted.insert(
            "orders".to_owned(),
            Counters {
                processed: 5,
                retried: 2,
                forwarded_to_retry: 2,
                ..Counters::default()
            },
        );
        counted.insert(
            "orders-retry-300".to_owned(),
            Counters {
                dead_lettered: 1,
                ..Counters::default()
            },
        );
        let m = Metrics::snapshot(
            "g",
            &counted,
            [
                ("orders-retry-300".to_owned(), 1),
                ("payments".to_owned(), 0),
            ],
        );
        assert_eq!(m.group, "g");
        assert_eq!(
            m.total,
            Counters {
                processed: 5,
                retried: 2,
                forwarded_to_retry: 2,
                dead_lettered: 1,
                forward_failures: 0,
                in_retry: 1,
            }
        );
        assert_eq!(m.topic("orders-retry-300").in_retry, 1);
        assert_eq!(m.topic("payments"), Counters::default());
        assert!(m.topics.contains_key("payments"));
        assert_eq!(m.topic("never"), Counters::default());
    }
}

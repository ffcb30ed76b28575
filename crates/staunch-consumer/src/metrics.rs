//! What a [`Consumer`](crate::Consumer) counted: per topic and in total, for its group.
//!
//! No registry and no exporter: [`Consumer::metrics`](crate::Consumer::metrics) returns a
//! [`Metrics`] snapshot, which an application hands to whatever it reports with. Counters
//! start at zero when the consumer is created and only grow; [`Counters::in_retry`] is a
//! gauge, computed when the snapshot is taken. Records a redrive replayed are counted by the
//! redrive itself ([`RedriveReport::redriven`](crate::RedriveReport::redriven) and
//! [`RedriveReport::redriven_to`](crate::RedriveReport::redriven_to)), since it runs apart
//! from any consumer.
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Identifiers, as newtypes over the integers Kafka puts on the wire.

use std::fmt;

/// A position in one partition's log: the offset of a record. Offsets start at 0 and grow by one
/// per record; the log end offset is the offset the next appended record will get.
pub type Offset = i64;

/// The epoch of a partition's leader. It grows by one with every leader change; every batch stores
/// the epoch of the leader that appended it, which is what lets a follower find where its log and
/// the new leader's log diverge (KIP-101). `-1` means "no epoch" on the wire.
pub type LeaderEpoch = i32;

/// A producer id handed out by `InitProducerId`; `-1` means "not idempotent".
pub type ProducerId = i64;

/// The epoch of a producer id; a higher epoch fences older producer instances.
pub type ProducerEpoch = i16;

/// A topic name and partition index: the unit that owns one log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition index within the topic, from 0.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic partition from its parts.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    /// Formats as `topic-partition`, the way Kafka names partition directories.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_a_kafka_partition_directory() {
        assert_eq!(TopicPartition::new("orders", 3).to_string(), "orders-3");
    }
}

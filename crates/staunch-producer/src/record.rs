//! What a caller hands to the producer ([`ProducerRecord`]) and what it gets back on success
//! ([`RecordMetadata`]).

use bytes::Bytes;
use staunch_core::{Offset, TopicPartition};

/// A record header: a name and an optional value, carried to consumers unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header name (Kafka header keys are strings).
    pub key: String,
    /// The value; `None` is a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// One record to send: a topic, an optional partition, key, value, headers and timestamp.
///
/// The payload is held as [`Bytes`], so a record the producer hands back on failure carries the
/// same key, value and headers the caller gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition; when set it wins over the key and the sticky partitioner.
    pub partition: Option<i32>,
    /// The key; keyed records go to `toPositive(murmur2(key)) % partitions`, as in Kafka.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Create time in ms since the Unix epoch; `None` stamps the time `send` accepted it.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition explicitly.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the create timestamp (ms since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// Bytes the record occupies in the producer's buffer: key, value and headers plus a fixed
    /// per-record overhead. What [`crate::ProducerConfig::buffer_memory`] counts.
    pub fn buffered_size(&self) -> usize {
        const OVERHEAD: usize = 32;
        OVERHEAD
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|h| 8 + h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    /// The topic and partition.
    pub partition: TopicPartition,
    /// The record's offset; `-1` when the broker did not say (with `acks=0`, or when a retry
    /// was answered `DUPLICATE_SEQUENCE_NUMBER` without the original offset).
    pub offset: Offset,
    /// The record's timestamp: the broker's append time for topics that use it, else the
    /// create time the record was sent with.
    pub timestamp: i64,
}

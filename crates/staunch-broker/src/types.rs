//! The broker's request and result types: plain data, no wire encoding. `staunch-server`
//! converts Kafka messages to and from these.

use bytes::{Bytes, BytesMut};
use staunch_core::{ErrorCode, Offset};
use uuid::Uuid;

/// Records for one partition in a produce call.
#[derive(Debug)]
pub struct ProducePartition {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// Kafka v2 record batches as the producer sent them; the broker rewrites base offsets and
    /// leader epochs in place.
    pub records: BytesMut,
}

/// What happened to one partition's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// `None` when the records were appended (or were a retried duplicate).
    pub error: ErrorCode,
    /// A message explaining the error, if any.
    pub error_message: Option<String>,
    /// Offset of the first record, or -1 on error.
    pub base_offset: Offset,
    /// Broker append time for log-append-time topics, else -1.
    pub log_append_time_ms: i64,
    /// The partition's first offset, or -1 on error.
    pub log_start_offset: Offset,
}

impl ProduceResult {
    /// A partition whose records were not appended, with the reason.
    pub fn failed(
        topic: String,
        partition: i32,
        error: ErrorCode,
        error_message: Option<String>,
    ) -> Self {
        ProduceResult {
            topic,
            partition,
            error,
            error_message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// One partition to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The first offset wanted.
    pub fetch_offset: Offset,
    /// The consumer's view of the leader epoch, or -1 if it does not know.
    pub current_leader_epoch: i32,
    /// At most this many bytes for this partition (at least one batch if it is the first
    /// partition of the fetch with data).
    pub max_bytes: i32,
}

/// What a fetch returned for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// `None`, or why nothing could be read.
    pub error: ErrorCode,
    /// Offsets below this are acknowledged and visible; -1 on error.
    pub high_watermark: Offset,
    /// The partition's first offset; -1 on error.
    pub log_start_offset: Offset,
    /// Whole batches as stored, possibly empty.
    pub records: Bytes,
}

/// A partition as described in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition index.
    pub index: i32,
    /// `NONE`, or KAFKA_STORAGE_ERROR for a partition that is offline (its log could not be
    /// opened).
    pub error: ErrorCode,
    /// The leader's node id.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// Nodes holding replicas.
    pub replicas: Vec<i32>,
    /// Nodes in sync.
    pub isr: Vec<i32>,
    /// Nodes whose replica is offline (Kafka's `offline_replicas`).
    pub offline_replicas: Vec<i32>,
}

/// A topic as described in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic name.
    pub name: String,
    /// The topic id.
    pub id: Uuid,
    /// `None`, or why the topic is not available (e.g. it does not exist).
    pub error: ErrorCode,
    /// The partitions, by index.
    pub partitions: Vec<PartitionMetadata>,
}

/// The cluster as this broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The cluster id, stable for the life of the data directory.
    pub cluster_id: String,
    /// The controller's node id (this broker).
    pub controller_id: i32,
    /// Brokers: (node id, host, port).
    pub brokers: Vec<(i32, String, i32)>,
    /// The topics asked for (or all).
    pub topics: Vec<TopicMetadata>,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic name.
    pub name: String,
    /// Partition count; -1 for the broker default.
    pub partitions: i32,
    /// Replication factor; -1 for the default. Only 1 is possible on a single node.
    pub replication_factor: i16,
    /// Config overrides by Kafka name.
    pub configs: Vec<(String, String)>,
}

/// The outcome of one topic-level admin operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    /// The topic name.
    pub name: String,
    /// `None` on success.
    pub error: ErrorCode,
    /// Why it failed, in words.
    pub error_message: Option<String>,
}

/// How to change one config entry (IncrementalAlterConfigs' operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set the value.
    Set,
    /// Remove the override.
    Delete,
}

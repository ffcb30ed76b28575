//! Kafka requests the server tests send, built the same way everywhere.

use bytes::Bytes;
use staunch_client::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_client::kafka_protocol::messages::{
    FetchRequest, ProduceRequest, TopicName, fetch_request,
};
use staunch_client::kafka_protocol::protocol::StrBytes;
use staunch_core::BatchBuilder;

/// The wire name of `topic`.
pub(crate) fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// A produce of `records` (record batches) to partition 0 of `topic` with `acks`.
pub(crate) fn produce_request(topic: &str, acks: i16, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ])
}

/// One batch of one record holding `value`.
pub(crate) fn one_record(value: &[u8]) -> Vec<u8> {
    BatchBuilder::new(1).record(None, Some(value)).build()
}

/// A fetch of partition 0 of `topic` from `offset`, waiting up to `max_wait_ms` for a byte.
pub(crate) fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

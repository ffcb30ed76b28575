//! Writes a failed record to a retry or dead-letter topic, acknowledged by every in-sync
//! replica (`acks=all`), creating the topic first if it is missing.
//!
//! The caller commits the source offset only after [`Forwarder::forward`] returned `Ok`; an
//! error means the record may or may not be there, and the caller keeps the source offset
//! where it is and tries again (a duplicate in the dead-letter topic is possible, a loss is
//! not).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use staunch_core::api::{CreateTopicCall, PartitionBatch, ProduceCall};
use staunch_core::{Acks, ApiError, BatchBuilder, BrokerApi, Offset, TopicPartition};

use crate::handler::ConsumerRecord;
use crate::headers::{ForwardFacts, is_staunch_header};

/// Sends forwarded records; remembers which destination topics exist and their partition counts.
#[derive(Debug)]
pub(crate) struct Forwarder {
    partitions: HashMap<String, i32>,
    timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(timeout: Duration) -> Self {
        Forwarder {
            partitions: HashMap::new(),
            timeout,
        }
    }

    /// Makes sure `topic` exists, with as many partitions as `like` has (so the record can
    /// keep its partition index). Returns the destination's partition count.
    pub(crate) async fn ensure_topic<B: BrokerApi>(
        &mut self,
        api: &B,
        topic: &str,
        like: &str,
    ) -> Result<i32, ApiError> {
        if let Some(&n) = self.partitions.get(topic) {
            return Ok(n);
        }
        let wanted = match api.topic(like).await {
            Ok(info) => i32::try_from(info.partitions.len()).unwrap_or(1).max(1),
            Err(_) => 1,
        };
        api.create_topic(CreateTopicCall {
            name: topic.to_owned(),
            partitions: Some(wanted),
            replication_factor: None,
            configs: Vec::new(),
        })
        .await?;
        let info = api.topic(topic).await?;
        let n = i32::try_from(info.partitions.len()).unwrap_or(0);
        if n <= 0 {
            return Err(ApiError::Protocol(format!(
                "topic {topic} has no partitions"
            )));
        }
        self.partitions.insert(topic.to_owned(), n);
        Ok(n)
    }

    /// Writes `record` to `topic` with acks=all: same key, value, timestamp and own headers,
    /// Staunch's headers replaced by `facts`. Same partition index as the source when the
    /// destination has it, else the index modulo its partition count. `Ok` only once every
    /// in-sync replica has it, with the partition and offset it got.
    pub(crate) async fn forward<B: BrokerApi>(
        &mut self,
        api: &B,
        topic: &str,
        record: &ConsumerRecord,
        facts: &ForwardFacts,
    ) -> Result<(TopicPartition, Offset), ApiError> {
        let count = self.ensure_topic(api, topic, &facts.original_topic).await?;
        let partition = TopicPartition::new(topic, record.partition.rem_euclid(count));
        let added = facts.to_headers();
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .filter(|(k, _)| !is_staunch_header(k))
            .map(|(k, v)| (k.as_ref(), v.as_deref()))
            .chain(
                added
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))),
            )
            .collect();
        let mut builder = BatchBuilder::new(record.timestamp);
        builder.push(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            headers.iter().copied(),
        );
        let call = ProduceCall {
            acks: Acks::All,
            timeout: self.timeout,
            batches: vec![PartitionBatch {
                partition: partition.clone(),
                records: Bytes::from(builder.build()),
            }],
        };
        let mut answers = api.produce(call).await;
        match answers.pop() {
            Some((_, Ok(ack))) => Ok((partition, ack.base_offset)),
            Some((_, Err(e))) => {
                if e.code()
                    .is_some_and(|c| c == staunch_core::ErrorCode::UnknownTopicOrPartition)
                {
                    self.partitions.remove(topic);
                }
                Err(e)
            }
            None => Err(ApiError::Protocol(
                "produce answered for no partition".into(),
            )),
        }
    }
}

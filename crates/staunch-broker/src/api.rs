//! The in-process [`BrokerApi`]: a producer or consumer embedded in the broker's process calls
//! the broker directly, with the same semantics as over the network.

use bytes::BytesMut;
use staunch_core::{
    ApiError, BrokerApi, ErrorCode, PartitionInfo, ProduceAck, ProduceCall, ProducerIdentity,
    TopicInfo, TopicPartition,
};

use crate::{Broker, ProducePartition};

impl BrokerApi for Broker {
    /// Appends through the same path as a network produce; with `acks` 1 or all each `Ok` comes
    /// after the records are as durable as the topic's flush policy promises.
    async fn produce(
        &self,
        call: ProduceCall,
    ) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
        let wanted: Vec<TopicPartition> =
            call.batches.iter().map(|b| b.partition.clone()).collect();
        let partitions = call
            .batches
            .into_iter()
            .map(|b| ProducePartition {
                topic: b.partition.topic,
                partition: b.partition.partition,
                // The log stamps offsets into the bytes; the caller's buffer stays untouched.
                records: BytesMut::from(&b.records[..]),
            })
            .collect();
        let results = Broker::produce(self, call.acks.wire(), partitions).await;
        wanted
            .into_iter()
            .map(|tp| {
                let outcome = results
                    .iter()
                    .find(|r| r.topic == tp.topic && r.partition == tp.partition)
                    .map(|r| {
                        if r.error == ErrorCode::None {
                            Ok(ProduceAck {
                                base_offset: if call.acks.wire() == 0 {
                                    -1
                                } else {
                                    r.base_offset
                                },
                                log_append_time_ms: r.log_append_time_ms,
                            })
                        } else {
                            Err(ApiError::Broker {
                                code: r.error,
                                message: r.error_message.clone(),
                            })
                        }
                    })
                    .unwrap_or_else(|| Err(ApiError::broker(ErrorCode::UnknownServerError)));
                (tp, outcome)
            })
            .collect()
    }

    async fn topic(&self, topic: &str) -> Result<TopicInfo, ApiError> {
        let auto_create = self.config().auto_create_topics;
        let metadata = self
            .metadata(Some(vec![topic.to_owned()]), auto_create)
            .await;
        let Some(found) = metadata.topics.into_iter().find(|t| t.name == topic) else {
            return Err(ApiError::broker(ErrorCode::UnknownTopicOrPartition));
        };
        if found.error != ErrorCode::None {
            return Err(ApiError::broker(found.error));
        }
        Ok(TopicInfo {
            name: found.name,
            partitions: found
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    index: p.index,
                    leader: (p.leader >= 0).then_some(p.leader),
                })
                .collect(),
        })
    }

    async fn init_producer_id(&self) -> Result<ProducerIdentity, ApiError> {
        Broker::init_producer_id(self)
            .await
            .map(|id| ProducerIdentity { id, epoch: 0 })
            .map_err(ApiError::broker)
    }
}

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
    /// after the records are as durable as the topic's flush policy promises. Concurrent calls
    /// are appended in the order they are first polled.
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
        let results = self
            .write_produce_in_order(call.acks.wire(), partitions)
            .await
            .durable()
            .await;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use staunch_core::{
        Acks, BatchBuilder, BrokerApi, PartitionBatch, ProduceCall, TopicPartition,
    };

    use crate::{Broker, BrokerConfig};

    /// Many idempotent batches of one partition in flight at once, as a producer pipelines
    /// them: each call is appended in the order it was first polled, so no sequence gap is
    /// ever seen and every batch gets the next offsets.
    #[test]
    fn concurrent_calls_are_appended_in_the_order_they_were_first_polled() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let config = BrokerConfig {
                data_dir: dir.path().to_owned(),
                ..BrokerConfig::default()
            };
            let broker = Broker::open(config).unwrap();
            let id = BrokerApi::init_producer_id(&broker).await.unwrap();
            // On a current-thread runtime spawned tasks are first polled in spawn order.
            let calls: Vec<_> = (0..64)
                .map(|i| {
                    let broker = broker.clone();
                    let records = BatchBuilder::new(1)
                        .producer(id.id, id.epoch, i * 2)
                        .record(None, Some(b"a"))
                        .record(None, Some(b"b"))
                        .build();
                    tokio::spawn(async move {
                        let call = ProduceCall {
                            acks: Acks::All,
                            timeout: Duration::from_secs(10),
                            batches: vec![PartitionBatch {
                                partition: TopicPartition::new("ordered", 0),
                                records: Bytes::from(records),
                            }],
                        };
                        BrokerApi::produce(&broker, call).await
                    })
                })
                .collect();
            for (i, call) in calls.into_iter().enumerate() {
                let outcome = call.await.unwrap();
                let ack = outcome[0]
                    .1
                    .as_ref()
                    .expect("appended without a sequence gap");
                assert_eq!(ack.base_offset, i as i64 * 2);
            }
            broker.shutdown().await;
        });
    }
}

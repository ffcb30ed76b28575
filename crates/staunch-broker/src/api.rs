//! The in-process [`BrokerApi`]: a producer or consumer embedded in the broker's process calls
//! the broker directly, with the same semantics as over the network.

use bytes::{Bytes, BytesMut};
use staunch_core::api::{
    CreateTopicCall, FetchCall, FetchedRecords, GroupMemberMetadata, GroupMembership,
    JoinGroupCall, JoinOutcome, JoinedGroup, ListedOffset, OffsetAndMetadata, OffsetSpec,
    SyncGroupCall, TopicCreation,
};
use staunch_core::{
    ApiError, BrokerApi, ErrorCode, PartitionInfo, ProduceAck, ProduceCall, ProducerIdentity,
    TopicInfo, TopicPartition,
};

use crate::group::{JoinGroup, LeavingMember, SyncGroup};
use crate::{Broker, FetchPartition, NewTopic, ProducePartition};

/// The client id and host an in-process group member is described with.
const IN_PROCESS_CLIENT: (&str, &str) = ("staunch-in-process", "/in-process");

/// `Err` with the broker's code unless it is `NONE`.
fn check(code: ErrorCode) -> Result<(), ApiError> {
    match code {
        ErrorCode::None => Ok(()),
        code => Err(ApiError::broker(code)),
    }
}

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
                // The log stamps offsets into the bytes. A buffer only the call holds is taken
                // as it is; one shared with the caller is copied, so theirs stays untouched.
                records: BytesMut::from(b.records),
            })
            .collect();
        let results = self
            .write_produce_in_order(call.acks.wire(), partitions)
            .await
            .durable()
            .await;
        // `durable` answers one result per batch, in the call's order: pair them by position,
        // so two batches for one partition each get their own answer.
        let mut results = results.into_iter();
        wanted
            .into_iter()
            .map(|tp| {
                let outcome = match results.next() {
                    Some(r) if r.error == ErrorCode::None => Ok(ProduceAck {
                        base_offset: if call.acks.wire() == 0 {
                            -1
                        } else {
                            r.base_offset
                        },
                        log_append_time_ms: r.log_append_time_ms,
                    }),
                    Some(r) => Err(ApiError::Broker {
                        code: r.error,
                        message: r.error_message,
                    }),
                    None => Err(ApiError::broker(ErrorCode::UnknownServerError)),
                };
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

    /// Reads through the same path as a network fetch: below the high watermark, whole
    /// batches as stored (the `Bytes` share the log's read buffer, no copy per record), and a
    /// long poll woken by every acknowledged produce.
    async fn fetch(
        &self,
        call: FetchCall,
    ) -> Vec<(TopicPartition, Result<FetchedRecords, ApiError>)> {
        let wanted: Vec<FetchPartition> = call
            .partitions
            .iter()
            .map(|p| FetchPartition {
                topic: p.partition.topic.clone(),
                partition: p.partition.partition,
                fetch_offset: p.offset,
                current_leader_epoch: -1,
                max_bytes: p.max_bytes,
            })
            .collect();
        let results =
            Broker::fetch(self, call.max_wait, call.min_bytes, call.max_bytes, wanted).await;
        call.partitions
            .into_iter()
            .map(|p| {
                let tp = p.partition;
                let outcome = results
                    .iter()
                    .find(|r| r.topic == tp.topic && r.partition == tp.partition)
                    .map_or_else(
                        || Err(ApiError::broker(ErrorCode::UnknownServerError)),
                        |r| {
                            check(r.error).map(|()| FetchedRecords {
                                high_watermark: r.high_watermark,
                                last_stable_offset: r.high_watermark,
                                log_start_offset: r.log_start_offset,
                                records: r.records.clone(),
                            })
                        },
                    );
                (tp, outcome)
            })
            .collect()
    }

    async fn list_offsets(
        &self,
        partitions: Vec<(TopicPartition, OffsetSpec)>,
    ) -> Vec<(TopicPartition, Result<Option<ListedOffset>, ApiError>)> {
        let mut outcomes = Vec::with_capacity(partitions.len());
        for (tp, spec) in partitions {
            let found = self
                .list_offset(&tp.topic, tp.partition, spec.wire())
                .await
                .map_err(ApiError::broker)
                .map(|(offset, timestamp)| spec.found(offset, timestamp));
            outcomes.push((tp, found));
        }
        outcomes
    }

    /// Creates the topic durably (whatever `auto_create_topics` says); a replication factor
    /// above 1 is `INVALID_REPLICATION_FACTOR` on this single node.
    async fn create_topic(&self, call: CreateTopicCall) -> Result<TopicCreation, ApiError> {
        let topic = NewTopic {
            name: call.name,
            partitions: call.partitions.unwrap_or(-1),
            replication_factor: call.replication_factor.unwrap_or(-1),
            configs: call.configs,
        };
        let outcome = self
            .create_topics(vec![topic], false)
            .await
            .pop()
            .ok_or_else(|| ApiError::broker(ErrorCode::UnknownServerError))?;
        match outcome.error {
            ErrorCode::None => Ok(TopicCreation::Created),
            ErrorCode::TopicAlreadyExists => Ok(TopicCreation::AlreadyExists),
            code => Err(ApiError::Broker {
                code,
                message: outcome.error_message,
            }),
        }
    }

    /// Joins through the broker's group coordinator, as JoinGroup v4+ does over the network
    /// (so a first join answers [`JoinOutcome::MemberIdRequired`] there too).
    async fn join_group(&self, call: JoinGroupCall) -> Result<JoinOutcome, ApiError> {
        let join = JoinGroup {
            session_timeout_ms: call.session_timeout_ms(),
            rebalance_timeout_ms: call.rebalance_timeout_ms(),
            group_id: call.group_id,
            member_id: call.member_id,
            group_instance_id: call.group_instance_id,
            protocol_type: call.protocol_type,
            protocols: call
                .protocols
                .into_iter()
                .map(|p| (p.name, p.metadata))
                .collect(),
            client_id: IN_PROCESS_CLIENT.0.to_owned(),
            client_host: IN_PROCESS_CLIENT.1.to_owned(),
            requires_known_member_id: true,
        };
        let result = self.groups().join(join).await;
        match result.error {
            ErrorCode::None => Ok(JoinOutcome::Joined(JoinedGroup {
                generation_id: result.generation_id,
                protocol_type: result.protocol_type,
                protocol_name: result.protocol_name,
                leader: result.leader,
                member_id: result.member_id,
                members: result
                    .members
                    .into_iter()
                    .map(|m| GroupMemberMetadata {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        metadata: m.metadata,
                    })
                    .collect(),
            })),
            ErrorCode::MemberIdRequired => Ok(JoinOutcome::MemberIdRequired {
                member_id: result.member_id,
            }),
            code => Err(ApiError::broker(code)),
        }
    }

    async fn sync_group(&self, call: SyncGroupCall) -> Result<Bytes, ApiError> {
        let sync = SyncGroup {
            group_id: call.member.group_id,
            generation_id: call.member.generation_id,
            member_id: call.member.member_id,
            group_instance_id: call.member.group_instance_id,
            protocol_type: call.protocol_type,
            protocol_name: call.protocol_name,
            assignments: call
                .assignments
                .into_iter()
                .map(|a| (a.member_id, a.assignment))
                .collect(),
        };
        let result = self.groups().sync(sync).await;
        check(result.error).map(|()| result.assignment)
    }

    async fn heartbeat(&self, member: &GroupMembership) -> Result<(), ApiError> {
        check(self.groups().heartbeat(
            &member.group_id,
            member.generation_id,
            &member.member_id,
            member.group_instance_id.as_deref(),
        ))
    }

    async fn leave_group(&self, member: &GroupMembership) -> Result<(), ApiError> {
        let leaving = LeavingMember {
            member_id: member.member_id.clone(),
            group_instance_id: member.group_instance_id.clone(),
        };
        let result = self.groups().leave(&member.group_id, vec![leaving]);
        check(result.error)?;
        result.members.first().map_or(Ok(()), |m| check(m.error))
    }

    /// Validates and stores through the same path as a network OffsetCommit: each `Ok` comes
    /// after the commit is on disk, and it survives a restart.
    async fn commit_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Vec<(TopicPartition, Result<(), ApiError>)> {
        self.commit_group_offsets(member, offsets)
            .await
            .into_iter()
            .map(|(topic, partition, code)| (TopicPartition::new(topic, partition), check(code)))
            .collect()
    }

    async fn fetch_committed_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Result<Option<OffsetAndMetadata>, ApiError>)> {
        partitions
            .into_iter()
            .map(|tp| {
                let committed = self
                    .committed_offset(group_id, &tp.topic, tp.partition)
                    .map_err(ApiError::broker)
                    .map(|found| {
                        found.map(|c| OffsetAndMetadata {
                            offset: c.offset,
                            leader_epoch: (c.leader_epoch >= 0).then_some(c.leader_epoch),
                            metadata: c.metadata,
                        })
                    });
                (tp, committed)
            })
            .collect()
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

    /// A data directory and a current-thread runtime (spawned tasks are first polled in
    /// spawn order).
    fn setup() -> (tempfile::TempDir, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (tempfile::tempdir().unwrap(), runtime)
    }

    /// Many idempotent batches of one partition in flight at once, as a producer pipelines
    /// them: each call is appended in the order it was first polled, so no sequence gap is
    /// ever seen and every batch gets the next offsets.
    #[test]
    fn concurrent_calls_are_appended_in_the_order_they_were_first_polled() {
        let (dir, runtime) = setup();
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

    /// Two batches for one partition in one call (and one for another between them) each get
    /// their own answer, in the call's order.
    #[test]
    fn batches_for_one_partition_in_one_call_each_get_their_own_answer() {
        let (dir, runtime) = setup();
        runtime.block_on(async {
            let config = BrokerConfig {
                data_dir: dir.path().to_owned(),
                default_partitions: 2,
                ..BrokerConfig::default()
            };
            let broker = Broker::open(config).unwrap();
            let batch = |records: usize| PartitionBatch {
                partition: TopicPartition::new("twice", 0),
                records: Bytes::from(
                    (0..records)
                        .fold(BatchBuilder::new(1), |b, _| b.record(None, Some(b"v")))
                        .build(),
                ),
            };
            let other = PartitionBatch {
                partition: TopicPartition::new("twice", 1),
                records: Bytes::from(BatchBuilder::new(1).record(None, Some(b"o")).build()),
            };
            let call = ProduceCall {
                acks: Acks::All,
                timeout: Duration::from_secs(10),
                batches: vec![batch(3), other, batch(2)],
            };
            let outcome = BrokerApi::produce(&broker, call).await;
            let offsets: Vec<_> = outcome
                .iter()
                .map(|(tp, r)| (tp.partition, r.as_ref().expect("appended").base_offset))
                .collect();
            assert_eq!(offsets, vec![(0, 0), (1, 0), (0, 3)]);
            broker.shutdown().await;
        });
    }
}

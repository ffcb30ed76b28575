//! Produce, fetch, offsets lookups, metadata and producer ids.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use staunch_broker::acl::{AclOperation, ResourceType};
use staunch_broker::{Broker, FetchPartition, ProducePartition, ProduceResult};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use staunch_protocol::kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use staunch_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use staunch_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use staunch_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use staunch_protocol::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use staunch_protocol::kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, FetchRequest, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest, ProducerId,
    TopicName,
};

use super::auth::Access;
use super::{
    ClientContext, NO_TRANSACTIONS, NoAnswer, TRANSACTIONS_REFUSED, log_transactions_refused, text,
};

/// Produce, in two steps for pipelining: this call writes each partition's batches in
/// request order (fixing their offsets before the connection reads its next request); the
/// returned future resolves to the response once they are durable — `None` (no answer) for acks
/// 0, whose records are still appended and made durable; for acks 0 with any partition failed,
/// [`NoAnswer::Acks0Failed`] (the connection closes, as Kafka's does). The flag returned with
/// the future says that already: an acks 0 produce refused while being written (the
/// connection must then read no further request, none of which would get an answer). One that
/// fails only later, while waiting to be durable, is known too late for that: requests the
/// connection read behind it may have been applied, though none is answered (nothing
/// acknowledged is lost; a client that sends them again may store them twice).
pub(super) async fn produce(
    broker: &Broker,
    request: ProduceRequest,
    client_id: &str,
    context: &ClientContext,
) -> (
    impl Future<Output = Result<Option<ProduceResponse>, NoAnswer>> + Send + 'static,
    bool,
) {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    if let Some(id) = &request.transactional_id {
        log_transactions_refused("Produce", [id.0.as_str()], client_id, context);
    }
    let access = Access::new(broker, context, "Produce");
    let mut partitions = Vec::new();
    // Partitions refused before reaching the broker: not authorized to WRITE the topic, or
    // (a topic that does not exist) to create it, as Kafka's produce never creates topics
    // for a principal that may not.
    let mut denied: Vec<ProduceResult> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_owned();
        let refusal = if !access.allows(AclOperation::Write, ResourceType::Topic, &name) {
            Some(ErrorCode::TopicAuthorizationFailed)
        } else if broker.authorizer().enabled()
            && broker.topic_summary(&name).is_none()
            && !access.allows_create_topic(&name)
        {
            Some(ErrorCode::UnknownTopicOrPartition)
        } else {
            None
        };
        if let Some(code) = refusal {
            denied.extend(
                topic
                    .partition_data
                    .iter()
                    .map(|p| ProduceResult::failed(name.clone(), p.index, code, None)),
            );
            continue;
        }
        for p in topic.partition_data {
            partitions.push(ProducePartition {
                topic: name.clone(),
                partition: p.index,
                records: p.records.map(into_mutable).unwrap_or_default(),
            });
        }
    }
    let in_flight = if transactional {
        Err(partitions
            .into_iter()
            .map(|p| {
                staunch_broker::ProduceResult::failed(
                    p.topic,
                    p.partition,
                    ErrorCode::InvalidRecord,
                    Some(NO_TRANSACTIONS.to_owned()),
                )
            })
            .collect::<Vec<_>>())
    } else {
        Ok(broker.write_produce(acks, partitions).await)
    };
    let refused = !denied.is_empty()
        || match &in_flight {
            Ok(in_flight) => in_flight.refused_any(),
            Err(refused) => !refused.is_empty(),
        };
    let answer = async move {
        let mut results = match in_flight {
            Ok(in_flight) => in_flight.durable().await,
            Err(refused) => refused,
        };
        results.extend(denied);
        if acks != 0 {
            return Ok(Some(produce_response(results)));
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r.error != ErrorCode::None)
            .map(|r| match &r.error_message {
                Some(why) => format!("{}-{}: {:?}: {why}", r.topic, r.partition, r.error),
                None => format!("{}-{}: {:?}", r.topic, r.partition, r.error),
            })
            .collect();
        if failed.is_empty() {
            Ok(None)
        } else {
            Err(NoAnswer::Acks0Failed(format!(
                "produce with acks 0 failed ({})",
                failed.join(", ")
            )))
        }
    };
    (answer, acks == 0 && refused)
}

/// The record bytes as a mutable buffer (the log stamps offsets into them), without a copy
/// when the request's buffer is not shared.
fn into_mutable(records: Bytes) -> BytesMut {
    records
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

fn produce_response(results: Vec<staunch_broker::ProduceResult>) -> ProduceResponse {
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for r in results {
        let partition = PartitionProduceResponse::default()
            .with_index(r.partition)
            .with_error_code(r.error.code())
            .with_base_offset(r.base_offset)
            .with_log_append_time_ms(r.log_append_time_ms)
            .with_log_start_offset(r.log_start_offset)
            .with_error_message(r.error_message.map(text));
        match topics.iter_mut().find(|t| t.name.0.as_str() == r.topic) {
            Some(t) => t.partition_responses.push(partition),
            None => topics.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(text(r.topic)))
                    .with_partition_responses(vec![partition]),
            ),
        }
    }
    ProduceResponse::default().with_responses(topics)
}

/// Fetch: long-polls for acknowledged data. Fetch sessions are not kept: the answer's session
/// id is 0, which tells clients to send full requests.
pub(super) async fn fetch(
    broker: &Broker,
    request: FetchRequest,
    context: &ClientContext,
) -> FetchResponse {
    let access = Access::new(broker, context, "Fetch");
    let read_committed = request.isolation_level == 1;
    let mut wanted: Vec<FetchPartition> = Vec::new();
    let mut denied: Vec<staunch_broker::FetchResult> = Vec::new();
    for t in &request.topics {
        let topic = t.topic.0.as_str();
        let allowed = access.allows(AclOperation::Read, ResourceType::Topic, topic);
        for p in &t.partitions {
            if allowed {
                wanted.push(FetchPartition {
                    topic: topic.to_owned(),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    current_leader_epoch: p.current_leader_epoch,
                    max_bytes: p.partition_max_bytes,
                });
            } else {
                denied.push(staunch_broker::FetchResult {
                    topic: topic.to_owned(),
                    partition: p.partition,
                    error: ErrorCode::TopicAuthorizationFailed,
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: Bytes::new(),
                });
            }
        }
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, 60_000) as u64);
    // Nothing left to wait for: answer the refusals now, as Kafka does.
    let mut results = if wanted.is_empty() && !denied.is_empty() {
        Vec::new()
    } else {
        broker
            .fetch(max_wait, request.min_bytes, request.max_bytes, wanted)
            .await
    };
    results.extend(denied);
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for r in results {
        let partition = PartitionData::default()
            .with_partition_index(r.partition)
            .with_error_code(r.error.code())
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.high_watermark)
            .with_log_start_offset(r.log_start_offset)
            .with_aborted_transactions(read_committed.then(Vec::new))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(r.records));
        match topics.iter_mut().find(|t| t.topic.0.as_str() == r.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(text(r.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics)
}

/// ListOffsets: earliest (-2), latest (-1), max timestamp (-3) or by timestamp.
pub(super) async fn list_offsets(
    broker: &Broker,
    request: ListOffsetsRequest,
    version: i16,
    context: &ClientContext,
) -> ListOffsetsResponse {
    let access = Access::new(broker, context, "ListOffsets");
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_owned();
        let allowed = access.allows(AclOperation::Describe, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let answer = if !allowed {
                answer
                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                    .with_offset(-1)
                    .with_timestamp(-1)
            } else if p.current_leader_epoch > 0 {
                answer.with_error_code(ErrorCode::UnknownLeaderEpoch.code())
            } else {
                match broker
                    .list_offset(&name, p.partition_index, p.timestamp)
                    .await
                {
                    Ok((offset, timestamp)) => answer
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        // The leader epoch field exists from v4 on.
                        .with_leader_epoch(if offset >= 0 && version >= 4 { 0 } else { -1 }),
                    Err(code) => answer.with_error_code(code.code()),
                }
            };
            partitions.push(answer);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(TopicName(text(name)))
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Metadata: this broker, and the topics asked for (auto-creating as allowed).
pub(super) async fn metadata(
    broker: &Broker,
    request: MetadataRequest,
    version: i16,
    context: &ClientContext,
) -> MetadataResponse {
    let names = match request.topics {
        // v0 has no null: an empty list means every topic.
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .filter_map(|t| t.name.map(|n| n.0.as_str().to_owned()))
                .collect(),
        ),
        None => None,
    };
    // v0-3 have no flag; Kafka auto-creates for them.
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let access = Access::new(broker, context, "Metadata");
    // Named topics the principal may not DESCRIBE, or that do not exist and it may not
    // create, are answered TOPIC_AUTHORIZATION_FAILED without reaching the broker (nothing is
    // created); a listing of every topic leaves out the ones it may not DESCRIBE.
    let mut refused: Vec<String> = Vec::new();
    let names = names.map(|names: Vec<String>| {
        let auto_create = allow_auto_create && broker.config().auto_create_topics;
        names
            .into_iter()
            .filter(|name| {
                let ok = access.allows(AclOperation::Describe, ResourceType::Topic, name)
                    && (!auto_create
                        || !broker.authorizer().enabled()
                        || broker.topic_summary(name).is_some()
                        || access.allows_create_topic(name));
                if !ok {
                    refused.push(name.clone());
                }
                ok
            })
            .collect()
    });
    let listing = names.is_none();
    let mut cluster = broker.metadata(names, allow_auto_create).await;
    if listing && broker.authorizer().enabled() {
        cluster.topics.retain(|t| {
            access.allows_quietly(AclOperation::Describe, ResourceType::Topic, &t.name)
        });
    }
    let refused = refused.into_iter().map(|name| {
        MetadataResponseTopic::default()
            .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
            .with_name(Some(TopicName(text(name))))
    });
    let topic_operations = |name: &str| {
        if request.include_topic_authorized_operations {
            access.authorized_operations(ResourceType::Topic, name)
        } else {
            i32::MIN
        }
    };
    let cluster_operations = if request.include_cluster_authorized_operations {
        access.authorized_operations(ResourceType::Cluster, staunch_broker::acl::CLUSTER_NAME)
    } else {
        i32::MIN
    };
    let (own_host, own_port) = context.advertised(broker);
    let own_id = broker.config().node_id;
    MetadataResponse::default()
        .with_brokers(
            cluster
                .brokers
                .into_iter()
                .map(|(id, host, port)| {
                    // This broker as reached through the listener the request came in on.
                    let (host, port) = if id == own_id {
                        (own_host.clone(), own_port)
                    } else {
                        (host, port)
                    };
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(text(host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(Some(text(cluster.cluster_id)))
        .with_controller_id(BrokerId(cluster.controller_id))
        .with_cluster_authorized_operations(cluster_operations)
        .with_topics(
            cluster
                .topics
                .into_iter()
                .map(|t| {
                    MetadataResponseTopic::default()
                        .with_topic_authorized_operations(topic_operations(&t.name))
                        .with_error_code(t.error.code())
                        .with_name(Some(TopicName(text(t.name))))
                        .with_topic_id(t.id)
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_error_code(p.error.code())
                                        .with_partition_index(p.index)
                                        .with_leader_id(BrokerId(p.leader))
                                        .with_leader_epoch(p.leader_epoch)
                                        .with_replica_nodes(
                                            p.replicas.into_iter().map(BrokerId).collect(),
                                        )
                                        .with_isr_nodes(p.isr.into_iter().map(BrokerId).collect())
                                        .with_offline_replicas(
                                            p.offline_replicas.into_iter().map(BrokerId).collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .chain(refused)
                .collect(),
        )
}

/// OffsetForLeaderEpoch: the end offset of an epoch (always epoch 0 on a single node).
pub(super) fn offset_for_leader_epoch(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
    context: &ClientContext,
) -> OffsetForLeaderEpochResponse {
    let access = Access::new(broker, context, "OffsetForLeaderEpoch");
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.as_str().to_owned();
            let allowed = access.allows(AclOperation::Describe, ResourceType::Topic, &name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let answer = EpochEndOffset::default().with_partition(p.partition);
                    if !allowed {
                        return answer
                            .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                    }
                    match broker.epoch_end_offset(
                        &name,
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    ) {
                        Ok((epoch, end)) => answer.with_leader_epoch(epoch).with_end_offset(end),
                        Err(code) => answer.with_error_code(code.code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(text(name)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// InitProducerId: a new, never reused producer id with epoch 0 (idempotent producers only; one
/// with a transactional id is refused with [`TRANSACTIONS_REFUSED`]).
pub(super) async fn init_producer_id(
    broker: &Broker,
    request: InitProducerIdRequest,
    client_id: &str,
    context: &ClientContext,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default();
    if let Some(id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.0.is_empty())
    {
        log_transactions_refused("InitProducerId", [id.0.as_str()], client_id, context);
        return response
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_error_code(TRANSACTIONS_REFUSED.code());
    }
    // Kafka 3.x: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic.
    let access = Access::new(broker, context, "InitProducerId");
    if !access.allows_quietly(
        AclOperation::IdempotentWrite,
        ResourceType::Cluster,
        staunch_broker::acl::CLUSTER_NAME,
    ) && !access.allows_any(AclOperation::Write, ResourceType::Topic)
    {
        return response
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    match broker.init_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(code) => response.with_error_code(code.code()),
    }
}

/// DescribeCluster: this single node.
pub(super) fn describe_cluster(
    broker: &Broker,
    request: DescribeClusterRequest,
    context: &ClientContext,
) -> DescribeClusterResponse {
    let access = Access::new(broker, context, "DescribeCluster");
    if !access.allows_cluster(AclOperation::Describe) {
        return DescribeClusterResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(text("DESCRIBE on the cluster is not allowed")));
    }
    let (host, port) = context.advertised(broker);
    let node = broker.config().node_id;
    let operations = if request.include_cluster_authorized_operations {
        access.authorized_operations(ResourceType::Cluster, staunch_broker::acl::CLUSTER_NAME)
    } else {
        i32::MIN
    };
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(operations)
        .with_cluster_id(text(broker.cluster_id()))
        .with_controller_id(BrokerId(node))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(node))
                .with_host(text(host))
                .with_port(port),
        ])
}

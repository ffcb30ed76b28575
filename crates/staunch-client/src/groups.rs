//! Consumer groups over the network: finding a group's coordinator, the classic group protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and committed offsets (OffsetCommit,
//! OffsetFetch).
//!
//! The coordinator of each group is found with FindCoordinator and cached. It is forgotten —
//! so the next call on the group looks it up again — when an answer says
//! `NOT_COORDINATOR` or `COORDINATOR_NOT_AVAILABLE`, or when the request could not be sent or
//! answered (the coordinator moved or died). Like every `BrokerApi` call these are single
//! attempts: the caller retries.
//!
//! A broker answers a connection's requests one at a time, and JoinGroup (until every member
//! rejoined) and a follower's SyncGroup (until the leader's) can take long. So each of those two
//! goes on a connection of its own, opened for the call and closed after: two members sharing
//! one [`Client`] never wait behind each other's rebalance, and their heartbeats and commits
//! (on the coordinator lane, see [`crate::cluster`]) never wait behind a join.

use std::time::Duration;

use bytes::Bytes;
use staunch_core::api::{
    GroupMemberMetadata, GroupMembership, JoinGroupCall, JoinOutcome, JoinedGroup,
    OffsetAndMetadata, SyncGroupCall,
};
use staunch_core::{ApiError, ErrorCode, TopicPartition};
use staunch_protocol::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use staunch_protocol::kafka_protocol::messages::leave_group_request::MemberIdentity;
use staunch_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use staunch_protocol::kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use staunch_protocol::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use staunch_protocol::kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
};
use staunch_protocol::kafka_protocol::protocol::{Request, StrBytes};

use crate::Client;
use crate::cluster::{Lane, cluster_error, connect_to, host_port, lock};
use crate::routing::{by_topic, match_by_partition, missing_answer};

/// FindCoordinator's key type for consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

/// OffsetCommit 9 is KIP-848's (member epochs); 8 has every field the classic protocol uses.
const MAX_OFFSET_COMMIT_VERSION: i16 = 8;

/// OffsetFetch 9 adds KIP-848's member epoch, 10 topic ids; 8 (batched groups) is the newest
/// the classic protocol needs and Staunch answers.
const MAX_OFFSET_FETCH_VERSION: i16 = 8;

/// How much longer than the rebalance timeout the client waits for a JoinGroup answer (the
/// Java client's margin).
const JOIN_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Which connection a group request travels on.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// The pooled coordinator lane: for requests the coordinator answers at once.
    Lane,
    /// A connection of its own, waiting at most this long: for requests that may block.
    OwnConnection(Duration),
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// Whether an error code says the coordinator is elsewhere (or gone): look it up again.
fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
    )
}

impl Client {
    /// The node coordinating `group`: cached, or asked for with FindCoordinator on any
    /// connection (and then cached, its address learned).
    pub(crate) async fn coordinator(&self, group: &str) -> Result<i32, ApiError> {
        if let Some(&node) = lock(&self.inner.coordinators).get(group) {
            return Ok(node);
        }
        let connection = self.any_connection().await?;
        let version = connection
            .version_for::<FindCoordinatorRequest>()
            .map_err(|e| cluster_error(&e))?;
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(KEY_TYPE_GROUP)
                .with_coordinator_keys(vec![text(group)])
        } else {
            FindCoordinatorRequest::default()
                .with_key_type(KEY_TYPE_GROUP)
                .with_key(text(group))
        };
        let response = connection
            .request(version, &request)
            .await
            .map_err(|e| cluster_error(&e))?;
        let (code, message, node, host, port) = if version >= 4 {
            let found = response
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == group)
                .ok_or_else(|| {
                    ApiError::Protocol(format!(
                        "the FindCoordinator answer does not name group {group}"
                    ))
                })?;
            (
                found.error_code,
                found.error_message.clone(),
                found.node_id.0,
                found.host.clone(),
                found.port,
            )
        } else {
            (
                response.error_code,
                response.error_message.clone(),
                response.node_id.0,
                response.host.clone(),
                response.port,
            )
        };
        match ErrorCode::from_code(code) {
            ErrorCode::None => {
                self.learn_broker(node, host_port(host.as_str(), port));
                lock(&self.inner.coordinators).insert(group.to_owned(), node);
                tracing::debug!(group, node, "coordinator found");
                Ok(node)
            }
            code => Err(ApiError::Broker {
                code,
                message: message.map(|m| m.as_str().to_owned()),
            }),
        }
    }

    /// Forgets `group`'s coordinator: the next call looks it up again.
    fn forget_coordinator(&self, group: &str) {
        if lock(&self.inner.coordinators).remove(group).is_some() {
            tracing::debug!(group, "coordinator forgotten");
        }
    }

    /// Sends a request built by `build` (given the version) to `group`'s coordinator, at the
    /// highest version both sides speak up to `max_version`. A transport failure forgets the
    /// coordinator.
    async fn group_request<Req: Request>(
        &self,
        group: &str,
        max_version: i16,
        via: Via,
        build: impl FnOnce(i16) -> Req,
    ) -> Result<Req::Response, ApiError> {
        let node = self.coordinator(group).await?;
        let sent = async {
            match via {
                Via::Lane => {
                    let connection = self.connection_on(node, Lane::Coordinator).await?;
                    let version = connection
                        .version_at_most::<Req>(max_version)
                        .map_err(|e| cluster_error(&e))?;
                    connection
                        .request(version, &build(version))
                        .await
                        .map_err(|e| cluster_error(&e))
                }
                Via::OwnConnection(timeout) => {
                    let address = self.broker_address(node).ok_or_else(|| ApiError::NotSent {
                        target: format!("coordinator {node} of group {group}"),
                        reason: "the node is not in the cluster metadata".to_owned(),
                    })?;
                    let connection = connect_to(&address, self.config())
                        .await
                        .map_err(|e| cluster_error(&e))?;
                    let version = connection
                        .version_at_most::<Req>(max_version)
                        .map_err(|e| cluster_error(&e))?;
                    connection
                        .request_with_timeout(version, &build(version), timeout)
                        .await
                        .map_err(|e| cluster_error(&e))
                }
            }
        }
        .await;
        if let Err(error) = &sent
            && !matches!(error, ApiError::Protocol(_))
        {
            self.forget_coordinator(group);
        }
        sent
    }

    /// A group answer's error code as a result; a code saying the coordinator moved forgets
    /// it.
    fn group_outcome(
        &self,
        group: &str,
        code: i16,
        message: Option<&StrBytes>,
    ) -> Result<(), ApiError> {
        match ErrorCode::from_code(code) {
            ErrorCode::None => Ok(()),
            code => {
                if coordinator_moved(code) {
                    self.forget_coordinator(group);
                }
                Err(ApiError::Broker {
                    code,
                    message: message.map(|m| m.as_str().to_owned()),
                })
            }
        }
    }

    /// [`BrokerApi::join_group`](staunch_core::BrokerApi::join_group) over the network.
    pub(crate) async fn join(&self, call: JoinGroupCall) -> Result<JoinOutcome, ApiError> {
        let timeout = self
            .config()
            .request_timeout
            .max(call.rebalance_timeout.saturating_add(JOIN_ANSWER_MARGIN));
        let response = self
            .group_request(
                &call.group_id,
                i16::MAX,
                Via::OwnConnection(timeout),
                |_| {
                    JoinGroupRequest::default()
                        .with_group_id(GroupId(text(&call.group_id)))
                        .with_session_timeout_ms(call.session_timeout_ms())
                        .with_rebalance_timeout_ms(call.rebalance_timeout_ms())
                        .with_member_id(text(&call.member_id))
                        .with_group_instance_id(call.group_instance_id.as_deref().map(text))
                        .with_protocol_type(text(&call.protocol_type))
                        .with_protocols(
                            call.protocols
                                .iter()
                                .map(|p| {
                                    JoinGroupRequestProtocol::default()
                                        .with_name(text(&p.name))
                                        .with_metadata(p.metadata.clone())
                                })
                                .collect(),
                        )
                },
            )
            .await?;
        if ErrorCode::from_code(response.error_code) == ErrorCode::MemberIdRequired {
            return Ok(JoinOutcome::MemberIdRequired {
                member_id: response.member_id.as_str().to_owned(),
            });
        }
        self.group_outcome(&call.group_id, response.error_code, None)?;
        let owned = |value: &Option<StrBytes>| value.as_ref().map(|v| v.as_str().to_owned());
        Ok(JoinOutcome::Joined(JoinedGroup {
            generation_id: response.generation_id,
            protocol_type: owned(&response.protocol_type),
            protocol_name: owned(&response.protocol_name),
            leader: response.leader.as_str().to_owned(),
            member_id: response.member_id.as_str().to_owned(),
            members: response
                .members
                .iter()
                .map(|m| GroupMemberMetadata {
                    member_id: m.member_id.as_str().to_owned(),
                    group_instance_id: owned(&m.group_instance_id),
                    metadata: m.metadata.clone(),
                })
                .collect(),
        }))
    }

    /// [`BrokerApi::sync_group`](staunch_core::BrokerApi::sync_group) over the network.
    pub(crate) async fn sync(&self, call: SyncGroupCall) -> Result<Bytes, ApiError> {
        let member = &call.member;
        let response = self
            .group_request(
                &member.group_id,
                i16::MAX,
                Via::OwnConnection(self.config().request_timeout),
                |version| {
                    let request = SyncGroupRequest::default()
                        .with_group_id(GroupId(text(&member.group_id)))
                        .with_generation_id(member.generation_id)
                        .with_member_id(text(&member.member_id))
                        .with_group_instance_id(member.group_instance_id.as_deref().map(text))
                        .with_assignments(
                            call.assignments
                                .iter()
                                .map(|a| {
                                    SyncGroupRequestAssignment::default()
                                        .with_member_id(text(&a.member_id))
                                        .with_assignment(a.assignment.clone())
                                })
                                .collect(),
                        );
                    // The protocol fields exist from v5 on.
                    if version >= 5 {
                        request
                            .with_protocol_type(call.protocol_type.as_deref().map(text))
                            .with_protocol_name(call.protocol_name.as_deref().map(text))
                    } else {
                        request
                    }
                },
            )
            .await?;
        self.group_outcome(&member.group_id, response.error_code, None)?;
        Ok(response.assignment)
    }

    /// [`BrokerApi::heartbeat`](staunch_core::BrokerApi::heartbeat) over the network.
    pub(crate) async fn heartbeat_member(&self, member: &GroupMembership) -> Result<(), ApiError> {
        let response = self
            .group_request(&member.group_id, i16::MAX, Via::Lane, |_| {
                HeartbeatRequest::default()
                    .with_group_id(GroupId(text(&member.group_id)))
                    .with_generation_id(member.generation_id)
                    .with_member_id(text(&member.member_id))
                    .with_group_instance_id(member.group_instance_id.as_deref().map(text))
            })
            .await?;
        self.group_outcome(&member.group_id, response.error_code, None)
    }

    /// [`BrokerApi::leave_group`](staunch_core::BrokerApi::leave_group) over the network: one
    /// member, by id (v0–2) or by id and instance id (v3+).
    pub(crate) async fn leave(&self, member: &GroupMembership) -> Result<(), ApiError> {
        let mut batched = false;
        let response = self
            .group_request(&member.group_id, i16::MAX, Via::Lane, |version| {
                let request =
                    LeaveGroupRequest::default().with_group_id(GroupId(text(&member.group_id)));
                if version >= 3 {
                    batched = true;
                    request.with_members(vec![
                        MemberIdentity::default()
                            .with_member_id(text(&member.member_id))
                            .with_group_instance_id(member.group_instance_id.as_deref().map(text)),
                    ])
                } else {
                    request.with_member_id(text(&member.member_id))
                }
            })
            .await?;
        self.group_outcome(&member.group_id, response.error_code, None)?;
        if !batched {
            return Ok(());
        }
        let answer = response.members.first().ok_or_else(|| {
            ApiError::Protocol("the LeaveGroup answer names no member".to_owned())
        })?;
        self.group_outcome(&member.group_id, answer.error_code, None)
    }

    /// [`BrokerApi::commit_offsets`](staunch_core::BrokerApi::commit_offsets) over the network.
    pub(crate) async fn commit(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Vec<(TopicPartition, Result<(), ApiError>)> {
        if offsets.is_empty() {
            return Vec::new();
        }
        let sent = self
            .group_request(
                &member.group_id,
                MAX_OFFSET_COMMIT_VERSION,
                Via::Lane,
                |_| {
                    let partitions = offsets.iter().map(|(tp, committed)| {
                        let partition = OffsetCommitRequestPartition::default()
                            .with_partition_index(tp.partition)
                            .with_committed_offset(committed.offset)
                            .with_committed_leader_epoch(committed.leader_epoch.unwrap_or(-1))
                            .with_committed_metadata(Some(text(&committed.metadata)));
                        (tp.topic.as_str(), partition)
                    });
                    let topics = by_topic(partitions, |name, partitions| {
                        OffsetCommitRequestTopic::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    });
                    OffsetCommitRequest::default()
                        .with_group_id(GroupId(text(&member.group_id)))
                        .with_generation_id_or_member_epoch(member.generation_id)
                        .with_member_id(text(&member.member_id))
                        .with_group_instance_id(member.group_instance_id.as_deref().map(text))
                        .with_topics(topics)
                },
            )
            .await;
        let asked: Vec<&TopicPartition> = offsets.iter().map(|(tp, _)| tp).collect();
        let outcomes: Vec<Result<(), ApiError>> = match sent {
            Ok(response) => {
                let entries = response.topics.iter().flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.name.0.as_str(), p.partition_index, p.error_code))
                });
                match_by_partition(entries, &asked)
                    .into_iter()
                    .zip(&asked)
                    .map(|(code, tp)| match code {
                        Some(code) => self.group_outcome(&member.group_id, code, None),
                        None => Err(missing_answer("offset commit", tp)),
                    })
                    .collect()
            }
            Err(error) => asked.iter().map(|_| Err(error.clone())).collect(),
        };
        offsets
            .into_iter()
            .map(|(tp, _)| tp)
            .zip(outcomes)
            .collect()
    }

    /// [`BrokerApi::fetch_committed_offsets`](staunch_core::BrokerApi::fetch_committed_offsets)
    /// over the network.
    pub(crate) async fn committed(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Result<Option<OffsetAndMetadata>, ApiError>)> {
        if partitions.is_empty() {
            return Vec::new();
        }
        let wanted = || {
            partitions
                .iter()
                .map(|tp| (tp.topic.as_str(), tp.partition))
        };
        let sent = self
            .group_request(group, MAX_OFFSET_FETCH_VERSION, Via::Lane, |version| {
                if version >= 8 {
                    let topics = by_topic(wanted(), |name, indexes| {
                        OffsetFetchRequestTopics::default()
                            .with_name(name)
                            .with_partition_indexes(indexes)
                    });
                    OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(text(group)))
                            .with_topics(Some(topics)),
                    ])
                } else {
                    let topics = by_topic(wanted(), |name, indexes| {
                        OffsetFetchRequestTopic::default()
                            .with_name(name)
                            .with_partition_indexes(indexes)
                    });
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(text(group)))
                        .with_topics(Some(topics))
                }
            })
            .await;
        let asked: Vec<&TopicPartition> = partitions.iter().collect();
        let outcomes = match sent {
            Ok(response) => self.read_committed(group, &response, &asked),
            Err(error) => asked.iter().map(|_| Err(error.clone())).collect(),
        };
        partitions.into_iter().zip(outcomes).collect()
    }

    /// Each asked partition's committed offset from an OffsetFetch answer of either shape
    /// (v8+ batches groups). A group-level error applies to every partition.
    fn read_committed(
        &self,
        group: &str,
        response: &OffsetFetchResponse,
        asked: &[&TopicPartition],
    ) -> Vec<Result<Option<OffsetAndMetadata>, ApiError>> {
        // (topic, partition, offset, leader epoch, metadata, error code) per answered
        // partition; v8+ answers per group, older versions for the one group asked.
        type Entry<'a> = (&'a str, i32, i64, i32, Option<&'a StrBytes>, i16);
        macro_rules! entries {
            ($topics:expr) => {
                $topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            (
                                t.name.0.as_str(),
                                p.partition_index,
                                p.committed_offset,
                                p.committed_leader_epoch,
                                p.metadata.as_ref(),
                                p.error_code,
                            )
                        })
                    })
                    .collect::<Vec<Entry<'_>>>()
            };
        }
        let (group_code, entries) = match response.groups.first() {
            Some(answer) => (answer.error_code, entries!(answer.topics)),
            None => (response.error_code, entries!(response.topics)),
        };
        if let Err(error) = self.group_outcome(group, group_code, None) {
            return asked.iter().map(|_| Err(error.clone())).collect();
        }
        let entries =
            entries
                .into_iter()
                .map(|(topic, partition, offset, epoch, metadata, code)| {
                    (topic, partition, (offset, epoch, metadata, code))
                });
        match_by_partition(entries, asked)
            .into_iter()
            .zip(asked)
            .map(|(found, tp)| {
                let (offset, epoch, metadata, code) =
                    found.ok_or_else(|| missing_answer("offset fetch", tp))?;
                self.group_outcome(group, code, None)?;
                Ok((offset >= 0).then(|| OffsetAndMetadata {
                    offset,
                    leader_epoch: (epoch >= 0).then_some(epoch),
                    metadata: metadata.map(|m| m.as_str().to_owned()).unwrap_or_default(),
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use staunch_protocol::api_versions_response;
    use staunch_protocol::kafka_protocol::messages::find_coordinator_response::{
        Coordinator, FindCoordinatorResponse,
    };
    use staunch_protocol::kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use staunch_protocol::kafka_protocol::messages::{
        BrokerId, HeartbeatResponse, MetadataResponse, RequestKind, ResponseKind,
    };
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::fake_broker::{answer, read_request};

    const LIMIT: Duration = Duration::from_secs(20);

    /// What the fake cluster has been asked.
    #[derive(Default)]
    struct Seen {
        find_coordinator: AtomicUsize,
        heartbeats: AtomicUsize,
    }

    /// Serves one connection of a one-node cluster (node 1 at `addr`) whose coordinator
    /// answers the first heartbeat `NOT_COORDINATOR` and later ones `NONE`.
    async fn serve(mut stream: TcpStream, addr: SocketAddr, seen: Arc<Seen>) {
        while let Some(request) = read_request(&mut stream).await {
            let body = match &request.body {
                RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions_response(0)),
                RequestKind::Metadata(_) => ResponseKind::Metadata(
                    MetadataResponse::default()
                        .with_controller_id(BrokerId(1))
                        .with_brokers(vec![
                            MetadataResponseBroker::default()
                                .with_node_id(BrokerId(1))
                                .with_host(text(&addr.ip().to_string()))
                                .with_port(i32::from(addr.port())),
                        ]),
                ),
                RequestKind::FindCoordinator(find) => {
                    seen.find_coordinator.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(find.key_type, KEY_TYPE_GROUP);
                    ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default().with_coordinators(vec![
                            Coordinator::default()
                                .with_key(find.coordinator_keys[0].clone())
                                .with_node_id(BrokerId(1))
                                .with_host(text(&addr.ip().to_string()))
                                .with_port(i32::from(addr.port())),
                        ]),
                    )
                }
                RequestKind::Heartbeat(_) => {
                    let code = if seen.heartbeats.fetch_add(1, Ordering::SeqCst) == 0 {
                        ErrorCode::NotCoordinator
                    } else {
                        ErrorCode::None
                    };
                    ResponseKind::Heartbeat(
                        HeartbeatResponse::default().with_error_code(code.code()),
                    )
                }
                other => panic!("the fake cluster got an unexpected {other:?}"),
            };
            answer(&mut stream, &request, body).await;
        }
    }

    /// `NOT_COORDINATOR` fails that call and makes the next one look the coordinator up again;
    /// otherwise the coordinator is cached.
    #[tokio::test]
    async fn not_coordinator_makes_the_next_call_find_the_coordinator_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let serving = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, addr, serving.clone()));
            }
        });
        let client = crate::fake_broker::client(addr, LIMIT).await;
        let member = GroupMembership {
            group_id: "g".to_owned(),
            generation_id: 1,
            member_id: "m".to_owned(),
            group_instance_id: None,
        };
        let heartbeat = || tokio::time::timeout(LIMIT, client.heartbeat_member(&member));
        let first = heartbeat().await.unwrap().unwrap_err();
        assert_eq!(first.code(), Some(ErrorCode::NotCoordinator));
        assert!(first.is_retriable());
        assert_eq!(seen.find_coordinator.load(Ordering::SeqCst), 1);
        heartbeat().await.unwrap().unwrap();
        assert_eq!(
            seen.find_coordinator.load(Ordering::SeqCst),
            2,
            "looked up again after NOT_COORDINATOR"
        );
        heartbeat().await.unwrap().unwrap();
        assert_eq!(
            seen.find_coordinator.load(Ordering::SeqCst),
            2,
            "cached while it answers"
        );
        assert_eq!(seen.heartbeats.load(Ordering::SeqCst), 3);
    }
}

//! [`BrokerApi`] over the network: [`Client`] routes each call to the right broker and maps
//! wire answers and transport failures to [`ApiError`]s. Single attempts: nothing is retried.

use std::time::Duration;

use bytes::Bytes;
use staunch_core::api::{
    CreateTopicCall, FetchCall, FetchedRecords, GroupMembership, JoinGroupCall, JoinOutcome,
    ListedOffset, OffsetAndMetadata, OffsetSpec, SyncGroupCall, TopicCreation,
};
use staunch_core::{
    Acks, ApiError, BrokerApi, ErrorCode, ProduceAck, ProduceCall, ProducerIdentity, TopicInfo,
    TopicPartition,
};
use staunch_protocol::kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest};

use crate::Client;
use crate::cluster::{cluster_error, retarget, transport_error, wait_turn};
use crate::routing::{self, leader_may_have_moved};

/// Produce 13 addresses topics by id only; this client sends names.
const MAX_PRODUCE_VERSION: i16 = 12;

/// How much longer than the broker's own produce timeout the client waits for the answer.
const PRODUCE_ANSWER_MARGIN: Duration = Duration::from_secs(1);

impl BrokerApi for Client {
    /// Groups the batches by the leader of their partition (fetching metadata first for
    /// topics not cached, stale or expired), writes one `ProduceRequest` per leader — at the
    /// highest version both sides speak, at most 12 — and waits for the answers concurrently.
    ///
    /// Per batch, in the order given: `Ok` with the base offset; [`ApiError::Broker`] for the
    /// broker's error code (or `UNKNOWN_TOPIC_OR_PARTITION` for a partition index the topic
    /// does not have); [`ApiError::NotSent`] when no leader is known or it cannot be reached;
    /// [`ApiError::NoAnswer`] when the request was written but the connection failed or the
    /// answer did not come within `max(request_timeout, call.timeout + 1 s)`. With
    /// [`Acks::None`] a batch is `Ok` with `base_offset` -1 once written.
    ///
    /// # Ordering
    /// A call's requests are written after those of every earlier call (by first poll) on the
    /// same partitions, so an idempotent producer's batches reach each leader in sequence
    /// order. If an earlier call is stuck for longer than the request timeout, later calls stop
    /// waiting for it.
    async fn produce(
        &self,
        call: ProduceCall,
    ) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
        let ProduceCall {
            acks,
            timeout,
            batches,
        } = call;
        let partitions: Vec<TopicPartition> = batches.iter().map(|b| b.partition.clone()).collect();
        if partitions.is_empty() {
            return Vec::new();
        }
        let (written, earlier) = self.take_turn(&partitions);
        let mut topics: Vec<String> = partitions.iter().map(|p| p.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let failed = self.ensure_topics(&topics, true).await;
        let routes = self.route(&partitions, &failed);
        let mut stale: Vec<&str> = Vec::new();
        let mut results: Vec<Option<Result<ProduceAck, ApiError>>> = routes
            .iter()
            .zip(&partitions)
            .map(|(route, tp)| {
                let error = route.as_ref().err()?;
                if matches!(error, ApiError::NotSent { .. })
                    || error.code().is_some_and(leader_may_have_moved)
                {
                    stale.push(&tp.topic);
                }
                Some(Err(error.clone()))
            })
            .collect();
        let groups = routing::group_by_leader(&routes);
        let mut connections = Vec::with_capacity(groups.len());
        for (node, indices) in groups {
            connections.push((self.connection(node).await, indices));
        }

        wait_turn(earlier, self.config().request_timeout).await;
        // From here to `drop(written)` nothing awaits: the requests are queued on their
        // connections in this call's turn.
        let answer_timeout = self
            .config()
            .request_timeout
            .max(timeout.saturating_add(PRODUCE_ANSWER_MARGIN));
        let mut answers = Vec::new();
        let mut writes = Vec::new();
        for (connection, indices) in connections {
            let connection = match connection {
                Ok(connection) => connection,
                Err(error) => {
                    for &i in &indices {
                        results[i] = Some(Err(retarget(&partitions[i], &error)));
                        stale.push(&partitions[i].topic);
                    }
                    continue;
                }
            };
            let version = match connection.version_at_most::<ProduceRequest>(MAX_PRODUCE_VERSION) {
                Ok(version) => version,
                Err(error) => {
                    for &i in &indices {
                        results[i] = Some(Err(ApiError::Protocol(error.to_string())));
                    }
                    continue;
                }
            };
            let request = routing::produce_request(
                acks.wire(),
                timeout,
                indices.iter().map(|&i| &batches[i]),
            );
            if acks == Acks::None {
                writes.push((indices, connection.send_without_answer(version, &request)));
            } else {
                answers.push((
                    indices,
                    connection.request_with_timeout(version, &request, answer_timeout),
                ));
            }
        }
        drop(written);

        for (indices, answer) in answers {
            match answer.await {
                Ok(response) => {
                    let asked: Vec<&TopicPartition> =
                        indices.iter().map(|&i| &partitions[i]).collect();
                    let outcomes = routing::match_answers(&response, &asked);
                    for (&i, outcome) in indices.iter().zip(outcomes) {
                        if outcome
                            .as_ref()
                            .err()
                            .and_then(ApiError::code)
                            .is_some_and(leader_may_have_moved)
                        {
                            stale.push(&partitions[i].topic);
                        }
                        results[i] = Some(outcome);
                    }
                }
                Err(error) => {
                    for &i in &indices {
                        results[i] = Some(Err(transport_error(&partitions[i], &error)));
                        stale.push(&partitions[i].topic);
                    }
                }
            }
        }
        for (indices, write) in writes {
            let outcome = write.await;
            for &i in &indices {
                results[i] = Some(match &outcome {
                    Ok(()) => Ok(ProduceAck {
                        base_offset: -1,
                        log_append_time_ms: -1,
                    }),
                    Err(error) => {
                        stale.push(&partitions[i].topic);
                        Err(transport_error(&partitions[i], error))
                    }
                });
            }
        }
        if !stale.is_empty() {
            self.invalidate(stale);
        }
        partitions
            .into_iter()
            .zip(routing::settle(results))
            .collect()
    }

    /// Fetches the topic's metadata now from any broker (auto-creating it where the cluster
    /// allows) and updates the cache. A topic-level error code becomes [`ApiError::Broker`];
    /// no broker answering, [`ApiError::NotSent`] or [`ApiError::NoAnswer`].
    async fn topic(&self, topic: &str) -> Result<TopicInfo, ApiError> {
        self.metadata(&[topic.to_owned()], true)
            .await?
            .pop()
            .unwrap_or_else(|| Err(ApiError::broker(ErrorCode::UnknownTopicOrPartition)))
    }

    /// Sends InitProducerId without a transactional id to the least loaded open connection (or
    /// the first broker that accepts one). A non-zero error code becomes [`ApiError::Broker`].
    async fn init_producer_id(&self) -> Result<ProducerIdentity, ApiError> {
        let connection = self.any_connection().await?;
        let version = connection
            .version_for::<InitProducerIdRequest>()
            .map_err(|e| cluster_error(&e))?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            // What the Java client sends for a non-transactional producer.
            .with_transaction_timeout_ms(i32::MAX);
        let response = connection
            .request(version, &request)
            .await
            .map_err(|e| cluster_error(&e))?;
        match ErrorCode::from_code(response.error_code) {
            ErrorCode::None => Ok(ProducerIdentity {
                id: response.producer_id.0,
                epoch: response.producer_epoch,
            }),
            code => Err(ApiError::broker(code)),
        }
    }

    /// One sessionless `FetchRequest` (at most v12, read uncommitted) per leader, on a
    /// connection of its own per broker so a long poll does not hold up produce calls; all
    /// leaders asked in parallel. The client waits for each answer up to
    /// `max(request_timeout, max_wait + 5 s)`. Topics are not auto-created. Leadership errors
    /// and transport failures mark the topic's metadata stale, so the next call refreshes it.
    async fn fetch(
        &self,
        call: FetchCall,
    ) -> Vec<(TopicPartition, Result<FetchedRecords, ApiError>)> {
        self.fetch_partitions(call).await
    }

    /// One `ListOffsetsRequest` (at most v7, replica -1, read uncommitted) per leader.
    async fn list_offsets(
        &self,
        partitions: Vec<(TopicPartition, OffsetSpec)>,
    ) -> Vec<(TopicPartition, Result<Option<ListedOffset>, ApiError>)> {
        self.list_partition_offsets(partitions).await
    }

    /// CreateTopics (v2–v7) at the controller metadata names, else any broker.
    async fn create_topic(&self, call: CreateTopicCall) -> Result<TopicCreation, ApiError> {
        self.create(call).await
    }

    /// JoinGroup at the group's coordinator (found with FindCoordinator and cached), on a
    /// connection opened for this call, waiting up to `max(request_timeout,
    /// rebalance_timeout + 5 s)` for the answer.
    async fn join_group(&self, call: JoinGroupCall) -> Result<JoinOutcome, ApiError> {
        self.join(call).await
    }

    /// SyncGroup at the coordinator, on a connection opened for this call (a follower's waits
    /// for the leader's), within the request timeout.
    async fn sync_group(&self, call: SyncGroupCall) -> Result<Bytes, ApiError> {
        self.sync(call).await
    }

    async fn heartbeat(&self, member: &GroupMembership) -> Result<(), ApiError> {
        self.heartbeat_member(member).await
    }

    async fn leave_group(&self, member: &GroupMembership) -> Result<(), ApiError> {
        self.leave(member).await
    }

    /// OffsetCommit (at most v8, the newest of the classic protocol) at the coordinator.
    async fn commit_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Vec<(TopicPartition, Result<(), ApiError>)> {
        self.commit(member, offsets).await
    }

    /// OffsetFetch (at most v8) at the coordinator, without `require_stable`.
    async fn fetch_committed_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Result<Option<OffsetAndMetadata>, ApiError>)> {
        self.committed(group_id, partitions).await
    }
}

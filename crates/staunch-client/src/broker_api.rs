//! [`BrokerApi`] over the network: [`Client`] routes each call to the right broker and maps
//! wire answers and transport failures to [`ApiError`]s. Single attempts: nothing is retried.

use std::time::Duration;

use staunch_core::{
    Acks, ApiError, BrokerApi, ErrorCode, ProduceAck, ProduceCall, ProducerIdentity, TopicInfo,
    TopicPartition,
};
use staunch_protocol::kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest};

use crate::cluster::{cluster_error, wait_turn};
use crate::routing::{self, leader_may_have_moved};
use crate::{Client, ClientError};

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
        let failed = self.ensure_topics(&topics).await;
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
            .iter()
            .zip(results)
            .map(|(tp, result)| {
                let result = result.unwrap_or_else(|| {
                    Err(ApiError::Broker {
                        code: ErrorCode::UnknownServerError,
                        message: Some("the client lost track of this batch".to_owned()),
                    })
                });
                (tp.clone(), result)
            })
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
}

/// A connection failure for one partition of a produce.
fn transport_error(partition: &TopicPartition, error: &ClientError) -> ApiError {
    match error {
        ClientError::NotSent { addr, reason } => ApiError::NotSent {
            target: partition.to_string(),
            reason: format!("{reason} (broker {addr})"),
        },
        ClientError::NoAnswer { addr, reason } => ApiError::NoAnswer {
            broker: addr.to_string(),
            reason: reason.clone(),
        },
        ClientError::Timeout { addr, timeout } => ApiError::NoAnswer {
            broker: addr.to_string(),
            reason: format!("no answer within {timeout:?}"),
        },
        ClientError::Io { addr, source } => ApiError::NoAnswer {
            broker: addr.to_string(),
            reason: source.to_string(),
        },
        ClientError::Unsupported { .. } | ClientError::Protocol { .. } => {
            ApiError::Protocol(error.to_string())
        }
        other => ApiError::NotSent {
            target: partition.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A `NotSent` about a broker, restated for one of the partitions meant for it.
fn retarget(partition: &TopicPartition, error: &ApiError) -> ApiError {
    match error {
        ApiError::NotSent { target, reason } => ApiError::NotSent {
            target: partition.to_string(),
            reason: format!("{target}: {reason}"),
        },
        other => other.clone(),
    }
}

//! The pure parts of a produce over the network: which leader each batch goes to, one
//! `ProduceRequest` per leader, and which answer belongs to which batch.

use std::time::Duration;

use staunch_core::{ApiError, ErrorCode, PartitionBatch, ProduceAck, TopicInfo, TopicPartition};
use staunch_protocol::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_protocol::kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use staunch_protocol::kafka_protocol::protocol::StrBytes;

/// What the metadata cache knows about a topic when a produce is routed.
#[derive(Debug)]
pub(crate) enum TopicState<'a> {
    /// Its partitions and their leaders (possibly stale, when a refresh failed).
    Known(&'a TopicInfo),
    /// The cluster answered with an error for the topic, or it could not be asked.
    Failed(ApiError),
}

/// The error codes after which the cached leaders of a topic are not to be trusted.
pub(crate) fn leader_may_have_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::FencedLeaderEpoch
    )
}

/// The leader's node id for each partition, in order, or why the batch cannot be sent.
/// `topic` describes a topic; `broker_known` says whether a node id has an address.
pub(crate) fn route<'a>(
    partitions: &[TopicPartition],
    topic: impl Fn(&str) -> TopicState<'a>,
    broker_known: impl Fn(i32) -> bool,
) -> Vec<Result<i32, ApiError>> {
    partitions
        .iter()
        .map(|tp| {
            let info = match topic(&tp.topic) {
                TopicState::Known(info) => info,
                TopicState::Failed(error) => return Err(error),
            };
            let Some(partition) = info.partitions.iter().find(|p| p.index == tp.partition) else {
                return Err(ApiError::Broker {
                    code: ErrorCode::UnknownTopicOrPartition,
                    message: Some(format!(
                        "topic {} has {} partitions; {} does not exist",
                        tp.topic,
                        info.partitions.len(),
                        tp.partition
                    )),
                });
            };
            match partition.leader {
                Some(node) if broker_known(node) => Ok(node),
                Some(node) => Err(ApiError::NotSent {
                    target: tp.to_string(),
                    reason: format!("leader {node} is not among the known brokers"),
                }),
                None => Err(ApiError::NotSent {
                    target: tp.to_string(),
                    reason: "the partition has no leader".to_owned(),
                }),
            }
        })
        .collect()
}

/// The routed batches grouped by leader: each leader once, in order of its first batch, with
/// the indices of its batches in ascending order. Failed routes are left out.
pub(crate) fn group_by_leader(routes: &[Result<i32, ApiError>]) -> Vec<(i32, Vec<usize>)> {
    let mut groups: Vec<(i32, Vec<usize>)> = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let Ok(node) = route else { continue };
        match groups.iter_mut().find(|(n, _)| n == node) {
            Some((_, indices)) => indices.push(index),
            None => groups.push((*node, vec![index])),
        }
    }
    groups
}

/// Items grouped by topic — each topic once, in order of first appearance, with its items in
/// order — each group made into a request's topic entry by `entry`.
pub(crate) fn by_topic<'a, T, E>(
    items: impl IntoIterator<Item = (&'a str, T)>,
    entry: impl Fn(TopicName, Vec<T>) -> E,
) -> Vec<E> {
    let mut topics: Vec<(&str, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, list)) => list.push(item),
            None => topics.push((topic, vec![item])),
        }
    }
    topics
        .into_iter()
        .map(|(topic, list)| entry(topic_name(topic), list))
        .collect()
}

/// A topic name as the codec's type.
pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// One `ProduceRequest` carrying `batches`, topics in order of first appearance.
pub(crate) fn produce_request<'a>(
    acks: i16,
    timeout: Duration,
    batches: impl IntoIterator<Item = &'a PartitionBatch>,
) -> ProduceRequest {
    let batches = batches.into_iter().map(|b| {
        let data = PartitionProduceData::default()
            .with_index(b.partition.partition)
            .with_records(Some(b.records.clone()));
        (b.partition.topic.as_str(), data)
    });
    let topics = by_topic(batches, |name, partitions| {
        TopicProduceData::default()
            .with_name(name)
            .with_partition_data(partitions)
    });
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(topics)
}

/// Pairs each asked partition with its entry among `answers` (topic, partition, entry): when a
/// partition is asked more than once, its n-th entry goes to its n-th asking. `None` where the
/// answer has no entry.
pub(crate) fn match_by_partition<'a, I>(
    answers: impl IntoIterator<Item = (&'a str, i32, I)>,
    asked: &[&TopicPartition],
) -> Vec<Option<I>> {
    let mut answers: Vec<Option<(&str, i32, I)>> = answers.into_iter().map(Some).collect();
    asked
        .iter()
        .map(|tp| {
            answers
                .iter_mut()
                .find(|a| {
                    a.as_ref().is_some_and(|(topic, index, _)| {
                        *topic == tp.topic && *index == tp.partition
                    })
                })
                .and_then(Option::take)
                .map(|(_, _, entry)| entry)
        })
        .collect()
}

/// Each partition's outcome from the slots a call filled in; a slot left empty (a bug)
/// becomes `UNKNOWN_SERVER_ERROR`, never a panic.
pub(crate) fn settle<T>(
    slots: Vec<Option<Result<T, ApiError>>>,
) -> impl Iterator<Item = Result<T, ApiError>> {
    slots.into_iter().map(|slot| {
        slot.unwrap_or_else(|| {
            Err(ApiError::Broker {
                code: ErrorCode::UnknownServerError,
                message: Some("the client lost track of this partition's outcome".to_owned()),
            })
        })
    })
}

/// The error for a partition an answer leaves out: `UNKNOWN_SERVER_ERROR`, as the in-process
/// broker reports it.
pub(crate) fn missing_answer(what: &str, partition: &TopicPartition) -> ApiError {
    ApiError::Broker {
        code: ErrorCode::UnknownServerError,
        message: Some(format!("the {what} answer has no entry for {partition}")),
    }
}

/// Each partition's outcome from `response`, in the order of `partitions`. A partition the
/// answer leaves out gets `UNKNOWN_SERVER_ERROR`, as the in-process broker reports it. When a
/// partition appears more than once, the n-th answer for it goes to its n-th batch.
pub(crate) fn match_answers(
    response: &ProduceResponse,
    partitions: &[&TopicPartition],
) -> Vec<Result<ProduceAck, ApiError>> {
    let entries = response.responses.iter().flat_map(|t| {
        t.partition_responses
            .iter()
            .map(move |p| (t.name.0.as_str(), p.index, p))
    });
    match_by_partition(entries, partitions)
        .into_iter()
        .zip(partitions)
        .map(|(found, tp)| match found {
            Some(p) => ProduceOutcome {
                error_code: p.error_code,
                base_offset: p.base_offset,
                log_append_time_ms: p.log_append_time_ms,
                message: p.error_message.as_ref().map(|m| m.as_str().to_owned()),
            }
            .into_result(),
            None => Err(missing_answer("produce", tp)),
        })
        .collect()
}

struct ProduceOutcome {
    error_code: i16,
    base_offset: i64,
    log_append_time_ms: i64,
    message: Option<String>,
}

impl ProduceOutcome {
    fn into_result(self) -> Result<ProduceAck, ApiError> {
        match ErrorCode::from_code(self.error_code) {
            ErrorCode::None => Ok(ProduceAck {
                base_offset: self.base_offset,
                log_append_time_ms: self.log_append_time_ms,
            }),
            code => Err(ApiError::Broker {
                code,
                message: self.message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use staunch_core::PartitionInfo;
    use staunch_protocol::kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };

    use super::*;

    fn info(name: &str, leaders: &[Option<i32>]) -> TopicInfo {
        TopicInfo {
            name: name.to_owned(),
            partitions: leaders
                .iter()
                .enumerate()
                .map(|(i, &leader)| PartitionInfo {
                    index: i as i32,
                    leader,
                })
                .collect(),
        }
    }

    #[test]
    fn batches_go_to_their_leaders_and_failures_say_why() {
        let a = info("a", &[Some(1), Some(2), None, Some(9)]);
        let failed = ApiError::broker(ErrorCode::InvalidTopicException);
        let partitions = vec![
            TopicPartition::new("a", 0),
            TopicPartition::new("a", 1),
            TopicPartition::new("b", 0),
            TopicPartition::new("a", 2),
            TopicPartition::new("a", 3),
            TopicPartition::new("a", 7),
            TopicPartition::new("a", 0),
        ];
        let routes = route(
            &partitions,
            |t| match t {
                "a" => TopicState::Known(&a),
                _ => TopicState::Failed(failed.clone()),
            },
            |node| node == 1 || node == 2,
        );
        assert_eq!(routes[0], Ok(1));
        assert_eq!(routes[1], Ok(2));
        assert_eq!(routes[2], Err(failed));
        assert!(matches!(&routes[3], Err(ApiError::NotSent { target, .. }) if target == "a-2"));
        assert!(
            matches!(&routes[4], Err(ApiError::NotSent { reason, .. }) if reason.contains('9'))
        );
        assert_eq!(
            routes[5].as_ref().unwrap_err().code(),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
        assert_eq!(routes[6], Ok(1));
        assert_eq!(
            group_by_leader(&routes),
            vec![(1, vec![0, 6]), (2, vec![1])]
        );
    }

    #[test]
    fn one_request_per_leader_keeps_batch_order_within_topics() {
        let batch = |topic: &str, partition: i32, byte: u8| PartitionBatch {
            partition: TopicPartition::new(topic, partition),
            records: Bytes::from(vec![byte]),
        };
        let batches = [batch("x", 1, 1), batch("y", 0, 2), batch("x", 0, 3)];
        let request = produce_request(-1, Duration::from_secs(5), &batches);
        assert_eq!(request.acks, -1);
        assert_eq!(request.timeout_ms, 5000);
        assert_eq!(request.transactional_id, None);
        let layout: Vec<(String, Vec<(i32, u8)>)> = request
            .topic_data
            .iter()
            .map(|t| {
                (
                    t.name.0.as_str().to_owned(),
                    t.partition_data
                        .iter()
                        .map(|p| (p.index, p.records.as_ref().unwrap()[0]))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            layout,
            vec![
                ("x".to_owned(), vec![(1, 1), (0, 3)]),
                ("y".to_owned(), vec![(0, 2)])
            ]
        );
    }

    #[test]
    fn answers_are_matched_by_topic_and_partition_not_position() {
        let partition = |index: i32, error_code: i16, base_offset: i64| {
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(error_code)
                .with_base_offset(base_offset)
                .with_log_append_time_ms(-1)
        };
        let topic = |name: &str, partitions| {
            TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_partition_responses(partitions)
        };
        let response = ProduceResponse::default().with_responses(vec![
            topic(
                "y",
                vec![partition(0, ErrorCode::NotLeaderOrFollower.code(), -1)],
            ),
            topic("x", vec![partition(0, 0, 40), partition(1, 0, 10)]),
        ]);
        let asked = [
            TopicPartition::new("x", 1),
            TopicPartition::new("y", 0),
            TopicPartition::new("x", 0),
            TopicPartition::new("z", 0),
        ];
        let outcomes = match_answers(&response, &asked.iter().collect::<Vec<_>>());
        assert_eq!(outcomes[0].as_ref().unwrap().base_offset, 10);
        assert_eq!(
            outcomes[1].as_ref().unwrap_err().code(),
            Some(ErrorCode::NotLeaderOrFollower)
        );
        assert_eq!(outcomes[2].as_ref().unwrap().base_offset, 40);
        assert_eq!(
            outcomes[3].as_ref().unwrap_err().code(),
            Some(ErrorCode::UnknownServerError)
        );
    }

    #[test]
    fn only_leadership_errors_invalidate_metadata() {
        assert!(leader_may_have_moved(ErrorCode::NotLeaderOrFollower));
        assert!(leader_may_have_moved(ErrorCode::FencedLeaderEpoch));
        assert!(!leader_may_have_moved(ErrorCode::CorruptMessage));
        assert!(!leader_may_have_moved(ErrorCode::None));
    }
}

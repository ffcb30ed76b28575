//! Fetch and ListOffsets over the network: each partition's request goes to its leader, one
//! request per leader, all leaders asked in parallel; answers are matched back to partitions
//! by topic and index, and leadership errors mark the cached metadata stale.

use std::time::Duration;

use staunch_core::api::{FetchCall, FetchPosition, FetchedRecords, ListedOffset, OffsetSpec};
use staunch_core::{ApiError, ErrorCode, TopicPartition};
use staunch_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use staunch_protocol::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use staunch_protocol::kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use staunch_protocol::kafka_protocol::protocol::Request;

use crate::Client;
use crate::cluster::{Lane, retarget, transport_error};
use crate::routing::{self, by_topic, leader_may_have_moved, match_by_partition};

/// Fetch 13+ addresses topics by id only; this client sends names.
const MAX_FETCH_VERSION: i16 = 12;

/// ListOffsets 8+ adds offset specs Staunch does not answer (tiered storage); 7 has every
/// field this client uses and both Staunch and Kafka 3.x / 4.x speak it.
const MAX_LIST_OFFSETS_VERSION: i16 = 7;

/// How much longer than a fetch's `max_wait` the client waits for the answer.
const FETCH_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Fetch isolation: read uncommitted (every acknowledged record, as Kafka's default).
const READ_UNCOMMITTED: i8 = 0;

impl Client {
    /// [`BrokerApi::fetch`](staunch_core::BrokerApi::fetch) over the network: one
    /// `FetchRequest` (at most v12, sessionless) per leader on the fetch lane, so a long poll
    /// does not hold up produce calls to the same broker.
    pub(crate) async fn fetch_partitions(
        &self,
        call: FetchCall,
    ) -> Vec<(TopicPartition, Result<FetchedRecords, ApiError>)> {
        let partitions: Vec<TopicPartition> = call
            .partitions
            .iter()
            .map(|p| p.partition.clone())
            .collect();
        let answer_timeout = self
            .config()
            .request_timeout
            .max(call.max_wait.saturating_add(FETCH_ANSWER_MARGIN));
        let outcomes = self
            .per_leader(
                &partitions,
                Lane::Fetch,
                MAX_FETCH_VERSION,
                answer_timeout,
                |indices| fetch_request(&call, indices.iter().map(|&i| &call.partitions[i])),
                |response: &FetchResponse, asked, _| fetch_answers(response, asked),
            )
            .await;
        partitions.into_iter().zip(outcomes).collect()
    }

    /// [`BrokerApi::list_offsets`](staunch_core::BrokerApi::list_offsets) over the network:
    /// one `ListOffsetsRequest` (at most v7, read uncommitted) per leader.
    pub(crate) async fn list_partition_offsets(
        &self,
        wanted: Vec<(TopicPartition, OffsetSpec)>,
    ) -> Vec<(TopicPartition, Result<Option<ListedOffset>, ApiError>)> {
        let partitions: Vec<TopicPartition> = wanted.iter().map(|(tp, _)| tp.clone()).collect();
        let outcomes = self
            .per_leader(
                &partitions,
                Lane::Data,
                MAX_LIST_OFFSETS_VERSION,
                self.config().request_timeout,
                |indices| list_offsets_request(indices.iter().map(|&i| &wanted[i])),
                |response: &ListOffsetsResponse, asked, indices| {
                    let specs: Vec<OffsetSpec> = indices.iter().map(|&i| wanted[i].1).collect();
                    list_offsets_answers(response, asked, &specs)
                },
            )
            .await;
        partitions.into_iter().zip(outcomes).collect()
    }

    /// Sends one request per leader of `partitions` on `lane` — built by `build` from the
    /// indices of that leader's partitions, at the highest version both sides speak up to
    /// `max_version` — and reads each answer with `read` (given the partitions asked and their
    /// indices; one outcome per asked partition).
    /// Every request is queued before any answer is awaited, so leaders work in parallel.
    /// Returns one outcome per partition, in order; routing, connection and transport
    /// failures become that partition's error, and leadership errors mark its topic stale.
    async fn per_leader<Req: Request, T>(
        &self,
        partitions: &[TopicPartition],
        lane: Lane,
        max_version: i16,
        answer_timeout: Duration,
        build: impl Fn(&[usize]) -> Req,
        read: impl Fn(&Req::Response, &[&TopicPartition], &[usize]) -> Vec<Result<T, ApiError>>,
    ) -> Vec<Result<T, ApiError>> {
        let mut topics: Vec<String> = partitions.iter().map(|p| p.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let failed = self.ensure_topics(&topics, false).await;
        let routes = self.route(partitions, &failed);
        let mut results: Vec<Option<Result<T, ApiError>>> = routes
            .iter()
            .map(|route| route.as_ref().err().map(|e| Err(e.clone())))
            .collect();
        let mut answers = Vec::new();
        for (node, indices) in routing::group_by_leader(&routes) {
            let sent = match self.connection_on(node, lane).await {
                Ok(connection) => connection
                    .version_at_most::<Req>(max_version)
                    .map(|version| {
                        connection.request_with_timeout(version, &build(&indices), answer_timeout)
                    })
                    .map_err(|e| ApiError::Protocol(e.to_string())),
                Err(error) => Err(error),
            };
            match sent {
                Ok(answer) => answers.push((indices, answer)),
                Err(error) => {
                    for &i in &indices {
                        results[i] = Some(Err(retarget(&partitions[i], &error)));
                    }
                }
            }
        }
        for (indices, answer) in answers {
            let asked: Vec<&TopicPartition> = indices.iter().map(|&i| &partitions[i]).collect();
            let outcomes = match answer.await {
                Ok(response) => read(&response, &asked, &indices),
                Err(error) => asked
                    .iter()
                    .map(|tp| Err(transport_error(tp, &error)))
                    .collect(),
            };
            for (&i, outcome) in indices.iter().zip(outcomes) {
                results[i] = Some(outcome);
            }
        }
        let stale: Vec<&str> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.as_ref().is_some_and(|r| leaves_metadata_stale(r)))
            .map(|(tp, _)| tp.topic.as_str())
            .collect();
        if !stale.is_empty() {
            self.invalidate(stale);
        }
        routing::settle(results).collect()
    }
}

/// Whether an outcome says the cached leader may be wrong: a leadership error, or the leader
/// could not be reached or answered nothing.
fn leaves_metadata_stale<T>(result: &Result<T, ApiError>) -> bool {
    match result {
        Ok(_) => false,
        Err(ApiError::NotSent { .. } | ApiError::NoAnswer { .. }) => true,
        Err(error) => error.code().is_some_and(leader_may_have_moved),
    }
}

/// A sessionless full `FetchRequest` (session 0, epoch -1) for `positions`, topics in order of
/// first appearance, with the call's limits.
fn fetch_request<'a>(
    call: &FetchCall,
    positions: impl IntoIterator<Item = &'a FetchPosition>,
) -> FetchRequest {
    let positions = positions.into_iter().map(|p| {
        let partition = FetchPartition::default()
            .with_partition(p.partition.partition)
            .with_fetch_offset(p.offset)
            .with_partition_max_bytes(p.max_bytes);
        (p.partition.topic.as_str(), partition)
    });
    let topics = by_topic(positions, |name, partitions| {
        FetchTopic::default()
            .with_topic(name)
            .with_partitions(partitions)
    });
    FetchRequest::default()
        .with_max_wait_ms(call.max_wait_ms())
        .with_min_bytes(call.min_bytes)
        .with_max_bytes(call.max_bytes)
        .with_isolation_level(READ_UNCOMMITTED)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Each asked partition's records or error from a fetch answer. A request-level error code
/// applies to every partition.
fn fetch_answers(
    response: &FetchResponse,
    asked: &[&TopicPartition],
) -> Vec<Result<FetchedRecords, ApiError>> {
    if response.error_code != 0 {
        let error = ApiError::broker(ErrorCode::from_code(response.error_code));
        return asked.iter().map(|_| Err(error.clone())).collect();
    }
    let entries = response.responses.iter().flat_map(|t| {
        t.partitions
            .iter()
            .map(move |p| (t.topic.0.as_str(), p.partition_index, p))
    });
    match_by_partition(entries, asked)
        .into_iter()
        .zip(asked)
        .map(|(found, tp)| {
            let p = found.ok_or_else(|| routing::missing_answer("fetch", tp))?;
            match ErrorCode::from_code(p.error_code) {
                ErrorCode::None => Ok(FetchedRecords {
                    high_watermark: p.high_watermark,
                    last_stable_offset: p.last_stable_offset,
                    log_start_offset: p.log_start_offset,
                    records: p.records.clone().unwrap_or_default(),
                }),
                code => Err(ApiError::broker(code)),
            }
        })
        .collect()
}

/// A `ListOffsetsRequest` as a consumer sends it (replica -1, read uncommitted).
fn list_offsets_request<'a>(
    wanted: impl IntoIterator<Item = &'a (TopicPartition, OffsetSpec)>,
) -> ListOffsetsRequest {
    let wanted = wanted.into_iter().map(|(tp, spec)| {
        let partition = ListOffsetsPartition::default()
            .with_partition_index(tp.partition)
            .with_timestamp(spec.wire());
        (tp.topic.as_str(), partition)
    });
    let topics = by_topic(wanted, |name, partitions| {
        ListOffsetsTopic::default()
            .with_name(name)
            .with_partitions(partitions)
    });
    ListOffsetsRequest::default()
        // A consumer, not a follower: -1 (the default 0 would ask as broker 0's replica).
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(READ_UNCOMMITTED)
        .with_topics(topics)
}

/// Each asked partition's offset from a ListOffsets answer; `specs[i]` is what `asked[i]`
/// looked up. Offset -1 for a timestamp means no record is that recent.
fn list_offsets_answers(
    response: &ListOffsetsResponse,
    asked: &[&TopicPartition],
    specs: &[OffsetSpec],
) -> Vec<Result<Option<ListedOffset>, ApiError>> {
    let entries = response.topics.iter().flat_map(|t| {
        t.partitions
            .iter()
            .map(move |p| (t.name.0.as_str(), p.partition_index, p))
    });
    match_by_partition(entries, asked)
        .into_iter()
        .zip(asked)
        .zip(specs)
        .map(|((found, tp), spec)| {
            let p = found.ok_or_else(|| routing::missing_answer("list offsets", tp))?;
            match ErrorCode::from_code(p.error_code) {
                ErrorCode::None => Ok(spec.found(p.offset, p.timestamp)),
                code => Err(ApiError::broker(code)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use staunch_protocol::kafka_protocol::messages::fetch_response::{
        FetchableTopicResponse, PartitionData,
    };
    use staunch_protocol::kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };

    use super::*;
    use crate::routing::topic_name;

    #[test]
    fn a_fetch_request_is_sessionless_and_groups_partitions_by_topic() {
        let position = |topic: &str, partition: i32, offset: i64| FetchPosition {
            partition: TopicPartition::new(topic, partition),
            offset,
            max_bytes: 1000 + partition,
        };
        let call = FetchCall {
            max_wait: Duration::from_millis(250),
            min_bytes: 1,
            max_bytes: 5000,
            partitions: vec![
                position("a", 1, 10),
                position("b", 0, 3),
                position("a", 0, 7),
            ],
        };
        let request = fetch_request(&call, &call.partitions);
        assert_eq!(
            (request.max_wait_ms, request.min_bytes, request.max_bytes),
            (250, 1, 5000)
        );
        assert_eq!((request.session_id, request.session_epoch), (0, -1));
        assert_eq!(request.replica_id.0, -1);
        // (topic, [(partition, offset, max bytes)]) as requested.
        type Layout = Vec<(String, Vec<(i32, i64, i32)>)>;
        let layout: Layout = request
            .topics
            .iter()
            .map(|t| {
                (
                    t.topic.0.as_str().to_owned(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition, p.fetch_offset, p.partition_max_bytes))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            layout,
            vec![
                ("a".to_owned(), vec![(1, 10, 1001), (0, 7, 1000)]),
                ("b".to_owned(), vec![(0, 3, 1000)])
            ]
        );
    }

    #[test]
    fn fetch_answers_keep_the_bytes_and_map_errors_per_partition() {
        let data = |index: i32, error: ErrorCode, records: &'static [u8]| {
            PartitionData::default()
                .with_partition_index(index)
                .with_error_code(error.code())
                .with_high_watermark(40)
                .with_last_stable_offset(39)
                .with_log_start_offset(2)
                .with_records(Some(Bytes::from_static(records)))
        };
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![
                    data(1, ErrorCode::OffsetOutOfRange, b""),
                    data(0, ErrorCode::None, b"batch bytes"),
                ]),
        ]);
        let asked = [
            TopicPartition::new("t", 0),
            TopicPartition::new("t", 1),
            TopicPartition::new("u", 0),
        ];
        let outcomes = fetch_answers(&response, &asked.iter().collect::<Vec<_>>());
        let fetched = outcomes[0].as_ref().unwrap();
        assert_eq!(&fetched.records[..], b"batch bytes");
        assert_eq!(
            (
                fetched.high_watermark,
                fetched.last_stable_offset,
                fetched.log_start_offset
            ),
            (40, 39, 2)
        );
        assert_eq!(
            outcomes[1].as_ref().unwrap_err().code(),
            Some(ErrorCode::OffsetOutOfRange)
        );
        assert_eq!(
            outcomes[2].as_ref().unwrap_err().code(),
            Some(ErrorCode::UnknownServerError)
        );

        let refused =
            FetchResponse::default().with_error_code(ErrorCode::UnknownServerError.code());
        assert!(
            fetch_answers(&refused, &asked.iter().collect::<Vec<_>>())
                .iter()
                .all(|o| o.as_ref().unwrap_err().code() == Some(ErrorCode::UnknownServerError))
        );
    }

    #[test]
    fn list_offsets_asks_by_spec_and_reads_no_match_as_none() {
        let wanted = [
            (TopicPartition::new("t", 0), OffsetSpec::Earliest),
            (TopicPartition::new("t", 1), OffsetSpec::Latest),
            (TopicPartition::new("t", 2), OffsetSpec::Timestamp(1_000)),
            (TopicPartition::new("t", 3), OffsetSpec::Timestamp(9_000)),
        ];
        let request = list_offsets_request(&wanted);
        assert_eq!(request.replica_id.0, -1);
        let timestamps: Vec<i64> = request.topics[0]
            .partitions
            .iter()
            .map(|p| p.timestamp)
            .collect();
        assert_eq!(timestamps, vec![-2, -1, 1_000, 9_000]);

        let answer = |index: i32, offset: i64, timestamp: i64| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(index)
                .with_offset(offset)
                .with_timestamp(timestamp)
        };
        let response = ListOffsetsResponse::default().with_topics(vec![
            ListOffsetsTopicResponse::default()
                .with_name(topic_name("t"))
                .with_partitions(vec![
                    answer(0, 5, -1),
                    answer(1, 12, -1),
                    answer(2, 8, 1_004),
                    answer(3, -1, -1),
                ]),
        ]);
        let asked: Vec<&TopicPartition> = wanted.iter().map(|(tp, _)| tp).collect();
        let specs: Vec<OffsetSpec> = wanted.iter().map(|(_, spec)| *spec).collect();
        let outcomes = list_offsets_answers(&response, &asked, &specs);
        let found: Vec<Option<ListedOffset>> = outcomes.into_iter().map(|o| o.unwrap()).collect();
        assert_eq!(
            found,
            vec![
                Some(ListedOffset {
                    offset: 5,
                    timestamp: None
                }),
                Some(ListedOffset {
                    offset: 12,
                    timestamp: None
                }),
                Some(ListedOffset {
                    offset: 8,
                    timestamp: Some(1_004)
                }),
                None,
            ]
        );
    }

    /// A two-node cluster of fake brokers for routing tests: topic `t` has partition 0 led by
    /// node 1 and partition 1 led by node 2. Node 2 answers its first fetch only once node 1 has
    /// received its own (so the two must be in flight at once), and its second fetch
    /// `NOT_LEADER_OR_FOLLOWER`.
    mod two_leaders {
        use std::net::SocketAddr;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use staunch_protocol::api_versions_response;
        use staunch_protocol::kafka_protocol::messages::metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        };
        use staunch_protocol::kafka_protocol::messages::{
            BrokerId, MetadataResponse, RequestKind, ResponseKind,
        };
        use staunch_protocol::kafka_protocol::protocol::StrBytes;
        use tokio::net::{TcpListener, TcpStream};
        use tokio::sync::Notify;

        use super::*;
        use crate::fake_broker::{answer, read_request};

        const LIMIT: Duration = Duration::from_secs(20);

        struct Cluster {
            addrs: [SocketAddr; 2],
            metadata_requests: AtomicUsize,
            /// Fetches received, per node.
            fetches: [AtomicUsize; 2],
            /// Partitions asked in each node's fetches.
            asked: std::sync::Mutex<Vec<(usize, Vec<i32>)>>,
            node_1_fetching: Notify,
        }

        fn metadata(cluster: &Cluster) -> MetadataResponse {
            let broker = |node: usize| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(node as i32 + 1))
                    .with_host(StrBytes::from_string(cluster.addrs[node].ip().to_string()))
                    .with_port(i32::from(cluster.addrs[node].port()))
            };
            let partition = |index: i32| {
                MetadataResponsePartition::default()
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(index + 1))
            };
            MetadataResponse::default()
                .with_brokers(vec![broker(0), broker(1)])
                .with_topics(vec![
                    MetadataResponseTopic::default()
                        .with_name(Some(topic_name("t")))
                        .with_partitions(vec![partition(0), partition(1)]),
                ])
        }

        async fn serve(mut stream: TcpStream, cluster: Arc<Cluster>, node: usize) {
            while let Some(request) = read_request(&mut stream).await {
                let body = match &request.body {
                    RequestKind::ApiVersions(_) => {
                        ResponseKind::ApiVersions(api_versions_response(0))
                    }
                    RequestKind::Metadata(_) => {
                        cluster.metadata_requests.fetch_add(1, Ordering::SeqCst);
                        ResponseKind::Metadata(metadata(&cluster))
                    }
                    RequestKind::Fetch(fetch) => {
                        let seen = cluster.fetches[node].fetch_add(1, Ordering::SeqCst);
                        let partitions: Vec<i32> = fetch
                            .topics
                            .iter()
                            .flat_map(|t| t.partitions.iter().map(|p| p.partition))
                            .collect();
                        cluster
                            .asked
                            .lock()
                            .unwrap()
                            .push((node, partitions.clone()));
                        if node == 0 {
                            cluster.node_1_fetching.notify_one();
                        } else if seen == 0 {
                            tokio::time::timeout(LIMIT, cluster.node_1_fetching.notified())
                                .await
                                .expect("node 1 got its fetch while node 2's was in flight");
                        }
                        let code = if node == 1 && seen == 1 {
                            ErrorCode::NotLeaderOrFollower
                        } else {
                            ErrorCode::None
                        };
                        let data = partitions
                            .iter()
                            .map(|&p| {
                                PartitionData::default()
                                    .with_partition_index(p)
                                    .with_error_code(code.code())
                                    .with_high_watermark(node as i64 + 1)
                                    .with_records(Some(Bytes::from(format!("node {}", node + 1))))
                            })
                            .collect();
                        ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
                            FetchableTopicResponse::default()
                                .with_topic(topic_name("t"))
                                .with_partitions(data),
                        ]))
                    }
                    other => panic!("the fake cluster got an unexpected {other:?}"),
                };
                answer(&mut stream, &request, body).await;
            }
        }

        #[tokio::test]
        async fn each_partition_is_fetched_from_its_leader_in_parallel_and_leadership_errors_refresh_metadata()
         {
            let listeners = [
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ];
            let cluster = Arc::new(Cluster {
                addrs: [
                    listeners[0].local_addr().unwrap(),
                    listeners[1].local_addr().unwrap(),
                ],
                metadata_requests: AtomicUsize::new(0),
                fetches: [AtomicUsize::new(0), AtomicUsize::new(0)],
                asked: std::sync::Mutex::new(Vec::new()),
                node_1_fetching: Notify::new(),
            });
            for (node, listener) in listeners.into_iter().enumerate() {
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(serve(stream, cluster.clone(), node));
                    }
                });
            }
            let client = crate::fake_broker::client(cluster.addrs[0], LIMIT).await;
            let call = || FetchCall {
                max_wait: Duration::from_millis(100),
                min_bytes: 1,
                max_bytes: 1 << 20,
                partitions: vec![
                    FetchPosition {
                        partition: TopicPartition::new("t", 1),
                        offset: 0,
                        max_bytes: 1 << 20,
                    },
                    FetchPosition {
                        partition: TopicPartition::new("t", 0),
                        offset: 0,
                        max_bytes: 1 << 20,
                    },
                ],
            };
            let fetch = || tokio::time::timeout(LIMIT, client.fetch_partitions(call()));

            let first = fetch().await.unwrap();
            let from: Vec<(i32, &[u8])> = first
                .iter()
                .map(|(tp, r)| (tp.partition, &r.as_ref().unwrap().records[..]))
                .collect();
            assert_eq!(from, vec![(1, &b"node 2"[..]), (0, &b"node 1"[..])]);
            let mut asked = cluster.asked.lock().unwrap().clone();
            asked.sort();
            assert_eq!(
                asked,
                vec![(0, vec![0]), (1, vec![1])],
                "one request per leader"
            );
            let refreshes = cluster.metadata_requests.load(Ordering::SeqCst);

            let second = fetch().await.unwrap();
            assert_eq!(
                second[0].1.as_ref().unwrap_err().code(),
                Some(ErrorCode::NotLeaderOrFollower)
            );
            assert!(
                second[1].1.is_ok(),
                "the other leader's partition is unaffected"
            );
            assert_eq!(
                cluster.metadata_requests.load(Ordering::SeqCst),
                refreshes,
                "no refresh while nothing said the leaders moved"
            );
            fetch().await.unwrap();
            assert_eq!(
                cluster.metadata_requests.load(Ordering::SeqCst),
                refreshes + 1,
                "NOT_LEADER_OR_FOLLOWER made the next fetch refresh the topic's metadata"
            );
        }
    }
}

//! `staunch_client::Client` as a `BrokerApi` against a real server over loopback: produce is
//! routed per partition and topic with correct offsets, concurrent calls share one pipelined
//! connection and each gets its own answer, acks=0, auto-created and missing topics and
//! partitions, and a broker that goes away and comes back on the same port.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use staunch_broker::{BrokerConfig, NewTopic};
use staunch_client::kafka_protocol::messages::{FetchRequest, TopicName, fetch_request};
use staunch_client::kafka_protocol::protocol::StrBytes;
use staunch_client::{Client, ClientConfig, Connection};
use staunch_core::{
    Acks, ApiError, BatchBuilder, BrokerApi, ErrorCode, PartitionBatch, ProduceAck, ProduceCall,
    TopicPartition,
};
use staunch_server::ServerConfig;

mod common;

use common::Running;

/// The bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(30);

/// Starts a server on `addr` (port 0: any free port) over the data in `dir`.
async fn start(dir: &std::path::Path, addr: SocketAddr, auto_create: bool) -> Running {
    let broker = BrokerConfig {
        auto_create_topics: auto_create,
        ..BrokerConfig::default()
    };
    common::start_server(dir, addr, ServerConfig::default(), broker).await
}

impl Running {
    async fn create_topic(&self, name: &str, partitions: i32) {
        let outcomes = self
            .broker
            .create_topics(
                vec![NewTopic {
                    name: name.to_owned(),
                    partitions,
                    replication_factor: -1,
                    configs: Vec::new(),
                }],
                false,
            )
            .await;
        assert_eq!(outcomes.len(), 1);
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("did not finish within the test's limit")
}

fn config() -> ClientConfig {
    ClientConfig {
        client_id: "client-test".to_owned(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

async fn client(addr: SocketAddr) -> Client {
    within(Client::connect(vec![addr.to_string()], config()))
        .await
        .unwrap()
}

fn batch(topic: &str, partition: i32, values: &[&str]) -> PartitionBatch {
    let mut builder = BatchBuilder::new(1);
    for value in values {
        builder = builder.record(None, Some(value.as_bytes()));
    }
    PartitionBatch {
        partition: TopicPartition::new(topic, partition),
        records: builder.build().into(),
    }
}

fn call(acks: Acks, batches: Vec<PartitionBatch>) -> ProduceCall {
    ProduceCall {
        acks,
        timeout: Duration::from_secs(5),
        batches,
    }
}

async fn produce(
    client: &Client,
    acks: Acks,
    batches: Vec<PartitionBatch>,
) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
    within(client.produce(call(acks, batches))).await
}

/// The base offsets of a produce whose batches must all succeed.
fn offsets(outcomes: &[(TopicPartition, Result<ProduceAck, ApiError>)]) -> Vec<i64> {
    outcomes
        .iter()
        .map(|(tp, outcome)| match outcome {
            Ok(ack) => ack.base_offset,
            Err(e) => panic!("{tp} failed: {e}"),
        })
        .collect()
}

/// Every (offset, value) stored in a partition, read with a plain `Connection`.
async fn stored(addr: SocketAddr, topic: &str, partition: i32) -> Vec<(i64, String)> {
    let mut connection = within(Connection::connect(addr, "client-test-reader", LIMIT))
        .await
        .unwrap();
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(16 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(16 << 20),
                ]),
        ]);
    let response = within(connection.call(request)).await.unwrap();
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, 0, "fetch {topic}-{partition}");
    let bytes = data.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    for batch in staunch_core::batch::batches(&bytes) {
        for record in batch.unwrap().records().unwrap() {
            let record = record.unwrap();
            let value = record.value.unwrap_or_default().to_vec();
            out.push((record.offset, String::from_utf8(value).unwrap()));
        }
    }
    out
}

/// Polls the futures in the order given (so each is first polled after the ones before it)
/// until all are done.
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none()
                && let Poll::Ready(value) = future.as_mut().poll(cx)
            {
                *output = Some(value);
            }
        }
        if outputs.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_routes_batches_by_topic_and_partition_and_reports_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), true).await;
    running.create_topic("multi", 3).await;
    let client = client(running.addr).await;

    let first = produce(
        &client,
        Acks::All,
        vec![
            batch("multi", 2, &["m2-a"]),
            batch("multi", 0, &["m0-a", "m0-b", "m0-c"]),
            batch("other", 0, &["o-a", "o-b"]),
            batch("multi", 1, &["m1-a", "m1-b"]),
        ],
    )
    .await;
    let order: Vec<String> = first.iter().map(|(tp, _)| tp.to_string()).collect();
    assert_eq!(order, ["multi-2", "multi-0", "other-0", "multi-1"]);
    assert_eq!(offsets(&first), [0, 0, 0, 0]);

    let second = produce(
        &client,
        Acks::Leader,
        vec![
            batch("multi", 0, &["m0-d"]),
            batch("multi", 1, &["m1-c"]),
            batch("other", 0, &["o-c"]),
        ],
    )
    .await;
    assert_eq!(offsets(&second), [3, 2, 2]);

    assert_eq!(client.leader_for(&TopicPartition::new("multi", 1)), Some(1));
    assert_eq!(client.leader_for(&TopicPartition::new("multi", 9)), None);
    assert_eq!(client.brokers(), [(1, running.addr.to_string())]);

    let values = |pairs: &[(i64, &str)]| -> Vec<(i64, String)> {
        pairs.iter().map(|(o, v)| (*o, v.to_string())).collect()
    };
    assert_eq!(
        stored(running.addr, "multi", 0).await,
        values(&[(0, "m0-a"), (1, "m0-b"), (2, "m0-c"), (3, "m0-d")])
    );
    assert_eq!(
        stored(running.addr, "multi", 1).await,
        values(&[(0, "m1-a"), (1, "m1-b"), (2, "m1-c")])
    );
    assert_eq!(
        stored(running.addr, "multi", 2).await,
        values(&[(0, "m2-a")])
    );
    assert_eq!(
        stored(running.addr, "other", 0).await,
        values(&[(0, "o-a"), (1, "o-b"), (2, "o-c")])
    );
    running.stop().await;
}

/// Hundreds of produce calls at once through one client: one connection carries them all, and
/// every caller gets the offset where its own record was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_produce_calls_share_one_connection_and_each_gets_its_own_offset() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), true).await;
    running.create_topic("busy", 2).await;
    let client = Arc::new(client(running.addr).await);
    offsets(&produce(&client, Acks::All, vec![batch("busy", 0, &["warm-up"])]).await);
    let connection = within(client.connection(1)).await.unwrap();

    const CALLS: usize = 200;
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let partition = (i % 2) as i32;
            let value = format!("call-{i}");
            let outcome = client
                .produce(call(Acks::All, vec![batch("busy", partition, &[&value])]))
                .await;
            (partition, value, offsets(&outcome)[0])
        }));
    }
    let mut answered: Vec<Vec<(i64, String)>> = vec![Vec::new(), Vec::new()];
    for task in tasks {
        let (partition, value, offset) = within(task).await.unwrap();
        answered[partition as usize].push((offset, value));
    }
    let still = within(client.connection(1)).await.unwrap();
    assert!(
        Arc::ptr_eq(&connection, &still),
        "all calls went over the one pooled connection"
    );
    for (partition, mut answers) in answered.into_iter().enumerate() {
        answers.sort();
        let mut stored = stored(running.addr, "busy", partition as i32).await;
        if partition == 0 {
            assert_eq!(stored.remove(0), (0, "warm-up".to_owned()));
        }
        // Distinct offsets, and each caller's offset holds that caller's record.
        assert_eq!(answers, stored, "partition {partition}");
        assert_eq!(answers.len(), CALLS / 2);
    }
    running.stop().await;
}

/// Calls on one partition are written in the order they are first polled, also when the
/// first must wait for metadata of another topic and the later ones could go at once — so
/// their offsets follow that order (what an idempotent producer relies on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_partition_are_written_in_the_order_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), true).await;
    let client = client(running.addr).await;
    within(client.topic("ordered")).await.unwrap();
    for round in 0..3 {
        // The first call also writes to a topic nobody has asked about yet: it waits for
        // metadata (and the topic's creation) while the others find "ordered" cached.
        let mut calls = vec![client.produce(call(
            Acks::All,
            vec![
                batch(&format!("new-{round}"), 0, &["x"]),
                batch("ordered", 0, &[&format!("r{round}-0")]),
            ],
        ))];
        for i in 1..20 {
            calls.push(client.produce(call(
                Acks::All,
                vec![batch("ordered", 0, &[&format!("r{round}-{i}")])],
            )));
        }
        let outcomes = within(join_in_order(calls)).await;
        let offsets: Vec<i64> = outcomes
            .iter()
            .map(|o| *offsets(o).last().unwrap())
            .collect();
        let first = round * 20;
        assert_eq!(
            offsets,
            (first..first + 20).collect::<Vec<i64>>(),
            "round {round}"
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_completes_once_written_and_the_records_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), true).await;
    let client = client(running.addr).await;
    let outcome = produce(&client, Acks::None, vec![batch("fire", 0, &["zero"])]).await;
    assert_eq!(
        outcome[0].1,
        Ok(ProduceAck {
            base_offset: -1,
            log_append_time_ms: -1
        })
    );
    // Same connection, in order: the acks=0 record took offset 0.
    let next = produce(&client, Acks::All, vec![batch("fire", 0, &["one"])]).await;
    assert_eq!(offsets(&next), [1]);
    assert_eq!(
        stored(running.addr, "fire", 0).await,
        [(0, "zero".to_owned()), (1, "one".to_owned())]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_are_auto_created_and_missing_partitions_are_broker_errors() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), true).await;
    running.create_topic("three", 3).await;
    let client = client(running.addr).await;

    let info = within(client.topic("made-by-metadata")).await.unwrap();
    assert_eq!(info.name, "made-by-metadata");
    assert_eq!(info.partitions.len(), 1);
    assert_eq!(info.partitions[0].leader, Some(1));
    let info = within(client.topic("three")).await.unwrap();
    assert_eq!(info.partitions.len(), 3);

    let outcome = produce(
        &client,
        Acks::All,
        vec![
            batch("made-by-produce", 0, &["new"]),
            batch("three", 7, &["nowhere"]),
            batch("three", 2, &["somewhere"]),
        ],
    )
    .await;
    assert_eq!(outcome[0].1.as_ref().map(|a| a.base_offset), Ok(0));
    let error = outcome[1].1.as_ref().unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{error}"
    );
    assert!(!error.may_have_been_appended());
    assert_eq!(outcome[2].1.as_ref().map(|a| a.base_offset), Ok(0));

    let bad_name = within(client.topic("no spaces allowed")).await.unwrap_err();
    assert!(matches!(bad_name, ApiError::Broker { .. }), "{bad_name}");

    let first = within(client.init_producer_id()).await.unwrap();
    let second = within(client.init_producer_id()).await.unwrap();
    assert_eq!((first.epoch, second.epoch), (0, 0));
    assert_ne!(first.id, second.id);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_creation_unknown_topics_are_broker_errors() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), false).await;
    let client = client(running.addr).await;
    let error = within(client.topic("absent")).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{error}"
    );
    let outcome = produce(&client, Acks::All, vec![batch("absent", 0, &["x"])]).await;
    let error = outcome[0].1.as_ref().unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{error}"
    );
    running.stop().await;
}

/// The broker goes away: calls fail promptly as not sent or unanswered, never hang. A new
/// server on the same port over the same data is then used by the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_fails_calls_and_the_client_reconnects_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), true).await;
    let addr = running.addr;
    let client = client(addr).await;
    let before = produce(&client, Acks::All, vec![batch("phoenix", 0, &["before"])]).await;
    assert_eq!(offsets(&before), [0]);

    running.stop().await;
    for attempt in 0..3 {
        let outcome = produce(&client, Acks::All, vec![batch("phoenix", 0, &["lost"])]).await;
        let error = outcome[0].1.as_ref().unwrap_err();
        assert!(
            matches!(error, ApiError::NotSent { .. } | ApiError::NoAnswer { .. }),
            "attempt {attempt}: {error}"
        );
        assert!(error.is_retriable());
    }
    let error = within(client.topic("phoenix")).await.unwrap_err();
    assert!(
        matches!(error, ApiError::NotSent { .. } | ApiError::NoAnswer { .. }),
        "{error}"
    );
    let error = within(client.init_producer_id()).await.unwrap_err();
    assert!(
        matches!(error, ApiError::NotSent { .. } | ApiError::NoAnswer { .. }),
        "{error}"
    );

    let running = start(dir.path(), addr, true).await;
    assert_eq!(running.addr, addr);
    let after = produce(&client, Acks::All, vec![batch("phoenix", 0, &["after"])]).await;
    assert_eq!(offsets(&after), [1]);
    assert!(within(client.init_producer_id()).await.is_ok());
    assert_eq!(
        stored(addr, "phoenix", 0).await,
        [(0, "before".to_owned()), (1, "after".to_owned())]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_when_no_bootstrap_address_answers() {
    // A port that was free a moment ago: nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let error = within(Client::connect(vec![addr.to_string()], config()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    let error = within(Client::connect(Vec::new(), config()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("bootstrap"), "{error}");
}

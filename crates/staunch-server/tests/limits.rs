//! The broker's limits on the wire: `max_connections` closes the connection past it while the
//! others keep working, a connection pipelining more requests than `max_in_flight_requests`
//! still gets every answer in order, and topics past `max_partitions` are refused with
//! POLICY_VIOLATION (CreateTopics, CreatePartitions, auto-creation) and nothing is created.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Buf;
use staunch_broker::BrokerConfig;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, FetchRequest,
    MetadataRequest, create_partitions_request, create_topics_request, fetch_request,
    metadata_request,
};
use staunch_core::ErrorCode;
use staunch_server::ServerConfig;
use tokio::io::AsyncReadExt;

mod common;

use common::Running;
use common::requests::{one_record, produce_request, topic_name};

/// The bound on every wait.
const TIMEOUT: Duration = Duration::from_secs(20);

async fn start(dir: &std::path::Path, server: ServerConfig, broker: BrokerConfig) -> Running {
    let any_port = "127.0.0.1:0".parse().unwrap();
    common::start_server(dir, any_port, server, broker).await
}

async fn connect(addr: SocketAddr) -> Connection {
    Connection::connect(addr, "limits-test", TIMEOUT)
        .await
        .unwrap()
}

/// Whether `connection` still answers requests.
async fn answers(connection: &mut Connection) -> bool {
    connection.call(ApiVersionsRequest::default()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_past_max_connections_is_closed_and_the_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerConfig {
        max_connections: 3,
        ..ServerConfig::default()
    };
    let running = start(dir.path(), server, BrokerConfig::default()).await;
    let mut admitted = Vec::new();
    for _ in 0..3 {
        admitted.push(connect(running.addr).await);
    }
    // The fourth is accepted by the kernel, then closed by the broker without an answer.
    let mut refused = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut buf = [0u8; 16];
    match tokio::time::timeout(TIMEOUT, refused.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the connection past the limit got {n} bytes"),
        Err(_) => panic!("the connection past the limit was still open after {TIMEOUT:?}"),
    }
    for connection in &mut admitted {
        assert!(
            answers(connection).await,
            "an admitted connection stopped answering"
        );
    }
    // Closing one frees its slot (once the broker sees the close).
    drop(admitted.pop());
    let started = Instant::now();
    loop {
        if let Ok(mut next) = Connection::connect(running.addr, "limits-test", TIMEOUT).await
            && answers(&mut next).await
        {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "a freed slot was not given to a new connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_pipelined_requests_than_the_in_flight_limit_are_all_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerConfig {
        max_in_flight_requests: 2,
        ..ServerConfig::default()
    };
    let running = start(dir.path(), server, BrokerConfig::default()).await;
    let mut connection = connect(running.addr).await;
    // Produces (answered once durable) and metadata requests (answered at once), interleaved:
    // ten times the limit, all written before any answer is read.
    let mut sent = Vec::new();
    for i in 0..20 {
        let id = if i % 2 == 0 {
            let value = format!("v{i}");
            connection
                .send_at(
                    7,
                    &produce_request("pipelined", -1, one_record(value.as_bytes())),
                )
                .await
                .unwrap()
        } else {
            connection
                .send_at(1, &MetadataRequest::default())
                .await
                .unwrap()
        };
        sent.push(id);
    }
    for (i, expected) in sent.iter().enumerate() {
        let mut frame = connection.read_frame().await.unwrap();
        let correlation_id = frame.get_i32();
        assert_eq!(correlation_id, *expected, "answer {i} out of order");
    }
    // Every produce was stored, in the order sent.
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic_name("pipelined"))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let fetched = connection.call(fetch).await.unwrap();
    let records = fetched.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let mut values = Vec::new();
    for batch in staunch_core::batch::batches(&records) {
        for record in batch.unwrap().records().unwrap() {
            values.push(record.unwrap().value.unwrap_or_default().to_vec());
        }
    }
    let expected: Vec<Vec<u8>> = (0..20)
        .step_by(2)
        .map(|i| format!("v{i}").into_bytes())
        .collect();
    assert_eq!(values, expected);
    running.stop().await;
}

fn creatable(topic: &str, partitions: i32) -> create_topics_request::CreatableTopic {
    create_topics_request::CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_past_max_partitions_get_policy_violation_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerConfig {
        max_partitions: 10,
        default_partitions: 2,
        ..BrokerConfig::default()
    };
    let running = start(dir.path(), ServerConfig::default(), broker).await;
    let mut connection = connect(running.addr).await;
    let create = |topics| {
        CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(topics)
    };

    // 6 fit; then 5 more do not (11 > 10), in one request with a topic of 4 that does fit.
    let answer = connection
        .call(create(vec![creatable("six", 6)]))
        .await
        .unwrap();
    assert_eq!(answer.topics[0].error_code, 0);
    let answer = connection
        .call(create(vec![creatable("five", 5), creatable("four", 4)]))
        .await
        .unwrap();
    let five = &answer.topics[0];
    assert_eq!(five.error_code, ErrorCode::PolicyViolation.code());
    let message = five.error_message.as_deref().unwrap_or_default();
    assert!(message.contains("max_partitions"), "message: {message}");
    assert_eq!(answer.topics[1].error_code, 0, "the topic that fits");

    // Validate-only is refused the same way; CreatePartitions past the limit too.
    let answer = connection
        .call(create(vec![creatable("one-too-many", 1)]).with_validate_only(true))
        .await
        .unwrap();
    assert_eq!(
        answer.topics[0].error_code,
        ErrorCode::PolicyViolation.code()
    );
    let answer = connection
        .call(
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic_name("four"))
                        .with_count(5),
                ]),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.results[0].error_code,
        ErrorCode::PolicyViolation.code()
    );

    // Auto-creation (2 partitions by default) is refused too: by Metadata and by Produce.
    let metadata = connection
        .call(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic_name("auto"))),
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await
        .unwrap();
    assert_eq!(
        metadata.topics[0].error_code,
        ErrorCode::PolicyViolation.code()
    );
    let produced = connection
        .call(produce_request("auto", -1, one_record(b"x")))
        .await
        .unwrap();
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        ErrorCode::PolicyViolation.code()
    );

    // Nothing of the refused topics exists, in the broker or on disk; the others are whole.
    let mut topics: Vec<(String, usize)> = running
        .broker
        .metadata(None, false)
        .await
        .topics
        .into_iter()
        .map(|t| (t.name, t.partitions.len()))
        .collect();
    topics.sort();
    assert_eq!(topics, vec![("four".to_owned(), 4), ("six".to_owned(), 6)]);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, vec!["four".to_owned(), "six".to_owned()]);
    running.stop().await;
}

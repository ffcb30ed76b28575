//! The broker on the wire: bad input closes only the offending connection, corrupt batches are
//! refused and not stored (with acks 0 the connection closes), idempotent retries get their
//! original offsets (also after a restart), long-poll fetches answer as soon as data arrives,
//! and a transactional producer's requests are refused with a fatal error.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use staunch_broker::BrokerConfig;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, InitProducerIdRequest, MetadataRequest,
    ProduceRequest, TransactionalId,
};
use staunch_client::kafka_protocol::protocol::StrBytes;
use staunch_core::{BatchBuilder, ErrorCode};
use staunch_server::ServerConfig;
use tokio::io::AsyncReadExt;

mod common;

use common::Running;
use common::requests::{fetch_request, produce_request};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn start(dir: &std::path::Path, max_request_bytes: usize) -> Running {
    let server = ServerConfig {
        max_request_bytes,
        ..ServerConfig::default()
    };
    let any_port = "127.0.0.1:0".parse().unwrap();
    common::start_server(dir, any_port, server, BrokerConfig::default()).await
}

async fn connect(addr: SocketAddr) -> Connection {
    Connection::connect(addr, "wire-test", TIMEOUT)
        .await
        .unwrap()
}

/// Produces and returns (error code, base offset).
async fn produce(connection: &mut Connection, topic: &str, records: Vec<u8>) -> (i16, i64) {
    let response = connection
        .call(produce_request(topic, -1, records))
        .await
        .unwrap();
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Every record value stored in partition 0 of `topic`.
async fn values(connection: &mut Connection, topic: &str) -> Vec<Vec<u8>> {
    let response = connection.call(fetch_request(topic, 0, 0)).await.unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let bytes = partition.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    for batch in staunch_core::batch::batches(&bytes) {
        for record in batch.unwrap().records().unwrap() {
            out.push(record.unwrap().value.unwrap_or_default().to_vec());
        }
    }
    out
}

/// Waits for the broker to close `stream`; panics if it answers or stays open.
async fn assert_closed(mut stream: tokio::net::TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: broker answered {n} bytes instead of closing"),
        Err(_) => panic!("{what}: connection still open after {TIMEOUT:?}"),
    }
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&77i32.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_the_offending_connection() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut good = connect(running.addr).await;
    let (code, _) = produce(
        &mut good,
        "bad-input",
        BatchBuilder::new(1).record(None, Some(b"before")).build(),
    )
    .await;
    assert_eq!(code, 0);

    let mut random = vec![0u8; 4096];
    let mut rng = fastrand::Rng::with_seed(7);
    rng.fill(&mut random);
    random[..4].copy_from_slice(&1000i32.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", random, false),
        (
            "a frame claiming 2 GiB",
            i32::MAX.to_be_bytes().to_vec(),
            false,
        ),
        (
            "a negative frame size",
            (-1i32).to_be_bytes().to_vec(),
            false,
        ),
        (
            "a frame larger than the configured maximum",
            (2i32 << 20).to_be_bytes().to_vec(),
            false,
        ),
        ("an unknown API key", frame(999, 0, &[0, 0]), false),
        (
            "a known key at an unsupported version",
            frame(ApiKey::Metadata as i16, 99, &[]),
            false,
        ),
        (
            "a header shorter than 8 bytes",
            vec![0, 0, 0, 3, 0, 3, 0],
            false,
        ),
        // Metadata v1 whose topic array claims 50 million entries.
        (
            "a valid header with a malformed body",
            frame(
                ApiKey::Metadata as i16,
                1,
                &[0xff, 0xff, 0x03, 0x00, 0x00, 0x00],
            ),
            false,
        ),
        // A truncated frame: the size says 100 bytes, 20 arrive, then the client hangs up.
        (
            "a truncated frame",
            {
                let mut f = 100i32.to_be_bytes().to_vec();
                f.extend_from_slice(&[1; 20]);
                f
            },
            true,
        ),
    ];
    for (what, bytes, hang_up) in cases {
        let stream = raw(running.addr, &bytes).await;
        if hang_up {
            drop(stream);
        } else {
            assert_closed(stream, what).await;
        }
        // The well-behaved client is still served, on its existing connection and a new one.
        let metadata = good.call(MetadataRequest::default()).await.unwrap();
        assert_eq!(metadata.brokers.len(), 1, "after {what}");
        let mut fresh = connect(running.addr).await;
        assert_eq!(
            values(&mut fresh, "bad-input").await,
            vec![b"before".to_vec()],
            "after {what}"
        );
    }

    // ApiVersions at a version the broker does not know is answered (in v0) with
    // UNSUPPORTED_VERSION and the supported ranges, so clients can fall back.
    let mut stream = raw(running.addr, &frame(ApiKey::ApiVersions as i16, 99, &[])).await;
    let len = stream.read_i32().await.unwrap();
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(&body[..4], &77i32.to_be_bytes(), "correlation id");
    assert_eq!(
        &body[4..6],
        &ErrorCode::UnsupportedVersion.code().to_be_bytes()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_crc_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut c = connect(running.addr).await;
    assert_eq!(
        produce(
            &mut c,
            "crc",
            BatchBuilder::new(1).record(None, Some(b"good")).build()
        )
        .await
        .0,
        0
    );
    let mut corrupt = BatchBuilder::new(1).record(None, Some(b"evil")).build();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    let (code, _) = produce(&mut c, "crc", corrupt).await;
    assert_eq!(code, ErrorCode::CorruptMessage.code());
    let (code, _) = produce(&mut c, "crc", vec![1, 2, 3]).await;
    assert_eq!(code, ErrorCode::CorruptMessage.code());
    assert_eq!(values(&mut c, "crc").await, vec![b"good".to_vec()]);
    running.stop().await;
}

/// A produce with acks 0 that fails (here a bad CRC) closes its connection, as Kafka does: the
/// only way to tell a producer that expects no answer. Nothing of it is stored, nor of a
/// produce pipelined behind it; a good acks 0 produce before it was, and other connections go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acks_zero_produce_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut fire = connect(running.addr).await;
    let version = fire.version_for::<ProduceRequest>().unwrap();
    let good = BatchBuilder::new(1).record(None, Some(b"good")).build();
    fire.send_at(version, &produce_request("zero", 0, good))
        .await
        .unwrap();
    // Still open after a good one: the next call gets its own answer.
    let versions = fire.call(ApiVersionsRequest::default()).await.unwrap();
    assert_eq!(versions.error_code, 0);
    let mut corrupt = BatchBuilder::new(1).record(None, Some(b"evil")).build();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    fire.send_at(version, &produce_request("zero", 0, corrupt))
        .await
        .unwrap();
    // A request pipelined behind the failed one is not applied: it could never be answered.
    let late = BatchBuilder::new(1).record(None, Some(b"late")).build();
    fire.send_at(version, &produce_request("zero", 1, late))
        .await
        .unwrap();
    let after = tokio::time::timeout(TIMEOUT, fire.call(ApiVersionsRequest::default()))
        .await
        .expect("the connection neither answered nor closed");
    assert!(after.is_err(), "still answering: {after:?}");
    let mut other = connect(running.addr).await;
    assert_eq!(values(&mut other, "zero").await, vec![b"good".to_vec()]);
    drop(other);
    // A wrongly applied late produce is in the log once the server has finished every
    // connection and the broker has flushed, which stopping them waits for; the restarted
    // broker shows all of it.
    running.stop().await;
    let running = start(dir.path(), 1 << 20).await;
    let mut after = connect(running.addr).await;
    assert_eq!(values(&mut after, "zero").await, vec![b"good".to_vec()]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_get_their_original_offsets_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut c = connect(running.addr).await;
    let init = c
        .call(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000))
        .await
        .unwrap();
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let batch = |seq: i32, value: &[u8]| {
        BatchBuilder::new(1)
            .producer(pid, 0, seq)
            .record(None, Some(value))
            .record(None, Some(value))
            .build()
    };
    assert_eq!(produce(&mut c, "idem", batch(0, b"a")).await, (0, 0));
    assert_eq!(produce(&mut c, "idem", batch(2, b"b")).await, (0, 2));
    // A retry of the first batch: original offset, nothing written.
    assert_eq!(produce(&mut c, "idem", batch(0, b"a")).await, (0, 0));
    // A corrupted copy of a stored batch is refused as corrupt, not answered as a duplicate.
    let mut corrupt = batch(0, b"a");
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert_eq!(
        produce(&mut c, "idem", corrupt).await.0,
        ErrorCode::CorruptMessage.code()
    );
    // A gap.
    assert_eq!(
        produce(&mut c, "idem", batch(7, b"x")).await.0,
        ErrorCode::OutOfOrderSequenceNumber.code()
    );
    // An older epoch is fenced.
    let stale = BatchBuilder::new(1)
        .producer(pid, -1, 4)
        .record(None, Some(b"old"))
        .build();
    assert_ne!(produce(&mut c, "idem", stale).await.0, 0);
    running.stop().await;

    let running = start(dir.path(), 1 << 20).await;
    let mut c = connect(running.addr).await;
    // The state was rebuilt from the log: the retry is still recognised.
    assert_eq!(produce(&mut c, "idem", batch(2, b"b")).await, (0, 2));
    assert_eq!(produce(&mut c, "idem", batch(4, b"c")).await, (0, 4));
    assert_eq!(values(&mut c, "idem").await.len(), 6);
    // Producer ids are never handed out twice, across restarts.
    let next = c
        .call(InitProducerIdRequest::default())
        .await
        .unwrap()
        .producer_id
        .0;
    assert!(next > pid, "producer id {next} reused (first was {pid})");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_fetch_answers_when_data_arrives_and_acks_zero_gets_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut setup = connect(running.addr).await;
    assert_eq!(
        produce(
            &mut setup,
            "poll",
            BatchBuilder::new(1).record(None, Some(b"0")).build()
        )
        .await,
        (0, 0)
    );
    let mut consumer = connect(running.addr).await;
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let response = consumer
            .call(fetch_request("poll", 1, 60_000))
            .await
            .unwrap();
        (response, started.elapsed())
    });
    // The record is sent once the fetch has found nothing and waits for data.
    while running.broker.fetches_waiting() == 0 {
        assert!(
            started.elapsed() < TIMEOUT,
            "the fetch was not waiting for data within {TIMEOUT:?}"
        );
        assert!(
            !poll.is_finished(),
            "the fetch was answered before any data arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // acks = 0: no answer is sent, the record is still stored.
    let mut producer = connect(running.addr).await;
    let version = producer.version_for::<ProduceRequest>().unwrap();
    producer
        .send_at(
            version,
            &produce_request(
                "poll",
                0,
                BatchBuilder::new(1).record(None, Some(b"1")).build(),
            ),
        )
        .await
        .unwrap();
    let (response, waited) = tokio::time::timeout(TIMEOUT, poll).await.unwrap().unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 2);
    assert!(!partition.records.clone().unwrap_or_default().is_empty());
    // Answered on arrival, not at the 60 s max wait.
    assert!(
        waited < Duration::from_secs(30),
        "long poll took {waited:?}"
    );
    // The next call on the acks=0 connection gets its own answer, not a stray produce answer.
    let versions = producer.call(ApiVersionsRequest::default()).await.unwrap();
    assert_eq!(versions.error_code, 0);
    running.stop().await;
}

/// Requests sent back to back on one connection (as librdkafka pipelines up to 5 produces) are
/// answered in request order, with offsets in the order the produces were sent — also when an
/// idempotent producer's batches and other requests are interleaved — and a fetch that follows
/// the acknowledgements sees every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    use staunch_protocol::decode_response;
    use staunch_protocol::kafka_protocol::messages::ResponseKind;

    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut c = connect(running.addr).await;
    let pid = c
        .call(InitProducerIdRequest::default())
        .await
        .unwrap()
        .producer_id
        .0;
    let produce_version = c.version_for::<ProduceRequest>().unwrap();
    let metadata_version = c.version_for::<MetadataRequest>().unwrap();
    const ROUNDS: i32 = 40;
    let mut sent = Vec::new();
    for i in 0..ROUNDS {
        let batch = BatchBuilder::new(1)
            .producer(pid, 0, i * 2)
            .record(None, Some(format!("{i}-a").as_bytes()))
            .record(None, Some(format!("{i}-b").as_bytes()))
            .build();
        let id = c
            .send_at(produce_version, &produce_request("pipe", -1, batch))
            .await
            .unwrap();
        sent.push((id, ApiKey::Produce, produce_version));
        if i % 10 == 9 {
            let id = c
                .send_at(metadata_version, &MetadataRequest::default())
                .await
                .unwrap();
            sent.push((id, ApiKey::Metadata, metadata_version));
        }
    }
    let mut next_offset = 0;
    for (id, key, version) in sent {
        let frame = c.read_frame().await.unwrap();
        let (correlation_id, body) = decode_response(key, version, frame).unwrap();
        assert_eq!(correlation_id, id, "answers come back in request order");
        if let ResponseKind::Produce(response) = body {
            let p = &response.responses[0].partition_responses[0];
            assert_eq!((p.error_code, p.base_offset), (0, next_offset));
            next_offset += 2;
        }
    }
    let values = values(&mut c, "pipe").await;
    let expected: Vec<Vec<u8>> = (0..ROUNDS)
        .flat_map(|i| [format!("{i}-a").into_bytes(), format!("{i}-b").into_bytes()])
        .collect();
    assert_eq!(values, expected);
    running.stop().await;
}

/// Staunch has no transactions: a transactional producer's coordinator lookup (every
/// FindCoordinator version that has key types) and InitProducerId (every version) are refused
/// with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients do not retry, and the lookup says
/// why; group lookups and idempotent producers are unaffected; a produce carrying a
/// transactional id is refused with the reason and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_requests_are_refused_with_a_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1 << 20).await;
    let mut c = connect(running.addr).await;
    let text = |s: &str| StrBytes::from_string(s.to_owned());
    let refused = ErrorCode::TransactionalIdAuthorizationFailed.code();
    let reason = "transactions are not supported by Staunch";
    let says_why =
        |message: &Option<StrBytes>| message.as_deref().is_some_and(|m| m.starts_with(reason));
    let port = i32::from(running.addr.port());

    for version in 1..=3 {
        let lookup = |key_type| {
            FindCoordinatorRequest::default()
                .with_key(text("txn-1"))
                .with_key_type(key_type)
        };
        let answer = c.call_at(version, lookup(1)).await.unwrap();
        assert_eq!(answer.error_code, refused, "v{version}");
        assert!(
            says_why(&answer.error_message),
            "v{version}: {:?}",
            answer.error_message
        );
        assert_eq!(answer.node_id.0, -1, "v{version}: no coordinator");
        let group = c.call_at(version, lookup(0)).await.unwrap();
        assert_eq!(
            (group.error_code, group.port),
            (0, port),
            "v{version}: group lookup"
        );
    }
    let lookup = |key_type| {
        FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_coordinator_keys(vec![text("txn-1"), text("txn-2")])
    };
    let answer = c.call_at(4, lookup(1)).await.unwrap();
    assert_eq!(answer.coordinators.len(), 2);
    for (coordinator, key) in answer.coordinators.iter().zip(["txn-1", "txn-2"]) {
        assert_eq!(&*coordinator.key, key);
        assert_eq!(coordinator.error_code, refused, "v4 {key}");
        assert!(
            says_why(&coordinator.error_message),
            "v4 {key}: {:?}",
            coordinator.error_message
        );
        assert_eq!(coordinator.node_id.0, -1, "v4 {key}: no coordinator");
    }
    let groups = c.call_at(4, lookup(0)).await.unwrap();
    assert!(
        groups
            .coordinators
            .iter()
            .all(|g| (g.error_code, g.port) == (0, port)),
        "v4 group lookups"
    );

    let transactional = Some(TransactionalId(text("txn-1")));
    for version in 0..=4 {
        let init = c
            .call_at(
                version,
                InitProducerIdRequest::default()
                    .with_transactional_id(transactional.clone())
                    .with_transaction_timeout_ms(60_000),
            )
            .await
            .unwrap();
        assert_eq!(init.error_code, refused, "InitProducerId v{version}");
        assert_eq!(init.producer_id.0, -1, "InitProducerId v{version}");
    }
    let init = c.call(InitProducerIdRequest::default()).await.unwrap();
    assert_eq!(
        init.error_code, 0,
        "an idempotent producer still gets an id"
    );
    let pid = init.producer_id.0;
    assert!(pid >= 0);

    let batch = || {
        BatchBuilder::new(1)
            .producer(pid, 0, 0)
            .record(None, Some(b"only once"))
            .build()
    };
    let answer = c
        .call(produce_request("txn-topic", -1, batch()).with_transactional_id(transactional))
        .await
        .unwrap();
    let p = &answer.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ErrorCode::InvalidRecord.code());
    assert!(says_why(&p.error_message), "{:?}", p.error_message);
    assert_eq!(produce(&mut c, "txn-topic", batch()).await, (0, 0));
    assert_eq!(
        values(&mut c, "txn-topic").await,
        vec![b"only once".to_vec()]
    );
    running.stop().await;
}

/// A full disk's refusal reaches the client on the wire with its reason: KAFKA_STORAGE_ERROR
/// and an `error_message` saying the disk is full (what kcat and librdkafka users see), the
/// acknowledged records stay readable, and produces work again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_on_the_wire_with_its_reason() {
    use std::sync::Arc;

    use staunch_broker::Storage;
    use staunch_log::LogConfig;
    use staunch_testkit::FaultyIo;

    let disk = FaultyIo::new();
    let storage = Storage::new(Arc::new(disk.clone()), Arc::new(staunch_core::SystemClock));
    let broker = BrokerConfig {
        data_dir: "/faulty".into(),
        log: LogConfig {
            segment_bytes: 16 << 10,
            zero_fill_bytes: 0,
            ..LogConfig::default()
        },
        ..BrokerConfig::default()
    };
    let any_port = "127.0.0.1:0".parse().unwrap();
    let running = common::start_server_on(storage, any_port, ServerConfig::default(), broker).await;
    let mut c = connect(running.addr).await;
    let record = |i: u32| {
        BatchBuilder::new(1)
            .record(None, Some(format!("record {i}").as_bytes()))
            .build()
    };
    assert_eq!(produce(&mut c, "full", record(0)).await, (0, 0));
    disk.set_capacity(Some(disk.used_bytes()));
    let mut stored = vec![b"record 0".to_vec()];
    let refused = loop {
        let i = stored.len() as u32;
        assert!(i < 1_000, "the disk never filled up");
        let response = c
            .call(produce_request("full", -1, record(i)))
            .await
            .unwrap();
        let p = response.responses[0].partition_responses[0].clone();
        if p.error_code != 0 {
            break p;
        }
        stored.push(format!("record {i}").into_bytes());
    };
    assert_eq!(refused.error_code, ErrorCode::KafkaStorageError.code());
    let message = refused.error_message.as_deref().unwrap_or_default();
    assert!(
        message.contains("disk full") && message.contains("until space is freed"),
        "{message:?}"
    );
    assert_eq!(values(&mut c, "full").await, stored);
    disk.set_capacity(None);
    let (code, offset) = produce(&mut c, "full", record(9_999)).await;
    assert_eq!((code, offset), (0, stored.len() as i64));
    running.stop().await;
}

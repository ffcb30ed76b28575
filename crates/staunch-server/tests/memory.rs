//! Hostile load: several connections send the worst decode-amplifying frame known (see
//! `vendor/kafka-protocol/PATCHES.md` and `src/budget.rs`) while a well-behaved client keeps
//! producing and fetching; the process's peak resident memory stays under the stated bound.
//!
//! Its own test binary, with this one test, so no other test moves the memory readings.
//!
//! The stated bound, for this configuration (`max_request_bytes` 2 MiB,
//! `queued_max_request_bytes` 128 MiB, eight hostile connections): the peak resident memory
//! (VmHWM) stays within [`GROWTH_BOUND`] (192 MiB: the budget plus 64 MiB for everything else)
//! of the resident memory of the idle broker. Each hostile frame decodes to ~84 MiB and is
//! charged 96 MiB, so only one decodes at a time; with the budget off, several decode at once
//! and the peak goes past the bound.

use std::time::{Duration, Instant};

use bytes::Bytes;
use staunch_broker::BrokerConfig;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_client::kafka_protocol::messages::{
    ApiKey, FetchRequest, ProduceRequest, TopicName, fetch_request,
};
use staunch_client::kafka_protocol::protocol::StrBytes;
use staunch_core::BatchBuilder;
use staunch_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

/// Largest request frame of this test's server.
const MAX_REQUEST_BYTES: usize = 2 << 20;
/// This test's request budget.
const BUDGET: usize = 128 << 20;
/// How far the peak resident memory may rise over the idle broker's.
const GROWTH_BOUND: usize = BUDGET + (64 << 20);
/// Hostile connections at once, and frames each sends.
const HOSTILE_CONNECTIONS: usize = 8;
const HOSTILE_ROUNDS: usize = 2;
/// The bound on every wait.
const LIMIT: Duration = Duration::from_secs(60);

/// `field` of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A LeaveGroup v4 frame (size prefix included) of `frame_len` bytes: its members array is as
/// long as the frame allows, each member 3 bytes (empty member id, null group instance id, no
/// tagged fields) that decode to 120, and the last member is cut short, so the whole array is
/// decoded before the frame is refused (and the connection closed). The same raw-bytes
/// technique as `wire.rs`'s malformed frames.
fn amplifying_frame(frame_len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(frame_len + 4);
    frame.extend_from_slice(&(frame_len as i32).to_be_bytes());
    frame.extend_from_slice(&(ApiKey::LeaveGroup as i16).to_be_bytes());
    frame.extend_from_slice(&4i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    frame.push(0); // header tagged fields
    frame.extend_from_slice(&[2, b'g']); // group id "g"
    let header_len = frame.len() - 4;
    let members = (frame_len - header_len - 3) / 3 + 1;
    let mut count = members as u64 + 1; // compact array: count + 1, as a varint
    while count >= 0x80 {
        frame.push((count as u8) | 0x80);
        count >>= 7;
    }
    frame.push(count as u8);
    while frame.len() + 3 <= frame_len + 4 {
        frame.extend_from_slice(&[1, 0, 0]);
    }
    frame.resize(frame_len + 4, 1);
    frame
}

fn produce_request(topic: &str, value: &[u8]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(
                            BatchBuilder::new(1).record(None, Some(value)).build(),
                        ))),
                ]),
        ])
}

fn fetch_request(topic: &str, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// Sends `frame` on a new connection and waits for the broker to close it (it must not
/// answer a frame that does not decode).
async fn send_hostile(addr: std::net::SocketAddr, frame: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The broker may close before reading all of it once it refuses the frame.
    let _ = stream.write_all(frame).await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the broker answered a malformed frame with {n} bytes"),
        Err(_) => panic!("the hostile connection was still open after {LIMIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_frames_leave_memory_bounded_and_a_good_client_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerConfig {
        max_request_bytes: MAX_REQUEST_BYTES,
        queued_max_request_bytes: BUDGET,
        ..ServerConfig::default()
    };
    let any_port = "127.0.0.1:0".parse().unwrap();
    let running = common::start_server(dir.path(), any_port, server, BrokerConfig::default()).await;
    let mut good = Connection::connect(running.addr, "good", Duration::from_secs(20))
        .await
        .unwrap();
    // Warm up the good path (topic created, buffers allocated) before the baseline.
    let first = good.call(produce_request("steady", b"0")).await.unwrap();
    assert_eq!(first.responses[0].partition_responses[0].error_code, 0);
    let frame = Bytes::from(amplifying_frame(MAX_REQUEST_BYTES));
    let baseline = status_bytes("VmRSS:");

    let hostile: Vec<_> = (0..HOSTILE_CONNECTIONS)
        .map(|_| {
            let frame = frame.clone();
            let addr = running.addr;
            tokio::spawn(async move {
                for _ in 0..HOSTILE_ROUNDS {
                    send_hostile(addr, &frame).await;
                }
            })
        })
        .collect();

    // The good client keeps producing and reading back while the hostile frames are handled.
    let started = Instant::now();
    let mut served = 0usize;
    let mut next_offset = 1i64;
    // Served at least once, starting while the hostile connections are being opened.
    while served == 0 || hostile.iter().any(|h| !h.is_finished()) {
        assert!(
            started.elapsed() < LIMIT * 3,
            "hostile load still running after {:?}",
            LIMIT * 3
        );
        assert!(served < 100_000, "bounded loop");
        let value = format!("v{served}");
        let produced = good
            .call(produce_request("steady", value.as_bytes()))
            .await
            .unwrap();
        let p = &produced.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce during hostile load");
        assert_eq!(p.base_offset, next_offset);
        let fetched = good
            .call(fetch_request("steady", next_offset))
            .await
            .unwrap();
        let partition = &fetched.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "fetch during hostile load");
        let records = partition.records.clone().unwrap_or_default();
        let batch = staunch_core::batch::batches(&records)
            .next()
            .expect("the record just produced")
            .unwrap();
        let record = batch.records().unwrap().next().unwrap().unwrap();
        assert_eq!(record.value, Some(value.as_bytes()));
        next_offset += 1;
        served += 1;
    }
    for h in hostile {
        h.await.unwrap();
    }
    let peak = status_bytes("VmHWM:");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "resident memory: {} MiB idle, {} MiB peak (growth {} MiB, bound {} MiB); \
         the good client was served {served} produce + fetch pairs",
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        GROWTH_BOUND >> 20
    );
    assert!(
        growth <= GROWTH_BOUND,
        "peak resident memory rose {} MiB over the idle broker's, over the bound of {} MiB",
        growth >> 20,
        GROWTH_BOUND >> 20
    );
    running.stop().await;
}

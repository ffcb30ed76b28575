//! Ten thousand partitions on one broker, in a test-sized configuration: the broker creates
//! them, serves a sample, shuts down and opens them all again with everything there — while
//! the process's threads and open descriptors stay under bounds that do not grow with the
//! partition count (read from `/proc/self`).
//!
//! Its own test binary: the counts are of the whole process, so no other test may run beside
//! it.

use std::time::Duration;

use bytes::Bytes;
use staunch_broker::{Broker, BrokerConfig};
use staunch_core::api::{CreateTopicCall, FetchCall, FetchPosition, ProduceCall, TopicCreation};
use staunch_core::{Acks, BatchBuilder, BrokerApi, PartitionBatch, TopicPartition};

const PARTITIONS: i32 = 10_000;
/// Every `SAMPLE_EVERY`-th partition is written and read back.
const SAMPLE_EVERY: i32 = 50;
const MAX_OPEN_FILES: usize = 256;
const BACKGROUND_THREADS: usize = 4;
const IO_THREADS: usize = 16;
/// Tokio's workers (2), the produce path's blocking threads (`IO_THREADS`), other short
/// blocking work, the log pool and the test harness: nothing per partition. Before the shared
/// pool a broker ran one thread per partition, and a produce to many partitions held a
/// blocking thread per partition.
const MAX_THREADS: usize = 64;
/// The file cache's files plus the data directory lock, standard streams and the like.
const MAX_DESCRIPTORS: usize = MAX_OPEN_FILES + 64;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig {
        data_dir: dir.to_owned(),
        auto_create_topics: false,
        max_open_files: MAX_OPEN_FILES,
        background_threads: BACKGROUND_THREADS,
        io_threads: IO_THREADS,
        ..BrokerConfig::default()
    };
    // Test-sized segments: small files, quick to create.
    config.log.segment_bytes = 64 << 10;
    config
}

fn status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line[field.len()..]
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn check_bounds(when: &str, since: std::time::Instant) {
    let threads = status("Threads:");
    let fds = descriptors();
    eprintln!(
        "{when} ({:.1?}): {threads} threads, {fds} descriptors, VmRSS {} kB",
        since.elapsed(),
        status("VmRSS:")
    );
    assert!(
        threads <= MAX_THREADS,
        "{when}: {threads} threads for {PARTITIONS} partitions"
    );
    assert!(
        fds <= MAX_DESCRIPTORS,
        "{when}: {fds} open descriptors for {PARTITIONS} partitions"
    );
}

fn record(partition: i32) -> Vec<u8> {
    format!("partition {partition}").into_bytes()
}

async fn open(dir: &std::path::Path) -> Broker {
    let config = config(dir);
    tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .unwrap()
        .unwrap()
}

async fn fetch_sample(broker: &Broker) {
    let sample: Vec<i32> = (0..PARTITIONS).step_by(SAMPLE_EVERY as usize).collect();
    for chunk in sample.chunks(100) {
        let call = FetchCall {
            max_wait: Duration::ZERO,
            min_bytes: 0,
            max_bytes: 64 << 20,
            partitions: chunk
                .iter()
                .map(|&p| FetchPosition {
                    partition: TopicPartition::new("wide", p),
                    offset: 0,
                    max_bytes: 1 << 20,
                })
                .collect(),
        };
        for (tp, outcome) in BrokerApi::fetch(broker, call).await {
            let fetched = outcome.unwrap_or_else(|e| panic!("{tp:?}: {e}"));
            assert_eq!(fetched.high_watermark, 1, "{tp:?}");
            let batch = staunch_core::RecordBatch::parse(&fetched.records).unwrap();
            let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(records[0].value, Some(&record(tp.partition)[..]), "{tp:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_partitions_open_serve_and_reopen_within_bounded_threads_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let broker = open(dir.path()).await;
    let created = BrokerApi::create_topic(
        &broker,
        CreateTopicCall {
            name: "wide".to_owned(),
            partitions: Some(PARTITIONS),
            replication_factor: None,
            configs: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(created, TopicCreation::Created);
    check_bounds("after creating the topic", start);

    let sample: Vec<i32> = (0..PARTITIONS).step_by(SAMPLE_EVERY as usize).collect();
    for chunk in sample.chunks(100) {
        let call = ProduceCall {
            acks: Acks::All,
            timeout: Duration::from_secs(30),
            batches: chunk
                .iter()
                .map(|&p| PartitionBatch {
                    partition: TopicPartition::new("wide", p),
                    records: Bytes::from(
                        BatchBuilder::new(1_700_000_000_000)
                            .record(None, Some(&record(p)))
                            .build(),
                    ),
                })
                .collect(),
        };
        for (tp, outcome) in BrokerApi::produce(&broker, call).await {
            let ack = outcome.unwrap_or_else(|e| panic!("{tp:?}: {e}"));
            assert_eq!(ack.base_offset, 0, "{tp:?}");
        }
    }
    fetch_sample(&broker).await;
    check_bounds("after producing to and fetching from the sample", start);
    broker.shutdown().await;
    drop(broker);
    eprintln!("shut down ({:.1?})", start.elapsed());

    let broker = open(dir.path()).await;
    check_bounds("after reopening", start);
    let topic = BrokerApi::topic(&broker, "wide").await.unwrap();
    assert_eq!(topic.partitions.len(), PARTITIONS as usize);
    fetch_sample(&broker).await;
    check_bounds("after fetching the sample again", start);
    broker.shutdown().await;
    drop(broker);
    eprintln!("shut down again ({:.1?})", start.elapsed());
}

//! The broker on a failing, hanging or full disk (`FaultyIo` and a `ManualClock`):
//!
//! - an fsync fails: the waiting produces get KAFKA_STORAGE_ERROR, and so does every later one
//!   to that partition although the disk's later fsyncs succeed again (fsyncgate: a failed
//!   fsync is never retried as if it had worked); other partitions go on; the failed
//!   partition still serves what it acknowledged; a restart brings it back;
//! - an fsync hangs: the produces waiting for it are answered KAFKA_STORAGE_ERROR or
//!   REQUEST_TIMED_OUT within about the log's `sync_timeout`, never success, and the partition
//!   stays offline even once the fsync returns; other partitions go on;
//! - the disk is full: produces are refused with KAFKA_STORAGE_ERROR saying so, fetches go on,
//!   and produces work again once space is freed, without a restart.
//!
//! After each, a reopened broker (a restart, and a power cut) has every acknowledged record at
//! its offset. Every test runs under a time limit, so a hang fails it instead of stalling CI.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use staunch_broker::{Broker, BrokerConfig, FetchPartition, NewTopic, ProducePartition, Storage};
use staunch_broker::{FetchResult, ProduceResult};
use staunch_core::{BatchBuilder, ErrorCode, ManualClock};
use staunch_log::LogConfig;
use staunch_testkit::log_store_suite::records_of;
use staunch_testkit::{CrashMode, FaultyIo};

/// The whole of one test may take this long (it takes well under a second when it passes).
const LIMIT: Duration = Duration::from_secs(60);
/// The log's `sync_timeout` in these tests.
const SYNC_TIMEOUT: Duration = Duration::from_millis(200);

/// Acknowledged records: (topic, partition) → offset → value.
type Acked = BTreeMap<(String, i32), BTreeMap<i64, Vec<u8>>>;

fn config(zero_fill_bytes: u64) -> BrokerConfig {
    BrokerConfig {
        data_dir: "/disk".into(),
        auto_create_topics: false,
        log: LogConfig {
            sync_timeout: SYNC_TIMEOUT,
            segment_bytes: 16 << 10,
            max_batch_bytes: 4 << 10,
            index_interval_bytes: 256,
            zero_fill_bytes,
            ..LogConfig::default()
        },
        ..BrokerConfig::default()
    }
}

/// Runs `test` on a two-thread runtime, failing it if it takes longer than [`LIMIT`]. The
/// runtime is not waited for at the end: a blocking thread stuck in a hung fsync (a bug the
/// test found) must fail the test, not hang it.
fn run(test: impl Future<Output = ()> + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async { tokio::time::timeout(LIMIT, tokio::spawn(test)).await });
    runtime.shutdown_background();
    match outcome {
        Err(_) => panic!("the test ran into its time limit ({LIMIT:?}): something hangs"),
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Ok(Ok(())) => {}
    }
}

async fn open(disk: &FaultyIo, config: BrokerConfig) -> Broker {
    let storage = Storage::new(
        Arc::new(disk.clone()),
        Arc::new(ManualClock::new(1_750_000_000_000)),
    );
    tokio::task::spawn_blocking(move || Broker::open_with(config, storage))
        .await
        .unwrap()
        .expect("the broker opens")
}

async fn create(broker: &Broker, name: &str, partitions: i32) {
    let outcome = broker
        .create_topics(
            vec![NewTopic {
                name: name.to_owned(),
                partitions,
                replication_factor: 1,
                configs: Vec::new(),
            }],
            false,
        )
        .await;
    assert_eq!(outcome[0].error, ErrorCode::None, "{outcome:?}");
}

/// The value of a record: unique per (topic, partition, tag).
fn value(topic: &str, partition: i32, tag: u32) -> Vec<u8> {
    format!("{topic}-{partition}-{tag}").into_bytes()
}

/// Produces one single-record batch with acks all.
async fn produce(broker: &Broker, topic: &str, partition: i32, tag: u32) -> ProduceResult {
    let records = BatchBuilder::new(1_000)
        .record(None, Some(&value(topic, partition, tag)))
        .build();
    let mut results = broker
        .produce(
            -1,
            vec![ProducePartition {
                topic: topic.to_owned(),
                partition,
                records: BytesMut::from(&records[..]),
            }],
        )
        .await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

/// Produces and demands an acknowledgement, recording it.
async fn produce_ok(broker: &Broker, acked: &mut Acked, topic: &str, partition: i32, tag: u32) {
    let result = produce(broker, topic, partition, tag).await;
    assert_eq!(result.error, ErrorCode::None, "{result:?}");
    acked
        .entry((topic.to_owned(), partition))
        .or_default()
        .insert(result.base_offset, value(topic, partition, tag));
}

/// Fetches everything visible in one partition.
async fn fetch(broker: &Broker, topic: &str, partition: i32) -> FetchResult {
    let mut results = broker
        .fetch(
            Duration::ZERO,
            0,
            i32::MAX,
            vec![FetchPartition {
                topic: topic.to_owned(),
                partition,
                fetch_offset: 0,
                current_leader_epoch: -1,
                max_bytes: i32::MAX,
            }],
        )
        .await;
    results.remove(0)
}

/// Checks that every acknowledged record is served at its offset, and nothing above the high
/// watermark.
async fn check(broker: &Broker, acked: &Acked, when: &str) {
    for ((topic, partition), records) in acked {
        let fetched = fetch(broker, topic, *partition).await;
        assert_eq!(
            fetched.error,
            ErrorCode::None,
            "{when}: {topic}-{partition}"
        );
        let stored: BTreeMap<i64, Vec<u8>> = records_of(&fetched.records).into_iter().collect();
        for (offset, value) in records {
            assert_eq!(
                stored.get(offset),
                Some(value),
                "{when}: {topic}-{partition}: the acknowledged record at offset {offset} is lost \
                 (high watermark {})",
                fetched.high_watermark
            );
        }
        assert!(stored.keys().all(|o| *o < fetched.high_watermark));
    }
}

async fn shutdown(broker: Broker) {
    tokio::time::timeout(Duration::from_secs(10), broker.shutdown())
        .await
        .expect("shutdown on a faulty disk does not hang");
}

fn says(result: &ProduceResult, words: &[&str]) -> bool {
    let message = result.error_message.as_deref().unwrap_or_default();
    words.iter().all(|w| message.contains(w))
}

/// (a) An fsync fails while produces wait for it. They all get KAFKA_STORAGE_ERROR; so does
/// every later produce to that partition, although the disk's next fsyncs would succeed (Linux
/// reports a writeback error once and may have dropped the pages: retrying and believing the
/// next fsync would acknowledge lost data). Other partitions and topics on the same disk go on
/// acknowledging; the failed partition still serves what it acknowledged. After a power cut,
/// and after a restart, every acknowledged record is there, and after the restart the
/// partition accepts records again.
#[test]
fn a_failed_fsync_takes_only_its_partition_offline_until_restart() {
    run(async {
        let disk = FaultyIo::new();
        // No zero-filling: its background fsyncs would make "the next fsync of t-0" depend on
        // timing.
        let broker = open(&disk, config(0)).await;
        create(&broker, "t", 2).await;
        create(&broker, "u", 1).await;
        let mut acked = Acked::new();
        for tag in 0..3 {
            for (topic, partition) in [("t", 0), ("t", 1), ("u", 0)] {
                produce_ok(&broker, &mut acked, topic, partition, tag).await;
            }
        }
        let high_watermark = fetch(&broker, "t", 0).await.high_watermark;

        // The next fsync of partition t-0 fails; every fsync after it succeeds again.
        disk.subdir("topics/t/0").fail_one_sync_after(1);
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let broker = broker.clone();
                tokio::spawn(async move { produce(&broker, "t", 0, 100 + i).await })
            })
            .collect();
        for produce in waiting {
            let result = produce.await.unwrap();
            assert_eq!(result.error, ErrorCode::KafkaStorageError, "{result:?}");
            assert!(says(&result, &["fdatasync", "failed"]), "{result:?}");
        }
        // fsyncgate: the disk's fsyncs work again, the partition does not.
        for tag in 200..203 {
            let result = produce(&broker, "t", 0, tag).await;
            assert_eq!(result.error, ErrorCode::KafkaStorageError, "{result:?}");
            assert!(
                says(&result, &["offline until the broker restarts"]),
                "{result:?}"
            );
        }
        // Everything else on the disk goes on.
        for tag in 10..13 {
            produce_ok(&broker, &mut acked, "t", 1, tag).await;
            produce_ok(&broker, &mut acked, "u", 0, tag).await;
        }
        // The failed partition serves what it acknowledged, and only that.
        let fetched = fetch(&broker, "t", 0).await;
        assert_eq!(fetched.error, ErrorCode::None);
        assert_eq!(fetched.high_watermark, high_watermark);
        check(&broker, &acked, "after the failure").await;

        // A power cut now, then a reopen: nothing acknowledged is lost.
        let image = disk.crash(CrashMode::DropUnsynced);
        let after_cut = open(&image, config(0)).await;
        check(&after_cut, &acked, "after a power cut").await;
        shutdown(after_cut).await;

        // A restart: the partition takes records again.
        shutdown(broker).await;
        let broker = open(&disk, config(0)).await;
        check(&broker, &acked, "after the restart").await;
        for tag in 300..303 {
            produce_ok(&broker, &mut acked, "t", 0, tag).await;
        }
        check(&broker, &acked, "after producing again").await;
        shutdown(broker).await;
    });
}

/// (b) An fsync hangs. The produces waiting for it are answered within about `sync_timeout`
/// (200 ms here) — KAFKA_STORAGE_ERROR when the log gave up on the fsync, REQUEST_TIMED_OUT
/// when the broker's own bound ran out first — and never with success; later produces to the
/// partition are refused at once. Other partitions go on acknowledging meanwhile, and the
/// failed partition serves what it acknowledged. When the disk comes back the late fsync is
/// not believed; after a restart everything acknowledged is there and the partition takes
/// records again.
#[test]
fn a_hanging_fsync_is_answered_within_the_timeout_and_never_acknowledged() {
    run(async {
        let disk = FaultyIo::new();
        // Zero-filling on: its fsyncs hang too, as they would on a hung disk.
        let broker = open(&disk, config(8 << 10)).await;
        create(&broker, "t", 2).await;
        create(&broker, "u", 1).await;
        let mut acked = Acked::new();
        for tag in 0..3 {
            for (topic, partition) in [("t", 0), ("t", 1), ("u", 0)] {
                produce_ok(&broker, &mut acked, topic, partition, tag).await;
            }
        }
        let high_watermark = fetch(&broker, "t", 0).await.high_watermark;

        let hung = disk.subdir("topics/t/0");
        hung.hang_syncs();
        let started = tokio::time::Instant::now();
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let result = produce(&broker, "t", 0, 100 + i).await;
                    (result, started.elapsed())
                })
            })
            .collect();
        // While they wait, the rest of the disk works.
        for tag in 10..13 {
            produce_ok(&broker, &mut acked, "t", 1, tag).await;
            produce_ok(&broker, &mut acked, "u", 0, tag).await;
        }
        for produce in waiting {
            let (result, took) = produce.await.unwrap();
            assert!(
                matches!(
                    result.error,
                    ErrorCode::KafkaStorageError | ErrorCode::RequestTimedOut
                ),
                "{result:?}"
            );
            assert!(result.error_message.is_some(), "{result:?}");
            // A liveness bound, not a measurement: the broker's bound is 2 x sync_timeout.
            assert!(
                took < Duration::from_secs(10),
                "answered only after {took:?}"
            );
        }
        assert!(hung.hung_syncs() >= 1, "the fsync is still stuck");
        // The partition is offline now: refused at once, saying why.
        let result = produce(&broker, "t", 0, 200).await;
        assert_eq!(result.error, ErrorCode::KafkaStorageError, "{result:?}");
        assert!(
            says(&result, &["has not returned within 200ms"]),
            "{result:?}"
        );
        assert_eq!(fetch(&broker, "t", 0).await.high_watermark, high_watermark);
        check(&broker, &acked, "while the fsync hangs").await;
        for tag in 20..23 {
            produce_ok(&broker, &mut acked, "u", 0, tag).await;
        }

        // The disk comes back: the hung fsyncs return Ok, and are not believed.
        hung.release_syncs();
        while hung.hung_syncs() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Time for the released syncer to come back (a check that can only miss a bug, not
        // invent one): the high watermark must not move over records never acknowledged.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fetch(&broker, "t", 0).await.high_watermark, high_watermark);
        let result = produce(&broker, "t", 0, 300).await;
        assert_eq!(result.error, ErrorCode::KafkaStorageError, "{result:?}");
        check(&broker, &acked, "after the disk came back").await;

        // A restart brings the partition back, with everything acknowledged.
        shutdown(broker).await;
        let image = disk.crash(CrashMode::DropUnsynced);
        let after_cut = open(&image, config(8 << 10)).await;
        check(&after_cut, &acked, "after a power cut").await;
        shutdown(after_cut).await;
        let broker = open(&disk, config(8 << 10)).await;
        check(&broker, &acked, "after the restart").await;
        for tag in 400..403 {
            produce_ok(&broker, &mut acked, "t", 0, tag).await;
        }
        check(&broker, &acked, "after producing again").await;
        shutdown(broker).await;
    });
}

/// (c) The disk fills up. Produces are refused with KAFKA_STORAGE_ERROR and a message saying
/// the disk is full; nothing acknowledged is touched; fetches go on. Once space is freed,
/// produces work again on the same broker, without a restart, and after a restart (and after a
/// power cut) every acknowledged record is there.
#[test]
fn a_full_disk_refuses_produces_until_space_is_freed() {
    run(async {
        let disk = FaultyIo::new();
        let broker = open(&disk, config(8 << 10)).await;
        create(&broker, "t", 1).await;
        let mut acked = Acked::new();
        for tag in 0..3 {
            produce_ok(&broker, &mut acked, "t", 0, tag).await;
        }
        // Not one byte more: produces fill what the segments reserved ahead, then fail.
        disk.set_capacity(Some(disk.used_bytes()));
        let mut tag = 10;
        let refused = loop {
            let result = produce(&broker, "t", 0, tag).await;
            if result.error != ErrorCode::None {
                break result;
            }
            acked
                .entry(("t".to_owned(), 0))
                .or_default()
                .insert(result.base_offset, value("t", 0, tag));
            tag += 1;
            assert!(tag < 10_000, "the disk never filled up");
        };
        assert_eq!(refused.error, ErrorCode::KafkaStorageError, "{refused:?}");
        assert!(
            says(&refused, &["disk full", "until space is freed"]),
            "{refused:?}"
        );
        // Still full: still refused; fetches work and serve everything acknowledged.
        let again = produce(&broker, "t", 0, 5_000).await;
        assert_eq!(again.error, ErrorCode::KafkaStorageError, "{again:?}");
        check(&broker, &acked, "with the disk full").await;

        // Space is freed: the same broker takes records again.
        disk.set_capacity(None);
        for tag in 6_000..6_003 {
            produce_ok(&broker, &mut acked, "t", 0, tag).await;
        }
        check(&broker, &acked, "after space was freed").await;

        let image = disk.crash(CrashMode::DropUnsynced);
        let after_cut = open(&image, config(8 << 10)).await;
        check(&after_cut, &acked, "after a power cut").await;
        shutdown(after_cut).await;
        shutdown(broker).await;
        let broker = open(&disk, config(8 << 10)).await;
        check(&broker, &acked, "after the restart").await;
        shutdown(broker).await;
    });
}

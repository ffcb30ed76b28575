//! Every partition log of a broker does its background work on one pool sized by
//! `background_threads`, and the broker's `zero_fill_budget` bounds the zeros all its
//! partitions hold ahead of their data together (without it each would hold
//! `log.zero_fill_bytes`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use staunch_broker::{Broker, BrokerConfig, NewTopic, ProducePartition, Storage};
use staunch_core::{BatchBuilder, ErrorCode, ManualClock};
use staunch_log::LogConfig;
use staunch_testkit::FaultyIo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zero_fill_budget_is_shared_by_every_partition() {
    const PARTITIONS: i32 = 32;
    const BUDGET: u64 = 256 << 10;
    let disk = FaultyIo::new();
    let config = BrokerConfig {
        data_dir: "/disk".into(),
        background_threads: 2,
        zero_fill_budget: BUDGET,
        log: LogConfig {
            // Three 16 KiB chunks of zeros ahead of the data each, if the budget allows.
            zero_fill_bytes: 64 << 10,
            ..LogConfig::default()
        },
        ..BrokerConfig::default()
    };
    let storage = Storage::new(
        Arc::new(disk.clone()),
        Arc::new(ManualClock::new(1_750_000_000_000)),
    );
    let broker = tokio::task::spawn_blocking(move || Broker::open_with(config, storage))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(broker.background_pool().config().threads, 2);
    assert_eq!(broker.background_pool().config().zero_fill_budget, BUDGET);
    let created = broker
        .create_topics(
            vec![NewTopic {
                name: "t".to_owned(),
                partitions: PARTITIONS,
                replication_factor: 1,
                configs: Vec::new(),
            }],
            false,
        )
        .await;
    assert_eq!(created[0].error, ErrorCode::None, "{created:?}");
    let before = disk.used_bytes();
    for partition in 0..PARTITIONS {
        let records = BatchBuilder::new(1_000).record(None, Some(b"v")).build();
        let result = broker
            .produce(
                -1,
                vec![ProducePartition {
                    topic: "t".to_owned(),
                    partition,
                    records: BytesMut::from(&records[..]),
                }],
            )
            .await;
        assert_eq!(result[0].error, ErrorCode::None, "{result:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.background_pool().zero_fill_reserved() < BUDGET {
        assert!(Instant::now() < deadline, "the partitions zero-fill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give any zero-fill beyond the budget (there must be none) time to land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = disk.used_bytes() - before;
    // Data, offsets and recovery points are small; the zeros are what could be large:
    // 32 x 48 KiB = 1.5 MiB without the budget. FaultyIo also counts the 16 KiB left unwritten
    // before each log's zeros (a hole on a real file system), hence the factor.
    assert!(
        grown <= 2 * BUDGET,
        "{grown} bytes more on disk after one small record to each of {PARTITIONS} partitions"
    );
    broker.shutdown().await;
    assert_eq!(broker.background_pool().zero_fill_reserved(), 0);
}

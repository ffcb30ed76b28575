//! The broker's metrics, recorded through the `metrics` facade into a local debugging
//! recorder: records and bytes in and out per topic, partition gauges and consumer lag.

use std::time::Duration;

use bytes::BytesMut;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use staunch_broker::metrics::*;
use staunch_broker::{Broker, BrokerConfig, CommittedOffset, FetchPartition, ProducePartition};
use staunch_testkit::broker_api_suite::batch;

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Everything recorded since the last snapshot (taking one resets the counters and gauges).
fn take(snapshotter: &Snapshotter) -> Snapshot {
    snapshotter.snapshot().into_vec()
}

/// The value of the counter or gauge `name` whose labels include every one of `labels`.
fn value(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshot
        .iter()
        .find(|(key, ..)| {
            key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .and_then(|(.., value)| match value {
            DebugValue::Counter(n) => Some(*n as f64),
            DebugValue::Gauge(g) => Some(g.into_inner()),
            DebugValue::Histogram(_) => None,
        })
}

#[test]
fn produce_and_fetch_count_records_and_bytes_per_topic_and_lag_per_group() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        default_partitions: 2,
        ..BrokerConfig::default()
    };
    // The handles are taken when partitions open: inside the local recorder's scope. They
    // record into it from whatever thread later runs the produce and fetch paths.
    let broker = metrics::with_local_recorder(&recorder, || Broker::open(config).unwrap());
    let batches = [
        batch(1000, &["a", "bb", "ccc"]),
        batch(1001, &["dddd", "eeeee"]),
    ];
    let bytes: usize = batches.iter().map(Vec::len).sum();
    runtime.block_on(async {
        for b in &batches {
            let results = broker
                .produce(
                    -1,
                    vec![ProducePartition {
                        topic: "orders".to_owned(),
                        partition: 1,
                        records: BytesMut::from(&b[..]),
                    }],
                )
                .await;
            assert_eq!(results[0].error, staunch_core::ErrorCode::None);
        }
    });
    // Topics are created on first produce: their handles too must come from the recorder.
    let topic = [("topic", "orders")];
    assert_eq!(value(&take(&snapshotter), RECORDS_IN_TOTAL, &topic), None);
    runtime.block_on(broker.shutdown());
    drop(broker);
    let broker = runtime.block_on(async {
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            // Partitions open on this thread, where the local recorder is (more recovery
            // threads would take their handles where there is none: a global recorder, as
            // `staunch serve` installs, has no such limit).
            recovery_threads: 1,
            ..BrokerConfig::default()
        };
        metrics::with_local_recorder(&recorder, || Broker::open(config).unwrap())
    });
    runtime.block_on(async {
        let more = batch(1002, &["ffffff"]);
        let results = broker
            .produce(
                -1,
                vec![ProducePartition {
                    topic: "orders".to_owned(),
                    partition: 1,
                    records: BytesMut::from(&more[..]),
                }],
            )
            .await;
        assert_eq!(results[0].error, staunch_core::ErrorCode::None);
        let produced = take(&snapshotter);
        assert_eq!(value(&produced, RECORDS_IN_TOTAL, &topic), Some(1.0));
        assert_eq!(
            value(&produced, BYTES_IN_TOTAL, &topic),
            Some(more.len() as f64)
        );
        let fetched = broker
            .fetch(
                Duration::ZERO,
                0,
                1 << 20,
                vec![FetchPartition {
                    topic: "orders".to_owned(),
                    partition: 1,
                    fetch_offset: 0,
                    current_leader_epoch: -1,
                    max_bytes: 1 << 20,
                }],
            )
            .await;
        assert_eq!(fetched[0].records.len(), bytes + more.len());
        let fetched = take(&snapshotter);
        assert_eq!(value(&fetched, RECORDS_OUT_TOTAL, &topic), Some(6.0));
        assert_eq!(
            value(&fetched, BYTES_OUT_TOTAL, &topic),
            Some((bytes + more.len()) as f64)
        );
        let committed = broker
            .commit_offsets(
                "g",
                vec![(
                    "orders".to_owned(),
                    1,
                    CommittedOffset {
                        offset: 2,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_time_ms: 0,
                    },
                )],
            )
            .await;
        assert_eq!(committed[0].2, staunch_core::ErrorCode::None);
    });
    metrics::with_local_recorder(&recorder, || broker.refresh_metrics());
    let gauges = take(&snapshotter);
    assert_eq!(
        value(
            &gauges,
            CONSUMER_GROUP_LAG,
            &[("group", "g"), ("topic", "orders")]
        ),
        Some(4.0),
        "high watermark 6 minus committed 2"
    );
    assert_eq!(value(&gauges, PARTITIONS_ONLINE, &[]), Some(2.0));
    assert_eq!(value(&gauges, PARTITIONS_OFFLINE, &[]), Some(0.0));
    // Deleted offsets: the group's lag series drops to 0 (a snapshot resets gauges to 0, so
    // the lag is set to 4 again first, and not snapshotted before the deletion).
    metrics::with_local_recorder(&recorder, || broker.refresh_metrics());
    runtime.block_on(broker.delete_group_offsets("g")).unwrap();
    metrics::with_local_recorder(&recorder, || broker.refresh_metrics());
    assert_eq!(
        value(
            &take(&snapshotter),
            CONSUMER_GROUP_LAG,
            &[("group", "g"), ("topic", "orders")]
        ),
        Some(0.0)
    );
    runtime.block_on(broker.shutdown());
}

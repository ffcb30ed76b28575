//! The in-process `BrokerApi` of `Broker`, as a consumer uses it: the `broker_api_suite`
//! checks (fetch returns the stored batches byte for byte and long-polls, list offsets, topic
//! creation, the group protocol through a rebalance, committed offsets with metadata), plus
//! what only an embedded broker can show: committed metadata surviving a reopen, and a
//! `max_wait` too long for a deadline.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use staunch_broker::{Broker, BrokerConfig};
use staunch_core::api::{FetchCall, FetchPosition};
use staunch_core::{BrokerApi, TopicPartition};
use staunch_testkit::broker_api_suite as suite;

mod damage;
mod floor;
mod snapshots;

/// The bound on every test body: a hang fails instead of stalling the run.
const LIMIT: Duration = Duration::from_secs(90);

async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, body)
        .await
        .expect("the test did not finish within its bound")
}

async fn open(dir: &Path) -> Broker {
    let config = BrokerConfig {
        data_dir: dir.to_owned(),
        // Topics exist only when created: the suite creates what it uses.
        auto_create_topics: false,
        // Rebalances complete as soon as every member is in.
        group_initial_rebalance_delay: Duration::ZERO,
        ..BrokerConfig::default()
    };
    tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .unwrap()
        .unwrap()
}

/// Runs `check` against a fresh embedded broker, then shuts it down.
async fn with_broker<F: Future<Output = ()>>(check: impl FnOnce(Broker) -> F) {
    let dir = tempfile::tempdir().unwrap();
    bounded(async {
        let broker = open(dir.path()).await;
        check(broker.clone()).await;
        broker.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_the_stored_batches_byte_for_byte_from_several_partitions() {
    with_broker(|broker| async move {
        suite::fetch_returns_the_stored_batches(&broker, "orders").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_for_data_and_answers_as_soon_as_it_arrives() {
    with_broker(|broker| async move {
        suite::a_long_poll_answers_when_data_arrives(&broker, "events").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_finds_the_earliest_the_latest_and_by_timestamp() {
    with_broker(|broker| async move {
        suite::list_offsets_by_spec(&broker, "timed").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_join_sync_heartbeat_rebalance_and_leave() {
    with_broker(|broker| async move {
        suite::two_members_rebalance_and_leave(&broker, &broker, "workers", "work").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_their_metadata_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    bounded(async {
        let broker = open(dir.path()).await;
        suite::commit_offsets_with_metadata(&broker, "orders", "retrying").await;
        broker.shutdown().await;
        drop(broker);

        let reopened = open(dir.path()).await;
        suite::committed_offsets_are_as_committed(&reopened, "orders", "retrying").await;
        reopened.shutdown().await;
    })
    .await;
}

/// A `max_wait` beyond what a deadline can hold (`Duration::MAX`) is not an overflow panic:
/// with data there the fetch answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_max_wait_is_not_a_panic() {
    with_broker(|broker| async move {
        suite::create_new_topic(&broker, "quiet", 1).await;
        let tp = TopicPartition::new("quiet", 0);
        suite::produce(&broker, &tp, &suite::batch(1, &["x"])).await;
        let call = FetchCall {
            max_wait: Duration::MAX,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions: vec![FetchPosition {
                partition: tp,
                offset: 0,
                max_bytes: 1 << 20,
            }],
        };
        let answer = BrokerApi::fetch(&broker, call).await;
        assert!(!answer[0].1.as_ref().unwrap().records.is_empty());
    })
    .await;
}

/// Kafka's fetch budget: the first partition with data brings at least one batch whatever the
/// limits (so a consumer always makes progress), and after that the request's `max_bytes`
/// binds — an exhausted budget, or a partition limit below the next batch, brings nothing
/// rather than one more batch per partition (which let a fetch of many partitions grow far
/// past `max_bytes`, beyond what librdkafka accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_stays_within_its_byte_budget_after_the_first_batch() {
    with_broker(|broker| async move {
        suite::create_new_topic(&broker, "wide", 4).await;
        let value = "v".repeat(4_000);
        let tps: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("wide", p)).collect();
        for tp in &tps {
            suite::produce(&broker, tp, &suite::batch(1, &[value.as_str()])).await;
        }
        let fetch = |max_bytes: i32, partition_max: &[i32]| FetchCall {
            max_wait: Duration::ZERO,
            min_bytes: 1,
            max_bytes,
            partitions: tps
                .iter()
                .zip(partition_max)
                .map(|(tp, &max)| FetchPosition {
                    partition: tp.clone(),
                    offset: 0,
                    max_bytes: max,
                })
                .collect(),
        };
        let sizes = |answer: Vec<(TopicPartition, Result<_, _>)>| -> Vec<usize> {
            answer
                .into_iter()
                .map(
                    |(_, a): (_, Result<staunch_core::api::FetchedRecords, _>)| {
                        a.expect("fetch").records.len()
                    },
                )
                .collect()
        };
        // A request budget of 1 byte: only the first partition brings its (larger) batch.
        let got = sizes(BrokerApi::fetch(&broker, fetch(1, &[1 << 20; 4])).await);
        assert!(got[0] > 4_000, "{got:?}");
        assert_eq!(&got[1..], &[0, 0, 0], "{got:?}");
        // Partition limits of 0: still the first partition's batch, then nothing.
        let got = sizes(BrokerApi::fetch(&broker, fetch(1 << 20, &[0; 4])).await);
        assert!(got[0] > 4_000, "{got:?}");
        assert_eq!(&got[1..], &[0, 0, 0], "{got:?}");
        // Room for about two batches: two partitions bring theirs, the rest nothing.
        let got = sizes(
            BrokerApi::fetch(
                &broker,
                fetch(i32::try_from(2 * got[0] + 10).unwrap(), &[1 << 20; 4]),
            )
            .await,
        );
        assert_eq!(got.iter().filter(|&&n| n > 0).count(), 2, "{got:?}");
        // Enough for all: every partition brings its batch.
        let got = sizes(BrokerApi::fetch(&broker, fetch(1 << 20, &[1 << 20; 4])).await);
        assert!(got.iter().all(|&n| n > 4_000), "{got:?}");
    })
    .await;
}

/// ListOffsets timestamp -3 (KIP-734, ListOffsets v7): the first record with the largest
/// timestamp, found inside its batch, not the batch's first offset; (-1, -1) for an empty
/// partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_max_timestamp_finds_the_first_record_with_the_largest_timestamp() {
    with_broker(|broker| async move {
        suite::create_new_topic(&broker, "late", 1).await;
        let tp = TopicPartition::new("late", 0);
        assert_eq!(broker.list_offset("late", 0, -3).await, Ok((-1, -1)));
        let batch = |timestamps: &[i64]| {
            let mut b = staunch_core::BatchBuilder::new(timestamps[0]);
            for &ts in timestamps {
                b.push(ts, None, Some(b"v"), []);
            }
            b.build()
        };
        suite::produce(&broker, &tp, &batch(&[100, 200, 150])).await; // offsets 0-2
        suite::produce(&broker, &tp, &batch(&[250, 400, 300, 400])).await; // 3-6
        suite::produce(&broker, &tp, &batch(&[50])).await; // 7
        assert_eq!(broker.list_offset("late", 0, -3).await, Ok((4, 400)));
        // Earliest and latest are unchanged by it.
        assert_eq!(broker.list_offset("late", 0, -2).await, Ok((0, -1)));
        assert_eq!(broker.list_offset("late", 0, -1).await, Ok((8, -1)));
    })
    .await;
}

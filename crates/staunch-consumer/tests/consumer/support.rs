//! Shared helpers: an embedded broker, producing, reading a topic back, polling until done.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use staunch_broker::{Broker, BrokerConfig};
use staunch_consumer::ledger::RetryLedger;
use staunch_consumer::{BatchHandler, Consumer, ConsumerConfig, ConsumerRecord, FailurePolicy};
use staunch_core::api::{
    CreateTopicCall, FetchCall, FetchPosition, GroupMembership, OffsetAndMetadata,
};
use staunch_core::batch::batches;
use staunch_core::{
    Acks, BackOff, BatchBuilder, BrokerApi, PartitionBatch, ProduceCall, TopicPartition,
};

/// The longest any test waits for a condition.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

pub(crate) async fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let config = BrokerConfig {
        data_dir: dir.to_owned(),
        group_initial_rebalance_delay: Duration::from_millis(50),
        ..BrokerConfig::default()
    };
    Arc::new(
        tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .unwrap()
            .unwrap(),
    )
}

pub(crate) async fn create<B: BrokerApi>(api: &B, topic: &str, partitions: i32) {
    api.create_topic(CreateTopicCall {
        name: topic.into(),
        partitions: Some(partitions),
        replication_factor: None,
        configs: vec![],
    })
    .await
    .unwrap();
}

/// Creates `topic` with one partition holding `records` (keyed, one batch); returns that
/// partition.
pub(crate) async fn topic_with<B: BrokerApi>(
    api: &B,
    topic: &str,
    records: &[(&str, &str)],
) -> TopicPartition {
    create(api, topic, 1).await;
    let tp = TopicPartition::new(topic, 0);
    produce(api, &tp, records).await;
    tp
}

/// Produces keyed records (acks=all), one batch.
pub(crate) async fn produce<B: BrokerApi>(api: &B, tp: &TopicPartition, records: &[(&str, &str)]) {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for (k, v) in records {
        b.push(
            1_700_000_000_000,
            Some(k.as_bytes()),
            Some(v.as_bytes()),
            [],
        );
    }
    let out = api
        .produce(ProduceCall {
            acks: Acks::All,
            timeout: Duration::from_secs(10),
            batches: vec![PartitionBatch {
                partition: tp.clone(),
                records: Bytes::from(b.build()),
            }],
        })
        .await;
    assert!(out[0].1.is_ok(), "{out:?}");
}

/// Every record of partition 0 of `topic` (none if it does not exist).
pub(crate) async fn read_all<B: BrokerApi>(api: &B, topic: &str) -> Vec<ConsumerRecord> {
    let tp = TopicPartition::new(topic, 0);
    let answer = api
        .fetch(FetchCall {
            max_wait: Duration::ZERO,
            min_bytes: 0,
            max_bytes: 1 << 20,
            partitions: vec![FetchPosition {
                partition: tp.clone(),
                offset: 0,
                max_bytes: 1 << 20,
            }],
        })
        .await;
    let Some((_, Ok(fetched))) = answer.into_iter().next() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for batch in batches(&fetched.records) {
        let batch = batch.unwrap();
        let d = batch.decompressed().unwrap();
        for r in d.records() {
            let r = r.unwrap();
            out.push(ConsumerRecord {
                topic: topic.into(),
                partition: 0,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(Bytes::copy_from_slice),
                value: r.value.map(Bytes::copy_from_slice),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (Bytes::copy_from_slice(k), v.map(Bytes::copy_from_slice)))
                    .collect(),
                delivery_attempt: 1,
            });
        }
    }
    out
}

pub(crate) async fn committed<B: BrokerApi>(
    api: &B,
    group: &str,
    tp: &TopicPartition,
) -> Option<OffsetAndMetadata> {
    api.fetch_committed_offsets(group, vec![tp.clone()])
        .await
        .pop()
        .unwrap()
        .1
        .unwrap()
}

/// An ordered-mode consumer of `group` with a parking lot of `lot` records, blocking retry
/// under `backoff`, and a short fetch wait (20 ms) so tests poll quickly.
pub(crate) fn ordered_config(group: &str, backoff: BackOff, lot: usize) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group);
    config.failure = FailurePolicy::Blocking(backoff);
    config.ordered = Some(lot);
    config.fetch_max_wait = Duration::from_millis(20);
    config
}

/// Commits `offset` of `tp` for `group` with `ledger` as its metadata: what a consumer that
/// stopped there with those failures left behind.
pub(crate) async fn commit_ledger<B: BrokerApi>(
    api: &B,
    group: &str,
    tp: &TopicPartition,
    offset: i64,
    ledger: &RetryLedger,
) {
    let answers = api
        .commit_offsets(
            &GroupMembership::simple(group),
            vec![(
                tp.clone(),
                OffsetAndMetadata {
                    offset,
                    leader_epoch: None,
                    metadata: ledger.encode(),
                },
            )],
        )
        .await;
    assert!(answers.iter().all(|(_, a)| a.is_ok()), "{answers:?}");
}

/// Polls `consumer` with `handler` until `done` is true; panics after [`LIMIT`].
pub(crate) async fn poll_until<B, H, F, Fut>(consumer: &mut Consumer<B>, handler: &H, mut done: F)
where
    B: BrokerApi,
    H: BatchHandler,
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < LIMIT,
            "condition not reached within {LIMIT:?}"
        );
        let _ = consumer.poll_batch(handler).await;
    }
}

pub(crate) fn header<'a>(r: &'a ConsumerRecord, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == name.as_bytes())
        .and_then(|(_, v)| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

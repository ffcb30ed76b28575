//! Send modes, partitioning, flush and close against the embedded broker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use staunch_core::{Acks, TopicPartition};
use staunch_producer::{
    ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata, SendResult,
    partition_for_key,
};

use crate::support::*;

fn quick() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(2),
        ..ProducerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_resolves_with_partition_and_offset_once_stored() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "orders", 2).await;
        let producer = Producer::new(broker.clone(), quick()).unwrap();
        for i in 0..3 {
            let placed = producer
                .send(
                    ProducerRecord::new("orders", format!("v{i}"))
                        .with_key(format!("k{i}"))
                        .with_header("trace", format!("t{i}"))
                        .with_partition(1),
                )
                .await
                .unwrap();
            assert_eq!(placed.partition, TopicPartition::new("orders", 1));
            assert_eq!(placed.offset, i);
        }
        let stored = read_partition(&broker, "orders", 1).await;
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[2].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(stored[2].value.as_deref(), Some(&b"v2"[..]));
        assert_eq!(
            stored[2].headers,
            vec![(b"trace".to_vec(), Some(b"t2".to_vec()))]
        );
        assert!(stored[0].producer_id >= 0, "idempotent by default");
        assert!(read_partition(&broker, "orders", 0).await.is_empty());
        let m = producer.metrics();
        assert_eq!((m.sent, m.acknowledged, m.failed, m.retried), (3, 3, 0, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_async_calls_back_exactly_once_per_record() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "events", 3).await;
        let producer = Producer::new(broker.clone(), quick()).unwrap();
        let outcomes: Arc<Mutex<Vec<(usize, SendResult)>>> = Arc::default();
        const N: usize = 500;
        for i in 0..N {
            let outcomes = outcomes.clone();
            producer
                .send_async(ProducerRecord::new("events", format!("{i}")), move |r| {
                    outcomes.lock().unwrap().push((i, r))
                })
                .await;
        }
        producer.flush().await;
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        assert_eq!(outcomes.len(), N, "one callback per record");
        let ids: HashSet<usize> = outcomes.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids.len(), N, "no record called back twice");
        let mut placements = HashSet::new();
        for (i, result) in &outcomes {
            let placed = result
                .as_ref()
                .unwrap_or_else(|e| panic!("record {i}: {e}"));
            assert!(placements.insert((placed.partition.partition, placed.offset)));
        }
        let mut stored = 0;
        for p in 0..3 {
            let values = values(&broker, "events", p).await;
            for (offset, v) in values.iter().enumerate() {
                let i: usize = v.parse().unwrap();
                let placed = outcomes.iter().find(|(j, _)| *j == i).unwrap();
                let placed = placed.1.as_ref().unwrap();
                assert_eq!(
                    (placed.partition.partition, placed.offset),
                    (p, offset as i64)
                );
            }
            stored += values.len();
        }
        assert_eq!(stored, N);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_records_are_batched_and_delivered_without_results() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "logs", 1).await;
        let producer = Producer::new(broker.clone(), quick()).unwrap();
        for i in 0..300 {
            producer
                .send_oneway(ProducerRecord::new("logs", format!("{i}")))
                .await
                .unwrap();
        }
        producer.flush().await;
        let m = producer.metrics();
        assert_eq!((m.sent, m.acknowledged, m.failed), (300, 300, 0));
        let values = values(&broker, "logs", 0).await;
        let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        assert_eq!(values, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_on_their_murmur2_partitions() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "users", 6).await;
        let producer = Producer::new(broker.clone(), quick()).unwrap();
        let results: Arc<Mutex<Vec<(String, RecordMetadata)>>> = Arc::default();
        for i in 0..200 {
            let key = format!("user-{i}");
            let results = results.clone();
            let k = key.clone();
            producer
                .send_async(ProducerRecord::new("users", "x").with_key(key), move |r| {
                    results.lock().unwrap().push((k, r.unwrap()))
                })
                .await;
        }
        producer.flush().await;
        let results = results.lock().unwrap().clone();
        assert_eq!(results.len(), 200);
        let mut used = HashSet::new();
        for (key, placed) in &results {
            assert_eq!(
                placed.partition.partition,
                partition_for_key(key.as_bytes(), 6),
                "{key}"
            );
            used.insert(placed.partition.partition);
        }
        assert!(used.len() > 1);
        for p in 0..6 {
            for stored in read_partition(&broker, "users", p).await {
                let key = stored.key.unwrap();
                assert_eq!(partition_for_key(&key, 6), p);
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_lingering_records_and_waits_for_them() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "slow", 2).await;
        // Without flush these would wait a minute for their linger time.
        let config = ProducerConfig {
            linger: Duration::from_secs(60),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(broker.clone(), config).unwrap();
        for i in 0..50 {
            producer
                .send_oneway(ProducerRecord::new("slow", format!("{i}")).with_partition(i % 2))
                .await
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), producer.flush())
            .await
            .expect("flush does not wait for linger");
        assert_eq!(producer.metrics().acknowledged, 50);
        let stored =
            values(&broker, "slow", 0).await.len() + values(&broker, "slow", 1).await.len();
        assert_eq!(stored, 50);
        // Flushing with nothing pending returns at once.
        tokio::time::timeout(Duration::from_secs(30), producer.flush())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_what_was_accepted_then_refuses() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "closing", 1).await;
        let config = ProducerConfig {
            linger: Duration::from_secs(60),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(broker.clone(), config).unwrap();
        let other = producer.clone();
        let acked: Arc<Mutex<usize>> = Arc::default();
        for i in 0..20 {
            let acked = acked.clone();
            producer
                .send_async(ProducerRecord::new("closing", format!("{i}")), move |r| {
                    r.unwrap();
                    *acked.lock().unwrap() += 1;
                })
                .await;
        }
        other.close().await;
        assert_eq!(*acked.lock().unwrap(), 20, "close flushed first");
        assert!(producer.is_closed());
        let refused = producer
            .send(ProducerRecord::new("closing", "late").with_key("k"))
            .await
            .unwrap_err();
        assert_eq!(refused.error, ProduceError::Closed);
        assert_eq!(refused.record.value, Some(Bytes::from("late")));
        assert_eq!(refused.record.key, Some(Bytes::from("k")));
        let (tx, rx) = tokio::sync::oneshot::channel();
        producer
            .send_async(ProducerRecord::new("closing", "later"), move |r| {
                let _ = tx.send(r);
            })
            .await;
        assert_eq!(rx.await.unwrap().unwrap_err().error, ProduceError::Closed);
        assert!(
            producer
                .send_oneway(ProducerRecord::new("closing", "x"))
                .await
                .is_err()
        );
        producer.flush().await;
        producer.close().await;
        assert_eq!(values(&broker, "closing", 0).await.len(), 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_partition_is_the_send_order() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "ordered", 3).await;
        // Small batches: many batches in flight per partition at once.
        let config = ProducerConfig {
            batch_size: 512,
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(broker.clone(), config).unwrap();
        const N: usize = 3000;
        let mut sent: Vec<Vec<String>> = vec![Vec::new(); 3];
        for i in 0..N {
            let key = format!("key-{}", i % 17);
            let p = partition_for_key(key.as_bytes(), 3) as usize;
            sent[p].push(i.to_string());
            producer
                .send_oneway(ProducerRecord::new("ordered", i.to_string()).with_key(key))
                .await
                .unwrap();
        }
        producer.close().await;
        assert_eq!(producer.metrics().acknowledged, N as u64);
        for (p, expected) in sent.iter().enumerate() {
            assert_eq!(&values(&broker, "ordered", p as i32).await, expected);
        }
    })
    .await;
}

/// Several batches of one partition in flight on a multi-threaded runtime: the broker must see
/// them in the order they were stamped. Without idempotence nothing would repair a swap (the
/// records would be stored out of order); with it, each swap costs an
/// OUT_OF_ORDER_SEQUENCE_NUMBER and a retry, which the happy path must not need.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_batches_reach_the_broker_in_send_order() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        for idempotence in [false, true] {
            let topic = format!("pipelined-{idempotence}");
            create_topic(&broker, &topic, 1).await;
            let config = ProducerConfig {
                acks: if idempotence { Acks::All } else { Acks::Leader },
                idempotence,
                // Small batches: five in flight most of the time.
                batch_size: 512,
                ..ProducerConfig::default()
            };
            let producer = Producer::new(broker.clone(), config).unwrap();
            const N: usize = 5000;
            for i in 0..N {
                producer
                    .send_oneway(ProducerRecord::new(topic.clone(), i.to_string()))
                    .await
                    .unwrap();
            }
            producer.close().await;
            let metrics = producer.metrics();
            assert_eq!(metrics.acknowledged, N as u64);
            assert_eq!(metrics.retried, 0, "idempotence {idempotence}: {metrics:?}");
            let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
            assert!(
                values(&broker, &topic, 0).await == expected,
                "idempotence {idempotence}: records stored out of send order"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_records_stick_then_move_and_avoid_leaderless_partitions() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "spread", 4).await;
        let faulty = faulty(
            broker.clone(),
            Faults {
                leaderless: vec![0],
                ..Faults::default()
            },
            1,
        );
        let config = ProducerConfig {
            batch_size: 1024,
            ..quick()
        };
        let producer = Producer::new(faulty.clone(), config).unwrap();
        let placed: Arc<Mutex<Vec<(usize, i32)>>> = Arc::default();
        for i in 0..300 {
            let placed = placed.clone();
            producer
                .send_async(
                    ProducerRecord::new("spread", format!("{i:0100}")),
                    move |r| {
                        placed
                            .lock()
                            .unwrap()
                            .push((i, r.unwrap().partition.partition))
                    },
                )
                .await;
        }
        producer.flush().await;
        let mut placed = placed.lock().unwrap().clone();
        assert_eq!(placed.len(), 300);
        placed.sort();
        let partitions: Vec<i32> = placed.into_iter().map(|(_, p)| p).collect();
        assert!(!partitions.contains(&0), "partition 0 has no leader");
        let distinct: HashSet<i32> = partitions.iter().copied().collect();
        assert!(distinct.len() > 1, "the sticky partition moves on");
        // Sticky: consecutive records mostly share a partition.
        let switches = partitions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(switches < partitions.len() / 2, "{switches} switches");
        assert_eq!(FaultCounts::get(&faulty.state.counts.not_sent), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_cannot_be_placed_fail_at_once() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "small", 2).await;
        let config = ProducerConfig {
            max_request_size: 4096,
            ..quick()
        };
        let producer = Producer::new(broker.clone(), config).unwrap();
        let wrong = producer
            .send(ProducerRecord::new("small", "x").with_partition(7))
            .await
            .unwrap_err();
        assert_eq!(
            wrong.error,
            ProduceError::InvalidPartition {
                partition: 7,
                partitions: 2
            }
        );
        assert_eq!(wrong.record.partition, Some(7));
        let big = producer
            .send(ProducerRecord::new("small", vec![0u8; 5000]))
            .await
            .unwrap_err();
        assert!(
            matches!(big.error, ProduceError::RecordTooLarge { .. }),
            "{big}"
        );
        assert_eq!(big.record.value.map(|v| v.len()), Some(5000));
        // The producer is still fine.
        producer
            .send(ProducerRecord::new("small", "ok"))
            .await
            .unwrap();
        let m = producer.metrics();
        assert_eq!((m.sent, m.acknowledged, m.failed), (2, 1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_still_delivers_what_was_accepted() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path()).await;
        create_topic(&broker, "orphans", 1).await;
        let config = ProducerConfig {
            linger: Duration::from_millis(50),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(broker.clone(), config).unwrap();
        for i in 0..100 {
            producer
                .send_oneway(ProducerRecord::new("orphans", format!("{i}")))
                .await
                .unwrap();
        }
        drop(producer);
        loop {
            if values(&broker, "orphans", 0).await.len() == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(values(&broker, "orphans", 0).await, expected);
    })
    .await;
}

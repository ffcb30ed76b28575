//! Partitions take turns at the head of a fetch: the broker lets only the first partition with
//! data exceed its byte limit by one batch (Kafka's rule), so a partition whose next batch is
//! larger than `partition_max_bytes` must come first now and then, or it waits for every
//! partition before it to run dry.

use super::*;

/// Partition 1 holds one batch larger than `partition_max_bytes`; partition 0 a long run of
/// small batches. The large record is delivered while partition 0 still has most of its
/// records to go, not after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_partition_limit_is_not_starved_by_busy_partitions() {
    let (_d, b) = embedded().await;
    create(b.as_ref(), "turns", 2).await;
    let busy = TopicPartition::new("turns", 0);
    let large = TopicPartition::new("turns", 1);
    let small = "s".repeat(300);
    for _ in 0..100 {
        produce(b.as_ref(), &busy, &[("k", small.as_str())]).await;
    }
    produce(b.as_ref(), &large, &[("k", "L".repeat(5_000).as_str())]).await;

    let delivered = Arc::new(Mutex::new(Vec::new()));
    let seen = delivered.clone();
    let handler = PerRecord(handler_fn(move |r| {
        seen.lock().unwrap().push(r.partition);
        async { Ok(()) }
    }));
    let mut config = ConsumerConfig::new("g-turns");
    config.partition_max_bytes = 1_000;
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![busy, large]).await.unwrap();
    poll_until(&mut consumer, &handler, || async {
        delivered.lock().unwrap().len() == 101
    })
    .await;
    let delivered = delivered.lock().unwrap().clone();
    let at = delivered.iter().position(|&p| p == 1).unwrap();
    assert!(
        at < 50,
        "the large record came as delivery {at} of 101: it waited for partition 0"
    );
    consumer.close().await.unwrap();
}

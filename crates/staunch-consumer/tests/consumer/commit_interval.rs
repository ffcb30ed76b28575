//! The end-of-poll commit goes out at most once per `commit_interval`; polls after it commit
//! what was handled meanwhile, and an explicit commit goes out at once regardless.

use super::*;

/// How long polls leave their progress uncommitted in this test.
const INTERVAL: Duration = Duration::from_secs(3);

async fn committed_offset(b: &Broker, group: &str, tp: &TopicPartition) -> Option<i64> {
    committed(b, group, tp).await.map(|c| c.offset)
}

/// Polls within the interval leave a handled record uncommitted; polls that find nothing new
/// commit it once the interval is over; `commit` sends what was handled at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_commit_at_most_once_per_interval() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "paced", &[("k", "1")]).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let handler = PerRecord(handler_fn(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    }));
    let mut config = ConsumerConfig::new("g-paced");
    config.fetch_max_wait = Duration::from_millis(20);
    config.commit_interval = INTERVAL;
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    // No later than the first commit is sent: the bound both checks below need.
    let first_commit = Instant::now();
    poll_until(&mut consumer, &handler, || async {
        committed_offset(&b, "g-paced", &tp).await == Some(1)
    })
    .await;

    produce(b.as_ref(), &tp, &[("k", "2")]).await;
    poll_until(&mut consumer, &handler, || async {
        handled.load(Ordering::SeqCst) == 2
    })
    .await;
    for _ in 0..5 {
        consumer.poll_batch(&handler).await.unwrap();
    }
    let polled_for = first_commit.elapsed();
    assert!(polled_for < INTERVAL, "too slow to test: {polled_for:?}");
    assert_eq!(
        committed_offset(&b, "g-paced", &tp).await,
        Some(1),
        "a poll within the interval committed"
    );
    // Nothing new to read: the polls go on and commit record 2 once the interval is over.
    poll_until(&mut consumer, &handler, || async {
        committed_offset(&b, "g-paced", &tp).await == Some(2)
    })
    .await;
    assert!(first_commit.elapsed() >= INTERVAL);

    produce(b.as_ref(), &tp, &[("k", "3")]).await;
    poll_until(&mut consumer, &handler, || async {
        handled.load(Ordering::SeqCst) == 3
    })
    .await;
    assert_eq!(
        committed_offset(&b, "g-paced", &tp).await,
        Some(2),
        "record 3 was handled within the interval of record 2's commit"
    );
    consumer.commit().await.unwrap();
    assert_eq!(committed_offset(&b, "g-paced", &tp).await, Some(3));
    consumer.close().await.unwrap();
}

/// Ordered mode with every failure committed before the next delivery: a failed key's retry
/// does not wait for the interval (its attempt count goes out with the next poll), while the
/// partition stays readable for other keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_count_is_committed_without_waiting_for_the_interval() {
    let (_d, b) = embedded().await;
    let tp = topic_with(b.as_ref(), "paced-keys", &[("a", "a1"), ("b", "b1")]).await;
    let deliveries = Arc::new(AtomicUsize::new(0));
    let count = deliveries.clone();
    let handler = PerRecord(handler_fn(move |r| {
        let fail = r.value.as_deref() == Some(b"a1") && count.fetch_add(1, Ordering::SeqCst) < 2;
        async move {
            if fail {
                Err(HandlerError::retriable("Busy", "try later"))
            } else {
                Ok(())
            }
        }
    }));
    let mut config = ordered_config("g-paced-keys", BackOff::fixed(Duration::ZERO, 5), 100);
    config.max_uncommitted_failures = 0;
    config.commit_interval = Duration::from_secs(3600);
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = Instant::now();
    poll_until(&mut consumer, &handler, || async {
        deliveries.load(Ordering::SeqCst) == 3
    })
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let m = consumer.metrics().topic("paced-keys");
    assert_eq!((m.processed, m.retried), (2, 2), "{m:?}");
    consumer.close().await.unwrap();
}
